"""SavedModel export in TF Serving's layout: ``exports/<run>/<version>/``.

Versions are integers; the next free one is used and an existing one is never overwritten.
The folder is written as ``.<version>.<pid>.tmp`` and renamed when complete, so TF Serving (which
watches the base path) never sees a half-written version.

Signature ``serving_default``: input ``images`` (still models, float32 (N, H, W, C) raw pixels
0..255) or ``frames`` (clip models, (N, T, H, W, C); two-stream models take ``rgb`` and ``flow``
(N, T, H, W, 2) instead; ``landmark_arm`` takes ``images`` and ``landmarks``, float32 (N, 68, 2):
dlib's 68 points (x, y) in pixels of the aligned crop fed as ``images``); outputs
``probabilities`` (N, K), ``label_index`` (N,) int64 and ``label_name`` (N,) string.

Family-specific signatures:
- ``attention`` (RAM models): the same inputs -> ``probabilities`` (N, K), ``attention_maps``
  (N, T, h, w, 1) (the RAM's maps M_t in [0, 1], one per frame) and ``attention_logits`` (N, K).
- ``stream_step`` (clip models that stream, see `fer_keras.exports.streaming`): one frame
  ``frame`` (N, H, W, C) (or ``rgb`` and ``flow``) and every recurrent state (``<layer>_<role>``,
  (N, h, w, filters), zeros before a clip's first frame) -> ``probabilities``, ``attention_map``
  (RAM models) and ``<state>_next`` for every state, to feed back with the next frame.
  ``assets.extra/fer_keras.json`` lists the states and their shapes under ``"stream_step"``.
"""

import errno
import json
import os
import pathlib
import shutil

import keras
import tensorflow as tf

from fer_keras.errors import UserError, first_line
from fer_keras.exports import describe


def serving_default(path, caller):
    """The ``serving_default`` signature of the SavedModel at `path`, loaded with `tf.saved_model.load`.

    One line naming the folder when it cannot be loaded or has no such signature; `caller` ends
    that line ("predict calls", "benchmark times").
    """
    try:
        signatures = tf.saved_model.load(str(path)).signatures
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise UserError(f"{path} is not a valid SavedModel ({first_line(e)}).") from None
    if "serving_default" not in signatures:
        raise UserError(f"SavedModel {str(path)!r} has no serving_default signature, which {caller}. "
                        f"It has: {', '.join(sorted(signatures)) or 'none'}.")
    return signatures["serving_default"]


def next_version(base):
    base = pathlib.Path(base)
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.exists() else []
    return max(versions, default=0) + 1


def version_folder(out, run_dir, version=None):
    """``out/<run>/<version>``, the next free version by default; never an existing one."""
    from fer_keras.exports.describe import export_folder

    base = export_folder(out, run_dir)
    final = base / str(version or next_version(base))
    if final.exists():
        raise UserError(f"Export version {final} already exists; versions are never overwritten.")
    return final


