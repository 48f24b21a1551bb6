"""TFLite export through the CLI: builtin ops only, parity with Keras in ai_edge_litert, metadata.

The .tflite files are run here with `ai_edge_litert.interpreter.Interpreter` directly (never
tf.lite.Interpreter, and not through the package's own LiteRTModel), against the run's Keras model
on held-out test subjects and on random raw-pixel inputs.
"""

import hashlib
import json
import shutil

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from fer_keras.data.splits import Split
from fer_keras.errors import UserError
from fer_keras.exports import tflite
from fer_keras.training import fit
from tests.conftest import CLIP_LENGTH, MODEL_SIZE, expect_ok, expect_user_error, invoke


def held_out_inputs(run, limit=24, seed=0):
    """(keras model, labels, inputs): test-subject samples plus random raw pixels in [0, 255]."""
    config, manifest, model = fit.load_run(run)
    split = Split.from_dict(config["split_subjects"])
    x, _ = tflite.sample(fit.make_dataset(config, manifest, split, "test", batch_size=16), limit)
    noise = np.random.default_rng(seed).uniform(0, 255, size=(4,) + x.shape[1:]).astype(np.float32)
    return model, manifest["labels"], np.concatenate([x, noise])


def run_litert(path, inputs):
    """Probabilities from a .tflite, one sample at a time, (de)quantising int8 input/output."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    results = []
    for x in inputs:
        x = x[None].astype(np.float32)
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(y)
    return np.stack(results), interpreter


def keras_probabilities(model, inputs):
    return np.asarray(model(inputs, training=False))


@pytest.fixture(scope="module")
def clip_tflite(clip_run, exports_dir):
    expect_ok(invoke("--quiet", "export", clip_run, "--format", "tflite", "--quantize", "none", "--out", exports_dir))
    return exports_dir / clip_run.name / "tflite" / "model_none.tflite"


@pytest.mark.parametrize("quantize, tolerance", [("none", 1e-4), ("float16", 1e-2)])
def test_still_parity_with_keras(still_run, still_tflite, quantize, tolerance):
    model, _, inputs = held_out_inputs(still_run)
    expected = keras_probabilities(model, inputs)
    got, _ = run_litert(still_tflite[quantize], inputs)
    assert got.shape == expected.shape == (len(inputs), 7)
    assert np.max(np.abs(got - expected)) <= tolerance
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-3)


def test_clip_model_parity_with_keras(clip_run, clip_tflite):
    """convlstm2d_clip is rebuilt at batch 1 and unrolled, and still matches the dynamic-batch Keras model."""
    model, _, inputs = held_out_inputs(clip_run, limit=6)
    assert inputs.shape[1:] == (CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1)
    got, interpreter = run_litert(clip_tflite, inputs)
    assert np.max(np.abs(got - keras_probabilities(model, inputs))) <= 1e-4
    assert tuple(interpreter.get_input_details()[0]["shape"]) == (1, CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1)
    meta = json.loads(clip_tflite.with_suffix(".json").read_text())
    assert meta["input"]["shape"] == [1, CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1]
    assert meta["input"]["layout"] == "NTHWC" and meta["input"]["name"] == "frames"
    assert meta["clip_length"] == CLIP_LENGTH
    assert meta["parity"]["max_abs_diff"] <= 1e-4
    # Parity takes whole videos (the tiny test side fits the budget: all of them), and compares the per-video
    # majority votes too, which float32 leaves as they are.
    config, manifest, _ = fit.load_run(clip_run)
    test = fit.make_dataset(config, manifest, Split.from_dict(config["split_subjects"]), "test", batch_size=16, with_meta=True)
    clips = [v for _, _, m in test for v in m["video"].numpy().tolist()]
    assert meta["parity"]["samples"] == len(clips)
    assert meta["parity"]["per_video"]["videos"] == len(set(clips)) > 1
    assert meta["parity"]["per_video"]["top1_agreement"] == 1.0
    assert meta["parity"]["confident"]["top1_agreement"] in (None, 1.0)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_the_sidecar_names_what_the_signature_has(still_tflite, quantize):
    """An app that reads only the JSON finds the input and output under its names, and the alignment template."""
    path = still_tflite[quantize]
    meta = json.loads(path.with_suffix(".json").read_text())
    runner = Interpreter(model_path=str(path)).get_signature_runner(meta["signature"])
    assert list(runner.get_output_details()) == [meta["output"]["name"]]
    assert meta["output"]["shape"] == [1, len(meta["labels"])]
    x = np.zeros(meta["input"]["shape"], meta["input"]["dtype"])
    assert runner(**{meta["input"]["name"]: x})[meta["output"]["name"]].shape == (1, len(meta["labels"]))
    assert "RGB channel order" in meta["input"]["normalisation"]
    # the SavedModel's names, and positions for bindings that only index the plain input and output lists
    assert (meta["input"]["name"], meta["output"]["name"]) == ("images", "probabilities")
    interpreter = Interpreter(model_path=str(path))
    assert interpreter.get_input_details()[meta["input"]["position"]]["index"] == runner.get_input_details()["images"]["index"]
    assert interpreter.get_output_details()[meta["output"]["position"]]["index"] == \
        runner.get_output_details()["probabilities"]["index"]
    # tied to its model, and no folder of the machine that exported it
    assert meta["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and meta["metadata_version"] >= 2
    assert "run_path" not in meta and meta["run_id"]
    size = meta["input"]["shape"][1]
    assert meta["face_alignment"]["template_px"]["mouth"] == pytest.approx([0.5 * size, 0.75 * size])
    assert meta["face_alignment"]["anchors"]["mouth"] == "mean of landmarks 48-59"


def test_int8_export(still_run, still_tflite):
    path = still_tflite["int8"]
    model, _, inputs = held_out_inputs(still_run)
    got, interpreter = run_litert(path, inputs)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=0.05)
    assert np.max(np.abs(got - keras_probabilities(model, inputs))) <= 0.1
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["input"]["dtype"] == "int8"
    scale, zero = meta["input"]["quantization"]
    assert scale > 0 and -128 <= zero <= 127
    assert meta["output"]["quantization"] is not None


@pytest.mark.parametrize("quantize", ["none", "float16"])
def test_metadata_beside_the_model(still_run, still_tflite, quantize):
    path = still_tflite[quantize]
    meta = json.loads(path.with_suffix(".json").read_text())
    manifest_labels = json.loads((still_run / "config.json").read_text())["dataset"]["labels"]
    assert meta["labels"] == manifest_labels and len(meta["labels"]) == 7
    assert meta["label_set"] == "basic7"
    assert meta["model"] == "frame_cnn" and meta["run"] == still_run.name
    assert meta["format"] == "tflite" and meta["quantize"] == quantize
    assert meta["input"]["shape"] == [1, MODEL_SIZE, MODEL_SIZE, 1]
    assert meta["input"]["dtype"] == "float32" and meta["input"]["layout"] == "NHWC"
    assert meta["input"]["quantization"] is None
    assert meta["clip_length"] is None
    parity = meta["parity"]
    assert parity["samples"] > 0
    assert parity["max_abs_diff"] <= (1e-4 if quantize == "none" else 1e-2)
    assert 0 <= parity["top1_agreement"] <= 1
    low, high = parity["top1_agreement_95ci"]
    assert low <= parity["top1_agreement"] <= high
    assert parity["accuracy_drop"] == pytest.approx(parity["keras_accuracy"] - parity["tflite_accuracy"])
    assert not list(path.parent.glob("*.tmp"))


def test_a_json_of_another_model_is_refused(still_tflite, tmp_path):
    """A .tflite replaced without its .json (a float model under an int8 JSON) would be run and timed as the JSON says."""
    (tmp_path / "m.tflite").write_bytes(still_tflite["none"].read_bytes())
    shutil.copy(still_tflite["int8"].with_suffix(".json"), tmp_path / "m.json")
    for command in (["predict", tmp_path / "m.tflite", tmp_path / "m.tflite", "--detect", "none"],
                    ["benchmark", tmp_path / "m.tflite", "--runs", 2]):
        line = expect_user_error(invoke(*command))
        assert line == (f"Error: {tmp_path / 'm.json'} describes another model than {str(tmp_path / 'm.tflite')!r} (its "
                        "model_sha256 differs): copy a .tflite and its .json together, or export again. A .tflite "
                        "changed on purpose (metadata added) needs its new sha256 in the JSON."), command


def embedded_json(path):
    """The fer_keras.json metadata entry of a .tflite, read with the TFLite schema alone (as an app would)."""
    from ai_edge_litert import schema_py_generated as schema

    data = path.read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    return json.loads(model.Buffers(entries[b"fer_keras.json"]).DataAsNumpy().tobytes())


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_the_json_travels_inside_the_model(still_tflite, tmp_path, quantize):
    """A .tflite copied alone (an app's assets, a chat attachment) still names its labels, input and alignment."""
    import cv2

    path = still_tflite[quantize]
    sidecar = json.loads(path.with_suffix(".json").read_text())
    inside = embedded_json(path)
    assert inside == {k: v for k, v in sidecar.items() if k not in ("model_sha256", "model_bytes")}
    assert inside["metadata_version"] >= 3 and inside["labels"] and inside["parity"] == sidecar["parity"]
    alone = tmp_path / "alone.tflite"
    alone.write_bytes(path.read_bytes())
    image = tmp_path / "face.png"
    cv2.imwrite(str(image), np.full((MODEL_SIZE, MODEL_SIZE), 128, np.uint8))
    out = tmp_path / "p.jsonl"
    expect_ok(invoke("predict", alone, image, "--detect", "none", "--out", out))
    record = json.loads(out.read_text().splitlines()[0])
    assert record["label"] in sidecar["labels"] and list(record["scores"]) == sidecar["labels"]
    expect_ok(invoke("benchmark", alone, "--runs", 2, "--out", tmp_path / "b.json"))
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["model"] == "frame_cnn" and result["quantize"] == quantize and "inside" in result["metadata"]


def test_a_tflite_with_no_metadata_is_refused(still_run, still_tflite, tmp_path):
    """The converter's own output (no JSON beside it, none inside): one line, before any image is read."""
    config, manifest, model = fit.load_run(still_run)
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(tflite.convert(tflite.rebuild_for_device(config, manifest, model)))
    line = expect_user_error(invoke("predict", bare, bare, "--detect", "none"))
    assert line == (f"Error: {str(bare)!r} has no bare.json beside it and no fer-keras metadata inside it (labels and "
                    "input size travel in them): not a fer-keras export, or one made before exports carried it "
                    "inside; copy its .json beside it.")
    cut = tmp_path / "cut.tflite"  # an export copied alone, and cut short: said to be damaged, not foreign
    data = still_tflite["none"].read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.9)])
    line = expect_user_error(invoke("predict", cut, cut, "--detect", "none"))
    assert line.startswith(f"Error: {cut} is not a valid TFLite model"), line


