"""detect -> align -> model -> labels, for a Keras run folder, a SavedModel or a .tflite file.

One record per face: file, face index, box, landmarks, label, scores. An image where no face
is found is recorded with ``"error": "no face found"`` rather than stopping the batch, and so is
a file that cannot be read as an image (`predict_file`) or a video (`predict_video_file`), with
its own error. Models that do not classify expressions (vae_swap runs and exports) and exports
without fer-keras's metadata are refused with a `UserError` naming the file.

Videos and webcams run a clip model in one of two ways: over a sliding window of the last T
aligned faces (the clip model itself, T times the work per frame), or, with a streaming step
model (a ``stream_*.tflite`` from ``export --streaming``, or a run folder with
``streaming=True``), one frame at a time with the recurrent states carried from frame to frame
and zeroed every T frames (see `fer_keras.exports.streaming`). Either way a decision needs T
consecutive faces: the clip model decides on every frame once its window is full, the step
model once every T faces, when its states hold a whole clip (the frames in between carry its last
decision; `window_frame` says where in its window a frame is), and the first T - 1 faces, and the
first T - 1 after a frame without a face, say "filling the clip window". The step model's
outputs on fewer than T frames are not used: the model was trained on clips of T frames, and on
fewer it is not the clip model. Either way the probabilities are smoothed with an exponential
moving average.

Models that also take face landmarks (``landmark_arm``: inputs ``images`` and ``landmarks``) get
dlib's 68 points mapped into the aligned crop by the same similarity transform that cut it
(`fer_keras.data_prep.faces.align_face`), for a run folder, a SavedModel and a .tflite alike.
With ``detect="none"`` there are no landmarks, and such a model is refused with a `UserError`
rather than run on a black heatmap: the whole image could be given to dlib's shape predictor as
the face box, but its 68 points are only trustworthy inside a box from dlib's own detector.

Two-stream models (``--streams rgb,flow``: inputs ``rgb`` and ``flow``) run on videos and webcams
only. Each frame's flow is the Farneback flow from the previous frame's aligned crop, as training
computed it (`fer_keras.inference.flow_stream.FlowStream`), clipped to the bound of the run's data
(manifest ``flow_bound``) or of the export's metadata, else `DEFAULT_FLOW_BOUND`. As in training,
where a clip starting at frame s > 0 slices the sequence's flow, a clip window or a stream after a
reset keeps the flow from the frame before it; zeros only for a video's first frame and the first
after a frame without a face.
"""

import os
import pathlib

import cv2
import numpy as np

from fer_keras import atomic
from fer_keras.data.records import DEFAULT_FLOW_BOUND
from fer_keras.data_prep import faces
from fer_keras.errors import UserError, first_line
from fer_keras.exports import describe
from fer_keras.json_files import read_json_object
from fer_keras.inference.flow_stream import FlowStream
from fer_keras.inference.images import VIDEO_SUFFIXES, read_rgb

# dlib HOG+SVM scores below this are dropped: weak boxes on textured backgrounds (the astronaut's
# suit scores 0.12 at upsample 1, her face 1.16) would otherwise be reported as faces.
DETECTION_MIN_SCORE = 0.3
# The inputs of a two-stream clip model: the aligned crops, and their optical flow that predict computes.
TWO_STREAMS = ("rgb", "flow")


class _UnreadableVideo(UserError):
    """A file that is not a readable video: the end of `predict_video`, one record of `predict_video_file`."""


def _flow_bound(meta):
    """The flow bound a run's manifest or an export's metadata records, else the default training uses."""
    bound = meta.get("flow_bound")
    return float(bound) if bound else DEFAULT_FLOW_BOUND


def _as_float(x):
    """float32 array(s): one array, or a dict of them (two-stream inputs)."""
    if isinstance(x, dict):
        return {k: np.asarray(v, np.float32) for k, v in x.items()}
    return np.asarray(x, np.float32)


class _KerasBackend:
    def __init__(self, run_dir):
        from fer_keras.training import fit

        config, manifest, model = fit.load_run(run_dir, needs_data=False)
        self.model = model
        self.labels = manifest["labels"]
        names = [t.name.split(":")[0] for t in model.inputs]
        self.takes_landmarks = "landmarks" in names
        image_input = model.inputs[names.index("images")] if self.takes_landmarks else model.inputs[0]
        self.input_shape = tuple(int(d) for d in image_input.shape[1:])
        if len(model.inputs) > 1 and not self.takes_landmarks:
            self.input_shape = {n: tuple(int(d) for d in t.shape[1:]) for n, t in zip(names, model.inputs)}
        self.flow_bound = _flow_bound(manifest)
        self.source = f"keras run {run_dir}"
        import tensorflow as tf

        # traced once per batch size: an eager call per frame took 7x the SavedModel's time on a RAM clip model
        self._fn = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def __call__(self, batch, landmarks=None):
        x = _as_float(batch)
        if self.takes_landmarks:
            x = {"images": x, "landmarks": np.asarray(landmarks, np.float32)}
        out = self._fn(x)
        return np.asarray(out["probabilities"] if isinstance(out, dict) else out)


