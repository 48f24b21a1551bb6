"""`fer-keras evaluate RUN --data OTHER`: a run scored on every sample of another prepared dataset."""

import json
import pathlib

import numpy as np
import pytest

from fer_keras.data import pipeline, records
from fer_keras.training import fit
from tests.conftest import DATA_SIZE, MODEL_SIZE, expect_ok, expect_user_error, invoke


@pytest.fixture(scope="module")
def lab_stills(tmp_path_factory):
    """SynthFER lab stills in CK+'s label set: contempt (which the basic7 runs lack), no neutral, another order."""
    out = tmp_path_factory.mktemp("cross") / "lab_stills"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", out, "--kind", "still", "--subjects", 3,
                     "--samples-per-emotion", 2, "--size", DATA_SIZE, "--grey", "--label-set", "ckplus7",
                     "--capture", "lab", "--seed", 5))
    return out


@pytest.fixture(scope="module")
def lab_sequences(tmp_path_factory):
    out = tmp_path_factory.mktemp("cross") / "lab_sequences"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", out, "--kind", "sequence", "--subjects", 2,
                     "--size", DATA_SIZE, "--grey", "--label-set", "ckplus7", "--capture", "lab", "--seed", 5))
    return out


def test_labels_are_matched_by_emotion_name(still_run, lab_stills):
    result = expect_ok(invoke("evaluate", still_run, "--data", lab_stills))
    assert "Left out, as the run does not predict their emotion: 6 contempt images." in result.output
    metrics = json.loads((still_run / "cross" / "lab_stills" / "metrics.json").read_text())
    assert (still_run / "cross" / "lab_stills" / "confusion_matrix.png").stat().st_size > 0
    assert metrics["dataset"] == "SynthFER" and metrics["trained_on"] == "SynthFER" and metrics["side"] == "all"
    assert metrics["left_out"] == {"contempt": 6} and metrics["subjects"] == 3 and metrics["num_samples"] == 36

    # The same count, worked out here by name: each record's emotion in the other dataset's label set,
    # the run's row for it, the model's prediction.
    config, manifest, model = fit.load_run(still_run)
    target = records.read_manifest(lab_stills)
    expected = np.zeros((len(manifest["labels"]),) * 2, int)
    data = pipeline.still_dataset(target, image_size=MODEL_SIZE, channels=1, batch_size=16, training=False)
    for x, y in data:
        predicted = np.asarray(model(x, training=False)).argmax(1)
        for label, p in zip(y.numpy(), predicted):
            name = target["labels"][label]
            if name in manifest["labels"]:
                expected[manifest["labels"].index(name), p] += 1
    assert metrics["confusion_matrix"] == expected.tolist()
    assert metrics["support"]["neutral"] == 0 and metrics["per_class_accuracy"]["neutral"] is None
    assert metrics["accuracy"] == pytest.approx(np.trace(expected) / expected.sum())


def test_a_clip_run_is_scored_per_clip_and_per_video(clip_run, lab_sequences):
    expect_ok(invoke("--quiet", "evaluate", clip_run, "--data", lab_sequences))
    out = clip_run / "cross" / "lab_sequences"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["level"] == "clip" and sorted(p.name for p in out.glob("*.png")) == [
        "confusion_matrix.png", "confusion_matrix_clips.png"]
    # 2 subjects x 7 emotions, one sequence each; the run (basic7) has no contempt.
    assert metrics["video"]["num_samples"] == 12 and sum(metrics["video"]["support"].values()) == 12
    assert metrics["video"]["support"]["neutral"] == 0 and set(metrics["left_out"]) == {"contempt"}
    # The run's own metrics.json is not touched by a cross-dataset evaluation.
    assert not (clip_run / "metrics.json").exists() or json.loads((clip_run / "metrics.json").read_text())["side"] == "test"


def test_wrong_data_is_a_one_line_error_and_writes_nothing(still_run, lab_sequences, tmp_path):
    assert "holds sequence records" in expect_user_error(invoke("evaluate", still_run, "--data", lab_sequences))
    assert "does not exist" in expect_user_error(invoke("evaluate", still_run, "--data", tmp_path / "nowhere"))
    assert "do not apply" in expect_user_error(
        invoke("evaluate", still_run, "--data", lab_sequences, "--protocol", "kfold"))
    assert not (still_run / "cross" / "lab_sequences").exists() and not (still_run / "cross" / "nowhere").exists()


def test_the_runs_own_subjects_are_not_another_dataset(still_run, still_data):
    """The run's own data (or a set with its training subjects) would score faces it trained on as "cross-dataset"."""
    line = expect_user_error(invoke("evaluate", still_run, "--data", still_data))
    assert "subjects this run trained or validated on" in line and "it is not another dataset" in line
    assert not (still_run / "cross" / still_data.name).exists()


def test_a_failed_second_evaluation_keeps_the_first(still_run, lab_stills, monkeypatch):
    from fer_keras.evaluation import evaluate as evaluate_module

    expect_ok(invoke("--quiet", "evaluate", still_run, "--data", lab_stills))
    out = still_run / "cross" / "lab_stills"
    first = (out / "metrics.json").read_bytes()
    real = evaluate_module.os.replace

    def disk_gone(src, dst):  # the new evaluation cannot be put in place, after the old one was moved aside
        if pathlib.Path(src).name.startswith(".lab_stills."):
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(evaluate_module.os, "replace", disk_gone)
    expect_user_error(invoke("evaluate", still_run, "--data", lab_stills))
    assert (out / "metrics.json").read_bytes() == first
    assert [p.name for p in out.parent.iterdir() if "lab_stills" in p.name] == ["lab_stills"]  # no .old, no staging