def test_each_variant_keeps_what_it_promises_on_a_model_far_from_uniform(still_run):
    """The run's own model is near chance (probabilities within 0.02 of 1/7), where float16 or a constant int8 output
    would pass the parity bounds too; with its softmax sharpened, each variant must earn them, and store its
    weights in its own type."""
    from tests.exports.test_streaming import sharpened

    config, manifest, model = fit.load_run(still_run)
    device = sharpened(tflite.rebuild_for_device(config, manifest, model))
    split = Split.from_dict(config["split_subjects"])
    train, _ = tflite.sample(fit.make_dataset(config, manifest, split, "train", batch_size=16), 120)
    _, _, inputs = held_out_inputs(still_run)
    expected = keras_probabilities(device, inputs)
    assert np.ptp(expected) > 0.5
    for quantize in ("none", "float16", "int8"):
        flatbuffer = tflite.convert(device, quantize=quantize, representative=tflite._unbatch(train) if quantize == "int8" else None)
        interpreter = Interpreter(model_content=flatbuffer)
        weights = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details() if len(t["shape"]) == 4}
        lite = tflite.LiteRTModel(flatbuffer)
        got = np.stack([lite(x) for x in inputs])
        diff = np.max(np.abs(got - expected))
        if quantize == "none":
            assert diff <= 1e-4 and "float16" not in weights and "int8" not in weights, (diff, weights)
        elif quantize == "float16":
            assert diff <= 1e-2 and "float16" in weights, (diff, weights)
        else:
            assert "int8" in weights and "float16" not in weights, weights
            assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.8 and diff <= 0.2, diff