class _SavedModelBackend:
    def __init__(self, path):
        from fer_keras.exports import savedmodel

        info_path = path / "assets.extra" / "fer_keras.json"
        if not info_path.exists():
            raise UserError(f"SavedModel {str(path)!r} was not exported by fer-keras (no assets.extra/fer_keras.json).")
        info = read_json_object(info_path)
        _check_classifier_metadata(f"SavedModel {str(path)!r}", info, info_path, ("input", "labels", "input_shape"))
        self.fn = savedmodel.serving_default(path, "predict calls")
        self.input_name = info["input"]
        self.labels = info["labels"]
        self.input_shape = tuple(info["input_shape"][1:])
        signature = self.fn.structured_input_signature[1]
        self.takes_landmarks = "landmarks" in signature
        if "flow" in signature:  # two streams: "input" names the frames, rgb
            self.input_shape = {self.input_name: self.input_shape, "flow": tuple(int(d) for d in signature["flow"].shape[1:])}
        self.flow_bound = _flow_bound(info)
        self.source = f"SavedModel {path}"

    def __call__(self, batch, landmarks=None):
        import tensorflow as tf

        if isinstance(batch, dict):
            return self.fn(**{k: tf.constant(v) for k, v in _as_float(batch).items()})["probabilities"].numpy()
        feed = {self.input_name: tf.constant(np.asarray(batch, np.float32))}
        if self.takes_landmarks:
            feed["landmarks"] = tf.constant(np.asarray(landmarks, np.float32))
        return self.fn(**feed)["probabilities"].numpy()


class _StreamingBackend:
    """A per-frame step model: `step(crop)` -> probabilities, states carried, `reset()` zeroes them."""

    streaming = True

    def _check_streams(self, frame_names):
        if len(frame_names) != 1 and sorted(frame_names) != sorted(TWO_STREAMS):
            raise UserError(f"{self.source} takes {', '.join(frame_names)} per frame; predict supports one RGB/grey "
                            f"stream, or rgb and flow.")

    @staticmethod
    def _frame(x):
        """A frame's input(s) with the batch axis: one array, or {"rgb": ..., "flow": ...}."""
        if isinstance(x, dict):
            return {k: v[None] for k, v in _as_float(x).items()}
        return np.asarray(x, np.float32)[None]


class _KerasStreamingBackend(_StreamingBackend):
    def __init__(self, run_dir):
        import tensorflow as tf

        from fer_keras.exports.streaming import StreamingStep
        from fer_keras.training import fit

        config, manifest, model = fit.load_run(run_dir, needs_data=False)
        self.source = f"keras run {run_dir} (streaming)"
        self.step_model = StreamingStep(model)
        self._check_streams(self.step_model.frame_names)
        self.labels = manifest["labels"]
        self.frame_name = self.step_model.frame_names[0]
        self.input_shape = self.step_model.frame_shapes[self.frame_name]
        if len(self.step_model.frame_names) > 1:
            self.input_shape = dict(self.step_model.frame_shapes)
        self.flow_bound = _flow_bound(manifest)
        self.reset_every = self.step_model.clip_length
        self._fn = tf.function(self.step_model, input_signature=[self.step_model.input_signature()])
        self.reset()

    def reset(self):
        self.states = self.step_model.initial_states()

    def step(self, crop):
        frame = self._frame(crop)
        out = self._fn({**(frame if isinstance(frame, dict) else {self.frame_name: frame}), **self.states})
        self.states = {n: v for n, v in self.step_model.next_states(out).items()}
        return np.asarray(out["probabilities"])[0]


class _TFLiteStreamingBackend(_StreamingBackend):
    def __init__(self, path, meta, origin):
        from fer_keras.exports.streaming import StreamingLiteRT

        self.source = f"TFLite {path} (streaming)"
        _check_classifier_metadata(f"TFLite {str(path)!r}", meta, origin, ("labels", "input"))
        if not isinstance(meta["input"], dict) or "shape" not in meta["input"]:
            raise UserError(f"{origin} gives no input shape ('input': {{'shape': ...}}), which predict needs.")
        self.lite = _open_tflite(StreamingLiteRT, path)
        self._check_streams(self.lite.frame_names)
        self.labels = meta["labels"]
        self.input_shape = tuple(meta["input"]["shape"][1:])
        if len(self.lite.frame_names) > 1:
            self.input_shape = {n: tuple(int(d) for d in self.lite.inputs[n]["shape"][1:]) for n in self.lite.frame_names}
        self.flow_bound = _flow_bound(meta)
        self.reset_every = meta.get("reset_every") or 0

    def reset(self):
        self.lite.reset()

    def step(self, crop):
        return self.lite.step(crop)["probabilities"]


