"""RAF-DB adapter on a tiny tree in RAF-DB's layout: SynthFER photographs, their aligned crops made
with paper 003's section 4.4 transform, 5 manual and 37 automatic points in original coordinates."""

import shutil

import cv2
import numpy as np
import pytest

from fer_keras.data import heatmaps, pipeline, splits
from fer_keras.data_prep import common, rafdb
from fer_keras.data_prep.adapters import prepare_dataset
from fer_keras.labels import get_label_set
from tests.data_prep import synth_trees as trees

SIZE = 112
# name -> (label code, SynthFER subject, emotion drawn); codes 1 surprise 2 fear 3 disgust 4 happiness 5 sadness 6 anger 7 neutral
GOOD = {
    "train_00001": (4, 0, "happiness"),
    "train_00002": (6, 1, "anger"),
    "train_00003": (1, 2, "surprise"),
    "test_0001": (7, 3, "neutral"),
    "test_0002": (3, 4, "disgust"),
}


def five_points(landmarks68):
    """RAF-DB's manual points from 68 landmarks: eye centres, nose tip, mouth corners."""
    p = np.asarray(landmarks68)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def write_item(base, name, subject, emotion, *, manual=True, aligned=True):
    s = trees.still(subject, emotion, size=128)
    trees.save(base / "Image" / "original" / f"{name}.jpg", s["image"])
    manual5 = five_points(s["landmarks"])
    if aligned:  # made as RAF-DB made them: eyes and mouth centre to fixed points of a 100 x 100 frame
        matrix = heatmaps.alignment_matrix(manual5, output_size=100)
        trees.save(base / "Image" / "aligned" / f"{name}_aligned.jpg", cv2.warpAffine(s["image"], matrix, (100, 100)))
    if manual:
        path = base / "Annotation" / "manual" / f"{name}_manu_attri.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{x:.2f}\t{y:.2f}\n" for x, y in manual5) + "1\n2\n2\n")  # gender, race, age
    trees.write_points(base / "Annotation" / "auto" / f"{name}_auto_attri.txt", s["landmarks"][17:54])
    return s


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("raf_raw") / "basic"
    sources = {name: write_item(base, name, subject, emotion) for name, (_, subject, emotion) in GOOD.items()}
    write_item(base, "train_00004", 5, "sadness")  # listed with an unknown code
    write_item(base, "train_00005", 5, "fear", aligned=False)  # listed, image missing
    write_item(base, "train_00006", 5, "fear")  # not listed: no label
    write_item(base, "test_0003", 6, "anger")
    trees.truncate(base / "Image" / "aligned" / "test_0003_aligned.jpg", 0.3)  # corrupt
    write_item(base, "test_0004", 6, "happiness", manual=False)  # manual annotation missing
    labels = {n: c for n, (c, _, _) in GOOD.items()} | {"train_00004": 8, "train_00005": 2, "test_0003": 6, "test_0004": 4}
    (base / "EmoLabel").mkdir()
    (base / "EmoLabel" / "list_patition_label.txt").write_text("".join(f"{n}.jpg {c}\n" for n, c in sorted(labels.items())))
    return base, sources


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
    base, sources = tree
    out = tmp_path_factory.mktemp("raf_out") / "rafdb"
    prepare_dataset("rafdb", base.parent, out, size=SIZE, landmarks="dataset", quiet=True)  # the parent of basic/ works too
    manifest, stills = trees.read_stills(out)
    return out, manifest, {s["subject"]: s for s in stills}


