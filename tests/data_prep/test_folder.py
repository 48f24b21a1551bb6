"""The emotion-folder adapter (`prepare folder`) on tiny trees of SynthFER faces (--no-detect) and the photograph (dlib)."""

import os

import cv2
import numpy as np
import pytest

from fer_keras.data import pipeline, splits
from fer_keras.data_prep import common
from fer_keras.data_prep.adapters import prepare_dataset
from fer_keras.errors import UserError
from fer_keras.labels import get_label_set
from tests.conftest import expect_ok, expect_user_error, invoke
from tests.data_prep import synth_trees as trees

SUBJECTS = ("S010", "S011", "S012")
FOLDERS = {"Happy": "happiness", "sad": "sadness", "surprised": "surprise", "contempt": "contempt"}


def make_still_tree(root):
    """3 subjects x 4 emotion folders (one outside basic7), a corrupt image, a note, an unknown folder."""
    sources = {}
    for k, subject in enumerate(SUBJECTS):
        for folder, emotion in FOLDERS.items():
            image = trees.still(k, emotion, size=64, grey=True)["image"]
            rel = f"{folder}/{subject}_001_{k}.png"
            trees.save(root / rel, image)
            sources[rel] = image
    trees.truncate(trees.save(root / "sad" / "S013_001_0.png", trees.still(3, "sadness", size=64, grey=True)["image"]))
    trees.save(root / "sad" / "scan_7.png", trees.still(1, "sadness", size=64, grey=True)["image"])
    (root / "Happy" / "notes.txt").write_text("not an image")
    trees.save(root / "misc" / "a.png", trees.still(0, "anger", size=64, grey=True)["image"])
    return sources


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder_raw") / "my_faces"
    sources = make_still_tree(root)
    out = tmp_path_factory.mktemp("folder_out") / "my_faces"
    prepare_dataset("folder", root, out, size=48, grey=True, detect=False, protocol="still",
                    subject_pattern=r"^(S\d+)_", quiet=True)
    manifest, stills = trees.read_stills(out)
    return out, sources, manifest, stills


def test_emotion_folders_give_labels_and_the_pattern_gives_subjects(prepared):
    _, sources, manifest, stills = prepared
    names = get_label_set("basic7")
    assert manifest["dataset"] == "folder:my_faces" and manifest["kind"] == "still" and manifest["label_set"] == "basic7"
    assert not manifest["official_split"]
    kept = {rel: image for rel, image in sources.items() if not rel.startswith("contempt/")}
    assert manifest["num_examples"] == len(stills) == len(kept) == 9
    assert manifest["counts_per_subject"] == {s: 3 for s in SUBJECTS}
    for s in stills:
        folder = s["source"].split("/")[0]
        assert s["label_name"] == FOLDERS[folder] and s["label"] == names.index(FOLDERS[folder])
        assert s["subject"] == s["source"].split("/")[-1][:4]
        expected = cv2.resize(kept[s["source"]][..., 0], (48, 48), interpolation=cv2.INTER_AREA)
        assert np.abs(s["image"][..., 0].astype(int) - expected).mean() < 1.0


def test_problems_go_to_skipped_csv(prepared):
    out, _, manifest, _ = prepared
    skipped = dict(common.read_skipped(out))
    assert "corrupt or unreadable image" in skipped["sad/S013_001_0.png"]
    assert "does not match --subject-pattern" in skipped["sad/scan_7.png"]
    assert skipped["Happy/notes.txt"] == "not an image file"
    assert skipped["misc"].startswith("not an emotion folder name")
    assert all("not in label set basic7" in skipped[f"contempt/{s}_001_{k}.png"] for k, s in enumerate(SUBJECTS))
    assert manifest["num_skipped"] == len(skipped) == 7


def test_split_folders_become_the_official_split_and_the_label_set_is_chosen(tmp_path):
    root = tmp_path / "raw"
    for split, subjects in (("train", (0, 1)), ("Test", (2,))):
        for k in subjects:
            for folder, emotion in FOLDERS.items():
                trees.save(root / split / folder / f"{k}.png", trees.still(k, emotion, size=64, grey=True)["image"])
    out = tmp_path / "out"
    expect_ok(invoke("--quiet", "prepare", "folder", "--root", root, "--out", out, "--label-set", "ckplus7",
                     "--size", 48, "--grey", "--no-detect"))
    manifest, stills = trees.read_stills(out)
    assert manifest["official_split"] and manifest["counts_per_split"] == {"test": 4, "train": 8}
    assert manifest["label_set"] == "ckplus7" and manifest["counts_per_class"]["contempt"] == 3
    assert {s["split"] for s in stills if s["source"].startswith("Test/")} == {"test"}
    # Without a pattern each image is its own subject.
    assert len(manifest["counts_per_subject"]) == 12
    split = splits.official_split(manifest)
    assert split.official


