"""predict on a video with two people: the clip window follows one face, and starts afresh when another replaces it."""

import json

import cv2
import numpy as np

from fer_keras.data import synth
from tests.conftest import CLIP_LENGTH, expect_ok, invoke

SIZE = 128  # dlib's HOG detector finds SynthFER faces at this size


def _faces(subject, emotion, count):
    return synth.render_sequence(synth.make_subject(subject), emotion, size=SIZE, grey=False, num_frames=count)["frames"]


def _write(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (2 * SIZE, SIZE))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _place(canvas, face, left, scale=1.0):
    """`face` at `scale` of its size, centred in the left or the right half of `canvas`."""
    side = int(round(SIZE * scale))
    small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    x0, y0 = (0 if left else SIZE) + (SIZE - side) // 2, (SIZE - side) // 2
    canvas[y0 : y0 + side, x0 : x0 + side] = small


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_window_stays_on_one_face_when_the_other_is_sometimes_larger(clip_run, tmp_path):
    count = 2 * CLIP_LENGTH
    left, right = _faces(2, "surprise", count), _faces(3, "happiness", count)
    frames = []
    for t in range(count):
        canvas = np.full((SIZE, 2 * SIZE, 3), 128, np.uint8)
        _place(canvas, left[t], True, 1.0 if t % 2 == 0 else 0.85)  # the largest face changes side every frame
        _place(canvas, right[t], False, 0.85 if t % 2 == 0 else 1.0)
        frames.append(canvas)
    video, out = _write(tmp_path / "two.mp4", frames), tmp_path / "two.jsonl"
    expect_ok(invoke("--quiet", "predict", clip_run, video, "--out", out))
    records = _records(out)
    assert [t for t, r in enumerate(records) if "label" in r] == list(range(CLIP_LENGTH - 1, count))
    centres = [(r["box"][0] + r["box"][2]) / 2 for r in records if "label" in r]
    assert all(c < SIZE for c in centres), centres  # the left face, the largest on the first frame


def test_another_person_in_another_place_starts_a_new_window(clip_run, tmp_path):
    count = 2 * CLIP_LENGTH
    left, right = _faces(2, "surprise", CLIP_LENGTH), _faces(3, "happiness", CLIP_LENGTH)
    frames = []
    for t in range(count):
        canvas = np.full((SIZE, 2 * SIZE, 3), 128, np.uint8)
        _place(canvas, left[t] if t < CLIP_LENGTH else right[t - CLIP_LENGTH], t < CLIP_LENGTH)
        frames.append(canvas)
    video, out = _write(tmp_path / "switch.mp4", frames), tmp_path / "switch.jsonl"
    expect_ok(invoke("--quiet", "predict", clip_run, video, "--out", out))
    records = _records(out)
    # no window mixes the two people: the second one waits for T faces of its own
    assert [t for t, r in enumerate(records) if "label" in r] == [CLIP_LENGTH - 1, count - 1]
    assert [r.get("error") for r in records[CLIP_LENGTH : count - 1]] == ["filling the clip window"] * (CLIP_LENGTH - 1)
