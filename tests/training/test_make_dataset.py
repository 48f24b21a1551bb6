"""Each side of a split feeds exactly its own subjects: what the leak checks read from config.json is what trained."""

import pytest

from fer_keras.training import fit


def _subjects(dataset):
    return {s.decode() for _, _, meta in dataset for s in meta["subject"].numpy().tolist()}


@pytest.mark.parametrize("folds", [2, 3])  # 3: a validation side too
@pytest.mark.parametrize("which", ["still_run", "clip_run"])
def test_each_side_reads_its_own_subjects_and_no_other(which, folds, request):
    config, manifest, _ = fit.load_run(request.getfixturevalue(which))
    config = dict(config, folds=folds, fold=0)
    split = fit.make_split(config, manifest)
    sides = {side: getattr(split, side) for side in ("train", "val", "test")}
    assert bool(sides["val"]) == (folds == 3)
    for side, subjects in sides.items():
        if not subjects:
            assert fit.make_dataset(config, manifest, split, side) is None
            continue
        dataset = fit.make_dataset(config, manifest, split, side, with_meta=True, batch_size=16)
        assert _subjects(dataset) == set(subjects), side
    assert not (set(sides["train"]) & set(sides["test"])) and not (set(sides["val"]) & set(sides["test"]))
