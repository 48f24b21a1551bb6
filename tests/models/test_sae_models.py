"""Paper 002 models (sae, sdae, sae_nopretrain): one training step each, greedy layer-wise
pretraining (losses fall, encoder weights land in the classifier), masking noise, RGB -> grey,
first-layer saliency, .keras round trip, batch-1 rebuild.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from fer_keras.models.registry import get_model, get_spec
from fer_keras.models.sae import MaskingNoise, StackedAutoencoderClassifier, first_layer_saliency
from fer_keras.training.fit import make_optimizer

SIZE = 16
NUM_CLASSES = 7
TINY = {"hidden_units": (32, 16, 12, 8)}
SAE_MODELS = ("sae", "sdae", "sae_nopretrain")


def structured_images(n=64, channels=1, seed=0):
    """Images in [0, 255] that an autoencoder can learn: 4 smooth blob prototypes + small noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    centres = ((0.3, 0.3), (0.3, 0.7), (0.7, 0.3), (0.7, 0.7))
    prototypes = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05) for cy, cx in centres])
    labels = rng.integers(0, len(centres), n)
    images = prototypes[labels] + rng.normal(scale=0.05, size=(n, SIZE, SIZE))
    images = np.clip(images, 0, 1)[..., None].repeat(channels, -1) * 255.0
    return images.astype("float32"), labels.astype("int32")


def dataset(images, labels, batch_size=16):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


@pytest.mark.parametrize("name", SAE_MODELS)
def test_registered_model_trains_one_step(name):
    spec = get_spec(name)
    assert spec.kind == "still" and spec.family == "sae" and {"small", "paper"} <= set(spec.sizes)
    keras.utils.set_random_seed(0)
    model = get_model(name, (SIZE, SIZE, 1), NUM_CLASSES, size="small", **TINY)
    assert model.inputs[0].name == "images" and model.output_shape == (None, NUM_CLASSES)
    assert model.layers[-1].name == "probabilities"
    before = model.get_layer("hidden1").kernel.numpy().copy()
    model.compile(optimizer=make_optimizer({"model": name, "learning_rate": 1e-2}),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    images, labels = structured_images(16)
    history = model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    assert math.isfinite(history.history["loss"][0])
    assert not np.allclose(model.get_layer("hidden1").kernel.numpy(), before)  # W1 is fine-tuned too


def test_paper_size_reads_64x64_grey():
    model = get_model("sdae", (96, 96, 3), NUM_CLASSES, size="paper")
    assert model.pixel_shape == (64, 64)
    assert model.get_layer("hidden1").kernel.shape == (64 * 64, 2000)
    assert model.hidden_units == (2000, 1000, 500, 250) and model.denoising_layers == 2


@pytest.fixture(scope="module")
def pretrained():
    """sdae with 4 tiny hidden layers, pretrained 8 epochs per layer: (model, W before, results)."""
    keras.utils.set_random_seed(0)
    model = get_model("sdae", (SIZE, SIZE, 1), NUM_CLASSES, size="small", pretrain_learning_rate=1e-2, seed=1, **TINY)
    before = [model.get_layer(f"hidden{k}").get_weights() for k in range(1, 5)]
    images, labels = structured_images(64)
    results = model.pretrain(dataset(images, labels), epochs=8, verbose=0)
    return model, before, results


def test_pretraining_lowers_each_reconstruction_loss(pretrained):
    model, _, results = pretrained
    assert [r["layer"] for r in results] == ["hidden1", "hidden2", "hidden3", "hidden4"]
    assert [r["denoising"] for r in results] == [True, True, False, False]  # W1, W2 DAE; W3, W4 AE
    images, _ = structured_images(64)
    for depth, r in enumerate(results):
        assert r["loss_after"] < 0.8 * r["loss_before"], r
        # The reported loss is the clean reconstruction error of the codes the layer was trained on.
        codes = model.codes(images, depth).numpy()
        recomputed = np.mean((r["autoencoder"](codes, training=False).numpy() - codes) ** 2)
        assert recomputed == pytest.approx(r["loss_after"], rel=1e-4)


def test_pretrained_encoders_are_copied_into_the_classifier(pretrained):
    model, before, results = pretrained
    for k, r in enumerate(results, start=1):
        encoder = r["autoencoder"].get_layer("encoder").get_weights()
        layer = model.get_layer(f"hidden{k}").get_weights()
        for got, want in zip(layer, encoder):
            np.testing.assert_array_equal(got, want)
        assert not np.allclose(layer[0], before[k - 1][0])


def test_denoising_autoencoders_mask_their_input(pretrained):
    _, _, results = pretrained
    ones = np.ones((64, 500), "float32")
    for r, denoising in zip(results, (True, True, False, False)):  # paper 002: W1, W2 by DAE
        noise = r["autoencoder"].get_layer("masking_noise")
        zeroed = float(np.mean(noise(ones, training=True).numpy() == 0))
        if denoising:
            assert abs(zeroed - 0.25) < 0.02, zeroed
        else:
            assert zeroed == 0.0


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_masking_noise_zeroes_the_requested_fraction_without_rescaling(fraction):
    x = np.random.default_rng(0).uniform(0.5, 1.0, (100, 1000)).astype("float32")
    layer = MaskingNoise(fraction, seed=3)
    y = layer(x, training=True).numpy()
    assert abs(np.mean(y == 0) - fraction) < 0.01
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])  # kept units are not rescaled (unlike Dropout)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    with pytest.raises(ValueError, match="fraction"):
        MaskingNoise(1.0)


