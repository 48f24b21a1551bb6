"""Tests for SynthFER (fer_keras.data.synth): determinism, ground truth, shapes, sequences."""

import cv2
import numpy as np
import pytest

from fer_keras.data import synth
from fer_keras.labels import EMOTIONS

# The EMFACS prototypes of shared/FACS.md (optional AUs in parentheses there are left out).
FACS_PROTOTYPES = {
    "happiness": {6, 12},
    "sadness": {1, 4, 15},
    "surprise": {1, 2, 5, 26},
    "fear": {1, 2, 4, 5, 7, 20, 26},
    "anger": {4, 5, 7, 23},
    "disgust": {9, 15, 16},
    "contempt": {12, 14},
    "neutral": set(),
}
STILL_KEYS = {"image", "landmarks", "aus", "emotion", "intensity", "subject_id", "identity", "pose"}
SEQUENCE_KEYS = {"frames", "landmarks", "aus", "pose", "emotion", "intensity", "subject_id", "identity",
                 "apex_index"}


def col(au):
    return synth.AUS.index(au)


def test_constants():
    assert set(synth.AUS) >= {1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26}
    assert len(synth.IDENTITY_PARAMS) >= 12 and len(set(synth.IDENTITY_PARAMS)) == len(synth.IDENTITY_PARAMS)
    assert synth.EMOTIONS == EMOTIONS and len(EMOTIONS) == 8


def test_still_is_byte_identical_when_repeated():
    subject = synth.make_subject(3, seed=7)
    a = synth.render_still(subject, "fear", sample_index=2, seed=7, size=64, grey=False)
    b = synth.render_still(synth.make_subject(3, seed=7), "fear", sample_index=2, seed=7, size=64, grey=False)
    assert a["image"].tobytes() == b["image"].tobytes()
    for key in ("landmarks", "aus", "pose", "identity"):
        assert a[key].tobytes() == b[key].tobytes()
    # ... and the seed matters.
    c = synth.render_still(synth.make_subject(3, seed=8), "fear", sample_index=2, seed=8, size=64, grey=False)
    assert a["image"].tobytes() != c["image"].tobytes()


def test_sequence_is_byte_identical_when_repeated():
    subject = synth.make_subject(1)
    a = synth.render_sequence(subject, "happiness", sequence_index=4, kind="onset_apex_offset")
    b = synth.render_sequence(subject, "happiness", sequence_index=4, kind="onset_apex_offset")
    assert a["frames"].tobytes() == b["frames"].tobytes()
    assert a["landmarks"].tobytes() == b["landmarks"].tobytes()
    assert a["apex_index"] == b["apex_index"]
    c = synth.render_sequence(subject, "happiness", sequence_index=5, kind="onset_apex_offset")
    assert a["frames"].tobytes() != c["frames"].tobytes()


def test_subject_does_not_depend_on_other_subjects():
    alone = synth.make_subject(9, seed=3)
    image_alone = synth.render_still(alone, "sadness", sample_index=1, seed=3)["image"]
    # Generate a crowd first, interleaving subjects, samples and sequences.
    for k in (0, 4, 12, 8):
        other = synth.make_subject(k, seed=3)
        synth.render_still(other, "sadness", sample_index=1, seed=3)
        synth.render_sequence(other, "anger", seed=3, num_frames=10)
    after = synth.make_subject(9, seed=3)
    assert after == alone
    assert synth.render_still(after, "sadness", sample_index=1, seed=3)["image"].tobytes() == image_alone.tobytes()


@pytest.mark.parametrize("size", [48, 64, 224])
def test_landmarks_inside_image(size):
    for k in range(6):
        subject = synth.make_subject(k)
        for e, emotion in enumerate(EMOTIONS):
            lm = synth.render_still(subject, emotion, sample_index=k + e, size=size)["landmarks"]
            assert lm.shape == (68, 2) and lm.dtype == np.float32
            assert lm.min() >= 0.0 and lm.max() <= size - 1.0, (k, emotion, lm.min(), lm.max())
    seq = synth.render_sequence(synth.make_subject(2), "surprise", size=size, kind="onset_apex_offset", num_frames=20)
    assert seq["landmarks"].min() >= 0.0 and seq["landmarks"].max() <= size - 1.0


