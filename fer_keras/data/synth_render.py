"""Drawing for SynthFER (internal): posed face geometry and appearance -> one image.

`fer_keras.data.synth` owns the ground truth (identity, action units, landmarks, pose); this
module owns what is only drawn: skull, hair, ears, neck, eyelids and irises, teeth, wrinkles,
glasses, beard, occluders, background, lighting, noise, blur and JPEG artefacts.

Everything is drawn directly at the target size with OpenCV's anti-aliased primitives in fixed
point (4 fractional bits), so a 64 px face costs a few dozen small OpenCV calls. Points live in
"face units": the neutral 68-point template spans about [-0.45, 0.45] in x and y (x to the
image's right, y down, origin at the centre of the landmarks' box). Every drawn point is either
a landmark or "anchors @ landmarks + offset", so it follows the action units for free.
"""

import collections
import math

import cv2
import numpy as np

SHIFT = 4  # fixed-point fractional bits for OpenCV drawing
ONE = float(1 << SHIFT)
AA = cv2.LINE_AA

# The 68-point iBUG template (symmetric, mouth closed) in face units. Derived from the OpenFace
# mean shape (Apache-2.0): symmetrised, centred, inner lips closed.
TEMPLATE = np.array([
    (-0.4460, -0.2934), (-0.4438, -0.1747), (-0.4322, -0.0551), (-0.4086, +0.0627),
    (-0.3631, +0.1723), (-0.2923, +0.2686), (-0.2062, +0.3506), (-0.1095, +0.4175),
    (+0.0000, +0.4367), (+0.1095, +0.4175), (+0.2062, +0.3506), (+0.2923, +0.2686),
    (+0.3631, +0.1723), (+0.4086, +0.0627), (+0.4322, -0.0551), (+0.4438, -0.1747),
    (+0.4460, -0.2934), (-0.3535, -0.3819), (-0.2977, -0.4255), (-0.2231, -0.4367),
    (-0.1463, -0.4243), (-0.0736, -0.3934), (+0.0736, -0.3934), (+0.1463, -0.4243),
    (+0.2231, -0.4367), (+0.2977, -0.4255), (+0.3535, -0.3819), (+0.0000, -0.3054),
    (+0.0000, -0.2279), (+0.0000, -0.1503), (+0.0000, -0.0709), (-0.0867, -0.0213),
    (-0.0452, -0.0043), (+0.0000, +0.0102), (+0.0452, -0.0043), (+0.0867, -0.0213),
    (-0.2652, -0.2979), (-0.2187, -0.3324), (-0.1617, -0.3313), (-0.1138, -0.2877),
    (-0.1662, -0.2722), (-0.2218, -0.2729), (+0.1138, -0.2877), (+0.1617, -0.3313),
    (+0.2187, -0.3324), (+0.2652, -0.2979), (+0.2218, -0.2729), (+0.1662, -0.2722),
    (-0.1732, +0.1187), (-0.1103, +0.0933), (-0.0461, +0.0820), (+0.0000, +0.0930),
    (+0.0461, +0.0820), (+0.1103, +0.0933), (+0.1732, +0.1187), (+0.1128, +0.1836),
    (+0.0500, +0.2124), (+0.0000, +0.2176), (-0.0500, +0.2124), (-0.1128, +0.1836),
    (-0.1462, +0.1230), (-0.0466, +0.1368), (+0.0000, +0.1421), (+0.0466, +0.1368),
    (+0.1462, +0.1230), (+0.0475, +0.1368), (+0.0000, +0.1421), (-0.0475, +0.1368),
], np.float32)  # (68, 2)

# Index of each landmark's mirror image (subject's right <-> left).
MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)

# Depth of each landmark in front of the head's vertical axis (face units); yaw turns about it.
LANDMARK_Z = np.zeros(68, np.float32)
LANDMARK_Z[0:17] = 0.05 + 0.37 * np.sin(np.pi * np.arange(17) / 16)
LANDMARK_Z[17:27] = [0.30, 0.37, 0.42, 0.45, 0.46, 0.46, 0.45, 0.42, 0.37, 0.30]
LANDMARK_Z[27:36] = [0.44, 0.48, 0.53, 0.58, 0.47, 0.50, 0.52, 0.50, 0.47]
LANDMARK_Z[36:48] = [0.36, 0.40, 0.41, 0.40, 0.41, 0.40, 0.40, 0.41, 0.40, 0.36, 0.40, 0.41]
LANDMARK_Z[48:68] = [0.42, 0.46, 0.49, 0.50, 0.49, 0.46, 0.42, 0.45, 0.48, 0.49, 0.48, 0.45,
                     0.43, 0.47, 0.48, 0.47, 0.43, 0.47, 0.48, 0.47]


def _pose_matrix(pose, size):
    """(2, 3) matrix taking (x, y, depth) in face units to pixels, as `pose_points`; the last
    column of the returned (2, 4) holds the translation."""
    roll_deg, yaw_deg, scale, tx, ty = (float(v) for v in pose)
    yaw, roll = math.radians(yaw_deg), math.radians(roll_deg)
    k = scale * size
    cr, sr, cy, sy = k * math.cos(roll), k * math.sin(roll), math.cos(yaw), math.sin(yaw)
    c = 0.5 * (size - 1)
    return np.array([[cr * cy, -sr, cr * sy], [sr * cy, cr, sr * sy]], np.float32), \
        np.array([c + tx * size, c + ty * size], np.float32)


def pose_points(points, z, roll_deg, yaw_deg, scale, tx, ty, size):
    """Face units -> pixel (x, y): yaw about the head's vertical axis, roll, scale, translate.

    Pixel centres are at integer coordinates; the face origin lands at the image centre plus
    (tx, ty) * size. Positive roll turns the face clockwise on screen; positive yaw turns it
    toward the image's right.
    """
    yaw, roll = np.deg2rad(yaw_deg), np.deg2rad(roll_deg)
    x = points[..., 0] * np.cos(yaw) + z * np.sin(yaw)
    y = points[..., 1]
    k = scale * size
    cr, sr = k * np.cos(roll), k * np.sin(roll)
    c = 0.5 * (size - 1)
    out = np.empty(points.shape, np.float32)
    out[..., 0] = c + tx * size + cr * x - sr * y
    out[..., 1] = c + ty * size + sr * x + cr * y
    return out


