"""train --init-from: fine-tuning starts from a finished run's weights (real runs, real model.keras files)."""

import json
import shutil

import numpy as np
import pytest

from fer_keras.data import records
from fer_keras.errors import UserError
from fer_keras.models.registry import get_model
from fer_keras.training import config as config_lib
from fer_keras.training import fit
from tests.conftest import MODEL_SIZE, expect_ok, invoke

# Adam moves each weight by about the learning rate per step: at 1e-12 an epoch leaves the start visible.
STILL = ["train", "--model", "frame_cnn", "--epochs", 1, "--batch-size", 16, "--image-size", MODEL_SIZE,
         "--folds", 2, "--fold", 0, "--lr", 1e-12]


def _trainable(model):
    return [v.numpy() for v in model.trainable_weights]


def test_a_fine_tuned_run_starts_from_the_source_weights(still_data, still_run, tmp_path):
    result = invoke(*STILL, "--data", still_data, "--init-from", still_run, "--out", tmp_path, "--name", "tuned")
    expect_ok(result)
    assert "Initialised 19 of 19 weights from" in result.output
    expect_ok(invoke("--quiet", *STILL, "--data", still_data, "--out", tmp_path, "--name", "fresh"))
    _, _, source = fit.load_run(still_run)
    _, _, tuned = fit.load_run(tmp_path / "tuned")
    _, _, fresh = fit.load_run(tmp_path / "fresh")
    for a, b in zip(_trainable(tuned), _trainable(source)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert any(not np.allclose(a, b, atol=1e-3) for a, b in zip(_trainable(fresh), _trainable(source)))
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["init_from"] == str(still_run.resolve())


def test_a_classifier_for_other_labels_starts_afresh(still_run):
    config = config_lib.resolve(model="frame_cnn")
    model = get_model("frame_cnn", (MODEL_SIZE, MODEL_SIZE, 1), 6)  # the source run has 7 classes
    before = [v.numpy() for v in model.weights]
    copied, kept = fit.initialise_from(model, config, still_run)
    _, _, source = fit.load_run(still_run)
    assert copied == len(model.weights) - 2 and len(kept) == 2
    assert kept[1].endswith("(6,) (source (7,))")  # the classifier's bias; kept[0] is its kernel
    for target, weight, start in zip(model.weights, source.weights, before):
        if tuple(target.shape) == tuple(weight.shape):
            np.testing.assert_array_equal(target.numpy(), weight.numpy())
        else:
            np.testing.assert_array_equal(target.numpy(), start)  # the new classifier keeps its initial values


def test_refusals_name_the_problem(still_run, still_data, clip_run, tmp_path, monkeypatch):
    model = get_model("frame_cnn", (MODEL_SIZE, MODEL_SIZE, 1), 7)
    with pytest.raises(UserError, match="is a run of model 'convlstm2d_clip'"):
        fit.initialise_from(model, config_lib.resolve(model="frame_cnn"), clip_run)
    with pytest.raises(UserError, match="is a run of size 'small'"):
        fit.initialise_from(model, config_lib.resolve(model="frame_cnn", size="paper"), still_run)
    with pytest.raises(UserError, match="has no config.json"):
        fit.initialise_from(model, config_lib.resolve(model="frame_cnn"), tmp_path)
    with pytest.raises(UserError, match="not be subject-independent"):  # its fold 1 trained the source
        fit.initialise_from(model, config_lib.resolve(model="frame_cnn"), still_run, dataset=fit.people(records.read_manifest(still_data)),
                            test_subjects=json.loads((still_run / "config.json").read_text())["split_subjects"]["train"][:1])
    fit.initialise_from(model, config_lib.resolve(model="frame_cnn"), still_run, dataset="ckplus",  # another dataset
                        test_subjects=json.loads((still_run / "config.json").read_text())["split_subjects"]["train"][:1])
    monkeypatch.setattr(fit, "load_dataset", lambda *a, **k: pytest.fail("data was prepared before the source was checked"))
    with pytest.raises(UserError, match="has no config.json"):
        fit.train(config_lib.resolve(model="frame_cnn", init_from=str(tmp_path / "none")), out=tmp_path, name="f")
    assert not (tmp_path / "f").exists()
    with pytest.raises(UserError, match="--init-from cannot start it"):
        fit.train(config_lib.resolve(model="vae_swap", init_from=str(still_run)), out=tmp_path, name="v")
    assert not (tmp_path / "v").exists()


def _relay(still_run, tmp_path, seed=9):
    """A run fine-tuned from `still_run` on other people (SynthFER of another seed): its own subjects are other
    faces, but its weights started from still_run's. Made from still_run's folder, as training it would leave it."""
    relay = tmp_path / "relay"
    shutil.copytree(still_run, relay, ignore=shutil.ignore_patterns("cross", "kfold-*", "metrics.json", "predictions.csv"))
    config = json.loads((relay / "config.json").read_text())
    config["dataset"]["people"] = f"synthfer seed {seed}"
    config["init_from"] = str(still_run.resolve())
    (relay / "config.json").write_text(json.dumps(config))
    return relay


def test_the_leak_check_follows_the_runs_the_weights_started_from(still_run, still_data, tmp_path):
    """A -> (another dataset) B -> back to A's data, testing on A's training subjects: refused at the second step."""
    model = get_model("frame_cnn", (MODEL_SIZE, MODEL_SIZE, 1), 7)
    who = fit.people(records.read_manifest(still_data))
    a_trained = json.loads((still_run / "config.json").read_text())["split_subjects"]["train"]
    relay = _relay(still_run, tmp_path)
    assert {s for p, s in fit.seen_subjects(relay) if p == who} >= set(a_trained)
    with pytest.raises(UserError, match="through the runs its weights started from"):
        fit.initialise_from(model, config_lib.resolve(model="frame_cnn"), relay, dataset=who, test_subjects=a_trained[:1])
    # SynthFER of another seed is other people under the same ids: not a leak.
    fit.initialise_from(model, config_lib.resolve(model="frame_cnn"), still_run, dataset="synthfer seed 5",
                        test_subjects=a_trained)


def test_cross_dataset_evaluation_follows_the_chain_too(still_run, still_data, tmp_path):
    from tests.conftest import expect_user_error

    relay = _relay(still_run, tmp_path)
    line = expect_user_error(invoke("evaluate", relay, "--data", still_data))
    assert "through the runs its weights started from" in line and "it is not another dataset" in line
    assert not (relay / "cross").exists()


def test_kfold_of_a_run_fine_tuned_on_its_sources_data_is_refused_before_any_fold_trains(still_data, still_run, tmp_path):
    from tests.conftest import expect_user_error

    expect_ok(invoke("--quiet", *STILL, "--data", still_data, "--init-from", still_run, "--out", tmp_path, "--name", "tuned"))
    line = expect_user_error(invoke("evaluate", tmp_path / "tuned", "--protocol", "kfold", "--folds", 2, "--epochs", 1))
    assert "whose weights have seen subjects that fold 2 of 2 tests on" in line and "trained from scratch" in line
    assert not (tmp_path / "tuned" / "kfold-2").exists()


def test_runs_on_an_official_split_are_checked_too(tmp_path):
    """RAF-DB-like data: a run trained on the official train side, fine-tuned onto a fold that tests those subjects."""
    from fer_keras.data_prep.adapters import prepare_dataset
    from tests.conftest import expect_user_error
    from tests.data_prep import synth_trees as trees

    root = tmp_path / "raw"
    for side, subjects in (("train", ("S1", "S2", "S3")), ("test", ("S4", "S5"))):
        for k, subject in enumerate(subjects):
            for folder, emotion in (("happy", "happiness"), ("sad", "sadness")):
                trees.save(root / side / folder / f"{subject}_{k}.png", trees.still(k, emotion, size=64, grey=True)["image"])
    data = tmp_path / "data"
    prepare_dataset("folder", root, data, size=48, grey=True, detect=False, quiet=True, subject_pattern=r"^(S\d)_")
    train = ["--quiet", "train", "--model", "frame_cnn", "--data", data, "--epochs", 1, "--batch-size", 4, "--out", tmp_path]
    expect_ok(invoke(*train, "--split", "official", "--name", "official"))
    sides = json.loads((tmp_path / "official" / "config.json").read_text())["split_subjects"]
    assert (sides["train"], sides["test"], sides["official"]) == (["S1", "S2", "S3"], ["S4", "S5"], True)
    line = expect_user_error(invoke(*train, "--folds", 2, "--fold", 0, "--init-from", tmp_path / "official", "--name", "ft"))
    assert "not be subject-independent" in line and not (tmp_path / "ft").exists()
    # and an official-split run started from a run that saw its test subjects
    expect_ok(invoke(*train, "--folds", 2, "--fold", 1, "--name", "kfold_run"))
    tested = set(json.loads((tmp_path / "kfold_run" / "config.json").read_text())["split_subjects"]["train"])
    assert tested & {"S4", "S5"}  # fold 1's training side holds an official test subject
    line = expect_user_error(invoke(*train, "--split", "official", "--init-from", tmp_path / "kfold_run", "--name", "ft2"))
    assert "not be subject-independent" in line


def test_a_link_of_the_chain_that_is_gone_is_named(still_run, still_data, tmp_path, capsys):
    model = get_model("frame_cnn", (MODEL_SIZE, MODEL_SIZE, 1), 7)
    relay = _relay(still_run, tmp_path)
    config = json.loads((relay / "config.json").read_text())
    (relay / "config.json").write_text(json.dumps(dict(config, init_from=str(tmp_path / "deleted_run"))))
    a_trained = json.loads((still_run / "config.json").read_text())["split_subjects"]["train"]
    fit.initialise_from(model, config_lib.resolve(model="frame_cnn"), relay,
                        dataset=fit.people(records.read_manifest(still_data)), test_subjects=a_trained[:1])
    assert f"started from {tmp_path / 'deleted_run'}, which is not there any more" in capsys.readouterr().err


def test_validation_subjects_count_as_seen(still_run, still_data, tmp_path):
    """A 3-fold run chose its epoch on its validation subjects: a run testing on them may not start from it."""
    config = json.loads((still_run / "config.json").read_text())
    sides = config["split_subjects"]
    subjects = sorted({*sides["train"], *sides.get("val", []), *sides["test"]})
    run = tmp_path / "three_fold"
    run.mkdir()
    validated = subjects[:1]
    sides = {"train": subjects[1:-1], "val": validated, "test": subjects[-1:]}
    (run / "config.json").write_text(json.dumps(dict(config, folds=3, split_subjects=sides)))
    who = fit.people(records.read_manifest(still_data))
    assert {s for p, s in fit.seen_subjects(run) if p == who} == set(sides["train"]) | set(validated)
    model = get_model("frame_cnn", (MODEL_SIZE, MODEL_SIZE, 1), 7)
    shutil.copy(still_run / "model.keras", run / "model.keras")
    with pytest.raises(UserError, match=f"subjects that this run tests on \\({validated[0]}\\)"):
        fit.initialise_from(model, config_lib.resolve(model="frame_cnn"), run, dataset=who, test_subjects=validated)
