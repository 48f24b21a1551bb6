"""`fer-keras` end to end through click's CliRunner at a tiny size, and its handling of bad input.

The successful commands run once in session fixtures (tests/conftest.py); the tests here check
what they wrote. Every bad-input test checks the same contract: exit code != 0, exactly one line
starting "Error:", no traceback, and nothing half-written.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import click
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fer_keras.data import pipeline, records
from fer_keras.labels import get_label_set
from fer_keras.models.registry import list_models
from tests.conftest import (
    DATA_SIZE,
    MODEL_SIZE,
    STILL_PER_EMOTION,
    STILL_SUBJECTS,
    expect_ok,
    expect_user_error,
    invoke,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def listing(folder):
    """Every path under `folder`, relative, sorted (to compare before/after a failed command)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def no_partial_left(folder):
    return [p for p in folder.rglob("*") if p.name.endswith((".partial", ".tmp"))] == []


# --- models / prepare -------------------------------------------------------------------


def test_models_lists_both_baselines_with_their_kind():
    result = expect_ok(invoke("models"))
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert set(list_models()) <= set(lines)
    assert lines["frame_cnn"][1] == "still"
    assert lines["convlstm2d_clip"][1] == "clip"


def test_a_command_in_a_fresh_process_writes_no_tensorflow_start_up_noise():
    """TensorFlow's C++ start-up lines (absl, oneDNN) ignore TF_CPP_MIN_LOG_LEVEL; the CLI keeps them off stderr."""
    run = [sys.executable, "-c", "from fer_keras.cli import main; main()"]
    quiet = subprocess.run(run + ["models"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and "frame_cnn" in quiet.stdout
    assert "absl::InitializeLog" not in quiet.stderr and "oneDNN" not in quiet.stderr, quiet.stderr[-1000:]
    debug = subprocess.run(run + ["--debug", "models"], capture_output=True, text=True, timeout=300)
    assert debug.returncode == 0 and "frame_cnn" in debug.stdout  # --debug leaves TensorFlow's own output alone


def test_sigterm_stops_a_command_as_ctrl_c_does(tmp_path):
    """kill, timeout or a batch system's time limit: the clean-up runs, one line, exit 130, no half-made data left."""
    import signal
    import time

    out = tmp_path / "data"
    process = subprocess.Popen([sys.executable, "-c", "from fer_keras.cli import main; main()", "prepare", "synth",
                                "--out", str(out), "--subjects", "60", "--size", "48"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (tmp_path / "data.partial").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 130, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Interrupted"), stderr[-2000:]
    assert not out.exists()
    if "shards are finished" in last:  # a shard was complete: kept for the same command to go on from
        assert (tmp_path / "data.partial").is_dir()
    else:
        assert not (tmp_path / "data.partial").exists(), sorted(p.name for p in tmp_path.rglob("*"))


def test_synth_commands_in_a_fresh_process_are_quiet_and_preview_does_not_load_tensorflow(tmp_path):
    code = ("import sys; from fer_keras.cli import cli; cli.main(sys.argv[1:], standalone_mode=False); "
            "print('tensorflow loaded:', 'tensorflow' in sys.modules)")
    preview = subprocess.run([sys.executable, "-c", code, "synth", "preview", "--out", str(tmp_path / "p.png")],
                             capture_output=True, text=True, timeout=300)
    assert preview.returncode == 0 and (tmp_path / "p.png").exists()
    assert preview.stdout.strip().endswith("tensorflow loaded: False") and "absl" not in preview.stderr
    generate = subprocess.run([sys.executable, "-c", code, "--quiet", "synth", "generate", "--out", str(tmp_path / "g"),
                               "--subjects", "2", "--size", "64"], capture_output=True, text=True, timeout=300)
    assert generate.returncode == 0 and (tmp_path / "g" / "labels.csv").exists()
    assert "absl::InitializeLog" not in generate.stderr and "oneDNN" not in generate.stderr, generate.stderr[-1000:]


def test_synth_generate_names_its_labels_file(tmp_path):
    result = expect_ok(invoke("synth", "generate", "--out", f"{tmp_path / 'faces'}/", "--subjects", 2, "--size", 64))
    assert result.output.rstrip().endswith(f"Wrote images and {tmp_path / 'faces' / 'labels.csv'}")  # not faces//labels.csv


@pytest.mark.parametrize("user_level, expected", [(None, "3"), ("1", "1")])
def test_the_cli_keeps_tensorflow_c_plus_plus_logs_to_fatal_unless_the_user_chose_a_level(user_level, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if user_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = user_level
    code = "import os, fer_keras.cli; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0 and result.stdout.split()[-1] == expected


def test_prepare_synth_stills_manifest(still_data):
    manifest = records.read_manifest(still_data, verify=True)
    per_subject = len(get_label_set("basic7")) * STILL_PER_EMOTION
    assert manifest["kind"] == "still"
    assert manifest["num_examples"] == STILL_SUBJECTS * per_subject
    assert manifest["counts_per_subject"] == {f"synth{k:04d}": per_subject for k in range(STILL_SUBJECTS)}
    assert manifest["counts_per_class"] == {name: STILL_SUBJECTS * STILL_PER_EMOTION for name in get_label_set("basic7")}
    assert manifest["image"] == {"size": DATA_SIZE, "channels": 1}
    assert no_partial_left(still_data.parent)
    assert not still_data.with_name(still_data.name + ".partial").exists()


def test_prepare_synth_sequences_manifest(sequence_data):
    manifest = records.read_manifest(sequence_data, verify=True)
    assert manifest["kind"] == "sequence"
    assert manifest["num_examples"] == 6 * 7
    assert manifest["flow_bound"] == records.DEFAULT_FLOW_BOUND
    assert manifest["params"]["flow"] is True


def test_prepare_synth_lab_capture_records_it_and_shares_the_scene(tmp_path):
    out = tmp_path / "lab"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", out, "--subjects", 2, "--samples-per-emotion", 1,
                     "--size", 48, "--capture", "lab"))
    manifest = records.read_manifest(out, verify=True)
    assert manifest["params"]["capture"] == "lab" and manifest["num_examples"] == 2 * 7
    import tensorflow as tf

    by_subject = {}
    for raw in tf.data.TFRecordDataset(sorted(str(p) for p in out.glob("*.tfrecord*"))):
        r = records.parse_still(raw)
        image = tf.io.decode_png(r["image/encoded"]).numpy().astype(float)
        by_subject.setdefault(r["subject"].numpy().decode(), []).append(image[:4].ravel())  # top rows: background
    spread = {s: np.mean(np.std(np.stack(rows), axis=0)) for s, rows in by_subject.items()}
    assert all(v < 8.0 for v in spread.values()), spread  # one session per subject: the same backdrop
    assert expect_user_error(invoke("prepare", "synth", "--out", tmp_path / "x", "--capture", "studio"), exit_code=2)


def test_prepare_synth_refuses_a_non_empty_folder(still_data):
    before = listing(still_data)
    expect_user_error(invoke("prepare", "synth", "--out", still_data, "--subjects", 2, "--size", 48))
    assert listing(still_data) == before
    assert not still_data.with_name(still_data.name + ".partial").exists()


# --- train ------------------------------------------------------------------------------------


@pytest.mark.parametrize("run_fixture, model", [("still_run", "frame_cnn"), ("clip_run", "convlstm2d_clip")])
def test_train_writes_a_complete_run(request, run_fixture, model):
    run = request.getfixturevalue(run_fixture)
    for name in ("config.json", "model.keras", "history.csv"):
        assert (run / name).is_file(), name
    assert (run / "logs").is_dir() and any((run / "checkpoints").iterdir())
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == model
    assert config["image_size"] == MODEL_SIZE
    assert config["run_name"] == run.name
    split = config["split_subjects"]
    sides = [set(split["train"]), set(split["val"]), set(split["test"])]
    assert sides[0] and sides[2] and not sides[1]  # 2 folds: no validation side
    assert not (sides[0] & sides[2])
    assert sides[0] | sides[2] == {f"synth{k:04d}" for k in range(6)}
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == config["epochs"]
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_train_keeps_input_shape_of_config(still_run, clip_run):
    from fer_keras.training import fit

    _, _, still = fit.load_run(still_run)
    _, _, clip = fit.load_run(clip_run)
    assert tuple(still.inputs[0].shape[1:]) == (MODEL_SIZE, MODEL_SIZE, 1)
    assert tuple(clip.inputs[0].shape[1:]) == (4, MODEL_SIZE, MODEL_SIZE, 1)


# make_dataset hands `augment` to the pipeline (tests/data/test_pipeline.py); fit.learning_rate reads `lr_schedule` and
# fit.initialise_from `init_from` (tests/training/).
@pytest.mark.parametrize("flag, key, expected", [
    ([], "augment", True), (["--no-augment"], "augment", False), (["--augment"], "augment", True),
    ([], "lr_schedule", "constant"), (["--lr-schedule", "cosine"], "lr_schedule", "cosine"),
    ([], "init_from", None), (["--init-from", "runs/source"], "init_from", "runs/source"),
])
def test_train_flags_reach_the_run_config(monkeypatch, tmp_path, flag, key, expected):
    from fer_keras.training import fit

    seen = {}

    def train(config, **kwargs):  # stands in for the training only: the test is the CLI -> config plumbing
        seen["config"] = config
        return tmp_path

    monkeypatch.setattr(fit, "train", train)
    expect_ok(invoke("train", "--model", "frame_cnn", *flag))
    assert seen["config"][key] == expected and type(seen["config"][key]) is type(expected)


def test_train_refuses_an_existing_run_name(still_run, still_data):
    before = listing(still_run)
    expect_user_error(invoke("train", "--model", "frame_cnn", "--data", still_data, "--epochs", 1,
                             "--out", still_run.parent, "--name", still_run.name))
    assert listing(still_run) == before


# --- evaluate --------------------------------------------------------------------------------


def check_report(report, num_classes):
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (num_classes, num_classes)
    assert cm.sum() == report["num_samples"]
    assert report["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert 0.0 <= report["mean_class_accuracy"] <= 1.0


def check_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 50 and image.shape[1] > 50


def test_evaluate_still_run(still_run, still_metrics):
    manifest = records.read_manifest(still_data_dir(still_run))
    test_subjects = json.loads((still_run / "config.json").read_text())["split_subjects"]["test"]
    assert still_metrics["model"] == "frame_cnn"
    assert still_metrics["dataset"] == "SynthFER"
    assert still_metrics["level"] == "image"
    assert still_metrics["side"] == "test"
    assert still_metrics["subjects"] == len(test_subjects)
    # Exactly the test subjects' images were scored.
    assert still_metrics["num_samples"] == sum(manifest["counts_per_subject"][s] for s in test_subjects)
    check_report(still_metrics, 7)
    for truth, predicted, count in still_metrics["largest_confusions"]:
        assert truth != predicted and count > 0
    check_png(still_run / "confusion_matrix.png")
    assert not (still_run / "metrics.json.tmp").exists()


def test_evaluate_clip_run_votes_per_video(clip_run, clip_metrics):
    test_subjects = json.loads((clip_run / "config.json").read_text())["split_subjects"]["test"]
    assert clip_metrics["level"] == "clip"
    check_report(clip_metrics, 7)
    video = clip_metrics["video"]
    check_report(video, 7)
    assert video["num_samples"] == len(test_subjects) * 7  # one sequence per subject and emotion
    assert clip_metrics["num_samples"] >= video["num_samples"]
    check_png(clip_run / "confusion_matrix.png")
    check_png(clip_run / "confusion_matrix_clips.png")


def still_data_dir(run):
    config = json.loads((run / "config.json").read_text())
    return config["dataset"]["dir"]


# --- bad input -------------------------------------------------------------------------------


@pytest.fixture
def out_dir(tmp_path):
    path = tmp_path / "runs"
    path.mkdir()
    return path


def train_args(data, out_dir, *extra):
    return ("train", "--model", "frame_cnn", "--data", data, "--epochs", 1, "--image-size", MODEL_SIZE,
            "--folds", 2, "--out", out_dir, "--name", "bad", *extra)


def test_error_unknown_model(still_data, out_dir):
    line = expect_user_error(invoke("train", "--model", "no_such_model", "--data", still_data, "--out", out_dir, "--name", "bad"))
    assert "no_such_model" in line and "frame_cnn" in line
    assert listing(out_dir) == []


def test_error_missing_data_folder(tmp_path, out_dir):
    missing = tmp_path / "nowhere"
    line = expect_user_error(invoke(*train_args(missing, out_dir)))
    assert "does not exist" in line
    assert listing(out_dir) == []
    assert not missing.exists()


def test_error_folder_without_manifest(tmp_path, out_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = expect_user_error(invoke(*train_args(empty, out_dir)))
    assert "manifest.json" in line
    assert listing(out_dir) == []


def test_error_truncated_shard(still_data, tmp_path, out_dir):
    data = tmp_path / "corrupt"
    shutil.copytree(still_data, data)
    shard = data / records.read_manifest(data)["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    line = expect_user_error(invoke(*train_args(data, out_dir)))
    assert "corrupt" in line and shard.name in line
    assert listing(out_dir) == []


def test_error_shard_damaged_after_training_on_evaluate(still_run, still_data, tmp_path):
    """evaluate reads the samples: a damaged shard is said to be that, not a TensorFlow DataLossError."""
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(still_data, data)
    shutil.copytree(still_run, run, ignore=shutil.ignore_patterns("cross", "kfold-*"))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, dataset=dict(config["dataset"], dir=str(data)))))
    shard = data / records.read_manifest(data)["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    line = expect_user_error(invoke("evaluate", run))
    assert line.startswith(f"Error: Shard {shard} is corrupt: its sha256 does not match the manifest")


def test_error_model_args_the_builder_does_not_take_or_refuses(still_data, sequence_data, tmp_path, out_dir):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_args": {"bogus": 3}}))
    line = expect_user_error(invoke(*train_args(still_data, out_dir, "--config", config)))
    assert line.startswith("Error: frame_cnn takes no model_args 'bogus'; it takes: ") and "TypeError" not in line
    line = expect_user_error(invoke("train", "--model", "convlstm_ram", "--data", sequence_data, "--streams", "rgb,flow",
                                    "--epochs", 1, "--out", out_dir, "--name", "bad"))
    assert line.startswith("Error: convlstm_ram: ") and "ValueError" not in line and "RGB" in line
    assert listing(out_dir) == []


def test_error_synth_subjects_with_a_data_folder(still_data, out_dir):
    line = expect_user_error(invoke(*train_args(still_data, out_dir, "--synth-subjects", 5)))
    assert line == (f"Error: --synth-subjects applies to --data synth only (SynthFER generated into the run); "
                    f"{str(still_data)!r} is a prepared folder, whose subjects are its own.")
    assert listing(out_dir) == []


def test_error_unknown_config_key(still_data, tmp_path, out_dir):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"epochs": 1, "learning_rte": 0.1}))
    line = expect_user_error(invoke(*train_args(still_data, out_dir, "--config", config)))
    assert "learning_rte" in line
    assert listing(out_dir) == []


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--split", "random"),
        ("export", "RUN", "--format", "onnx"),
        ("prepare", "synth", "--out", "OUT", "--size", "20"),
        ("predict", "RUN", "IMG", "--detect", "haar"),
    ],
    ids=["train-split", "export-format", "prepare-size", "predict-detect"],
)
def test_error_unknown_option_value_is_a_usage_error(args, tmp_path, out_dir):
    args = [str(tmp_path / a) if a in ("RUN", "OUT", "IMG") else a for a in args]
    result = invoke(*args)
    line = expect_user_error(result, exit_code=2)
    assert "Invalid value" in line and line.endswith("--help')")
    assert result.output.strip() == line  # one line, no usage block
    assert listing(tmp_path) == ["runs"]