class _TFLiteBackend:
    def __init__(self, path, meta, origin):
        from fer_keras.exports.tflite import LiteRTModel

        _check_classifier_metadata(f"TFLite {str(path)!r}", meta, origin, ("labels",))
        self.lite = _open_tflite(LiteRTModel, path)
        self.labels = meta["labels"]
        self.takes_landmarks = "landmarks" in self.lite.inputs
        image_name = "images" if self.takes_landmarks else next(iter(self.lite.inputs))
        self.image_name = image_name
        self.input_shape = tuple(int(d) for d in self.lite.inputs[image_name]["shape"][1:])
        if len(self.lite.inputs) > 1 and not self.takes_landmarks:
            # several streams: {name: (N, ...)}; two-stream clip models are taken, others refused by Predictor
            self.input_shape = {n: s[1:] for n, s in self.lite.input_shape.items()}
        self.flow_bound = _flow_bound(meta)
        self.source = f"TFLite {path}"

    def __call__(self, batch, landmarks=None):
        if isinstance(batch, dict):
            batch = _as_float(batch)
            return np.stack([self.lite({k: v[i] for k, v in batch.items()}) for i in range(len(next(iter(batch.values()))))])
        if self.takes_landmarks:
            return np.stack([self.lite({"images": x, "landmarks": p}) for x, p in zip(batch, landmarks)])
        return np.stack([self.lite(x) for x in batch])


def _open_tflite(cls, path):
    """`cls(path)` (LiteRTModel, StreamingLiteRT); one line naming the file when LiteRT cannot read it."""
    try:
        return cls(path)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"{path} is not a valid TFLite model ({first_line(e)}).") from None


def _family(model_name):
    """The registered family of `model_name`, or None for a name this fer-keras does not know."""
    from fer_keras.models.registry import get_spec

    try:
        return get_spec(str(model_name)).family
    except UserError:
        return None


def _vae_swap_refusal(what, model, run=None):
    """The one line for a vae_swap-family model or export, which encodes faces but gives no expression label."""
    name = "" if model == "vae_swap" else f" ({model})"
    of_run = f", exported from run {run!r}" if run else ""
    return (f"{what} is a vae_swap identity/expression VAE{name}{of_run}: it encodes faces and does not classify "
            f"expressions, so predict does not apply. Predict with a classifier run or its export (`fer-keras models` "
            f"lists them); for a vae_swap run use `fer-keras evaluate RUN` (k-means++ on its expression codes) or "
            f"`fer-keras generate swap|interpolate RUN`.")


def _check_classifier_metadata(what, meta, meta_path, keys):
    """UserError unless the export's metadata `meta` (from `meta_path`) holds every one of `keys`."""
    missing = [k for k in keys if k not in meta]
    if not missing:
        return
    if _family(meta.get("model")) == "vae_swap":
        raise UserError(_vae_swap_refusal(what, meta["model"], meta.get("run")))
    raise UserError(f"{meta_path} has no {', '.join(repr(k) for k in missing)}: {what} is not a fer-keras classifier "
                    f"export, and predict needs its labels and input shape.")


def load_backend(path, streaming=False):
    """The model at `path`; `streaming`: a run folder's clip model as a per-frame step model.

    A .tflite whose metadata says "streaming" is always a step model. A model that does not
    classify expressions (a vae_swap run or export), an export without the metadata predict
    needs, and a file that is not a model are refused with a `UserError` naming the file.
    """
    path = pathlib.Path(path)
    if path.is_file() and path.suffix == ".tflite":
        meta, origin = describe.read_tflite_metadata(path)  # the JSON beside it, or the one inside it
        if origin is None:
            from fer_keras.exports.tflite import LiteRTModel

            _open_tflite(LiteRTModel, path)  # a damaged file is said to be that, before what it lacks
            raise UserError(f"{str(path)!r} has no {path.with_suffix('.json').name} beside it and no fer-keras metadata "
                            f"inside it (labels and input size travel in them): not a fer-keras export, or one made "
                            f"before exports carried it inside; copy its .json beside it.")
        if meta.get("streaming"):
            backend = _TFLiteStreamingBackend(path, meta, origin)
        elif streaming:
            raise UserError(f"{str(path)!r} is not a streaming model: export it with --streaming.")
        else:
            backend = _TFLiteBackend(path, meta, origin)
        describe.check_stamp(path, meta)  # after the file opened as a model: a truncated one is said to be that
        return backend
    if path.is_dir() and (path / "config.json").exists():
        from fer_keras.training import fit

        model = fit.read_run_config(path)["model"]
        if _family(model) == "vae_swap":  # checked before the model is loaded: it has no classifier to run
            raise UserError(_vae_swap_refusal(f"Run {str(path)!r}", model))
        return _KerasStreamingBackend(path) if streaming else _KerasBackend(path)
    if streaming:
        raise UserError(f"--streaming needs a run folder or a streaming .tflite. Received: {str(path)!r}")
    if path.is_dir() and (path / "saved_model.pb").exists():
        return _SavedModelBackend(path)
    if path.is_dir():
        versions = sorted((int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists()))
        if versions:
            return _SavedModelBackend(path / str(versions[-1]))
    raise UserError(
        f"{str(path)!r} is not a run folder, a SavedModel (or its versioned base folder) or a .tflite file."
    )


