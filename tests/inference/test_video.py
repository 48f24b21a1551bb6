"""predict on videos: per-frame records, clip windows for clip models, annotated output, bad files."""

import csv
import json

import cv2
import numpy as np
import pytest
import skimage.data

from tests.conftest import CLIP_LENGTH, expect_ok, expect_user_error, invoke
from tests.inference.videos import write_synth_video

FRAMES = 9


@pytest.fixture(scope="module")
def synth_video(tmp_path_factory):
    return write_synth_video(tmp_path_factory.mktemp("video") / "face.mp4", subject=2, emotion="surprise", size=64, frames=FRAMES)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_still_model_scores_every_frame_and_annotates(still_run, synth_video, tmp_path):
    out = tmp_path / "p.jsonl"
    expect_ok(invoke("--quiet", "predict", still_run, synth_video, "--detect", "none", "--out", out,
                     "--annotate", tmp_path / "annotated.mp4"))
    records = _records(out)
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert all("label" in r for r in records)
    capture = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES


def test_a_video_to_csv_keeps_the_frame_of_every_record(still_run, synth_video, tmp_path):
    out = tmp_path / "p.csv"
    expect_ok(invoke("--quiet", "predict", still_run, synth_video, "--detect", "none", "--out", out))
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame"]) for r in rows] == list(range(FRAMES))
    assert all(r["label"] and r["error"] == "" for r in rows)


def test_smoothing_is_an_exponential_moving_average(still_run, synth_video, tmp_path):
    raw, smooth = tmp_path / "raw.jsonl", tmp_path / "smooth.jsonl"
    expect_ok(invoke("--quiet", "predict", still_run, synth_video, "--detect", "none", "--out", raw, "--smoothing", 0))
    expect_ok(invoke("--quiet", "predict", still_run, synth_video, "--detect", "none", "--out", smooth, "--smoothing", 0.5))
    p = np.array([list(r["scores"].values()) for r in _records(raw)])
    s = np.array([list(r["scores"].values()) for r in _records(smooth)])
    expected = p[0]
    for t in range(1, FRAMES):
        expected = 0.5 * expected + 0.5 * p[t]
    np.testing.assert_allclose(s[-1], expected, atol=2e-4)


def test_clip_model_waits_for_a_full_window(clip_run, synth_video, tmp_path):
    out = tmp_path / "clip.jsonl"
    expect_ok(invoke("--quiet", "predict", clip_run, synth_video, "--detect", "none", "--out", out))
    records = _records(out)
    assert [r.get("error") for r in records[: CLIP_LENGTH - 1]] == ["filling the clip window"] * (CLIP_LENGTH - 1)
    assert all("label" in r for r in records[CLIP_LENGTH - 1 :])


def test_dlib_finds_the_face_in_every_frame_of_a_real_video(still_run, tmp_path):
    photo = skimage.data.astronaut()
    path = tmp_path / "astronaut.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (photo.shape[1], photo.shape[0]))
    for k in range(3):
        writer.write(cv2.cvtColor(np.roll(photo, 4 * k, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "astro.jsonl"
    expect_ok(invoke("--quiet", "predict", still_run, path, "--out", out))
    records = _records(out)
    assert len(records) == 3 and all(r["box"] for r in records)
    assert records[2]["box"][0] > records[0]["box"][0]  # the face moved right with the frames


def test_an_unreadable_video_is_one_clear_error(still_run, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    line = expect_user_error(invoke("predict", still_run, bad))
    assert "Cannot read video" in line