def test_error_unknown_command_and_root_option_are_one_line():
    for args, expected in ((("no-such-command",), "No such command"), (("--no-such-option", "models"), "No such option")):
        result = invoke(*args)
        line = expect_user_error(result, exit_code=2)
        assert expected in line and result.output.strip() == line


def test_a_bare_group_still_prints_its_help():
    result = invoke("prepare")
    assert "Commands:" in result.output and "ckplus" in result.output and "Error:" not in result.output


def test_error_run_name_outside_out(still_data, tmp_path):
    out = tmp_path / "runs"
    for name in ("../escaped", "a/b", ".."):
        line = expect_user_error(invoke(*train_args(still_data, out, "--name", name)))
        assert "--name" in line and repr(name) in line
    assert listing(tmp_path) == []


def test_a_failed_training_removes_the_out_folders_it_created(tmp_path):
    out = tmp_path / "new" / "runs"  # made for the run folder, which exists before the data is read
    line = expect_user_error(invoke(*train_args(tmp_path / "missing", out)))
    assert "does not exist" in line
    assert listing(tmp_path) == []


def test_error_data_that_is_a_file(tmp_path, out_dir):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("x")
    line = expect_user_error(invoke(*train_args(not_a_folder, out_dir)))
    assert "is a file, not a prepared dataset folder" in line
    assert listing(out_dir) == []


