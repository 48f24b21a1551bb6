"""A run folder copied without its data folder (trained on one machine, exported on another)."""

import json
import shutil

from tests.conftest import expect_ok, expect_user_error, invoke


def _moved(still_run, tmp_path):
    run = tmp_path / "copied_run"
    shutil.copytree(still_run, run, ignore=shutil.ignore_patterns("cross", "kfold-*"))
    config = json.loads((run / "config.json").read_text())
    config["dataset"]["dir"] = str(tmp_path / "data_left_behind")
    (run / "config.json").write_text(json.dumps(config))
    return run, config


def test_savedmodel_predict_and_benchmark_need_only_the_run(still_run, face_images, tmp_path):
    run, config = _moved(still_run, tmp_path)
    expect_ok(invoke("--quiet", "export", run, "--format", "savedmodel", "--out", tmp_path / "exports"))
    info = json.loads((tmp_path / "exports" / run.name / "1" / "assets.extra" / "fer_keras.json").read_text())
    assert info["labels"] == config["dataset"]["labels"] and info["dataset"] == "SynthFER (synthetic faces)"
    face = sorted(face_images.glob("*.png"))[0]
    for model in (run, tmp_path / "exports" / run.name / "1"):
        records = [json.loads(line) for line in expect_ok(invoke("predict", model, face, "--detect", "none")).output.splitlines()
                   if line.startswith("{")]
        assert len(records) == 1 and records[0]["label"] in config["dataset"]["labels"]
    expect_ok(invoke("--quiet", "benchmark", run, "--runs", 2, "--warmup", 0, "--out", tmp_path / "lat.json"))
    assert json.loads((tmp_path / "lat.json").read_text())


def test_a_tflite_export_says_why_it_needs_the_data(still_run, tmp_path):
    run, _ = _moved(still_run, tmp_path)
    line = expect_user_error(invoke("export", run, "--format", "tflite", "--out", tmp_path / "exports"), exit_code=1)
    assert "data_left_behind" in line and "checks its parity with Keras on the run's held-out samples" in line
    assert "`--format savedmodel` does not" in line
    assert not (tmp_path / "exports").exists()


def test_cross_dataset_evaluation_and_explain_on_an_input_need_only_the_run(still_run, face_images, tmp_path):
    from tests.conftest import DATA_SIZE

    run, _ = _moved(still_run, tmp_path)
    other = tmp_path / "other"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", other, "--kind", "still", "--subjects", 2,
                     "--samples-per-emotion", 1, "--size", DATA_SIZE, "--grey", "--seed", 11))
    expect_ok(invoke("--quiet", "evaluate", run, "--data", other))
    assert json.loads((run / "cross" / "other" / "metrics.json").read_text())["num_samples"] > 0
    face = sorted(face_images.glob("*.png"))[0]
    expect_ok(invoke("--quiet", "explain", run, face, "--out", tmp_path / "ex"))
    assert len(list((tmp_path / "ex").glob("*.png"))) == 1
    line = expect_user_error(invoke("explain", run, "--out", tmp_path / "ex2"))  # the test samples are in the data
    assert "data_left_behind" in line and "The test samples are in it." in line