# ---------------------------------------------------------------------------------------------
# Derived points. Each is (anchors_x @ landmarks_x, anchors_y @ landmarks_y) + offset, plus a
# per-subject offset field for identity parameters that only the drawing uses (brow thickness,
# hair). One matrix product per frame gives all of them.


class _Layout:
    def __init__(self, param_index):
        self.p = param_index
        self.wx, self.wy, self.off, self.z, self.field = [], [], [], [], []
        self.groups = {}

    def point(self, ax, off, z, ay=None, field=None):
        """One point: x = ax @ landmarks_x + off_x, y = ay @ landmarks_y + off_y (ay defaults to ax),
        depth z, plus field[name] * params[name] for the named identity parameters."""
        rows = []
        for anchors in (ax, ax if ay is None else ay):
            row = np.zeros(68, np.float32)
            for i, w in anchors.items():
                row[i] += w
            rows.append(row)
        f = np.zeros((len(self.p), 2), np.float32)
        for name, d in (field or {}).items():
            f[self.p[name]] += d
        return rows[0], rows[1], off, z, f

    def lerp(self, i, j, t):
        """A point (1 - t) * point_i + t * point_j of points already added."""
        return ((1 - t) * self.wx[i] + t * self.wx[j], (1 - t) * self.wy[i] + t * self.wy[j],
                tuple((1 - t) * np.float32(self.off[i]) + t * np.float32(self.off[j])),
                (1 - t) * self.z[i] + t * self.z[j], (1 - t) * self.field[i] + t * self.field[j])

    def add(self, name, pts):
        start = len(self.wx)
        for wx, wy, off, z, f in pts:
            self.wx.append(wx)
            self.wy.append(wy)
            self.off.append(off)
            self.z.append(z)
            self.field.append(f)
        self.groups[name] = np.arange(start, len(self.wx))

    def sided(self, name, make):
        """make(s, m): s = -1 for the subject's right (image left), +1 left; m mirrors indices."""
        right = make(-1.0, lambda i: i)
        left = make(1.0, lambda i: int(MIRROR[i]))
        self.add(name, right + left)
        idx = self.groups[name]
        self.groups[name + "_r"], self.groups[name + "_l"] = idx[: len(right)], idx[len(right):]


def _a(*idx):
    return {i: 1.0 / len(idx) for i in idx}


