"""SynthFER: a procedural facial-expression dataset with exact ground truth.

A subject is a vector of continuous identity parameters (face shape, features, colours, hair) plus
accessories and an expression style (per-AU gains and left/right balance). An emotion is a set of
FACS action units (AUs) whose intensities vary with the sample and the subject. The 68 iBUG
landmarks come from a neutral template deformed by identity, then by the AUs (as described in
``shared/FACS.md``), then by head pose (roll, small yaw, scale, translation); the face is then
drawn around them (`fer_keras.data.synth_render`): shaded skin, AU-dependent wrinkles, eyelids
and irises, teeth, hair, glasses, beard, occluders, background clutter, lighting, noise, blur and
JPEG artefacts.

Every random draw comes from ``np.random.SeedSequence([seed, subject_id, index, emotion, ...])``,
so the same arguments give byte-identical output and subject k never depends on which other
subjects were generated.

Example:

>>> subject = make_subject(3, seed=0)
>>> still = render_still(subject, "happiness", sample_index=0, size=64)
>>> still["image"].shape, still["landmarks"].shape, still["aus"].shape
((64, 64, 1), (68, 2), (18,))
>>> seq = render_sequence(subject, "surprise", kind="onset_apex")
>>> seq["frames"].shape[0] == seq["aus"].shape[0]
True

Results on SynthFER are results on SynthFER, never a claim about real faces.
"""

import dataclasses
import math
import pathlib

import cv2
import numpy as np

from fer_keras.data import synth_render as _render
from fer_keras.labels import EMOTIONS

__all__ = [
    "AUS",
    "IDENTITY_PARAMS",
    "EMOTIONS",
    "PROTOTYPES",
    "Subject",
    "make_subject",
    "emotion_aus",
    "neutral_landmarks",
    "face_landmarks",
    "render_still",
    "render_sequence",
    "preview",
]

AUS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 20, 23, 24, 25, 26)
AU_INDEX = {au: i for i, au in enumerate(AUS)}

IDENTITY_PARAMS = (
    "face_width",
    "face_height",
    "jaw_shape",
    "eye_size",
    "eye_spacing",
    "eye_tilt",
    "brow_height",
    "brow_slant",
    "brow_thickness",
    "nose_length",
    "nose_width",
    "mouth_width",
    "mouth_height",
    "lip_thickness",
    "mouth_curve",
    "skin_tone",
    "hair_style",
    "hair_colour",
    "hairline",
    "iris_colour",
    "age",
)
PARAM_INDEX = {name: i for i, name in enumerate(IDENTITY_PARAMS)}
# Parameters that change the landmarks (the others only change the drawing).
SHAPE_PARAMS = IDENTITY_PARAMS[:15]

# Emotion prototypes: (AU, level at intensity 1, probability of appearing). Probability 1 marks
# the EMFACS prototype of shared/FACS.md (always active); the others are optional AUs, several of
# them from paper 002's Table 4 (e.g. AU9/AU10 in anger, AU4 in disgust, AU15 in fear/surprise).
# Levels blend the EMFACS prototypes with Table 4's 0-100 intensities.
PROTOTYPES = {
    "neutral": (),
    "anger": ((4, 0.90, 1.0), (5, 0.45, 1.0), (7, 0.65, 1.0), (23, 0.70, 1.0),
              (24, 0.50, 0.5), (9, 0.40, 0.5), (10, 0.35, 0.4), (17, 0.35, 0.3), (2, 0.2, 0.1)),
    "contempt": ((12, 0.55, 1.0), (14, 1.00, 1.0)),
    "disgust": ((9, 0.70, 1.0), (15, 0.45, 1.0), (16, 0.30, 1.0), (10, 0.50, 0.6),
                (17, 0.40, 0.5), (4, 0.60, 0.8), (7, 0.45, 0.5), (23, 0.40, 0.3), (25, 0.25, 0.25)),
    "fear": ((1, 0.70, 1.0), (2, 0.45, 1.0), (4, 0.55, 1.0), (5, 0.70, 1.0), (7, 0.35, 1.0),
             (20, 0.55, 1.0), (26, 0.40, 1.0), (25, 0.50, 0.8), (15, 0.30, 0.3)),
    "happiness": ((6, 0.90, 1.0), (12, 1.00, 1.0), (25, 0.60, 0.8), (26, 0.25, 0.25)),
    "sadness": ((1, 0.45, 1.0), (4, 0.32, 1.0), (15, 0.45, 1.0), (17, 0.30, 0.5), (23, 0.20, 0.3)),
    "surprise": ((1, 0.75, 1.0), (2, 0.70, 1.0), (5, 0.65, 1.0), (26, 0.70, 1.0),
                 (25, 0.60, 0.8), (16, 0.25, 0.2), (15, 0.20, 0.15)),
}
# Contempt is one-sided: these AUs act on one side only.
UNILATERAL = {"contempt": (12, 14)}

