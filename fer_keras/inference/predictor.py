"""detect -> align -> model -> labels, for a Keras run folder, a SavedModel or a .tflite file.

One record per face: file, face index, box, landmarks, label, scores. An image where no face
is found is recorded with ``"error": "no face found"`` rather than stopping the batch.
"""

import json
import pathlib

import cv2
import numpy as np

from fer_keras.data_prep import faces
from fer_keras.errors import UserError
from fer_keras.inference.images import read_rgb


class _KerasBackend:
    def __init__(self, run_dir):
        from fer_keras.training import fit

        config, manifest, model = fit.load_run(run_dir)
        self.model = model
        self.labels = manifest["labels"]
        self.input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        self.source = f"keras run {run_dir}"

    def __call__(self, batch):
        out = self.model(np.asarray(batch, np.float32), training=False)
        return np.asarray(out["probabilities"] if isinstance(out, dict) else out)


class _SavedModelBackend:
    def __init__(self, path):
        import tensorflow as tf

        info_path = path / "assets.extra" / "fer_keras.json"
        if not info_path.exists():
            raise UserError(f"SavedModel {str(path)!r} was not exported by fer-keras (no assets.extra/fer_keras.json).")
        info = json.loads(info_path.read_text())
        self.fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        self.input_name = info["input"]
        self.labels = info["labels"]
        self.input_shape = tuple(info["input_shape"][1:])
        self.source = f"SavedModel {path}"

    def __call__(self, batch):
        import tensorflow as tf

        return self.fn(**{self.input_name: tf.constant(np.asarray(batch, np.float32))})["probabilities"].numpy()


class _TFLiteBackend:
    def __init__(self, path):
        from fer_keras.exports.tflite import LiteRTModel

        meta_path = path.with_suffix(".json")
        if not meta_path.exists():
            raise UserError(f"{str(path)!r} has no {meta_path.name} beside it (labels and input size travel in it).")
        meta = json.loads(meta_path.read_text())
        self.lite = LiteRTModel(path)
        self.labels = meta["labels"]
        self.input_shape = tuple(meta["input"]["shape"][1:])
        self.source = f"TFLite {path}"

    def __call__(self, batch):
        return np.stack([self.lite(x) for x in batch])


def load_backend(path):
    path = pathlib.Path(path)
    if path.is_file() and path.suffix == ".tflite":
        return _TFLiteBackend(path)
    if path.is_dir() and (path / "config.json").exists():
        return _KerasBackend(path)
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


def crop_faces(image, size, channels, detect="dlib"):
    """[(box, landmarks, crop)] of RGB uint8 `image`: every dlib face aligned, or (detect="none") the whole image."""
    if detect == "none":
        return [(None, None, _prepare(faces.to_rgb(image), size, channels))]
    found = []
    for box in faces.detect_faces(image):
        points = faces.face_landmarks(image, box)
        crop, _ = faces.align_face(image, points, size, channels=3)
        found.append((box, points, _prepare(crop, size, channels)))
    return found


class Predictor:
    """Predicts the expression of every face in an image.

    Args:
        model_path: run folder, SavedModel folder (or TF Serving base folder), or .tflite file.
        detect: "dlib" (HOG detection + 68 landmarks + alignment) or "none" (the whole image is
            one already-aligned face crop, resized to the model input).
    """

    def __init__(self, model_path, detect="dlib"):
        if detect not in ("dlib", "none"):
            raise UserError(f"--detect must be 'dlib' or 'none'. Received: {detect!r}")
        self.backend = load_backend(model_path)
        shape = self.backend.input_shape
        if isinstance(shape, dict) or len(shape) not in (3, 4):
            raise UserError(f"{self.backend.source} takes inputs {shape}; predict supports one RGB/grey stream.")
        self.clip_length = shape[0] if len(shape) == 4 else None
        self.size, _, self.channels = shape[-3:]
        self.detect = detect

    def _faces(self, image):
        """[(box, landmarks, crop)] of RGB uint8 `image`: every detected face, or the whole image."""
        return crop_faces(image, self.size, self.channels, self.detect)

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
        }

    def predict_video(self, path, *, annotate=None, smoothing=0.6, progress=None):
        """One record per frame for the largest face of a video.

        Still models score each frame; clip models score the last `clip_length` aligned faces
        (the first frames wait until the window is full). Probabilities are smoothed over time
        with an exponential moving average (weight `smoothing` on the past). `annotate`: write an
        .mp4 with the box and the smoothed label drawn on every frame.
        """
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise UserError(f"Cannot read video {str(path)!r}: not a video or an unsupported codec.")
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        writer, records, window, smoothed, index = None, [], [], None, 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                found = self._faces(rgb)
                record = {"file": str(path), "frame": index, "face": None, "error": "no face found"}
                if found:
                    box, points, crop = found[0]
                    window = (window + [crop])[-(self.clip_length or 1):]
                    if self.clip_length is None or len(window) == self.clip_length:
                        batch = np.stack(window)[None] if self.clip_length else crop[None]
                        p = self.backend(batch)[0]
                        smoothed = p if smoothed is None else smoothing * smoothed + (1 - smoothing) * p
                        record = self._record(str(path), 0, box, points, smoothed, frame=index)
                    else:
                        record = {"file": str(path), "frame": index, "face": 0, "error": "filling the clip window"}
                records.append(record)
                if annotate is not None:
                    if writer is None:
                        writer = _video_writer(annotate, fps, frame.shape[1], frame.shape[0])
                    writer.write(_annotated(frame, record))
                if progress is not None:
                    progress.update(1)
                index += 1
        finally:
            capture.release()
            if writer is not None:
                writer.release()
        if index == 0:
            raise UserError(f"Cannot read video {str(path)!r}: it holds no readable frame.")
        return records

    def predict_image(self, image, name=""):
        """Records for each face of RGB uint8 `image`."""
        if self.clip_length:
            raise UserError(f"{self.backend.source} takes clips of {self.clip_length} frames; give it a video.")
        faces_in = self._faces(image)
        if not faces_in:
            return [{"file": name, "face": None, "error": "no face found"}]
        probabilities = self.backend(np.stack([f[2] for f in faces_in]))
        return [self._record(name, i, box, points, p) for i, ((box, points, _), p) in enumerate(zip(faces_in, probabilities))]

    def predict_file(self, path):
        try:
            image = read_rgb(path)
        except UserError as e:
            return [{"file": str(path), "face": None, "error": str(e)}]
        return self.predict_image(image, name=str(path))


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
    if record.get("box"):
        x0, y0, x1, y1 = record["box"]
        cv2.rectangle(frame, (x0, y0), (x1, y1), (0, 220, 0), 2)
        origin = (x0, max(y0 - 6, 12))
    else:
        origin = (6, 18)
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 220, 0), 1, cv2.LINE_AA)
    return frame


def annotate_image(path, records, out_path):
    """Writes `path` with every face's box and label drawn (records from `predict_file`)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    for record in records:
        if "label" in record:
            image = _annotated(image, record)
    out_path = pathlib.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_path), image)
    return out_path
