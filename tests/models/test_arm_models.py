"""arm_resnet18 (paper 003 baseline): build, one AdaBelief step, .keras round trip, batch-1 rebuild,
grey input, user-supplied backbone weights.

ResNet-18 has 11M parameters, so one model is built and trained once per module, at 32 px (the
smallest input for which the "small" ARM keeps 3x3 features), and the training step runs eagerly:
tracing the AdaBelief train step of 100+ variables costs far more on CPU than the step itself.
"""

import math

import keras
import numpy as np
import pytest

from fer_keras.models.arm import ARM_SIZES, arm_output_size
from fer_keras.models.registry import get_model, get_spec
from fer_keras.training.adabelief import AdaBelief
from fer_keras.training.fit import make_optimizer

SIZE = 32
NUM_CLASSES = 7


def _images(n, channels, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, channels)).astype("float32")


@pytest.fixture(scope="module")
def trained():
    """arm_resnet18 'small' on grey 32 px images after one AdaBelief step: (model, kernel before, history)."""
    keras.utils.set_random_seed(0)
    model = get_model("arm_resnet18", (SIZE, SIZE, 1), NUM_CLASSES, size="small")
    before = model.get_layer("probabilities").kernel.numpy().copy()
    # The optimizer `fer-keras train` gives this model (AdaBelief, paper 003 Table 4).
    model.compile(
        optimizer=make_optimizer({"model": "arm_resnet18", "learning_rate": 1e-3}),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
        run_eagerly=True,
    )
    labels = np.array([0, 3, 5, 6])
    history = model.fit(_images(4, 1), labels, batch_size=4, epochs=1, verbose=0)
    return model, before, history.history


def test_registration():
    spec = get_spec("arm_resnet18")
    assert spec.kind == "still" and spec.family == "arm" and spec.optimizer == "adabelief"
    assert set(spec.sizes) == {"small", "paper"}


def test_paper_size_gives_121_features_at_224_px():
    assert arm_output_size(224, **ARM_SIZES["paper"]) == 11
    assert arm_output_size(SIZE, **ARM_SIZES["small"]) == 3
    assert arm_output_size(64, **ARM_SIZES["small"]) == 7


def test_one_adabelief_step(trained):
    model, before, history = trained
    assert isinstance(model.optimizer, AdaBelief)
    assert math.isfinite(history["loss"][0])
    assert model.output_shape == (None, NUM_CLASSES)
    assert model.get_layer("arm").output.shape == (None, 9)  # 3x3 ARM features
    assert model.inputs[0].name == "images"
    # The step moved the weights.
    assert not np.allclose(model.get_layer("probabilities").kernel.numpy(), before)


def test_keras_round_trip(trained, tmp_path):
    model, _, _ = trained
    path = tmp_path / "arm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    x = _images(3, 1, seed=1)
    # Both called eagerly (the fixture's model was compiled with run_eagerly; predict would compare
    # an eager forward pass with a traced one, which may differ in the last bit).
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())


def test_batch_one_rebuild(trained):
    model, _, _ = trained
    device = get_model("arm_resnet18", (SIZE, SIZE, 1), NUM_CLASSES, size="small", batch_size=1)
    device.set_weights(model.get_weights())
    x = _images(2, 1, seed=2)
    expected = model(x, training=False).numpy()
    for i in range(2):
        np.testing.assert_allclose(device(x[i:i + 1], training=False).numpy(), expected[i:i + 1], atol=1e-6)


def test_grey_input_is_the_rgb_network_on_repeated_channels(trained):
    model, _, _ = trained
    rgb = get_model("arm_resnet18", (SIZE, SIZE, 3), NUM_CLASSES, size="small")
    rgb.set_weights(model.get_weights())
    grey = _images(2, 1, seed=3)
    np.testing.assert_allclose(
        rgb(np.repeat(grey, 3, axis=-1), training=False).numpy(),
        model(grey, training=False).numpy(),
        atol=1e-6,
    )


def test_user_weights_reach_the_backbone(trained, tmp_path):
    model, _, _ = trained
    path = tmp_path / "resnet18.weights.h5"
    model.get_layer("resnet18").save_weights(path)
    fresh = get_model("arm_resnet18", (SIZE, SIZE, 1), NUM_CLASSES, size="small", weights=str(path))
    for got, want in zip(fresh.get_layer("resnet18").get_weights(), model.get_layer("resnet18").get_weights()):
        np.testing.assert_array_equal(got, want)


def test_too_small_input_for_the_arm_kernel_is_refused():
    with pytest.raises(ValueError, match="at least 33 px"):
        get_model("arm_resnet18", (SIZE, SIZE, 3), NUM_CLASSES, size="paper")
    with pytest.raises(ValueError, match="grey"):
        get_model("arm_resnet18", (SIZE, SIZE, 2), NUM_CLASSES)
