"""Resume after SIGKILL mid-epoch, and same-seed determinism, through the real CLI in subprocesses."""

import csv
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

CLI = [sys.executable, "-m", "fer_keras.cli", "-q"]
TRAIN = ["train", "--model", "frame_cnn", "--epochs", "3", "--batch-size", "8", "--seed", "3"]


def _run(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(CLI + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    done = _run(["prepare", "synth", "--out", "data", "--subjects", "6", "--samples-per-emotion", "6", "--size", "48"], root)
    assert done.returncode == 0, done.stderr[-2000:]
    return root


def _weights(path):
    return keras.saving.load_model(path, compile=False).get_weights()


def _history(run):
    with open(run / "history.csv", newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def uninterrupted(workdir):
    done = _run(TRAIN + ["--data", "data", "--name", "A"], workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    return workdir / "runs" / "A"


def test_same_seed_gives_identical_runs(workdir, uninterrupted):
    done = _run(TRAIN + ["--data", "data", "--name", "A2"], workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    again = workdir / "runs" / "A2"
    assert _history(again) == _history(uninterrupted)
    for a, b in zip(_weights(uninterrupted / "model.keras"), _weights(again / "model.keras")):
        np.testing.assert_array_equal(a, b)


def test_resume_after_sigkill_matches_uninterrupted_run(workdir, uninterrupted):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    run = workdir / "runs" / "B"
    process = subprocess.Popen(CLI + TRAIN + ["--data", "data", "--name", "B"], cwd=workdir, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "epoch-0001").exists():
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # epoch 2 has just begun: epochs of this tiny set last well under a second
    assert process.wait() == -signal.SIGKILL
    assert not (run / "checkpoints" / "epoch-0003").exists(), "the run finished before it was killed"
    assert not (run / "model.keras").exists()

    done = _run(["train", "--resume", str(run)], workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _history(run) == _history(uninterrupted)
    for a, b in zip(_weights(uninterrupted / "model.keras"), _weights(run / "model.keras")):
        np.testing.assert_array_equal(a, b)


def test_resume_of_a_finished_run_says_so(workdir, uninterrupted):
    done = _run(["train", "--resume", str(uninterrupted)], workdir)
    assert done.returncode == 1
    assert "already finished its 3 epochs" in done.stderr
    assert "Traceback" not in done.stderr


def test_resume_takes_no_other_options(workdir, uninterrupted):
    done = _run(["train", "--resume", str(uninterrupted), "--model", "convlstm2d_clip"], workdir)
    assert done.returncode == 1
    assert "it takes only --epochs" in done.stderr
