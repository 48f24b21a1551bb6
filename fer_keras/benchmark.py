"""How fast a model runs on this machine: `fer-keras benchmark TARGET`.

TARGET is one of three things, each timed at batch 1 on random inputs of the right dtype and
shape (latency does not depend on the values):

- a ``.tflite`` file (clip, still or ``--streaming`` step model, any quantisation): LiteRT's
  ``Interpreter.invoke()`` (``ai_edge_litert``, default op resolver, so with the XNNPACK delegate)
  once per thread count. If the JSON beside it says the model is a streaming step model, one
  invoke is one frame with its recurrent states.
- a SavedModel version folder (``exports/<run>/<version>/``; its base folder picks the newest
  version, as `predict` does): the ``serving_default`` signature, on TensorFlow's own threads.
- a run folder (``runs/<run>/``): the Keras model's call ``model(x, training=False)`` as one tf.function, on
  TensorFlow's own threads.

The result holds the median and 90th percentile in ms per call, the inputs, the file size (.tflite),
the parameter count (run folder) and the machine. `benchmarks/latency.py` times with `median_ms`
and `random_input_interpreter` from here.
"""

import os
import pathlib
import platform
import statistics
import time

import numpy as np

from fer_keras import atomic
from fer_keras.errors import UserError, first_line

DEFAULT_THREADS = (1, 2)
_CPUINFO_KEYS = ("model name", "Model", "Hardware", "cpu model", "Processor")  # x86, Raspberry Pi, other ARM and MIPS
_IMAGE_INPUTS = ("images", "frames", "frame", "rgb", "inputs")  # listed first; then flow, landmarks, states by name


# --------------------------------------------------------------------------------------------- timing


def call_times(fn, runs, warmup, *, max_seconds=None, min_runs=5, progress=None):
    """Seconds of each of `runs` calls of `fn()` after `warmup` untimed ones.

    Stops early after `max_seconds` (with at least `min_runs` calls); `progress` (a tqdm bar) is
    advanced after each timed call, outside its timing.
    """
    for _ in range(warmup):
        fn()
    times, begin = [], time.perf_counter()
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if progress is not None:
            progress.update(1)
        if max_seconds and len(times) >= min_runs and time.perf_counter() - begin > max_seconds:
            break
    return times


def median_ms(fn, runs, warmup, max_seconds=None, min_runs=5):
    """Median ms of `fn()` over `runs` calls after `warmup`; stops early after `max_seconds` (>= min_runs calls)."""
    times = call_times(fn, runs, warmup, max_seconds=max_seconds, min_runs=min_runs)
    return statistics.median(times) * 1000.0, len(times)


def random_input_interpreter(model, threads, seed=0):
    """An allocated LiteRT interpreter (default op resolver: XNNPACK) with random inputs of the right dtype set.

    `model`: a .tflite path or flatbuffer bytes. int8 inputs get the whole int8 range, every
    other dtype values in 0..255 (raw pixels).
    """
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(seed)
    kwargs = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    interpreter = Interpreter(num_threads=threads, **kwargs)
    interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        if d["dtype"] == np.int8:
            x = rng.integers(-128, 128, d["shape"]).astype(np.int8)
        else:
            x = rng.uniform(0, 255, d["shape"]).astype(d["dtype"])
        interpreter.set_tensor(d["index"], x)
    return interpreter


def _summary(times, threads):
    ms = np.asarray(times) * 1000.0
    return {"threads": threads, "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)), "runs": len(ms)}


# --------------------------------------------------------------------------------------------- targets


def target_kind(path):
    """("tflite" | "savedmodel" | "run", the path to time) for TARGET; a UserError for anything else."""
    path = pathlib.Path(path)
    if not path.exists():
        raise UserError(f"{str(path)!r} does not exist.")
    if path.is_file() and path.suffix.lower() == ".tflite":
        return "tflite", path
    if path.is_dir() and (path / "config.json").is_file():
        return "run", path
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "savedmodel", path
    if path.is_dir():
        versions = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file())
        if versions:  # TF Serving's base folder: its newest version, as predict takes it
            return "savedmodel", path / str(versions[-1])
    raise UserError(f"{str(path)!r} is not a .tflite file, a SavedModel folder (exports/<run>/<version>) or a run "
                    "folder (with config.json and model.keras).")