def test_plain_sae_uses_no_noise_and_nopretrain_skips_pretraining():
    images, labels = structured_images(16)
    sae = get_model("sae", (SIZE, SIZE, 1), NUM_CLASSES, hidden_units=(8, 4))
    results = sae.pretrain(dataset(images, labels), epochs=1)
    assert [r["denoising"] for r in results] == [False, False]
    plain = get_model("sae_nopretrain", (SIZE, SIZE, 1), NUM_CLASSES, **TINY)
    before = plain.get_weights()
    assert plain.pretrain(dataset(images, labels), epochs=1) == []
    for got, want in zip(plain.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_rgb_input_is_converted_to_bt601_grey():
    grey_model = get_model("sdae", (SIZE, SIZE, 1), NUM_CLASSES, **TINY)
    rgb_model = get_model("sdae", (SIZE, SIZE, 3), NUM_CLASSES, **TINY)
    rgb_model.set_weights(grey_model.get_weights())
    rgb = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    grey = (rgb @ np.array([0.299, 0.587, 0.114], "float32"))[..., None]
    np.testing.assert_allclose(rgb_model(rgb).numpy(), grey_model(grey).numpy(), atol=1e-5)


def test_first_layer_saliency_marks_the_pixels_with_large_weights(pretrained):
    model = get_model("sdae", (2 * SIZE, 2 * SIZE, 1), NUM_CLASSES, image_size=SIZE, **TINY)
    kernel = np.full(model.get_layer("hidden1").kernel.shape, 0.01, "float32")  # (16*16, 32)
    kernel[3 * SIZE + 5, 7] = -0.9  # pixel (row 3, column 5), a large negative weight
    kernel[10 * SIZE + 2, 0] = 0.5
    model.get_layer("hidden1").kernel.assign(kernel)
    strength = first_layer_saliency(model)
    assert strength.shape == (SIZE, SIZE)
    assert strength[3, 5] == pytest.approx(0.9) and strength[10, 2] == pytest.approx(0.5)
    mask = first_layer_saliency(model, threshold=0.6)
    assert mask.dtype == bool and np.argwhere(mask).tolist() == [[3, 5]]
    trained_map = first_layer_saliency(pretrained[0])
    assert trained_map.shape == (SIZE, SIZE) and np.all(np.isfinite(trained_map))


def test_keras_round_trip(pretrained, tmp_path):
    model, _, _ = pretrained
    path = tmp_path / "sdae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert isinstance(loaded, StackedAutoencoderClassifier)
    assert loaded.get_config() == model.get_config()
    images, _ = structured_images(5, seed=1)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))


def test_batch_one_rebuild(pretrained):
    model, _, _ = pretrained
    device = get_model("sdae", (SIZE, SIZE, 1), NUM_CLASSES, size="small", batch_size=1, **TINY)
    assert device.inputs[0].shape == (1, SIZE, SIZE, 1)
    device.set_weights(model.get_weights())
    images, _ = structured_images(2, seed=2)
    expected = model(images).numpy()
    for i in range(2):
        np.testing.assert_allclose(device(images[i:i + 1]).numpy(), expected[i:i + 1], atol=1e-6)


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="denoising_layers"):
        StackedAutoencoderClassifier((SIZE, SIZE, 1), NUM_CLASSES, hidden_units=(8, 4), denoising_layers=3)
    with pytest.raises(ValueError, match="masking_fraction"):
        StackedAutoencoderClassifier((SIZE, SIZE, 1), NUM_CLASSES, masking_fraction=1.0)
    with pytest.raises(ValueError, match="grey"):
        StackedAutoencoderClassifier((SIZE, SIZE, 2), NUM_CLASSES)
