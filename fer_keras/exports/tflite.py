"""TFLite/LiteRT export with builtin ops only, and a parity check in `ai_edge_litert`.

The model is rebuilt at batch 1 (and, for recurrent models, unrolled over its fixed clip
length: DESIGN.md records that a dynamic-batch ConvLSTM needs Flex TensorList ops), the run's
weights are copied in, and the converter may use TFLITE_BUILTINS only, so a model that would
need SELECT_TF_OPS fails loudly here instead of on a phone.

Written to ``exports/<run>/tflite/model_<quantize>.tflite`` with ``model_<quantize>.json``
beside it: labels, input shape and dtype, normalisation, int8 scales, and the measured parity.
"""

import json
import pathlib
import tempfile

import numpy as np
import tensorflow as tf

from fer_keras import atomic
from fer_keras.errors import UserError

QUANTIZE = ("none", "float16", "int8")


def rebuild_for_device(config, manifest, model):
    """A batch-1 (unrolled, for recurrent layers) copy of `model` with the same weights."""
    from fer_keras.training import fit

    device_model = fit.build_model(config, manifest, batch_size=1, unroll=True) if _takes_unroll(config) else fit.build_model(config, manifest, batch_size=1)
    device_model.set_weights(model.get_weights())
    return device_model


def _takes_unroll(config):
    import inspect

    from fer_keras.models.registry import get_spec

    return "unroll" in inspect.signature(get_spec(config["model"]).builder).parameters


def convert(model, *, quantize="none", representative=None):
    """Keras model (fixed batch 1) -> TFLite flatbuffer bytes, builtin ops only."""
    if quantize not in QUANTIZE:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE)}. Received: {quantize!r}")
    # Through a SavedModel: the converter then freezes the weights into constants (a concrete
    # function of a Keras 3 model would keep them as resource variables, READ_VARIABLE ops).
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    names = input_names(model)
    if len(names) == 1:
        spec = tf.TensorSpec(model.inputs[0].shape, tf.float32, name="inputs")
        archive.add_endpoint("serving_default", lambda x: model(x, training=False), input_signature=[spec])
    else:  # several streams (RGB + flow): one named signature input each
        specs = {name: tf.TensorSpec(t.shape, tf.float32, name=name) for name, t in zip(names, model.inputs)}
        archive.add_endpoint("serving_default", lambda x: model(x, training=False), input_signature=[specs])
    with tempfile.TemporaryDirectory() as tmp:
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        return _run_converter(converter, quantize, representative)


def input_names(model):
    """The model's input names ("images", "frames", or "rgb" and "flow")."""
    return [t.name.split(":")[0] for t in model.inputs]