def test_error_damaged_run_files_are_named(still_run, tmp_path):
    bad_config = tmp_path / "bad_config"
    shutil.copytree(still_run, bad_config)
    (bad_config / "config.json").write_text("{oops")
    for args in (("evaluate", bad_config), ("export", bad_config, "--out", tmp_path / "ex"), ("train", "--resume", bad_config)):
        line = expect_user_error(invoke(*args))
        assert str(bad_config / "config.json") in line and "not valid JSON" in line
    truncated = tmp_path / "truncated"
    shutil.copytree(still_run, truncated)
    model = truncated / "model.keras"
    model.write_bytes(model.read_bytes()[:5000])
    for args in (("evaluate", truncated), ("export", truncated, "--out", tmp_path / "ex")):
        line = expect_user_error(invoke(*args))
        assert str(model) in line and "truncated or damaged" in line
    assert not (tmp_path / "ex").exists()


def test_quiet_and_debug_may_follow_the_command_name(tmp_path):
    args = ("synth", "preview", "--subjects", 1, "--size", 48)
    loud = expect_ok(invoke(*args, "--out", tmp_path / "a.png"))
    assert "Wrote" in loud.output
    for quiet in (("--quiet",), ("-q",), ("--quiet", "--debug")):
        result = expect_ok(invoke(*args, "--out", tmp_path / "b.png", *quiet))
        assert result.output == "" and (tmp_path / "b.png").stat().st_size > 0
    helps = [invoke(*command, "--help").output for command in (("export",), ("prepare", "ckplus"), ("synth", "generate"))]
    assert all("--quiet" in h and "--debug" in h for h in helps)