_PROTO_ARRAYS = {
    e: (np.array([AU_INDEX[au] for au, _, _ in p], int), np.array([lv for _, lv, _ in p], np.float32),
        np.array([pr for _, _, pr in p], np.float32), np.array([AU_INDEX[au] for au in UNILATERAL.get(e, ())], int))
    for e, p in PROTOTYPES.items()
}

INTENSITY_RANGE = (0.5, 1.0)  # per-sample intensity when not given
AU_GAIN = 1.7  # global scale of the AU displacements below
SCALE_RANGE = (0.70, 0.82)  # face units -> fraction of the image side
STYLE_GAIN_SIGMA = 0.3  # log-normal spread of a subject's per-AU gains
STYLE_EXPRESSIVITY_SIGMA = 0.2  # log-normal spread of a subject's overall expressivity
AU_JITTER_SIGMA = 0.15  # per-sample log-normal jitter of each AU

_STILL, _SEQUENCE, _SUBJECT, _SESSION = 1, 2, 3, 4  # stream tags inside the seed sequence
# "wild": every still and every sequence has its own scene (lighting, background, camera, clothes,
# occluders) and head pose, like RAF-DB or FER2013. "lab": one recording session per subject, like
# CK+, MUG or JAFFE: the scene and the base head pose are the subject's, the same in all of their
# stills and sequences; a still adds a small pose jitter (LAB_POSE_JITTER) and its own sensor noise.
CAPTURES = ("wild", "lab")
LAB_POSE_JITTER = (1.0, 1.5, 0.005, 0.005, 0.005)  # std of roll_deg, yaw_deg, scale, tx, ty per lab still
SEQUENCE_KINDS = ("onset_apex", "onset_apex_offset")
SEQUENCE_FRAMES = {"onset_apex": (10, 30), "onset_apex_offset": (20, 40)}

_T = _render.TEMPLATE
_SIDE = np.sign(np.round(_T[:, 0], 4)).astype(np.float32)  # -1 subject's right, +1 left, 0 midline


def _field(spec):
    """Displacement field (68, 2) from {landmark: (dx_outward, dy)}, mirrored to both sides."""
    d = np.zeros((68, 2), np.float32)
    for i, (dx, dy) in spec.items():
        for j in {i, int(_render.MIRROR[i])}:
            d[j] = (dx * _SIDE[j], dy)
    return d


def _scale_about(idx, centre_idx, k):
    """Field that scales the points idx about the mean of centre_idx (per side) by k."""
    d = np.zeros((68, 2), np.float32)
    for side_idx, side_c in ((idx, centre_idx), (_render.MIRROR[idx], _render.MIRROR[centre_idx])):
        c = _T[side_c].mean(0)
        d[side_idx] = (_T[side_idx] - c) * k
    return d


def _identity_fields():
    """(len(IDENTITY_PARAMS), 68, 2): landmark displacement per unit of each parameter."""
    F = np.zeros((len(IDENTITY_PARAMS), 68, 2), np.float32)
    X, Y = _T[:, 0], _T[:, 1]
    outline = np.zeros(68, bool)
    outline[0:17] = True
    F[PARAM_INDEX["face_width"], :, 0] = np.where(outline, 0.08, 0.02) * X
    below = np.clip((Y + 0.30) / 0.74, 0.0, 1.0)
    F[PARAM_INDEX["face_height"], :, 1] = 0.07 * below
    F[PARAM_INDEX["jaw_shape"]] = _field({2: (0.008, 0), 3: (0.02, 0.004), 4: (0.032, 0.01), 5: (0.034, 0.012),
                                          6: (0.026, 0.01), 7: (0.014, 0.004)})
    eye = np.arange(36, 42)
    F[PARAM_INDEX["eye_size"]] = _scale_about(eye, eye, 0.12)
    F[PARAM_INDEX["eye_spacing"]] = _field({i: (0.018, 0.0) for i in range(36, 42)}
                                           | {i: (0.008, 0.0) for i in range(17, 22)})
    F[PARAM_INDEX["eye_tilt"]] = _field({36: (0, -0.012), 37: (0, -0.005), 41: (0, -0.005), 39: (0, 0.006),
                                         38: (0, 0.002), 40: (0, 0.002)})
    F[PARAM_INDEX["brow_height"]] = _field({i: (0.0, -0.03) for i in range(17, 22)})
    F[PARAM_INDEX["brow_slant"]] = _field({21: (0, 0.016), 20: (0, 0.010), 19: (0, 0.003), 18: (0, -0.004),
                                           17: (0, -0.01)})
    F[PARAM_INDEX["nose_length"]] = _field({29: (0, 0.012), 30: (0, 0.028), 31: (0, 0.032), 32: (0, 0.034),
                                            33: (0, 0.034)})
    F[PARAM_INDEX["nose_width"]] = _field({31: (0.022, 0), 32: (0.011, 0)})
    mouth = np.arange(48, 68)
    F[PARAM_INDEX["mouth_width"], mouth, 0] = 0.12 * X[mouth]
    F[PARAM_INDEX["mouth_height"], mouth, 1] = 0.025
    F[PARAM_INDEX["lip_thickness"]] = _field({49: (0, -0.010), 50: (0, -0.012), 51: (0, -0.010),
                                              57: (0, 0.016), 58: (0, 0.015), 59: (0, 0.01)})
    F[PARAM_INDEX["mouth_curve"]] = _field({48: (0, -0.018), 60: (0, -0.015), 49: (0, -0.005),
                                            59: (0, -0.004)})
    return F


