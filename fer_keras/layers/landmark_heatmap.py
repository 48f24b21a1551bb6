"""LandmarkHeatmap: aligned face landmarks -> grey heatmap image, inside the model (paper 003)."""

import math

import keras
import numpy as np
import tensorflow as tf

from fer_keras.data.heatmaps import EYE_MOUTH_INDICES, HEATMAP_MODES, TARGET_POINTS_100

# Below this |det| (relative to the squared extent of the three points) the eyes and the mouth
# centre are taken as collinear (e.g. the all-zero landmarks of a record without any): black image.
_DEGENERATE = 1e-6
_FAR = -1e9  # log-domain "no point here" for the Gaussian max-filter


@keras.saving.register_keras_serializable(package="fer_keras")
class LandmarkHeatmap(keras.layers.Layer):
    """Draws face landmarks as a grey heatmap after the sec. 4.4 alignment, with TF ops only.

    The graph version of `fer_keras.data.heatmaps.landmark_heatmap`, so that a model can take
    the raw landmarks as an input and export/predict get the drawing for free:

    1. Alignment (paper 003, sec. 4.4): the affine map `A` sending the left eye, the right eye
       and the mouth centre to `(25, 35)`, `(75, 35)`, `(50, 75)` of a 100x100 frame, scaled to
       `size` px. With `u_i = p_i - p_0`, `v_i = q_i - q_0` (source and target points), the
       linear part is `L = [v_1 v_2] [u_1 u_2]^-1` and the translation `t = q_0 - L p_0`;
       every landmark becomes `L p + t`. An affine map is fixed by three point pairs, so the
       frame the landmarks come in (original photo, aligned crop, any resolution) does not
       change the result.
    2. Drawing (Fig. 3(c), "white dots"): each aligned point is rounded to the nearest pixel
       and scattered as a one-hot impulse (two one-hot vectors and a batched outer product).
       `mode="dots"`: a disc of radius `radius` around it (a 0/1 convolution, then > 0), so
       pixel `(x, y)` is 1 when `(x - round(px))^2 + (y - round(py))^2 <= radius^2`, exactly
       as `draw_heatmap(mode="dots")`. `mode="gaussian"`: a grey-scale dilation (max filter)
       with the kernel `-d^2 / (2 sigma^2)`, then `exp`: `max_n exp(-d_n^2 / (2 sigma^2))`,
       with the points rounded to pixels and each Gaussian cut at `ceil(3 sigma)` px (the NumPy
       `draw_heatmap` uses unrounded points and no cut).

    Points that are not finite are skipped. A sample whose eye/mouth points are not finite or
    (nearly) collinear (for example the all-zero landmarks that records without landmarks
    carry) gives a black image instead of NaNs. Points that land outside the image add only
    the part of their dot that falls inside.

    Args:
        size: int >= 1, side of the square heatmap (224 in paper 003, Table 1).
        mode: "dots" (paper 003) or "gaussian".
        radius: float >= 0, dot radius in pixels (`mode="dots"`).
        sigma: float > 0, Gaussian standard deviation in pixels (`mode="gaussian"`).
        align: bool. True: the sec. 4.4 alignment. False: the points are already heatmap
            pixel coordinates and are drawn as given.
        indices: None (the built-in eye/mouth indices for 68 dlib or 5 RAF-DB points), or a
            dict `{"left_eye": [...], "right_eye": [...], "mouth": [...]}` of point indices.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `(B, N, 2)` landmarks `(x, y)` in pixels, x to the right, y down.

    Input shape:
        `(batch, N, 2)`, static N.

    Output shape:
        `(batch, size, size, 1)` float32 in [0, 1].

    Example:

    >>> heatmap = LandmarkHeatmap(size=224)
    >>> heatmap(landmarks68).shape      # landmarks68: (B, 68, 2) dlib points
    (B, 224, 224, 1)

    References:
        Paper 003 (Kanamori et al.), sec. 4.1 (landmark heatmap image), sec. 4.4 (alignment to
        (25, 35), (75, 35), (50, 75)), Fig. 3(c).
    """

    def __init__(self, size=224, mode="dots", radius=1.0, sigma=2.0, align=True, indices=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be an int >= 1. Received: size={size!r}")
        if mode not in HEATMAP_MODES:
            raise ValueError(f"mode must be one of {HEATMAP_MODES}. Received: mode={mode!r}")
        if not radius >= 0:
            raise ValueError(f"radius must be >= 0. Received: radius={radius!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0. Received: sigma={sigma!r}")
        if indices is not None:
            missing = {"left_eye", "right_eye", "mouth"} - set(indices)
            if missing or any(not list(indices[k]) for k in ("left_eye", "right_eye", "mouth")):
                raise ValueError(
                    "indices must map 'left_eye', 'right_eye' and 'mouth' to non-empty lists of "
                    f"point indices. Received: indices={indices!r}"
                )
            indices = {k: [int(i) for i in indices[k]] for k in ("left_eye", "right_eye", "mouth")}
        self.size = int(size)
        self.mode = mode
        self.radius = float(radius)
        self.sigma = float(sigma)
        self.align = bool(align)
        self.indices = indices
        # Half-width of the drawing kernel: every pixel a point can light lies within it.
        self.reach = int(math.floor(self.radius)) if mode == "dots" else int(math.ceil(3.0 * self.sigma))
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape):
        num_points = input_shape[1]
        if num_points is None or input_shape[2] != 2:
            raise ValueError(f"LandmarkHeatmap takes (B, N, 2) points with a static N. Received: input_shape={input_shape}")
        if self.align:
            indices = self.indices or EYE_MOUTH_INDICES.get(num_points)
            if indices is None:
                raise ValueError(
                    f"No built-in eye/mouth indices for {num_points} landmarks (68: dlib, 5: RAF-DB manual); "
                    "pass indices={'left_eye': [...], 'right_eye': [...], 'mouth': [...]}. "
                    f"Received: input_shape={input_shape}"
                )
            for part in ("left_eye", "right_eye", "mouth"):
                if min(indices[part]) < 0 or max(indices[part]) >= num_points:
                    raise ValueError(f"indices[{part!r}] must index {num_points} points. Received: {list(indices[part])}")
            # (3, N) averaging matrix: row k is the mean of part k's points.
            parts = np.zeros((3, num_points), np.float32)
            for row, part in enumerate(("left_eye", "right_eye", "mouth")):
                parts[row, list(indices[part])] = 1.0 / len(indices[part])
            self._parts = parts
        r = self.reach
        offsets = np.arange(-r, r + 1, dtype=np.float32)
        d2 = offsets[:, None] ** 2 + offsets[None, :] ** 2  # (2r+1, 2r+1)
        if self.mode == "dots":
            self._kernel = (d2 <= self.radius * self.radius).astype(np.float32)[:, :, None, None]  # (k, k, 1, 1)
        else:
            self._kernel = (-d2 / (2.0 * self.sigma * self.sigma)).astype(np.float32)[:, :, None]  # (k, k, 1)
        self.built = True

    def alignment(self, points):
        """`(L, t, valid)`: linear part `(B, 2, 2)`, translation `(B, 2)` and `(B,)` bool of the sec. 4.4 map."""
        points = tf.cast(points, tf.float32)
        src = tf.einsum("kn,bnc->bkc", self._parts, tf.where(tf.math.is_finite(points), points, 0.0))  # (B, 3, 2)
        finite = tf.reduce_all(tf.math.is_finite(tf.einsum("kn,bnc->bkc", self._parts, points)), axis=(1, 2))
        dst = tf.constant(TARGET_POINTS_100 * (self.size / 100.0), tf.float32)  # (3, 2)
        u1, u2 = src[:, 1] - src[:, 0], src[:, 2] - src[:, 0]  # (B, 2) each
        v1, v2 = dst[1] - dst[0], dst[2] - dst[0]  # (2,) each
        det = u1[:, 0] * u2[:, 1] - u2[:, 0] * u1[:, 1]  # (B,)
        extent = tf.maximum(tf.reduce_max(tf.abs(tf.stack([u1, u2], axis=1)), axis=(1, 2)), 1e-12)
        valid = tf.logical_and(finite, tf.abs(det) > _DEGENERATE * extent * extent)  # not `&`: TF lowers it to BitwiseAnd, a Flex op in TFLite
        safe_det = tf.where(valid, det, 1.0)
        # [u1 u2]^-1 = [[u2y, -u2x], [-u1y, u1x]] / det
        inv = tf.stack(
            [tf.stack([u2[:, 1], -u2[:, 0]], axis=-1), tf.stack([-u1[:, 1], u1[:, 0]], axis=-1)], axis=1
        ) / safe_det[:, None, None]  # (B, 2, 2)
        v = tf.stack([v1, v2], axis=1)  # (2, 2): columns v1, v2
        linear = tf.einsum("ij,bjk->bik", v, inv)  # (B, 2, 2)
        translation = dst[0][None, :] - tf.einsum("bij,bj->bi", linear, src[:, 0])  # (B, 2)
        return linear, translation, valid

    def call(self, inputs):
        points = tf.cast(inputs, tf.float32)  # (B, N, 2)
        usable = tf.reduce_all(tf.math.is_finite(points), axis=-1)  # (B, N)
        if self.align:
            linear, translation, valid = self.alignment(points)
            safe = tf.where(tf.math.is_finite(points), points, 0.0)
            points = tf.einsum("bnj,bij->bni", safe, linear) + translation[:, None, :]  # (B, N, 2)
            usable = tf.logical_and(tf.logical_and(usable, valid[:, None]), tf.reduce_all(tf.math.is_finite(points), axis=-1))
        r, size = self.reach, self.size
        padded = size + 2 * r
        # Rounded pixel index in the padded frame; -1 (one_hot -> all zeros) drops a point.
        index = tf.round(tf.where(usable[..., None], points, -1e6)) + r  # (B, N, 2)
        index = tf.where(tf.logical_and(index >= 0, index < padded), index, -1.0)
        index = tf.cast(index, tf.int32)
        one_hot_x = tf.one_hot(index[..., 0], padded, dtype=tf.float32)  # (B, N, S+2r)
        one_hot_y = tf.one_hot(index[..., 1], padded, dtype=tf.float32)  # (B, N, S+2r)
        impulses = tf.einsum("bny,bnx->byx", one_hot_y, one_hot_x)[..., None]  # (B, S+2r, S+2r, 1) point counts
        if self.mode == "dots":
            hits = tf.nn.conv2d(impulses, self._kernel, strides=1, padding="VALID")  # (B, S, S, 1)
            return tf.cast(hits > 0.5, tf.float32)
        log_points = tf.where(impulses > 0.5, 0.0, _FAR)
        nearest = tf.nn.dilation2d(log_points, self._kernel, strides=[1, 1, 1, 1], padding="VALID",
                                   data_format="NHWC", dilations=[1, 1, 1, 1])  # (B, S, S, 1): max_n -d^2/2s^2
        return tf.exp(nearest)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "size": self.size,
                "mode": self.mode,
                "radius": self.radius,
                "sigma": self.sigma,
                "align": self.align,
                "indices": self.indices,
            }
        )
        return config