def test_prototype_aus_active_and_neutral_empty():
    for k in range(4):
        subject = synth.make_subject(k)
        for emotion, prototype in FACS_PROTOTYPES.items():
            for i in range(3):
                aus = synth.render_still(subject, emotion, sample_index=i, size=48)["aus"]
                assert aus.shape == (len(synth.AUS),) and aus.dtype == np.float32
                assert aus.min() >= 0.0 and aus.max() <= 1.0
                for au in prototype:
                    assert aus[col(au)] > 0.0, (k, emotion, au)
                if emotion == "neutral":
                    assert np.all(aus == 0.0)
                else:
                    assert aus.max() > 0.1


def test_prototypes_match_facs_table():
    for emotion, prototype in FACS_PROTOTYPES.items():
        sided = synth.emotion_aus(emotion, 1.0)  # no rng: the prototype itself
        active = {au for au in synth.AUS if sided.max(0)[col(au)] > 0}
        assert active == prototype, emotion


def test_contempt_is_one_sided():
    subject = synth.make_subject(2)
    for i in range(4):
        sided = synth.emotion_aus("contempt", 0.8, subject.style, np.random.default_rng(i))
        for au in (12, 14):
            right, left = sided[:, col(au)]
            assert min(right, left) == 0.0 and max(right, left) > 0.0
        lm0 = synth.face_landmarks(subject)
        d = synth.face_landmarks(subject, sided) - lm0
        moved = np.abs(d[[48, 54]]).sum(1)  # subject's right and left mouth corners
        assert moved.max() > 0.01 and moved.min() < 0.2 * moved.max()
    # Happiness, by contrast, moves both corners.
    d = synth.face_landmarks(subject, synth.emotion_aus("happiness", 0.8)) - synth.face_landmarks(subject)
    assert np.abs(d[48]).sum() > 0.01 and np.abs(d[54]).sum() > 0.01


def test_landmarks_move_as_facs_says():
    subject = synth.make_subject(0)
    base = synth.face_landmarks(subject)

    def moved(au, level=1.0):
        aus = np.zeros(len(synth.AUS), np.float32)
        aus[col(au)] = level
        return synth.face_landmarks(subject, aus) - base  # face units, y down

    d = moved(12)  # lip corners up and outward
    assert d[48, 1] < -0.02 and d[54, 1] < -0.02
    assert d[48, 0] < -0.02 and d[54, 0] > 0.02
    d = moved(26)  # jaw drop: lower lip and chin down
    assert d[57, 1] > 0.05 and d[8, 1] > 0.05 and abs(d[33, 1]) < 1e-6
    d = moved(1)  # inner brows up, inner ends more than outer
    assert d[21, 1] < -0.03 and d[22, 1] < -0.03 and d[21, 1] < d[17, 1]
    d = moved(4)  # brows down and together
    assert d[21, 1] > 0.03 and d[21, 0] > 0.0 and d[22, 0] < 0.0
    d = moved(15)  # lip corners down
    assert d[48, 1] > 0.02 and d[54, 1] > 0.02
    d = moved(5)  # upper lids up
    assert d[37, 1] < -0.01 and d[44, 1] < -0.01
    # Intensity is linear until the constraints bite.
    np.testing.assert_allclose(moved(12, 0.5)[48], 0.5 * moved(12)[48], atol=1e-6)


def test_pose_places_landmarks():
    """Pixel landmarks are the face-unit landmarks moved by the reported pose."""
    from fer_keras.data import synth_render

    subject = synth.make_subject(5)
    still = synth.render_still(subject, "anger", sample_index=3, size=96)
    # Recover the AUs' landmarks by inverting the pose on the pixel landmarks' x/y.
    roll, yaw, scale, tx, ty = still["pose"].astype(np.float64)
    assert abs(roll) <= 8.0 and abs(yaw) <= 12.0 and 0.5 < scale < 1.0
    neutral_px = synth_render.pose_points(synth.face_landmarks(subject), synth_render.LANDMARK_Z,
                                          roll, yaw, scale, tx, ty, 96)
    # Anger lowers the inner brows relative to the eyes, whatever the pose.
    def brow_to_eye(lm):
        return np.linalg.norm(lm[[21, 22]] - lm[[39, 42]], axis=1).mean()
    assert brow_to_eye(still["landmarks"]) < brow_to_eye(neutral_px)