def test_sequences_are_folders_of_frames_in_number_order(tmp_path):
    root = tmp_path / "raw"
    frames = trees.photo_sequence(3)
    for emotion, folder in (("happiness", "happy"), ("surprise", "surprise")):
        for subject in ("S001", "S002"):
            for t, frame in enumerate(frames):
                trees.save(root / folder / f"{subject}_seq" / f"frame{t * 5 + 1}.png", frame)  # frame1, frame6, frame11
    (root / "happy" / "S003_seq").mkdir()
    trees.save(root / "happy" / "S003_seq" / "frame1.png", frames[0])
    out = tmp_path / "out"
    manifest = prepare_dataset("folder", root, out, size=48, protocol="sequence", flow=True,
                               subject_pattern=r"^(S\d+)_", quiet=True)
    _, sequences = trees.read_sequences(out)
    assert manifest["kind"] == "sequence" and manifest["num_examples"] == len(sequences) == 4
    assert sorted(pipeline.subjects_of(manifest)) == ["S001", "S002"]
    assert dict(common.read_skipped(out))["happy/S003_seq"] == "1 frames; a sequence needs at least 2"
    for s in sequences:
        assert s["num_frames"] == 3 and s["flow"] is not None and s["landmarks"] is not None  # dlib found the face
    # frame11 is the last frame; text order (frame1, frame11, frame6) would put frame6 last. One
    # alignment per sequence, from its first frame: a two-frame sequence [photo 0, photo t] gives
    # exactly the crop that photo t gets in the three-frame one.
    crop_of = {}
    for t in (1, 2):
        single = tmp_path / f"single{t}"
        trees.save(single / "happy" / "S009_x" / "frame1.png", frames[0])
        trees.save(single / "happy" / "S009_x" / "frame2.png", frames[t])
        prepare_dataset("folder", single, tmp_path / f"one{t}", size=48, protocol="sequence", quiet=True)
        crop_of[t] = trees.read_sequences(tmp_path / f"one{t}")[1][0]["frames"][1]
    assert not np.array_equal(crop_of[1], crop_of[2])
    assert all(np.array_equal(s["frames"][2], crop_of[2]) for s in sequences)


def test_wrong_layout_and_options_are_one_line_errors(tmp_path):
    (tmp_path / "photos" / "holiday").mkdir(parents=True)
    error = expect_user_error(invoke("prepare", "folder", "--root", tmp_path / "photos", "--out", tmp_path / "out"))
    assert "does not look like an emotion-folder dataset" in error and "holiday" in error
    with pytest.raises(UserError, match="not a regular expression"):
        prepare_dataset("folder", tmp_path, tmp_path / "out", protocol="still", subject_pattern="(", quiet=True)
    with pytest.raises(UserError, match="--flow needs sequence records"):
        prepare_dataset("folder", tmp_path, tmp_path / "out", protocol="still", flow=True, quiet=True)
    trees.save(tmp_path / "stills" / "happy" / "a.png", trees.still(0, "happiness", size=64, grey=True)["image"])
    with pytest.raises(UserError, match="all 1 were skipped.*not a sequence folder"):
        prepare_dataset("folder", tmp_path / "stills", tmp_path / "out", protocol="sequence", quiet=True)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_training_on_images_without_subject_ids_warns_that_the_split_is_by_image(prepared, tmp_path):
    out, _, _, _ = prepared  # subjects from --subject-pattern: no warning
    args = ("--quiet", "train", "--model", "frame_cnn", "--epochs", 1, "--batch-size", 4, "--image-size", 32,
            "--folds", 3, "--fold", 0, "--out", tmp_path / "runs")
    assert "image k-fold" not in expect_ok(invoke(*args, "--data", out, "--name", "with_subjects")).output
    root = tmp_path / "raw" / "no_ids"
    make_still_tree(root)
    no_ids = tmp_path / "no_ids"
    prepare_dataset("folder", root, no_ids, size=48, grey=True, detect=False, protocol="still", quiet=True)
    warning = expect_ok(invoke(*args, "--data", no_ids, "--name", "without_subjects")).output
    assert "every subject of folder:no_ids has one sample" in warning and "image k-fold" in warning


