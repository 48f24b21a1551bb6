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
    assert summary["video_accuracy"]["mean"] == pytest.approx(np.mean([m["video"]["accuracy"] for m in folds]))
    summed = np.sum([m["video"]["confusion_matrix"] for m in folds], axis=0)
    assert summary["confusion_matrix"] == summed.tolist()
    assert (kfold / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_call_reuses_finished_folds(kfold, clip_run):
    before = (kfold / "fold-0" / "model.keras").stat().st_mtime_ns
    expect_ok(invoke("--quiet", "evaluate", clip_run, "--protocol", "kfold", "--folds", 2, "--epochs", 1))
    assert (kfold / "fold-0" / "model.keras").stat().st_mtime_ns == before


def test_folds_without_kfold_is_a_user_error(still_run):
    expect_user_error(invoke("evaluate", still_run, "--folds", 3))