def write_version(archive, final, metadata):
    """Writes `archive` and ``assets.extra/fer_keras.json`` as ``.<version>.<pid>.tmp``, renamed to `final` when complete.

    Nothing is left behind on failure; a full disk is one line naming `final`.
    """
    tmp = final.parent / f".{final.name}.{os.getpid()}.tmp"  # this process's own: two exports at once never share one
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        archive.write_out(str(tmp), verbose=False)
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / "fer_keras.json").write_text(json.dumps(metadata, indent=2) + "\n")
        if final.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(final))
        os.replace(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise UserError(f"No space left on device while exporting to {final}; nothing was written.") from None
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise UserError(f"Export version {final} was written by another export meanwhile; versions are never "
                            "overwritten: export again for the next free one.") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def export_savedmodel(run_dir, *, out="exports", version=None):
    from fer_keras.models.registry import get_spec
    from fer_keras.training import fit

    run_dir = pathlib.Path(run_dir)
    config, manifest, model = fit.load_run(run_dir, needs_data=False)
    final = version_folder(out, run_dir, version)
    spec = get_spec(config["model"])
    input_name = "frames" if spec.kind == "clip" else "images"
    shape = [None] + [int(d) for d in model.inputs[0].shape[1:]]
    names = tf.constant(manifest["labels"])
    if len(model.inputs) == 1:
        signature = [tf.TensorSpec(shape, tf.float32, name=input_name)]
    else:  # named inputs: "rgb" and "flow" (two streams), or "images" and "landmarks" (landmark_arm)
        signature = [{t.name: tf.TensorSpec([None] + [int(d) for d in t.shape[1:]], tf.float32, name=t.name) for t in model.inputs}]

    def serve(x):
        probabilities = model(x, training=False)
        index = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "label_index": index, "label_name": tf.gather(names, index)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    endpoints = {"serving_default": archive.add_endpoint("serving_default", serve, input_signature=signature)}
    if spec.family == "ram":

        def attention(x):
            out = model.explain(x, training=False)
            return {"probabilities": out["probabilities"], "attention_maps": out["attention_maps"],
                    "attention_logits": out["attention_logits"]}

        endpoints["attention"] = archive.add_endpoint("attention", attention, input_signature=signature)
    stream_info = None
    if spec.kind == "clip":
        from fer_keras.exports.streaming import StreamingStep

        try:
            step = StreamingStep(model)
        except UserError:
            step = None  # a clip model that cannot stream keeps serving_default only
        if step is not None:
            endpoints["stream_step"] = archive.add_endpoint("stream_step", step,
                                                            input_signature=[step.input_signature(batch_size=None)])
            stream_info = {
                "frame_inputs": {n: [None, *s] for n, s in step.frame_shapes.items()},
                "states": [{"name": s["name"], "shape": [None, *s["shape"]], "role": s["role"], "initial": "zeros",
                            "feed_back_from": f"{s['name']}_next"} for s in step.state_specs],
                "outputs": step.output_names,
                "reset_every": step.clip_length,
            }
    inputs = _inputs_info(signature, input_name)
    main = next(i for i in inputs if i["name"] not in ("flow", "landmarks"))  # the frames or image an app feeds
    metadata = {
        "model": config["model"], **describe.source(run_dir, manifest), "labels": manifest["labels"], "input": main["name"],
        "input_shape": main["shape"], "normalisation": describe.PIXELS, "signatures": list(endpoints), "inputs": inputs,
        "outputs": {name: _outputs_info(fn) for name, fn in endpoints.items()},
        "face_alignment": describe.face_alignment(main["shape"][-2]),
    }
    if stream_info:
        metadata["stream_step"] = stream_info
    return write_version(archive, final, metadata)


def _outputs_info(endpoint):
    """A signature's outputs: name, shape (None = any batch) and dtype, as TF Serving returns them."""
    outputs = endpoint.get_concrete_function().structured_outputs
    return [{"name": name, "shape": t.shape.as_list(), "dtype": t.dtype.name} for name, t in sorted(outputs.items())]


def signature_io(endpoint):
    """{"inputs": [...], "outputs": [...]} of an endpoint (name, shape with None for any batch, dtype)."""
    args, kwargs = endpoint.get_concrete_function().structured_input_signature
    specs = [*args, *kwargs.values()]
    specs = [t for spec in specs for t in (spec.values() if isinstance(spec, dict) else [spec])]
    return {"inputs": [{"name": t.name, "shape": t.shape.as_list(), "dtype": t.dtype.name} for t in specs],
            "outputs": _outputs_info(endpoint)}


def _inputs_info(signature, input_name):
    """Every serving_default input: name, shape (None = any batch), dtype and meaning."""
    from fer_keras.exports.tflite import LANDMARKS_DESCRIPTION

    specs = signature[0] if isinstance(signature[0], dict) else {input_name: signature[0]}
    info = []
    for name, spec in specs.items():
        entry = {"name": name, "shape": spec.shape.as_list(), "dtype": spec.dtype.name}
        if name == "landmarks":
            entry.update(points=int(spec.shape[1]), units=LANDMARKS_DESCRIPTION)
        elif name == "flow":
            entry.update(describe.flow_input())
        else:
            entry["normalisation"] = describe.PIXELS
        info.append(entry)
    return info
