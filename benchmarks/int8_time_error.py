"""Where the int8 error of a recurrent clip model comes from: its growth over the time steps (issue 6).

`benchmarks/int8_parity.py` measures how often an int8 clip model's top-1 agrees with the float model.
This script looks inside: it runs the float32 and the full-integer int8 TFLite conversions of a trained
clip model side by side on held-out clips (every intermediate tensor kept) and, for each Conv-RNN layer
and time step, reports the relative error of the int8 layer output h_t:

    rms(dequantised int8 h_t - float h_t) / rms(float h_t)

averaged over the clips, and the same for the fully connected head. The output of a layer at step t is
the last tensor computed inside that step's cell scope (`.../rgb_rnn2_1/cell_5/...`: the converter names
each unrolled step's ops after the cell call it came from, odd numbers 1, 3, ... for steps 1, 2, ...),
found in the int8 model's execution order and matched by name in the float model.

The int8 model is calibrated as `fer-keras export --quantize int8` calibrates it (200 training samples).
`--remedies` also measures the top-1 agreement of int8 variants that locate the loss (see `trace_run`).

Writes benchmarks/results/int8_time_error.json and the "int8_time_error" section of docs/benchmarks.md.

Usage: python benchmarks/int8_time_error.py LABEL=RUN [LABEL=RUN ...] [--clips 40] [--remedies]
"""

import argparse
import collections
import contextlib
import json
import os
import re
import sys
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks._report import RESULTS, machine, write_json, write_section  # noqa: E402

STEP_SCOPE = re.compile(r"/((?:\w+_)?rnn\d+)(?:_\d+)?/cell_(\d+)/")
HEAD_SCOPE = re.compile(r"/(fc\d+)(?:_\d+)?/")


def _interpreter(flatbuffer):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    return interpreter


def step_outputs(interpreter):
    """{(layer, step): tensor index} of the last tensor computed in each time step's cell scope, and
    {head layer: tensor index} of the last tensor of each fully connected layer, in execution order."""
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    steps, head = {}, {}
    for op in interpreter._get_ops_details():  # execution order
        for index in op["outputs"]:
            name = names[index].split(";")[0]
            match = STEP_SCOPE.search(name)
            if match:
                steps[(match.group(1), int(match.group(2)))] = index
            elif HEAD_SCOPE.search(name):
                head[HEAD_SCOPE.search(name).group(1)] = index
    # cell_1, cell_3, ... -> steps 1, 2, ...
    renumbered = {}
    for layer in sorted({layer for layer, _ in steps}):
        calls = sorted(call for name, call in steps if name == layer)
        renumbered.update({(layer, t + 1): steps[(layer, call)] for t, call in enumerate(calls)})
    return renumbered, head


def _feed(interpreter, x):
    from fer_keras.exports import tflite

    details = interpreter.get_input_details()
    for d in details:
        value = x if not isinstance(x, dict) else next(v for k, v in x.items() if f"_{k}:" in d["name"])
        value = np.asarray(value, np.float32)[None]
        interpreter.set_tensor(d["index"], value if d["dtype"] == np.float32 else tflite.quantise(value, d))
    interpreter.invoke()


def _value(interpreter, index):
    d = interpreter._get_tensor_details(index, 0)
    a = interpreter.get_tensor(index)
    scale, zero = d["quantization"]
    return (a.astype(np.float32) - zero) * scale if a.dtype in (np.int8, np.int16) and scale else a.astype(np.float32)


def trace(reference, candidate, samples):
    """Relative rms error of `candidate`'s (a quantised .tflite) step outputs against `reference`'s (float).

    Returns {"steps": {layer: [error at step 1, 2, ...]}, "head": {layer: error}} averaged over `samples`
    (a list of inputs: arrays, or {stream: array} dicts)."""
    ref, cand = _interpreter(reference), _interpreter(candidate)
    cand_steps, cand_head = step_outputs(cand)
    ref_index = {d["name"]: d["index"] for d in ref.get_tensor_details()}
    cand_name = {d["index"]: d["name"] for d in cand.get_tensor_details()}
    pairs = {key: (ref_index[cand_name[i]], i) for key, i in list(cand_steps.items()) + list(cand_head.items())
             if cand_name[i] in ref_index}
    errors = collections.defaultdict(list)
    for x in samples:
        _feed(ref, x)
        _feed(cand, x)
        for key, (r, c) in pairs.items():
            want, got = _value(ref, r), _value(cand, c)
            if want.shape != got.shape:
                continue
            norm = float(np.sqrt(np.mean(want ** 2)))
            if norm > 0:
                errors[key].append(float(np.sqrt(np.mean((got - want) ** 2))) / norm)
    steps = collections.defaultdict(list)
    for (layer, t) in sorted(k for k in errors if isinstance(k, tuple)):
        steps[layer].append(float(np.mean(errors[(layer, t)])))
    head = {k: float(np.mean(v)) for k, v in errors.items() if isinstance(k, str)}
    return {"steps": dict(steps), "head": head}


