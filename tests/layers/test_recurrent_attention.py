"""RecurrentAttention: output shapes and ranges, recurrence, streaming step, save/load, gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from fer_keras.layers.conv_gru_cell import ConvGRUCell
from fer_keras.layers.enhanced_conv_lstm_cell import EnhancedConvLSTMCell
from fer_keras.layers.recurrent_attention import RecurrentAttention
from tests.layers.test_conv_lstm_cell import B, C, F, H, T, W, np_conv_same, np_sigmoid, randomize, weights_of

K = 3
CELLS = {
    "enhanced_conv_lstm": lambda: EnhancedConvLSTMCell(F, 3, groups=2),
    "conv_gru": lambda: ConvGRUCell(F, 3),
}


def features(batch=B, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, T, H, W, C)).astype("float32")


def built_ram(cell=None, **kwargs):
    ram = RecurrentAttention(K, cell or CELLS["enhanced_conv_lstm"](), **kwargs)
    ram.build((None, T, H, W, C))
    randomize(ram, scale=0.5)
    return ram


def numpy_outputs(outputs):
    return {key: ops.convert_to_numpy(value) for key, value in outputs.items()}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_shapes_ranges_and_residual_attention(name):
    x = features()
    out = numpy_outputs(built_ram(CELLS[name]())(x))

    assert set(out) == {"features", "attention_logits", "attention_maps"}
    assert out["attention_logits"].shape == (B, T, K)
    assert out["attention_maps"].shape == (B, T, H, W, 1)
    assert out["features"].shape == x.shape
    maps = out["attention_maps"]
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps.std() > 0  # not a constant map
    np.testing.assert_allclose(out["features"], x * (1.0 + maps), rtol=1e-6)


def np_batch_norm(x, w, name, epsilon=1e-3):
    """Inference-mode BatchNormalization with the layer's moving statistics."""
    scale = w[f"{name}/gamma"] / np.sqrt(w[f"{name}/moving_variance"] + epsilon)
    return (x - w[f"{name}/moving_mean"]) * scale + w[f"{name}/beta"]


def test_head_matches_numpy_in_inference():
    ram = built_ram()
    x = features(seed=8)
    w = weights_of(ram)
    a = ops.convert_to_numpy(ram.rnn(x)).astype("float64").reshape(B * T, H, W, F)  # the trunk, (R1)

    out = numpy_outputs(ram(x, training=False))

    k = np_conv_same(np_batch_norm(a, w, "attention_rnn_norm"), w["class_conv/kernel"])
    k = np.maximum(np_batch_norm(k, w, "class_norm"), 0.0)  # (R2)
    logits = np_conv_same(k, w["logit_conv/kernel"]).mean(axis=(1, 2))  # (R3)
    maps = np_sigmoid(np_batch_norm(np_conv_same(k, w["map_conv/kernel"]), w, "map_norm"))  # (R4)
    np.testing.assert_allclose(out["attention_logits"], logits.reshape(B, T, K), atol=1e-5)
    np.testing.assert_allclose(out["attention_maps"], maps.reshape(B, T, H, W, 1), atol=1e-5)


def test_symbolic_output_shapes():
    out = RecurrentAttention(K, EnhancedConvLSTMCell(F, 3, groups=2))(keras.Input(shape=(T, H, W, C)))
    assert {key: tuple(value.shape) for key, value in out.items()} == {
        "features": (None, T, H, W, C),
        "attention_logits": (None, T, K),
        "attention_maps": (None, T, H, W, 1),
    }


def test_attention_state_is_carried_across_time():
    ram = built_ram()
    x = features()
    changed = x.copy()
    changed[:, 0] += 1.0  # only frame 0 differs

    a, b = numpy_outputs(ram(x)), numpy_outputs(ram(changed))

    # Frame 1's logits and map depend on frame 0 only through the recurrent state.
    assert np.abs(a["attention_logits"][:, 1] - b["attention_logits"][:, 1]).max() > 1e-4
    assert np.abs(a["attention_maps"][:, 1] - b["attention_maps"][:, 1]).max() > 1e-5


