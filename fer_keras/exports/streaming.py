"""Streaming (per-frame) export of the clip models: one camera frame in, probabilities out.

A clip model reads T frames at once. Every registered clip model classifies from its recurrent
layers' state after the last frame: the Conv-RNN models (`convrnn`) flatten the top layer's
last hidden state h_{T-1}, the RAM models (`ram`) crop the attended features of step T-1
(`last_step`), and `convlstm2d_clip` pools the ConvLSTM2D's last state. No head reads several
steps, so a step model needs only the cells' own states: no ring buffer of past features.

`StreamingStep` rebuilds such a model as one time step from the same layers (the same weights):
the frame-wise layers run on one frame, each recurrent layer's cell runs once
(`cell(x_t, states)`, no time loop), the RAM runs `RecurrentAttention.step`, and the "last step"
crops become the identity. It walks the clip model's functional graph and refuses, with a
`UserError`, any layer that would read across time steps.

What "probabilities after frame t" means: the clip model's output on the clip of frames
[t0..t], where t0 is the frame after the last reset (states set to zeros). With t - t0 = T-1 it
is exactly the exported clip model's output on those T frames (tested to 1e-4 in LiteRT);
earlier in a window it is the same network on a shorter clip. The models were trained on clips
of T frames starting from zero states, so `metadata["reset_every"] = T`: zero the states every
T frames (tumbling windows) to stay on what the model was trained on; an app may choose to run
on without resets, outside that training regime.

Step model (inputs and outputs are named; TFLite signature "serving_default"):
    inputs:  "frame" (1, H, W, C) raw pixels 0..255 (or "rgb" (1, H, W, C) and "flow" (1, H, W, 2)
             for a two-stream model), and one input per recurrent state, "<layer>_<role>",
             (1, h, w, filters): roles "h1" = h(t-1), "c" = c(t-1) (LSTM cells), "h2" = h(t-2)
             (Enhanced cells); the RAM's own trunk states are "ram_h1", "ram_c", "ram_h2".
    outputs: "probabilities" (1, K); for RAM models "attention_map" (1, h, w, 1), M_t in [0, 1];
             and "<state>_next" for every state, to feed into "<state>" with the next frame.

Written to ``exports/<run>/tflite/stream_<quantize>.tflite`` with ``stream_<quantize>.json``.
"""

import functools
import pathlib

import keras
import numpy as np
from keras.src.layers.rnn.conv_lstm import ConvLSTMCell as KerasConvLSTMCell  # the cell of keras.layers.ConvLSTM2D

from fer_keras.errors import UserError
from fer_keras.exports import describe
from fer_keras.exports.tflite import QUANTIZATION_FORMAT
from fer_keras.layers.conv_gru_cell import ConvGRUCell
from fer_keras.layers.conv_lstm_cell import ConvLSTMCell
from fer_keras.layers.enhanced_conv_gru_cell import EnhancedConvGRUCell
from fer_keras.layers.enhanced_conv_lstm_cell import EnhancedConvLSTMCell
from fer_keras.layers.frame_wise import FrameWise
from fer_keras.layers.recurrent_attention import RecurrentAttention

ROLES = {
    "h1": "h(t-1): the layer's output at the previous frame",
    "c": "c(t-1): the LSTM cell state at the previous frame",
    "h2": "h(t-2): the layer's output two frames back (read by the Enhanced cells' temporal gates)",
}
# Layers that act on each frame alone when they meet a per-frame tensor.
_PER_FRAME = (keras.layers.Rescaling, keras.layers.Dropout, keras.layers.ReLU, keras.layers.Activation)
_CROPS = (keras.layers.Cropping1D, keras.layers.Cropping3D)


def state_roles(cell):
    """The names of a cell's states, in its state order."""
    if isinstance(cell, EnhancedConvLSTMCell):
        return ("h1", "c", "h2")
    if isinstance(cell, EnhancedConvGRUCell):
        return ("h1", "h2")
    if isinstance(cell, (ConvLSTMCell, KerasConvLSTMCell)):
        return ("h1", "c")
    if isinstance(cell, ConvGRUCell):
        return ("h1",)
    raise UserError(f"Streaming export does not know the states of cell {type(cell).__name__}.")