@pytest.mark.parametrize("size", [48, 224])
@pytest.mark.parametrize("grey", [True, False])
def test_shapes_and_dtypes(size, grey):
    subject = synth.make_subject(4)
    still = synth.render_still(subject, "disgust", size=size, grey=grey)
    assert set(still) == STILL_KEYS
    c = 1 if grey else 3
    assert still["image"].shape == (size, size, c) and still["image"].dtype == np.uint8
    assert still["image"].std() > 5.0  # something was drawn
    assert still["landmarks"].shape == (68, 2) and still["landmarks"].dtype == np.float32
    assert still["pose"].shape == (5,) and still["pose"].dtype == np.float32
    assert still["identity"].shape == (len(synth.IDENTITY_PARAMS),) and still["identity"].dtype == np.float32
    assert still["emotion"] == "disgust" and still["subject_id"] == 4
    assert isinstance(still["intensity"], float)
    seq = synth.render_sequence(subject, "fear", size=size, grey=grey, num_frames=10)
    assert set(seq) == SEQUENCE_KEYS
    assert seq["frames"].shape == (10, size, size, c) and seq["frames"].dtype == np.uint8
    assert seq["landmarks"].shape == (10, 68, 2) and seq["aus"].shape == (10, len(synth.AUS))
    assert seq["pose"].shape == (10, 5)


def test_onset_apex_sequences():
    for k in range(3):
        subject = synth.make_subject(k)
        for i, emotion in enumerate(("surprise", "sadness", "contempt")):
            seq = synth.render_sequence(subject, emotion, sequence_index=i, size=48)
            T, apex = len(seq["frames"]), seq["apex_index"]
            assert 10 <= T <= 30
            total = seq["aus"].sum(1)
            assert np.all(seq["aus"][0] == 0.0)  # neutral first frame
            assert np.isclose(total[apex], total.max()) and np.all(total[:apex] < total[apex])
            np.testing.assert_allclose(seq["aus"][apex].max(), seq["aus"].max())
            assert np.all(np.diff(total[: apex + 1]) >= -1e-6)  # onset rises
            assert np.isclose(seq["intensity"], seq["intensity"]) and 0.0 < seq["intensity"] <= 1.0


def test_onset_apex_offset_returns_to_neutral():
    subject = synth.make_subject(6)
    for i in range(3):
        seq = synth.render_sequence(subject, "happiness", sequence_index=i, size=48, kind="onset_apex_offset")
        T, apex = len(seq["frames"]), seq["apex_index"]
        assert 20 <= T <= 40 and 0 < apex < T - 1
        total = seq["aus"].sum(1)
        assert total[0] == 0.0 and total[apex] == total.max() > 0.5
        assert total[-1] < 0.05 * total[apex]
        # The face at the end is close to the face at the start (up to head motion).
        lm = seq["landmarks"]
        mouth = lambda f: np.linalg.norm(lm[f, 54] - lm[f, 48])  # noqa: E731
        assert abs(mouth(-1) - mouth(0)) < abs(mouth(apex) - mouth(0)) + 1e-6


def test_sequence_length_and_neutral():
    subject = synth.make_subject(0)
    seq = synth.render_sequence(subject, "neutral", num_frames=12)
    assert len(seq["frames"]) == 12 and np.all(seq["aus"] == 0.0) and seq["intensity"] == 0.0
    # Frames still differ (noise, head motion, blinks): it is a video, not one image repeated.
    assert seq["frames"][0].tobytes() != seq["frames"][-1].tobytes()


