"""Export of `vae_swap` runs: a SavedModel with four signatures and a TFLite expression encoder.

SavedModel (TF Serving layout ``exports/<run>/<version>/``, written as ``.<version>.tmp`` and
renamed), signatures, all float32 and batch-dynamic:

* ``encode_expression``: images (N, S, S, C) raw pixels 0..255 -> z_e (N, D) (encoder mean)
* ``encode_identity``: images -> z_i (N, D)
* ``decode``: z_i (N, D), z_e (N, D) -> images (N, S, S, C) in 0..255
* ``swap``: identity_images, expression_images -> images 0..255 (z_i of the first, z_e of the second)

TFLite: the expression encoder at batch 1, builtin ops only, checked against Keras in
`ai_edge_litert` (`exports/<run>/tflite/expression_encoder.tflite` + `.json` with the parity).

`fer-keras export` dispatches on the generic classifier path; these functions are the
`vae_swap` equivalents (call them from Python, or wire them into the CLI's export command).
"""

import pathlib

import keras
import numpy as np
import tensorflow as tf

from fer_keras.errors import UserError
from fer_keras.exports import describe
from fer_keras.exports.savedmodel import signature_io, version_folder, write_version


def _load(run_dir):
    from fer_keras.training import fit

    config, manifest, vae = fit.load_run(run_dir)
    if not hasattr(vae, "expression_encoder"):
        raise UserError(f"Run {str(run_dir)!r} is not a vae_swap-family run.")
    return config, manifest, vae


def export_savedmodel(run_dir, *, out="exports", version=None):
    run_dir = pathlib.Path(run_dir)
    config, manifest, vae = _load(run_dir)
    final = version_folder(out, run_dir, version)
    size, channels, d = vae.image_size, vae.channels, vae.latent_dim
    image_spec = tf.TensorSpec([None, size, size, channels], tf.float32)
    latent_spec = tf.TensorSpec([None, d], tf.float32)

    archive = keras.export.ExportArchive()
    archive.track(vae)
    endpoints = {
        "encode_expression": archive.add_endpoint(
            "encode_expression", lambda images: {"z_e": vae.expression_encoder(images, training=False)[0]},
            input_signature=[tf.TensorSpec(image_spec.shape, tf.float32, name="images")]),
        "encode_identity": archive.add_endpoint(
            "encode_identity", lambda images: {"z_i": vae.identity_latent(images)},
            input_signature=[tf.TensorSpec(image_spec.shape, tf.float32, name="images")]),
        "decode": archive.add_endpoint(
            "decode", lambda z_i, z_e: {"images": vae.decoder(tf.concat([z_i, z_e], axis=-1), training=False) * 255.0},
            input_signature=[tf.TensorSpec(latent_spec.shape, tf.float32, name="z_i"),
                             tf.TensorSpec(latent_spec.shape, tf.float32, name="z_e")]),
        "swap": archive.add_endpoint(
            "swap", lambda identity_images, expression_images: {"images": vae.swap(identity_images, expression_images) * 255.0},
            input_signature=[tf.TensorSpec(image_spec.shape, tf.float32, name="identity_images"),
                             tf.TensorSpec(image_spec.shape, tf.float32, name="expression_images")]),
    }
    described = {name: signature_io(fn) for name, fn in endpoints.items()}
    metadata = {
        "model": config["model"], **describe.source(run_dir, manifest),
        "signatures": [*endpoints, "serving_default"],
        "serving_default": "encode_expression",  # Keras also serves the first endpoint under that name
        # per signature, as the classifier exports list their outputs
        "inputs": {name: io["inputs"] for name, io in described.items()},
        "outputs": {name: io["outputs"] for name, io in described.items()},
        "image_shape": [size, size, channels], "latent_dim": d,
        "normalisation": describe.PIXELS + " Decoded images come out as pixel values 0..255 too.",
        "face_alignment": describe.face_alignment(size),
    }
    return write_version(archive, final, metadata)


def export_expression_tflite(run_dir, *, out="exports", samples=16):
    """The expression encoder (z_e mean) as TFLite, builtin ops only; returns (path, metadata)."""
    from fer_keras.data.splits import Split
    from fer_keras.exports.tflite import POSITIONS, LiteRTModel, convert, tensor_positions
    from fer_keras.training import fit
    from fer_keras.training.vae_swap import load_stills

    run_dir = pathlib.Path(run_dir)
    config, manifest, vae = _load(run_dir)
    encoder = vae.expression_encoder
    images = keras.Input((vae.image_size, vae.image_size, vae.channels), batch_size=1, name="images")
    device_model = keras.Model(images, encoder(images)[0], name="expression_encoder_device")  # shares the weights
    flatbuffer = convert(device_model, output_name="z_e")
    split = Split.from_dict(config["split_subjects"])
    size, channels = fit.input_geometry(config, manifest)
    x = load_stills(manifest, split.test or split.train, size, channels)["images"][:samples]
    lite = LiteRTModel(flatbuffer)
    ref = np.asarray(encoder(x, training=False)[0])
    got = np.stack([lite(xi) for xi in x])
    parity = {"samples": int(len(x)), "max_abs_diff": float(np.max(np.abs(ref - got)))}
    folder = describe.export_folder(out, run_dir) / "tflite"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "expression_encoder.tflite"
    (input_name, input_details), = lite.inputs.items()
    (output_name, output_details), = lite.outputs.items()
    in_at, out_at, _ = tensor_positions(lite.interpreter, lite.runner)
    metadata = {"model": config["model"], **describe.source(run_dir, manifest),
                "format": "tflite", "quantize": "none",
                "signature": "serving_default",
                "positions": POSITIONS,
                "input": {"name": input_name, "position": in_at[input_name], "shape": [int(v) for v in input_details["shape"]],
                          "dtype": str(np.dtype(input_details["dtype"])), "layout": "NHWC", "normalisation": describe.PIXELS},
                "output": {"name": output_name, "position": out_at[output_name], "shape": [int(v) for v in output_details["shape"]],
                           "dtype": str(np.dtype(output_details["dtype"])),
                           "meaning": "z_e, the expression encoder's mean: the expression code (paper 004)"},
                "face_alignment": describe.face_alignment(vae.image_size), "parity": parity}
    metadata = describe.write_tflite(path, flatbuffer, metadata)  # the JSON beside it and inside it
    return path, metadata
