"""The registry, and a sweep: every registered model builds at its small size and trains one step."""

import keras
import numpy as np
import pytest

from fer_keras.errors import UserError
from fer_keras.models.registry import get_model, get_spec, list_models

# Inputs small enough for CI and large enough for every family's downsampling.
STILL_SHAPE = (64, 64, 1)
CLIP_SHAPE = (8, 48, 48, 1)
NUM_CLASSES = 7


def test_baselines_are_registered():
    names = list_models()
    assert "frame_cnn" in names and "convlstm2d_clip" in names
    assert get_spec("frame_cnn").kind == "still"
    assert get_spec("convlstm2d_clip").kind == "clip"


def test_unknown_model_and_size_are_user_errors():
    with pytest.raises(UserError, match="Unknown model 'nope'"):
        get_spec("nope")
    with pytest.raises(UserError, match="has no size 'huge'"):
        get_model("frame_cnn", STILL_SHAPE, NUM_CLASSES, size="huge")


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_one_step(name):
    spec = get_spec(name)
    shape = STILL_SHAPE if spec.kind == "still" else CLIP_SHAPE
    model = get_model(name, shape, NUM_CLASSES, size="small")
    # Eager: tracing a graph step per model costs 10-40 s each on 2 cores and tests nothing more here.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(), run_eagerly=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2,) + shape).astype("float32")
    y = np.array([0, 3])
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    loss = loss[0] if isinstance(loss, (list, tuple)) else loss
    assert np.isfinite(loss)
    changed = sum(not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    assert changed > 0
    out = model(x, training=False)
    probabilities = np.asarray(out["probabilities"] if isinstance(out, dict) else out)
    assert probabilities.shape == (2, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