def test_subject_folders_unused_entries_and_odd_file_names(tmp_path):
    """ROOT/<emotion>/<subject>/ images take the folder as subject; what the layout does not use is in skipped.csv."""
    root = tmp_path / "raw"
    for k, subject in enumerate(("S001", "S002", "S003")):
        for folder, emotion in (("happy", "happiness"), ("sad", "sadness")):
            trees.save(root / folder / subject / f"{k}.png", trees.still(k, emotion, size=64, grey=True)["image"])
    trees.save(root / "happy" / "S003" / "deeper" / "x.png", trees.still(0, "anger", size=64, grey=True)["image"])
    (root / "sad" / "S004").mkdir()
    trees.save(root / "loose.png", trees.still(0, "anger", size=64, grey=True)["image"])
    odd = root / "happy" / "S002" / os.fsdecode(b"caf\xe9.png")  # a name that is not UTF-8 (Latin-1 from an old camera)
    trees.save(odd, trees.still(1, "happiness", size=64, grey=True)["image"])
    (root / "happy" / os.fsdecode(b"notes_\xe9.txt")).write_text("not an image")
    (root / "sad" / "S001" / "gone.png").symlink_to(tmp_path / "moved_away.png")  # a link whose target was moved
    out = tmp_path / "out"
    manifest = prepare_dataset("folder", root, out, size=48, grey=True, detect=False, quiet=True)
    _, stills = trees.read_stills(out)
    assert manifest["counts_per_subject"] == {"S001": 2, "S002": 3, "S003": 2}
    assert {(s["source"].split("/")[1], s["subject"]) for s in stills} == {(n, n) for n in ("S001", "S002", "S003")}
    assert "happy/S002/caf\\xe9.png" in {s["source"] for s in stills}
    skipped = dict(common.read_skipped(out))
    assert skipped == {"loose.png": "a file outside the emotion folders: not used", "happy/notes_\\xe9.txt": "not an image file",
                       "happy/S003/deeper": "a folder inside a subject folder", "sad/S004": "an empty folder",
                       "sad/S001/gone.png": f"a broken link (to {tmp_path / 'moved_away.png'})"}
    # with a pattern, it is searched in the subject folder's name; a match whose group is empty names no subject
    again = prepare_dataset("folder", root, tmp_path / "pattern", size=48, grey=True, detect=False, quiet=True,
                            subject_pattern=r"^S00([12])?")
    assert again["counts_per_subject"] == {"1": 2, "2": 3}
    assert dict(common.read_skipped(tmp_path / "pattern"))["happy/S003/2.png"] == (
        "no subject: --subject-pattern '^S00([12])?' matched 'S003' with an empty subject")


def test_entries_beside_the_split_folders_are_reported(tmp_path):
    root = tmp_path / "raw"
    for split in ("train", "test"):
        for k in (0, 1):
            trees.save(root / split / "happy" / f"{split}{k}.png", trees.still(k, "happiness", size=64, grey=True)["image"])
    trees.save(root / "happy" / "beside.png", trees.still(2, "happiness", size=64, grey=True)["image"])
    trees.save(root / "train" / "stray.png", trees.still(2, "happiness", size=64, grey=True)["image"])
    manifest = prepare_dataset("folder", root, tmp_path / "out", size=48, grey=True, detect=False, quiet=True)
    assert manifest["num_examples"] == 4 and manifest["num_skipped"] == 2
    assert dict(common.read_skipped(tmp_path / "out")) == {
        "happy": "beside the train/val/test folders: not used",
        "train/stray.png": "a file outside the emotion folders: not used"}


def test_name_says_two_folders_hold_the_same_people(tmp_path):
    """`--name`: two folders of one dataset under other root names (stills here, a copy there) are the same people
    for the leak checks; by default each root's name is a dataset of its own, so no leak is seen between them."""
    for root in ("lab_2024", "lab_copy"):
        make_still_tree(tmp_path / root)
    common_args = ["--subject-pattern", r"^(S\d+)_", "--size", 48, "--grey", "--no-detect"]
    for root, name in (("lab_2024", "lab"), ("lab_copy", "lab")):
        expect_ok(invoke("--quiet", "prepare", "folder", "--root", tmp_path / root, "--out", tmp_path / f"{root}_named",
                         "--name", name, *common_args))
    expect_ok(invoke("--quiet", "prepare", "folder", "--root", tmp_path / "lab_copy", "--out", tmp_path / "unnamed",
                     *common_args))
    assert common.read_skipped(tmp_path / "lab_copy_named")  # prepared as before: the name only names it
    from fer_keras.data import records

    assert records.read_manifest(tmp_path / "lab_copy_named")["dataset"] == "folder:lab"
    assert records.read_manifest(tmp_path / "unnamed")["dataset"] == "folder:lab_copy"
    train = ["train", "--model", "frame_cnn", "--epochs", 1, "--batch-size", 16, "--image-size", 32, "--folds", 3,
             "--out", tmp_path]
    expect_ok(invoke(*train, "--fold", 0, "--data", tmp_path / "lab_2024_named", "--name", "first"))  # trains on S012
    line = expect_user_error(invoke(*train, "--fold", 2, "--data", tmp_path / "lab_copy_named", "--init-from",
                                    tmp_path / "first", "--name", "second"))  # tests on S012
    assert "was trained on folder:lab subjects that this run tests on (S012)" in line
    expect_ok(invoke(*train, "--fold", 2, "--data", tmp_path / "unnamed", "--init-from", tmp_path / "first",
                     "--name", "third"))
    line = expect_user_error(invoke("prepare", "folder", "--root", tmp_path / "lab_copy", "--out", tmp_path / "x",
                                    "--name", "my/lab"))
    assert line == "Error: --name must be a non-empty name without '/' or '\\'. Received: 'my/lab'"
    expect_ok(invoke("--quiet", "prepare", "folder", "--root", tmp_path / "lab_copy", "--out", tmp_path / "spaced",
                     "--name", "My Faces (CK+)", *common_args))
    assert records.read_manifest(tmp_path / "spaced")["dataset"] == "folder:My Faces (CK+)"