@pytest.mark.parametrize("name", sorted(CELLS))
def test_streaming_steps_equal_the_sequence_call(name):
    ram = built_ram(CELLS[name]())
    x = features()
    whole = numpy_outputs(ram(x, training=False))

    states = ram.get_initial_state(batch_size=B)
    assert len(states) == len(ram.cell.state_size)
    for t in range(T):
        frame, states = ram.step(x[:, t], states, training=False)
        for key, value in numpy_outputs(frame).items():
            np.testing.assert_allclose(value, whole[key][:, t], atol=1e-5, err_msg=f"{key} at step {t}")


def test_unroll_equals_symbolic_loop():
    loop, unrolled = built_ram(), built_ram(unroll=True)
    unrolled.set_weights(loop.get_weights())
    x = features()
    a, b = numpy_outputs(loop(x)), numpy_outputs(unrolled(x))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6)


def test_save_load_round_trip(tmp_path):
    inputs = keras.Input(shape=(T, H, W, C))
    out = RecurrentAttention(K, EnhancedConvLSTMCell(F, 3, groups=2), name="ram")(inputs)
    probabilities = keras.layers.Dense(K)(keras.layers.GlobalAveragePooling3D()(out["features"]))
    model = keras.Model(inputs, {"perception": probabilities, "attention": out["attention_logits"]})
    randomize(model, seed=2)
    x = features(seed=3)
    path = tmp_path / "ram.keras"

    model.save(path)
    loaded = keras.models.load_model(path)

    want, got = numpy_outputs(model(x)), numpy_outputs(loaded(x))
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    assert len(loaded.weights) == len(model.weights)


def test_every_weight_gets_gradient():
    ram = built_ram()
    x = tf.constant(features(seed=4))
    rng = np.random.default_rng(5)
    r_logits = tf.constant(rng.normal(size=(B, T, K)).astype("float32"))
    r_features = tf.constant(rng.normal(size=(B, T, H, W, C)).astype("float32"))
    with tf.GradientTape() as tape:
        out = ram(x, training=True)
        # Both heads over all T steps, so the trunk's h(t-2) gates matter too.
        loss = tf.reduce_sum(out["attention_logits"] * r_logits) + tf.reduce_sum(out["features"] * r_features)
    grads = tape.gradient(loss, ram.trainable_weights)
    names = [v.path for v in ram.trainable_weights]
    assert any("temporal_recurrent_kernel" in n for n in names) and any("map_conv" in n for n in names)
    for v, g in zip(ram.trainable_weights, grads):
        assert g is not None, f"no gradient for {v.path}"
        assert np.any(np.abs(g.numpy()) > 0), f"zero gradient for {v.path}"


def test_config_round_trip():
    cell = EnhancedConvLSTMCell(F, 3, groups=2)
    ram = RecurrentAttention(K, cell, attention_kernel_size=1, unroll=True, name="ram")
    config = ram.get_config()
    restored = RecurrentAttention.from_config(config)
    assert isinstance(restored.cell, EnhancedConvLSTMCell)
    assert restored.get_config() == config


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes=0"),
        ({"cell": "conv_lstm"}, "cell='conv_lstm'"),
        ({"attention_kernel_size": -1}, "attention_kernel_size=-1"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    arguments = {"num_classes": K, "cell": ConvGRUCell(F, 3), **kwargs}
    with pytest.raises(ValueError, match=match):
        RecurrentAttention(**arguments)


def test_rejects_unknown_spatial_size():
    with pytest.raises(ValueError, match=r"Received: input_shape=\(None, 4, None, None, 3\)"):
        RecurrentAttention(K, ConvGRUCell(F, 3)).build((None, T, None, None, C))
