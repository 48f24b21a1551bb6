"""EnhancedConvLSTMCell: eq. (2) against NumPy, the h(t-2) state, config, save/load, gradients."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from fer_keras.layers.conv_rnn import ConvRNN
from fer_keras.layers.enhanced_conv_lstm_cell import EnhancedConvLSTMCell
from tests.layers.test_conv_lstm_cell import (
    B,
    C,
    F,
    H,
    T,
    W,
    assert_every_weight_gets_gradient,
    assert_save_load_identical,
    np_conv_lstm_step,
    np_conv_same,
    np_group_norm,
    np_sigmoid,
    random_step_inputs,
    randomize,
    weights_of,
)

GROUPS = 2


def np_enhanced_conv_lstm_step(x, h_prev, c_prev, h_prev2, w, peephole=True, peephole_conv=False, eps=1e-3):
    """Eq. (2): returns (h_t, c_t)."""
    lstm_out, c = np_conv_lstm_step(x, h_prev, c_prev, w, peephole, peephole_conv)
    z = np_conv_same(x, w["temporal_kernel"]) + w["temporal_bias"]
    z = z + np_conv_same(h_prev2, w["temporal_recurrent_kernel"])
    s_tilde, s = np.tanh(z[..., :F]), np_sigmoid(z[..., F:])
    pre = lstm_out + s * s_tilde + np_conv_same(x, w["skip_kernel"])
    return np_group_norm(pre, w["group_norm/gamma"], w["group_norm/beta"], GROUPS, eps), c


def built_cell(**kwargs):
    cell = EnhancedConvLSTMCell(F, 3, groups=GROUPS, **kwargs)
    cell.build((None, H, W, C))
    randomize(cell)
    return cell


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"peephole_mode": "conv"},
        {"peephole": False},
        {"skip_kernel_size": 3, "norm_epsilon": 1e-5},
    ],
)
@pytest.mark.parametrize("training", [False, True])  # True: the one-pass GroupNorm of training steps
def test_one_step_matches_numpy(kwargs, training):
    cell = built_cell(**kwargs)
    x, (h_prev, c_prev, h_prev2) = random_step_inputs(3)

    h, states = cell(x.astype("float32"), [s.astype("float32") for s in (h_prev, c_prev, h_prev2)], training=training)

    want_h, want_c = np_enhanced_conv_lstm_step(
        x,
        h_prev,
        c_prev,
        h_prev2,
        weights_of(cell),
        peephole=kwargs.get("peephole", True),
        peephole_conv=kwargs.get("peephole_mode") == "conv",
        eps=kwargs.get("norm_epsilon", 1e-3),
    )
    np.testing.assert_allclose(ops.convert_to_numpy(h), want_h, atol=1e-5)
    assert len(states) == 3
    np.testing.assert_allclose(ops.convert_to_numpy(states[0]), want_h, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(states[1]), want_c, atol=1e-5)
    # The old h(t-1) becomes the next step's h(t-2), unchanged.
    np.testing.assert_array_equal(ops.convert_to_numpy(states[2]), h_prev.astype("float32"))


def test_h_prev2_shifts_over_three_steps_and_is_zero_at_t0_t1():
    cell = built_cell()
    xs = np.random.default_rng(2).normal(size=(3, B, H, W, C)).astype("float32")
    states = cell.get_initial_state(batch_size=B)
    hs, h_prev2_seen = [], []
    for t in range(3):
        h_prev2_seen.append(ops.convert_to_numpy(states[2]))  # the h(t-2) that step t reads
        h, states = cell(xs[t], states)
        hs.append(ops.convert_to_numpy(h))
        np.testing.assert_array_equal(ops.convert_to_numpy(states[0]), hs[t])

    assert not np.any(h_prev2_seen[0]) and not np.any(h_prev2_seen[1])
    np.testing.assert_array_equal(h_prev2_seen[2], hs[0])
    np.testing.assert_array_equal(ops.convert_to_numpy(states[2]), hs[1])
    assert np.any(hs[0])


def test_sequence_matches_numpy_loop_with_h_prev2():
    cell = EnhancedConvLSTMCell(F, 3, groups=GROUPS)
    rnn = ConvRNN(cell, return_sequences=True)
    x = np.random.default_rng(6).normal(size=(B, T, H, W, C))
    rnn.build(x.shape)
    randomize(rnn)

    got = ops.convert_to_numpy(rnn(x.astype("float32")))

    w = weights_of(cell)
    h_prev = c = h_prev2 = np.zeros((B, H, W, F))
    for t in range(T):
        h, c = np_enhanced_conv_lstm_step(x[:, t], h_prev, c, h_prev2, w)
        np.testing.assert_allclose(got[:, t], h, atol=1e-5, err_msg=f"step {t}")
        h_prev, h_prev2 = h, h_prev


def test_weight_shapes():
    cell = built_cell(skip_kernel_size=(1, 3))
    shapes = {name: v.shape for name, v in weights_of(cell).items()}
    assert shapes["temporal_kernel"] == (3, 3, C, 2 * F)
    assert shapes["temporal_recurrent_kernel"] == (3, 3, F, 2 * F)
    assert shapes["temporal_bias"] == (2 * F,)
    assert shapes["skip_kernel"] == (1, 3, C, F)
    assert shapes["group_norm/gamma"] == (F,)
    assert shapes["input_peephole"] == (H, W, F)
    assert built_cell(peephole_mode="conv").peephole_kernel.shape == (3, 3, F, 3 * F)


def test_config_round_trip():
    cell = EnhancedConvLSTMCell(
        F, 3, groups=GROUPS, skip_kernel_size=3, peephole_mode="conv", norm_epsilon=1e-5
    )
    config = cell.get_config()
    assert EnhancedConvLSTMCell.from_config(config).get_config() == config
    assert (config["groups"], config["peephole_mode"], config["skip_kernel_size"]) == (GROUPS, "conv", (3, 3))


@pytest.mark.parametrize("peephole_mode", ["hadamard", "conv"])
def test_save_load_round_trip(tmp_path, peephole_mode):
    cell = EnhancedConvLSTMCell(F, 3, groups=GROUPS, peephole_mode=peephole_mode)
    assert_save_load_identical(cell, tmp_path)


@pytest.mark.parametrize("peephole_mode", ["hadamard", "conv"])
def test_every_weight_gets_gradient(peephole_mode):
    assert_every_weight_gets_gradient(EnhancedConvLSTMCell(F, 3, groups=GROUPS, peephole_mode=peephole_mode))


def test_training_group_norm_matches_the_keras_layer_in_value_and_gradient():
    """The one-pass GroupNorm of training steps is Keras's GroupNormalization, gradients included."""
    rnn = ConvRNN(EnhancedConvLSTMCell(F, 3, groups=GROUPS), return_sequences=True)
    rng = np.random.default_rng(7)
    x = tf.constant((rng.normal(size=(B, T, H, W, C)) + 2.0).astype("float32"))  # off-centre: a one-pass variance's weak spot
    rnn.build(x.shape)
    randomize(rnn, seed=7)
    target = tf.constant(rng.normal(size=(B, T, H, W, F)).astype("float32"))
    results = {}
    for training in (False, True):
        with tf.GradientTape() as tape:
            y = rnn(x, training=training)
            loss = tf.reduce_sum(y * target)
        results[training] = (y.numpy(), [g.numpy() for g in tape.gradient(loss, rnn.trainable_weights)])
    np.testing.assert_allclose(results[True][0], results[False][0], atol=1e-5)
    for v, g_train, g_infer in zip(rnn.trainable_weights, results[True][1], results[False][1]):
        np.testing.assert_allclose(g_train, g_infer, rtol=1e-3, atol=1e-4, err_msg=v.path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"groups": 3}, "groups=3"),
        ({"groups": GROUPS, "peephole_mode": "full"}, "peephole_mode='full'"),
        ({"groups": GROUPS, "norm_epsilon": 0.0}, "norm_epsilon=0.0"),
        ({"groups": GROUPS, "skip_kernel_size": 0}, "skip_kernel_size=0"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnhancedConvLSTMCell(F, 3, **kwargs)
