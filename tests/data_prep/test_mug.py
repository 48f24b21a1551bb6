"""MUG adapter on a tiny subjects3/ tree of JPEG takes, with real dlib detection (a real photograph
with a slow head motion; emotion folders are labels only), a session level, an unknown emotion
folder, a stray folder and a corrupt frame."""

import numpy as np
import pytest

from fer_keras.data import pipeline, splits
from fer_keras.data_prep import common, faces
from fer_keras.data_prep.adapters import prepare_dataset
from fer_keras.labels import get_label_set
from tests.data_prep import synth_trees as trees

SIZE = 48
FRAMES = 6
TAKES = ("001/happiness/take000", "001/surprise/take001", "002/session1/anger/take000", "002/session2/anger/take003",
         "003/disgust/take000")


def write_take(root, take, frames=FRAMES):
    for t, frame in enumerate(trees.photo_sequence(frames)):
        trees.save(root / take / f"img_{t + 1:04d}.jpg", frame)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("mug_raw") / "MUG" / "subjects3"
    for take in TAKES:
        write_take(root, take)
    write_take(root, "003/contempt/take000")  # not a MUG emotion
    write_take(root, "003/fear/take000")
    trees.truncate(root / "003" / "fear" / "take000" / "img_0002.jpg", 0.3)
    (root / "003" / "fear" / "notes").mkdir()
    return root


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("mug_out") / "mug"
    prepare_dataset("mug", tree.parent, out, size=SIZE, flow=True, quiet=True)  # MUG/ holding subjects3/ works too
    manifest, records = trees.read_sequences(out)
    return out, manifest, {r["video"]: r for r in records}


def test_takes_become_sequences_with_labels_and_subjects(prepared):
    _, manifest, records = prepared
    names = get_label_set("basic7")
    assert manifest["kind"] == "sequence" and manifest["label_set"] == "basic7"
    assert sorted(records) == ["001_happiness_take000", "001_surprise_take001", "002_session1_anger_take000",
                               "002_session2_anger_take003", "003_disgust_take000"]
    for r in records.values():
        emotion = r["video"].split("_")[-2]
        assert r["label_name"] == emotion and r["label"] == names.index(emotion)
        assert r["subject"] == r["video"][:3] and r["num_frames"] == FRAMES
        assert r["frames"].shape == (FRAMES, SIZE, SIZE, 3) and r["flow"].shape == (FRAMES, SIZE, SIZE, 2)
    assert manifest["counts_per_subject"] == {"001": 2, "002": 2, "003": 1}


def test_dlib_detects_on_the_first_frame_and_tracks_landmarks(tree, prepared):
    _, _, records = prepared
    r = records["001_happiness_take000"]
    assert r["landmarks"].shape == (FRAMES, 68, 2)
    first = common.read_image(tree / "001" / "happiness" / "take000" / "img_0001.jpg")
    box = common.find_face(first)
    reference = faces.face_landmarks(first, box)
    np.testing.assert_array_equal(r["frames"][0], faces.align_face(first, reference, SIZE)[0])
    last = common.read_image(tree / "001" / "happiness" / "take000" / f"img_{FRAMES:04d}.jpg")
    np.testing.assert_array_equal(r["frames"][-1], faces.align_face(last, reference, SIZE)[0])  # one alignment
    matrix = faces.alignment_matrix(reference, SIZE)
    expected_last = faces.face_landmarks(last, box) @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(r["landmarks"][-1], expected_last, atol=1e-3)


def test_problems_skipped_and_subjects_kept_whole(prepared):
    out, manifest, records = prepared
    skipped = dict(common.read_skipped(out))
    assert "unknown MUG emotion folder 'contempt'" in skipped["subjects3/003/contempt"]
    assert skipped["subjects3/003/fear/notes"] == "not a take folder (take<NNN>)"
    assert skipped["subjects3/003/fear/take000"].startswith("frame img_0002.jpg: corrupt or unreadable image")
    assert manifest["num_skipped"] == 3
    split = splits.kfold_split(pipeline.subjects_of(manifest), 3, 1, validation=False)
    sessions = [records["002_session1_anger_take000"], records["002_session2_anger_take003"]]
    assert len({r["subject"] in split.test for r in sessions}) == 1  # both sessions of subject 002 on one side


def test_no_detect_resizes_whole_frames(tree, tmp_path):
    manifest = prepare_dataset("mug", tree, tmp_path / "mug", size=32, grey=True, detect=False, quiet=True)
    _, records = trees.read_sequences(tmp_path / "mug")
    assert manifest["num_examples"] == len(TAKES) and manifest["flow_bound"] is None
    assert all(r["landmarks"] is None and r["flow"] is None and r["frames"].shape[1:] == (32, 32, 1) for r in records)


@pytest.mark.parametrize("protocol, frames", [("still", [5, 6, 7]), ("spread", [1, 2, 4, 5, 7, 8, 10, 11])])
def test_paper_004_stills_from_each_take(tree, tmp_path, protocol, frames):
    """still: the frames around a take's centre (its apex); spread: frames at equal intervals over the take."""
    import shutil

    raw = tmp_path / "MUG"
    shutil.copytree(tree.parent, raw)
    for i in range(FRAMES + 1, 12):  # a take of 11 frames: spread samples 8 of them, first and last included
        trees.save(raw / "subjects3/001/happiness/take000" / f"img_{i:04d}.jpg", trees.photo_sequence(FRAMES)[-1])
    manifest = prepare_dataset("mug", raw, tmp_path / protocol, size=32, grey=True, detect=False, protocol=protocol,
                               quiet=True)
    assert manifest["kind"] == "still" and manifest["label_set"] == "basic7"
    _, stills = trees.read_stills(tmp_path / protocol)
    happy = sorted(s["source"] for s in stills if s["source"].startswith("subjects3/001/happiness/"))
    if protocol == "spread":
        assert happy == [f"subjects3/001/happiness/take000/img_{i:04d}.jpg" for i in frames]
        other = sorted(s["source"] for s in stills if s["source"].startswith("subjects3/001/surprise/"))
        assert len(other) == FRAMES  # a take of 6 frames gives all 6
    else:
        assert happy == [f"subjects3/001/happiness/take000/img_{i:04d}.jpg" for i in frames]
    assert {s["label_name"] for s in stills if "/happiness/" in s["source"]} == {"happiness"}
    assert {s["subject"] for s in stills} == {"001", "002", "003"}
    skipped = dict(common.read_skipped(tmp_path / protocol))  # the corrupt frame only, not its whole take
    assert skipped["subjects3/003/fear/take000/img_0002.jpg"].startswith("corrupt or unreadable image")
    assert any(s["source"].startswith("subjects3/003/fear/take000/") for s in stills)