def trace_run(run, clips=40, remedies=False):
    """trace() of a run's float32 against its int8 export conversion, on `clips` held-out test clips.

    With `remedies`, also the top-1 agreement with the float Keras model on the held-out test clips (up to the
    export's PARITY_SAMPLES) of: the int8 export as it is; int8 with every GroupNorm op kept float32 (denylisted,
    as landmark_arm's heatmap ops are); int8 with the calibrated ranges of GroupNorm's 1/sqrt(variance + eps) and of
    the products it scales widened 4x (test subjects' groups can have a smaller variance than any training clip's);
    int8 with one stream's Conv-RNN layers float32 (each stream in turn); int8 calibrated on 5x more training clips;
    and, in Keras, the float model with int8-rounded kernels (`int8_kernels`), the weights' share of the error.
    """
    from fer_keras.data.splits import Split
    from fer_keras.exports import tflite
    from fer_keras.training import fit

    config, manifest, model = fit.load_run(run)
    device = tflite.rebuild_for_device(config, manifest, model)
    split = Split.from_dict(config["split_subjects"])
    representative, _ = tflite.sample(fit.make_dataset(config, manifest, split, "train", batch_size=64), tflite.CALIBRATION_SAMPLES)
    representative = tflite._unbatch(representative)
    test_x, _ = tflite.sample(fit.make_dataset(config, manifest, split, "test", batch_size=64), tflite.PARITY_SAMPLES)
    test_items = tflite._unbatch(test_x)
    float32 = tflite.convert(device, quantize="none")
    int8 = tflite.convert(device, quantize="int8", representative=representative)
    result = trace(float32, int8, test_items[:clips])
    params = manifest.get("params", {})
    result.update(model=config["model"], streams=config.get("streams") or "rgb", epochs=config["epochs"],
                  clips=min(clips, len(test_items)), capture=params.get("capture", "wild"),
                  fold=config.get("fold"), folds=config.get("folds"))
    if remedies:
        result["per_op_error"] = per_op_error(device, representative, test_items[:clips], float32)
        candidates = {"int8 (as exported)": int8}
        if any(layer.name == "group_norm" for layer in device._flatten_layers(include_self=False, recursive=True)):
            with mock.patch.object(tflite, "FLOAT_SCOPES", ("group_norm",)):
                candidates["int8, GroupNorm ops float32"] = tflite.convert(device, quantize="int8", representative=representative)
            candidates["int8, 1/sqrt(var) ranges widened 4x"] = widened_rsqrt(device, representative, 4.0)
        for stream in sorted({layer.name.split("_rnn")[0] for layer in device.layers if "_rnn" in layer.name}):
            scopes = tuple(layer.name for layer in device.layers if layer.name.startswith(f"{stream}_rnn"))
            with mock.patch.object(tflite, "FLOAT_SCOPES", scopes):
                candidates[f"int8, the {stream} Conv-RNN layers float32 (all their ops)"] = tflite.convert(
                    device, quantize="int8", representative=representative)
        more, _ = tflite.sample(fit.make_dataset(config, manifest, split, "train", batch_size=64), 5 * tflite.CALIBRATION_SAMPLES)
        more = tflite._unbatch(more)
        candidates[f"int8 calibrated on {len(more)} training clips instead of 200"] = tflite.convert(
            device, quantize="int8", representative=more)
        result["agreement"] = {}
        for label, flatbuffer in candidates.items():
            check = tflite.parity(model, tflite.LiteRTModel(flatbuffer), test_x)
            result["agreement"][label] = {"top1": check["top1_agreement"], "max_abs_diff": check["max_abs_diff"],
                                          "samples": len(test_items)}
            print(f"  {label}: agreement {check['top1_agreement']:.3f}", flush=True)
        reference = model.predict(test_x, verbose=0, batch_size=32)
        with int8_kernels(model):
            rounded = model.predict(test_x, verbose=0, batch_size=32)
        result["agreement"]["int8 weights only (kernels rounded per output channel in Keras, activations float32)"] = {
            "top1": tflite.agreement(reference, rounded)["top1_agreement"],
            "max_abs_diff": float(np.max(np.abs(reference - rounded))), "samples": len(test_items)}
    return result


