"""ConvLSTMCell: one step against NumPy (eq. 1), Keras parity, config, save/load, gradients.

The NumPy helpers here (`np_conv_same`, `randomize`, `np_conv_lstm_step`, the save/load and
gradient checks) are shared by the other recurrent-layer tests.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from fer_keras.layers.conv_lstm_cell import ConvLSTMCell
from fer_keras.layers.conv_rnn import ConvRNN

B, T, H, W, C, F = 2, 4, 4, 5, 3, 4


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_conv_same(x, w):
    """Stride-1 'same' convolution of x (B, H, W, C) with w (kh, kw, C, F), as TF pads it."""
    kh, kw = w.shape[:2]
    top, left = (kh - 1) // 2, (kw - 1) // 2
    xp = np.pad(x, ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)))
    out = np.zeros(x.shape[:3] + (w.shape[-1],))
    for dy in range(kh):
        for dx in range(kw):
            out += xp[:, dy : dy + x.shape[1], dx : dx + x.shape[2], :] @ w[dy, dx]
    return out


def np_group_norm(x, gamma, beta, groups, epsilon):
    """Wu and He's GroupNorm of x (B, H, W, F) over (H, W, F/groups) per sample and group."""
    b, h, w, f = x.shape
    g = x.reshape(b, h, w, groups, f // groups)  # (B, H, W, G, F/G)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + epsilon)).reshape(x.shape) * gamma + beta


def randomize(layer, seed=0, scale=0.5):
    """Sets every weight of `layer` to deterministic random values (variances stay positive)."""
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        value = rng.normal(scale=scale, size=v.shape)
        if "variance" in v.path:
            value = np.abs(value) + 0.5
        v.assign(value.astype("float32"))


def weights_of(layer):
    """{weight name: float64 array}, e.g. 'kernel', 'group_norm/gamma'."""
    prefix = layer.path + "/"
    return {v.path[len(prefix) :]: ops.convert_to_numpy(v).astype("float64") for v in layer.weights}


def np_conv_lstm_step(x, h_prev, c_prev, w, peephole, peephole_conv=False):
    """Eq. (1) up to the output: returns (o_t ∘ tanh(c_t), c_t)."""
    z = np_conv_same(x, w["kernel"]) + w["bias"] + np_conv_same(h_prev, w["recurrent_kernel"])
    z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
    if peephole and peephole_conv:
        p_i, p_f, _ = np.split(np_conv_same(c_prev, w["peephole_kernel"]), 3, axis=-1)
        z_i, z_f = z_i + p_i, z_f + p_f
    elif peephole:
        z_i, z_f = z_i + w["input_peephole"] * c_prev, z_f + w["forget_peephole"] * c_prev
    c = np_sigmoid(z_f) * c_prev + np_sigmoid(z_i) * np.tanh(z_c)
    if peephole and peephole_conv:
        z_o = z_o + np.split(np_conv_same(c, w["peephole_kernel"]), 3, axis=-1)[2]
    elif peephole:
        z_o = z_o + w["output_peephole"] * c
    return np_sigmoid(z_o) * np.tanh(c), c


def random_step_inputs(n_states, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, H, W, C))
    states = [rng.normal(size=(B, H, W, F)) for _ in range(n_states)]
    return x, states