def check_out(out, target):
    """Refuses, before any timing, an --out that cannot be written or that names the target or its exported metadata."""
    out, target = pathlib.Path(out), pathlib.Path(target)
    if out.exists() and out.resolve() == target.resolve():
        raise UserError(f"--out {str(out)!r} is the model being timed; give another file for the JSON.")
    if target.suffix.lower() == ".tflite" and out.resolve() == target.with_suffix(".json").resolve():
        raise UserError(f"--out {str(out)!r} is the metadata exported beside {target.name}; give another file for the JSON.")
    parent = out.parent
    if not parent.is_dir():
        raise UserError(f"--out {str(out)!r} cannot be written: its folder {str(parent)!r} does not exist.")
    from fer_keras import atomic

    atomic.check_writable(parent, f"--out {str(out)!r}: the folder")  # read-only (or /proc): now, not after the timing


def benchmark_target(target, *, runs=50, warmup=5, threads=None, quiet=False):
    """Times TARGET (a .tflite, a SavedModel folder or a run folder) at batch 1; returns the result dict.

    `threads`: LiteRT thread counts for a .tflite (default 1 and 2); a SavedModel or a run runs on
    TensorFlow's own threads, so giving `threads` for one is refused. The model is loaded (and a
    damaged one refused) before the progress bar starts.
    """
    from fer_keras.progress import progress

    if runs < 1:
        raise UserError(f"--runs must be at least 1. Received: {runs}")
    if warmup < 0:
        raise UserError(f"--warmup must be at least 0. Received: {warmup}")
    if threads is not None and (not threads or any(not isinstance(n, int) or n < 1 for n in threads)):
        raise UserError(f"--threads must be whole numbers of at least 1. Received: {','.join(map(str, threads))}")
    kind, path = target_kind(target)
    if kind != "tflite" and threads is not None:
        what = "SavedModel" if kind == "savedmodel" else "run folder"
        raise UserError(f"--threads sets LiteRT's threads for a .tflite; a {what} runs on TensorFlow's own threads.")
    if kind == "tflite":
        result, calls = _load_tflite(path, tuple(dict.fromkeys(threads)) if threads is not None else DEFAULT_THREADS)
    elif kind == "savedmodel":
        result, calls = _load_savedmodel(path)
    else:
        result, calls = _load_run(path)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    bar = progress(total=runs * len(calls), desc="benchmark", unit="call", quiet=quiet)
    try:  # `calls`: {LiteRT threads, or None for TensorFlow's own: the call to time}
        timings = [_summary(call_times(fn, runs, warmup, progress=bar), n) for n, fn in calls.items()]
    finally:
        bar.close()
    return {"target": str(path), **result, "timings": timings, "runs": runs, "warmup": warmup,
            "machine": dict(machine(), load_average_1min=load_before)}


