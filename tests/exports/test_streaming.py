"""Streaming (per-frame) export: a step model from the clip model's weights, run T frames in LiteRT.

The step models are run here with `ai_edge_litert.interpreter.Interpreter`'s signature runner
directly (not the package's StreamingLiteRT), feeding every "<state>_next" output back into
"<state>", and compared with the Keras clip model on the whole clip.
"""

import json

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from fer_keras.data.splits import Split
from fer_keras.errors import UserError
from fer_keras.exports import streaming, tflite
from fer_keras.layers.conv_lstm_cell import ConvLSTMCell
from fer_keras.layers.conv_rnn import ConvRNN
from fer_keras.models.registry import get_model
from fer_keras.training import fit
from tests.conftest import CLIP_LENGTH, MODEL_SIZE, expect_user_error, invoke
from tests.exports.streaming_runs import ram_run, streaming_export

STEPS, SIZE = 3, 16
# Every registered clip model; econvgru with both streams (RGB + optical flow).
CLIP_MODELS = [
    ("convlstm", ("rgb",)),
    ("convgru", ("rgb",)),
    ("econvlstm", ("rgb",)),
    ("econvgru", ("rgb", "flow")),
    ("convlstm_ram", ("rgb",)),
    ("econvlstm_ram", ("rgb",)),
    ("convlstm2d_clip", ("rgb",)),
]


