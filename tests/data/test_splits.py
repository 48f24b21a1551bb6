"""Subject-independent splits: k-fold by subject rank, holdout lists, official splits."""

import json

import pytest

from fer_keras.data import splits
from fer_keras.errors import UserError

SUBJECTS = ["S010", "S002", "S131", "S005", "S074", "S011", "S022", "S099", "S052", "S001", "S100"]


@pytest.mark.parametrize("folds", [2, 3, 5, 10])
@pytest.mark.parametrize("validation", [True, False])
def test_no_subject_on_two_sides(folds, validation):
    for fold in range(folds):
        split = splits.kfold_split(SUBJECTS, folds, fold, validation=validation)
        train, val, test = set(split.train), set(split.val), set(split.test)
        assert not (train & val) and not (train & test) and not (val & test)
        assert train | val | test == set(SUBJECTS)
        assert len(split.train) + len(split.val) + len(split.test) == len(SUBJECTS)
        assert train and test


@pytest.mark.parametrize("folds", [2, 3, 4, 11])
def test_each_subject_is_tested_in_exactly_one_fold(folds):
    tested = [s for fold in range(folds) for s in splits.kfold_split(SUBJECTS, folds, fold).test]
    assert sorted(tested) == sorted(SUBJECTS)


def test_fold_is_rank_mod_k_on_sorted_ids():
    ordered = sorted(SUBJECTS)  # S001 S002 S005 S010 S011 S022 S052 S074 S099 S100 S131
    assignment = splits.kfold_assignments(SUBJECTS, 3)
    assert assignment == {s: rank % 3 for rank, s in enumerate(ordered)}
    assert [assignment[s] for s in ordered] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1]
    split = splits.kfold_split(SUBJECTS, 3, 1)
    assert split.test == ("S002", "S011", "S074", "S131")
    # The validation fold is the next one, (1 + 1) mod 3 = 2.
    assert split.val == ("S005", "S022", "S099")
    assert split.train == ("S001", "S010", "S052", "S100")


def test_assignment_does_not_depend_on_input_order_or_duplicates():
    shuffled = list(reversed(SUBJECTS)) + SUBJECTS[:3]
    assert splits.kfold_split(shuffled, 4, 2) == splits.kfold_split(SUBJECTS, 4, 2)


def test_validation_fold_wraps_around():
    split = splits.kfold_split(SUBJECTS, 3, 2)
    assert set(split.val) == {s for s, f in splits.kfold_assignments(SUBJECTS, 3).items() if f == 0}


def test_two_folds_and_no_validation_have_no_validation_side():
    assert splits.kfold_split(SUBJECTS, 2, 0).val == ()
    assert splits.kfold_split(SUBJECTS, 5, 0, validation=False).val == ()


@pytest.mark.parametrize("fold", [-1, 5, 6])
def test_fold_out_of_range(fold):
    with pytest.raises(UserError, match=rf"--fold must be in 0\.\.4\. Received: fold={fold}"):
        splits.kfold_split(SUBJECTS, 5, fold)


def test_too_few_folds():
    with pytest.raises(UserError, match="at least 2"):
        splits.kfold_split(SUBJECTS, 1, 0)


def test_too_few_subjects():
    with pytest.raises(UserError, match="needs at least 5 subjects; the dataset has 4"):
        splits.kfold_split(["a", "b", "c", "d", "a"], 5, 0)


def test_official_split(monkeypatch):
    """The records select each side by its split name; the subject lists (read from the records: see
    tests/training/test_init_from.py for real data) are there for the leak checks."""
    from fer_keras.data import pipeline

    monkeypatch.setattr(pipeline, "official_subjects", lambda manifest: {"train": ["a", "b"], "test": ["c"]})
    split = splits.official_split({"dataset": "rafdb", "official_split": True})
    assert split.official and (split.train, split.val, split.test) == (("a", "b"), (), ("c",))
    with pytest.raises(UserError, match="no official split"):
        splits.official_split({"dataset": "ckplus"})


def test_split_survives_a_json_round_trip():
    """Runs store their split in config.json (lists) and evaluation rebuilds it."""
    split = splits.kfold_split(SUBJECTS, 5, 3)
    again = splits.Split.from_dict(json.loads(json.dumps(split.to_dict())))
    assert again == split
    assert isinstance(again.test, tuple)