class StreamingStep:
    """One time step of a clip model, built from its layers: (frame, states) -> (probabilities, new states).

    Args:
        model: a clip model (functional `keras.Model`, or a `RAMClassifier` around one).

    Call arguments:
        inputs: dict of the frame input(s) (`frame_names`) and every state (`state_specs`),
            each with a leading batch axis.

    Returns:
        A dict: "probabilities" (B, K), "attention_map" (B, h, w, 1) for RAM models, and
        "<state>_next" for every state.

    Example:

    >>> step = StreamingStep(model)                   # a trained convlstm, T = 8
    >>> states = step.initial_states()
    >>> for frame in clip[0]:                         # (T, H, W, C)
    ...     out = step({"frame": frame[None], **states})
    ...     states = step.next_states(out)
    >>> out["probabilities"]                          # == model(clip) after T frames
    """

    def __init__(self, model):
        from fer_keras.models.ram import RAMClassifier

        self.model = model
        self.network = model.network if isinstance(model, RAMClassifier) else model
        if not isinstance(self.network, keras.Model) or not hasattr(self.network, "_run_through_graph"):
            raise UserError(f"{model.name} cannot stream: only functional clip models can be rebuilt one frame at a time.")
        inputs = self.network.inputs
        if any(len(t.shape) != 5 for t in inputs):
            raise UserError(f"{model.name} cannot stream: it is not a clip model (inputs {[tuple(t.shape) for t in inputs]}).")
        self.frame_names = [t.name.split(":")[0] for t in inputs]
        if self.frame_names == ["frames"]:
            self.frame_names = ["frame"]
        self.frame_shapes = {n: tuple(int(d) for d in t.shape[2:]) for n, t in zip(self.frame_names, inputs)}
        self.clip_length = int(inputs[0].shape[1])
        self.state_specs = []  # [{"name", "layer", "role", "shape"}] in graph order
        self._layer_states = {}  # layer name -> its state names, in the cell's order
        for op in self.network.operations:
            if isinstance(op, (keras.layers.RNN, RecurrentAttention)):
                self._add_states(op)
        if not self.state_specs:
            raise UserError(f"{model.name} cannot stream: it has no recurrent layer.")
        self.has_attention = isinstance(model, RAMClassifier)
        self(self.initial_states() | {n: np.zeros((1,) + s, np.float32) for n, s in self.frame_shapes.items()})

    def _add_states(self, op):
        cell = op.cell
        if isinstance(op, keras.layers.RNN) and (op.go_backwards or op.return_state or op.stateful):
            raise UserError(f"{self.model.name} cannot stream: layer {op.name!r} runs backwards or returns states.")
        if getattr(cell, "strides", (1, 1)) not in ((1, 1), 1) or getattr(cell, "padding", "same") != "same":
            raise UserError(f"{self.model.name} cannot stream: the cell of {op.name!r} changes the spatial size.")
        _, _, h, w, _ = op.input.shape  # (B, T, H, W, C); the states keep (H, W)
        shape = (int(h), int(w), int(cell.filters))
        names = []
        for role in state_roles(cell):
            name = f"{op.name}_{role}"
            names.append(name)
            self.state_specs.append({"name": name, "layer": op.name, "role": role, "shape": shape})
        self._layer_states[op.name] = names

    @property
    def state_names(self):
        return [s["name"] for s in self.state_specs]

    @property
    def output_names(self):
        return ["probabilities"] + (["attention_map"] if self.has_attention else []) + [f"{n}_next" for n in self.state_names]

    def initial_states(self, batch_size=1):
        """Zeros for every state: the state before a clip's first frame."""
        return {s["name"]: np.zeros((batch_size,) + s["shape"], np.float32) for s in self.state_specs}

    def next_states(self, outputs):
        """{state: value} to feed with the next frame, from a step's outputs."""
        return {n: outputs[f"{n}_next"] for n in self.state_names}

    def input_signature(self, batch_size=1):
        """{name: tf.TensorSpec} of the frame(s) and the states."""
        import tensorflow as tf

        specs = {n: tf.TensorSpec((batch_size,) + s, tf.float32, name=n) for n, s in self.frame_shapes.items()}
        specs.update({s["name"]: tf.TensorSpec((batch_size,) + s["shape"], tf.float32, name=s["name"]) for s in self.state_specs})
        return specs

    def traced(self):
        """This step as a `tf.function` at batch 1 (fast for many frames; same outputs)."""
        if getattr(self, "_traced", None) is None:
            import tensorflow as tf

            self._traced = tf.function(self.__call__, input_signature=[self.input_signature()])
        return self._traced

    def __call__(self, inputs):
        timed = set()  # ids of the per-frame tensors (those that carry the clip's time axis in the clip model)
        new_states = {}
        frames = [keras.ops.convert_to_tensor(inputs[n], "float32") for n in self.frame_names]  # each (B, H, W, C)
        timed.update(id(f) for f in frames)
        out = self.network._run_through_graph(
            frames, operation_fn=lambda op: functools.partial(self._apply, op, inputs, new_states, timed)
        )
        result = {"probabilities": out["probabilities"] if isinstance(out, dict) else out}
        if self.has_attention:
            result["attention_map"] = out["attention_maps"]  # (B, h, w, 1): M_t
        result.update({f"{n}_next": new_states[n] for n in self.state_names})
        return result

    def _apply(self, op, inputs, new_states, timed, *args, **kwargs):
        """`op` of the clip graph applied to one frame's tensors."""
        kwargs = {k: v for k, v in kwargs.items() if k != "training" and v is not None}
        tensors = [t for t in keras.tree.flatten((args, kwargs)) if keras.ops.is_tensor(t)]
        per_frame = [id(t) in timed for t in tensors]
        if not any(per_frame):  # after the time axis is gone (the head): as in the clip model
            return op(*args, training=False, **kwargs) if isinstance(op, keras.layers.Layer) else op(*args, **kwargs)
        refuse = UserError(
            f"{self.model.name} cannot stream: layer {op.name!r} ({type(op).__name__}) reads across time steps."
        )
        if not all(per_frame) or kwargs:
            raise refuse
        x = args[0]
        if isinstance(op, RecurrentAttention):
            names = self._layer_states[op.name]
            outputs, states = op.step(x, [inputs[n] for n in names], training=False)
            new_states.update(zip(names, states))
            timed.update(id(t) for t in keras.tree.flatten(outputs))
            return outputs
        if isinstance(op, keras.layers.RNN):
            names = self._layer_states[op.name]
            y, states = op.cell(x, [inputs[n] for n in names], training=False)  # one step, no time loop
            new_states.update(zip(names, states))
            if op.return_sequences:
                timed.add(id(y))
            return y  # h_t: the "last" output of the clip model when t = T-1
        if isinstance(op, _CROPS):
            # A crop to the last time step: that step is the current frame, given the clip's
            # one-step time axis so that the head sees the shapes it sees in the clip model.
            time_crop = tuple(op.cropping[0]) if isinstance(op, keras.layers.Cropping3D) else tuple(op.cropping)
            if time_crop != (self.clip_length - 1, 0):
                raise refuse
            return keras.ops.expand_dims(x, 1)  # (B, 1, ...), no longer per-frame
        if isinstance(op, FrameWise):
            y = op.layer(x, training=False)
        elif isinstance(op, _PER_FRAME) or (isinstance(op, keras.layers.Concatenate) and op.axis == -1):
            y = op(*args, training=False)
        else:
            raise refuse
        timed.add(id(y))
        return y


