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
        if len(self.backend.input_shape) != 3:
            raise UserError(
                f"{self.backend.source} takes clips of frames {self.backend.input_shape}; predict on images needs a still model."
            )
        self.size, _, self.channels = self.backend.input_shape
        self.detect = detect

    def _prepare(self, crop):
        crop = cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_AREA)
        if self.channels == 1 and crop.ndim == 3:
            crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        return crop.reshape(self.size, self.size, self.channels).astype(np.float32)

    def predict_image(self, image, name=""):
        """Records for each face of RGB uint8 `image`."""
        if self.detect == "none":
            faces_in = [(None, None, self._prepare(faces.to_rgb(image)))]
        else:
            faces_in = []
            for box in faces.detect_faces(image):
                points = faces.face_landmarks(image, box)
                crop, _ = faces.align_face(image, points, self.size, channels=3)
                faces_in.append((box, points, self._prepare(crop)))
        if not faces_in:
            return [{"file": name, "face": None, "error": "no face found"}]
        probabilities = self.backend(np.stack([f[2] for f in faces_in]))
        records = []
        for i, ((box, points, _), p) in enumerate(zip(faces_in, probabilities)):
            k = int(np.argmax(p))
            records.append({
                "file": name,
                "face": i,
                "box": [int(v) for v in box] if box is not None else None,
                "landmarks": np.round(points, 1).tolist() if points is not None else None,
                "label": self.backend.labels[k],
                "score": round(float(p[k]), 4),
                "scores": {label: round(float(v), 4) for label, v in zip(self.backend.labels, p)},
            })
        return records

    def predict_file(self, path):
        try:
            image = read_rgb(path)
        except UserError as e:
            return [{"file": str(path), "face": None, "error": str(e)}]
        return self.predict_image(image, name=str(path))
