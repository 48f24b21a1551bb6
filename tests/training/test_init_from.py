"""train --init-from: fine-tuning starts from a finished run's weights (real runs, real model.keras files)."""

import json

import numpy as np
import pytest

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


def test_refusals_name_the_problem(still_run, clip_run, tmp_path, monkeypatch):
    model = get_model("frame_cnn", (MODEL_SIZE, MODEL_SIZE, 1), 7)
    with pytest.raises(UserError, match="is a run of model 'convlstm2d_clip'"):
        fit.initialise_from(model, config_lib.resolve(model="frame_cnn"), clip_run)
    with pytest.raises(UserError, match="is a run of size 'small'"):
        fit.initialise_from(model, config_lib.resolve(model="frame_cnn", size="paper"), still_run)
    with pytest.raises(UserError, match="has no config.json"):
        fit.initialise_from(model, config_lib.resolve(model="frame_cnn"), tmp_path)
    with pytest.raises(UserError, match="not be subject-independent"):  # its fold 1 trained the source
        fit.initialise_from(model, config_lib.resolve(model="frame_cnn"), still_run, dataset="synthfer",
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