@pytest.mark.parametrize("quantize", ["none", "float16", "int8"])
def test_builtin_ops_only(still_tflite, quantize):
    _, interpreter = run_litert(still_tflite[quantize], np.zeros((1, MODEL_SIZE, MODEL_SIZE, 1), np.float32))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops and not any(name.startswith("Flex") or name == "CUSTOM" for name in ops), ops
    assert "READ_VARIABLE" not in ops and "VAR_HANDLE" not in ops  # weights are frozen into constants


def test_convert_refuses_unknown_quantisation_and_small_int8_sets(still_run):
    _, _, model = fit.load_run(still_run)
    with pytest.raises(UserError, match="--quantize"):
        tflite.convert(model, quantize="int4")
    device = tflite.rebuild_for_device(*fit.load_run(still_run))
    with pytest.raises(UserError, match="at least 100"):
        tflite.convert(device, quantize="int8", representative=np.zeros((99, MODEL_SIZE, MODEL_SIZE, 1), np.float32))


def test_two_stream_model_exports_with_named_rgb_and_flow_inputs(tmp_path):
    """A two-input (RGB + optical flow) clip model converts with builtin ops only and matches Keras."""
    from fer_keras.exports.tflite import LiteRTModel, convert, input_names
    from fer_keras.models.registry import get_model

    model = get_model("econvlstm", (4, 32, 32, 1), 7, size="small", streams=("rgb", "flow"), unroll=True, batch_size=1)
    assert sorted(input_names(model)) == ["flow", "rgb"]
    lite = LiteRTModel(convert(model))
    assert lite.input_shape == {"rgb": (1, 4, 32, 32, 1), "flow": (1, 4, 32, 32, 2)}
    rng = np.random.default_rng(0)
    x = {"rgb": rng.uniform(0, 255, (1, 4, 32, 32, 1)).astype("float32"), "flow": rng.normal(0, 3, (1, 4, 32, 32, 2)).astype("float32")}
    np.testing.assert_allclose(lite(x), model.predict(x, verbose=0)[0], atol=1e-4)