def build_layout(param_index):
    """All derived points; returns (wx, wy, off, z, field, groups). Deterministic, built once."""
    L = _Layout(param_index)
    pt = L.point

    # Skull outline (above the jaw's ends, over the top); its x follows the jaw's width.
    skull, skull_out, hair_top = [], [], []
    for t in np.linspace(0.0, np.pi, 15)[1:-1]:
        c, s_ = float(np.cos(t)), float(np.sin(t))
        ax = {16: 0.51 * c, 0: -0.51 * c}
        ay = _a(0, 16)
        skull.append(pt(ax, (0.0, -0.60 * s_), 0.0, ay))
        # Hair over the skull: volume grows with hair_style.
        skull_out.append(pt({16: 0.56 * c, 0: -0.56 * c}, (0.0, -0.66 * s_ + 0.02), -0.02, ay,
                            {"hair_style": (0.03 * c, -0.035 * s_)}))
    # The face outline: the jaw (landmarks 0-16) then the skull, as one polygon.
    L.add("face", [pt({i: 1.0}, (0.0, 0.0), float(LANDMARK_Z[i])) for i in range(17)] + skull)
    # Hairline across the forehead (from the left temple to the right temple).
    hairline = []
    for t in np.linspace(0.0, np.pi, 9):
        c, s_ = float(np.cos(t)), float(np.sin(t))
        hairline.append(pt({16: 0.50 * c, 0: -0.50 * c}, (0.0, -0.21 - 0.24 * s_ ** 0.7), 0.3 + 0.15 * s_,
                           _a(0, 16), {"hairline": (0.0, 0.10 * s_ ** 0.7)}))
    L.add("hair_top", skull_out + hairline[::-1])
    L.groups["hairline"] = L.groups["hair_top"][len(skull_out):][::-1]
    L.groups["skull_out"] = L.groups["hair_top"][: len(skull_out)]
    # Hair falling behind the head: down to the ears (short) or the shoulders (long).
    back = []
    for t in np.linspace(0.0, np.pi, 11):
        c, s_ = float(np.cos(t)), float(np.sin(t))
        back.append(pt({16: 0.58 * c, 0: -0.58 * c}, (0.0, -0.68 * s_ + 0.02), -0.1, _a(0, 16),
                       {"hair_style": (0.04 * c, -0.03 * s_)}))
    sides = []
    for s in (-1.0, 1.0):
        for k, (x, y) in enumerate(((0.60, 0.15), (0.56, 0.45), (0.40, 0.52))):
            sides.append(pt({}, (s * x, y), -0.1, None, {"hair_style": (s * 0.02 * k, 0.45 * (k > 0) + 0.45)}))
    L.add("hair_back", back + sides[:3] + sides[3:][::-1])

    # Ears, neck and clothes.
    def ear(s, m):
        pts = []
        for t in np.linspace(0.0, 2 * np.pi, 10)[:-1]:
            pts.append(pt({m(1): 1.0}, (s * (0.015 + 0.05 * np.cos(t)), -0.07 + 0.115 * np.sin(t)), -0.05))
        return pts
    L.sided("ear", ear)
    L.add("neck", [pt({4: 0.75}, (0.0, 0.0), 0.0, {4: 1.0}), pt({4: 0.7}, (0.0, 0.62), 0.0, {}),
                   pt({}, (-0.12, 0.74), 0.0), pt({}, (0.12, 0.74), 0.0),
                   pt({12: 0.7}, (0.0, 0.62), 0.0, {}), pt({12: 0.75}, (0.0, 0.0), 0.0, {12: 1.0})])
    clothes = [(-0.26, 0.56), (-0.62, 0.68), (-0.92, 0.86), (-1.05, 1.20), (-1.05, 1.70),
               (1.05, 1.70), (1.05, 1.20), (0.92, 0.86), (0.62, 0.68), (0.26, 0.56), (0.0, 0.80)]
    L.add("clothes", [pt({}, c, -0.1) for c in clothes])

    # Brows: a band around 17-21, thickest in the middle; brow_thickness widens it.
    prof = (0.45, 0.85, 1.0, 1.0, 0.85)

    def brow(s, m):
        top = [pt({m(17 + k): 1.0}, (0.0, -0.013 * prof[k]), 0.4, None,
                  {"brow_thickness": (0.0, -0.006 * prof[k])}) for k in range(5)]
        bot = [pt({m(21 - k): 1.0}, (s * 0.004 * (k == 4), 0.011 * prof[4 - k]), 0.4, None,
                  {"brow_thickness": (0.0, 0.005 * prof[4 - k])}) for k in range(5)]
        return top + bot
    L.sided("brows", brow)

    # Eyelid covers: skin above the upper lid and below the lower lid, clipping the iris.
    def lid(up):
        def make(s, m):
            lids = (37, 38) if up else (41, 40)
            d = -0.075 if up else 0.065
            return [pt({m(36): 1.0}, (s * 0.03, 0.003), 0.36), pt({m(36): 1.0}, (0.0, 0.0), 0.36),
                    pt({m(lids[0]): 1.0}, (0.0, 0.0), 0.4), pt({m(lids[1]): 1.0}, (0.0, 0.0), 0.41),
                    pt({m(39): 1.0}, (0.0, 0.0), 0.4), pt({m(39): 1.0}, (-s * 0.025, 0.003), 0.4),
                    pt({m(39): 1.0}, (-s * 0.025, d), 0.4), pt({m(36): 1.0}, (s * 0.03, d), 0.36)]
        return make
    L.sided("lid_up", lid(True))
    L.sided("lid_low", lid(False))
    # Upper-lid shadow: the lid line 36-39 and back along the crease (its last 4 points).
    L.sided("lid_shadow", lambda s, m: [pt({m(i): 1.0}, (0.0, 0.0), 0.4) for i in (36, 37, 38, 39)] + [
        pt({m(39): 0.7, m(38): 0.3}, (0.0, -0.010), 0.4), pt({m(38): 1.0}, (0.0, -0.019), 0.4),
        pt({m(37): 1.0}, (0.0, -0.019), 0.4), pt({m(36): 0.7, m(37): 0.3}, (0.0, -0.010), 0.4)])
    L.sided("lower_lid", lambda s, m: [pt({m(i): 1.0}, (0.0, 0.0), 0.4) for i in (39, 40, 41, 36)])
    # Lips: upper and lower lip polygons and the lower inner lip line.
    L.add("upper_lip", [pt({i: 1.0}, (0.0, 0.0), float(LANDMARK_Z[i]))
                        for i in (48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60)])
    L.add("lower_lip", [pt({i: 1.0}, (0.0, 0.0), float(LANDMARK_Z[i]))
                        for i in (54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64)])
    L.add("lower_inner", [pt({i: 1.0}, (0.0, 0.0), float(LANDMARK_Z[i])) for i in (64, 65, 66, 67, 60)])
    L.sided("iris", lambda s, m: [pt(_a(m(36), m(39)), (0.0, -0.003), 0.44)])

    # Nose.
    L.sided("nostril", lambda s, m: [
        pt({m(32): 0.55, m(31): 0.45}, (s * 0.016, -0.003), 0.5),
        pt({m(32): 0.55, m(31): 0.45}, (0.0, -0.010), 0.5),
        pt({m(32): 0.55, m(31): 0.45}, (-s * 0.016, -0.004), 0.5),
        pt({m(32): 0.55, m(31): 0.45}, (0.0, 0.002), 0.5)])
    L.sided("ala", lambda s, m: [
        pt({m(31): 1.0}, (-s * 0.006, 0.006), 0.47), pt({m(31): 1.0}, (s * 0.012, -0.010), 0.47),
        pt({m(31): 1.0}, (s * 0.008, -0.036), 0.47), pt({m(31): 1.0}, (-s * 0.010, -0.050), 0.47)])
    L.sided("nose_side", lambda s, m: [
        pt({27: 1.0}, (s * 0.034, 0.012), 0.44), pt({28: 1.0}, (s * 0.036, 0.0), 0.46),
        pt({29: 1.0}, (s * 0.042, 0.0), 0.5), pt({m(31): 1.0}, (-s * 0.006, -0.05), 0.47)])

    # Wrinkles; how dark each is comes from the action units at draw time.
    centre = []
    for k in range(3):
        for x in (-0.12, -0.06, 0.0, 0.06, 0.12):
            bend = -0.012 * (1.0 - (x / 0.13) ** 2)
            centre.append(pt({}, (x, -0.085 - 0.040 * k + bend), 0.45, _a(20, 21, 22, 23)))
    L.add("forehead_c", centre)

    def lateral(s, m):
        return [pt({}, (s * x, -0.072 - 0.040 * k - 0.012 * j), 0.42, _a(m(18), m(19)))
                for k in range(3) for j, x in enumerate((0.10, 0.19, 0.28))]
    L.sided("forehead_l", lateral)
    L.add("glabella", [pt(_a(21, 22), (-0.020, 0.0), 0.46), pt(_a(21, 22), (-0.012, -0.060), 0.46),
                       pt(_a(21, 22), (0.020, 0.0), 0.46), pt(_a(21, 22), (0.012, -0.060), 0.46)])
    L.add("nose_wr", [pt({27: 1.0}, (x, 0.015 + 0.022 * k + 0.007 * (x != 0.0)), 0.46)
                      for k in range(3) for x in (-0.036, 0.0, 0.036)])
    L.sided("nasolabial", lambda s, m: [
        pt({m(31): 1.0}, (s * 0.022, -0.012), 0.46),
        pt({m(31): 0.72, m(48): 0.28}, (s * 0.048, 0.006), 0.44),
        pt({m(31): 0.32, m(48): 0.68}, (s * 0.050, 0.008), 0.43),
        pt({m(48): 1.0}, (s * 0.030, 0.032), 0.42)])
    L.sided("crows", lambda s, m: [
        pt({m(36): 1.0}, (s * 0.014, -0.008), 0.34), pt({m(36): 1.0}, (s * 0.048, -0.030), 0.3),
        pt({m(36): 1.0}, (s * 0.018, 0.002), 0.34), pt({m(36): 1.0}, (s * 0.056, 0.004), 0.3),
        pt({m(36): 1.0}, (s * 0.014, 0.010), 0.34), pt({m(36): 1.0}, (s * 0.046, 0.034), 0.3)])
    L.sided("undereye", lambda s, m: [
        pt({m(36): 1.0}, (-s * 0.004, 0.010), 0.38), pt({m(41): 1.0}, (0.0, 0.018), 0.4),
        pt({m(40): 1.0}, (0.0, 0.018), 0.4), pt({m(39): 1.0}, (s * 0.004, 0.008), 0.4)])
    L.sided("dimple", lambda s, m: [
        pt({m(48): 1.0}, (s * 0.014, -0.016), 0.42), pt({m(48): 1.0}, (s * 0.022, 0.0), 0.42),
        pt({m(48): 1.0}, (s * 0.016, 0.018), 0.42)])
    L.add("chin", [pt({57: 1.0}, (-0.045, 0.050), 0.45), pt({57: 1.0}, (0.0, 0.062), 0.47),
                   pt({57: 1.0}, (0.045, 0.050), 0.45)])

    # Mouth: teeth strips under the upper inner lip and over the lower one; inner lip loop.
    up, low = (60, 61, 62, 63, 64), (64, 65, 66, 67, 60)
    L.add("teeth_up", [pt({i: 1.0}, (0.0, 0.0), 0.45) for i in up]
          + [pt({i: 1.0}, (0.0, 0.036), 0.44) for i in reversed(up)])
    L.add("teeth_low", [pt({i: 1.0}, (0.0, 0.0), 0.45) for i in low]
          + [pt({i: 1.0}, (0.0, -0.026), 0.44) for i in reversed(low)])

    # Beard: the lower face under a line over the upper lip and across the cheeks.
    jaw = [pt({i: 1.0}, (0.0, 0.0), float(LANDMARK_Z[i])) for i in range(3, 14)]
    upper = [pt({13: 0.8, 54: 0.2}, (0.0, -0.04), 0.4, {13: 0.8, 54: 0.2}),
             pt({54: 1.0}, (0.022, -0.026), 0.45), pt({53: 1.0}, (0.0, -0.030), 0.48),
             pt({51: 0.5, 33: 0.5}, (0.0, 0.004), 0.5), pt({49: 1.0}, (0.0, -0.030), 0.48),
             pt({48: 1.0}, (-0.022, -0.026), 0.45),
             pt({3: 0.8, 48: 0.2}, (0.0, -0.04), 0.4, {3: 0.8, 48: 0.2})]
    L.add("beard", jaw + upper)

    # Glasses: two rounded frames around the eyes, a bridge and the temples.
    def frame(s, m):
        pts = []
        for t in np.linspace(0.0, 2 * np.pi, 15)[:-1]:
            c, s_ = np.cos(t), np.sin(t)
            x = 0.108 * np.sign(c) * abs(c) ** 0.6
            y = 0.072 * np.sign(s_) * abs(s_) ** 0.7
            pts.append(pt(_a(m(36), m(39)), (float(x), float(y) + 0.008), 0.47))
        return pts
    L.sided("glasses", frame)
    L.add("glasses_bridge", [pt(_a(36, 39), (0.098, -0.018), 0.48), pt({27: 1.0}, (0.0, 0.0), 0.5),
                             pt(_a(42, 45), (-0.098, -0.018), 0.48)])
    L.add("glasses_temple", [pt(_a(36, 39), (-0.108, -0.01), 0.45), pt({0: 1.0}, (0.01, 0.005), 0.05),
                             pt(_a(42, 45), (0.108, -0.01), 0.45), pt({16: 1.0}, (-0.01, 0.005), 0.05)])

    # Hair strands: short curves between the crown and the hairline.
    so, hl = L.groups["skull_out"], L.groups["hairline"]
    strands = []
    for i in (2, 4, 6, 8, 10):
        j = int(round(i * (len(hl) - 1) / (len(so) - 1)))
        strands += [L.lerp(int(so[i]), int(hl[j]), t) for t in (0.2, 0.55, 0.9)]
    L.add("strands", strands)
    # Centre of the head ellipsoid used for shading.
    L.add("centre", [pt({}, (0.0, -0.1), 0.0)])

    wx, wy = np.array(L.wx, np.float32), np.array(L.wy, np.float32)
    off, z = np.array(L.off, np.float32), np.array(L.z, np.float32)
    groups = {}
    for name, idx in L.groups.items():  # offset past the 68 landmarks; slices where contiguous
        idx = np.asarray(idx) + 68
        contiguous = len(idx) > 0 and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))
        groups[name] = slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else idx
    field = np.array(L.field, np.float32).transpose(1, 0, 2).reshape(len(param_index), -1)  # (P, 2K)
    return wx, wy, off, z, field, groups


