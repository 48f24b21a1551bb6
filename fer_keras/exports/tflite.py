"""TFLite/LiteRT export with builtin ops only, and a parity check in `ai_edge_litert`.

The model is rebuilt at batch 1 (and, for recurrent models, unrolled over its fixed clip
length: DESIGN.md records that a dynamic-batch ConvLSTM needs Flex TensorList ops), the run's
weights are copied in, and the converter may use TFLITE_BUILTINS only, so a model that would
need SELECT_TF_OPS fails loudly here instead of on a phone.

Written to ``exports/<run>/tflite/model_<quantize>.tflite`` with ``model_<quantize>.json``
beside it: labels, every input's shape, dtype and meaning, normalisation, int8/int16 scales, and
the measured parity. The same JSON is inside the .tflite (`describe.write_tflite`), so a model
copied alone still carries it.

Quantisation: ``none`` (float32), ``float16`` (weights), ``int8`` (full integer, int8 I/O) and
``int16x8`` (int8 weights, int16 activations and I/O; closer to float than int8, see
benchmarks/int8_parity.py; TFLite's quantiser aborts the process on whole unrolled clip models,
so for those it is offered for the ``--streaming`` step model only).

``landmark_arm`` takes two inputs through the signature, ``images`` (1, H, W, C) and
``landmarks`` (1, 68, 2): dlib's 68 points in the aligned crop's pixels (see
`LANDMARKS_DESCRIPTION`). Its int8 model keeps the landmarks input and the heatmap drawing in
float32 (`FLOAT_SCOPES`) and quantises everything after the heatmap; the metadata JSON says so.
Keras' float argmax is traced as a plain ARG_MAX (`builtin_argmax`), or the fusion's agreement
test would need the non-builtin BitwiseAnd.
"""

import contextlib
import pathlib
import tempfile

import keras
import numpy as np
import tensorflow as tf

from fer_keras.errors import UserError
from fer_keras.exports import describe
from fer_keras.native_output import native_stderr_captured

QUANTIZE = ("none", "float16", "int8", "int16x8")
# int8/int16x8 calibration: this many training samples (the issue asks for at least 100), drawn from the
# whole training side (`sample`).
CALIBRATION_SAMPLES = 200
# Parity of every export (clip and streaming alike) is measured on this many held-out test samples (fewer
# if the test split is smaller, or if they would take more than PARITY_BYTES of float32 input), drawn from
# every test subject (`sample`). At 2,000 the 95 % interval of a 97 % top-1 agreement is about +-0.75
# points; at 500 it was +-1.5, too wide to tell 96 from 97 %: one int8 convlstm_ram (SynthFER lab 384,
# fold 0) agreed 97.8 % on 500 clips drawn so and 96.1 % on all 3,656 test clips. Clip models draw whole
# videos up to this many clips (`sample_videos`), and report the per-video decision's agreement as well.
PARITY_SAMPLES = 2000
PARITY_BYTES = 512 * 2**20
# The seed of those draws, so that an export measures the same samples every time.
SAMPLE_SEED = 0
# The top-1 agreement with float an int8 export should reach (issue 6); below it `fer-keras export` says what to try.
AGREEMENT_TARGET = 0.97
# A float top-1 probability at least this is a decision the float model is sure of (`agreement`'s "confident").
CONFIDENT = 0.5
# Layers whose ops stay float32 in an int8 model (their inputs then stay float32 too): landmark_arm's
# heatmap drawing is pixel geometry (an affine fit, rounding to pixels, one-hot scatter); int8 steps
# of ~0.2 px in the landmark coordinates and in the fitted transform would move the drawn dots.
FLOAT_SCOPES = ("landmark_heatmap",)
# int8 exports raise the final logits to this far below the calibration samples' lowest runner-up logit
# (`logit_floor`); e^-4 = 0.018 bounds what a class at the floor gains against the runner-up.
LOGIT_FLOOR_MARGIN = 4.0