# AU displacement at intensity 1 before AU_GAIN, in face units (x outward from the midline, y down).
_AU_SPECS = {
    1: {21: (-0.005, -0.062), 20: (-0.003, -0.048), 19: (0, -0.024), 18: (0, -0.010)},
    2: {17: (0.004, -0.058), 18: (0, -0.058), 19: (0, -0.040), 20: (0, -0.016)},
    4: {21: (-0.022, 0.044), 20: (-0.012, 0.040), 19: (-0.005, 0.030), 18: (0, 0.018), 17: (0, 0.010),
        37: (0, 0.007), 38: (0, 0.009)},
    5: {37: (0, -0.022), 38: (0, -0.022), 36: (0, -0.002), 39: (0, -0.002)},
    6: {40: (0, -0.012), 41: (0, -0.012), 37: (0, 0.004), 38: (0, 0.004), 36: (0, -0.004)},
    7: {40: (0, -0.014), 41: (0, -0.014), 37: (0, 0.006), 38: (0, 0.006), 39: (0, -0.002)},
    9: {31: (0, -0.030), 32: (0, -0.030), 33: (0, -0.028), 30: (0, -0.012), 29: (0, -0.005),
        21: (0, 0.018), 20: (0, 0.010), 50: (0, -0.020), 51: (0, -0.018), 49: (0, -0.012),
        61: (0, -0.012), 62: (0, -0.012), 48: (0, -0.006), 40: (0, -0.006), 41: (0, -0.006)},
    10: {50: (0.002, -0.035), 51: (0, -0.028), 49: (0.004, -0.028), 61: (0, -0.030), 62: (0, -0.028),
         48: (0, -0.010), 60: (0, -0.015), 31: (0, -0.008), 32: (0, -0.006)},
    12: {48: (0.045, -0.045), 60: (0.040, -0.040), 49: (0.018, -0.022), 59: (0.022, -0.028),
         50: (0.005, -0.008), 58: (0.008, -0.010), 61: (0.015, -0.015), 67: (0.015, -0.012),
         41: (0, -0.004), 40: (0, -0.004)},
    14: {48: (-0.020, -0.008), 60: (-0.016, -0.006), 49: (-0.006, 0), 59: (-0.006, 0)},
    15: {48: (-0.004, 0.040), 60: (-0.003, 0.032), 59: (0, 0.020), 49: (0, 0.012), 67: (0, 0.010),
         61: (0, 0.008)},
    16: {57: (0, 0.035), 58: (0.004, 0.032), 59: (0.008, 0.020), 66: (0, 0.035), 67: (0.004, 0.030),
         8: (0, 0.008)},
    17: {7: (0, -0.025), 8: (0, -0.030), 6: (0, -0.010), 57: (0, -0.030), 58: (0, -0.026), 59: (0, -0.014),
         66: (0, -0.016), 67: (0, -0.012), 62: (0, -0.012), 61: (0, -0.008), 51: (0, -0.006),
         50: (0, -0.004), 48: (0, 0.006)},
    20: {48: (0.040, 0.006), 60: (0.035, 0.005), 49: (0.015, 0.002), 59: (0.020, -0.004), 50: (0.004, 0),
         58: (0.005, -0.004), 57: (0, -0.010), 51: (0, 0.004), 67: (0.012, 0), 61: (0.012, 0),
         4: (0.006, 0), 5: (0.006, 0)},
    23: {49: (-0.004, 0.012), 50: (0, 0.016), 51: (0, 0.014), 59: (-0.004, -0.014), 58: (0, -0.020),
         57: (0, -0.020), 48: (-0.012, 0), 60: (-0.010, 0)},
    24: {50: (0, 0.012), 51: (0, 0.010), 58: (0, -0.016), 57: (0, -0.016), 61: (0, 0.006), 62: (0, 0.006),
         66: (0, -0.006), 67: (0, -0.006), 48: (-0.005, 0.002)},
    25: {61: (0, -0.008), 62: (0, -0.010), 67: (0, 0.028), 66: (0, 0.030), 57: (0, 0.022), 58: (0, 0.020),
         59: (0, 0.012), 51: (0, -0.006)},
    26: {8: (0, 0.105), 7: (-0.005, 0.098), 6: (-0.007, 0.080), 5: (-0.007, 0.055), 4: (-0.004, 0.030),
         3: (0, 0.012), 57: (0, 0.090), 58: (0, 0.085), 59: (0, 0.060), 66: (0, 0.090), 67: (0, 0.080),
         48: (-0.010, 0.022), 60: (-0.008, 0.020), 62: (0, -0.004)},
}