def run_clip(step, clip, states=None, traced=False):
    """Runs `step` over the frames of one clip ((T, H, W, C), or a dict per stream) from `states` (zeros).

    `traced`: run the step as a `tf.function` (batch 1). Returns (outputs of the last frame as
    numpy, [outputs of every frame]).
    """
    call = step.traced() if traced else step
    states = states or step.initial_states()
    clip = clip if isinstance(clip, dict) else {step.frame_names[0]: clip}
    steps = len(next(iter(clip.values())))
    every = []
    for t in range(steps):
        out = call({**{n: v[t][None].astype(np.float32) for n, v in clip.items()}, **states})
        out = {k: np.asarray(v) for k, v in out.items()}
        states = step.next_states(out)
        every.append(out)
    return every[-1], every


class StreamingLiteRT:
    """Runs a streaming .tflite one frame at a time in `ai_edge_litert`, feeding its states back.

    States are kept as floats: an int8 model's state outputs are dequantised with their own
    scale and requantised with the matching input's.

    Example:

    >>> lite = StreamingLiteRT("exports/run/tflite/stream_none.tflite")
    >>> for frame in frames:                 # (H, W, C) raw pixels
    ...     out = lite.step(frame)           # {"probabilities": (K,), "attention_map": ...}
    """

    def __init__(self, path_or_bytes, num_threads=1):
        from fer_keras.exports.tflite import open_signature_runner

        self.interpreter, self.runner = open_signature_runner(path_or_bytes, num_threads)
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()
        self.state_names = [n[: -len("_next")] for n in self.outputs if n.endswith("_next")]
        self.frame_names = [n for n in self.inputs if n not in self.state_names]
        self.reset()

    def reset(self):
        """Zero states: the next frame is the first of a clip."""
        self.states = {n: np.zeros(self.inputs[n]["shape"], np.float32) for n in self.state_names}

    @staticmethod
    def _quantise(x, details):
        from fer_keras.exports.tflite import quantise

        return quantise(x, details)

    @staticmethod
    def _dequantise(y, details):
        from fer_keras.exports.tflite import dequantise

        return dequantise(y, details)

    def step(self, frame):
        """frame: (H, W, C) (with or without the batch axis), or {"rgb": ..., "flow": ...}.

        Returns {"probabilities": (K,), and "attention_map": (h, w, 1) for RAM models}.
        """
        frames = frame if isinstance(frame, dict) else {self.frame_names[0]: frame}
        feed = {n: self._quantise(frames[n], self.inputs[n]) for n in self.frame_names}
        feed.update({n: self._quantise(v, self.inputs[n]) for n, v in self.states.items()})
        out = self.runner(**feed)
        out = {n: self._dequantise(v, self.outputs[n]) for n, v in out.items()}
        self.states = {n: out[f"{n}_next"] for n in self.state_names}
        return {n: v[0] for n, v in out.items() if not n.endswith("_next")}