def rebuild_for_device(config, manifest, model):
    """A batch-1 (unrolled, for recurrent layers) copy of `model` with the same weights."""
    from fer_keras.training import fit

    device_model = fit.build_model(config, manifest, batch_size=1, unroll=True) if _takes_unroll(config) else fit.build_model(config, manifest, batch_size=1)
    device_model.set_weights(model.get_weights())
    return device_model


def _takes_unroll(config):
    from fer_keras.models.registry import builder_takes

    return builder_takes(config["model"], "unroll")


def convert(model, *, quantize="none", representative=None, float_io=False, output_name="probabilities"):
    """Keras model (fixed batch 1) -> TFLite flatbuffer bytes, builtin ops only.

    The signature's inputs are named as the model's ("images", "frames"; each stream's, "rgb" and
    "flow"; landmark_arm's "images" and "landmarks"), as in the SavedModel, and its one output
    `output_name`.
    """
    names = input_names(model)
    # The same names as the SavedModel's serving_default: "images" or "frames" (or each stream's) in, "probabilities" out.
    signature = [{name: tf.TensorSpec(t.shape, tf.float32, name=name) for name, t in zip(names, model.inputs)}]

    def probabilities(x):  # x: the signature's dict, or (logit_floor's calibration) one-input models' plain tensor
        if isinstance(x, dict) and len(names) == 1:
            x = x[names[0]]
        return {output_name: model(x, training=False)}

    return convert_function(model, probabilities, signature, quantize=quantize, representative=representative,
                            float_io=float_io)


def convert_function(model, fn, input_signature, *, quantize="none", representative=None, float_io=False):
    """`fn` (using `model`'s weights) with a fixed-shape `input_signature` -> TFLite bytes, builtin ops only.

    `input_signature` is a list of one `tf.TensorSpec`, or of one {name: TensorSpec} dict (the
    signature's named inputs); a dict returned by `fn` names the signature's outputs.

    quantize: "none" (float32), "float16" (float16 weights), "int8" (full-integer: int8 weights
    and activations, int8 input and output, calibrated on `representative`, at least 100
    samples), or "int16x8" (int8 weights, int16 activations, int16 input and output: TFLite's
    EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 ops set). `float_io`: with
    int8/int16x8, keep every input and output float32 (the ops are quantised, the model
    quantises its inputs and dequantises its outputs itself). The ops of `FLOAT_SCOPES` layers
    stay float32 under int8, and so does an input that only they read (landmark_arm's landmarks).
    Under int8 the final logits are raised to a floor below the calibration samples' decisions
    (`logit_floor`), so that their int8 step is spent where the top two classes lie.
    """
    if quantize not in QUANTIZE:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE)}. Received: {quantize!r}")
    floor = contextlib.nullcontext() if quantize != "int8" else logit_floor(model, fn, representative)
    # Through a SavedModel: the converter then freezes the weights into constants (a concrete
    # function of a Keras 3 model would keep them as resource variables, READ_VARIABLE ops).
    with builtin_argmax(), floor, tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", fn, input_signature=input_signature)
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        float_scopes = any(layer.name in FLOAT_SCOPES for layer in model._flatten_layers(include_self=False, recursive=True))
        return _run_converter(converter, quantize, representative, float_io=float_io, float_scopes=float_scopes)


def final_classifier(model):
    """The Dense softmax "probabilities" that gives `model`'s output, or None.

    Searched breadth-first through nested models: landmark_arm's network also holds the RGB
    branch's own "probabilities", one model down, whose values feed the fusion.
    """
    level = [model]
    while level:
        for m in level:
            for layer in getattr(m, "layers", []):
                if layer.name == "probabilities" and isinstance(layer, keras.layers.Dense):
                    return layer
        level = [layer for m in level for layer in getattr(m, "layers", []) if isinstance(layer, keras.Model)]
    return None