def _au_fields():
    """(2 * len(AUS), 136): rows 0..n-1 act on the subject's right side, n..2n-1 on the left."""
    right = np.where(_SIDE < 0, 1.0, np.where(_SIDE == 0, 0.5, 0.0)).astype(np.float32)[:, None]
    left = np.where(_SIDE > 0, 1.0, np.where(_SIDE == 0, 0.5, 0.0)).astype(np.float32)[:, None]
    fields = [_field(_AU_SPECS[au]) for au in AUS]
    return AU_GAIN * np.stack([f * right for f in fields] + [f * left for f in fields]).reshape(2 * len(AUS), 136)


ID_FIELDS = _identity_fields().reshape(len(IDENTITY_PARAMS), 136)
AU_FIELDS = _au_fields()
_LAYOUT = _render.build_layout(PARAM_INDEX)
_LID_PAIRS = (np.array([37, 38, 43, 44]), np.array([41, 40, 47, 46]))
_INNER = (np.array([61, 62, 63]), np.array([67, 66, 65]))
_OUTER_UP, _OUTER_LOW = np.array([50, 51, 52]), np.array([58, 57, 56])


@dataclasses.dataclass(frozen=True)
class Subject:
    """One synthetic person.

    Attributes:
        subject_id: the id its random streams are derived from.
        params: float32 (len(IDENTITY_PARAMS),), each in [-1, 1]; see IDENTITY_PARAMS.
        glasses, beard: accessories.
        style: float32 (2, len(AUS)): row 0 per-AU gains (overall expressivity included),
            row 1 per-AU left/right balance (> 0: the subject's right side moves more).
    """

    subject_id: int
    params: np.ndarray
    glasses: bool
    beard: bool
    style: np.ndarray

    def __eq__(self, other):
        if not isinstance(other, Subject):
            return NotImplemented
        return (self.subject_id == other.subject_id and self.glasses == other.glasses
                and self.beard == other.beard and np.array_equal(self.params, other.params)
                and np.array_equal(self.style, other.style))

    def __hash__(self):
        return hash((self.subject_id, self.params.tobytes(), self.glasses, self.beard))


def _rng(*words):
    for w in words:
        if int(w) < 0:
            raise ValueError(f"Seeds, subject ids and indices must be >= 0. Received: {words}")
    return np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))


def make_subject(subject_id: int, seed: int = 0) -> Subject:
    """Draws subject `subject_id` of the population `seed` (independent of any other subject)."""
    rng = _rng(seed, subject_id, _SUBJECT)
    n = len(IDENTITY_PARAMS)
    params = np.clip(rng.normal(0.0, 0.45, n), -1.0, 1.0)
    for name in ("skin_tone", "hair_style", "hair_colour", "hairline", "iris_colour", "age", "brow_thickness"):
        params[PARAM_INDEX[name]] = rng.uniform(-1.0, 1.0)
    # Resting mouths turn down a little more often than up (a sad-looking neutral is common).
    params[PARAM_INDEX["mouth_curve"]] = np.clip(params[PARAM_INDEX["mouth_curve"]] - 0.25, -1.0, 1.0)
    glasses = bool(rng.random() < 0.2)
    beard = bool(rng.random() < 0.12)
    expressivity = np.exp(rng.normal(0.0, STYLE_EXPRESSIVITY_SIGMA))
    gains = np.clip(expressivity * np.exp(rng.normal(0.0, STYLE_GAIN_SIGMA, len(AUS))), 0.35, 1.8)
    balance = np.clip(rng.normal(0.0, 0.08, len(AUS)), -0.25, 0.25)
    return Subject(int(subject_id), params.astype(np.float32), glasses, beard,
                   np.stack([gains, balance]).astype(np.float32))