def _load_tflite(path, counts):
    """(what the result says of the .tflite, {threads: its interpreter's invoke}); random inputs are set once."""
    from fer_keras.exports import describe
    from fer_keras.native_output import native_stderr_captured

    meta, origin = describe.read_tflite_metadata(path)  # the JSON beside it, or the one inside it
    interpreters = {}
    for n in counts:
        try:
            with native_stderr_captured(replay_on_error=False):  # LiteRT announces its XNNPACK delegate
                interpreters[n] = random_input_interpreter(path, n)
        except (ValueError, RuntimeError) as e:
            raise UserError(f"{path} is not a valid TFLite model ({first_line(e)}).") from None
    describe.check_stamp(path, meta)  # a JSON of another model would mislabel the result (int8 for a float model)
    inputs = _tflite_inputs(interpreters[counts[0]])
    streaming = bool(meta.get("streaming"))
    result = {"kind": "tflite", "runtime": f"ai_edge_litert {_version('ai-edge-litert')}", "model": meta.get("model"),
              "quantize": meta.get("quantize"), "streaming": streaming, "file_bytes": path.stat().st_size,
              "parameters": None, "inputs": inputs, "per_call": "frame" if streaming else _per_call(inputs),
              "threads_note": "LiteRT num_threads per row (default op resolver, XNNPACK delegate)"}
    if not meta:
        result["metadata"] = (f"no {path.with_suffix('.json').name} beside it and none inside it: not a fer-keras "
                              "export, or an older one whose JSON was not copied")
    else:
        result["metadata"] = origin
    if streaming:
        result["note"] = ("streaming step model: one invoke is one frame with its recurrent states in and out, so the "
                          "figures are per frame")
    return result, {n: it.invoke for n, it in interpreters.items()}


def _tflite_inputs(interpreter):
    """Every input under its signature name (the tensor's name for a model without a signature)."""
    details = {d["index"]: d for d in interpreter.get_input_details()}
    names = {d["index"]: d["name"] for d in details.values()}
    if interpreter.get_signature_list():
        runner = interpreter.get_signature_runner()
        names.update({d["index"]: name for name, d in runner.get_input_details().items()})
    ordered = sorted(details, key=lambda i: _input_order(names[i]))
    return [{"name": names[i], "shape": [int(v) for v in details[i]["shape"]], "dtype": np.dtype(details[i]["dtype"]).name}
            for i in ordered]


def _load_savedmodel(path):
    """(what the result says of the SavedModel, {None: its serving_default on random batch-1 inputs})."""
    import tensorflow as tf

    from fer_keras.exports import savedmodel
    from fer_keras.json_files import read_json_object

    fn = savedmodel.serving_default(path, "benchmark times")
    specs = fn.structured_input_signature[1]
    for name, spec in specs.items():
        if None in list(spec.shape)[1:]:
            raise UserError(f"SavedModel {str(path)!r} input {name!r} has shape {list(spec.shape)}: only the batch may be "
                            "unknown.")
    inputs = [{"name": name, "shape": [1] + [int(d) for d in spec.shape[1:]], "dtype": spec.dtype.name}
              for name, spec in sorted(specs.items(), key=lambda item: _input_order(item[0]))]
    feed = {name: tf.constant(x) for name, x in _random_inputs(inputs).items()}
    info_path = path / "assets.extra" / "fer_keras.json"
    info = read_json_object(info_path) if info_path.is_file() else {}
    result = {"kind": "savedmodel", "runtime": f"tensorflow {tf.__version__}", "model": info.get("model"), "streaming": False,
              "parameters": None, "inputs": inputs, "per_call": _per_call(inputs), "threads_note": _tensorflow_threads()}
    return result, {None: lambda: fn(**feed)}


def _load_run(path):
    """(what the result says of the run, {None: its Keras model as one compiled tf.function on random batch-1
    inputs}). Compiled, as a SavedModel serves it: an eager call would time Python's dispatch of each layer."""
    import tensorflow as tf

    from fer_keras.models.registry import get_spec
    from fer_keras.training import fit

    config = fit.read_run_config(path)
    if get_spec(config["model"]).evaluator:
        raise UserError(f"{config['model']!r} is not one classifier network; export its expression encoder "
                        f"(`fer-keras export {path} --format tflite`) and benchmark that .tflite.")
    config, _, model = fit.load_run(path, needs_data=False)
    inputs = sorted(({"name": t.name.split(":")[0], "shape": [1] + [int(d) for d in t.shape[1:]], "dtype": "float32"}
                     for t in model.inputs), key=lambda i: _input_order(i["name"]))  # the frames first, as for the others
    feed = {name: tf.constant(x) for name, x in _random_inputs(inputs).items()}
    x = next(iter(feed.values())) if len(feed) == 1 else feed
    result = {"kind": "run", "runtime": f"keras {_version('keras')} on tensorflow {tf.__version__} (tf.function)",
              "model": config["model"], "streaming": False, "parameters": int(model.count_params()), "inputs": inputs,
              "per_call": _per_call(inputs), "threads_note": _tensorflow_threads()}
    call = tf.function(lambda batch: model(batch, training=False))
    call(x)  # traced here, so that no timed call (even with --warmup 0) includes the tracing
    return result, {None: lambda: call(x)}