def _prepare(crop, size, channels):
    """uint8 RGB crop -> float32 (size, size, channels) raw pixels, as every model takes them."""
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    if channels == 1 and crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return crop.reshape(size, size, channels).astype(np.float32)


def _follow(found, followed, min_overlap=0.3):
    """The face of `found` (largest first) that goes on the one at box `followed`: the one overlapping it most, by at
    least `min_overlap` (intersection over union); a lone face wherever it is (the same person, moved or zoomed, as
    at a low frame rate); None when several faces are there and none is where the followed one was (another
    person); the largest without a face followed."""
    if not found:
        return None
    if followed is None or found[0][0] is None:  # the first face, or --detect none (the whole image)
        return found[0]

    def overlap(box):
        x0, y0 = max(box[0], followed[0]), max(box[1], followed[1])
        x1, y1 = min(box[2], followed[2]), min(box[3], followed[3])
        inter = max(0, x1 - x0) * max(0, y1 - y0)
        union = (box[2] - box[0]) * (box[3] - box[1]) + (followed[2] - followed[0]) * (followed[3] - followed[1]) - inter
        return inter / union if union > 0 else 0.0

    best = max(found, key=lambda f: overlap(f[0]))
    if overlap(best[0]) >= min_overlap or len(found) == 1:
        return best
    return None


def crop_faces(image, size, channels, detect="dlib", crop_landmarks=False):
    """[(box, landmarks, crop)] of RGB uint8 `image`: every dlib face aligned, or (detect="none") the whole image.

    `landmarks` are dlib's 68 points (x, y) in `image`. `crop_landmarks`: 4-tuples
    (box, landmarks, crop, crop_points), `crop_points` (68, 2) float32 the same points in the
    crop's pixels (mapped by the similarity transform that cut the crop); with detect="none"
    there are none (None).
    """
    if detect == "none":
        whole = _prepare(faces.to_rgb(image), size, channels)
        return [(None, None, whole, None) if crop_landmarks else (None, None, whole)]
    found = []
    for box in faces.detect_faces(image, min_score=DETECTION_MIN_SCORE):
        points = faces.face_landmarks(image, box)
        crop, crop_points = faces.align_face(image, points, size, channels=3)
        # align_face warps straight to size x size, so _prepare does not rescale and crop_points hold.
        crop = _prepare(crop, size, channels)
        found.append((box, points, crop, crop_points) if crop_landmarks else (box, points, crop))
    return found