@contextlib.contextmanager
def logit_floor(model, fn, representative):
    """While an int8 model is converted: the final logits raised to `LOGIT_FLOOR_MARGIN` below the
    lowest runner-up logit of the calibration samples.

    int8 gives the logits one range for every input, and its calibrated minimum is the most
    negative logit of any class (-50 on convlstm_ram, SynthFER lab), far below any decision. The
    top two logits then share a step of 0.3, and where they are closer than that the int8
    probabilities tie and the first class wins. Raised to the floor, the range holds the
    decisions only (the step falls to about 0.1 there). A class at the floor lies at least the
    margin below the runner-up, so the float probabilities move by less than e^-4 of the
    runner-up's. Measured on the six convlstm_ram/econvlstm_ram runs of docs/quantisation.md
    (SynthFER lab, 96 subjects, fold 0, 500 held-out clips): full int8 agreement +0.4 to +6.6
    points, clip and streaming, and a third to three quarters fewer exact ties; none reaches 97 %
    ("A floor under the logits" there).
    """
    layer = final_classifier(model)
    if layer is None or representative is None:
        yield None
        return
    softmax, seen = layer.activation, []

    def recording(y):
        seen.append(y)
        return softmax(y)

    layer.activation = recording
    try:
        traced = tf.function(lambda x: (fn(x), seen[-1])[1])
        logits = np.concatenate([traced(_call_argument(item)).numpy() for item in representative])
    finally:
        layer.activation = softmax
    floor = float(np.sort(logits, axis=-1)[:, -2].min()) - LOGIT_FLOOR_MARGIN
    layer.activation = lambda y: softmax(keras.ops.maximum(y, floor))
    try:
        yield floor
    finally:
        layer.activation = softmax


def _call_argument(item):
    """A representative item ([array] or {name: array}, batch 1) as `fn`'s argument."""
    item = _representative_item(item)
    return {k: tf.constant(v) for k, v in item.items()} if isinstance(item, dict) else tf.constant(item[0])


@contextlib.contextmanager
def builtin_argmax():
    """Traces `keras.ops.argmax`/`argmin` as plain `tf.argmax`/`tf.argmin` (TFLite ARG_MAX/ARG_MIN).

    Keras 3's TensorFlow backend guards float argmax against flush-to-zero with a sign-bit test
    (`bitcast` + `BitwiseAnd`), and BitwiseAnd is no TFLite builtin: a model that takes an argmax
    inside (landmark_arm's fusion: do the two branches agree?) would not convert. The guard only
    changes the answer for a tie between 0.0 and -0.0, which probabilities never hold.
    """
    from keras.src.backend.tensorflow import numpy as tf_numpy

    saved = tf_numpy.argmax, tf_numpy.argmin

    def _plain(tf_fn):
        def fn(x, axis=None, keepdims=False):
            x = tf.convert_to_tensor(x)
            flat = tf.reshape(x, [-1]) if axis is None else x
            y = tf_fn(flat, axis=0 if axis is None else axis, output_type=tf.int32)
            if keepdims:
                y = tf.reshape(y, [1] * len(x.shape)) if axis is None else tf.expand_dims(y, axis)
            return y

        return fn

    tf_numpy.argmax, tf_numpy.argmin = _plain(tf.argmax), _plain(tf.argmin)
    try:
        yield
    finally:
        tf_numpy.argmax, tf_numpy.argmin = saved


def input_names(model):
    """The model's input names ("images", "frames", or "rgb" and "flow")."""
    return [t.name.split(":")[0] for t in model.inputs]


def _run_converter(converter, quantize, representative, float_io=False, float_scopes=False):
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize in ("int8", "int16x8"):
        if representative is None or len(representative) < 100:
            raise UserError(f"{quantize} quantisation needs a representative dataset of at least 100 training samples.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        else:  # an op without a 16x8 kernel (e.g. NEG in the Enhanced cells) stays float32 between (de)quantise ops
            converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                                                   tf.lite.OpsSet.TFLITE_BUILTINS]
        io_type = tf.float32 if float_io else (tf.int8 if quantize == "int8" else tf.int16)
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
        converter.representative_dataset = lambda: (_representative_item(x) for x in representative)
    try:
        # The quantiser prints "fully_quantize: 0, inference_type: 6, ..."; a failure becomes the one-line UserError below.
        with native_stderr_captured(replay_on_error=False):
            if quantize == "int8" and float_scopes:
                return _int8_with_float_scopes(converter)
            return converter.convert()
    except UserError:
        raise
    except Exception as e:  # the converter raises ConverterError and friends, with long logs
        first = next((line for line in str(e).splitlines() if "error" in line.lower()), str(e).splitlines()[0])
        raise UserError(f"TFLite conversion with builtin ops only failed: {first.strip()}") from None


