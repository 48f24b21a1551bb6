"""Resume after SIGKILL mid-epoch, and same-seed determinism, through the real CLI in subprocesses."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fer_keras.training.fit import load_model

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
    return load_model(path).get_weights()  # registers fer_keras's classes (VAESwap, RAMClassifier ...)


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
    for a, b in zip(_weights(uninterrupted / "model.keras"), _weights(again / "model.keras"), strict=True):
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
    for a, b in zip(_weights(uninterrupted / "model.keras"), _weights(run / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_carries_history_so_a_lost_row_comes_back(workdir, uninterrupted):
    """A kill after the checkpoint commits but before history.csv reaches disk must not lose the row."""
    rows = _history(uninterrupted)
    with open(uninterrupted / "checkpoints" / "epoch-0002" / "history.csv", newline="") as f:
        assert list(csv.reader(f)) == rows[:3]  # header + epochs 0 and 1, as that checkpoint saw them
    run = workdir / "runs" / "C"
    shutil.copytree(uninterrupted, run)
    shutil.rmtree(run / "checkpoints" / "epoch-0003")
    (run / "model.keras").unlink()
    (run / "history.csv").write_text(",".join(rows[0]) + "\r\n")  # the rows of epochs 0 and 1 never reached disk
    done = _run(["train", "--resume", str(run)], workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _history(run) == rows


def test_resume_of_a_finished_run_says_so(workdir, uninterrupted):
    done = _run(["train", "--resume", str(uninterrupted)], workdir)
    assert done.returncode == 1
    assert "already finished its 3 epochs" in done.stderr
    assert "Traceback" not in done.stderr


def test_resume_takes_no_other_options(workdir, uninterrupted):
    done = _run(["train", "--resume", str(uninterrupted), "--model", "convlstm2d_clip"], workdir)
    assert done.returncode == 1
    assert "it takes only --epochs" in done.stderr


def _optimizer(path):
    import keras

    load_model(path)  # registers fer_keras's classes
    return keras.saving.load_model(path, compile=True).optimizer


def test_cosine_schedule_resumes_exactly_and_stretches_when_extended(workdir):
    cosine = TRAIN + ["--data", "data", "--lr-schedule", "cosine"]
    done = _run(cosine + ["--name", "cos"], workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    whole = workdir / "runs" / "cos"
    optimizer = _optimizer(whole / "checkpoints" / "epoch-0003" / "model.keras")
    steps = int(optimizer.iterations) // 3
    assert optimizer._learning_rate.decay_steps == 3 * steps and float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)

    run = workdir / "runs" / "cos-killed"
    _kill_after_first_checkpoint(cosine + ["--name", "cos-killed"], workdir, run, "epoch-0003")
    done = _run(["train", "--resume", str(run)], workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _history(run) == _history(whole)
    for a, b in zip(_weights(whole / "model.keras"), _weights(run / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)

    done = _run(["train", "--resume", str(run), "--epochs", "4"], workdir)  # the decay now spans 4 epochs
    assert done.returncode == 0, done.stderr[-2000:]
    optimizer = _optimizer(run / "checkpoints" / "epoch-0004" / "model.keras")
    assert int(optimizer.iterations) == 4 * steps and optimizer._learning_rate.decay_steps == 4 * steps
    assert len(_history(run)) == 1 + 4
    # The extension is the run's length from now on: config.json says 4, and a plain --resume knows it finished.
    assert json.loads((run / "config.json").read_text())["epochs"] == 4
    done = _run(["train", "--resume", str(run)], workdir)
    assert done.returncode == 1 and "already finished its 4 epochs" in done.stderr
    done = _run(["train", "--resume", str(run), "--epochs", "2"], workdir)
    assert done.returncode == 1 and "more than 4" in done.stderr


def test_an_extension_stopped_midway_leaves_an_unfinished_run(workdir, uninterrupted):
    """The 3-epoch model.keras must not stand for a run whose config.json now says 6 epochs."""
    run = workdir / "runs" / "ext"
    shutil.copytree(uninterrupted, run)
    assert _run(["evaluate", str(run)], workdir).returncode == 0
    process = _start_until(["train", "--resume", str(run), "--epochs", "6"], workdir, run / "checkpoints" / "epoch-0004",
                           stderr=subprocess.PIPE)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "are kept in" in stderr, stderr[-2000:]
    assert not (run / "checkpoints" / "epoch-0006").exists(), "the extension finished before it was stopped"
    assert json.loads((run / "config.json").read_text())["epochs"] == 6
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()
    done = _run(["evaluate", str(run)], workdir)
    assert done.returncode == 1 and "has no model.keras: its training did not finish" in done.stderr
    done = _run(["train", "--resume", str(run)], workdir)  # goes on to the 6 epochs
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "model.keras").exists() and len(_history(run)) == 1 + 6


def test_the_same_train_command_after_a_stop_points_to_resume(workdir, uninterrupted):
    run = workdir / "runs" / "stopped"
    shutil.copytree(uninterrupted, run)
    (run / "model.keras").unlink()  # as a run stopped after its third epoch leaves it
    done = _run(TRAIN + ["--data", "data", "--name", "stopped"], workdir)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: Run folder 'runs/stopped' holds an unfinished run (epochs 1-3 kept); go on with `fer-keras train "
        f"--resume runs/stopped`, or choose another --name.")
    done = _run(TRAIN + ["--data", "data", "--name", "A"], workdir)  # a finished run: another name, or remove it
    assert "Error: Run folder 'runs/A' already exists; choose another --name or remove it." in done.stderr


def _start_until(args, cwd, path, stderr=subprocess.DEVNULL):
    """Starts `fer-keras ARGS` and returns its process once `path` exists (checking that it had not ended before)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(CLI + args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    deadline = time.time() + 300
    while not path.exists():
        assert process.poll() is None, f"it ended before {path.name} was written"
        assert time.time() < deadline
        time.sleep(0.01)
    return process


def _kill_after_first_checkpoint(args, cwd, run, last):
    """Starts `fer-keras ARGS`, SIGKILLs it once checkpoints/epoch-0001 is committed; checks it was cut short."""
    process = _start_until(args, cwd, run / "checkpoints" / "epoch-0001")
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (run / "checkpoints" / last).exists(), "the run finished before it was killed"
    assert not (run / "model.keras").exists()


# vae_swap: 2 rounds x (stage 1, stage 2) x 1 epoch = 4 checkpointed epochs; the kill lands in
# stage 2 of round 0 (its first epoch traces the expression step, seconds on this CPU).
VAE_TRAIN = ["train", "--model", "vae_swap", "--epochs", "1", "--batch-size", "8", "--folds", "3", "--seed", "4"]
VAE_CONFIG = {"model_args": {"encoder_filters": [4, 4, 8, 8], "decoder_filters": [8, 4, 4, 4], "latent_dim": 4, "rounds": 2}}


@pytest.mark.slow  # three CLI runs that each trace two custom steps: minutes on 2 shared cores
def test_vae_swap_resume_after_sigkill_matches_uninterrupted_run(workdir):
    (workdir / "vae.json").write_text(json.dumps(VAE_CONFIG))
    args = VAE_TRAIN + ["--data", "data", "--config", "vae.json"]
    done = _run(args + ["--name", "V"], workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    run = workdir / "runs" / "VK"
    _kill_after_first_checkpoint(args + ["--name", "VK"], workdir, run, "epoch-0004")
    state = json.loads((sorted((run / "checkpoints").glob("epoch-*"))[-1] / "state.json").read_text())
    assert state["total_epochs"] == 4 and state["stage"] in ("identity", "expression")

    done = _run(["train", "--resume", str(run)], workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    whole = workdir / "runs" / "V"
    # Bit-identical: op determinism is on and every state (weights, 4 Adams, seed generators,
    # lr-decay counts, data order from (seed, round, epoch)) is restored.
    for a, b in zip(_weights(whole / "model.keras"), _weights(run / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)
    drop_seconds = lambda rows: [[c for i, c in enumerate(r) if rows[0][i] != "seconds"] for r in rows]  # noqa: E731
    assert drop_seconds(_history(run)) == drop_seconds(_history(whole))
    finished = _run(["train", "--resume", str(run)], workdir)
    assert finished.returncode == 1 and "already finished" in finished.stderr


@pytest.fixture(scope="module")
def clip_workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_clips")
    done = _run(["prepare", "synth", "--out", "data", "--kind", "sequence", "--subjects", "4",
                 "--sequences-per-emotion", "1", "--size", "48"], root)
    assert done.returncode == 0, done.stderr[-2000:]
    return root


# RAM (two losses through RAMClassifier.compute_loss) resumes through the ordinary fit path.
RAM_TRAIN = ["train", "--model", "econvlstm_ram", "--epochs", "3", "--batch-size", "8", "--image-size", "32",
             "--clip-length", "4", "--clip-stride", "4", "--folds", "2", "--seed", "2", "--data", "data"]


@pytest.mark.slow  # three CLI runs that each trace the RAM model (about a minute each here)
def test_ram_two_loss_resume_after_sigkill_matches_uninterrupted_run(clip_workdir):
    done = _run(RAM_TRAIN + ["--name", "R"], clip_workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    run = clip_workdir / "runs" / "RK"
    _kill_after_first_checkpoint(RAM_TRAIN + ["--name", "RK"], clip_workdir, run, "epoch-0003")
    done = _run(["train", "--resume", str(run)], clip_workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    whole = clip_workdir / "runs" / "R"
    assert _history(run) == _history(whole)  # includes attention_loss, the second loss
    assert "attention_loss" in _history(whole)[0]
    for a, b in zip(_weights(whole / "model.keras"), _weights(run / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)