class Predictor:
    """Predicts the expression of every face in an image.

    Args:
        model_path: run folder, SavedModel folder (or TF Serving base folder), or .tflite file.
        detect: "dlib" (HOG detection + 68 landmarks + alignment) or "none" (the whole image is
            one already-aligned face crop, resized to the model input).
        min_confidence: above 0, every record says whether its top score (smoothed, for video) is
            below this ("unsure": true), and annotations draw such a face as unsure.
    """

    def __init__(self, model_path, detect="dlib", streaming=False, min_confidence=0.0):
        if detect not in ("dlib", "none"):
            raise UserError(f"--detect must be 'dlib' or 'none'. Received: {detect!r}")
        if not 0.0 <= min_confidence <= 1.0:
            raise UserError(f"--min-confidence must be between 0 and 1. Received: {min_confidence}")
        self.min_confidence = min_confidence
        self.backend = load_backend(model_path, streaming=streaming)
        self.streaming = getattr(self.backend, "streaming", False)
        shape = self.backend.input_shape
        # Two-stream models: the flow is computed from the crops (FlowStream), clipped to this bound.
        self.flow_bound = None
        if isinstance(shape, dict) and sorted(shape) == sorted(TWO_STREAMS):
            self.flow_bound = self.backend.flow_bound
            shape = shape["rgb"]
        if isinstance(shape, dict) or len(shape) not in (3, 4):
            raise UserError(f"{self.backend.source} takes inputs {shape}; predict supports one RGB/grey stream, or rgb and flow.")
        self.clip_length = shape[0] if len(shape) == 4 else None
        self.size, _, self.channels = shape[-3:]
        self.detect = detect
        self.takes_landmarks = getattr(self.backend, "takes_landmarks", False)
        if self.takes_landmarks and detect == "none":
            raise UserError(f"{self.backend.source} also takes face landmarks, which --detect none does not give: use --detect dlib.")

    def _faces(self, image):
        """[(box, landmarks, crop, crop_points)] of RGB uint8 `image`: every detected face, or the whole image."""
        return crop_faces(image, self.size, self.channels, self.detect, crop_landmarks=True)

    def _record(self, name, index, box, points, p, **extra):
        k = int(np.argmax(p))
        return {
            "file": name,
            **extra,
            "face": index,
            "box": [int(v) for v in box] if box is not None else None,
            "landmarks": np.round(points, 1).tolist() if points is not None else None,
            "label": self.backend.labels[k],
            "score": round(float(p[k]), 4),
            "scores": {label: round(float(v), 4) for label, v in zip(self.backend.labels, p)},
            **({"unsure": bool(p[k] < self.min_confidence)} if self.min_confidence > 0 else {}),
            # an int8 model rounds close probabilities to the same value; argmax then takes the first label
            **({"tied_with": tied} if (tied := [self.backend.labels[j] for j in range(len(p)) if j != k and p[j] == p[k]]) else {}),
        }

    def predict_video(self, path, *, annotate=None, smoothing=0.6, progress=None, on_record=None):
        """One record per frame for one face of a video: the largest at the start, then the one that overlaps it
        from frame to frame, or the only one (`_follow`); where several are and none overlaps, the largest starts
        a window of its own.

        Still models score each frame; clip models score the last `clip_length` aligned faces
        (the first frames wait until the window is full); a streaming model scores every frame
        with a face, carrying its states and zeroing them every `reset_every` (T) faces.
        Probabilities are smoothed over time with an exponential moving average (weight
        `smoothing` on the past). `annotate`: write an .mp4 with the box and the smoothed label
        drawn on every frame. `on_record`: each record goes to it as soon as it is made, and none is
        kept (an hour of video is not held in memory, and the records printed before a Ctrl-C stay
        on stdout; an --out file is still written whole or not at all); else they are returned.
        """
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise _UnreadableVideo(f"Cannot read video {str(path)!r}: not a video or an unsupported codec.")
        stated = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        kept, made = [], [0]

        def emit(record):
            made[0] += 1
            (on_record or kept.append)(record)

        self._run_capture(capture, str(path), annotate=annotate, smoothing=smoothing, progress=progress, on_record=emit)
        if not made[0]:
            raise _UnreadableVideo(f"Cannot read video {str(path)!r}: it holds no readable frame.")
        if stated - made[0] >= max(2, 0.05 * stated):  # containers state the count roughly: only a clear shortfall
            emit({"file": str(path), "frame": None, "face": None,
                  "error": f"Video {str(path)!r} ends after {made[0]} of the {stated} frames it states: truncated or damaged."})
        return kept

    def predict_video_file(self, path, *, annotate=None, smoothing=0.6, progress=None, on_record=None):
        """`predict_video`, but a file that is not a readable video gives one record with its error, as
        `predict_file` does for an image, so that one bad file in a batch does not end the batch."""
        try:
            return self.predict_video(path, annotate=annotate, smoothing=smoothing, progress=progress, on_record=on_record)
        except _UnreadableVideo as e:
            record = {"file": str(path), "face": None, "error": str(e)}
            if on_record is None:
                return [record]
            on_record(record)
            return []

    def predict_frames(self, name, paths, *, annotate=None, smoothing=0.6, progress=None, on_record=None):
        """`predict_video` on a sequence given as image files in order (a CK+ or MUG frame folder).

        Records carry `frame` (the index in `paths`) and `frame_file`, and their box and landmarks in the pixels of
        that file (a frame of another size than the first is resized to it to be read). A frame that cannot be read
        ends the sequence with one record of its error, after the records of the frames before it,
        as a truncated video does, and removes its half-written `annotate` video.
        """
        kept = []
        emit = on_record or kept.append
        files = _FrameFiles(paths)
        try:
            self._run_capture(
                files, name, annotate=annotate, smoothing=smoothing, progress=progress,
                on_record=lambda r: emit(dict(files.in_file_pixels(r), frame_file=pathlib.Path(paths[r["frame"]]).name)))
        except _UnreadableVideo as e:
            emit({"file": name, "face": None, "error": str(e)})
        return kept

    def predict_webcam(self, index, *, annotate=None, smoothing=0.6, show=False, max_frames=None, progress=None,
                       on_record=None):
        """Live: frames of webcam `index` (OpenCV VideoCapture) until Ctrl-C, 'q' in the window, or `max_frames`.

        Each frame's record goes to `on_record` as soon as it is made; none is kept (a session
        can run for hours). Returns the number of frames and of faces.
        """
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our one-line error says it instead
        try:
            capture = cv2.VideoCapture(int(index))
            opened = capture.isOpened()
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not opened:
            capture.release()
            raise UserError(f"Cannot open webcam {index}")
        counts = {"frames": 0, "faces": 0}

        def count(record):
            counts["frames"] += 1
            counts["faces"] += "label" in record
            if on_record is not None:
                on_record(record)

        self._run_capture(capture, f"webcam:{index}", annotate=annotate, smoothing=smoothing, progress=progress,
                          live=True, show=show, max_frames=max_frames, on_record=count)
        return counts["frames"], counts["faces"]

    def _run_capture(self, capture, name, *, annotate, smoothing, progress, live=False, show=False, max_frames=None,
                     on_record=None):
        """Records of one face followed through the frames of `capture` (see `predict_video`).

        Live (a webcam), each record goes to `on_record` and none is kept, and Ctrl-C ends the
        session normally. The annotated video is written under a temporary name and becomes
        `annotate` only when the capture has been read to its end (or a live session stopped).
        """
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        writer, records, window, smoothed, decided, index = None, [], [], None, None, 0
        since_reset, followed = 0, None  # followed: the box of the face the window holds
        flows = FlowStream(self.flow_bound) if self.flow_bound is not None else None
        reset_every = self.backend.reset_every if self.streaming else 0
        if self.streaming:
            self.backend.reset()
        target = None if annotate is None else pathlib.Path(annotate)
        partial = None if target is None else target.with_name(f"{target.stem}.partial{target.suffix}")
        finished = False
        try:
            while max_frames is None or index < max_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                found = self._faces(rgb)
                record = {"file": name, "frame": index, "face": None, "error": "no face found"}
                face = _follow(found, followed)
                if face is None:
                    # No face, or the face followed gone and others there: a clip is T faces of one person in a row,
                    # so the next face starts a new window, unsmoothed, its states and its flow from zeros.
                    window, decided, since_reset, smoothed = [], None, 0, None
                    if self.streaming:
                        self.backend.reset()
                    if flows is not None:
                        flows.reset()
                    face = found[0] if found else None
                followed = face[0] if face else None
                if found:
                    box, points, crop, crop_points = face
                    if self.streaming:
                        if reset_every and since_reset == reset_every:
                            self.backend.reset()
                            since_reset = 0
                        p = self.backend.step(crop if flows is None else {"rgb": crop, "flow": flows(crop)})
                        since_reset += 1
                        if not reset_every or since_reset == reset_every:  # the states hold a whole clip
                            smoothed = p if smoothed is None else smoothing * smoothed + (1 - smoothing) * p
                            decided = smoothed
                        if decided is None:
                            record = {"file": name, "frame": index, "face": 0, "error": "filling the clip window",
                                      "window_frame": since_reset - 1}
                        else:
                            record = self._record(name, 0, box, points, decided, frame=index,
                                                  window_frame=since_reset - 1)
                    else:
                        window = (window + [(crop, flows(crop) if flows is not None else None)])[-(self.clip_length or 1):]
                        if self.clip_length is None or len(window) == self.clip_length:
                            batch = self._clip_batch(window) if self.clip_length else crop[None]
                            if self.takes_landmarks:  # a still model: one crop and its points
                                p = self.backend(batch, landmarks=crop_points[None])[0]
                            else:
                                p = self.backend(batch)[0]
                            smoothed = p if smoothed is None else smoothing * smoothed + (1 - smoothing) * p
                            record = self._record(name, 0, box, points, smoothed, frame=index)
                        else:
                            record = {"file": name, "frame": index, "face": 0, "error": "filling the clip window"}
                if on_record is not None:
                    on_record(record)
                else:
                    records.append(record)
                if annotate is not None or show:
                    drawn = _annotated(frame, record)
                    if annotate is not None:
                        if writer is None:
                            writer = _video_writer(partial, fps, frame.shape[1], frame.shape[0])
                        writer.write(drawn)
                    if show:
                        cv2.imshow(f"fer-keras {name}", drawn)
                        if cv2.waitKey(1) & 0xFF == ord("q"):
                            break
                if progress is not None:
                    progress.update(1)
                index += 1
            finished = True
        except KeyboardInterrupt:
            if not live:
                raise
            finished = True
        finally:
            capture.release()
            if writer is not None:
                writer.release()
                if finished:
                    partial.replace(target)
                else:
                    partial.unlink(missing_ok=True)
            if show:
                cv2.destroyAllWindows()
        return records

    def _clip_batch(self, window):
        """(1, T, ...) clip of the window's crops; with flow {"rgb", "flow"}.

        The window's first flow is the one from the frame before the window, as in training, where a
        clip starting at frame s > 0 slices the sequence's flow (`pipeline.clip_dataset`).
        """
        rgb = np.stack([crop for crop, _ in window])[None]  # (1, T, S, S, C)
        if self.flow_bound is None:
            return rgb
        return {"rgb": rgb, "flow": np.stack([f for _, f in window])[None]}  # (1, T, S, S, 2)

    def check_images(self):
        """A UserError when this model cannot score a still image (video models), before any work."""
        if self.flow_bound is not None:
            raise UserError(f"{self.backend.source} is a two-stream model (rgb and optical flow): it needs a video, "
                            f"as one image has no motion (a folder of one sequence's frames: --frames).")
        if self.clip_length or self.streaming:
            what = "is a streaming (per-frame) video model" if self.streaming else f"takes clips of {self.clip_length} frames"
            raise UserError(f"{self.backend.source} {what}; give it a video, or a folder of one sequence's frames with --frames.")

    def predict_image(self, image, name=""):
        """Records for each face of RGB uint8 `image`."""
        self.check_images()
        faces_in = self._faces(image)
        if not faces_in:
            return [{"file": name, "face": None, "error": "no face found"}]
        crops = np.stack([f[2] for f in faces_in])
        if self.takes_landmarks:
            probabilities = self.backend(crops, landmarks=np.stack([f[3] for f in faces_in]))
        else:
            probabilities = self.backend(crops)
        return [self._record(name, i, box, points, p) for i, ((box, points, _, _), p) in enumerate(zip(faces_in, probabilities))]

    def predict_file(self, path):
        try:
            image = read_rgb(path)
        except UserError as e:
            return [{"file": str(path), "face": None, "error": str(e)}]
        return self.predict_image(image, name=str(path))