# ---------------------------------------------------------------------------------------------
# Colours (RGB, 0-255). Every colour of a scene is coeff_skin * skin + coeff_hair * hair +
# coeff_iris * iris + constant, times the session's white balance, computed in one go.

SKIN = np.array([(78, 52, 38), (120, 80, 58), (168, 120, 90), (210, 164, 132), (240, 206, 182)], np.float32)
HAIR = np.array([(18, 14, 12), (52, 34, 22), (96, 62, 36), (140, 96, 56), (190, 156, 100), (224, 204, 156)],
                np.float32)
IRIS = np.array([(34, 24, 18), (84, 54, 30), (86, 104, 64), (76, 108, 150)], np.float32)
GREY_HAIR = np.array([175, 172, 168], np.float32)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)

_LIPS = (0.86, 0.58, 0.58)
_COLOURS = {  # name: (skin coeff, hair coeff, iris coeff, constant)
    "skin": (1.0, 0, 0, 0),
    "ear": (0.9, 0, 0, 0),
    "neck": (0.78, 0, 0, 0),
    "lid_shadow": (0.88, 0, 0, 0),
    "crease": (0.74, 0, 0, 0),
    "lash": (0.05, 0.15, 0, 6.0),
    "brow": (0.08, 0.75, 0, 0),
    "hair": (0, 1.0, 0, 0),
    "strand": (0, 0.7, 0, 0),
    "iris": (0, 0, 1.0, 0),
    "pupil": (0, 0, 0, (10, 8, 8)),
    "sclera": (0, 0, 0, (236, 230, 224)),
    "nostril": (0.38, 0, 0, 0),
    "nose_line": (0.84, 0, 0, 0),
    "nose_dark": (0.92, 0, 0, 0),
    "lips": (_LIPS, 0, 0, (18, 0, 4)),
    "lip_line": (tuple(0.55 * c for c in _LIPS), 0, 0, (10, 0, 2)),
    "cavity": (0, 0, 0, (58, 22, 26)),
    "teeth": (0, 0, 0, (232, 226, 208)),
    "beard": (0.62, 0.3, 0, 0),
    "glasses": (0, 0, 0, 0),  # random per session
    "clothes": (0, 0, 0, 0),  # random per session
    "occluder": (0, 0, 0, 0),  # random per session
    "background": (0, 0, 0, 0),  # random per session
}
_CNAMES = tuple(_COLOURS)
_CK = np.array([[np.broadcast_to(np.float32(v[k]), 3) for k in range(4)] for v in _COLOURS.values()],
               np.float32)  # (N, 4, 3)