def lite_clip_probabilities(lite, clip):
    """Probabilities after the last frame of one clip, from zero states."""
    lite.reset()
    clip = clip if isinstance(clip, dict) else {lite.frame_names[0]: clip}
    steps = len(next(iter(clip.values())))
    for t in range(steps):
        out = lite.step({n: v[t] for n, v in clip.items()})
    return out["probabilities"]


def _clips(x):
    """Clips one by one: rows of an array, or dicts of rows for several streams."""
    from fer_keras.exports.tflite import _unbatch

    return _unbatch(x)


def _as_step_clip(step, clip):
    if isinstance(clip, dict):
        return clip
    return {step.frame_names[0]: clip}


# A streaming int8/int16x8 model is calibrated on one (frame, states) pair from each of this many training clips
# (fewer if the training split has fewer: then several steps of each). The states' ranges must cover the subjects
# a phone will see: on econvgru (SynthFER lab capture, fold 0) streaming int16x8 agreed 95.8 % with float when
# calibrated on 200 clips and 98.3 % on 400.
CALIBRATION_CLIPS = 400


def representative_samples(step, clips, limit=200):
    """(frame, states) inputs a phone would feed, from running the Keras step model over `clips`.

    The samples are spread over the clips, one time step from each in turn (t = 0, 1, ..., T-1,
    0, ...), and come back to a clip for another step only when every clip has given one. Taking
    every step of the first clips instead (200 samples = 25 clips of 8 frames) calibrated the state
    ranges on a few subjects: held-out clips then left those ranges and were clipped (econvgru,
    SynthFER lab capture, fold 0: streaming int16x8 agreed 91.6 % with float, 98.3 % spread).
    """
    clips = [_as_step_clip(step, clip) for clip in clips]
    limit = min(limit, len(clips) * step.clip_length)
    call = step.traced()
    samples = []
    for i in range(limit):
        index, lap = i % len(clips), i // len(clips)
        clip, states, chosen = clips[index], step.initial_states(), (index + lap) % step.clip_length
        frames = [{n: v[t][None].astype(np.float32) for n, v in clip.items()} for t in range(chosen + 1)]
        for frame in frames[:-1]:  # the states the frames before the chosen step leave
            states = {k: np.asarray(v) for k, v in step.next_states(call({**frame, **states})).items()}
        samples.append({k: np.asarray(v)[0] for k, v in {**frames[-1], **states}.items()})
    return samples


