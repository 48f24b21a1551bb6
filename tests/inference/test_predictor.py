"""Prediction with a run folder, a SavedModel and a .tflite, through the CLI and the Predictor class.

Inputs are SynthFER faces written by `fer-keras synth generate` (already face crops, so
`--detect none`), plus one real photograph for the dlib path.
"""

import csv
import json

import numpy as np
import pytest
import skimage.data

from fer_keras.errors import UserError
from fer_keras.inference.predictor import Predictor, load_backend
from tests.conftest import expect_ok, expect_user_error, invoke

LABELS = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]


def read_jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def check_records(records, files):
    assert sorted(r["file"] for r in records) == sorted(str(f) for f in files)
    for r in records:
        assert "error" not in r
        assert r["face"] == 0 and r["box"] is None and r["landmarks"] is None
        assert set(r["scores"]) == set(LABELS)
        assert r["label"] == max(r["scores"], key=r["scores"].get)
        assert r["score"] == r["scores"][r["label"]]
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-3)


@pytest.fixture(scope="module")
def images(face_images):
    files = sorted(face_images.glob("*.png"))
    assert len(files) == 8  # 1 subject x 8 canonical emotions
    return files


@pytest.fixture(scope="module")
def run_records(still_run, face_images, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "run.jsonl"
    expect_ok(invoke("--quiet", "predict", still_run, face_images, "--detect", "none", "--out", out))
    records = read_jsonl(out.read_text())
    check_records(records, images)
    return {r["file"]: r for r in records}


def test_predict_with_a_run_folder_to_stdout(still_run, images, run_records):
    result = expect_ok(invoke("--quiet", "predict", still_run, *images, "--detect", "none"))
    records = read_jsonl(result.stdout)
    check_records(records, images)
    for r in records:
        assert r["scores"] == run_records[r["file"]]["scores"]


def test_predict_with_a_savedmodel(still_savedmodels, face_images, images, run_records, tmp_path):
    # The TF Serving base folder: its newest version is used.
    for model_path in (still_savedmodels["base"], still_savedmodels["versions"][0]):
        out = tmp_path / f"{model_path.name}.jsonl"
        expect_ok(invoke("--quiet", "predict", model_path, face_images, "--detect", "none", "--out", out))
        records = read_jsonl(out.read_text())
        check_records(records, images)
        for r in records:
            expected = run_records[r["file"]]
            assert r["label"] == expected["label"]
            for label in LABELS:
                assert r["scores"][label] == pytest.approx(expected["scores"][label], abs=2e-4)


@pytest.mark.parametrize("quantize, tolerance", [("none", 2e-4), ("float16", 1e-2)])
def test_predict_with_a_tflite_model(still_tflite, face_images, images, run_records, tmp_path, quantize, tolerance):
    out = tmp_path / "pred.jsonl"
    expect_ok(invoke("--quiet", "predict", still_tflite[quantize], face_images, "--detect", "none", "--out", out))
    records = read_jsonl(out.read_text())
    check_records(records, images)
    for r in records:
        for label in LABELS:
            assert r["scores"][label] == pytest.approx(run_records[r["file"]]["scores"][label], abs=tolerance)


def test_predict_to_csv(still_run, face_images, images, run_records, tmp_path):
    out = tmp_path / "nested" / "pred.csv"
    result = expect_ok(invoke("predict", still_run, face_images, "--detect", "none", "--out", out))
    assert "8 faces in 8 images" in result.output
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "frame", "face", "box", "landmarks", "label", "score", *sorted(LABELS), "error"]
    assert sorted(r["file"] for r in rows) == sorted(str(p) for p in images)
    for row in rows:
        expected = run_records[row["file"]]
        assert row["frame"] == "" and row["landmarks"] == "null"  # an image has no frame; --detect none, no landmarks
        assert row["label"] == expected["label"]
        assert float(row["score"]) == pytest.approx(expected["score"])
        assert row["error"] == ""
    assert not list(out.parent.glob("*.tmp"))