_RANDOM_ROWS = [_CNAMES.index(n) for n in ("glasses", "clothes", "occluder", "background")]


def _ramp(palette, t):
    """Linear interpolation along a palette (N, 3) for t in [0, 1]."""
    t = min(max(t, 0.0), 1.0) * (len(palette) - 1)
    i = min(int(t), len(palette) - 2)
    f = t - i
    return palette[i] * (1.0 - f) + palette[i + 1] * f


# Session draws: one vector of uniforms per still or sequence, sliced by name.
_U = {}
for _name, _n in (("tint", 3), ("light", 2), ("ambient", 1), ("gradient", 2), ("exposure", 1), ("noise", 1),
                  ("blur", 1), ("jpeg", 2), ("occluder", 7), ("occlude", 1), ("gaze", 2), ("glasses", 4),
                  ("clothes", 3), ("background", 3), ("shapes", 1 + 6 * 8)):
    _U[_name] = slice(sum(s.stop - s.start for s in _U.values()), sum(s.stop - s.start for s in _U.values()) + _n)
_NU = sum(s.stop - s.start for s in _U.values())
OCCLUSION_RATE = 0.08

# Sensor noise: crops of one fixed field of unit Gaussian noise (drawing 4k normals per frame
# would cost more than drawing the face); the crop offset comes from the frame's generator.
_NOISE = np.random.default_rng(20240611).standard_normal((640, 640), dtype=np.float32)

_SHADE_RES = 16  # the lighting is computed on a 16 x 16 grid and resized
_GRIDS = {}


def _grid(size):
    if size not in _GRIDS:
        c = ((np.arange(_SHADE_RES, dtype=np.float32) + 0.5) * size / _SHADE_RES - 0.5)
        g = np.linspace(-1.0, 1.0, _SHADE_RES, dtype=np.float32)
        _GRIDS[size] = (c, g)
    return _GRIDS[size]


_ASSETS = collections.OrderedDict()  # a small cache: datasets render many samples per subject


def _subject_assets(params, param_index, layout):
    """What depends only on the subject: point offsets, the depth column, base colours, age."""
    key = (params.tobytes(), id(layout), id(param_index))
    if key in _ASSETS:
        _ASSETS.move_to_end(key)
        return _ASSETS[key][0]
    value = _make_subject_assets(np.asarray(params, np.float32), param_index, layout)
    _ASSETS[key] = (value, layout, param_index)  # holding them keeps their ids valid
    if len(_ASSETS) > 64:
        _ASSETS.popitem(last=False)
    return value


def _make_subject_assets(params, P, layout):
    _, _, off, z, field, _ = layout
    K = off.shape[0]
    off = off + (params @ field).reshape(K, 2)
    p3 = np.empty((68 + K, 3), np.float32)
    p3[:, 2] = np.concatenate([LANDMARK_Z, z])
    age = max(0.0, float(params[P["age"]]))
    tone = 0.5 * (float(params[P["skin_tone"]]) + 1.0)
    skin = _ramp(SKIN, tone)
    hair = _ramp(HAIR, 0.5 * (float(params[P["hair_colour"]]) + 1.0) * (0.3 + 0.7 * tone))
    if age > 0.55:  # greying
        hair = hair + min(1.0, (age - 0.55) * 1.6) * (GREY_HAIR - hair)
    iris = _ramp(IRIS, 0.5 * (float(params[P["iris_colour"]]) + 1.0))
    C = _CK[:, 0] * skin + _CK[:, 1] * hair + _CK[:, 2] * iris + _CK[:, 3]
    for a in (off, p3, C, skin):
        a.flags.writeable = False
    return off, p3, C, skin, age