def _input_order(name):
    return name not in _IMAGE_INPUTS, name


def _random_inputs(inputs, seed=0):
    """{name: array} for [{"name", "shape", "dtype"}]: raw pixels 0..255; landmarks as (x, y) pixels inside the face."""
    rng = np.random.default_rng(seed)
    images = [i["shape"] for i in inputs if i["name"] != "landmarks" and len(i["shape"]) >= 4]
    face = images[0][-2] if images else 255  # width of the (aligned) face the landmarks lie in
    return {i["name"]: rng.uniform(0, face if i["name"] == "landmarks" else 255, i["shape"]).astype(i["dtype"])
            for i in inputs}


def _per_call(inputs):
    """What one call processes, read from the inputs: a clip of T frames (rank 5) or an image."""
    clips = [i["shape"] for i in inputs if len(i["shape"]) == 5]
    return f"clip of {clips[0][1]} frames" if clips else "image"


def _tensorflow_threads():
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    pools = f"intra-op {intra}, inter-op {inter}" if intra or inter else "its defaults: about one per core"
    return f"TensorFlow's own threads ({pools}); --threads is for a .tflite"


def _version(package):
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------- report


def machine():
    """CPU model and core counts (from /proc/cpuinfo where there is one), OS and Python."""
    cpu = None
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in _CPUINFO_KEYS and value.strip():
                cpu = value.strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu or platform.processor() or platform.machine(), "cores": os.cpu_count(), "usable_cores": usable,
            "platform": platform.platform(terse=True), "python": platform.python_version()}


def table(result):
    """A few lines for a person: what was timed, its inputs, the machine, then one row per thread count."""
    kind = {"tflite": "TFLite", "savedmodel": "SavedModel", "run": "Keras run"}[result["kind"]]
    what = [kind]
    if result.get("quantize"):
        what.append("float32" if result["quantize"] == "none" else result["quantize"])
    if result.get("file_bytes") is not None:
        what.append(f"{result['file_bytes'] / 1024:.1f} KiB")
    model = result.get("model") or "unknown model"
    if result.get("parameters") is not None:
        model += f", {result['parameters']:,} parameters"
    per = result["per_call"]
    if result.get("streaming"):
        per += " (streaming step model: the figures are per frame)"
    inputs = [f"{i['name']} {tuple(i['shape'])} {i['dtype']}" for i in result["inputs"]]
    if len(inputs) > 3:  # a streaming step model's recurrent states: all of them in the JSON
        inputs = inputs[:2] + [f"+ {len(inputs) - 2} more"]
    m = result["machine"]
    lines = [
        f"Target   {result['target']} ({', '.join(what)})",
        f"Model    {model}; one call = one {per}",
        f"Inputs   {', '.join(inputs)}",
        f"Runtime  {result['runtime']}; {result['threads_note']}",
        f"Machine  {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['platform']}",
        f"Timing   batch 1, random inputs, {result['runs']} timed calls after {result['warmup']} warm-up",
        "",
        f"{'threads':>8}  {'median ms':>10}  {'p90 ms':>10}  {'runs':>5}",
    ]
    for t in result["timings"]:
        threads = "TF" if t["threads"] is None else str(t["threads"])
        lines.append(f"{threads:>8}  {t['median_ms']:>10.3f}  {t['p90_ms']:>10.3f}  {t['runs']:>5}")
    return "\n".join(lines)


def write_result(result, out):
    """The result as JSON at `out`, written under a temporary name and renamed when complete."""
    import json

    return atomic.write_text(out, json.dumps(result, indent=2) + "\n")
