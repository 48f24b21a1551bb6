"""ConvGRUCell: one step against NumPy (eqs. G1-G4), config, save/load, gradients."""

import numpy as np
import pytest
from keras import ops

from fer_keras.layers.conv_gru_cell import ConvGRUCell
from tests.layers.test_conv_lstm_cell import (
    B,
    C,
    F,
    H,
    W,
    assert_every_weight_gets_gradient,
    assert_save_load_identical,
    np_conv_same,
    np_sigmoid,
    random_step_inputs,
    randomize,
    weights_of,
)


def np_conv_gru_step(x, h_prev, w):
    """Eqs. (G1)-(G4), reset before the candidate's recurrent convolution."""
    zx, rx, hx = np.split(np_conv_same(x, w["kernel"]) + w["bias"], 3, axis=-1)
    uz, ur, uh = np.split(w["recurrent_kernel"], 3, axis=-1)
    z = np_sigmoid(zx + np_conv_same(h_prev, uz))
    r = np_sigmoid(rx + np_conv_same(h_prev, ur))
    h_cand = np.tanh(hx + np_conv_same(r * h_prev, uh))
    return (1.0 - z) * h_prev + z * h_cand


def test_one_step_matches_numpy():
    cell = ConvGRUCell(F, 3)
    cell.build((None, H, W, C))
    randomize(cell)
    x, (h_prev,) = random_step_inputs(1)

    h, states = cell(x.astype("float32"), [h_prev.astype("float32")])

    want = np_conv_gru_step(x, h_prev, weights_of(cell))
    np.testing.assert_allclose(ops.convert_to_numpy(h), want, atol=1e-5)
    assert len(states) == 1
    np.testing.assert_allclose(ops.convert_to_numpy(states[0]), want, atol=1e-5)


def test_weight_shapes_and_initial_state():
    cell = ConvGRUCell(F, (3, 1))
    cell.build((None, H, W, C))
    assert cell.kernel.shape == (3, 1, C, 3 * F)
    assert cell.recurrent_kernel.shape == (3, 1, F, 3 * F)
    (state,) = cell.get_initial_state(batch_size=B)
    assert tuple(state.shape) == (B, H, W, F) and not np.any(ops.convert_to_numpy(state))


def test_config_round_trip():
    cell = ConvGRUCell(F, 5, use_bias=False, recurrent_regularizer="l2", name="g")
    config = cell.get_config()
    assert ConvGRUCell.from_config(config).get_config() == config


def test_save_load_round_trip(tmp_path):
    assert_save_load_identical(ConvGRUCell(F, 3), tmp_path)


def test_every_weight_gets_gradient():
    assert_every_weight_gets_gradient(ConvGRUCell(F, 3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"filters": 2.5, "kernel_size": 3}, "filters=2.5"),
        ({"filters": 4, "kernel_size": "3"}, "kernel_size='3'"),
        ({"filters": 4, "kernel_size": 3, "strides": (1, 2)}, r"strides=\(1, 2\)"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvGRUCell(**kwargs)