def test_labels_official_split_and_image_ids_as_subjects(prepared):
    _, manifest, stills = prepared
    names = get_label_set("basic7")
    assert sorted(stills) == sorted(GOOD)
    assert manifest["official_split"] is True and manifest["counts_per_split"] == {"test": 2, "train": 3}
    for name, (code, _, emotion) in GOOD.items():
        s = stills[name]
        assert s["label_name"] == emotion and s["label"] == code - 1 == names.index(emotion)  # basic7 is RAF-DB's order
        assert s["split"] == name.split("_")[0] and s["source"] == f"basic/Image/aligned/{name}_aligned.jpg"
    official = splits.official_split(manifest)
    assert official.official
    # image ids as subject ids: a k-fold never puts one image on both sides (each "subject" has one image)
    assert manifest["counts_per_subject"] == {name: 1 for name in GOOD}
    split = splits.kfold_split(pipeline.subjects_of(manifest), 2, 0, validation=False)
    assert not set(split.train) & set(split.test) and set(split.train) | set(split.test) == set(GOOD)


def test_dataset_landmarks_are_mapped_into_the_aligned_image_as_in_section_4_4(prepared):
    _, _, stills = prepared
    scale = SIZE / 100.0
    for name in GOOD:
        s = stills[name]
        assert not s["has_landmarks"] and s["landmarks5"].shape == (5, 2) and s["landmarks37"].shape == (37, 2)
        left_eye, right_eye, _, mouth_left, mouth_right = s["landmarks5"]
        np.testing.assert_allclose(left_eye, np.array([25, 35]) * scale, atol=1e-3)
        np.testing.assert_allclose(right_eye, np.array([75, 35]) * scale, atol=1e-3)
        np.testing.assert_allclose((mouth_left + mouth_right) / 2, np.array([50, 75]) * scale, atol=1e-3)


def test_points_agree_with_heatmaps_and_with_the_image(tree, prepared):
    base, sources = tree
    _, _, stills = prepared
    for name in GOOD:
        manual5 = common.read_points(base / "Annotation" / "manual" / f"{name}_manu_attri.txt", 5)
        auto37 = common.read_points(base / "Annotation" / "auto" / f"{name}_auto_attri.txt", 37)
        expected = heatmaps.align_landmarks(auto37, reference_points=manual5, output_size=SIZE)
        np.testing.assert_allclose(stills[name]["landmarks37"], expected, atol=1e-3)
        eyes_mouth = np.stack([manual5[0], manual5[1], (manual5[3] + manual5[4]) / 2])
        np.testing.assert_allclose(rafdb.map_points(eyes_mouth, rafdb.section_4_4_matrix(manual5, SIZE)),
                                   np.array([[25, 35], [75, 35], [50, 75]]) * SIZE / 100, atol=1e-3)
        aligned = common.read_image(base / "Image" / "aligned" / f"{name}_aligned.jpg")
        resized = cv2.resize(aligned, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        assert np.abs(stills[name]["image"].astype(int) - resized).mean() < 1.0
        # the mapped points sit on the face drawn in the aligned image: the same points of the photograph
        truth = sources[name]["landmarks"]
        drawn = heatmaps.align_landmarks(truth[17:54], reference_points=five_points(truth), output_size=SIZE)
        np.testing.assert_allclose(stills[name]["landmarks37"], drawn, atol=0.02)


def test_problems_are_skipped_with_their_reason(prepared):
    out, manifest, _ = prepared
    skipped = dict(common.read_skipped(out))
    assert manifest["num_skipped"] == len(skipped) == 5
    assert "unknown RAF-DB emotion code '8'" in skipped["basic/Image/aligned/train_00004_aligned.jpg"]
    assert skipped["basic/Image/aligned/train_00005_aligned.jpg"] == "image file is missing"
    assert skipped["basic/Image/aligned/train_00006_aligned.jpg"].startswith("no label")
    assert "corrupt or unreadable" in skipped["basic/Image/aligned/test_0003_aligned.jpg"]
    assert "manual annotation test_0004_manu_attri.txt is missing" in skipped["basic/Image/aligned/test_0004_aligned.jpg"]


def test_dlib_mode_predicts_68_landmarks_in_the_aligned_images(tree, tmp_path):
    base, sources = tree
    prepare_dataset("rafdb", base, tmp_path / "rafdb", size=64, quiet=True)
    _, stills = trees.read_stills(tmp_path / "rafdb")
    assert sorted(s["subject"] for s in stills) == sorted(list(GOOD) + ["test_0004"])  # no annotation needed
    for s in stills:
        assert s["has_landmarks"] and s["landmarks5"] is None
        if s["subject"] in GOOD:  # near the true landmarks, mapped into the 64 px image
            source = sources[s["subject"]]
            points = source["landmarks"]
            truth = heatmaps.align_landmarks(points, reference_points=five_points(points), output_size=64)
            assert np.abs(s["landmarks"] - truth).mean() < 0.08 * 64
    no_detect = prepare_dataset("rafdb", base, tmp_path / "plain", size=64, detect=False, quiet=True)
    assert no_detect["num_examples"] == len(stills)
    assert not any(s["has_landmarks"] for s in trees.read_stills(tmp_path / "plain")[1])
    from fer_keras.data import records
    assert records.stills_with_landmarks(records.read_manifest(tmp_path / "rafdb")) == len(stills)  # what landmark_arm needs
    assert records.stills_with_landmarks(records.read_manifest(tmp_path / "plain")) == 0


def test_a_label_file_saved_with_a_byte_order_mark_keeps_its_first_line(tree, tmp_path):
    base, _ = tree
    copy = tmp_path / "basic"
    shutil.copytree(base, copy)
    labels = copy / "EmoLabel" / "list_patition_label.txt"
    labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())  # as Windows Notepad saves UTF-8
    manifest = prepare_dataset("rafdb", copy, tmp_path / "out", size=SIZE, detect=False, quiet=True)
    reference = prepare_dataset("rafdb", base, tmp_path / "reference", size=SIZE, detect=False, quiet=True)
    assert manifest["num_examples"] == reference["num_examples"]
    assert common.read_skipped(tmp_path / "out") == common.read_skipped(tmp_path / "reference")