def run_step_litert(model, clip):
    """Outputs after the last frame of `clip` ({input: (T, ...)}), states from zeros and fed back (dequantised)."""
    interpreter = Interpreter(**({"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}))
    runner = interpreter.get_signature_runner("serving_default")
    inputs, outputs = runner.get_input_details(), runner.get_output_details()

    def quantise(x, d):
        x = np.asarray(x, np.float32).reshape(d["shape"])
        if d["dtype"] == np.int8:
            scale, zero = d["quantization"]
            return np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        return x

    def dequantise(y, d):
        if d["dtype"] == np.int8:
            scale, zero = d["quantization"]
            return (y.astype(np.float32) - zero) * scale
        return y

    names = [n[: -len("_next")] for n in outputs if n.endswith("_next")]
    states = {n: np.zeros(inputs[n]["shape"], np.float32) for n in names}
    assert set(inputs) == set(clip) | set(names)
    for t in range(len(next(iter(clip.values())))):
        feed = {n: quantise(v[t], inputs[n]) for n, v in clip.items()}
        feed.update({n: quantise(v, inputs[n]) for n, v in states.items()})
        out = {n: dequantise(v, outputs[n]) for n, v in runner(**feed).items()}
        states = {n: out[f"{n}_next"] for n in names}
    return out, interpreter


def sharpened(model):
    """`model` with a larger softmax kernel, so that untrained probabilities are far from uniform."""
    network = getattr(model, "network", model)
    layer = network.get_layer("probabilities")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 30.0, np.random.default_rng(0).normal(0, 1, bias.shape).astype("float32")])
    return model


def random_clips(streams, count=2, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.uniform(0, 255, (count, STEPS, SIZE, SIZE, 1)).astype("float32")
    if streams == ("rgb",):
        return rgb
    return {"rgb": rgb, "flow": rng.normal(0, 3, (count, STEPS, SIZE, SIZE, 2)).astype("float32")}


def step_inputs(step, clip):
    return clip if isinstance(clip, dict) else {step.frame_names[0]: clip}


def builtin_ops_only(interpreter):
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    return ops and not any(name.startswith("Flex") or name == "CUSTOM" for name in ops), ops


@pytest.mark.parametrize("name, streams", CLIP_MODELS, ids=[f"{n}-{'+'.join(s)}" for n, s in CLIP_MODELS])
def test_step_model_matches_the_clip_model_after_T_frames(name, streams):
    """Keras step model and its float32 .tflite, run T frames from zero states, give the clip model's output."""
    kwargs = {"streams": streams} if streams != ("rgb",) else {}
    model = sharpened(get_model(name, (STEPS, SIZE, SIZE, 1), 7, size="small", **kwargs))
    step = streaming.StreamingStep(model)
    clips = random_clips(streams)
    expected = model.predict(clips, verbose=0)
    expected = expected["probabilities"] if isinstance(expected, dict) else expected
    assert np.ptp(expected) > 0.1  # far from uniform: the comparison means something

    keras_step = np.stack([streaming.run_clip(step, c)[0]["probabilities"][0] for c in tflite._unbatch(clips)])
    assert np.max(np.abs(keras_step - expected)) <= 1e-4

    flatbuffer = tflite.convert_function(model, step, [step.input_signature()])
    for i, clip in enumerate(tflite._unbatch(clips)):
        out, interpreter = run_step_litert(flatbuffer, step_inputs(step, clip))
        assert np.max(np.abs(out["probabilities"][0] - expected[i])) <= 1e-4
    assert builtin_ops_only(interpreter)[0], builtin_ops_only(interpreter)[1]
    assert set(out) == set(step.output_names)
    assert ("attention_map" in out) == name.endswith("_ram")
    # What the app reads: "input" is the camera frame, never the flow; a flow input says how to compute it.
    meta = streaming.streaming_metadata(step, streaming.StreamingLiteRT(flatbuffer), config={"model": name},
                                        manifest={"labels": list("abcdefg"), "label_set": "basic7"}, run="r", quantize="none")
    assert meta["input"]["name"] != "flow" and "RGB channel order" in meta["input"]["normalisation"]
    assert [f["name"] for f in meta["frame_inputs"]] == step.frame_names
    for frame in meta["frame_inputs"]:
        assert ("calcOpticalFlowFarneback" in frame.get("method", "")) == (frame["name"] == "flow")
    assert ("attention_map" in meta["usage"]) == name.endswith("_ram") and ("flow" in meta["usage"]) == ("flow" in streams)
    assert meta["face_alignment"]["template_px"]["mouth"] == pytest.approx([0.5 * SIZE, 0.75 * SIZE])
    # An app with only positions (no signature runner) that copies each state in the JSON's order gets the clip
    # model's output; where a '_next' output is its input tensor, copying h1 first would read the new h1 as h2.
    clip = step_inputs(step, tflite._unbatch(clips)[0])
    got, fed_back = run_by_positions(flatbuffer, meta, clip, meta["states"])
    assert np.max(np.abs(got - expected[0])) <= 1e-4
    passed_through = [st for st in meta["states"] if "feed_back_is_input" in st]
    assert bool(passed_through) == name.startswith("e")  # the Enhanced cells' h2_next is their h1 input
    if passed_through:
        assert all(st["role"] == "h2" and st["feed_back_is_input"] == st["name"][: -len("h2")] + "h1" for st in passed_through)
        h1_first = sorted(meta["states"], key=lambda st: (st["layer"], st["role"] == "h2"))
        _, wrong = run_by_positions(flatbuffer, meta, clip, h1_first)  # the probabilities may saturate: the states show it
        assert max(np.max(np.abs(wrong[n] - v)) / np.max(np.abs(v)) for n, v in fed_back.items()) > 1e-2


def run_by_positions(flatbuffer, meta, clip, states):
    """(probabilities, {state: value fed back}) after the last frame of `clip` ({frame input: (T, ...)}, float model),
    fed as an app without signature runners does: tensors by the JSON's positions, each state copied in turn in the
    order of `states`."""
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    for st in states:
        interpreter.set_tensor(inputs[st["position"]]["index"], np.zeros(st["shape"], np.float32))
    probabilities = next(o for o in meta["outputs"] if o["name"] == "probabilities")
    for t in range(len(next(iter(clip.values())))):
        for frame in meta["frame_inputs"]:
            interpreter.set_tensor(inputs[frame["position"]]["index"], clip[frame["name"]][t][None].astype(np.float32))
        interpreter.invoke()
        got = interpreter.get_tensor(outputs[probabilities["position"]]["index"])[0].copy()
        for st in states:
            interpreter.set_tensor(inputs[st["position"]]["index"],
                                   interpreter.get_tensor(outputs[st["feed_back_position"]]["index"]))
    return got, {st["name"]: interpreter.get_tensor(inputs[st["position"]]["index"]).copy() for st in states}


def test_state_names_and_shapes():
    """Enhanced cells carry h(t-1), c, h(t-2); the RAM's own trunk states are inputs too."""
    step = streaming.StreamingStep(get_model("econvlstm_ram", (STEPS, SIZE, SIZE, 1), 7, size="small"))
    assert step.frame_names == ["frame"] and step.frame_shapes == {"frame": (SIZE, SIZE, 1)}
    assert step.state_names[:3] == ["rgb_rnn1_h1", "rgb_rnn1_c", "rgb_rnn1_h2"]
    assert step.state_names[-3:] == ["ram_h1", "ram_c", "ram_h2"]
    assert len(step.state_names) == 5 * 3
    shapes = {s["name"]: s["shape"] for s in step.state_specs}
    assert shapes["rgb_rnn1_h1"] == (SIZE // 2, SIZE // 2, 8)  # pooled once before rnn1
    assert shapes["rgb_rnn4_c"] == (SIZE // 8, SIZE // 8, 16)
    assert shapes["ram_h2"] == (SIZE // 8, SIZE // 8, 16)  # the RAM trunk's attention_filters
    gru = streaming.StreamingStep(get_model("convgru", (STEPS, SIZE, SIZE, 1), 7, size="small"))
    assert gru.state_names == [f"rgb_rnn{i}_h1" for i in range(1, 5)]


def test_probabilities_after_frame_t_are_the_clip_model_on_frames_0_to_t():
    """The definition of the per-frame output: the same weights on the shorter clip [0..t]."""
    model = sharpened(get_model("econvlstm_ram", (STEPS, SIZE, SIZE, 1), 7, size="small"))
    step = streaming.StreamingStep(model)
    clip = random_clips(("rgb",), count=1)[0]
    _, every = streaming.run_clip(step, clip)
    for t in range(STEPS):
        shorter = get_model("econvlstm_ram", (t + 1, SIZE, SIZE, 1), 7, size="small")
        shorter.set_weights(model.get_weights())
        out = shorter.explain(clip[None, : t + 1], training=False)
        np.testing.assert_allclose(every[t]["probabilities"], out["probabilities"], atol=1e-5)
        np.testing.assert_allclose(every[t]["attention_map"], out["attention_maps"][:, t], atol=1e-5)


@pytest.mark.parametrize("count, limit, expected", [(10, 6, 6), (4, 10, 10), (2, 50, 2 * STEPS)])
def test_calibration_samples_spread_over_the_clips_and_their_steps(count, limit, expected):
    """One (frame, states) pair per clip in turn, each clip's t moving on a step per lap; no pair twice.

    Taking every step of the first clips calibrated on a few subjects only (streaming int16x8 of a
    SynthFER lab econvgru run agreed 91.6 % with float instead of 98.3 %).
    """
    model = get_model("convgru", (STEPS, SIZE, SIZE, 1), 7, size="small")
    step = streaming.StreamingStep(model)
    clips = tflite._unbatch(random_clips(("rgb",), count=count))
    samples = streaming.representative_samples(step, clips, limit=limit)
    assert len(samples) == expected
    seen = set()
    for i, sample in enumerate(samples):
        index, lap = i % count, i // count
        t = (index + lap) % STEPS
        np.testing.assert_array_equal(sample["frame"], clips[index][t])
        _, every = streaming.run_clip(step, clips[index][:t]) if t else (None, [])
        for name in step.state_names:  # the states the clip's first t frames leave
            want = np.asarray(step.next_states(every[-1])[name])[0] if t else np.zeros(sample[name].shape)
            np.testing.assert_allclose(sample[name], want, atol=1e-5)
        seen.add((index, t))
    assert len(seen) == len(samples)
    if count >= limit:
        assert {index for index, _ in seen} == set(range(limit))  # a different clip for every sample


def test_a_head_that_reads_every_step_cannot_stream():
    frames = keras.Input((STEPS, 8, 8, 1), name="frames")
    x = ConvRNN(ConvLSTMCell(4, 3), return_sequences=True, name="rnn")(frames)
    x = keras.layers.Flatten(name="flatten")(x)  # (B, T*8*8*4): every step's output
    model = keras.Model(frames, keras.layers.Dense(3, activation="softmax", name="probabilities")(x), name="flat")
    with pytest.raises(UserError, match="'flatten' .* reads across time steps"):
        streaming.StreamingStep(model)


def test_cli_streaming_export_matches_the_clip_run(clip_run, exports_dir):
    """`export RUN --format tflite --streaming`: convlstm2d_clip run, metadata, parity on held-out clips."""
    path = streaming_export(clip_run, exports_dir)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["streaming"] is True and meta["model"] == "convlstm2d_clip" and meta["quantize"] == "none"
    assert meta["clip_length"] == meta["reset_every"] == CLIP_LENGTH
    assert meta["input"]["name"] == "frame" and meta["input"]["shape"] == [1, MODEL_SIZE, MODEL_SIZE, 1]
    assert [s["name"] for s in meta["states"]] == ["convlstm_h1", "convlstm_c"]
    for s in meta["states"]:
        assert s["shape"] == [1, MODEL_SIZE // 4, MODEL_SIZE // 4, 32] and s["initial"].startswith("zeros")
        assert s["feed_back_from"] == s["name"] + "_next"
    assert [o["name"] for o in meta["outputs"]] == ["probabilities"]
    assert meta["parity"]["max_abs_diff"] <= 1e-4 and meta["parity"]["keras_step_max_abs_diff"] <= 1e-4
    # the same JSON inside the .tflite, so that the step model copied alone still says how to feed its states
    from tests.exports.test_tflite_export import embedded_json
    assert embedded_json(path)["states"] == meta["states"] and embedded_json(path)["usage"] == meta["usage"]

    config, manifest, model = fit.load_run(clip_run)
    x, _ = tflite.sample(fit.make_dataset(config, manifest, Split.from_dict(config["split_subjects"]), "test", batch_size=8), 6)
    expected = np.asarray(model(x, training=False))
    for clip, p in zip(x, expected):
        out, interpreter = run_step_litert(path, {"frame": clip})
        assert np.max(np.abs(out["probabilities"][0] - p)) <= 1e-4
    assert builtin_ops_only(interpreter)[0]


@pytest.fixture(scope="module")
def ram(sequence_data, runs_dir):
    return ram_run(sequence_data, runs_dir)


def test_ram_streaming_export_gives_the_attention_map(ram, exports_dir):
    path = streaming_export(ram, exports_dir)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "attention_map"]
    assert [s["name"] for s in meta["states"]][-3:] == ["ram_h2", "ram_h1", "ram_c"]  # h2 (h1 passed through) first
    _, _, model = fit.load_run(ram)
    clip = np.random.default_rng(2).uniform(0, 255, (CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1)).astype("float32")
    out, _ = run_step_litert(path, {"frame": clip})
    expected = model.explain(clip[None], training=False)
    assert np.max(np.abs(out["probabilities"] - np.asarray(expected["probabilities"]))) <= 1e-4
    assert np.max(np.abs(out["attention_map"] - np.asarray(expected["attention_maps"])[:, -1])) <= 1e-4


def test_int8_streaming_export(ram, exports_dir):
    """Full-integer step model: int8 frame, states and outputs; its top-1 agreement is in the metadata."""
    path = streaming_export(ram, exports_dir, "int8")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["input"]["dtype"] == "int8" and all(s["dtype"] == "int8" for s in meta["states"])
    assert all(s["quantization"] and s["feed_back_quantization"] for s in meta["states"])
    parity = meta["parity"]
    assert parity["samples"] > 0 and 0.5 <= parity["top1_agreement"] <= 1
    assert 1 <= parity["per_video"]["videos"] < parity["samples"] and 0 <= parity["per_video"]["top1_agreement"] <= 1
    assert parity["confident"]["threshold"] == 0.5 and 0 <= parity["confident"]["share"] <= 1
    clip = np.random.default_rng(3).uniform(0, 255, (CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1)).astype("float32")
    out, interpreter = run_step_litert(path, {"frame": clip})
    np.testing.assert_allclose(out["probabilities"].sum(), 1.0, atol=0.05)
    assert builtin_ops_only(interpreter)[0]


def test_a_still_model_cannot_stream(still_run, tmp_path):
    line = expect_user_error(invoke("export", still_run, "--format", "tflite", "--streaming", "--out", tmp_path))
    assert "--streaming applies to clip" in line


def test_streaming_is_a_tflite_option(clip_run, tmp_path):
    line = expect_user_error(invoke("export", clip_run, "--format", "savedmodel", "--streaming", "--out", tmp_path), exit_code=2)
    assert "--format tflite" in line