def _wide_logit_model():
    """Dense softmax whose last class sits ~40 below the others: the int8 range TFLite would calibrate."""
    inputs = keras.Input((6,), batch_size=1)
    hidden = keras.layers.Dense(12, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(5, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    model.get_layer("hidden").set_weights([rng.normal(size=(6, 12)).astype(np.float32), np.zeros(12, np.float32)])
    kernel = rng.normal(scale=0.5, size=(12, 5)).astype(np.float32)
    model.get_layer("probabilities").set_weights([kernel, np.array([0, 0.5, 1, 0.2, -40], np.float32)])
    return model, rng.normal(size=(120, 6)).astype(np.float32)


def _numpy_logits(model, x):
    w1, b1 = model.get_layer("hidden").get_weights()
    w2, b2 = model.get_layer("probabilities").get_weights()
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def test_int8_logits_floored_below_the_runner_up():
    """The int8 logits' range starts LOGIT_FLOOR_MARGIN below the calibration's lowest runner-up, not at the
    far-off class, and the Keras model is left as it was."""
    model, samples = _wide_logit_model()
    logits = _numpy_logits(model, samples)
    assert logits.min() < -35  # what TFLite would otherwise spend the int8 range on
    floor = np.sort(logits, axis=1)[:, -2].min() - tflite.LOGIT_FLOOR_MARGIN
    before = model.predict(samples, verbose=0, batch_size=1)

    interpreter = Interpreter(model_content=tflite.convert(model, quantize="int8", representative=list(samples)))
    tensors = interpreter.get_tensor_details()
    fc = [op for op in interpreter._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"][-1]
    scale, zero = tensors[fc["outputs"][0]]["quantization"]
    low, high = (-128 - zero) * scale, (127 - zero) * scale
    assert abs(low - floor) <= 2 * scale, (low, floor)
    assert high >= logits.max() - 2 * scale
    assert scale < (logits.max() - logits.min()) / 255 / 2  # the step is at least 2x finer than without the floor

    np.testing.assert_array_equal(model.predict(samples, verbose=0, batch_size=1), before)
    assert model.get_layer("probabilities").activation is keras.activations.softmax


def test_logit_floor_moves_float_probabilities_by_little():
    """Under the floor, a class gains at most e^-margin of the runner-up's probability: the argmax never changes."""
    model, samples = _wide_logit_model()
    logits = _numpy_logits(model, samples)
    def probabilities():  # eager calls: a traced predict function would keep the activation it was traced with
        return np.concatenate([keras.ops.convert_to_numpy(model(x[None], training=False)) for x in samples])

    with tflite.logit_floor(model, lambda x: model(x, training=False), list(samples)) as floor:
        floored = probabilities()
    assert floor == pytest.approx(np.sort(logits, axis=1)[:, -2].min() - tflite.LOGIT_FLOOR_MARGIN, abs=1e-4)
    original = probabilities()
    assert np.array_equal(floored.argmax(1), original.argmax(1))
    assert 0 < np.max(np.abs(floored - original)) <= 4 * np.exp(-tflite.LOGIT_FLOOR_MARGIN)


def test_final_classifier_is_the_outermost():
    """landmark_arm's network holds the RGB branch's own "probabilities" one model down; the floor goes on the output's."""
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(3, activation="softmax", name="probabilities")(inner_in), name="rgb")
    outer_in = keras.Input((4,))
    outer_out = keras.layers.Dense(3, activation="softmax", name="probabilities")(
        keras.layers.Concatenate()([outer_in, inner(outer_in)]))
    outer = keras.Model(outer_in, outer_out)
    assert tflite.final_classifier(outer) is outer.layers[-1]
    assert tflite.final_classifier(outer) is not inner.get_layer("probabilities")
    assert tflite.final_classifier(inner) is inner.get_layer("probabilities")
    assert tflite.final_classifier(keras.Model(inner_in, keras.layers.Dense(2, name="logits")(inner_in))) is None


def test_float_io_from_the_command_line(still_run, face_images, tmp_path):
    """int8 ops with float32 input and output tensors, for apps that feed floats; only where it means something."""
    expect_ok(invoke("--quiet", "export", still_run, "--quantize", "int8", "--float-io", "--out", tmp_path))
    path = tmp_path / still_run.name / "tflite" / "model_int8_float_io.tflite"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["float_io"] is True and meta["input"]["dtype"] == "float32" and meta["output"]["dtype"] == "float32"
    interpreter = Interpreter(model_path=str(path))
    assert any(np.dtype(t["dtype"]) == np.int8 for t in interpreter.get_tensor_details())  # the ops stay integer
    assert meta["parity"]["top1_agreement"] >= 0.5
    expect_ok(invoke("--quiet", "predict", path, face_images, "--detect", "none", "--out", tmp_path / "p.jsonl"))
    for quantize in ("none", "float16"):
        line = expect_user_error(invoke("export", still_run, "--quantize", quantize, "--float-io", "--out", tmp_path), exit_code=2)
        assert "--float-io applies to --format tflite with --quantize int8 or int16x8" in line
