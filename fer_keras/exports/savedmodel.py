"""SavedModel export in TF Serving's layout: ``exports/<run>/<version>/``.

Versions are integers; the next free one is used and an existing one is never overwritten.
The folder is written as ``.<version>.tmp`` and renamed when complete, so TF Serving (which
watches the base path) never sees a half-written version.

Signature ``serving_default``: input ``images`` (still models, float32 (N, H, W, C) raw pixels
0..255) or ``frames`` (clip models, (N, T, H, W, C)); outputs ``probabilities`` (N, K),
``label_index`` (N,) int64 and ``label_name`` (N,) string.
"""

import errno
import json
import os
import pathlib
import shutil

import keras
import tensorflow as tf

from fer_keras.errors import UserError


def next_version(base):
    base = pathlib.Path(base)
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.exists() else []
    return max(versions, default=0) + 1


def export_savedmodel(run_dir, *, out="exports", version=None):
    from fer_keras.models.registry import get_spec
    from fer_keras.training import fit

    run_dir = pathlib.Path(run_dir)
    config, manifest, model = fit.load_run(run_dir)
    base = pathlib.Path(out) / run_dir.name
    version = version or next_version(base)
    final = base / str(version)
    if final.exists():
        raise UserError(f"Export version {final} already exists; versions are never overwritten.")
    kind = get_spec(config["model"]).kind
    input_name = "frames" if kind == "clip" else "images"
    shape = [None] + [int(d) for d in model.inputs[0].shape[1:]]
    names = tf.constant(manifest["labels"])

    def serve(x):
        probabilities = model(x, training=False)
        index = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "label_index": index, "label_name": tf.gather(names, index)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[tf.TensorSpec(shape, tf.float32, name=input_name)])
    tmp = base / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    try:
        archive.write_out(str(tmp), verbose=False)
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / "fer_keras.json").write_text(
            json.dumps({"model": config["model"], "run": run_dir.name, "labels": manifest["labels"], "input": input_name,
                        "input_shape": shape, "normalisation": "raw pixel values 0..255"}, indent=2) + "\n"
        )
        os.replace(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise UserError(f"No space left on device while exporting to {final}; nothing was written.") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