@contextlib.contextmanager
def int8_kernels(model):
    """`model` with every kernel (weights of 2 or more dimensions) rounded to 255 symmetric int8 levels per output
    channel, as TFLite's int8 convolutions and fully connected layers store them; biases, GroupNorm's gamma and beta
    unchanged. Restores the weights on exit. Isolates the weights' share of the int8 error from the activations'."""
    saved = [v.numpy() for v in model.weights]
    try:
        for v, w in zip(model.weights, saved):
            if w.ndim >= 2:
                step = np.abs(w).max(axis=tuple(range(w.ndim - 1)), keepdims=True) / 127
                v.assign(np.where(step > 0, np.round(w / np.where(step > 0, step, 1)) * step, w))
        yield model
    finally:
        for v, w in zip(model.weights, saved):
            v.assign(w)


def per_op_error(model, representative, samples, float32):
    """TFLite's QuantizationDebugger on `model`'s int8 conversion: per op type, the median and the largest RMSE of
    an op's int8 output over its quantisation step, on `samples` (plain rounding gives 1/sqrt(12) = 0.29).

    The debugger runs each int8 op on the (dequantised) inputs the int8 model gives it and compares with the float
    op on the same inputs, so it measures each op's own error, not the error it inherits."""
    import csv
    import io

    import tensorflow as tf

    from fer_keras.exports import tflite

    order = [d["name"] for d in _interpreter(float32).get_input_details()]

    def ordered(x):
        if not isinstance(x, dict):
            return [np.asarray(x, np.float32)[None]]
        return [np.asarray(next(v for k, v in x.items() if f"_{k}:" in name), np.float32)[None] for name in order]

    dump = io.StringIO()

    def debug(converter, *args, **kwargs):  # runs while the converter's SavedModel folder still exists
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: (ordered(x) for x in representative)
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=lambda: (ordered(x) for x in samples))
        debugger.run()
        debugger.layer_statistics_dump(dump)
        return b""

    with mock.patch.object(tflite, "_run_converter", debug):
        tflite.convert(model, quantize="none")
    by_op = collections.defaultdict(list)
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        if row["scale"] and float(row["scale"]) > 0:
            by_op[row["op_name"]].append(float(row["mean_squared_error"]) ** 0.5 / float(row["scale"]))
    return {op: {"ops": len(v), "median": float(np.median(v)), "max": float(np.max(v))} for op, v in by_op.items()}


