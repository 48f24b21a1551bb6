"""Landmark alignment and landmark heatmaps (paper 003, sec. 4.1 and 4.4).

Paper 003 feeds a grey image of the face landmarks ("white dots", Fig. 3(c)) to its
landmark CNN. The landmarks are first mapped into the aligned-face frame with the
affine transform of sec. 4.4: left eye -> (25, 35), right eye -> (75, 35) and mouth
centre (midpoint of the two mouth corners) -> (50, 75) in a 100x100 frame, scaled here
to the output size (x 2.24 for 224 px).

Conventions: points are `(N, 2)` arrays of `(x, y)` pixel coordinates, x to the right
(column), y down (row), pixel centres at integer coordinates. "Left eye" is the eye on
the left of the image (smaller x, the subject's right eye), because it is sent to
x = 25 of 100.

Which points give the eyes and the mouth centre (`EYE_MOUTH_INDICES`):

- 68 points (dlib / iBUG 300-W order, 0-based): left eye = mean of 36-41, right eye =
  mean of 42-47, mouth centre = midpoint of the corners 48 and 54.
- 5 points (RAF-DB manual annotation order: left eye, right eye, nose tip, left mouth
  corner, right mouth corner): left eye = 0, right eye = 1, mouth centre = midpoint of
  3 and 4. Paper 003 computes its transform from these five points.
- 37 points (RAF-DB automatic Face++ landmarks): no built-in indices, because their
  order is not documented in anything this project can check. Do what paper 003 did
  (compute the transform from the 5 manual points, `reference_points=...`, and apply it
  to the 37 points), or pass `indices={"left_eye": [...], "right_eye": [...],
  "mouth": [...]}` yourself.

NumPy functions for data preparation; `draw_heatmap_tf` is the TF-graph version of
`draw_heatmap` for `tf.data` pipelines.
"""

import numpy as np

# Section 4.4 target points in a 100x100 frame: left eye, right eye, mouth centre.
TARGET_POINTS_100 = np.array([[25.0, 35.0], [75.0, 35.0], [50.0, 75.0]])

EYE_MOUTH_INDICES = {
    68: {"left_eye": tuple(range(36, 42)), "right_eye": tuple(range(42, 48)), "mouth": (48, 54)},
    5: {"left_eye": (0,), "right_eye": (1,), "mouth": (3, 4)},
}

HEATMAP_MODES = ("dots", "gaussian")


def _as_points(points, name="points"):
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 2) of (x, y). Received shape {array.shape}")
    return array


def eye_mouth_points(points, indices=None):
    """Left eye, right eye and mouth centre of a landmark set, as a `(3, 2)` array.

    Args:
        points: `(N, 2)` landmarks, `(x, y)`; N = 68 (dlib) or 5 (RAF-DB manual) use
            the built-in `EYE_MOUTH_INDICES`.
        indices: optional dict with keys `left_eye`, `right_eye`, `mouth` (lists of
            point indices; each part is the mean of its points; for `mouth` give the two
            corners). Required for any other N (for example RAF-DB's 37 points).

    Returns:
        `np.ndarray` `(3, 2)`, float64.
    """
    points = _as_points(points)
    if indices is None:
        if points.shape[0] not in EYE_MOUTH_INDICES:
            raise ValueError(
                "No built-in eye/mouth indices for this landmark scheme (68: dlib, 5: "
                "RAF-DB manual). For RAF-DB's 37 points, align with the 5 manual points "
                "(reference_points=...) or pass indices={'left_eye': [...], 'right_eye': "
                f"[...], 'mouth': [...]}}. Received: {points.shape[0]} points"
            )
        indices = EYE_MOUTH_INDICES[points.shape[0]]
    missing = {"left_eye", "right_eye", "mouth"} - set(indices)
    if missing:
        raise ValueError(f"indices lacks {sorted(missing)}. Received: indices={indices}")
    parts = []
    for part in ("left_eye", "right_eye", "mouth"):
        idx = list(indices[part])
        if not idx or min(idx) < -points.shape[0] or max(idx) >= points.shape[0]:
            raise ValueError(
                f"indices[{part!r}] must be non-empty and index {points.shape[0]} points. "
                f"Received: {indices[part]}"
            )
        parts.append(points[idx].mean(axis=0))
    return np.stack(parts)