def _run_converter(converter, quantize, representative):
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if representative is None or len(representative) < 100:
            raise UserError("int8 quantisation needs a representative dataset of at least 100 training samples.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        converter.representative_dataset = lambda: (_representative_item(x) for x in representative)
    try:
        return converter.convert()
    except Exception as e:  # the converter raises ConverterError and friends, with long logs
        first = next((line for line in str(e).splitlines() if "error" in line.lower()), str(e).splitlines()[0])
        raise UserError(f"TFLite conversion with builtin ops only failed: {first.strip()}") from None


def _representative_item(x):
    if isinstance(x, dict):
        return {name: v[None].astype(np.float32) for name, v in x.items()}
    return [x[None].astype(np.float32)]


class LiteRTModel:
    """Runs a .tflite model with `ai_edge_litert` on float pixel inputs, (de)quantising int8 I/O.

    Inputs go through the model's signature: one array for a one-input model, or a dict
    {"rgb": ..., "flow": ...} for a two-stream one.
    """

    def __init__(self, path_or_bytes, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter

        kwargs = {"model_content": path_or_bytes} if isinstance(path_or_bytes, bytes) else {"model_path": str(path_or_bytes)}
        self.interpreter = Interpreter(num_threads=num_threads, **kwargs)
        self.runner = self.interpreter.get_signature_runner()
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()
        self.input = next(iter(self.inputs.values()))
        self.output = next(iter(self.outputs.values()))

    @property
    def input_shape(self):
        """Shape of the only input, or {name: shape} for several."""
        if len(self.inputs) == 1:
            return tuple(int(d) for d in self.input["shape"])
        return {name: tuple(int(d) for d in d_["shape"]) for name, d_ in self.inputs.items()}

    @staticmethod
    def _quantise(x, details):
        x = np.asarray(x, np.float32).reshape(details["shape"])
        if details["dtype"] == np.int8:
            scale, zero = details["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        return x

    def __call__(self, x):
        """x: float input (with or without the batch axis of 1), or a dict of them -> probabilities (K,)."""
        if len(self.inputs) == 1:
            (name, details), = self.inputs.items()
            feed = {name: self._quantise(x, details)}
        else:
            feed = {name: self._quantise(x[name], details) for name, details in self.inputs.items()}
        (y,) = self.runner(**feed).values() if len(self.outputs) == 1 else [self.runner(**feed)[next(iter(self.outputs))]]
        y = y[0]
        if self.output["dtype"] == np.int8:
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y


def parity(keras_model, lite, samples):
    """Max abs difference of probabilities and top-1 agreement between Keras and LiteRT."""
    ref = keras_model.predict(samples, verbose=0, batch_size=32)
    ref = ref["probabilities"] if isinstance(ref, dict) else ref
    got = np.stack([lite(x) for x in _unbatch(samples)])
    return {
        "samples": int(len(got)),
        "max_abs_diff": float(np.max(np.abs(ref - got))),
        "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
    }


def _unbatch(samples):
    """Samples one by one: rows of an array, or dicts of rows for several inputs."""
    if isinstance(samples, dict):
        count = len(next(iter(samples.values())))
        return [{k: v[i] for k, v in samples.items()} for i in range(count)]
    return list(samples)


def collect(dataset, limit):
    """Up to `limit` inputs (an array, or a dict of arrays) and labels from a batched (x, y, ...) dataset."""
    xs, ys = [], []
    for batch in dataset:
        x = batch[0]
        xs.append({k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else x.numpy())
        ys.append(batch[1].numpy())
        if sum(len(y) for y in ys) >= limit:
            break
    if isinstance(xs[0], dict):
        return {k: np.concatenate([x[k] for x in xs])[:limit] for k in xs[0]}, np.concatenate(ys)[:limit]
    return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def export_tflite(run_dir, *, out="exports", quantize="none"):
    """Exports a run's model; returns (path of the .tflite, metadata dict)."""
    from fer_keras.data.splits import Split
    from fer_keras.training import fit

    run_dir = pathlib.Path(run_dir)
    config, manifest, model = fit.load_run(run_dir)
    device_model = rebuild_for_device(config, manifest, model)
    split = Split.from_dict(config["split_subjects"])
    representative = None
    if quantize == "int8":
        representative, _ = collect(fit.make_dataset(config, manifest, split, "train", batch_size=64), 200)
        representative = _unbatch(representative)
    flatbuffer = convert(device_model, quantize=quantize, representative=representative)

    test_x, test_y = collect(fit.make_dataset(config, manifest, split, "test", batch_size=64), 200)
    lite = LiteRTModel(flatbuffer)
    check = parity(model, lite, test_x)
    keras_acc = float(np.mean(model.predict(test_x, verbose=0).argmax(1) == test_y))
    lite_acc = float(np.mean(np.stack([lite(x) for x in _unbatch(test_x)]).argmax(1) == test_y))
    check.update(keras_accuracy=keras_acc, tflite_accuracy=lite_acc, accuracy_drop=keras_acc - lite_acc,
                 on="held-out " + ("SynthFER" if manifest["dataset"] == "synthfer" else manifest["dataset"]) + " test subjects")

    folder = pathlib.Path(out) / run_dir.name / "tflite"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"model_{quantize}.tflite"
    inputs = [
        {"name": name, "shape": [int(v) for v in d["shape"]], "dtype": str(np.dtype(d["dtype"])),
         "quantization": [float(v) for v in d["quantization"]] if quantize == "int8" else None,
         **({"units": "optical flow in pixels per frame, x then y (the model scales it inside)"} if name == "flow" else {})}
        for name, d in lite.inputs.items()
    ]
    rank = len(inputs[0]["shape"])
    metadata = {
        "model": config["model"],
        "run": run_dir.name,
        "format": "tflite",
        "quantize": quantize,
        "labels": manifest["labels"],
        "label_set": manifest["label_set"],
        "input": dict(inputs[0], layout="NTHWC" if rank == 5 else "NHWC",
                      normalisation="raw pixel values 0..255 (the model rescales inside); grey when channels == 1"),
        "inputs": inputs,
        "output": {"name": "probabilities", "dtype": str(np.dtype(lite.output["dtype"])),
                   "quantization": [float(v) for v in lite.output["quantization"]] if quantize == "int8" else None},
        "clip_length": config["clip_length"] if rank == 5 else None,
        "face_alignment": "similarity transform of eye centres and mouth centre (fer_keras.data_prep.faces.align_face)",
        "parity": check,
    }
    # The model and its metadata land together or not at all.
    atomic.write_files([(path, flatbuffer), (path.with_suffix(".json"), (json.dumps(metadata, indent=2) + "\n").encode())])
    return path, metadata