class _FrameFiles:
    """A `cv2.VideoCapture` look-alike over image files, so that `Predictor._run_capture` reads a frame folder.

    Frames of another size than the first are resized to it (a video has one frame size).
    """

    FPS = 10.0  # of an annotated video; image files state none

    def __init__(self, paths):
        self.paths, self.index, self.shape = list(paths), 0, None
        self.scales = {}  # frame index -> (x, y) factors from the resized frame back to its file's pixels

    def read(self):
        if self.index >= len(self.paths):
            return False, None
        path = self.paths[self.index]
        try:
            frame = cv2.cvtColor(read_rgb(path), cv2.COLOR_RGB2BGR)
        except UserError:
            raise _UnreadableVideo(f"Cannot read frame {str(path)!r}: not an image, or corrupt or truncated.") from None
        if self.shape is None:
            self.shape = frame.shape[:2]
        elif frame.shape[:2] != self.shape:
            self.scales[self.index] = (frame.shape[1] / self.shape[1], frame.shape[0] / self.shape[0])
            frame = cv2.resize(frame, (self.shape[1], self.shape[0]), interpolation=cv2.INTER_AREA)
        self.index += 1
        return True, frame

    def in_file_pixels(self, record):
        """`record` with its box and landmarks in the pixels of its frame's file (a frame of another size than the
        first was resized to it for the sequence)."""
        scale = self.scales.get(record.get("frame"))
        if scale is None or not record.get("box"):
            return record
        sx, sy = scale
        x0, y0, x1, y1 = record["box"]
        box = [int(round(x0 * sx)), int(round(y0 * sy)), int(round(x1 * sx)), int(round(y1 * sy))]
        points = record.get("landmarks")
        points = [[round(x * sx, 1), round(y * sy, 1)] for x, y in points] if points else points
        return dict(record, box=box, landmarks=points)

    def get(self, prop):
        return self.FPS if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


