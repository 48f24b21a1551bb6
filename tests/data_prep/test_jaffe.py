"""JAFFE adapter on a tiny tree in JAFFE's layout (SynthFER faces as grey TIFFs, --no-detect)."""

import cv2
import numpy as np
import pytest

from fer_keras.data import pipeline, splits
from fer_keras.data_prep import common
from fer_keras.data_prep.adapters import prepare_dataset
from fer_keras.errors import UserError
from fer_keras.labels import get_label_set
from tests.data_prep import synth_trees as trees

SUBJECTS = ("KA", "KL", "KM", "KR")
CODES = {"AN": "anger", "HA": "happiness", "NE": "neutral"}


def make_tree(root):
    """4 subjects x 3 expressions, plus a corrupt file, an unknown code and an unlabelled name."""
    folder = root / "jaffe"
    sources = {}
    for k, subject in enumerate(SUBJECTS):
        for i, (code, emotion) in enumerate(CODES.items()):
            image = trees.still(k, emotion, size=64, grey=True)["image"]
            name = f"{subject}.{code}{i + 1}.{10 * k + i}.tiff"
            trees.save(folder / name, image)
            sources[f"jaffe/{name}"] = image
    trees.truncate(trees.save(folder / "KA.SA1.90.tiff", trees.still(0, "sadness", size=64, grey=True)["image"]), 0.3)
    trees.save(folder / "KA.XX1.91.tiff", trees.still(0, "anger", size=64, grey=True)["image"])
    trees.save(folder / "scan.tiff", trees.still(1, "anger", size=64, grey=True)["image"])
    (folder / "README").write_text("not an image")
    return sources


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("jaffe_raw")
    sources = make_tree(root)
    out = tmp_path_factory.mktemp("jaffe_out") / "jaffe"
    prepare_dataset("jaffe", root, out, size=48, grey=True, detect=False, quiet=True)
    manifest, stills = trees.read_stills(out)
    return root, out, sources, manifest, stills


def test_labels_subjects_and_images(prepared):
    _, _, sources, manifest, stills = prepared
    names = get_label_set("basic7")
    assert manifest["dataset"] == "jaffe" and manifest["kind"] == "still" and manifest["label_set"] == "basic7"
    assert manifest["num_examples"] == len(stills) == len(SUBJECTS) * len(CODES)
    assert manifest["counts_per_class"] == {n: (len(SUBJECTS) if n in CODES.values() else 0) for n in names}
    assert manifest["counts_per_subject"] == {s: len(CODES) for s in SUBJECTS}
    assert manifest["image"] == {"size": 48, "channels": 1}
    for s in stills:
        code = s["source"].split("/")[-1].split(".")[1][:2]
        assert s["label_name"] == CODES[code] and s["label"] == names.index(CODES[code])
        assert s["subject"] == s["source"].split("/")[-1][:2]
        assert s["image"].shape == (48, 48, 1) and not s["has_landmarks"]  # --no-detect: no dlib landmarks
        expected = cv2.resize(sources[s["source"]][..., 0], (48, 48), interpolation=cv2.INTER_AREA)
        assert np.abs(s["image"][..., 0].astype(int) - expected).mean() < 1.0


def test_problems_go_to_skipped_csv_and_the_run_goes_on(prepared):
    _, out, _, manifest, _ = prepared
    skipped = dict(common.read_skipped(out))
    assert manifest["num_skipped"] == len(skipped) == 3
    assert "corrupt or unreadable image" in skipped["jaffe/KA.SA1.90.tiff"]
    assert "unknown JAFFE expression code 'XX'" in skipped["jaffe/KA.XX1.91.tiff"]
    assert skipped["jaffe/scan.tiff"].startswith("no label")


def test_no_subject_on_both_sides_of_a_kfold_split(prepared):
    _, _, _, manifest, stills = prepared
    subjects = pipeline.subjects_of(manifest)
    assert subjects == sorted(SUBJECTS)
    for fold in range(2):
        split = splits.kfold_split(subjects, 2, fold, validation=False)
        train = {s["source"] for s in stills if s["subject"] in split.train}
        test = {s["source"] for s in stills if s["subject"] in split.test}
        assert train and test and not train & test and len(train) + len(test) == len(stills)
        # every image of a person is on the side of that person's initials
        for s in stills:
            assert (s["subject"] in split.test) == (s["source"].split("/")[-1][:2] in split.test)


def test_wrong_layout_and_options_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="KA.AN1.39.tiff"):
        prepare_dataset("jaffe", tmp_path, tmp_path.parent / "out", quiet=True)
    with pytest.raises(UserError, match="is inside --root"):
        prepare_dataset("jaffe", tmp_path, tmp_path / "out", quiet=True)
    with pytest.raises(UserError, match="ships no landmarks"):
        prepare_dataset("jaffe", tmp_path, tmp_path / "out", landmarks="dataset", quiet=True)
    with pytest.raises(UserError, match="--flow needs sequence records"):
        prepare_dataset("jaffe", tmp_path, tmp_path / "out", flow=True, quiet=True)
    with pytest.raises(UserError, match="does not exist"):
        prepare_dataset("jaffe", tmp_path / "nowhere", tmp_path / "out", quiet=True)


def test_upper_case_extensions_are_jaffe_names_too(tmp_path):
    folder = tmp_path / "raw" / "jaffedbase"
    for k, (name, emotion) in enumerate((("KL.NE1.2.TIFF", "neutral"), ("KM.DI1.3.Tiff", "disgust"))):
        trees.save(folder / name, trees.still(k, emotion, size=64, grey=True)["image"])
    manifest = prepare_dataset("jaffe", tmp_path / "raw", tmp_path / "out", size=48, grey=True, detect=False, quiet=True)
    assert manifest["num_examples"] == 2 and manifest["num_skipped"] == 0
    assert manifest["counts_per_subject"] == {"KL": 1, "KM": 1}
