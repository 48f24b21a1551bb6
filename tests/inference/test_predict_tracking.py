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


def _slots(faces, slots=3):
    """A frame of `slots` face-wide places, `faces` {place: (face, scale)} drawn in them."""
    canvas = np.full((SIZE, slots * SIZE, 3), 128, np.uint8)
    for place, (face, scale) in faces.items():
        side = int(round(SIZE * scale))
        x0, y0 = place * SIZE + (SIZE - side) // 2, (SIZE - side) // 2
        canvas[y0 : y0 + side, x0 : x0 + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    return canvas


def _write_slots(path, frames, slots=3):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (slots * SIZE, SIZE))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_other_people_elsewhere_when_the_face_followed_is_gone_start_a_new_window(clip_run, tmp_path):
    count = 2 * CLIP_LENGTH
    first, second, third = (_faces(s, e, CLIP_LENGTH) for s, e in ((2, "surprise"), (3, "happiness"), (1, "anger")))
    frames = [_slots({0: (first[t], 1.0)}) for t in range(CLIP_LENGTH)]
    frames += [_slots({1: (second[t], 1.0), 2: (third[t], 0.9)}) for t in range(CLIP_LENGTH)]
    video, out = _write_slots(tmp_path / "switch.mp4", frames), tmp_path / "switch.jsonl"
    expect_ok(invoke("--quiet", "predict", clip_run, video, "--out", out))
    records = _records(out)
    # no window mixes two people: the largest of the new ones waits for T faces of its own, and is then followed
    assert [t for t, r in enumerate(records) if "label" in r] == [CLIP_LENGTH - 1, count - 1]
    assert [r.get("error") for r in records[CLIP_LENGTH : count - 1]] == ["filling the clip window"] * (CLIP_LENGTH - 1)
    assert SIZE <= (records[-1]["box"][0] + records[-1]["box"][2]) / 2 < 2 * SIZE


def test_a_lone_face_that_jumps_is_still_followed(clip_run, tmp_path):
    """At a low frame rate one person can move further than their face's width between frames: no one else is there."""
    count = 2 * CLIP_LENGTH
    face = _faces(2, "surprise", count)
    frames = [_slots({0 if t % 2 == 0 else 2: (face[t], 1.0)}) for t in range(count)]
    video, out = _write_slots(tmp_path / "jump.mp4", frames), tmp_path / "jump.jsonl"
    expect_ok(invoke("--quiet", "predict", clip_run, video, "--out", out))
    assert [t for t, r in enumerate(_records(out)) if "label" in r] == list(range(CLIP_LENGTH - 1, count))
