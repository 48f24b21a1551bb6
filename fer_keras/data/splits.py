"""Subject-independent splits: no subject is ever on both sides.

* k-fold by subject: sort the subject ids, fold of a subject = its rank mod k (the common CK+
  10-fold convention). Fold `k` is the test set; with `validation=True` fold `(k + 1) mod K`
  is held out for validation (model selection) and the rest trains.
* a dataset's official split (records carry a ``split`` field, e.g. RAF-DB train/test).
"""

import dataclasses

from fer_keras.errors import UserError


@dataclasses.dataclass(frozen=True)
class Split:
    """Subject ids (strings) of each side; `test_split`/`train_split` name an official split instead."""

    train: tuple = ()
    val: tuple = ()
    test: tuple = ()
    description: str = ""
    official: bool = False

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def kfold_assignments(subjects, folds):
    """{subject: fold} with fold = rank of the subject in sorted order mod `folds`."""
    return {s: rank % folds for rank, s in enumerate(sorted(set(map(str, subjects))))}


def kfold_split(subjects, folds, fold, *, validation=True):
    """Train/val/test subjects for test fold `fold` of `folds`."""
    subjects = sorted(set(map(str, subjects)))
    if folds < 2:
        raise UserError(f"--folds must be at least 2. Received: folds={folds}")
    if not 0 <= fold < folds:
        raise UserError(f"--fold must be in 0..{folds - 1}. Received: fold={fold}")
    if len(subjects) < folds:
        raise UserError(
            f"{folds}-fold split needs at least {folds} subjects; the dataset has {len(subjects)}."
        )
    assignment = kfold_assignments(subjects, folds)
    val_fold = (fold + 1) % folds if validation and folds > 2 else None
    test = tuple(s for s in subjects if assignment[s] == fold)
    val = tuple(s for s in subjects if assignment[s] == val_fold)
    train = tuple(s for s in subjects if assignment[s] not in (fold, val_fold))
    split = Split(train, val, test, description=f"subject {folds}-fold, test fold {fold}" + (f", validation fold {val_fold}" if val else ""))
    _check(split)
    return split


def official_split(manifest):
    """The dataset's own split, when its records carry one (manifest["official_split"])."""
    if not manifest.get("official_split"):
        raise UserError(f"Dataset {manifest.get('dataset')!r} has no official split; use --folds.")
    from fer_keras.data.pipeline import official_subjects

    # The records select by split name; the subject lists say whose faces each side holds (leak checks read them).
    sides = official_subjects(manifest)
    return Split(train=tuple(sides.get("train", ())), val=tuple(sides.get("val", ())), test=tuple(sides.get("test", ())),
                 description=f"official split of {manifest['dataset']}", official=True)


def _check(split):
    overlap = (set(split.train) & set(split.test)) | (set(split.train) & set(split.val)) | (set(split.val) & set(split.test))
    if overlap:  # a bug, not bad input: the functions above must never produce it
        raise AssertionError(f"subjects on two sides of a split: {sorted(overlap)}")
    if not split.test:
        raise UserError(f"The test side of the split ({split.description}) is empty.")
    if not split.train:
        raise UserError(f"The training side of the split ({split.description}) is empty.")
