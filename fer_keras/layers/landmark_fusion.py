"""LandmarkFusion: confidence- and agreement-weighted merge of the RGB and landmark features (paper 003)."""

import keras
from keras import ops

FUSION_MODES = ("none", "uncertainty", "agreement", "both")


@keras.saving.register_keras_serializable(package="fer_keras")
class LandmarkFusion(keras.layers.Layer):
    """Weights the landmark branch's features, then concatenates them to the RGB branch's.

    Paper 003, sec. 4.2:

        p_landmark = max_c p_c                                  (1)
        F'_landmark = p_landmark * w * F_landmark               (2)

    with `p_c` the landmark branch's softmax, and `w = disagreement_weight` (0.6 in the paper)
    when the argmax of the landmark branch differs from the argmax of the RGB branch, else 1.
    The output is `[F_rgb, F'_landmark]` concatenated on the last axis (sec. 4.1), for the
    final fully connected classifier.

    The four weighting modes of the paper's ablation (sec. 5.4, Tables 7 and 8):
    - "none": `F' = F_landmark`;
    - "uncertainty": `F' = p_landmark * F_landmark` (eq. 1 only);
    - "agreement": `F' = w * F_landmark`;
    - "both": `F' = p_landmark * w * F_landmark` (eq. 2, the proposed method).

    Gradients flow through `p_landmark` (as in a plain PyTorch implementation of eq. 2); the
    argmax comparison has none.

    Args:
        mode: one of "none", "uncertainty", "agreement", "both".
        disagreement_weight: float in [0, 1], `w` when the branches disagree (paper: 0.6).
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: list `[F_rgb, F_landmark, p_rgb, p_landmark]`: features `(B, D_rgb)` and
            `(B, D_landmark)`, class probabilities `(B, K)` of each branch.

    Output shape:
        `(batch, D_rgb + D_landmark)`.

    Example:

    >>> fusion = LandmarkFusion(mode="both", disagreement_weight=0.6)
    >>> fused = fusion([f_rgb, f_landmark, p_rgb, p_landmark])   # (B, D_rgb + D_landmark)

    References:
        Paper 003 (Kanamori et al.), sec. 4.1 (concatenation), sec. 4.2 eqs. (1) and (2),
        sec. 5.3 (w sweep, Fig. 4), sec. 5.4 (the weighting ablation, Tables 7 and 8).
    """

    def __init__(self, mode="both", disagreement_weight=0.6, **kwargs):
        super().__init__(**kwargs)
        if mode not in FUSION_MODES:
            raise ValueError(f"mode must be one of {FUSION_MODES}. Received: mode={mode!r}")
        if isinstance(disagreement_weight, bool) or not 0.0 <= float(disagreement_weight) <= 1.0:
            raise ValueError(
                f"disagreement_weight must be in [0, 1]. Received: disagreement_weight={disagreement_weight!r}"
            )
        self.mode = mode
        self.disagreement_weight = float(disagreement_weight)

    def landmark_scale(self, rgb_probabilities, landmark_probabilities):
        """The `(B, 1)` factor `p_landmark * w` (or its part the mode keeps) applied to `F_landmark`."""
        p = landmark_probabilities
        scale = ops.ones_like(p[:, :1])  # (B, 1)
        if self.mode in ("uncertainty", "both"):
            scale = scale * ops.max(p, axis=-1, keepdims=True)  # eq. (1)
        if self.mode in ("agreement", "both"):
            agree = ops.equal(ops.argmax(rgb_probabilities, axis=-1), ops.argmax(p, axis=-1))[:, None]  # (B, 1)
            w = ops.where(agree, ops.ones_like(scale), ops.full_like(scale, self.disagreement_weight))
            scale = scale * ops.stop_gradient(w)
        return scale

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 4:
            raise ValueError(
                "LandmarkFusion takes [F_rgb, F_landmark, p_rgb, p_landmark]. "
                f"Received: {type(inputs).__name__} of {len(inputs) if isinstance(inputs, (list, tuple)) else 1}"
            )
        rgb_features, landmark_features, rgb_probabilities, landmark_probabilities = inputs
        scale = self.landmark_scale(rgb_probabilities, landmark_probabilities)
        weighted = ops.cast(scale, landmark_features.dtype) * landmark_features  # eq. (2), (B, D_landmark)
        return ops.concatenate([rgb_features, weighted], axis=-1)  # (B, D_rgb + D_landmark)

    def compute_output_shape(self, input_shape):
        rgb, landmark = input_shape[0], input_shape[1]
        total = None if rgb[-1] is None or landmark[-1] is None else rgb[-1] + landmark[-1]
        return (rgb[0], total)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "disagreement_weight": self.disagreement_weight})
        return config
