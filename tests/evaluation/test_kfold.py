"""`evaluate --protocol kfold`: one training per subject fold, aggregated at clip and video level."""

import json

import numpy as np
import pytest

from tests.conftest import expect_ok, expect_user_error, invoke


@pytest.fixture(scope="module")
def kfold(clip_run):
    expect_ok(invoke("--quiet", "evaluate", clip_run, "--protocol", "kfold", "--folds", 2, "--epochs", 1))
    return clip_run / "kfold-2"


def test_every_subject_is_tested_exactly_once(kfold, sequence_data):
    manifest = json.loads((sequence_data / "manifest.json").read_text())
    tested = []
    for fold in range(2):
        config = json.loads((kfold / f"fold-{fold}" / "config.json").read_text())
        split = config["split_subjects"]
        assert config["fold"] == fold and config["folds"] == 2
        assert not set(split["test"]) & set(split["train"])
        tested += split["test"]
    assert len(tested) == len(set(tested))
    assert sorted(tested) == sorted(manifest["counts_per_subject"])


def test_summary_is_the_mean_of_the_folds(kfold):
    summary = json.loads((kfold / "metrics.json").read_text())
    folds = [json.loads((kfold / f"fold-{k}" / "metrics.json").read_text()) for k in range(2)]
    assert summary["accuracy"]["per_fold"] == [m["accuracy"] for m in folds]
    assert summary["accuracy"]["mean"] == pytest.approx(np.mean([m["accuracy"] for m in folds]))
    assert summary["accuracy"]["sample_std"] == pytest.approx(np.std([m["accuracy"] for m in folds], ddof=1))
    assert summary["epochs_per_fold"] == [1, 1]  # what each fold trained (--epochs 1)
    assert summary["video_accuracy"]["mean"] == pytest.approx(np.mean([m["video"]["accuracy"] for m in folds]))
    summed = np.sum([m["video"]["confusion_matrix"] for m in folds], axis=0)
    assert summary["confusion_matrix"] == summed.tolist() and summary["summed_level"] == "video"
    assert summary["clip_confusion_matrix"] == np.sum([m["confusion_matrix"] for m in folds], axis=0).tolist()
    assert summary["level"] == "clip" and summary["num_samples"] == sum(m["num_samples"] for m in folds)
    assert (kfold / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_call_reuses_finished_folds(kfold, clip_run):
    before = (kfold / "fold-0" / "model.keras").stat().st_mtime_ns
    expect_ok(invoke("--quiet", "evaluate", clip_run, "--protocol", "kfold", "--folds", 2, "--epochs", 1))
    assert (kfold / "fold-0" / "model.keras").stat().st_mtime_ns == before
    # folds of another length are not passed off as the ones asked for
    line = expect_user_error(invoke("evaluate", clip_run, "--protocol", "kfold", "--folds", 2, "--epochs", 3))
    assert line == (f"Error: {kfold / 'fold-0'} was trained for 1 epochs, not the 3 asked for; remove {kfold} to train "
                    "every fold again, or leave out --epochs to use the folds as they are.")
    assert (kfold / "fold-0" / "model.keras").stat().st_mtime_ns == before


def test_a_reused_fold_must_be_this_protocols_fold(kfold, clip_run, tmp_path):
    """A fold folder trained otherwise (another fold, learning rate, size) is not averaged in as if it were the fold."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(clip_run, copy, ignore=shutil.ignore_patterns("cross"))
    (copy / "kfold-2" / "metrics.json").unlink()
    fold1 = copy / "kfold-2" / "fold-1" / "config.json"
    config = json.loads(fold1.read_text())
    fold1.write_text(json.dumps(dict(config, fold=0, learning_rate=0.05)))
    line = expect_user_error(invoke("evaluate", copy, "--protocol", "kfold", "--folds", 2))
    assert line.startswith(f"Error: {copy / 'kfold-2' / 'fold-1'} is not this protocol's fold: fold 0 (expected 1), "
                           "learning_rate 0.05 (expected")
    assert not (copy / "kfold-2" / "metrics.json").exists()
    # folds of mixed lengths are refused, not averaged
    fold1.write_text(json.dumps(dict(config, epochs=2)))
    line = expect_user_error(invoke("evaluate", copy, "--protocol", "kfold", "--folds", 2))
    assert "were trained for different numbers of epochs (fold 0: 1, fold 1: 2)" in line


def test_folds_without_kfold_is_a_user_error(still_run):
    expect_user_error(invoke("evaluate", still_run, "--folds", 3))


@pytest.fixture(scope="module")
def landmark_kfold(landmark_arm_run):
    expect_ok(invoke("--quiet", "evaluate", landmark_arm_run, "--protocol", "kfold", "--folds", 2, "--epochs", 1))
    return landmark_arm_run / "kfold-2"


def test_landmark_arm_kfold_trains_an_rgb_branch_per_fold_without_its_test_subjects(landmark_kfold, arm_run):
    import pathlib

    rgb_runs = []
    for fold in range(2):
        config = json.loads((landmark_kfold / f"fold-{fold}" / "config.json").read_text())
        test = set(config["split_subjects"]["test"])
        assert config["model"] == "landmark_arm" and test
        rgb_run = pathlib.Path(config["model_args"]["rgb_run"])
        # Not the run's own rgb_run (trained on fold 0's training subjects = fold 1's test subjects).
        assert rgb_run.resolve() != arm_run.resolve()
        assert rgb_run.resolve() == (landmark_kfold / f"rgb-fold-{fold}").resolve()
        rgb_config = json.loads((rgb_run / "config.json").read_text())
        assert rgb_config["model"] == "arm_resnet18" and (rgb_run / "model.keras").exists()
        rgb_split = rgb_config["split_subjects"]
        assert not test & (set(rgb_split["train"]) | set(rgb_split["val"]))
        assert set(rgb_split["test"]) == test
        assert rgb_split["train"] == config["split_subjects"]["train"]
        rgb_runs.append(rgb_run.resolve())
    assert rgb_runs[0] != rgb_runs[1]
    summary = json.loads((landmark_kfold / "metrics.json").read_text())
    assert summary["rgb_runs"] == ["rgb-fold-0", "rgb-fold-1"]
    # The shared arm_run's training subjects are tested on in some fold: the leak this protocol avoids.
    shared = set(json.loads((arm_run / "config.json").read_text())["split_subjects"]["train"])
    tested = set().union(*(json.loads((landmark_kfold / f"fold-{k}" / "config.json").read_text())["split_subjects"]["test"] for k in range(2)))
    assert shared & tested


def test_a_reused_fold_trained_on_the_shared_rgb_run_is_refused(landmark_kfold, landmark_arm_run, arm_run, tmp_path):
    import shutil

    copy = tmp_path / "landmark_arm_copy"
    shutil.copytree(landmark_arm_run, copy)
    path = copy / "kfold-2" / "fold-0" / "config.json"
    config = json.loads(path.read_text())
    config["model_args"]["rgb_run"] = str(arm_run)  # as the leaking protocol wrote it
    path.write_text(json.dumps(config))
    error = expect_user_error(invoke("--quiet", "evaluate", copy, "--protocol", "kfold", "--folds", 2, "--epochs", 1))
    assert "fold-0" in error and "test subjects" in error


def test_a_reused_rgb_fold_must_match_too(landmark_kfold, landmark_arm_run, tmp_path):
    """landmark_arm's per-fold arm_resnet18 runs are checked as the folds are: 1-epoch RGB folds under 2-epoch folds
    are refused, not reused."""
    import shutil

    copy = tmp_path / "lm"
    shutil.copytree(landmark_arm_run, copy, ignore=shutil.ignore_patterns("cross"))
    for leftover in ("fold-0", "fold-1", "metrics.json"):
        target = copy / "kfold-2" / leftover
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    line = expect_user_error(invoke("evaluate", copy, "--protocol", "kfold", "--folds", 2, "--epochs", 2))
    assert line.startswith(f"Error: {copy / 'kfold-2' / 'rgb-fold-0'} is not this protocol's fold: epochs 1 (expected 2)")
    assert not (copy / "kfold-2" / "fold-0").exists()


def test_the_folds_of_a_data_synth_run_move_with_it(tmp_path):
    """--data synth generates the data into the run folder: a moved run's folds are still its folds."""
    import shutil

    expect_ok(invoke("--quiet", "train", "--model", "frame_cnn", "--data", "synth", "--synth-subjects", 4, "--epochs", 1,
                     "--batch-size", 16, "--image-size", 32, "--folds", 2, "--out", tmp_path / "a", "--name", "run"))
    expect_ok(invoke("--quiet", "evaluate", tmp_path / "a" / "run", "--protocol", "kfold", "--folds", 2))
    shutil.move(tmp_path / "a" / "run", tmp_path / "moved")
    (tmp_path / "moved" / "kfold-2" / "metrics.json").unlink()
    before = (tmp_path / "moved" / "kfold-2" / "fold-0" / "model.keras").stat().st_mtime_ns
    expect_ok(invoke("--quiet", "evaluate", tmp_path / "moved", "--protocol", "kfold", "--folds", 2))
    assert (tmp_path / "moved" / "kfold-2" / "fold-0" / "model.keras").stat().st_mtime_ns == before


def test_resuming_a_fold_removes_the_summary_it_was_part_of(kfold, clip_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(clip_run, copy, ignore=shutil.ignore_patterns("cross"))
    assert (copy / "kfold-2" / "metrics.json").exists()
    result = expect_ok(invoke("train", "--resume", copy / "kfold-2" / "fold-1", "--epochs", 2))
    assert "the k-fold summary's metrics.json" in result.output
    assert not (copy / "kfold-2" / "metrics.json").exists() and not (copy / "kfold-2" / "confusion_matrix.png").exists()
