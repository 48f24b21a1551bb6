"""EnhancedConvGRUCell: one step against NumPy, the h(t-2) state, config, save/load, gradients."""

import numpy as np
import pytest
from keras import ops

from fer_keras.layers.conv_rnn import ConvRNN
from fer_keras.layers.enhanced_conv_gru_cell import EnhancedConvGRUCell
from tests.layers.test_conv_gru_cell import np_conv_gru_step
from tests.layers.test_conv_lstm_cell import (
    B,
    C,
    F,
    H,
    T,
    W,
    assert_every_weight_gets_gradient,
    assert_save_load_identical,
    np_conv_same,
    np_group_norm,
    np_sigmoid,
    random_step_inputs,
    randomize,
    weights_of,
)

GROUPS = 2


def np_enhanced_conv_gru_step(x, h_prev, h_prev2, w, eps=1e-3):
    """h_t = g((1 - z) ∘ h_{t-1} + z ∘ h~ + s ∘ s~ + W_xp * x_t)."""
    gru_out = np_conv_gru_step(x, h_prev, w)
    z = np_conv_same(x, w["temporal_kernel"]) + w["temporal_bias"]
    z = z + np_conv_same(h_prev2, w["temporal_recurrent_kernel"])
    s_tilde, s = np.tanh(z[..., :F]), np_sigmoid(z[..., F:])
    pre = gru_out + s * s_tilde + np_conv_same(x, w["skip_kernel"])
    return np_group_norm(pre, w["group_norm/gamma"], w["group_norm/beta"], GROUPS, eps)


def built_cell(**kwargs):
    cell = EnhancedConvGRUCell(F, 3, groups=GROUPS, **kwargs)
    cell.build((None, H, W, C))
    randomize(cell)
    return cell


@pytest.mark.parametrize("kwargs", [{}, {"skip_kernel_size": 3, "norm_epsilon": 1e-5}])
@pytest.mark.parametrize("training", [False, True])  # True: the one-pass GroupNorm of training steps
def test_one_step_matches_numpy(kwargs, training):
    cell = built_cell(**kwargs)
    x, (h_prev, h_prev2) = random_step_inputs(2)

    h, states = cell(x.astype("float32"), [h_prev.astype("float32"), h_prev2.astype("float32")], training=training)

    eps = kwargs.get("norm_epsilon", 1e-3)
    want = np_enhanced_conv_gru_step(x, h_prev, h_prev2, weights_of(cell), eps=eps)
    np.testing.assert_allclose(ops.convert_to_numpy(h), want, atol=1e-5)
    assert len(states) == 2
    np.testing.assert_allclose(ops.convert_to_numpy(states[0]), want, atol=1e-5)
    np.testing.assert_array_equal(ops.convert_to_numpy(states[1]), h_prev.astype("float32"))


def test_h_prev2_shifts_over_three_steps_and_is_zero_at_t0_t1():
    cell = built_cell()
    xs = np.random.default_rng(2).normal(size=(3, B, H, W, C)).astype("float32")
    states = cell.get_initial_state(batch_size=B)
    hs, h_prev2_seen = [], []
    for t in range(3):
        h_prev2_seen.append(ops.convert_to_numpy(states[1]))  # the h(t-2) that step t reads
        h, states = cell(xs[t], states)
        hs.append(ops.convert_to_numpy(h))

    assert not np.any(h_prev2_seen[0]) and not np.any(h_prev2_seen[1])
    np.testing.assert_array_equal(h_prev2_seen[2], hs[0])
    np.testing.assert_array_equal(ops.convert_to_numpy(states[1]), hs[1])
    assert np.any(hs[0])


def test_sequence_matches_numpy_loop_with_h_prev2():
    cell = EnhancedConvGRUCell(F, 3, groups=GROUPS)
    rnn = ConvRNN(cell, return_sequences=True)
    x = np.random.default_rng(6).normal(size=(B, T, H, W, C))
    rnn.build(x.shape)
    randomize(rnn)

    got = ops.convert_to_numpy(rnn(x.astype("float32")))

    w = weights_of(cell)
    h_prev = h_prev2 = np.zeros((B, H, W, F))
    for t in range(T):
        h = np_enhanced_conv_gru_step(x[:, t], h_prev, h_prev2, w)
        np.testing.assert_allclose(got[:, t], h, atol=1e-5, err_msg=f"step {t}")
        h_prev, h_prev2 = h, h_prev


def test_config_round_trip():
    cell = EnhancedConvGRUCell(F, 3, groups=GROUPS, skip_kernel_size=(3, 1), norm_epsilon=1e-5)
    config = cell.get_config()
    assert EnhancedConvGRUCell.from_config(config).get_config() == config
    assert config["groups"] == GROUPS and config["skip_kernel_size"] == (3, 1)


def test_save_load_round_trip(tmp_path):
    assert_save_load_identical(EnhancedConvGRUCell(F, 3, groups=GROUPS), tmp_path)


def test_every_weight_gets_gradient():
    assert_every_weight_gets_gradient(EnhancedConvGRUCell(F, 3, groups=GROUPS))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"groups": 8}, "groups=8"),
        ({"groups": GROUPS, "norm_epsilon": -1.0}, "norm_epsilon=-1.0"),
        ({"groups": GROUPS, "skip_kernel_size": (1, 1, 1)}, r"skip_kernel_size=\(1, 1, 1\)"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnhancedConvGRUCell(F, 3, **kwargs)
