"""KDEF adapter with real dlib detection on a real photograph (skimage's astronaut, whole and as
variants) in KDEF's layout, plus a corrupt file, an unknown code, a name without a label and a
faceless image."""

import numpy as np
import pytest
import skimage.data

from fer_keras.data import pipeline, splits
from fer_keras.data_prep import common, faces
from fer_keras.data_prep.adapters import prepare_dataset
from fer_keras.labels import get_label_set
from tests.data_prep import synth_trees as trees

SIZE = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kdef_raw") / "KDEF"
    trees.save(root / "AF01" / "AF01HAS.JPG", skimage.data.astronaut())  # the real photograph, whole
    trees.save(root / "BF01" / "BF01ANS.JPG", trees.photo_variant("flip"))  # same actor, session B
    trees.save(root / "AM02" / "AM02SUS.JPG", trees.photo_variant("scaled"))
    trees.save(root / "AM02" / "AM02AFS.JPG", trees.photo_variant("rotated"))
    trees.save(root / "AM03" / "AM03NES.JPG", trees.photo_variant("grey"))
    trees.save(root / "AM03" / "AM03HAHL.JPG", trees.photo_variant("small"))  # half left
    trees.save(root / "AM03" / "AM03SAFR.JPG", np.full((160, 160, 3), 128, np.uint8))  # profile: no face
    trees.truncate(trees.save(root / "AM02" / "AM02DIS.JPG", trees.still(2, "disgust", size=160)["image"]), 0.3)
    trees.save(root / "AM02" / "AM02XXS.JPG", trees.still(2, "anger", size=160)["image"])
    trees.save(root / "AM02" / "Thumbs.JPG", trees.still(2, "anger", size=48)["image"])
    return root


@pytest.fixture(scope="module")
def frontal(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("kdef_out") / "kdef"
    prepare_dataset("kdef", root, out, size=SIZE, quiet=True)
    manifest, stills = trees.read_stills(out)
    return out, manifest, {s["source"]: s for s in stills}


def test_real_photograph_is_detected_aligned_and_landmarked(root, frontal):
    _, _, stills = frontal
    s = stills["AF01/AF01HAS.JPG"]
    assert s["label_name"] == "happiness" and s["label"] == get_label_set("basic7").index("happiness")
    assert s["image"].shape == (SIZE, SIZE, 3) and s["has_landmarks"]
    # Exactly what detecting, landmarking and aligning the file's photograph directly gives.
    photo = common.read_image(root / "AF01" / "AF01HAS.JPG")
    box = faces.detect_faces(photo, upsample=0)[0]
    direct, direct_points = faces.align_face(photo, faces.face_landmarks(photo, box), SIZE)
    np.testing.assert_array_equal(s["image"], direct)
    np.testing.assert_allclose(s["landmarks"], direct_points, atol=1e-4)
    assert s["image"].std() > 20  # a face, not a flat border
    right_eye, left_eye, mouth = faces.anchor_points(s["landmarks"])
    np.testing.assert_allclose([right_eye, left_eye], faces.TEMPLATE[:2] * SIZE, atol=0.1 * SIZE)
    assert right_eye[1] < mouth[1] and left_eye[1] < mouth[1]


def test_subjects_span_both_sessions_and_splits_keep_them_together(frontal):
    _, manifest, stills = frontal
    assert manifest["counts_per_subject"] == {"F01": 2, "M02": 2, "M03": 1}
    assert stills["BF01/BF01ANS.JPG"]["subject"] == stills["AF01/AF01HAS.JPG"]["subject"] == "F01"
    both_sessions = ("AF01/AF01HAS.JPG", "BF01/BF01ANS.JPG")
    for fold in range(2):
        split = splits.kfold_split(pipeline.subjects_of(manifest), 2, fold, validation=False)
        in_test = {src: s["subject"] in split.test for src, s in stills.items()}
        assert len({in_test[src] for src in both_sessions}) == 1  # actor F01's two sessions on one side
        assert any(in_test.values()) and not all(in_test.values())


def test_only_frontal_by_default_and_problems_skipped(frontal):
    out, manifest, stills = frontal
    assert sorted(stills) == ["AF01/AF01HAS.JPG", "AM02/AM02AFS.JPG", "AM02/AM02SUS.JPG", "AM03/AM03NES.JPG", "BF01/BF01ANS.JPG"]
    assert stills["AM02/AM02AFS.JPG"]["label_name"] == "fear"  # AF = afraid
    skipped = dict(common.read_skipped(out))
    assert set(skipped) == {"AM02/AM02DIS.JPG", "AM02/AM02XXS.JPG", "AM02/Thumbs.JPG"}
    assert "corrupt or unreadable" in skipped["AM02/AM02DIS.JPG"]
    assert "unknown KDEF expression code 'XX'" in skipped["AM02/AM02XXS.JPG"]
    assert skipped["AM02/Thumbs.JPG"].startswith("no label")


def test_angles_option_and_a_face_not_found(root, tmp_path):
    prepare_dataset("kdef", root, tmp_path / "kdef", size=SIZE, angles=("HL", "FR"), quiet=True)
    manifest, stills = trees.read_stills(tmp_path / "kdef")
    assert [s["source"] for s in stills] == ["AM03/AM03HAHL.JPG"]
    assert dict(common.read_skipped(tmp_path / "kdef"))["AM03/AM03SAFR.JPG"] == "no face found by dlib"
    assert manifest["params"]["angles"] == ["HL", "FR"]


def test_two_workers_detect_the_same_faces(root, frontal, tmp_path):
    out, manifest, _ = frontal
    again = prepare_dataset("kdef", root, tmp_path / "kdef", size=SIZE, workers=2, quiet=True)
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]
    assert (tmp_path / "kdef" / "skipped.csv").read_text() == (out / "skipped.csv").read_text()
