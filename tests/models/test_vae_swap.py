"""vae_swap networks (paper 004 Tables 1, 2): shapes, sizes, .keras round trips."""

import keras
import numpy as np
import pytest

from fer_keras.models.registry import get_model
from fer_keras.models.vae_swap import VAESwap, build_decoder, build_discriminator, build_encoder

TINY = dict(encoder_filters=(4, 4, 8, 8), decoder_filters=(8, 4, 4, 4), latent_dim=4)


def test_paper_encoder_and_decoder_shapes():
    encoder = build_encoder(64, 3)
    assert [o.shape for o in encoder.outputs] == [(None, 64), (None, 64)]
    assert encoder.get_layer("conv4_2").output.shape == (None, 4, 4, 256)  # Table 1: 256x4x4 before pooling
    decoder = build_decoder(64, 3)
    assert decoder.get_layer("fc1").output.shape == (None, 4096)  # Table 2: fc 4096
    assert decoder.get_layer("deconv1_1").output.shape == (None, 8, 8, 128)
    assert decoder.output.shape == (None, 64, 64, 3)
    assert build_discriminator(64, 3).output.shape == (None, 1)


def test_128_px_adds_the_conv5_pair():
    encoder = build_encoder(128, 3, extra_block=True)
    assert encoder.get_layer("conv5_2").output.shape == (None, 4, 4, 256)
    decoder = build_decoder(128, 3, extra_block=True)
    assert decoder.get_layer("fc1").output.shape == (None, 4096)
    assert decoder.output.shape == (None, 128, 128, 3)


def test_size_must_divide():
    with pytest.raises(ValueError, match="multiple of 16"):
        build_encoder(40, 1)


def test_call_outputs_and_uniform_readout():
    model = get_model("vae_swap", (32, 32, 1), 7, **TINY)
    out = model(np.zeros((2, 32, 32, 1), "float32"))
    assert out["z_e"].shape == (2, 4) and out["z_i"].shape == (2, 4)
    np.testing.assert_allclose(np.asarray(out["probabilities"]), 1 / 7, rtol=1e-5)  # zero centroids


@pytest.mark.parametrize("name", ["vae_swap", "vae", "cvae"])
def test_keras_round_trip_of_every_network(name, tmp_path):
    model = get_model(name, (32, 32, 1), 7, num_subjects=3, **TINY)
    model.centroids.assign(np.random.default_rng(0).normal(size=(7, 4)).astype("float32"))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded, VAESwap) and loaded.get_config() == model.get_config()
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    z = np.random.default_rng(2).normal(size=(2, 8)).astype("float32")
    for net in ("identity_encoder", "expression_encoder", "decoder", "discriminator"):
        a, b = getattr(model, net), getattr(loaded, net)
        inp = z if net == "decoder" else (x / 255.0 if net == "discriminator" else x)
        for u, v in zip(keras.tree.flatten(a(inp)), keras.tree.flatten(b(inp))):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-6)
        a.save(tmp_path / f"{net}.keras")  # each network also saves on its own
        c = keras.saving.load_model(tmp_path / f"{net}.keras")
        np.testing.assert_allclose(np.asarray(keras.tree.flatten(c(inp))[0]), np.asarray(keras.tree.flatten(a(inp))[0]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(loaded(x)["probabilities"]), np.asarray(model(x)["probabilities"]), atol=1e-6)
    if name == "cvae":
        np.testing.assert_allclose(loaded.subject_embedding.get_weights()[0], model.subject_embedding.get_weights()[0])


def test_invalid_combinations_fail_early():
    with pytest.raises(ValueError, match="identity=True"):
        VAESwap(32, 1, 7, identity=False, gan=True, switch=False, **TINY)
    with pytest.raises(ValueError, match="rounds must be"):
        VAESwap(32, 1, 7, rounds=0, **TINY)