def test_error_preview_to_a_file_type_it_cannot_write(tmp_path):
    line = expect_user_error(invoke("synth", "preview", "--out", tmp_path / "grid.xyz"))
    assert "--out" in line and "grid.xyz" in line
    assert listing(tmp_path) == []


def test_error_fold_out_of_range(still_data, out_dir):
    line = expect_user_error(invoke(*train_args(still_data, out_dir, "--fold", 2)))
    assert "--fold" in line and "fold=2" in line
    assert listing(out_dir) == []


def test_error_evaluate_a_folder_that_is_not_a_run(still_data):
    before = listing(still_data)
    line = expect_user_error(invoke("evaluate", still_data))
    assert "not a fer-keras run" in line
    assert listing(still_data) == before


def test_error_evaluate_a_missing_folder(tmp_path):
    expect_user_error(invoke("evaluate", tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()


def test_error_export_savedmodel_with_quantize(still_run, tmp_path):
    out = tmp_path / "exports"
    expect_user_error(invoke("export", still_run, "--format", "savedmodel", "--quantize", "int8", "--out", out), exit_code=2)
    assert listing(out) == []


def test_error_predict_missing_path(still_run, tmp_path):
    out = tmp_path / "pred.jsonl"
    line = expect_user_error(invoke("predict", still_run, tmp_path / "nowhere.png", "--detect", "none", "--out", out))
    assert "does not exist" in line
    assert listing(tmp_path) == []


def test_error_predict_folder_without_images(still_run, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here\n")
    out = tmp_path / "pred.jsonl"
    line = expect_user_error(invoke("predict", still_run, folder, "--detect", "none", "--out", out))
    assert "holds no images" in line
    assert not out.exists()


def test_error_predict_corrupt_image_among_good_ones(still_run, face_images, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(face_images, folder)
    good = sorted(folder.glob("*.png"))
    bad = folder / "zz_truncated.png"
    bad.write_bytes(good[0].read_bytes()[:64])  # a PNG cut off inside its header
    out = tmp_path / "pred.jsonl"
    line = expect_user_error(invoke("--quiet", "predict", still_run, folder, "--detect", "none", "--out", out))
    assert "1 of" in line and "zz_truncated.png" in line
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_file = {r["file"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(by_file) == {p.name for p in good} | {bad.name}
    assert "error" in by_file[bad.name] and by_file[bad.name]["face"] is None
    assert all("error" not in by_file[p.name] and by_file[p.name]["label"] for p in good)
    assert not list(tmp_path.glob("*.tmp"))


def test_error_predict_with_a_clip_model(clip_run, face_images):
    line = expect_user_error(invoke("predict", clip_run, face_images, "--detect", "none"))
    assert "takes clips of" in line and "give it a video" in line


def test_error_still_model_on_sequence_data(sequence_data, out_dir):
    line = expect_user_error(invoke(*train_args(sequence_data, out_dir)))
    assert "sequence" in line and "frame_cnn" in line
    assert listing(out_dir) == []


def test_train_warns_when_every_clip_is_padded(sequence_data, tmp_path):
    longest = pipeline.longest_sequence(records.read_manifest(sequence_data))
    result = expect_ok(invoke("--quiet", "train", "--model", "convlstm2d_clip", "--data", sequence_data, "--epochs", 1,
                              "--image-size", 16, "--folds", 2, "--clip-length", longest + 1, "--clip-stride", 4,
                              "--out", tmp_path, "--name", "padded"))
    assert f"Warning: --clip-length {longest + 1} is longer than every training sequence" in result.output
    result = expect_ok(invoke("--quiet", "train", "--model", "convlstm2d_clip", "--data", sequence_data, "--epochs", 1,
                              "--image-size", 16, "--folds", 2, "--clip-length", 4, "--clip-stride", 4,
                              "--out", tmp_path, "--name", "unpadded"))
    assert "Warning" not in result.output


@pytest.mark.parametrize("fmt", ["tflite", "savedmodel"])
def test_error_export_a_folder_that_is_not_a_run(still_data, tmp_path, fmt):
    out = tmp_path / "exports"
    line = expect_user_error(invoke("export", still_data, "--format", fmt, "--out", out))
    assert "not a fer-keras run" in line
    assert listing(out) == []


def test_nan_loss_stops_with_the_step_and_leaves_no_run(still_data, tmp_path):
    line = expect_user_error(invoke("--quiet", "train", "--model", "frame_cnn", "--data", still_data, "--epochs", 2,
                                    "--batch-size", 8, "--lr", 1e30, "--out", tmp_path, "--name", "nan_run"))
    assert "NaN/inf at epoch 1, step" in line
    assert not (tmp_path / "nan_run").exists()


def test_error_run_from_an_incompatible_version(still_run, tmp_path):
    old = tmp_path / "old_run"
    shutil.copytree(still_run, old)
    config = json.loads((old / "config.json").read_text())
    config["version"] = "0.0.3"
    (old / "config.json").write_text(json.dumps(config))
    for args in (("evaluate", old), ("export", old, "--out", tmp_path / "ex"), ("train", "--resume", old)):
        line = expect_user_error(invoke(*args))
        assert "made by fer-keras 0.0.3" in line
    assert not (tmp_path / "ex").exists()


@pytest.mark.parametrize("quantize, agreement, streaming, clip, expected", [
    ("int8", 0.90, False, False, "--quantize int16x8"),
    ("int8", 0.90, False, True, "--streaming --quantize int16x8"),
    ("int8", 0.95, True, False, "--streaming --quantize int16x8"),
    ("int8", 0.97, False, False, None),
    ("int16x8", 0.95, True, False, "--streaming --quantize float16"),  # econvlstm_ram, SynthFER lab: 95.0 %
    ("int16x8", 0.90, False, False, "--quantize float16"),
    ("int16x8", 0.99, True, False, None),
    ("float16", 0.50, False, False, None),
])
def test_an_export_below_the_target_says_what_to_try(quantize, agreement, streaming, clip, expected):
    from fer_keras.report import quantization_hint

    hint = quantization_hint(quantize, agreement, streaming=streaming, clip=clip)
    if expected is None:
        assert hint is None
    else:
        assert f"{agreement:.1%}" in hint and expected in hint and "float16" in hint
        assert ("--streaming" in hint) == (streaming or clip)


def test_the_hint_names_a_per_video_agreement_that_meets_the_target():
    from fer_keras.report import quantization_hint

    video = {"videos": 300, "top1_agreement": 0.983, "top1_agreement_95ci": [0.96, 0.99]}
    hint = quantization_hint("int8", 0.953, streaming=True, per_video=video)
    assert "95.3% with float per clip" in hint and "Per video" in hint and "98.3%" in hint
    low = dict(video, top1_agreement=0.95)
    assert "Per video" not in quantization_hint("int8", 0.953, streaming=True, per_video=low)
    assert "per clip" not in quantization_hint("int8", 0.90, streaming=False)  # a still model has no clips


def test_the_hint_names_the_agreement_where_float_is_sure():
    from fer_keras.report import quantization_hint

    sure = {"threshold": 0.5, "share": 0.824, "samples": 412, "top1_agreement": 0.982, "top1_agreement_95ci": [0.97, 0.99]}
    hint = quantization_hint("int8", 0.953, streaming=True, confident=sure)
    assert "at least 50% (82% of the clips, 412 clips), it agrees 98.2% (95 % CI 97.0%-99.0%)" in hint
    assert "of the samples" in quantization_hint("int8", 0.95, streaming=False, confident=sure)
    assert "at least" not in quantization_hint("int8", 0.953, streaming=True, confident=dict(sure, top1_agreement=None))
    assert quantization_hint("int8", 0.98, streaming=True, confident=sure) is None


def test_the_parity_line_says_how_many_disagreements_are_int8_ties():
    from fer_keras.report import ties_text

    parity = {"samples": 123, "top1_agreement": 0.0, "disagreements_at_ties": 123}
    assert ties_text(parity) == ("; 123 of its 123 disagreements are exact ties of the quantised top two classes "
                                 "(the first label wins them)")
    assert ties_text(dict(parity, top1_agreement=0.9, disagreements_at_ties=5)).startswith("; 5 of its 12 disagreements")
    assert ties_text(dict(parity, disagreements_at_ties=0)) == ""


def test_notes_go_to_stderr_even_with_quiet():
    """A user who exports with -q (a CI pipeline) still sees that int8 is below the target."""
    from fer_keras.cli import _echo_hint

    @click.command()
    @click.option("--quiet", is_flag=True)
    @click.pass_context
    def command(ctx, quiet):
        _echo_hint(ctx, "Note: int8 agrees 90.0% with float")
        _echo_hint(ctx, None)

    result = CliRunner().invoke(command, ["--quiet"])
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == "Note: int8 agrees 90.0% with float\n"


def _fake_run(folder, accuracy, labels=7, columns=("epoch", "accuracy", "loss"), lr=0.002):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": "frame_cnn", "learning_rate": lr,
                                                     "dataset": {"labels": [f"c{i}" for i in range(labels)]}}))
    rows = [",".join(columns)] + [",".join(str(v) for v in (i, a, 1.9)[:len(columns)]) for i, a in enumerate(accuracy)]
    (folder / "history.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_a_run_that_stayed_at_chance_gets_a_note(tmp_path):
    from fer_keras.report import chance_hint

    stuck = _fake_run(tmp_path / "stuck", [0.15, 0.12, 0.14, 0.13, 0.16, 0.143, 0.125, 0.143])
    hint = chance_hint(stuck)
    assert hint.startswith("Note: frame_cnn stayed at chance") and "16.0%" not in hint and "14.3%" in hint
    assert "a lower --lr (this run: 0.002)" in hint and "--seed" in hint
    assert "a higher --lr (this run: 1e-09)" in chance_hint(_fake_run(tmp_path / "tiny_lr", [0.14] * 8, lr=1e-9))
    # Learned in its last epochs, too short to judge, and no training accuracy (vae_swap): no note.
    assert chance_hint(_fake_run(tmp_path / "late", [0.14] * 6 + [0.2, 0.3, 0.4])) is None
    assert chance_hint(_fake_run(tmp_path / "short", [0.14, 0.14])) is None
    assert chance_hint(_fake_run(tmp_path / "vae", [0.14] * 8, columns=("epoch", "loss"))) is None
    # Chance depends on the label count: 40 % is chance-level for 2 classes only.
    assert chance_hint(_fake_run(tmp_path / "two", [0.52] * 8, labels=2)) is not None
    assert chance_hint(_fake_run(tmp_path / "seven", [0.52] * 8)) is None


def test_ctrl_c_is_one_line_and_exit_code_130(monkeypatch, tmp_path):
    """The shell's code for a command stopped by Ctrl-C; prepare's note on what is kept is on the line."""
    from fer_keras.data_prep import adapters

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("2 of 7 shards are finished in out.partial; the same command goes on from them")

    monkeypatch.setattr(adapters, "prepare_dataset", interrupted)
    (tmp_path / "raw").mkdir()
    line = expect_user_error(invoke("prepare", "jaffe", "--root", tmp_path / "raw", "--out", tmp_path / "out"), exit_code=130)
    assert line == "Error: Interrupted: 2 of 7 shards are finished in out.partial; the same command goes on from them."


def test_a_run_records_its_data_folder_absolute_so_resume_works_from_anywhere(still_data, tmp_path, monkeypatch):
    monkeypatch.chdir(still_data.parent)
    expect_ok(invoke("--quiet", "train", "--model", "frame_cnn", "--data", still_data.name, "--epochs", 1, "--batch-size", 16,
                     "--image-size", 32, "--folds", 2, "--out", tmp_path / "runs", "--name", "rel"))
    run = tmp_path / "runs" / "rel"
    assert json.loads((run / "config.json").read_text())["data"] == str(still_data)
    monkeypatch.chdir(tmp_path)
    expect_ok(invoke("--quiet", "train", "--resume", run, "--epochs", 2))
    assert len((run / "history.csv").read_text().splitlines()) == 3


def test_a_two_stream_run_on_data_without_flow_is_one_line_before_any_model(tmp_path):
    data = tmp_path / "noflow"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", data, "--kind", "sequence", "--subjects", 4, "--size", 48))
    line = expect_user_error(invoke("train", "--model", "convgru", "--streams", "rgb,flow", "--data", data, "--epochs", 1,
                                    "--folds", 2, "--out", tmp_path / "runs", "--name", "r"))
    assert line == f"Error: {str(data)!r} has no optical flow, which --streams rgb,flow takes; prepare it with --flow."
    assert not (tmp_path / "runs").exists()


def test_extending_a_run_removes_the_evaluation_of_its_old_model(still_run, tmp_path):
    run = tmp_path / still_run.name
    shutil.copytree(still_run, run)
    expect_ok(invoke("--quiet", "evaluate", run))
    assert (run / "metrics.json").exists() and (run / "confusion_matrix.png").exists()
    (run / "cross" / "other").mkdir(parents=True, exist_ok=True)  # as `evaluate --data` leaves it
    result = expect_ok(invoke("train", "--resume", run, "--epochs", 3))
    # (the session's run may also hold other tests' cross/ and explain/ outputs: they go too)
    assert "Set aside the evaluation of the model before this resume (metrics.json, predictions.csv, confusion_matrix.png" in result.output
    assert not (run / "metrics.json").exists() and not (run / "confusion_matrix.png").exists()
    assert not (run / "cross").exists() and not (run / "explain").exists() and not (run / ".before-resume").exists()
    assert "has been evaluated yet" in expect_user_error(invoke("compare", run))  # no longer shown as the run's accuracy


def test_an_extension_that_trains_no_epoch_leaves_the_finished_run_as_it_was(still_run, tmp_path, monkeypatch):
    """A moved data folder, or a stop before the first new epoch: model.keras, evaluation and epochs stay."""
    from fer_keras.training import fit

    run = tmp_path / still_run.name
    shutil.copytree(still_run, run)
    expect_ok(invoke("--quiet", "evaluate", run))
    before = {name: (run / name).read_bytes() for name in ("model.keras", "metrics.json", "config.json")}
    config = json.loads(before["config.json"])
    moved = dict(config, dataset=dict(config["dataset"], dir=str(tmp_path / "gone")), data=str(tmp_path / "gone"))
    (run / "config.json").write_text(json.dumps(moved))
    line = expect_user_error(invoke("train", "--resume", run, "--epochs", config["epochs"] + 2))
    assert "does not exist" in line and (run / "model.keras").read_bytes() == before["model.keras"]
    assert json.loads((run / "config.json").read_text()) == moved and (run / "metrics.json").exists()
    (run / "config.json").write_bytes(before["config.json"])

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(fit, "_train", stopped)
    line = expect_user_error(invoke("train", "--resume", run, "--epochs", config["epochs"] + 2), exit_code=130)
    assert line == (f"Error: Interrupted: no new epoch was complete, so {run} is as it was ({config['epochs']} epochs); go "
                    f"on with `fer-keras train --resume {run} --epochs {config['epochs'] + 2}`.")
    assert {name: (run / name).read_bytes() for name in before} == before and not (run / ".before-resume").exists()
    assert "Largest confusions" in expect_ok(invoke("evaluate", run)).output  # still a finished run


def test_a_resume_killed_before_a_new_epoch_is_put_back_where_the_run_is_now(still_run, tmp_path):
    """As SIGKILL leaves it (model and evaluation in .before-resume/), then the run folder moved: nothing is lost."""
    import os

    from fer_keras.training import fit

    run = tmp_path / "run"
    shutil.copytree(still_run, run)
    expect_ok(invoke("--quiet", "evaluate", run))
    before = {name: (run / name).read_bytes() for name in ("model.keras", "metrics.json", "config.json")}
    epoch = json.loads((fit.latest_checkpoint(run) / "state.json").read_text())["epoch"]
    fit._set_aside(run, epoch, quiet=True)
    (run / "config.json").write_text(json.dumps(dict(json.loads(before["config.json"]), epochs=epoch + 5)))
    (run / fit.LOCK).write_text("999999999")  # the killed resume's lock: no such process
    moved = tmp_path / "moved"
    os.replace(run, moved)
    line = expect_user_error(invoke("evaluate", moved))
    assert line == (f"Error: Run {str(moved)!r} stopped while it was being resumed: its model is set aside in "
                    f".before-resume/, and `fer-keras train --resume {moved}` puts it back or goes on.")
    line = expect_user_error(invoke("train", "--resume", moved))
    assert f"already finished its {epoch} epochs" in line  # put back: the extension never trained
    assert {name: (moved / name).read_bytes() for name in before} == before
    assert not (moved / ".before-resume").exists() and not (moved / fit.LOCK).exists()


def test_a_run_being_resumed_is_not_resumed_twice(still_run, tmp_path):
    import os

    from fer_keras.training import fit

    run = tmp_path / "run"
    shutil.copytree(still_run, run)
    (run / fit.LOCK).write_text(str(os.getpid()))  # a live process holds it
    line = expect_user_error(invoke("train", "--resume", run, "--epochs", 9))
    assert line == f"Error: Run {str(run)!r} is being resumed by process {os.getpid()}; wait for it to end, or stop it first."
    assert (run / "model.keras").exists() and not (run / ".before-resume").exists()


def test_ctrl_c_during_training_says_which_epochs_are_kept(still_data, tmp_path, monkeypatch):
    from fer_keras.training import fit

    real = fit.EpochCheckpoint.on_epoch_end

    def then_ctrl_c(self, epoch, logs=None):  # Ctrl-C right after the second epoch's checkpoint
        real(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(fit.EpochCheckpoint, "on_epoch_end", then_ctrl_c)
    run = tmp_path / "runs" / "stopped"
    args = ("train", "--model", "frame_cnn", "--data", still_data, "--epochs", 4, "--batch-size", 16, "--image-size", 32,
            "--folds", 2, "--out", tmp_path / "runs", "--name", "stopped")
    line = expect_user_error(invoke(*args), exit_code=130)
    assert line == f"Error: Interrupted: epochs 1-2 are kept in {run}; go on with `fer-keras train --resume {run}`."
    monkeypatch.setattr(fit.EpochCheckpoint, "on_epoch_end", real)
    expect_ok(invoke("--quiet", "train", "--resume", run))
    assert len((run / "history.csv").read_text().splitlines()) == 5


def test_train_help_states_the_defaults_the_configuration_uses():
    from fer_keras.training.config import DEFAULTS

    text = " ".join(invoke("train", "--help").output.split())
    for option, key in (("--model", "model"), ("--size", "size"), ("--epochs", "epochs"), ("--batch-size", "batch_size"),
                        ("--lr", "learning_rate"), ("--folds", "folds"), ("--fold", "fold"), ("--clip-length", "clip_length"),
                        ("--clip-stride", "clip_stride"), ("--seed", "seed")):
        section = text.split(f" {option} ", 1)[1].split(" --", 1)[0]
        assert f"Default: {DEFAULTS[key]}." in section, (option, section)


def test_export_checks_out_before_any_work(still_run, tmp_path, monkeypatch):
    """An --out below a file fails at once, in one line, not after the conversion and calibration."""
    from fer_keras.exports import tflite

    monkeypatch.setattr(tflite, "export_tflite", lambda *a, **k: pytest.fail("the export started"))
    (tmp_path / "afile").write_text("x")
    for fmt in ("tflite", "savedmodel"):
        line = expect_user_error(invoke("export", still_run, "--format", fmt, "--out", tmp_path / "afile" / "sub"))
        assert line.startswith(f"Error: --out {str(tmp_path / 'afile' / 'sub' / still_run.name)!r}"[:-1])
        assert line.endswith(f"cannot be written: {str(tmp_path / 'afile')!r} is a file, not a folder.")
    # 'new/../afile' is afile once new/ exists: refused before new/ is made, not a FileExistsError after
    dotted = tmp_path / "new" / ".." / "afile"
    line = expect_user_error(invoke("export", still_run, "--format", "savedmodel", "--out", dotted))
    assert line.startswith(f"Error: --out {str(dotted / still_run.name)!r} cannot be written: ")
    assert line.endswith(f"{str(tmp_path / 'afile')!r} is a file, not a folder.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_an_out_that_is_a_broken_link_is_one_line(still_run, tmp_path):
    (tmp_path / "exports").symlink_to(tmp_path / "gone")
    line = expect_user_error(invoke("export", still_run, "--format", "savedmodel", "--out", tmp_path / "exports"))
    assert "cannot be written" in line and "does not exist" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports"]


def test_prepare_into_a_link_fills_the_folder_it_points_to(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", tmp_path / "link", "--subjects", 2, "--size", 48))
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
