"""dlib face detection (HOG), 68 landmarks, and similarity alignment to a model's input.

The 68-point predictor is the iBUG 300-W model shipped in the `face_recognition_models`
package (licence: non-commercial research use). It is located with `importlib.util.find_spec`
rather than imported, because that package imports pkg_resources on import.

Alignment maps the centre of each eye and the mouth centre onto a canonical template (paper 003
section 4.4: eyes at (25, 35) and (75, 35), mouth at (50, 75) in a 100 x 100 frame, scaled to
the output size) with a similarity transform (rotation, uniform scale, translation), so faces
are not sheared.
"""

import functools
import importlib.util
import pathlib

import cv2
import numpy as np

from fer_keras.errors import UserError

TEMPLATE = np.array([[25.0, 35.0], [75.0, 35.0], [50.0, 75.0]], np.float32) / 100.0  # right eye (image left), left eye, mouth


def predictor_path():
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("The package face_recognition_models is not installed; it ships dlib's 68-point model.")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.exists():
        raise UserError(f"dlib's 68-point model is missing at {path}.")
    return path


@functools.lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path()))


def to_rgb(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return image[..., :3]


def detect_faces(image, upsample=1, min_score=0.0):
    """uint8 RGB or grey image -> list of boxes (x0, y0, x1, y1), largest first.

    `min_score` drops detections whose HOG+SVM score is at or below it (dlib's own cut is 0).
    With upsample 1, weak false boxes appear on textured backgrounds: on skimage's astronaut
    photo the face scores 1.16 and a box on her suit 0.12.
    """
    detector, _ = _dlib_models()
    rects, scores, _ = detector.run(np.ascontiguousarray(to_rgb(image)), upsample, min_score)
    boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r, score in zip(rects, scores) if score > min_score]
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))


def face_landmarks(image, box):
    """68 iBUG landmarks (68, 2) float32 (x, y) of the face in `box`."""
    import dlib

    _, predictor = _dlib_models()
    shape = predictor(np.ascontiguousarray(to_rgb(image)), dlib.rectangle(*[int(v) for v in box]))
    return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


def anchor_points(landmarks68):
    """(3, 2): centre of the subject's right eye (36-41), left eye (42-47), mouth (48-59)."""
    p = np.asarray(landmarks68, np.float32)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[48:60].mean(0)])


def similarity_transform(source, target):
    """Least-squares similarity (rotation, uniform scale, translation) mapping `source` onto `target`.

    Umeyama (1991), closed form; every point counts, so the result does not depend on which
    points a robust estimator happens to pick. Returns a 2x3 matrix.
    """
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    variance = (s**2).sum() / len(s)
    if variance < 1e-12:
        raise UserError("Cannot align the face: its landmarks are degenerate.")
    u, d, vt = np.linalg.svd(t.T @ s / len(s))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(d) @ sign) / variance
    translation = mu_t - scale * rotation @ mu_s
    return np.hstack([scale * rotation, translation[:, None]]).astype(np.float32)


def alignment_matrix(landmarks68, size):
    """2x3 similarity transform from image coordinates to the aligned `size` x `size` crop."""
    return similarity_transform(anchor_points(landmarks68), TEMPLATE * size)


def align_face(image, landmarks68, size, channels=3):
    """Aligned uint8 crop (size, size, channels) and the landmarks mapped into it."""
    matrix = alignment_matrix(landmarks68, size)
    crop = cv2.warpAffine(to_rgb(image), matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if channels == 1:
        crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None]
    points = np.asarray(landmarks68, np.float32) @ matrix[:, :2].T + matrix[:, 2]
    return crop, points.astype(np.float32)