def _check_emotion(emotion):
    if emotion not in EMOTIONS:
        raise ValueError(f"Unknown emotion {emotion!r}. Expected one of {EMOTIONS}.")
    return EMOTIONS.index(emotion)


def emotion_aus(emotion, intensity=1.0, style=None, rng=None):
    """Per-side AU intensities of one display of `emotion`.

    Args:
        emotion: a canonical emotion name.
        intensity: scales every AU, in [0, 1].
        style: a Subject's style (gains, balance), or None for gains 1 and no asymmetry.
        rng: draws optional AUs, per-AU jitter and contempt's side; None gives the prototype
            (every AU at its level, optional AUs off, contempt on the subject's right).

    Returns:
        float32 (2, len(AUS)) in [0, 1]: row 0 the subject's right side, row 1 the left.
        The AU vector of a sample is the maximum over the two rows.
    """
    _check_emotion(emotion)
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity must be in [0, 1]. Received: intensity={intensity}")
    n = len(AUS)
    idx, level, prob, unilateral = _PROTO_ARRAYS[emotion]
    a = np.zeros(n, np.float32)
    if len(idx):
        if rng is None:
            present, jitter, right_side = prob >= 1.0, 1.0, True
        else:
            u = rng.random(len(idx) + 1)
            present = u[:-1] < prob
            jitter = np.exp(rng.normal(0.0, AU_JITTER_SIGMA, len(idx)))
            right_side = bool(u[-1] < 0.5)
        a[idx] = np.where(present, level * jitter, 0.0)
    if style is not None:
        a *= style[0]
    a = np.minimum(a * intensity, 1.0)
    if style is None:
        sided = np.stack([a, a])
    else:
        sided = np.minimum(np.stack([a * (1.0 + style[1]), a * (1.0 - style[1])]), 1.0)
    if len(unilateral):
        sided[1 if right_side else 0, unilateral] = 0.0
    return sided.astype(np.float32)


def neutral_landmarks():
    """The neutral 68-point template (68, 2) in face units (x right, y down)."""
    return _T.copy()


def _params_of(subject):
    return subject.params if isinstance(subject, Subject) else np.asarray(subject, np.float32)


def face_landmarks(subject, aus=None, *, aus_left=None, eye_closure=0.0):
    """Landmarks (68, 2) in face units for a subject (or identity vector) and AU intensities.

    Args:
        subject: a Subject or an identity parameter vector.
        aus: (len(AUS),) intensities for the subject's right side (both sides when aus_left is
            None), or a (2, len(AUS)) per-side array; None means neutral.
        eye_closure: 0 open .. 1 closed (blinks).
    """
    params = _params_of(subject)
    lm = _T.reshape(-1) + params @ ID_FIELDS
    if aus is not None:
        aus = np.asarray(aus, np.float32)
        sided = aus if aus.ndim == 2 else np.stack([aus, aus if aus_left is None else aus_left])
        lm = lm + sided.reshape(-1) @ AU_FIELDS
    return _constrain(lm.reshape(68, 2).astype(np.float32), eye_closure)


def _constrain(lm, closure):
    """Keeps lids and lips from crossing; applies the blink."""
    y = lm[:, 1]
    up, low = _LID_PAIRS
    yu, yl = y[up], y[low]
    if closure > 0.0:
        yu = yu + closure * (yl - yu)
    y[up] = np.minimum(yu, yl)
    iu, il = _INNER
    yu, yl = y[iu], y[il]
    mid = 0.5 * (yu + yl)
    yu, yl = np.minimum(yu, mid), np.maximum(yl, mid)  # crossing lips meet in the middle
    y[iu], y[il] = yu, yl
    y[_OUTER_UP] = np.minimum(y[_OUTER_UP], yu - 0.012)
    y[_OUTER_LOW] = np.maximum(y[_OUTER_LOW], yl + 0.014)
    return lm


def _check_capture(capture):
    if capture not in CAPTURES:
        raise ValueError(f"Unknown capture {capture!r}. Expected one of {CAPTURES}.")
    return capture


def _session(subject, seed):
    """Lab capture: (generator of the subject's scene, the subject's base pose), the same on every call."""
    session = _rng(seed, subject.subject_id, _SESSION)
    pose = _sample_pose(session)
    return session, pose