def parity(model, step, lite, clips):
    """Clip model vs Keras step model vs LiteRT step model after T frames, on every clip."""
    from fer_keras.exports.tflite import agreement

    ref = model.predict(clips, verbose=0, batch_size=16)
    ref = ref["probabilities"] if isinstance(ref, dict) else ref
    keras_step = np.stack([run_clip(step, c, traced=True)[0]["probabilities"][0] for c in _clips(clips)])
    got = np.stack([lite_clip_probabilities(lite, c) for c in _clips(clips)])
    return {
        "samples": int(len(got)),
        "keras_step_max_abs_diff": float(np.max(np.abs(ref - keras_step))),
        "max_abs_diff": float(np.max(np.abs(ref - got))),
        **agreement(ref, got),
    }, ref, got


def export_streaming(run_dir, *, out="exports", quantize="none", float_io=False):
    """Exports a run's clip model as a per-frame step model; returns (path of the .tflite, metadata dict).

    `float_io`: int8/int16x8 with float32 frame, state and output tensors (the ops stay quantised).
    """
    from fer_keras.data.splits import Split
    from fer_keras.exports import tflite
    from fer_keras.models.registry import get_spec
    from fer_keras.training import fit

    run_dir = pathlib.Path(run_dir)
    config, manifest, model = fit.load_run(run_dir, needs_data=describe.TFLITE_NEEDS_DATA)
    base = describe.export_folder(out, run_dir)  # another run's exports there: refused before any work
    if get_spec(config["model"]).kind != "clip":
        raise UserError(f"--streaming applies to clip (video) models; {config['model']} takes still images.")
    step = StreamingStep(model)
    split = Split.from_dict(config["split_subjects"])
    representative = None
    if quantize in ("int8", "int16x8"):
        train_clips, _ = tflite.sample(fit.make_dataset(config, manifest, split, "train", batch_size=32), CALIBRATION_CLIPS)
        representative = representative_samples(step, _clips(train_clips), limit=CALIBRATION_CLIPS)
    flatbuffer = tflite.convert_function(
        model, step, [step.input_signature()], quantize=quantize, representative=representative, float_io=float_io
    )
    lite = StreamingLiteRT(flatbuffer)
    test_x, test_y, test_videos = tflite.sample_videos(
        fit.make_dataset(config, manifest, split, "test", batch_size=32, with_meta=True), tflite.PARITY_SAMPLES,
        max_bytes=tflite.PARITY_BYTES)
    check, ref, got = parity(model, step, lite, test_x)
    check["per_video"] = tflite.video_agreement(ref, got, test_videos)
    keras_acc = float(np.mean(ref.argmax(1) == test_y))
    lite_acc = float(np.mean(got.argmax(1) == test_y))
    check.update(keras_accuracy=keras_acc, tflite_accuracy=lite_acc, accuracy_drop=keras_acc - lite_acc,
                 compared="probabilities after frame T-1 of each clip (from zero states) vs the clip model on the clip",
                 on="held-out " + ("SynthFER" if manifest["dataset"] == "synthfer" else manifest["dataset"]) + " test clips")

    folder = base / "tflite"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"stream_{quantize}{'_float_io' if float_io and quantize in ('int8', 'int16x8') else ''}.tflite"
    metadata = streaming_metadata(step, lite, config=config, manifest=manifest, run=run_dir, quantize=quantize)
    metadata["float_io"] = bool(float_io)
    metadata["parity"] = check
    metadata = describe.write_tflite(path, flatbuffer, metadata)  # the JSON beside it and inside it
    return path, metadata