def widened_rsqrt(model, representative, factor):
    """Full-integer int8 of `model` whose RSQRT outputs (GroupNorm's 1/sqrt(var + eps)) have their calibrated range
    widened `factor`x, and the MUL outputs they scale by the same factor (sqrt of it one MUL further)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert
    from tensorflow.lite.python import util as tfl_util
    from tensorflow.lite.tools import flatbuffer_utils

    from fer_keras.exports import tflite

    calibrated = {}

    def calibrate_only(converter, *args, **kwargs):
        converter._experimental_calibrate_only = True
        calibrated["model"] = converter.convert()
        return calibrated["model"]

    with mock.patch.object(tflite, "_int8_with_float_scopes", calibrate_only), mock.patch.object(tflite, "FLOAT_SCOPES", ("group_norm",)):
        tflite.convert(model, quantize="int8", representative=representative)
    flat = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated["model"]))
    graph = flat.subgraphs[0]
    consumers = collections.defaultdict(list)
    for op in graph.operators:
        for i in op.inputs:
            consumers[i].append(op)

    def op_name(op):
        return flatbuffer_utils.opcode_to_name(flat, op.opcodeIndex)

    def widen(tensor, f):
        q = graph.tensors[tensor].quantization
        q.min = np.array([q.min[0] * f if q.min[0] < 0 else q.min[0]], np.float32)
        q.max = np.array([q.max[0] * f], np.float32)

    for op in graph.operators:
        if op_name(op) == "RSQRT":
            widen(op.outputs[0], factor)
            for product in (c for c in consumers[op.outputs[0]] if op_name(c) == "MUL"):
                widen(product.outputs[0], factor)
                for second in (c for c in consumers[product.outputs[0]] if op_name(c) == "MUL"):
                    widen(second.outputs[0], factor ** 0.5)
    edited = bytes(flatbuffer_utils.convert_object_to_bytearray(flat))
    quantised = tfl_convert.mlir_quantize(edited, fully_quantize=True, input_data_type=tf.float32, output_data_type=tf.float32)
    return tfl_util.modify_model_io_type(quantised, tf.int8, tf.int8)


def report(results, clips):
    steps = max(len(v) for r in results.values() for v in r["steps"].values())
    header = "| run | model | layer | " + " | ".join(f"t={t}" for t in range(1, steps + 1)) + " | growth t=1 -> last |"
    rows = [header, "|" + "---|" * (steps + 4)]
    for label, r in results.items():
        for layer, errs in r["steps"].items():
            cells = " | ".join(f"{100 * e:.1f}" for e in errs)
            rows.append(f"| {label} | {r['model']} | {layer} | {cells} | {errs[-1] / errs[0]:.1f}x |")
        head = ", ".join(f"{k} {100 * v:.1f} %" for k, v in sorted(r["head"].items()))
        rows.append(f"| {label} | {r['model']} | head: {head} |" + " |" * (steps + 1))
    return "\n".join(rows)


def describe(r):
    fold = f", subject {r['folds']}-fold split, test fold {r['fold']}" if r.get("folds") else ""
    return f"{r['model']} ({r['streams']}), SynthFER {r['capture']} capture{fold}, {r['epochs']} epochs"


def reading(results):
    lines = []
    for label, r in results.items():
        growth = [errs[-1] / errs[0] for errs in r["steps"].values()]
        last = [errs[-1] for errs in r["steps"].values()]
        lines.append(f"- `{label}`: the layers' int8 error grows {min(growth):.1f}-{max(growth):.1f}x from the first to the "
                     f"last time step (up to {100 * max(last):.0f} % at the last step); head {100 * max(r['head'].values()):.0f} %.")
        worst = sorted(r.get("per_op_error", {}).items(), key=lambda kv: -kv[1]["median"])[:3]
        if worst:
            lines.append("  - QuantizationDebugger, each op's own int8 error (RMSE / quantisation step; rounding alone 0.29), "
                         "worst op types by median: " + ", ".join(f"{op} {v['median']:.2f} (max {v['max']:.1f}, {v['ops']} ops)"
                                                                   for op, v in worst))
        for name, a in r.get("agreement", {}).items():
            lines.append(f"  - {name}: top-1 agreement with float Keras {100 * a['top1']:.1f} % (max |dp| {a['max_abs_diff']:.2f}, "
                         f"{a['samples']} held-out clips)")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="*", help="LABEL=RUN_FOLDER of trained clip models")
    parser.add_argument("--clips", type=int, default=40, help="Held-out test clips to average the traced errors over.")
    parser.add_argument("--remedies", action="store_true",
                        help="Also measure the top-1 agreement of int8 variants (see trace_run).")
    parser.add_argument("--report-only", action="store_true", help="Rewrite the docs section from the last JSON.")
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads((RESULTS / "int8_time_error.json").read_text())
        return write_report(saved["results"], saved["args"]["clips"])
    if not args.runs or not all("=" in item for item in args.runs):
        parser.error("give the runs as LABEL=RUN_FOLDER")
    results = {}
    for item in args.runs:
        label, run = item.split("=", 1)
        results[label] = trace_run(run, args.clips, remedies=args.remedies)
        print(label, {k: [round(100 * e, 1) for e in v] for k, v in results[label]["steps"].items()}, flush=True)
    write_json("int8_time_error", {"args": vars(args), "results": results})
    write_report(results, args.clips)


def write_report(results, clips):
    runs = "; ".join(f"`{k}` = {describe(r)}" for k, r in results.items())
    write_section("int8_time_error", f"""## int8 error through the time steps of recurrent clip models (`benchmarks/int8_time_error.py`)

{machine()}. Each run's clip model converted twice, float32 and full-integer int8 (calibrated on 200 training clips,
as `fer-keras export --quantize int8` does), both run on the same {clips} held-out SynthFER test clips with every
intermediate tensor kept. Each cell: relative rms error of the int8 output h_t of that Conv-RNN layer at step t
against float32, rms(int8 - float) / rms(float), in %, mean over the clips; "head": the same for the fully
connected layers. Runs: {runs}.

{report(results, clips)}

{reading(results)}

How to read it: in a ConvGRU the new state (1 - z_t) h_(t-1) + z_t h~_t is a convex combination, so an error carried
in h_(t-1) reaches h_t scaled by (1 - z_t) < 1 and the rounding of each step does not pile up. The Enhanced cells
renormalise h_t with GroupNorm at every step (paper 001 eq. 2): the error of the pre-norm sum is divided by its group's
standard deviation, and what the recurrence carries grows step after step. The ops with the largest errors of their own
in the Enhanced cells are GroupNorm's statistics, the variance (MEAN) and 1/sqrt(variance + eps) (RSQRT: a small
variance gets few int8 levels), but the remedies aimed at them (agreement rows above) do not bring the agreement
back. The other rows locate the loss: rounding the kernels alone costs little (the "weights only" row), so it is the
int8 activations; keeping a whole stream's Conv-RNN layers float32 recovers only part of it, so no single layer or
op type carries it; and more calibration clips (wider min/max ranges) do not help either. The loss is spread over
every op of the recurrence. Of the other exports measured on these runs (section "int8 TFLite parity"), the streaming
step model with int16 activations (`--streaming --quantize int16x8`) agrees 100 % (ConvGRU) and 98.3 % (Enhanced
ConvGRU), and float16 100 % on both.
""")


if __name__ == "__main__":
    main()
