"""landmark_arm (two inputs: images and 68 landmarks) through SavedModel and TFLite exports.

The model draws its landmark heatmap inside the graph, so the exports take the raw landmarks as
a second named input beside the images: `serving_default(images, landmarks)` in the SavedModel,
a signature with `images` and `landmarks` in the .tflite (int8: images int8, landmarks float32).
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from fer_keras.data.splits import Split
from fer_keras.exports import tflite
from fer_keras.training import fit
from tests.conftest import MODEL_SIZE
from tests.exports.landmark_exports import landmark_export

FRESH_PROCESS = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import tensorflow as tf

    path, inputs, outputs = sys.argv[1:4]
    fn = tf.saved_model.load(path).signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    data = np.load(inputs)
    result = fn(images=tf.constant(data["images"]), landmarks=tf.constant(data["landmarks"]))
    report = {"inputs": {n: [-1 if d is None else d for d in s.shape] for n, s in specs.items()},
              "dtypes": {n: s.dtype.name for n, s in specs.items()},
              "outputs": sorted(result),
              "probabilities": result["probabilities"].numpy().tolist(),
              "label_index": result["label_index"].numpy().tolist()}
    with open(outputs, "w") as f:
        json.dump(report, f)
    assert not any(m == "fer_keras" or m.startswith("fer_keras.") for m in sys.modules), "fer_keras was imported"
    """
)


def held_out(run, limit=12, seed=0):
    """(keras model, {"images", "landmarks"}): test-subject samples plus random images with jittered landmarks."""
    config, manifest, model = fit.load_run(run)
    split = Split.from_dict(config["split_subjects"])
    x, _ = tflite.sample(fit.make_dataset(config, manifest, split, "test", batch_size=16), limit)
    rng = np.random.default_rng(seed)
    noise_images = rng.uniform(0, 255, size=(3,) + x["images"].shape[1:]).astype(np.float32)
    noise_points = (x["landmarks"][:3] + rng.normal(0, 1.5, size=x["landmarks"][:3].shape)).astype(np.float32)
    return model, {"images": np.concatenate([x["images"], noise_images]),
                   "landmarks": np.concatenate([x["landmarks"], noise_points])}


def keras_probabilities(model, x):
    return np.asarray(model(x, training=False))


def run_signature(path, x):
    """Probabilities from the .tflite's signature, one sample at a time, (de)quantising int8 tensors."""
    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    inputs, (out_name, out) = runner.get_input_details(), next(iter(runner.get_output_details().items()))
    results = []
    for i in range(len(x["images"])):
        feed = {}
        for name, details in inputs.items():
            v = x[name][i][None].astype(np.float32)
            if details["dtype"] == np.int8:
                scale, zero = details["quantization"]
                v = np.clip(np.round(v / scale + zero), -128, 127).astype(np.int8)
            feed[name] = v
        y = runner(**feed)[out_name][0]
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(y)
    return np.stack(results), inputs, interpreter


def test_heatmap_is_drawn_from_the_landmarks(landmark_arm_run):
    """Guards the parity tests below: the held-out landmarks draw a real heatmap, so both inputs matter."""
    model, x = held_out(landmark_arm_run, limit=4)
    heatmap = np.asarray(model.explain({k: v[:4] for k, v in x.items()})["heatmap"])
    assert heatmap.shape[-1] == 1 and (heatmap.reshape(4, -1).sum(1) > 20).all()


def test_savedmodel_takes_images_and_landmarks_in_a_fresh_process(landmark_arm_run, exports_dir, tmp_path):
    path = landmark_export(landmark_arm_run, exports_dir, "savedmodel")
    model, x = held_out(landmark_arm_run, limit=5)
    np.savez(tmp_path / "x.npz", **x)
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "x.npz"), str(tmp_path / "y.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    y = json.loads((tmp_path / "y.json").read_text())
    assert y["inputs"] == {"images": [-1, MODEL_SIZE, MODEL_SIZE, 1], "landmarks": [-1, 68, 2]}
    assert y["dtypes"] == {"images": "float32", "landmarks": "float32"}
    assert y["outputs"] == ["label_index", "label_name", "probabilities"]
    expected = keras_probabilities(model, x)
    np.testing.assert_allclose(np.array(y["probabilities"]), expected, atol=1e-5)
    assert y["label_index"] == expected.argmax(1).tolist()
    info = json.loads((path / "assets.extra" / "fer_keras.json").read_text())
    landmarks = next(i for i in info["inputs"] if i["name"] == "landmarks")
    assert landmarks["shape"] == [None, 68, 2] and landmarks["points"] == 68
    assert "aligned face crop" in landmarks["units"]


@pytest.mark.parametrize("quantize, tolerance", [("none", 1e-4), ("float16", 1e-2)])
def test_tflite_parity_with_both_inputs(landmark_arm_run, exports_dir, quantize, tolerance):
    path = landmark_export(landmark_arm_run, exports_dir, "tflite", quantize)
    model, x = held_out(landmark_arm_run)
    got, inputs, interpreter = run_signature(path, x)
    assert sorted(inputs) == ["images", "landmarks"]
    assert tuple(inputs["landmarks"]["shape"]) == (1, 68, 2) and inputs["landmarks"]["dtype"] == np.float32
    assert np.max(np.abs(got - keras_probabilities(model, x))) <= tolerance
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(name.startswith("Flex") or name == "CUSTOM" for name in ops), ops
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["input"]["name"] == "images" and meta["input"]["shape"] == [1, MODEL_SIZE, MODEL_SIZE, 1]
    landmarks = next(i for i in meta["inputs"] if i["name"] == "landmarks")
    assert landmarks["shape"] == [1, 68, 2] and landmarks["points"] == 68 and landmarks["dtype"] == "float32"
    assert "dlib" in landmarks["units"] and "aligned face crop" in landmarks["units"]
    assert meta["parity"]["max_abs_diff"] <= tolerance


def test_int8_keeps_the_landmarks_float(landmark_arm_run, exports_dir):
    """int8 images and output; the landmarks input (and the heatmap drawing) stays float32, as the metadata says."""
    path = landmark_export(landmark_arm_run, exports_dir, "tflite", "int8")
    model, x = held_out(landmark_arm_run)
    got, inputs, interpreter = run_signature(path, x)
    assert inputs["images"]["dtype"] == np.int8 and inputs["landmarks"]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=0.05)
    assert np.max(np.abs(got - keras_probabilities(model, x))) <= 0.1
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(name.startswith("Flex") or name == "CUSTOM" for name in ops), ops
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["input"]["dtype"] == "int8" and meta["input"]["quantization"] is not None
    landmarks = next(i for i in meta["inputs"] if i["name"] == "landmarks")
    assert landmarks["dtype"] == "float32" and landmarks["quantization"] is None and "why_float" in landmarks


def test_int16x8_is_refused_with_one_line_and_nothing_written(landmark_arm_run, tmp_path):
    from tests.conftest import expect_user_error, invoke

    out = tmp_path / "exports"
    line = expect_user_error(invoke("export", landmark_arm_run, "--format", "tflite", "--quantize", "int16x8", "--out", out))
    assert "int16x8 is not available for landmark_arm" in line and "--quantize int8" in line
    assert not out.exists() or not any(out.rglob("*.tflite"))