def _int8_with_float_scopes(converter):
    """Full-integer conversion, except the ops of `FLOAT_SCOPES` layers (float32, with their inputs).

    Calibrate, quantise with those ops denylisted (MLIR quantiser), then set the I/O types; an
    input read only by float ops keeps float32 (TFLite's converter leaves such an input at its
    original type).
    """
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python import convert as tfl_convert
    from tensorflow.lite.python import util as tfl_util

    io_in, io_out = converter.inference_input_type, converter.inference_output_type
    converter._experimental_calibrate_only = True  # the documented route of tf.lite.experimental.QuantizationDebugger
    calibrated = converter.convert()
    interpreter = Interpreter(model_content=calibrated)
    names = [d["name"] for d in interpreter.get_tensor_details()]
    denylisted = sorted({names[i] for op in interpreter._get_ops_details() for i in op["outputs"]
                         if any(f"/{scope}" in names[i] for scope in FLOAT_SCOPES)})
    quantised = tfl_convert.mlir_quantize(calibrated, fully_quantize=False, input_data_type=tf.float32,
                                          output_data_type=tf.float32, denylisted_nodes=denylisted or None)
    if io_in == tf.float32 and io_out == tf.float32:
        return quantised
    return tfl_util.modify_model_io_type(quantised, io_in, io_out)


def _representative_item(x):
    if isinstance(x, dict):
        return {name: v[None].astype(np.float32) for name, v in x.items()}
    return [x[None].astype(np.float32)]


def tensor_positions(interpreter, runner):
    """({input name: position}, {output name: position}, {output name: input name}): where the signature's tensors
    lie in the interpreter's plain input and output lists (`get_input_details()`, Swift's `input(at:)`), for
    bindings without signature runners, and which outputs are that very input tensor (a state passed through)."""
    plain_in = [d["index"] for d in interpreter.get_input_details()]
    plain_out = [d["index"] for d in interpreter.get_output_details()]
    inputs = {n: plain_in.index(d["index"]) for n, d in runner.get_input_details().items()}
    outputs = {n: plain_out.index(d["index"]) for n, d in runner.get_output_details().items()}
    by_index = {d["index"]: n for n, d in runner.get_input_details().items()}
    aliases = {n: by_index[d["index"]] for n, d in runner.get_output_details().items() if d["index"] in by_index}
    return inputs, outputs, aliases


def open_signature_runner(path_or_bytes, num_threads=1):
    """(Interpreter, its default signature runner) for a .tflite path or flatbuffer bytes."""
    from ai_edge_litert.interpreter import Interpreter

    kwargs = {"model_content": path_or_bytes} if isinstance(path_or_bytes, bytes) else {"model_path": str(path_or_bytes)}
    interpreter = Interpreter(num_threads=num_threads, **kwargs)
    runner = interpreter.get_signature_runner()
    with native_stderr_captured():  # LiteRT announces its XNNPACK delegate on the first call: make that call here
        runner(**{name: np.zeros(d["shape"], d["dtype"]) for name, d in runner.get_input_details().items()})
    return interpreter, runner