def streaming_metadata(step, lite, *, config, manifest, run, quantize):
    """What an app needs to run the step model: inputs, states (shapes, initial values, feedback), outputs."""
    from fer_keras.exports import tflite

    def quant(details):
        return [float(v) for v in details["quantization"]] if np.dtype(details["dtype"]) in (np.int8, np.int16) else None

    in_at, out_at, aliases = tflite.tensor_positions(lite.interpreter, lite.runner)
    frames = [
        {"name": n, "position": in_at[n], "shape": [int(v) for v in lite.inputs[n]["shape"]],
         "dtype": str(np.dtype(lite.inputs[n]["dtype"])), "quantization": quant(lite.inputs[n]), "layout": "NHWC",
         **(describe.flow_input() if n == "flow" else {"normalisation": describe.PIXELS})}
        for n in step.frame_names
    ]
    image = next(f for f in frames if f["name"] != "flow")  # the camera frame; two-stream models also take its flow
    # Listed so that copying each state in turn is right: an Enhanced cell's h2_next IS its h1 input tensor (h(t-1)
    # passed through), so h2 is copied before h1 is overwritten.
    layers = list(dict.fromkeys(s["layer"] for s in step.state_specs))
    ordered = sorted(step.state_specs, key=lambda s: (layers.index(s["layer"]), s["role"] != "h2"))
    states = [
        {"name": s["name"], "position": in_at[s["name"]], "layer": s["layer"], "role": s["role"],
         "meaning": ROLES[s["role"]], "shape": [int(v) for v in lite.inputs[s["name"]]["shape"]],
         "dtype": str(np.dtype(lite.inputs[s["name"]]["dtype"])), "quantization": quant(lite.inputs[s["name"]]),
         "initial": "zeros (float 0.0; for int8/int16 the zero point)",
         "feed_back_from": f"{s['name']}_next", "feed_back_position": out_at[f"{s['name']}_next"],
         "feed_back_quantization": quant(lite.outputs[f"{s['name']}_next"]),
         **({"feed_back_is_input": aliases[f"{s['name']}_next"]} if f"{s['name']}_next" in aliases else {})}
        for s in ordered
    ]
    outputs = [{"name": "probabilities", "position": out_at["probabilities"],
                "shape": [int(v) for v in lite.outputs["probabilities"]["shape"]],
                "dtype": str(np.dtype(lite.outputs["probabilities"]["dtype"])), "quantization": quant(lite.outputs["probabilities"]),
                "meaning": "softmax over labels: the clip model's output on the frames since the last reset"}]
    if step.has_attention:
        outputs.append({"name": "attention_map", "position": out_at["attention_map"],
                        "shape": [int(v) for v in lite.outputs["attention_map"]["shape"]],
                        "dtype": str(np.dtype(lite.outputs["attention_map"]["dtype"])), "quantization": quant(lite.outputs["attention_map"]),
                        "meaning": "RAM attention map M_t in [0, 1] over the feature grid (paper 001), for overlays"})
    return {
        "model": config["model"],
        **describe.source(run, manifest),
        "format": "tflite",
        "streaming": True,
        "quantize": quantize,
        "labels": manifest["labels"],
        "signature": "serving_default",
        "frame_inputs": frames,
        "input": image,
        "states": states,
        "outputs": outputs,
        "clip_length": step.clip_length,
        "reset_every": step.clip_length,
        "usage": (
            "Before the first frame set every state input to zeros. For each camera frame: feed the frame"
            + (" and its flow from the previous frame (see the flow input's 'direction': zeros only on a video's first "
               "frame and after a frame without a face, not after the every-T reset)" if len(frames) > 1 else "")
            + " and the states, run, read 'probabilities'" + (" (and 'attention_map')" if step.has_attention else "")
            + ", then copy every '<state>_next' output into "
            "the '<state>' input for the next frame (int8/int16: dequantise with the output's scale and zero point, "
            "requantise with the input's), in the order of 'states' or reading every output before writing any "
            "input: a state marked 'feed_back_is_input' is passed through, its '_next' output is that input tensor. "
            "After frame T-1 of a window the probabilities equal the clip model's on "
            "those T frames. Zero the states every 'reset_every' frames (the clip length the model was trained on). "
            "`fer-keras predict` also zeroes them after a frame without a face (a window is T faces in a row), decides "
            "once per window and shows that decision until the next, smoothed over windows by an exponential moving "
            "average of the probabilities (weight of the past: --smoothing, 0.6 by default)."
        ),
        "quantization_format": QUANTIZATION_FORMAT,
        "positions": tflite.POSITIONS,
        "decision": tflite.DECISION,
        "face_alignment": describe.face_alignment(image["shape"][-2]),
    }
