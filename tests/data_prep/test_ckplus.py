"""CK+ adapter on a tiny tree in CK+'s layout (SynthFER onset -> apex sequences, grey PNG frames,
their exact 68 landmarks as Landmarks/ files), with an unlabelled sequence, an unknown code, a
neutral code, a corrupt frame and a missing landmark file."""

import pathlib
import shutil

import numpy as np
import pytest

from fer_keras.data import pipeline, splits
from fer_keras.data_prep import common, faces
from fer_keras.data_prep.adapters import prepare_dataset
from fer_keras.errors import UserError
from fer_keras.labels import get_label_set
from tests.data_prep import synth_trees as trees

SIZE = 48
FRAMES = 5
# (subject, sequence) -> (CK+ code or None for no emotion file, SynthFER subject, emotion drawn)
SEQUENCES = {
    ("S005", "001"): (7, 0, "surprise"),
    ("S005", "002"): (5, 0, "happiness"),  # one frame after the labelled apex
    ("S010", "001"): (1, 1, "anger"),
    ("S010", "002"): (None, 1, "fear"),  # unlabelled, as 266 CK+ sequences are
    ("S011", "001"): (2, 2, "happiness"),  # contempt
    ("S011", "002"): (9, 2, "sadness"),  # unknown code
    ("S011", "003"): (0, 2, "neutral"),  # neutral: not in ckplus7
    ("S012", "001"): (3, 3, "disgust"),  # frame 2 corrupt
    ("S012", "002"): (6, 3, "sadness"),  # frame 3 has no landmark file
}
USABLE = [("S005", "001"), ("S005", "002"), ("S010", "001"), ("S011", "001")]
NAMES = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 5: "happiness", 6: "sadness", 7: "surprise"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck_raw") / "CK+"
    for (subject, number), (code, synth_subject, emotion) in SEQUENCES.items():
        extra = 1 if (subject, number) == ("S005", "002") else 0
        q = trees.sequence(synth_subject, emotion, size=96, grey=True, frames=FRAMES + extra)
        for t in range(FRAMES + extra):
            name = f"{subject}_{number}_{t + 1:08d}"
            trees.save(root / "cohn-kanade-images" / subject / number / f"{name}.png", q["frames"][t])
            if (subject, number, t) != ("S012", "002", 3):
                trees.write_points(root / "Landmarks" / subject / number / f"{name}_landmarks.txt", q["landmarks"][t])
        if code is not None:
            path = root / "Emotion" / subject / number / f"{subject}_{number}_{FRAMES:08d}_emotion.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"   {code:.7e}\n")
    trees.truncate(root / "cohn-kanade-images" / "S012" / "001" / "S012_001_00000003.png", 0.5)
    (root / "cohn-kanade-images" / "S005" / "001" / ".DS_Store").write_bytes(b"\0")
    return root