class LiteRTModel:
    """Runs a .tflite model with `ai_edge_litert` on float inputs, (de)quantising int8/int16 I/O.

    Inputs go through the model's signature: one array for a one-input model, or a dict
    {"rgb": ..., "flow": ...} for a two-stream one, {"images": ..., "landmarks": ...} for
    landmark_arm.
    """

    def __init__(self, path_or_bytes, num_threads=1):
        self.interpreter, self.runner = open_signature_runner(path_or_bytes, num_threads)
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
        return quantise(x, details)

    def __call__(self, x):
        """x: float input (with or without the batch axis of 1), or a dict of them -> probabilities (K,)."""
        if len(self.inputs) == 1:
            (name, details), = self.inputs.items()
            feed = {name: self._quantise(x, details)}
        else:
            feed = {name: self._quantise(x[name], details) for name, details in self.inputs.items()}
        (y,) = self.runner(**feed).values() if len(self.outputs) == 1 else [self.runner(**feed)[next(iter(self.outputs))]]
        return dequantise(y, self.output)[0]


def quantise(x, details):
    """Float array -> the input's dtype: int8/int16 with its scale and zero point, else float32."""
    x = np.asarray(x, np.float32).reshape(details["shape"])
    dtype = np.dtype(details["dtype"])
    if dtype in (np.int8, np.int16):
        scale, zero = details["quantization"]
        info = np.iinfo(dtype)
        x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x


def dequantise(y, details):
    """An output of int8/int16 (with its scale and zero point) or float -> float32."""
    if np.dtype(details["dtype"]) in (np.int8, np.int16):
        scale, zero = details["quantization"]
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


def parity(keras_model, lite, samples):
    """Max abs difference of probabilities and top-1 agreement between Keras and LiteRT."""
    return compare(keras_model, lite, samples)[0]


def compare(keras_model, lite, samples):
    """(`parity`'s dict, Keras probabilities, LiteRT probabilities) on `samples`."""
    ref = _probabilities(keras_model, samples)
    got = np.stack([lite(x) for x in _unbatch(samples)])
    return {"samples": int(len(got)), "max_abs_diff": float(np.max(np.abs(ref - got))), **agreement(ref, got)}, ref, got


def agreement(ref, got):
    """Top-1 agreement of `got` with `ref` (N, K), its Wilson 95 % interval, and the exact top-1 ties of `got`.

    A tie (two classes with the same quantised probability; the first index wins an argmax) comes
    from the int8 logits: two logits closer than one int8 step become the same integer before the
    softmax, a resolution limit of the last layer rather than error accumulated before it.

    "confident": the agreement on the samples where `ref` gives its top class at least CONFIDENT, and
    their share. An app that shows "unsure" below that probability sees only those decisions; on the
    video models, 60-76 % of the int8 flips fall on the 10-21 % of held-out clips below it
    (docs/quantisation.md, SynthFER lab 384).
    """
    same = ref.argmax(1) == got.argmax(1)
    top2 = np.sort(got, axis=1)[:, -2:]
    tied = top2[:, 0] == top2[:, 1]
    sure = ref.max(1) >= CONFIDENT
    return {
        "top1_agreement": float(np.mean(same)),
        "top1_agreement_95ci": list(wilson_interval(int(same.sum()), len(same))),
        "top1_ties": int(tied.sum()),
        "disagreements_at_ties": int((tied & ~same).sum()),
        "confident": {
            "threshold": CONFIDENT,
            "share": float(np.mean(sure)),
            "samples": int(sure.sum()),
            "top1_agreement": float(np.mean(same[sure])) if sure.any() else None,
            "top1_agreement_95ci": list(wilson_interval(int(same[sure].sum()), int(sure.sum()))),
        },
    }


