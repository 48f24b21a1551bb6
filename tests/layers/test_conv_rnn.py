"""ConvRNN: every cell over time, unroll parity, shapes, symbolic batch, states, TFLite."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from fer_keras.layers.conv_gru_cell import ConvGRUCell
from fer_keras.layers.conv_lstm_cell import ConvLSTMCell
from fer_keras.layers.conv_rnn import ConvRNN
from fer_keras.layers.enhanced_conv_gru_cell import EnhancedConvGRUCell
from fer_keras.layers.enhanced_conv_lstm_cell import EnhancedConvLSTMCell
from tests.layers.test_conv_lstm_cell import B, C, F, H, T, W, randomize

CELLS = {
    "conv_lstm": lambda: ConvLSTMCell(F, 3),
    "conv_gru": lambda: ConvGRUCell(F, 3),
    "enhanced_conv_lstm": lambda: EnhancedConvLSTMCell(F, 3, groups=2),
    "enhanced_conv_gru": lambda: EnhancedConvGRUCell(F, 3, groups=2),
}
N_STATES = {"conv_lstm": 2, "conv_gru": 1, "enhanced_conv_lstm": 3, "enhanced_conv_gru": 2}


def sequences(batch=B, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, T, H, W, C)).astype("float32")


@pytest.mark.parametrize("name", sorted(CELLS))
def test_unroll_equals_symbolic_loop(name):
    x = sequences()
    loop = ConvRNN(CELLS[name](), return_sequences=True, return_state=True)
    unrolled = ConvRNN(CELLS[name](), return_sequences=True, return_state=True, unroll=True)
    loop.build(x.shape)
    unrolled.build(x.shape)
    randomize(loop)
    unrolled.set_weights(loop.get_weights())

    got, want = unrolled(x), loop(x)

    assert len(got) == len(want) == 1 + N_STATES[name]
    for a, b in zip(got, want):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), atol=1e-6)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("return_sequences", [True, False])
def test_output_shapes_symbolic_and_eager(name, return_sequences):
    layer = ConvRNN(CELLS[name](), return_sequences=return_sequences, return_state=True)
    symbolic = layer(keras.Input(shape=(T, H, W, C)))
    eager = layer(sequences())

    step = (H, W, F)
    want = ((T,) if return_sequences else ()) + step
    assert [tuple(s.shape) for s in symbolic] == [(None,) + want] + [(None,) + step] * N_STATES[name]
    assert [tuple(s.shape) for s in eager] == [(B,) + want] + [(B,) + step] * N_STATES[name]
    last = eager[0][:, -1] if return_sequences else eager[0]
    # Every cell's first state is its output h_t.
    np.testing.assert_array_equal(ops.convert_to_numpy(last), ops.convert_to_numpy(eager[1]))


def test_symbolic_batch_model_runs_any_batch_size():
    inputs = keras.Input(shape=(T, H, W, C))
    outputs = ConvRNN(CELLS["enhanced_conv_lstm"]())(inputs)
    model = keras.Model(inputs, outputs)
    x = sequences(batch=3)

    three = ops.convert_to_numpy(model(x))
    one = ops.convert_to_numpy(model(x[:1]))

    assert three.shape == (3, H, W, F) and one.shape == (1, H, W, F)
    np.testing.assert_allclose(one[0], three[0], atol=1e-6)


@pytest.mark.parametrize("name", ["enhanced_conv_lstm", "conv_gru"])
def test_initial_state_and_order_match_stepping_the_cell(name):
    cell = CELLS[name]()
    rnn = ConvRNN(cell, return_sequences=True)
    x = sequences()
    rnn.build(x.shape)
    randomize(rnn)
    rng = np.random.default_rng(9)
    initial = [rng.normal(size=(B, H, W, F)).astype("float32") for _ in range(N_STATES[name])]

    got = ops.convert_to_numpy(rnn(x, initial_state=initial))

    states = initial
    for t in range(T):
        h, states = cell(x[:, t], states)
        np.testing.assert_allclose(got[:, t], ops.convert_to_numpy(h), atol=1e-6)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_config_round_trip(name):
    layer = ConvRNN(CELLS[name](), return_sequences=True, unroll=True, go_backwards=True, name="rnn")
    config = layer.get_config()
    restored = ConvRNN.from_config(config)
    assert type(restored.cell) is type(layer.cell)
    assert restored.get_config() == config
    assert config["unroll"] and config["return_sequences"] and config["go_backwards"]


def test_rejects_non_convolutional_cells_and_non_sequences():
    with pytest.raises(ValueError, match="Received: cell=.*LSTMCell"):
        ConvRNN(keras.layers.LSTMCell(4))
    with pytest.raises(ValueError, match="stack ConvRNN layers"):
        ConvRNN([ConvLSTMCell(F, 3), ConvLSTMCell(F, 3)])
    with pytest.raises(ValueError):
        ConvRNN(ConvLSTMCell(F, 3))(np.zeros((B, H, W, C), "float32"))


def test_tflite_builtins_only_conversion_matches_keras():
    """Batch 1, fixed T, unroll=True: converts without Flex ops and matches in ai_edge_litert."""
    from ai_edge_litert.interpreter import Interpreter

    inputs = keras.Input(shape=(T, H, W, C), batch_size=1)
    h = ConvRNN(EnhancedConvLSTMCell(F, 3, groups=2), unroll=True)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    randomize(model, scale=0.3)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]

    flatbuffer = converter.convert()

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    x = sequences(batch=1, seed=7)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, ops.convert_to_numpy(model(x)), atol=1e-5)