def assert_save_load_identical(cell, tmp_path, seed=3):
    """A small model with the cell inside ConvRNN gives identical outputs after .keras save/load."""
    inputs = keras.Input(shape=(T, H, W, C))
    h = ConvRNN(cell, return_sequences=True)(inputs)
    outputs = keras.layers.Dense(2)(h)
    model = keras.Model(inputs, outputs)
    randomize(model, seed=seed)
    x = np.random.default_rng(seed).normal(size=(B, T, H, W, C)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(ops.convert_to_numpy(model(x)), ops.convert_to_numpy(loaded(x)))
    assert len(loaded.weights) == len(model.weights)


def assert_every_weight_gets_gradient(cell, seed=4):
    """Every trainable weight gets a non-zero gradient from a loss over all T >= 3 steps."""
    rnn = ConvRNN(cell, return_sequences=True)
    x = tf.constant(np.random.default_rng(seed).normal(size=(B, T, H, W, C)).astype("float32"))
    rnn.build(x.shape)
    randomize(rnn, seed=seed)
    # A fixed random projection: a plain sum would give GroupNorm's gamma no gradient.
    target = tf.constant(np.random.default_rng(seed + 1).normal(size=(B, T, H, W, F)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(rnn(x) * target)
    grads = tape.gradient(loss, rnn.trainable_weights)
    assert rnn.trainable_weights
    for v, g in zip(rnn.trainable_weights, grads):
        assert g is not None, f"no gradient for {v.path}"
        assert np.any(np.abs(g.numpy()) > 0), f"zero gradient for {v.path}"


@pytest.mark.parametrize("peephole", [True, False])
def test_one_step_matches_numpy(peephole):
    cell = ConvLSTMCell(F, 3, peephole=peephole)
    cell.build((None, H, W, C))
    randomize(cell)
    x, (h_prev, c_prev) = random_step_inputs(2)

    h, states = cell(x.astype("float32"), [s.astype("float32") for s in (h_prev, c_prev)])

    want_h, want_c = np_conv_lstm_step(x, h_prev, c_prev, weights_of(cell), peephole)
    np.testing.assert_allclose(ops.convert_to_numpy(h), want_h, atol=1e-5)
    assert len(states) == 2
    np.testing.assert_allclose(ops.convert_to_numpy(states[0]), want_h, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(states[1]), want_c, atol=1e-5)


def test_peepholes_change_the_step():
    cell = ConvLSTMCell(F, 3)
    cell.build((None, H, W, C))
    randomize(cell)
    x, (h_prev, c_prev) = random_step_inputs(2)
    with_peepholes, _ = np_conv_lstm_step(x, h_prev, c_prev, weights_of(cell), peephole=True)
    without, _ = np_conv_lstm_step(x, h_prev, c_prev, weights_of(cell), peephole=False)
    assert np.abs(with_peepholes - without).max() > 1e-3
    peepholes = (cell.input_peephole, cell.forget_peephole, cell.output_peephole)
    assert [v.shape for v in peepholes] == [(H, W, F)] * 3


def test_without_peepholes_equals_keras_conv_lstm2d():
    x = np.random.default_rng(5).normal(size=(B, T, H, W, C)).astype("float32")
    ours = ConvRNN(ConvLSTMCell(F, 3, peephole=False), return_sequences=True)
    theirs = keras.layers.ConvLSTM2D(F, 3, padding="same", return_sequences=True)
    ours.build(x.shape)
    theirs.build(x.shape)
    randomize(ours)
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(ours(x)), ops.convert_to_numpy(theirs(x)), atol=1e-5)


def test_initial_state_is_zeros_of_state_shape():
    cell = ConvLSTMCell(F, 3)
    cell.build((None, H, W, C))
    states = cell.get_initial_state(batch_size=B)
    assert len(states) == len(cell.state_size) == 2
    for s in states:
        assert tuple(s.shape) == (B, H, W, F)
        assert not np.any(ops.convert_to_numpy(s))


def test_unit_forget_bias_starts_forget_gate_at_one():
    cell = ConvLSTMCell(F, 3)
    cell.build((None, H, W, C))
    bias = ops.convert_to_numpy(cell.bias)
    np.testing.assert_array_equal(bias[F : 2 * F], 1.0)
    np.testing.assert_array_equal(np.concatenate([bias[:F], bias[2 * F :]]), 0.0)


def test_config_round_trip():
    cell = ConvLSTMCell(F, (3, 1), peephole=False, unit_forget_bias=False, kernel_regularizer="l2", name="c")
    config = cell.get_config()
    assert ConvLSTMCell.from_config(config).get_config() == config
    assert config["kernel_size"] == (3, 1) and config["peephole"] is False


def test_save_load_round_trip(tmp_path):
    assert_save_load_identical(ConvLSTMCell(F, 3), tmp_path)


def test_every_weight_gets_gradient():
    assert_every_weight_gets_gradient(ConvLSTMCell(F, 3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filters": 0, "kernel_size": 3}, "filters=0"),
        ({"filters": 4, "kernel_size": (3,)}, r"kernel_size=\(3,\)"),
        ({"filters": 4, "kernel_size": 3, "strides": 2}, "strides=2"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvLSTMCell(**kwargs)


def test_rejects_unknown_spatial_size_and_unbuilt_initial_state():
    cell = ConvLSTMCell(F, 3)
    with pytest.raises(ValueError, match="unbuilt"):
        cell.get_initial_state(batch_size=1)
    with pytest.raises(ValueError, match=r"Received: inputs_shape=\(None, None, None, 3\)"):
        cell.build((None, None, None, 3))
