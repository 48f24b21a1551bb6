"""benchmarks/int8_time_error.py finds every Conv-RNN layer's output at every time step and measures it."""
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benchmarks.int8_time_error import int8_kernels, trace, widened_rsqrt  # noqa: E402
from fer_keras.exports import tflite  # noqa: E402
from fer_keras.models.registry import get_model  # noqa: E402

T = 4


@pytest.fixture(scope="module")
def converted():
    model = get_model("econvgru", (T, 16, 16, 1), 7, size="small", streams=("rgb", "flow"), pool_after=(0,),
                      unroll=True, batch_size=1)
    rng = np.random.default_rng(0)
    samples = [{"rgb": rng.uniform(0, 255, (T, 16, 16, 1)).astype("float32"),
                "flow": rng.normal(0, 2, (T, 16, 16, 2)).astype("float32")} for _ in range(100)]
    flatbuffers = {quantize: tflite.convert(model, quantize=quantize, representative=samples) for quantize in ("none", "int8")}
    return model, samples, flatbuffers


def test_every_layer_and_step_is_traced_and_a_model_against_itself_has_no_error(converted):
    _, samples, flatbuffers = converted
    result = trace(flatbuffers["none"], flatbuffers["none"], samples[:3])
    assert sorted(result["steps"]) == [f"{s}_rnn{i}" for s in ("flow", "rgb") for i in range(1, 5)]
    assert all(errors == [0.0] * T for errors in result["steps"].values())
    assert result["head"] == {"fc1": 0.0, "fc2": 0.0}


def test_int8_errors_are_measured_at_every_step(converted):
    _, samples, flatbuffers = converted
    result = trace(flatbuffers["none"], flatbuffers["int8"], samples[:5])
    errors = [e for errs in result["steps"].values() for e in errs]
    assert len(errors) == 8 * T and all(np.isfinite(errors))
    assert min(errors) > 1e-3  # int8 rounding (steps of range / 256) is visible at every step
    assert max(errors) < 2.0  # the dequantised int8 tensor is matched with its own float tensor, not another one


def _rsqrt_scales(flatbuffer):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    return [details[op["outputs"][0]]["quantization"][0] for op in interpreter._get_ops_details() if op["op_name"] == "RSQRT"]


def test_widened_rsqrt_quantises_groupnorm_with_a_4x_wider_range(converted):
    model, samples, flatbuffers = converted
    plain = _rsqrt_scales(flatbuffers["int8"])
    wide = _rsqrt_scales(widened_rsqrt(model, samples, 4.0))
    assert len(plain) == len(wide) == 8 * T  # one GroupNorm per layer and time step
    np.testing.assert_allclose(np.array(wide) / np.array(plain), 4.0, rtol=0.02)


def test_int8_kernels_rounds_each_output_channel_to_int8_levels_and_restores_the_weights(converted):
    model = converted[0]
    before = [v.numpy().copy() for v in model.weights]
    with int8_kernels(model):
        for v, w in zip(model.weights, before):
            got = v.numpy()
            if w.ndim < 2:
                np.testing.assert_array_equal(got, w)  # biases, gamma and beta stay float
                continue
            flat_w, flat_got = w.reshape(-1, w.shape[-1]), got.reshape(-1, w.shape[-1])
            step = np.abs(flat_w).max(axis=0) / 127
            levels = flat_got / np.where(step > 0, step, 1)
            np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # a whole number of steps
            assert np.all(np.abs(flat_got - flat_w) <= step / 2 + 1e-7)  # rounded, not truncated or clipped
            assert not np.array_equal(got, w)
    for v, w in zip(model.weights, before):
        np.testing.assert_array_equal(v.numpy(), w)