def test_intensity_and_occlusion_arguments():
    subject = synth.make_subject(3)
    weak = synth.render_still(subject, "surprise", sample_index=1, intensity=0.3)
    strong = synth.render_still(subject, "surprise", sample_index=1, intensity=0.9)
    assert strong["intensity"] == 0.9 and weak["intensity"] == 0.3
    assert np.all(strong["aus"] >= weak["aus"]) and strong["aus"].sum() > 2.0 * weak["aus"].sum()
    # An occluder changes pixels, never the ground truth.
    plain = synth.render_still(subject, "anger", sample_index=5, occlusion=False)
    covered = synth.render_still(subject, "anger", sample_index=5, occlusion=True)
    assert plain["image"].tobytes() != covered["image"].tobytes()
    np.testing.assert_array_equal(plain["landmarks"], covered["landmarks"])
    np.testing.assert_array_equal(plain["aus"], covered["aus"])


def test_subjects_vary():
    subjects = [synth.make_subject(k) for k in range(40)]
    params = np.stack([s.params for s in subjects])
    assert params.dtype == np.float32 and params.shape == (40, len(synth.IDENTITY_PARAMS))
    assert np.all(params.std(0) > 0.1) and np.all(np.abs(params) <= 1.0)
    assert 0 < sum(s.glasses for s in subjects) < 40 and 0 < sum(s.beard for s in subjects) < 40
    assert subjects[0].style.shape == (2, len(synth.AUS))
    assert subjects[0] != subjects[1]


def _border(image, width=4):
    """The image's outer frame (background, clothes, lighting; never the face at these poses)."""
    img = image.astype(np.float32)
    return np.concatenate([img[:width].ravel(), img[:, :width].ravel(), img[:, -width:].ravel()])


def test_lab_capture_shares_one_session_per_subject():
    a, b = synth.make_subject(2), synth.make_subject(5)
    lab = [synth.render_still(a, e, sample_index=i, size=64, capture="lab") for e, i in
           (("neutral", 0), ("anger", 1), ("surprise", 2))]
    seq = synth.render_sequence(a, "happiness", size=64, capture="lab")
    other = synth.render_still(b, "anger", sample_index=1, size=64, capture="lab")
    wild = [synth.render_still(a, e, sample_index=i, size=64) for e, i in (("neutral", 0), ("anger", 1))]

    def gap(x, y):
        return float(np.mean(np.abs(_border(x) - _border(y))))

    same = [gap(lab[0]["image"], x["image"]) for x in lab[1:]] + [gap(lab[0]["image"], seq["frames"][0])]
    # One subject's lab stills and sequences: the same scene, up to sensor noise and a small head jitter.
    assert max(same) < 12.0, same
    # Another subject's session, and two wild stills of one subject, have scenes of their own.
    assert gap(lab[0]["image"], other["image"]) > 2 * max(same)
    assert gap(wild[0]["image"], wild[1]["image"]) > 2 * max(same)
    # The base pose is the session's: lab stills of a subject differ by the jitter only.
    poses = np.stack([x["pose"] for x in lab])
    assert np.all(np.abs(poses[:, 0] - poses[0, 0]) < 6 * synth.LAB_POSE_JITTER[0])
    # The expression ground truth is untouched by the capture regime.
    assert np.array_equal(lab[1]["aus"] > 0, synth.render_still(a, "anger", sample_index=1, size=64)["aus"] > 0)
    with pytest.raises(ValueError, match="capture"):
        synth.render_still(a, "anger", capture="studio")


def test_invalid_arguments():
    subject = synth.make_subject(0)
    with pytest.raises(ValueError, match="Unknown emotion"):
        synth.render_still(subject, "happy")
    with pytest.raises(ValueError, match="size"):
        synth.render_still(subject, "neutral", size=8)
    with pytest.raises(ValueError, match="kind"):
        synth.render_sequence(subject, "neutral", kind="apex")
    with pytest.raises(ValueError, match="intensity"):
        synth.render_still(subject, "fear", intensity=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        synth.make_subject(-1)


def test_preview_writes_labelled_grid(tmp_path):
    path = synth.preview(tmp_path / "p.png", num_subjects=2, size=48, seed=0)
    image = cv2.imread(str(path))
    assert image is not None
    pad, head = 2, 18
    assert image.shape[1] == len(EMOTIONS) * (48 + pad) + pad
    assert image.shape[0] == head + 2 * (48 + pad) + head + 48 + 2 * pad