def test_min_confidence_marks_the_faces_below_it(still_run, face_images, images, run_records, tmp_path):
    scores = sorted(set(r["score"] for r in run_records.values()))
    assert len(scores) > 1
    middle = len(scores) // 2
    threshold = (scores[middle - 1] + scores[middle]) / 2  # some faces below, some above
    below = sum(r["score"] < threshold for r in run_records.values())
    out = tmp_path / "sure.jsonl"
    expect_ok(invoke("--quiet", "predict", still_run, face_images, "--detect", "none", "--out", out,
                     "--min-confidence", threshold, "--annotate", tmp_path / "drawn"))
    records = read_jsonl(out.read_text())
    check_records(records, images)
    assert [r["unsure"] for r in records] == [r["score"] < threshold for r in records]
    assert sum(r["unsure"] for r in records) == below and 0 < below < len(images)
    assert all(r["label"] == run_records[r["file"]]["label"] for r in records)  # the label is kept, only marked
    assert "unsure" not in next(iter(run_records.values()))  # without the option, records are as before
    assert len(list((tmp_path / "drawn").glob("*.png"))) == len(images)
    csv_out = tmp_path / "sure.csv"
    expect_ok(invoke("--quiet", "predict", still_run, face_images, "--detect", "none", "--out", csv_out,
                     "--min-confidence", threshold))
    with open(csv_out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:8] == ["file", "frame", "face", "box", "landmarks", "label", "score", "unsure"]
    assert sorted(r["unsure"] for r in rows) == ["False"] * (len(images) - below) + ["True"] * below
    result = invoke("predict", still_run, face_images, "--detect", "none", "--min-confidence", 1.5)
    assert result.exit_code != 0 and "--min-confidence" in result.output


@pytest.mark.parametrize("name", ["pred.txt", "pred.json"])  # .json: the records are JSON lines, not one JSON document
def test_predict_refuses_an_unknown_output_suffix(still_run, images, tmp_path, name):
    line = expect_user_error(invoke("predict", still_run, images[0], "--detect", "none", "--out", tmp_path / name))
    assert line == f"Error: --out must end in .jsonl (JSON lines) or .csv. Received: {name}"
    assert list(tmp_path.iterdir()) == []


def test_predictor_finds_the_astronaut_with_dlib(still_run):
    predictor = Predictor(still_run, detect="dlib")
    records = predictor.predict_image(skimage.data.astronaut(), name="astronaut")
    faces = [r for r in records if "error" not in r]
    assert len(faces) == 1, records  # her face only, not the weak box dlib also finds on her suit
    first = faces[0]
    x0, y0, x1, y1 = first["box"]
    assert 150 <= x0 < x1 <= 300 and 50 <= y0 < y1 <= 200  # the astronaut's face
    assert np.array(first["landmarks"]).shape == (68, 2)
    assert first["label"] in LABELS


def test_predictor_records_no_face(still_run):
    records = Predictor(still_run, detect="dlib").predict_image(np.zeros((80, 80, 3), np.uint8), name="blank")
    assert records == [{"file": "blank", "face": None, "error": "no face found"}]


def test_predictor_records_an_unreadable_file(still_run, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    (record,) = Predictor(still_run, detect="none").predict_file(bad)
    assert record["face"] is None and "Cannot read image" in record["error"]


def test_predictor_rejects_bad_arguments(still_run, clip_run, tmp_path):
    with pytest.raises(UserError, match="--detect"):
        Predictor(still_run, detect="haar")
    with pytest.raises(UserError, match="give it a video"):  # a clip model predicts on videos, not on one image
        Predictor(clip_run, detect="none").predict_image(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(UserError, match="not a run folder"):
        load_backend(tmp_path)
    (tmp_path / "model.tflite").write_bytes(b"")  # no JSON beside it, none inside: the file itself is what is wrong
    with pytest.raises(UserError, match="model.tflite is not a valid TFLite model"):
        load_backend(tmp_path / "model.tflite")