def target_points(output_size=224):
    """Section 4.4's target points (left eye, right eye, mouth centre) for `output_size`."""
    if output_size <= 0:
        raise ValueError(f"output_size must be > 0. Received: output_size={output_size}")
    return TARGET_POINTS_100 * (output_size / 100.0)


def alignment_matrix(points, output_size=224, indices=None):
    """The 2x3 affine map sending eyes and mouth centre to section 4.4's targets.

    Three point pairs determine an affine map exactly: `A @ [x, y, 1] = target`.

    Args:
        points: `(N, 2)` landmarks used to compute the map (68 or 5 points, or any
            scheme with `indices`).
        output_size: side of the aligned square image in pixels (100 in the paper's
            frame, 224 for the network).
        indices: see `eye_mouth_points`.

    Returns:
        `np.ndarray` `(2, 3)`, float64; usable with `cv2.warpAffine(image, A, (s, s))`.
    """
    src = eye_mouth_points(points, indices)
    dst = target_points(output_size)
    homogeneous = np.concatenate([src, np.ones((3, 1))], axis=1)  # (3, 3), rows [x, y, 1]
    area2 = np.linalg.det(homogeneous)  # twice the signed triangle area
    scale = max(np.ptp(src[:, 0]), np.ptp(src[:, 1]), 1e-12)
    if abs(area2) < 1e-9 * scale * scale:
        raise ValueError(
            "The eyes and the mouth centre are (nearly) collinear; no alignment is "
            f"defined. Received eye/mouth points: {src.tolist()}"
        )
    # homogeneous @ A.T = dst  ->  A.T = solve(homogeneous, dst)
    return np.linalg.solve(homogeneous, dst).T


def apply_affine(points, matrix):
    """Applies a `(2, 3)` affine matrix to `(N, 2)` points."""
    points = _as_points(points)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3). Received shape {matrix.shape}")
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_landmarks(points, reference_points=None, output_size=224, indices=None,
                    return_matrix=False):
    """Maps landmarks into the aligned face frame of paper 003, sec. 4.4.

    Args:
        points: `(N, 2)` landmarks to transform (`(x, y)` in the original image).
        reference_points: landmarks that define the transform; default `points`. For
            RAF-DB: the 5 manual points, while `points` may be the 37 automatic ones.
        output_size: side of the aligned image (224 for the landmark CNN).
        indices: eye/mouth indices into `reference_points` (see `eye_mouth_points`).
        return_matrix: also return the `(2, 3)` matrix.

    Returns:
        `(N, 2)` aligned points (float64), and the matrix if `return_matrix`.

    Example:

    >>> aligned = align_landmarks(landmarks68, output_size=224)
    >>> heatmap = draw_heatmap(aligned, size=224)
    """
    points = _as_points(points)
    if reference_points is None:
        reference = points
    else:
        reference = _as_points(reference_points, "reference_points")
    matrix = alignment_matrix(reference, output_size, indices)
    aligned = apply_affine(points, matrix)
    return (aligned, matrix) if return_matrix else aligned


def _check_draw_args(size, mode, sigma, radius):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be an int >= 1. Received: size={size!r}")
    if mode not in HEATMAP_MODES:
        raise ValueError(f"mode must be one of {HEATMAP_MODES}. Received: mode={mode!r}")
    if mode == "gaussian" and not sigma > 0:
        raise ValueError(f"sigma must be > 0 for mode='gaussian'. Received: sigma={sigma}")
    if mode == "dots" and not radius >= 0:
        raise ValueError(f"radius must be >= 0 for mode='dots'. Received: radius={radius}")