def _sample_pose(rng):
    z = rng.standard_normal(5).tolist()
    roll = min(8.0, max(-8.0, 3.0 * z[0]))
    yaw = min(12.0, max(-12.0, 4.0 * z[1]))
    lo, hi = SCALE_RANGE
    scale = lo + (hi - lo) * (0.5 + 0.5 * math.erf(z[4] / math.sqrt(2.0)))  # uniform
    return np.array([roll, yaw, scale, 0.02 * z[2], 0.03 + 0.02 * z[3]], np.float64)


def _fit_poses(lms, poses, size):
    """Shifts (and if needed shrinks) poses (T, 5) so every landmark of lms (T, 68, 2) is inside."""
    margin = max(1.0, 0.02 * size)
    lo, hi = margin, size - 1.0 - margin
    p3 = np.empty((lms.shape[0], 68, 3), np.float32)
    p3[..., :2] = lms
    p3[..., 2] = _render.LANDMARK_Z
    for _ in range(4):
        mn, mx = np.full(2, np.inf), np.full(2, -np.inf)
        for p, pose in zip(p3, poses):
            m, t = _render._pose_matrix(pose, size)
            px = p @ m.T + t
            mn, mx = np.minimum(mn, px.min(0)), np.maximum(mx, px.max(0))
        if mn.min() >= lo and mx.max() <= hi:
            break
        span = mx - mn
        if span.max() > hi - lo:
            poses[:, 2] *= 0.97 * (hi - lo) / span.max()
            continue
        shift = np.where(mn < lo, lo - mn, 0.0) + np.where(mx > hi, hi - mx, 0.0)
        poses[:, 3] += shift[0] / size
        poses[:, 4] += shift[1] / size
    return poses


def _check_render_args(subject, size):
    if not isinstance(subject, Subject):
        raise TypeError(f"subject must be a Subject from make_subject(). Received: {type(subject).__name__}")
    if not 32 <= int(size) <= 512:
        raise ValueError(f"size must be in 32..512 (48..224 is the tested range). Received: size={size}")