def wilson_interval(successes, n, z=1.96):
    """Wilson score interval of a binomial proportion (95 % at z = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # The interval always contains p; min/max absorb the last-bit rounding at p = 0 and p = 1.
    return (float(max(0.0, min(p, centre - half))), float(min(1.0, max(p, centre + half))))


def _unbatch(samples):
    """Samples one by one: rows of an array, or dicts of rows for several inputs."""
    if isinstance(samples, dict):
        count = len(next(iter(samples.values())))
        return [{k: v[i] for k, v in samples.items()} for i in range(count)]
    return list(samples)


def sample(dataset, limit, seed=SAMPLE_SEED, max_bytes=None):
    """`limit` inputs and labels drawn uniformly, without replacement, from a whole batched (x, y, ...) dataset.

    A seeded reservoir sample, returned in the dataset's order: every subject can appear, where the
    first `limit` samples of an ordered split come from a few subjects (the first 500 test clips of
    SynthFER lab 384, fold 0, hold 10 of its 77 test subjects; on seven video runs their int8
    agreement with float was -0.6 to +0.9 points off that of all 3,656 test clips,
    docs/quantisation.md). One pass over the dataset; fewer samples if it holds fewer, or if
    `limit` of them would take more than `max_bytes`.
    """
    rng = np.random.default_rng(seed)
    kept, seen = [], 0
    for batch in dataset:
        x, y = batch[0], batch[1].numpy()
        x = {k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else x.numpy()
        if max_bytes is not None and seen == 0:
            per_sample = sum(v[0].nbytes for v in (x.values() if isinstance(x, dict) else [x]))
            limit = max(1, min(limit, max_bytes // per_sample))
        for i in range(len(y)):
            slot = len(kept) if len(kept) < limit else int(rng.integers(0, seen + 1))
            if slot < limit:
                # Copies: a view would keep its whole batch alive, up to `limit` batches.
                item = (seen, {k: v[i].copy() for k, v in x.items()} if isinstance(x, dict) else x[i].copy(), y[i])
                kept[slot:slot + 1] = [item]
            seen += 1
    if not kept:
        raise ValueError("sample() got an empty dataset")
    kept.sort(key=lambda item: item[0])
    xs, ys = [item[1] for item in kept], np.stack([item[2] for item in kept])
    if isinstance(xs[0], dict):
        return {k: np.stack([x[k] for x in xs]) for k in xs[0]}, ys
    return np.stack(xs), ys


def sample_videos(dataset, limit, seed=SAMPLE_SEED, max_bytes=None):
    """Whole videos drawn at random, with at most `limit` clips in all: (x, y, videos), in the dataset's order.

    Clip models decide per video by a majority vote over its clips (paper 001, the project's video
    score), so measuring that decision takes every clip of a video. Each video gets a seeded random key
    in the order it is met, and the videos with the largest keys are dropped while the clips kept
    exceed `limit` (or `max_bytes` of float32 input): a random subset of whole videos from every
    subject, the same on every export. `dataset` is a batched (x, y, meta) dataset with meta["video"],
    its clips grouped by video (`pipeline.clip_dataset` unshuffled); one pass, holding at most `limit`
    clips plus one video.
    """
    import heapq

    rng = np.random.default_rng(seed)
    heap, kept_clips, order = [], 0, 0  # heap of (-key, order, video, clips): the largest key on top
    current, clips = None, []

    def close_video():
        nonlocal kept_clips, order
        if not clips:
            return
        heapq.heappush(heap, (-rng.random(), order, current, list(clips)))
        kept_clips += len(clips)
        order += 1
        while kept_clips > limit and len(heap) > 1:
            kept_clips -= len(heapq.heappop(heap)[3])

    for batch in dataset:
        x, y, videos = batch[0], batch[1].numpy(), batch[2]["video"].numpy()
        x = {k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else x.numpy()
        if max_bytes is not None and order == 0 and not clips:
            per_sample = sum(v[0].nbytes for v in (x.values() if isinstance(x, dict) else [x]))
            limit = max(1, min(limit, max_bytes // per_sample))
        for i in range(len(y)):
            if videos[i] != current:
                close_video()
                current, clips = videos[i], []
            clips.append(({k: v[i].copy() for k, v in x.items()} if isinstance(x, dict) else x[i].copy(), y[i]))
    close_video()
    if not heap:
        raise ValueError("sample_videos() got an empty dataset")
    kept = sorted(heap, key=lambda item: item[1])
    rows = [(clip, label, video) for _, _, video, video_clips in kept for clip, label in video_clips]
    xs, ys = [r[0] for r in rows], np.stack([r[1] for r in rows])
    video_ids = np.array([r[2] for r in rows])
    if isinstance(xs[0], dict):
        return {k: np.stack([x[k] for x in xs]) for k in xs[0]}, ys, video_ids
    return np.stack(xs), ys, video_ids


def video_agreement(ref, got, videos):
    """Agreement of the per-video decisions, each a majority vote over the video's clips (`majority_vote`).

    A clip model's decision on a video is this vote (paper 001: "the final recognition is the majority
    vote over the video's clips"); `fer-keras evaluate` scores video models so.
    """
    from fer_keras.evaluation.metrics import majority_vote

    _, float_votes, _ = majority_vote(videos, ref)
    _, lite_votes, _ = majority_vote(videos, got)
    same = float_votes == lite_votes
    return {"videos": int(len(same)), "top1_agreement": float(np.mean(same)),
            "top1_agreement_95ci": list(wilson_interval(int(same.sum()), len(same)))}


LANDMARKS_DESCRIPTION = (
    "68 dlib / iBUG 300-W face landmarks (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67), "
    "(x, y) in pixels of the aligned face crop that is fed as 'images' (x to the right, y down, origin at the "
    "crop's top-left pixel centre): dlib's points mapped by the same similarity transform that cut the crop "
    "(fer_keras.data_prep.faces.align_face). The model draws its landmark heatmap from them after its own "
    "eye/mouth alignment (paper 003, sec. 4.4), so any consistent pixel frame gives the same heatmap. "
    "Non-finite (NaN) points count as missing; all missing -> a black heatmap."
)


POSITIONS = ("each tensor's 'position' is its place in the interpreter's plain input or output list "
             "(get_input_details(), Swift's input(at:)), for bindings without signature runners; the names are the "
             "signature's")
DECISION = ("the label is the argmax of the probabilities; where int8 probabilities tie exactly, `fer-keras predict` "
            "takes the first of the tied labels in label order and lists the others as 'tied_with'")
QUANTIZATION_FORMAT = "quantization: [scale, zero_point] of an int8/int16 tensor, real = scale * (q - zero_point); null: float32"


def _quantization(details):
    if np.dtype(details["dtype"]) in (np.int8, np.int16):
        return [float(v) for v in details["quantization"]]
    return None


def input_metadata(name, details, quantize):
    """One input's entry of the metadata JSON: name, shape, dtype, (de)quantisation and meaning."""
    entry = {"name": name, "shape": [int(v) for v in details["shape"]], "dtype": str(np.dtype(details["dtype"])),
             "quantization": _quantization(details)}
    if name == "flow":
        entry.update(describe.flow_input())
    elif name == "landmarks":
        entry.update(layout="(batch, point, xy)", points=68, units=LANDMARKS_DESCRIPTION)
        if quantize == "int8" and entry["dtype"] == "float32":
            entry["why_float"] = (
                "int8 model with float32 landmarks: the heatmap drawing (affine fit, rounding to pixels, one-hot "
                "scatter) stays float32 and the ops after it are int8. Full-int8 landmarks would step by about "
                "0.2 px of the crop (scale over the calibrated range), moving the drawn dots by a pixel or more "
                "at the 128 px heatmap; see benchmarks/int8_parity.py for the measured agreement of both."
            )
    else:
        entry["normalisation"] = describe.PIXELS
    return entry