class Scene:
    """Everything fixed within one still or one sequence: the subject's look and the session.

    Args:
        params: identity parameter vector; param_index maps names to positions.
        glasses, beard: the subject's accessories.
        rng: the sample's or sequence's generator; one vector of uniforms is drawn here and the
            sensor noise of each frame later.
        size, grey: output image.
        occlusion: True, False or None (an occluder with probability OCCLUSION_RATE).
        layout: the result of `build_layout`.
    """

    def __init__(self, params, param_index, glasses, beard, rng, size, grey, occlusion, layout):
        self.size, self.grey = size, grey
        self.wx, self.wy, _, _, _, self.g = layout
        self.off, self._p3, C, skin, self.age = _subject_assets(params, param_index, layout)
        self._p3 = self._p3.copy()  # x, y, depth of every point; x and y are filled per frame
        self.glasses, self.beard = glasses, beard
        u = rng.random(_NU)
        ul = u.tolist()

        # Colours: the subject's (cached) times this session's white balance, plus random ones.
        C = C.copy()
        C[_RANDOM_ROWS] = u[_U["glasses"]][:3] * 60.0 + 10.0, u[_U["clothes"]] * 210 + 20, \
            u[_U["occluder"]][4:7] * 210 + 20, u[_U["background"]] * 190 + 30
        C *= 1.0 + (u[_U["tint"]] - 0.5) * 0.16
        np.minimum(np.maximum(C, 0.0, out=C), 255.0, out=C)
        if grey:
            C = C @ LUMA
            self.col = {n: (v,) for n, v in zip(_CNAMES, C.tolist())}
        else:
            self.col = {n: tuple(v) for n, v in zip(_CNAMES, C.tolist())}
        self.skin = self.col["skin"]

        # Lines, eyes.
        self.th = max(1, int(round(size / 96.0)))
        self.th_lash = max(1, int(round(size / 90.0)))
        gz = u[_U["gaze"]]
        self.gaze = np.float32([(gz[0] - 0.5) * 0.024, (gz[1] - 0.5) * 0.012])
        self.iris_r, self.pupil_r = 0.029, 0.011

        # Lighting: a head-sized ellipsoid lit from one side, an overall gradient, exposure.
        lx, ly = ul[_U["light"].start] * 1.6 - 0.8, ul[_U["light"].start + 1] - 0.7
        lz = math.sqrt(max(0.15, 1.0 - lx * lx - ly * ly))
        n = math.sqrt(lx * lx + ly * ly + lz * lz)
        self.light = (lx / n, ly / n, lz / n)
        self.light_side = 1.0 if lx > 0 else -1.0
        ambient = 0.45 + 0.3 * ul[_U["ambient"].start]
        self._shade_a, self._shade_b = np.float32((1.0 - ambient) * 1.25), np.float32(ambient * 1.25 - 1.0)
        gx, gy = ul[_U["gradient"].start] * 0.36 - 0.18, ul[_U["gradient"].start + 1] * 0.3 - 0.15
        # Exposure: the camera's auto-exposure pulls dark skin up part of the way, then a random error.
        skin_luma = float(skin @ LUMA)
        exposure = min(1.5, max(0.95, (150.0 / skin_luma) ** 0.4)) * (0.85 + 0.3 * ul[_U["exposure"].start])
        self.coords, g = _grid(size)
        self.global_light = np.add.outer(g * np.float32(exposure * gy), g * np.float32(exposure * gx))
        self.global_light += np.float32(exposure)
        self.noise = np.float32(1.0 + 4.5 * ul[_U["noise"].start])
        self.blur = (0.3 + 0.5 * ul[_U["blur"].start]) * math.sqrt(size / 64.0)
        j = _U["jpeg"].start
        self.jpeg = int(30 + 65 * ul[j + 1]) if ul[j] < 0.7 else 0
        occ = ul[_U["occlude"].start] < OCCLUSION_RATE if occlusion is None else bool(occlusion)
        o = _U["occluder"].start
        self.occluder = (min(2, int(3 * ul[o])), [2.0 * v - 1.0 for v in ul[o + 1:o + 4]]) if occ else None
        self.bg = self._background(ul[_U["shapes"].start:_U["shapes"].stop])

    def _mix(self, k):
        """Skin darkened by the factor (1 - k): wrinkles and creases."""
        return tuple(v * (1.0 - k) for v in self.skin)

    def _background(self, ul):
        S = self.size
        shape = (S, S) if self.grey else (S, S, 3)
        base = self.col["background"]
        img = np.empty(shape, np.uint8)
        img[...] = base
        grey = self.grey
        for i in range(1 + int(ul[0] * 6)):
            v = ul[1 + 8 * i: 9 + 8 * i]
            if grey:
                c = (min(255.0, max(0.0, base[0] + (v[0] - 0.5) * 180.0)),)
            else:
                c = tuple(min(255.0, max(0.0, b + (d - 0.5) * 180.0)) for b, d in zip(base, v[0:3]))
            kind = int(v[3] * 4)
            x, y = (v[4] * 1.2 - 0.1) * S * ONE, (v[5] * 1.2 - 0.1) * S * ONE
            w, h = (0.05 + 0.55 * v[6]) * S * ONE, (0.05 + 0.55 * v[7]) * S * ONE
            if kind == 0:
                cv2.circle(img, (int(x), int(y)), int(0.5 * w), c, -1, AA, SHIFT)
            elif kind == 1:
                cv2.line(img, (int(x), int(y)), (int(x + w), int(y - h)), c, max(1, int(0.06 * h / ONE)), AA, SHIFT)
            elif kind == 2:
                cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), c, max(1, int(0.03 * h / ONE)), AA,
                              SHIFT)
            else:
                cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), c, -1, AA, SHIFT)
        return img

    def draw(self, lm, aus_r, aus_l, au_index, pose, rng):
        """Renders one frame.

        Args:
            lm: (68, 2) landmarks in face units.
            aus_r, aus_l: per-side AU intensities (subject's right, left); au_index maps AU -> column.
            pose: (roll_deg, yaw_deg, scale, tx, ty).
            rng: draws the sensor noise.

        Returns:
            (image uint8 (S, S) or (S, S, 3), landmarks (68, 2) in pixels).
        """
        S = self.size
        p3 = self._p3
        p3[:68, :2] = lm
        p3[68:, 0] = self.wx @ lm[:, 0]
        p3[68:, 1] = self.wy @ lm[:, 1]
        p3[68:, :2] += self.off
        m, t = _pose_matrix(pose, S)
        px = p3 @ m.T + t  # (68 + K, 2) pixels
        q = np.rint(px * ONE).astype(np.int32)
        g, col, th = self.g, self.col, self.th
        fill, lines = cv2.fillPoly, cv2.polylines

        img = self.bg.copy()
        fill(img, [q[g["hair_back"]]], col["hair"], AA, SHIFT)
        fill(img, [q[g["clothes"]]], col["clothes"], AA, SHIFT)
        fill(img, [q[g["neck"]]], col["neck"], AA, SHIFT)
        fill(img, [q[g["ear_r"]], q[g["ear_l"]]], col["ear"], AA, SHIFT)
        fill(img, [q[g["face"]]], col["skin"], AA, SHIFT)

        # Nose: the bridge's side away from the light, alar creases, nostrils, base.
        far, near = ("nose_side_l", "nose_side_r") if self.light_side < 0 else ("nose_side_r", "nose_side_l")
        lines(img, [q[g[far]], q[g["ala_r"]], q[g["ala_l"]], q[31:36]], False, col["nose_line"], th, AA, SHIFT)
        lines(img, [q[g[near]]], False, col["nose_dark"], th, AA, SHIFT)
        fill(img, [q[g["nostril_r"]], q[g["nostril_l"]]], col["nostril"], AA, SHIFT)

        # Wrinkles: each group darker with its action units (and a little with age).
        self._wrinkles(img, q, aus_r, aus_l, au_index)

        # Eyes: sclera, iris, pupil, then the lids over them.
        fill(img, [q[36:42], q[42:48]], col["sclera"], AA, SHIFT)
        k = S * pose[2] * ONE
        ir, pr = int(self.iris_r * k + 0.5), int(self.pupil_r * k + 0.5)
        gx, gy = (self.gaze * k).tolist()
        for c in q[g["iris"]].tolist():
            c = (int(c[0] + gx), int(c[1] + gy))
            cv2.circle(img, c, ir, col["iris"], -1, AA, SHIFT)
            cv2.circle(img, c, pr, col["pupil"], -1, AA, SHIFT)
        fill(img, [q[g["lid_up_r"]], q[g["lid_up_l"]], q[g["lid_low_r"]], q[g["lid_low_l"]]], col["skin"], AA,
             SHIFT)
        sr, sl = q[g["lid_shadow_r"]], q[g["lid_shadow_l"]]
        fill(img, [sr, sl], col["lid_shadow"], AA, SHIFT)
        lines(img, [sr[4:], sl[4:], q[g["lower_lid_r"]], q[g["lower_lid_l"]]], False, col["crease"], th, AA, SHIFT)
        lines(img, [q[36:40], q[42:46]], False, col["lash"], self.th_lash, AA, SHIFT)
        fill(img, [q[g["brows_r"]], q[g["brows_l"]]], col["brow"], AA, SHIFT)

        if self.beard:
            fill(img, [q[g["beard"]]], col["beard"], AA, SHIFT)

        # Mouth: cavity and teeth when the lips part, then the lips.
        y = lm[:, 1].tolist()
        gap = max(y[67] - y[61], y[66] - y[62], y[65] - y[63])
        if gap > 0.004:
            fill(img, [q[60:68]], col["cavity"], AA, SHIFT)
            fill(img, [q[g["teeth_up"]]], col["teeth"], AA, SHIFT)
            if gap > 0.045:
                fill(img, [q[g["teeth_low"]]], col["teeth"], AA, SHIFT)
        fill(img, [q[g["upper_lip"]], q[g["lower_lip"]]], col["lips"], AA, SHIFT)
        lines(img, [q[60:65], q[g["lower_inner"]]], False, col["lip_line"], th, AA, SHIFT)

        # Hair over the skull and forehead; strands only where they are big enough to see.
        fill(img, [q[g["hair_top"]]], col["hair"], AA, SHIFT)
        if S >= 96:
            st = q[g["strands"]]
            lines(img, [st[i:i + 3] for i in range(0, len(st), 3)], False, col["strand"], th, AA, SHIFT)

        if self.glasses:
            lines(img, [q[g["glasses_r"]], q[g["glasses_l"]]], True, col["glasses"], th, AA, SHIFT)
            tl = q[g["glasses_temple"]]
            lines(img, [q[g["glasses_bridge"]], tl[0:2], tl[2:4]], False, col["glasses"], th, AA, SHIFT)
        if self.occluder is not None:
            self._occlude(img, px)
        return self._finish(img, px[g["centre"]][0], pose[2], rng), px[:68]

    def _wrinkles(self, img, q, ar, al, au_index):
        """Draws the AU-dependent wrinkles, one polylines call per (quantised) darkness."""
        g, age = self.g, self.age
        i1, i2, i4, i6, i7, i9, i10, i12, i14, i17 = (au_index[a] for a in (1, 2, 4, 6, 7, 9, 10, 12, 14, 17))
        ar, al = ar.tolist(), al.tolist()
        levels = {}

        def add(k, curves):
            if k > 0.06:
                levels.setdefault(min(8, int(k * 8.0 + 0.5)), []).extend(curves)

        fc = q[g["forehead_c"]]
        add(0.9 * max(ar[i1], al[i1]) + 0.25 * age, (fc[0:5], fc[5:10], fc[10:15]))
        for a, side in ((ar, "_r"), (al, "_l")):
            fl = q[g["forehead_l" + side]]
            add(0.9 * a[i2] + 0.2 * age, (fl[0:3], fl[3:6], fl[6:9]))
            add(0.35 * a[i6] + 0.55 * a[i10] + 0.7 * a[i12] + 0.3 * age, (q[g["nasolabial" + side]],))
            c = q[g["crows" + side]]
            add(0.9 * a[i6] + 0.25 * age - 0.02, (c[0:2], c[2:4], c[4:6]))
            add(0.7 * a[i6] + 0.5 * a[i7] + 0.2 * age, (q[g["undereye" + side]],))
            add(0.9 * a[i14] - 0.02, (q[g["dimple" + side]],))
        gl = q[g["glabella"]]
        add(0.9 * max(ar[i4], al[i4]), (gl[0:2], gl[2:4]))
        nw = q[g["nose_wr"]]
        add(0.9 * max(ar[i9], al[i9]), (nw[0:3], nw[3:6], nw[6:9]))
        add(0.8 * max(ar[i17], al[i17]) + 0.15 * age - 0.02, (q[g["chin"]],))
        th = self.th
        for level, curves in levels.items():
            cv2.polylines(img, curves, False, self._mix(0.05 * level), th, AA, SHIFT)

    def _occlude(self, img, px):
        kind, u = self.occluder
        S, th, c = self.size, self.th, self.col["occluder"]
        if kind == 0:  # a hand over the mouth or a cheek
            side = 0.6 * u[0]
            centre = px[57] * (1.0 - abs(side)) + px[3 if side < 0 else 13] * abs(side)
            centre = centre + (px[8] - px[33]) * 0.15 * u[1]
            w = float(np.linalg.norm(px[54] - px[48])) * (0.75 + 0.2 * u[2])
            down = px[8] - px[27]
            ang = float(np.degrees(np.arctan2(down[1], down[0]))) - 90.0
            cen = tuple(int(v) for v in np.rint(centre * ONE))
            cv2.ellipse(img, cen, (int(w * ONE), int(w * 0.62 * ONE)), ang, 0, 360, self.skin, -1, AA, SHIFT)
            d = np.array([np.cos(np.radians(ang)), np.sin(np.radians(ang))])
            n = np.array([-d[1], d[0]])
            fingers = [np.rint(np.array([centre + n * w * f - d * w * 0.7, centre + n * w * f + d * w * 0.5])
                               * ONE).astype(np.int32) for f in (-0.3, 0.0, 0.3)]
            cv2.polylines(img, fingers, False, self._mix(0.3), th, AA, SHIFT)
        elif kind == 1:  # a bar (pen, microphone, strap) across an eye or the mouth
            p0 = px[(36, 48, 45, 54)[min(3, int((u[0] + 1.0) * 2.0))]]
            ang = np.radians(70.0 * u[1])
            d = np.array([np.cos(ang), np.sin(ang)]) * S * 0.45
            w = max(2, int(S * (0.06 + 0.05 * abs(u[2]))))
            a0 = tuple(int(v) for v in np.rint((p0 - d) * ONE))
            a1 = tuple(int(v) for v in np.rint((p0 + d) * ONE))
            cv2.line(img, a0, a1, c, w, AA, SHIFT)
        else:  # a scarf up to the lower lip
            top = float(px[57][1] + (px[57][1] - px[33][1]) * (0.1 * u[0] + 0.1))
            x0, x1 = float(px[2][0]) - 0.05 * S, float(px[14][0]) + 0.05 * S
            mid = 0.5 * (x0 + x1)
            pts = np.array([(x0, top), (mid, top + 0.04 * S * u[1]), (x1, top),
                            (x1 + 0.1 * S, 1.1 * S), (x0 - 0.1 * S, 1.1 * S)])
            cv2.fillPoly(img, [np.rint(pts * ONE).astype(np.int32)], c, AA, SHIFT)

    def _finish(self, img, centre, scale, rng):
        """Blur, lighting (ellipsoid shading, gradient, exposure), sensor noise, JPEG."""
        S = self.size
        img = cv2.GaussianBlur(img, (0, 0), self.blur)
        k = scale * S
        c = self.coords
        u = (c - centre[0]) * np.float32(1.0 / (0.52 * k))
        v = (c - centre[1]) * np.float32(1.0 / (0.66 * k))
        r2 = np.add.outer(v * v, u * u)
        lx, ly, lz = self.light
        nz = np.sqrt(np.maximum(1.0 - r2, 0.0))
        lam = np.maximum(np.add.outer(v * ly, u * lx) + nz * lz, 0.0)  # Lambert on the head ellipsoid
        w = np.minimum(np.maximum(5.5 - 5.0 * np.sqrt(r2), 0.0), 1.0)  # fades out just outside the head
        shade = (lam * self._shade_a + self._shade_b) * w
        shade += 1.0
        shade *= self.global_light
        shade = cv2.resize(shade, (S, S), interpolation=cv2.INTER_LINEAR)
        ox, oy = rng.integers(0, _NOISE.shape[0] - S, 2).tolist()
        noise = _NOISE[oy:oy + S, ox:ox + S]
        if self.grey:  # img * shade + noise, rounded and saturated to uint8
            f = cv2.multiply(img, shade, dtype=cv2.CV_32F)
            out = cv2.addWeighted(f, 1.0, noise, float(self.noise), 0.0, dtype=cv2.CV_8U)
        else:
            f = img * shade[..., None]
            f += noise[..., None] * self.noise
            f += 0.5
            np.minimum(np.maximum(f, 0.0, out=f), 255.0, out=f)
            out = f.astype(np.uint8)
        if self.jpeg:
            bgr = out if self.grey else out[..., ::-1]
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg])
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE if self.grey else cv2.IMREAD_COLOR)
            if not self.grey:
                out = np.ascontiguousarray(out[..., ::-1])
        return out


_UPPER_LIP = np.array([48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60])
_LOWER_LIP = np.array([54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64])
_LOWER_INNER = np.array([64, 65, 66, 67, 60])
