"""`--quantize int16x8`: int8 weights with int16 activations and int16 I/O (TFLite's
EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8), for still models and streaming step models.

benchmarks/int8_parity.py measures it against full int8 on trained models; here: the I/O types,
builtin ops only, and parity with Keras, run directly in `ai_edge_litert`.
"""

import json

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from fer_keras.data.splits import Split
from fer_keras.exports import tflite
from fer_keras.training import fit
from tests.conftest import CLIP_LENGTH, MODEL_SIZE, expect_ok, expect_user_error, invoke
from tests.exports.test_tflite_export import held_out_inputs, keras_probabilities, run_litert


def _quantise(x, d):
    if d["dtype"] in (np.int8, np.int16):
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])
    return x.astype(np.float32)


def _dequantise(y, d):
    if d["dtype"] in (np.int8, np.int16):
        scale, zero = d["quantization"]
        return (y.astype(np.float32) - zero) * scale
    return y


def run_int16(path, inputs):
    """Probabilities of a one-input .tflite with int16 (or int8) I/O, one sample at a time."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for x in inputs:
        interpreter.set_tensor(inp["index"], _quantise(x[None].astype(np.float32), inp))
        interpreter.invoke()
        results.append(_dequantise(interpreter.get_tensor(out["index"]), out)[0])
    return np.stack(results), interpreter


@pytest.fixture(scope="module")
def still_int16x8(still_run, exports_dir):
    expect_ok(invoke("--quiet", "export", still_run, "--format", "tflite", "--quantize", "int16x8", "--out", exports_dir))
    return exports_dir / still_run.name / "tflite" / "model_int16x8.tflite"


def test_int16x8_still_export_parity(still_run, still_tflite, still_int16x8):
    model, _, inputs = held_out_inputs(still_run)
    expected = keras_probabilities(model, inputs)
    got, interpreter = run_int16(still_int16x8, inputs)
    assert interpreter.get_input_details()[0]["dtype"] == np.int16
    assert interpreter.get_output_details()[0]["dtype"] == np.int16
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops and not any(name.startswith("Flex") or name == "CUSTOM" for name in ops), ops
    int16_diff = np.max(np.abs(got - expected))
    int8_diff = np.max(np.abs(run_litert(still_tflite["int8"], inputs)[0] - expected))
    assert int16_diff <= 0.03 and int16_diff <= int8_diff, (int16_diff, int8_diff)
    meta = json.loads(still_int16x8.with_suffix(".json").read_text())
    assert meta["quantize"] == "int16x8" and meta["input"]["dtype"] == "int16"
    scale, zero = meta["input"]["quantization"]
    assert scale > 0 and zero == 0  # int16 activations are symmetric
    assert meta["output"]["dtype"] == "int16" and meta["parity"]["max_abs_diff"] <= 0.03


def test_int16x8_streaming_step_model_matches_the_clip_model(clip_run, exports_dir):
    expect_ok(invoke("--quiet", "export", clip_run, "--format", "tflite", "--streaming", "--quantize", "int16x8",
                     "--out", exports_dir))
    path = exports_dir / clip_run.name / "tflite" / "stream_int16x8.tflite"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["input"]["dtype"] == "int16" and all(s["dtype"] == "int16" for s in meta["states"])
    config, manifest, model = fit.load_run(clip_run)
    x, _ = tflite.sample(fit.make_dataset(config, manifest, Split.from_dict(config["split_subjects"]), "test", batch_size=8), 4)
    assert x.shape[1:] == (CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1)
    runner = Interpreter(model_path=str(path)).get_signature_runner()
    ins, outs = runner.get_input_details(), runner.get_output_details()
    states = [n for n in ins if n != "frame"]
    for clip, expected in zip(x, np.asarray(model(x, training=False))):
        values = {n: np.zeros(ins[n]["shape"], np.float32) for n in states}  # zero states before the first frame
        for frame in clip:
            feed = {"frame": _quantise(frame[None], ins["frame"]), **{n: _quantise(v, ins[n]) for n, v in values.items()}}
            out = {n: _dequantise(v, outs[n]) for n, v in runner(**feed).items()}
            values = {n: out[n + "_next"] for n in states}
        assert np.max(np.abs(out["probabilities"][0] - expected)) <= 0.03


def test_int16x8_of_a_whole_clip_model_is_refused(clip_run, tmp_path):
    line = expect_user_error(invoke("export", clip_run, "--format", "tflite", "--quantize", "int16x8", "--out", tmp_path))
    assert "--streaming --quantize int16x8" in line
