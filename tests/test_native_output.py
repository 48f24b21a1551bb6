"""native_stderr_captured keeps native writes to file descriptor 2 away, and gives them back on failure."""
import os

import keras
import numpy as np
import pytest

from fer_keras.exports.tflite import LiteRTModel, convert
from fer_keras.native_output import native_stderr_captured


def test_a_native_write_inside_the_block_does_not_reach_stderr(capfd):
    os.write(2, b"before\n")
    with native_stderr_captured():
        os.write(2, b"inside the block\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


def test_what_was_captured_is_replayed_when_the_block_raises(capfd):
    with pytest.raises(RuntimeError, match="boom"):
        with native_stderr_captured():
            os.write(2, b"native log line\n")
            raise RuntimeError("boom")
    assert "native log line" in capfd.readouterr().err


def test_no_replay_when_the_caller_words_the_failure_itself(capfd):
    with pytest.raises(RuntimeError):
        with native_stderr_captured(replay_on_error=False):
            os.write(2, b"native log line\n")
            raise RuntimeError("boom")
    assert "native log line" not in capfd.readouterr().err


def test_int8_conversion_and_litert_run_print_nothing_native(capfd):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                              keras.layers.Dense(3), keras.layers.Softmax()])
    rng = np.random.default_rng(0)
    samples = [rng.uniform(0, 255, (8, 8, 1)).astype("float32") for _ in range(100)]
    capfd.readouterr()
    flatbuffer = convert(model, quantize="int8", representative=samples)
    probabilities = LiteRTModel(flatbuffer)(samples[0][None])
    err = capfd.readouterr().err
    assert probabilities.shape == (3,) and abs(float(probabilities.sum()) - 1) < 0.05
    assert "fully_quantize" not in err and "XNNPACK" not in err, err