def export_tflite(run_dir, *, out="exports", quantize="none", float_io=False):
    """Exports a run's model; returns (path of the .tflite, metadata dict).

    `float_io`: int8/int16x8 with float32 inputs and outputs (the ops stay quantised).
    """
    from fer_keras.data.splits import Split
    from fer_keras.training import fit

    run_dir = pathlib.Path(run_dir)
    config, manifest, model = fit.load_run(run_dir, needs_data=describe.TFLITE_NEEDS_DATA)
    base = describe.export_folder(out, run_dir)  # another run's exports there: refused before any work
    if quantize == "int16x8" and len(model.inputs[0].shape) == 5:
        # Measured on convlstm (benchmarks/int8_parity.py): TFLite's int16x8 quantiser aborts the whole
        # process (a C++ abort, nothing to catch) on the unrolled clip model; the step model converts.
        raise UserError("--quantize int16x8 of a whole clip model aborts TFLite's converter; export the per-frame "
                        "step model instead: --streaming --quantize int16x8.")
    if quantize == "int16x8" and any(layer.name in FLOAT_SCOPES for layer in model._flatten_layers(recursive=True)):
        # Measured on landmark_arm (benchmarks/int8_parity.py): the 16x8 quantiser finds no calibrated range for the
        # ArgMax that compares the two branches' predictions, and the float-kept heatmap scope has no 16x8 route.
        raise UserError(f"--quantize int16x8 is not available for {config['model']} (TFLite's 16x8 quantiser cannot "
                        "calibrate its branch-agreement ArgMax); use --quantize int8 or float16.")
    device_model = rebuild_for_device(config, manifest, model)
    split = Split.from_dict(config["split_subjects"])
    representative = None
    if quantize in ("int8", "int16x8"):
        representative, _ = sample(fit.make_dataset(config, manifest, split, "train", batch_size=64), CALIBRATION_SAMPLES)
        representative = _unbatch(representative)
    flatbuffer = convert(device_model, quantize=quantize, representative=representative, float_io=float_io)

    clip_model = len(model.inputs[0].shape) == 5
    test = fit.make_dataset(config, manifest, split, "test", batch_size=64, with_meta=clip_model)
    if clip_model:  # whole videos, so that the per-video decision can be compared too
        test_x, test_y, test_videos = sample_videos(test, PARITY_SAMPLES, max_bytes=PARITY_BYTES)
    else:
        test_x, test_y = sample(test, PARITY_SAMPLES, max_bytes=PARITY_BYTES)
    lite = LiteRTModel(flatbuffer)
    check, ref, got = compare(model, lite, test_x)
    keras_acc = float(np.mean(ref.argmax(1) == test_y))
    lite_acc = float(np.mean(got.argmax(1) == test_y))
    check.update(keras_accuracy=keras_acc, tflite_accuracy=lite_acc, accuracy_drop=keras_acc - lite_acc,
                 on="held-out " + ("SynthFER" if manifest["dataset"] == "synthfer" else manifest["dataset"]) + " samples of the test subjects")
    if clip_model:
        check["per_video"] = video_agreement(ref, got, test_videos)

    folder = base / "tflite"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = quantize + ("_float_io" if float_io and quantize in ("int8", "int16x8") else "")
    path = folder / f"model_{suffix}.tflite"
    in_positions, out_positions, _ = tensor_positions(lite.interpreter, lite.runner)
    inputs = [dict(input_metadata(name, d, quantize), position=in_positions[name]) for name, d in lite.inputs.items()]
    main = next(i for i in inputs if i["name"] not in ("landmarks", "flow"))
    rank = len(main["shape"])
    output_name = next(iter(lite.outputs))
    metadata = {
        "model": config["model"],
        **describe.source(run_dir, manifest),
        "format": "tflite",
        "quantize": quantize,
        "float_io": bool(float_io),
        "labels": manifest["labels"],
        "signature": "serving_default",
        "input": dict(main, layout="NTHWC" if rank == 5 else "NHWC"),
        "inputs": inputs,
        "output": {"name": output_name, "position": out_positions[output_name], "shape": [int(v) for v in lite.output["shape"]],
                   "dtype": str(np.dtype(lite.output["dtype"])), "quantization": _quantization(lite.output),
                   "meaning": "softmax probabilities over labels, in their order"},
        "positions": POSITIONS,
        "decision": DECISION,
        "quantization_format": QUANTIZATION_FORMAT,
        "clip_length": config["clip_length"] if rank == 5 else None,
        "face_alignment": describe.face_alignment(main["shape"][-2]),
        "parity": check,
    }
    # The model and its metadata land together or not at all.
    metadata = describe.write_tflite(path, flatbuffer, metadata)  # the JSON beside it and inside it
    return path, metadata


def _probabilities(model, x):
    y = model.predict(x, verbose=0, batch_size=32)
    return y["probabilities"] if isinstance(y, dict) else y