@pytest.fixture(scope="module")
def sequences(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ck_out") / "ckplus"
    prepare_dataset("ckplus", root, out, size=SIZE, grey=True, flow=True, landmarks="dataset", quiet=True)
    manifest, records = trees.read_sequences(out)
    return out, manifest, {r["video"]: r for r in records}


def test_labelled_sequences_with_ckplus7_labels_and_subjects(sequences):
    _, manifest, records = sequences
    names = get_label_set("ckplus7")
    assert manifest["kind"] == "sequence" and manifest["label_set"] == "ckplus7"
    assert sorted(records) == [f"{s}_{n}" for s, n in USABLE]
    for subject, number in USABLE:
        r = records[f"{subject}_{number}"]
        emotion = NAMES[SEQUENCES[(subject, number)][0]]
        assert r["label_name"] == emotion and r["label"] == names.index(emotion) and r["subject"] == subject
        assert r["num_frames"] == FRAMES  # onset .. labelled apex, not the frame after it
        assert r["frames"].shape == (FRAMES, SIZE, SIZE, 1)
    assert manifest["counts_per_subject"] == {"S005": 2, "S010": 1, "S011": 1}
    assert manifest["flow_bound"] == 20.0


def test_frames_are_aligned_once_from_the_first_frames_dataset_landmarks(root, sequences):
    _, _, records = sequences
    r = records["S005_001"]
    folder = root / "cohn-kanade-images" / "S005" / "001"
    marks = root / "Landmarks" / "S005" / "001"
    landmarks = [common.read_points(marks / f"S005_001_{t + 1:08d}_landmarks.txt", 68) for t in range(FRAMES)]
    matrix = faces.alignment_matrix(landmarks[0], SIZE)
    for t in range(FRAMES):
        frame = common.read_image(folder / f"S005_001_{t + 1:08d}.png")
        np.testing.assert_array_equal(r["frames"][t], faces.align_face(frame, landmarks[0], SIZE, channels=1)[0])
        np.testing.assert_allclose(r["landmarks"][t], landmarks[t] @ matrix[:, :2].T + matrix[:, 2], atol=1e-3)
    np.testing.assert_allclose(faces.anchor_points(r["landmarks"][0])[:2], faces.TEMPLATE[:2] * SIZE, atol=0.08 * SIZE)


def test_optical_flow_between_consecutive_frames(sequences):
    _, _, records = sequences
    for r in records.values():
        assert r["flow"].shape == (FRAMES, SIZE, SIZE, 2)
        assert np.abs(r["flow"][0]).max() < 0.1  # flow[0] = 0 (up to quantisation)
    assert np.abs(records["S005_001"]["flow"][1:]).max() > 0.3  # the face moves (surprise)


def test_problem_sequences_are_skipped_with_their_reason(sequences):
    out, manifest, _ = sequences
    skipped = dict(common.read_skipped(out))
    base = "cohn-kanade-images"
    assert manifest["num_skipped"] == len(skipped) == 5
    assert skipped[f"{base}/S010/002"].startswith("no label")
    assert "unknown CK+ emotion code 9" in skipped[f"{base}/S011/002"]
    assert skipped[f"{base}/S011/003"] == "label neutral is not in label set ckplus7"
    assert skipped[f"{base}/S012/001"].startswith("frame S012_001_00000003.png: corrupt or unreadable image")
    assert skipped[f"{base}/S012/002"] == "landmark file S012_002_00000004_landmarks.txt is missing"


def test_ten_fold_style_split_keeps_subjects_whole(sequences):
    _, manifest, records = sequences
    subjects = pipeline.subjects_of(manifest)
    assert subjects == ["S005", "S010", "S011"]
    for fold in range(3):
        split = splits.kfold_split(subjects, 3, fold, validation=False)
        test = {v for v, r in records.items() if r["subject"] in split.test}
        train = {v for v, r in records.items() if r["subject"] in split.train}
        assert test and train and not test & train
        assert ({"S005_001", "S005_002"} <= test) or not ({"S005_001", "S005_002"} & test)


def test_still_protocol_first_frame_neutral_last_three_the_emotion(root, tmp_path):
    manifest = prepare_dataset("ckplus", root, tmp_path / "ck", protocol="still", size=SIZE, landmarks="dataset", quiet=True)
    _, stills = trees.read_stills(tmp_path / "ck")
    names = get_label_set("ckplus8")
    assert manifest["label_set"] == "ckplus8" and manifest["kind"] == "still"
    by_source = {s["source"]: s for s in stills}
    for subject, number in USABLE + [("S011", "003")]:
        code = SEQUENCES[(subject, number)][0]
        frame = lambda t: f"cohn-kanade-images/{subject}/{number}/{subject}_{number}_{t:08d}.png"  # noqa: E731
        assert by_source[frame(1)]["label_name"] == "neutral"
        for t in (3, 4, 5):  # the last three frames up to the labelled apex
            assert by_source[frame(t)]["label_name"] == NAMES[code]
            assert by_source[frame(t)]["label"] == names.index(NAMES[code]) and by_source[frame(t)]["subject"] == subject
        assert frame(2) not in by_source
    assert "cohn-kanade-images/S005/002/S005_002_00000006.png" not in by_source  # after the apex
    skipped = dict(common.read_skipped(tmp_path / "ck"))
    assert "corrupt or unreadable" in skipped["cohn-kanade-images/S012/001/S012_001_00000003.png"]
    assert "missing" in skipped["cohn-kanade-images/S012/002/S012_002_00000004.png"]
    assert len(stills) == 4 * 5 + 3 + 3 and manifest["num_skipped"] == 4
    assert manifest["counts_per_class"]["neutral"] == 7 + 3  # 7 first frames + S011/003's last three
    assert all(s["image"].shape == (SIZE, SIZE, 3) and s["has_landmarks"] for s in stills)


def test_spread_protocol_samples_each_sequence_up_to_its_apex_as_stills(root, tmp_path):
    """Paper 004's training set: frames at equal intervals from onset to apex, each with the sequence's emotion."""
    manifest = prepare_dataset("ckplus", root, tmp_path / "ck", protocol="spread", size=SIZE, grey=True, detect=False,
                               quiet=True)
    assert manifest["label_set"] == "ckplus7" and manifest["kind"] == "still"
    _, stills = trees.read_stills(tmp_path / "ck")
    by_source = {s["source"]: s for s in stills}
    for subject, number in USABLE:
        frame = lambda t: f"cohn-kanade-images/{subject}/{number}/{subject}_{number}_{t:08d}.png"  # noqa: E731
        assert [by_source[frame(t)]["label_name"] for t in range(1, FRAMES + 1)] == [NAMES[SEQUENCES[(subject, number)][0]]] * FRAMES
    assert "cohn-kanade-images/S005/002/S005_002_00000006.png" not in by_source  # after the apex
    assert not any("/S011/003/" in k for k in by_source)  # neutral is not in ckplus7
    assert "neutral" not in manifest["counts_per_class"]


def test_dataset_landmarks_without_landmark_files_is_one_clear_error_and_no_folder(root, tmp_path):
    import shutil

    bare = tmp_path / "CK+"
    shutil.copytree(root, bare, ignore=shutil.ignore_patterns("*_landmarks.txt"))  # Landmarks/ folders, no files
    with pytest.raises(UserError) as error:
        prepare_dataset("ckplus", bare, tmp_path / "ck", size=SIZE, landmarks="dataset", quiet=True)
    message = str(error.value)
    assert message == (  # the reasons of the image work, which stopped the run, before the unlabelled sequences
        f"No usable CK+ items in {bare}: all 9 were skipped: "
        "6 x landmark file S005_001_00000001_landmarks.txt is missing (e.g. cohn-kanade-images/S005/001); "
        "1 x no label: CK+ has no emotion file for this sequence (e.g. cohn-kanade-images/S010/002); "
        "1 x unknown CK+ emotion code 9 (known: 0..7) (e.g. cohn-kanade-images/S011/002); and 1 other reason."
    )
    assert not (tmp_path / "ck").exists() and not (tmp_path / "ck.partial").exists()


def test_archives_unzipped_into_folders_of_their_own_are_found(root, tmp_path):
    import shutil

    from fer_keras.data_prep.adapters import ADAPTERS

    nested = tmp_path / "CK+"
    shutil.copytree(root / "cohn-kanade-images", nested / "extended-cohn-kanade-images" / "cohn-kanade-images")
    shutil.copytree(root / "Emotion", nested / "Emotion_labels" / "Emotion")
    shutil.copytree(root / "Landmarks", nested / "Landmarks" / "Landmarks")
    adapter = ADAPTERS["ckplus"]
    options = adapter.resolve(landmarks="dataset")
    items, skipped = adapter.list_items(nested, options)
    expected, expected_skipped = adapter.list_items(root, options)
    assert [i["sequence_id"] for i in items] == [i["sequence_id"] for i in expected] and len(skipped) == len(expected_skipped)
    assert all(pathlib.Path(p).exists() for i in items for p in i["landmarks"] if "S012_002_00000004" not in p)


def test_a_sequence_whose_labelled_apex_is_missing_is_skipped(root, tmp_path):
    copy = tmp_path / "CK+"
    shutil.copytree(root, copy)
    images = copy / "cohn-kanade-images"
    (images / "S005" / "001" / "S005_001_00000005.png").unlink()  # the apex its emotion file names
    for t in range(1, 5):  # S005/002 keeps frames 5 (the apex) and 6: one frame up to the apex
        (images / "S005" / "002" / f"S005_002_{t:08d}.png").unlink()
    prepare_dataset("ckplus", copy, tmp_path / "ck", size=SIZE, grey=True, detect=False, quiet=True)
    skipped = dict(common.read_skipped(tmp_path / "ck"))
    assert skipped["cohn-kanade-images/S005/001"] == "the apex frame 00000005 its emotion file names is missing"
    assert skipped["cohn-kanade-images/S005/002"] == "1 frame up to the apex; a sequence needs at least 2"


def test_emotion_files_holding_nan_or_infinity_are_skipped_not_fatal(tmp_path):
    from fer_keras.data_prep.adapters import ADAPTERS

    root = tmp_path / "CK+"
    for number, text in (("001", "nan"), ("002", "inf"), ("003", "1e400"), ("004", "   5.0000000e+00")):
        for t in (1, 2):
            path = root / "cohn-kanade-images" / "S020" / number / f"S020_{number}_{t:08d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")  # listing reads names only
        label = root / "Emotion" / "S020" / number / f"S020_{number}_00000002_emotion.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(text + "\n")
    adapter = ADAPTERS["ckplus"]
    items, skipped = adapter.list_items(root, adapter.resolve())
    assert [i["sequence_id"] for i in items] == ["S020_004"]
    assert dict(skipped) == {f"cohn-kanade-images/S020/{n}": f"unknown CK+ emotion code {v} (known: 0..7)"
                             for n, v in (("001", "nan"), ("002", "inf"), ("003", "inf"))}