def video_frame_count(path):
    """The number of frames the container of the video at `path` states: None when it states none, 0 when it cannot be opened."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return 0
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return count if count > 0 else None


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def check_annotate(annotate, files=None):
    """Whether --annotate `annotate` is one video file (else a folder), checked before any work; `files`: None for a webcam.

    An .mp4 or .avi name is for a single video input (or a webcam); anything else, or a folder
    that exists, is a folder for one annotated file per input. A UserError says when `annotate`
    cannot be what the inputs need, so that nothing is created or half-written.
    """
    path = pathlib.Path(annotate)
    video_name = path.suffix.lower() in (".mp4", ".avi")
    if files is None:
        if not video_name or path.is_dir():
            raise UserError(f"--annotate with --webcam is an .mp4 or .avi file to write. Received: {str(path)!r}")
        one_video = True
    else:
        one_video = video_name and not path.is_dir() and len(files) == 1 and files[0].suffix.lower() in VIDEO_SUFFIXES
        if video_name and not one_video and not path.is_dir():
            videos = sum(1 for f in files if f.suffix.lower() in VIDEO_SUFFIXES)
            sequences = sum(1 for f in files if f.is_dir())  # frame folders (--frames)
            kinds = [_count(len(files) - videos - sequences, "image"), _count(videos, "video")]
            kinds += [_count(sequences, "frame sequence")] if sequences else []
            raise UserError(f"--annotate {str(path)!r} names a video file, which is for a single video input only; for "
                            f"{_count(len(files), 'input')} ({', '.join(kinds)}) give a folder.")
        if not one_video and path.exists() and not path.is_dir():
            raise UserError(f"--annotate {str(path)!r} is a file; give a folder (or an .mp4 for a single video).")
    atomic.nearest_folder(path, "--annotate")
    return one_video


def annotation_targets(annotate, inputs, files, sequences):
    """{file or sequence name: the annotated image or video to write} for --annotate, checked before any work.

    One file per input in the folder `annotate` (an .mp4 per video or frame sequence, a .png per
    image), named after the input (``photo.png``, ``clip.mp4``); inputs whose names would meet
    (``a/x.jpg`` and ``b/x.png``, ``clip.mp4`` and ``clip.avi``) are named by their path instead
    (``a_x.jpg.png``). With a single video or sequence and an .mp4/.avi name, that file. A
    UserError, before anything is written, when a target would overwrite an input, or when the
    folder lies in an input folder, where the next run would read the annotations as inputs.
    """
    from fer_keras.names import safe_name

    path = pathlib.Path(annotate)
    single = (len(sequences) == 1 and not files and path.suffix.lower() in (".mp4", ".avi") and not path.is_dir())
    single = single or check_annotate(annotate, files + [folder for _, folder, _ in sequences])
    if single:
        key = files[0] if files else sequences[0][0]
        targets = {key: path}
    else:
        wanted = {f: f"{f.stem}{'.mp4' if f.suffix.lower() in VIDEO_SUFFIXES else '.png'}" for f in files}
        wanted.update({name: f"{safe_name(name, 'sequence')}.mp4" for name, _, _ in sequences})
        sources = {f: f for f in files} | {name: folder for name, folder, _ in sequences}
        taken = {}
        for key, name in wanted.items():
            taken.setdefault(name, []).append(key)
        for name, keys in taken.items():
            if len(keys) > 1:  # the same name for several inputs: their paths from where they part
                base = pathlib.Path(os.path.commonpath([str(sources[k].absolute()) for k in keys]))
                for key in keys:
                    relative = sources[key].absolute().relative_to(base) if sources[key].absolute() != base else sources[key].name
                    wanted[key] = f"{safe_name(str(relative), 'input')}{pathlib.Path(name).suffix}"
        targets = {key: path / name for key, name in wanted.items()}
    inputs_resolved = {f.resolve() for f in files} | {p for _, folder, frames in sequences for p in map(pathlib.Path.resolve, frames)}
    for target in targets.values():
        if target.resolve() in inputs_resolved:
            raise UserError(f"--annotate would overwrite the input {str(target)!r}; give another folder or file name.")
    folder = (path.parent if single else path).resolve()
    for item in inputs:
        given = pathlib.Path(item).resolve()
        if given.is_dir() and (folder == given or given in folder.parents):
            raise UserError(f"--annotate {str(path)!r} lies in the input folder {str(item)!r}, where the annotations would "
                            "be read as inputs next time; give a folder outside it.")
    return targets


def _video_writer(path, fps, width, height):
    path = pathlib.Path(path)
    if path.suffix.lower() not in (".mp4", ".avi"):
        raise UserError(f"--annotate for a video must end in .mp4 or .avi. Received: {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix.lower() == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    if not writer.isOpened():
        raise UserError(f"Cannot write video {path} (no encoder for {path.suffix}).")
    return writer


def _annotated(frame, record):
    """BGR frame with the face box and label drawn."""
    frame = frame.copy()
    text = f"{record['label']} {record['score']:.2f}" if "label" in record else record.get("error", "")
    if record.get("unsure"):
        text = f"unsure ({text})"
    if record.get("box"):
        x0, y0, x1, y1 = record["box"]
        cv2.rectangle(frame, (x0, y0), (x1, y1), (0, 220, 0), 2)
        origin = (x0, max(y0 - 6, 12))
    else:
        origin = (6, 18)
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 220, 0), 1, cv2.LINE_AA)
    return frame


def annotate_image(path, records, out_path):
    """Writes `path` with every face's box and label drawn (records from `predict_file`); None for an unreadable file.

    Written under a temporary name and renamed, so that an interrupted run leaves no half-written image.
    """
    try:
        image = cv2.cvtColor(read_rgb(path), cv2.COLOR_RGB2BGR)
    except UserError:
        return None
    for record in records:
        if "label" in record:
            image = _annotated(image, record)
    out_path = pathlib.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f"{out_path.stem}.partial{out_path.suffix}")
    if not cv2.imwrite(str(partial), image):
        partial.unlink(missing_ok=True)
        raise UserError(f"Cannot write {str(out_path)!r}.")
    partial.replace(out_path)
    return out_path