def render_still(subject, emotion, *, sample_index=0, seed=0, size=64, grey=True, intensity=None,
                 occlusion=None, capture="wild"):
    """One apex still of `subject` showing `emotion`.

    Args:
        subject: from make_subject().
        emotion: canonical emotion name (fer_keras.labels.EMOTIONS).
        sample_index: which sample of this subject and emotion (independent streams).
        seed: the dataset seed.
        size: output side in pixels (48..224 tested).
        grey: one channel, else RGB.
        intensity: expression intensity in [0, 1]; None draws one from INTENSITY_RANGE.
        occlusion: force an occluder (True), none (False), or draw one 8% of the time (None;
            "lab" capture: none).
        capture: "wild" (a scene and pose of its own) or "lab" (the subject's session; see CAPTURES).

    Returns:
        dict: "image" uint8 (size, size, 1|3); "landmarks" float32 (68, 2) pixel (x, y), pixel
        centres at integers; "aus" float32 (len(AUS),) in [0, 1]; "emotion"; "intensity";
        "subject_id"; "identity" float32 (len(IDENTITY_PARAMS),); "pose" float32 (5,) =
        roll_deg, yaw_deg, scale (face units -> fraction of size), tx, ty (fractions of size).
    """
    _check_render_args(subject, size)
    e = _check_emotion(emotion)
    rng = _rng(seed, subject.subject_id, sample_index, e, _STILL)
    drawn = float(rng.uniform(*INTENSITY_RANGE))
    if intensity is None:
        intensity = drawn
    intensity = 0.0 if emotion == "neutral" else float(intensity)
    sided = emotion_aus(emotion, intensity, subject.style, rng)
    lm = face_landmarks(subject, sided)
    if _check_capture(capture) == "wild":
        scene_rng, pose = rng, _sample_pose(rng)
    else:
        scene_rng, pose = _session(subject, seed)
        pose = pose + np.asarray(LAB_POSE_JITTER) * rng.standard_normal(5)
        occlusion = bool(occlusion)
    pose = _fit_poses(lm[None], pose[None], size)[0]
    scene = _render.Scene(subject.params, PARAM_INDEX, subject.glasses, subject.beard, scene_rng, size, grey,
                          occlusion, _LAYOUT)
    img, lm_px = scene.draw(lm, sided[0], sided[1], AU_INDEX, tuple(pose), rng)
    return {
        "image": img.reshape(size, size, 1 if grey else 3),
        "landmarks": lm_px.astype(np.float32),
        "aus": sided.max(0),
        "emotion": emotion,
        "intensity": intensity,
        "subject_id": subject.subject_id,
        "identity": subject.params.copy(),
        "pose": pose.astype(np.float32),
    }


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _envelopes(rng, T, n, kind):
    """Per-frame, per-AU activation (T, n) in [0, 1] and the apex frame."""
    t = np.arange(T, dtype=np.float64)[:, None]
    if kind == "onset_apex":
        start = int(rng.integers(1, max(2, T // 5) + 1))
        apex = T - 1 - int(rng.integers(0, T // 6 + 1))
    else:
        start = int(rng.integers(1, max(2, T // 8) + 1))
        apex = start + max(2, int(round((T - start) * rng.uniform(0.3, 0.42))))
        hold = max(1, int(round(T * rng.uniform(0.12, 0.25))))
        tail = int(rng.integers(1, max(2, T // 10) + 1))
        off_start, off_end = apex + hold, T - 1 - tail
        off_start = min(off_start, off_end - 2)
    # Each AU starts at its own time and every one reaches its apex value at the apex frame, so
    # the apex is the first frame where all of them are at their maximum.
    t0 = start - 1.0 + rng.uniform(0.0, 0.3, n) * (apex - start)
    env = _smoothstep((t - t0) / (apex - t0))
    env[apex:] = 1.0
    if kind == "onset_apex_offset":
        d0 = off_start + rng.uniform(0.0, 0.2, n) * (off_end - off_start)
        down = 1.0 - _smoothstep((t - d0) / np.maximum(off_end - d0, 1.0))
        env = np.minimum(env, down)
        env[off_end:] = 0.0
    env[:start] = 0.0
    return env.astype(np.float32), apex


def render_sequence(subject, emotion, *, sequence_index=0, seed=0, size=64, grey=True, num_frames=None,
                    kind="onset_apex", capture="wild"):
    """A sequence from neutral to the apex of `emotion` (and back, for "onset_apex_offset").

    Each AU has its own onset timing; the head moves slightly; the eyes blink now and then (never
    on the first frame or next to the apex). Lighting, background and camera stay fixed within a
    sequence, sensor noise does not.

    Args:
        kind: "onset_apex" (CK+-like, 10-30 frames) or "onset_apex_offset" (MUG-like, 20-40).
        num_frames: T, or None to draw it from the kind's range.
        capture: "wild" (the sequence's own scene and base pose) or "lab" (the subject's session,
            shared by all of their sequences and stills; see CAPTURES).
        Others as in render_still.

    Returns:
        dict: "frames" uint8 (T, size, size, 1|3); "landmarks" float32 (T, 68, 2); "aus" float32
        (T, len(AUS)); "pose" float32 (T, 5); "emotion"; "intensity" (at the apex); "subject_id";
        "identity"; "apex_index" (first frame at the apex).
    """
    _check_render_args(subject, size)
    e = _check_emotion(emotion)
    if kind not in SEQUENCE_KINDS:
        raise ValueError(f"Unknown sequence kind {kind!r}. Expected one of {SEQUENCE_KINDS}.")
    min_frames = 3 if kind == "onset_apex" else 6
    if num_frames is not None and int(num_frames) < min_frames:
        raise ValueError(f"num_frames must be >= {min_frames} for kind={kind!r}. Received: num_frames={num_frames}")
    rng = _rng(seed, subject.subject_id, sequence_index, e, _SEQUENCE, SEQUENCE_KINDS.index(kind))
    lo, hi = SEQUENCE_FRAMES[kind]
    drawn = int(rng.integers(lo, hi + 1))
    T = drawn if num_frames is None else int(num_frames)
    intensity = 0.0 if emotion == "neutral" else float(rng.uniform(*INTENSITY_RANGE))
    sided = emotion_aus(emotion, intensity, subject.style, rng)
    env, apex = _envelopes(rng, T, len(AUS), kind)

    # Blinks: a few, away from the first frame, the apex and the last frame.
    closure = np.zeros(T, np.float32)
    for _ in range(int(rng.integers(0, 3))):
        b = int(rng.integers(2, max(3, T - 2)))
        if abs(b - apex) <= 2 or b >= T - 2:
            continue
        closure[b] = max(closure[b], 1.0)
        closure[b - 1] = max(closure[b - 1], 0.5)
        closure[b + 1] = max(closure[b + 1], 0.4)

    # Head motion: a slow drift and sway around a base pose.
    if _check_capture(capture) == "wild":
        scene_rng, base = rng, _sample_pose(rng)
    else:
        scene_rng, base = _session(subject, seed)
    ph = rng.uniform(0, 2 * np.pi, 4)
    amp = rng.uniform(0.0, 1.0, 4) * np.array([2.0, 3.0, 0.008, 0.008])
    w = 2 * np.pi * rng.uniform(0.3, 1.0) / T
    tt = np.arange(T)
    poses = np.repeat(base[None], T, axis=0)
    poses[:, 0] += amp[0] * np.sin(w * tt + ph[0])
    poses[:, 1] += amp[1] * np.sin(w * tt + ph[1])
    poses[:, 3] += amp[2] * np.sin(w * tt + ph[2])
    poses[:, 4] += amp[3] * np.sin(w * tt + ph[3])

    frame_aus = sided[None] * env[:, None, :]  # (T, 2, n)
    lms = np.stack([face_landmarks(subject, frame_aus[i], eye_closure=float(closure[i])) for i in range(T)])
    poses = _fit_poses(lms, poses, size)
    scene = _render.Scene(subject.params, PARAM_INDEX, subject.glasses, subject.beard, scene_rng, size, grey,
                          False, _LAYOUT)
    C = 1 if grey else 3
    frames = np.empty((T, size, size, C), np.uint8)
    lm_px = np.empty((T, 68, 2), np.float32)
    for i in range(T):
        img, lm_px[i] = scene.draw(lms[i], frame_aus[i, 0], frame_aus[i, 1], AU_INDEX, tuple(poses[i]), rng)
        frames[i] = img.reshape(size, size, C)
    return {
        "frames": frames,
        "landmarks": lm_px,
        "aus": frame_aus.max(1).astype(np.float32),
        "pose": poses.astype(np.float32),
        "emotion": emotion,
        "intensity": intensity,
        "subject_id": subject.subject_id,
        "identity": subject.params.copy(),
        "apex_index": int(apex),
    }


def _rgb(img):
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def preview(path, *, num_subjects=6, size=96, seed=0, grey=False, capture="wild"):
    """Writes a PNG: subjects (rows) x the 8 emotions (labelled columns), then one sequence strip.

    Each cell is render_still(make_subject(row, seed), emotion, sample_index=0, seed=seed); the strip
    shows every third frame of a 24-frame onset-apex-offset surprise sequence of subject 1. The PNG
    uses a 256-colour palette when Pillow is installed (it keeps the file around 250 KB).
    `capture`: "wild" or "lab" (each row one session; see CAPTURES).

    Returns the path written.
    """
    path = pathlib.Path(path)
    pad, head = 2, 18
    W = len(EMOTIONS) * (size + pad) + pad
    rows = []
    label = np.full((head, W, 3), 255, np.uint8)
    for j, emo in enumerate(EMOTIONS):
        cv2.putText(label, emo, (pad + j * (size + pad) + 2, head - 5), cv2.FONT_HERSHEY_SIMPLEX,
                    0.38, (0, 0, 0), 1, cv2.LINE_AA)
    rows.append(label)
    for k in range(num_subjects):
        subject = make_subject(k, seed)
        row = np.full((size + pad, W, 3), 255, np.uint8)
        for j, emo in enumerate(EMOTIONS):
            img = _rgb(render_still(subject, emo, sample_index=0, seed=seed, size=size, grey=grey,
                                    capture=capture)["image"])
            x = pad + j * (size + pad)
            row[pad:pad + size, x:x + size] = img
        rows.append(row)
    seq = render_sequence(make_subject(1, seed), "surprise", seed=seed, size=size, grey=grey,
                          num_frames=24, kind="onset_apex_offset", capture=capture)
    strip_label = np.full((head, W, 3), 255, np.uint8)
    cv2.putText(strip_label, "sequence: subject 1, surprise, onset-apex-offset, every 3rd of 24 frames ("
                f"apex: frame {seq['apex_index']})", (pad + 2, head - 5), cv2.FONT_HERSHEY_SIMPLEX,
                0.38, (0, 0, 0), 1, cv2.LINE_AA)
    rows.append(strip_label)
    strip = np.full((size + 2 * pad, W, 3), 255, np.uint8)
    for j, t in enumerate(range(0, 24, 3)):
        x = pad + j * (size + pad)
        strip[pad:pad + size, x:x + size] = _rgb(seq["frames"][t])
    rows.append(strip)
    grid = np.concatenate(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # a 256-colour palette keeps the noisy grid small (Pillow comes with matplotlib)
        from PIL import Image

        Image.fromarray(grid).quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    except ImportError:
        cv2.imwrite(str(path), grid[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path
