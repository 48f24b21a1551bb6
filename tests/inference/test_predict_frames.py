"""predict with a video model on folders of frames (CK+'s cohn-kanade-images/S005/001/): each folder is one sequence."""

import json

import cv2
import numpy as np
import pytest

from fer_keras.data import synth
from fer_keras.inference.predictor import crop_faces
from fer_keras.training import fit
from tests.conftest import CLIP_LENGTH, MODEL_SIZE, expect_ok, expect_user_error, invoke

VIDEO_SIZE = 128  # dlib's HOG detector finds SynthFER faces at this size


def _write_sequence(folder, subject, emotion, count):
    """frame1.png ... frameN.png: in text order frame10 would come before frame2."""
    folder.mkdir(parents=True)
    frames = synth.render_sequence(synth.make_subject(subject), emotion, size=VIDEO_SIZE, grey=False, num_frames=count)["frames"]
    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"frame{t + 1}.png"), frame[..., ::-1])
    return frames


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames") / "cohn-kanade-images"
    frames = {"S005/001": _write_sequence(root / "S005" / "001", 3, "happiness", 10),
              "S006/002": _write_sequence(root / "S006" / "002", 4, "surprise", 6)}
    return root, frames


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_frame_folder_is_one_sequence_in_number_order(clip_run, tree, tmp_path):
    root, frames = tree
    out = tmp_path / "records.jsonl"
    result = expect_ok(invoke("predict", clip_run, root, "--frames", "--out", out, "--smoothing", 0,
                              "--annotate", tmp_path / "ann"))
    assert "in 2 inputs" in result.output
    records = _records(out)
    by_sequence = {}
    for r in records:
        by_sequence.setdefault(r["file"], []).append(r)
    assert sorted(by_sequence) == ["cohn-kanade-images/S005/001", "cohn-kanade-images/S006/002"]
    first = by_sequence["cohn-kanade-images/S005/001"]
    assert [r["frame"] for r in first] == list(range(10))
    assert [r["frame_file"] for r in first] == [f"frame{t + 1}.png" for t in range(10)]
    assert [r.get("error") for r in first[:CLIP_LENGTH - 1]] == ["filling the clip window"] * (CLIP_LENGTH - 1)
    assert all("label" in r for r in first[CLIP_LENGTH - 1:])

    # Without smoothing, the last record is the clip model on the last T aligned faces, in number order.
    _, _, model = fit.load_run(clip_run)
    crops = [crop_faces(f, MODEL_SIZE, 1)[0][2] for f in frames["S005/001"]]
    expected = np.asarray(model(np.stack(crops[-CLIP_LENGTH:])[None], training=False))[0]
    got = np.array(list(first[-1]["scores"].values()))
    assert np.max(np.abs(got - expected)) <= 1e-3
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == [
        "cohn-kanade-images_S005_001.mp4", "cohn-kanade-images_S006_002.mp4"]


def test_a_corrupt_frame_fails_its_sequence_only(clip_run, tree, tmp_path):
    root, _ = tree
    broken = tmp_path / "seqs"
    _write_sequence(broken / "good", 3, "anger", 5)
    _write_sequence(broken / "bad", 4, "anger", 5)
    (broken / "bad" / "frame3.png").write_bytes(b"not a png")
    out = tmp_path / "records.jsonl"
    error = expect_user_error(invoke("predict", clip_run, broken, "--frames", "--out", out, "--annotate", tmp_path / "ann"))
    assert "1 of 2 inputs could not be read" in error and "frame3.png" in error
    records = _records(out)
    bad = [r for r in records if r["file"] == "seqs/bad"]  # the frames before the corrupt one, then its error
    assert [(r["frame_file"], r["error"]) for r in bad[:-1]] == [("frame1.png", "filling the clip window"),
                                                                 ("frame2.png", "filling the clip window")]
    assert bad[-1] == {"file": "seqs/bad", "face": None,
                       "error": f"Cannot read frame {str(broken / 'bad' / 'frame3.png')!r}: not an image, or corrupt or truncated."}
    assert len([r for r in records if r["file"] == "seqs/good"]) == 5
    assert [p.name for p in (tmp_path / "ann").iterdir()] == ["seqs_good.mp4"]  # no half-written video of the bad one


def test_frames_is_for_video_models_and_folders(clip_run, still_run, tree, tmp_path):
    root, _ = tree
    assert "--frames is for video models" in expect_user_error(invoke("predict", still_run, root, "--frames"))
    image = root / "S006" / "002" / "frame1.png"
    assert "none of the inputs is a folder" in expect_user_error(invoke("predict", clip_run, image, "--frames"))
    # Without --frames a folder's images are stills, which a clip model refuses, naming the way out.
    assert "--frames" in expect_user_error(invoke("predict", clip_run, root / "S006" / "002"))


def test_the_csv_has_the_columns_the_jsonl_records_have(clip_run, tree, tmp_path):
    import csv

    root, _ = tree
    jsonl, table = tmp_path / "r.jsonl", tmp_path / "r.csv"
    expect_ok(invoke("--quiet", "predict", clip_run, root, "--frames", "--out", jsonl))
    expect_ok(invoke("--quiet", "predict", clip_run, root, "--frames", "--out", table))
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    records = _records(jsonl)
    assert [r["frame_file"] for r in rows] == [r["frame_file"] for r in records]
    assert [r["label"] for r in rows] == [r.get("label", "") for r in records]


def test_a_frame_of_another_size_gets_its_box_in_its_own_pixels(clip_run, tmp_path):
    folder = tmp_path / "mixed" / "001"
    frames = _write_sequence(folder, 3, "happiness", 6)
    big = int(VIDEO_SIZE * 1.5)
    for t in (1, 3, 5):  # every other frame stored at 1.5 times the size
        cv2.imwrite(str(folder / f"frame{t + 1}.png"), cv2.resize(frames[t][..., ::-1], (big, big), interpolation=cv2.INTER_CUBIC))
    out = tmp_path / "r.jsonl"
    expect_ok(invoke("--quiet", "predict", clip_run, folder, "--frames", "--out", out, "--smoothing", 0))
    records = _records(out)
    points = {r["frame"]: np.array(r["landmarks"]) for r in records if r.get("landmarks")}
    assert sorted(points) == list(range(CLIP_LENGTH - 1, 6))

    def eyes(p):  # the two eye centres: where the face is, steadier than dlib's box, whose size moves in steps
        return p[36:42].mean(0), p[42:48].mean(0)

    for t, p in points.items():
        near = points.get(t - 1) if t - 1 in points else points[t + 1]
        (a, b), (c, d) = eyes(p), eyes(near)
        ratio = np.linalg.norm(b - a) / np.linalg.norm(d - c)
        assert ratio == pytest.approx(1.5 if t % 2 else 1 / 1.5, rel=0.1), (t, ratio)
        assert np.all((p > 0) & (p < (big if t % 2 else VIDEO_SIZE)))