def test_an_upper_case_extension_is_found_and_a_superscript_code_skipped(tree, tmp_path):
    from fer_keras.data_prep.adapters import ADAPTERS

    base, _ = tree
    copy = tmp_path / "basic"
    shutil.copytree(base, copy)
    aligned = copy / "Image" / "aligned"
    (aligned / "train_00002_aligned.jpg").rename(aligned / "train_00002_aligned.JPG")  # as a Windows copy may name it
    labels = copy / "EmoLabel" / "list_patition_label.txt"
    labels.write_text(labels.read_text().replace("train_00003.jpg 1", "train_00003.jpg \u00b2"))  # str.isdigit: True
    adapter = ADAPTERS["rafdb"]
    items, skipped = adapter.list_items(copy, adapter.resolve(landmarks="dataset"))
    by_id = {i["id"]: i for i in items}
    assert by_id["train_00002"]["path"].endswith("train_00002_aligned.JPG")
    assert "train_00003" not in by_id
    assert dict(skipped)["Image/aligned/train_00003_aligned.jpg"] == "unknown RAF-DB emotion code '\u00b2' (known: 1..7)"


def test_landmark_arm_refuses_data_without_68_landmarks(prepared, tmp_path):
    """RAF-DB's own 5 and 37 points are not the 68 the heatmap layer draws: every heatmap would be black."""
    import json

    from fer_keras.data import records
    from tests.conftest import expect_user_error, invoke

    out, manifest, _ = prepared
    assert records.stills_with_landmarks(records.read_manifest(out)) == 0
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model_args": {"rgb_run": str(tmp_path / "arm")}}))
    line = expect_user_error(invoke("train", "--model", "landmark_arm", "--config", config, "--data", out,
                                    "--epochs", 1, "--out", tmp_path / "runs", "--name", "r"))
    assert line == (f"Error: Model 'landmark_arm' draws its heatmaps from dlib's 68 landmarks, and {str(out)!r} has none "
                    "(prepared with --no-detect, or from RAF-DB with --landmarks dataset, whose 5 and 37 points predict "
                    "cannot compute on a new photo); prepare it again with dlib's detection and landmarks, the default.")
    assert not (tmp_path / "runs" / "r").exists()