def draw_heatmap(points, size=224, mode="dots", sigma=2.0, radius=1.0):
    """Grey landmark image: white dots or Gaussians on black, float32 `(size, size, 1)`.

    - `mode="dots"` (paper 003, Fig. 3(c)): pixel `(x, y)` is 1 when it lies within
      `radius` of a landmark rounded to the nearest pixel, `(x - round(px))^2 +
      (y - round(py))^2 <= radius^2`; `radius=0` lights one pixel per landmark.
    - `mode="gaussian"`: `max_n exp(-((x - px_n)^2 + (y - py_n)^2) / (2 sigma^2))`, peak 1
      at each landmark (at its nearest pixel when the landmark is between pixels).

    Points outside the image add nothing (or only the part of their dot/Gaussian that
    falls inside); NaN points (missing landmarks) are skipped.

    Args:
        points: `(N, 2)` landmarks, `(x, y)` pixel coordinates in the output image.
        size: side of the square output in pixels.
        mode: "dots" or "gaussian".
        sigma: standard deviation of the Gaussians, pixels.
        radius: radius of the dots, pixels.

    Returns:
        `np.ndarray` float32 `(size, size, 1)` with values in [0, 1].
    """
    _check_draw_args(size, mode, sigma, radius)
    points = _as_points(points)
    points = points[np.isfinite(points).all(axis=1)]
    image = np.zeros((size, size), dtype=np.float32)
    if points.shape[0] == 0:
        return image[..., None]
    coords = np.arange(size, dtype=np.float64)
    if mode == "dots":
        points = np.round(points)
    dx2 = (coords[None, :] - points[:, :1]) ** 2  # (N, size): (x - px)^2 per column
    dy2 = (coords[None, :] - points[:, 1:]) ** 2  # (N, size): (y - py)^2 per row
    d2 = dy2[:, :, None] + dx2[:, None, :]  # (N, size_y, size_x)
    if mode == "dots":
        image = (d2 <= radius * radius).any(axis=0).astype(np.float32)
    else:
        image = np.exp(-d2.min(axis=0) / (2.0 * sigma * sigma)).astype(np.float32)
    return image[..., None]  # (size, size, 1)


def draw_heatmap_tf(points, size=224, mode="dots", sigma=2.0, radius=1.0):
    """TF-graph version of `draw_heatmap` (same maths), for `tf.data.Dataset.map`.

    Args:
        points: `(N, 2)` float tensor of `(x, y)` (N may be dynamic, NaN rows skipped).
        size, mode, sigma, radius: as in `draw_heatmap`; Python values.

    Returns:
        `tf.Tensor` float32 `(size, size, 1)`.
    """
    import tensorflow as tf  # here only: the NumPy functions above serve TF-free worker processes

    _check_draw_args(size, mode, sigma, radius)
    points = tf.convert_to_tensor(points, dtype=tf.float32)
    points = tf.reshape(points, (-1, 2))  # (N, 2)
    finite = tf.reduce_all(tf.math.is_finite(points), axis=1)
    points = tf.boolean_mask(points, finite)
    if mode == "dots":
        points = tf.round(points)
    coords = tf.range(size, dtype=tf.float32)
    dx2 = tf.square(coords[None, :] - points[:, :1])  # (N, size)
    dy2 = tf.square(coords[None, :] - points[:, 1:])  # (N, size)
    d2 = dy2[:, :, None] + dx2[:, None, :]  # (N, size_y, size_x)
    # An empty point set reduces to +inf distance: a black image in both modes.
    min_d2 = tf.reduce_min(tf.concat([d2, tf.fill((1, size, size), np.inf)], axis=0), axis=0)
    if mode == "dots":
        image = tf.cast(min_d2 <= radius * radius, tf.float32)
    else:
        image = tf.exp(-min_d2 / (2.0 * sigma * sigma))
    return image[..., None]  # (size, size, 1)


def landmark_heatmap(points, reference_points=None, size=224, mode="dots", sigma=2.0,
                     radius=1.0, indices=None):
    """Aligns landmarks (sec. 4.4) and draws them: the landmark CNN's input image.

    Args:
        points: `(N, 2)` landmarks in the original image.
        reference_points: landmarks defining the alignment (default `points`).
        size, mode, sigma, radius: see `draw_heatmap`.
        indices: see `eye_mouth_points`.

    Returns:
        float32 `(size, size, 1)`.
    """
    aligned = align_landmarks(points, reference_points, output_size=size, indices=indices)
    return draw_heatmap(aligned, size=size, mode=mode, sigma=sigma, radius=radius)
