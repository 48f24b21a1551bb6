"""`fer-keras explain RUN VIDEO|FRAME_FOLDER`: a RAM model's attention over the user's own sequence."""

import csv

import cv2
import numpy as np
import pytest

from fer_keras.data import synth
from fer_keras.data_prep.flow import sequence_flow
from fer_keras.evaluation.explain import gradcam_plus_plus, overlay, sequence_clips
from fer_keras.inference.predictor import crop_faces
from fer_keras.training import fit
from tests.conftest import CLIP_LENGTH, MODEL_SIZE, expect_ok, expect_user_error, invoke
from tests.exports.streaming_runs import ram_run
from tests.inference.videos import video_crops

FRAMES = 11
BLANK = 2  # a frame without a face: left out of the clips
VIDEO_SIZE = 128  # dlib's HOG detector finds SynthFER faces at this size
CAPTION = 14  # the caption bar's height above a strip


def _frames(subject, emotion, count=FRAMES):
    return synth.render_sequence(synth.make_subject(subject), emotion, size=VIDEO_SIZE, grey=False, num_frames=count)["frames"]


@pytest.fixture(scope="module")
def ram(sequence_data, runs_dir):
    return ram_run(sequence_data, runs_dir)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A SynthFER face sequence (mp4v, 10 fps) with frame BLANK replaced by a plain grey frame."""
    path = tmp_path_factory.mktemp("explain_video") / "face.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (VIDEO_SIZE, VIDEO_SIZE))
    for t, frame in enumerate(_frames(3, "happiness")):
        writer.write(np.full_like(frame, 128) if t == BLANK else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _strip_rows(png):
    """(top row, bottom row) of a clip strip written for a 64 px high strip: frames, then their attention overlays."""
    strip = cv2.imread(str(png))[..., ::-1]
    assert strip.shape == (CAPTION + 2 * MODEL_SIZE, CLIP_LENGTH * MODEL_SIZE, 3)
    return strip[CAPTION:CAPTION + MODEL_SIZE], strip[CAPTION + MODEL_SIZE:]


def _expected_rows(model, clip):
    """The frames and their attention overlays side by side, computed straight from the model."""
    maps = np.asarray(model.explain(clip[None], training=False)["attention_maps"])[0, ..., 0]
    top = np.concatenate([np.uint8(np.repeat(f, 3, -1)) for f in clip], axis=1)
    bottom = np.concatenate([overlay(f, m) for f, m in zip(clip, maps)], axis=1)
    return top, bottom


def test_a_video_gives_its_last_clips_of_face_frames_with_the_model_attention(ram, video, tmp_path):
    result = expect_ok(invoke("explain", ram, video, "--out", tmp_path / "all"))
    assert "Wrote 2 overlays" in result.output
    # 10 frames with a face (BLANK has none): the last 8 make two clips of 4, starting at frames 3 and 7.
    assert sorted(p.name for p in (tmp_path / "all").glob("*.png")) == ["face_f3.png", "face_f7.png"]
    crops = video_crops(video, MODEL_SIZE, "dlib")
    assert [t for t, c in enumerate(crops) if c is None] == [BLANK]
    _, _, model = fit.load_run(ram)
    for first in (3, 7):
        clip = np.stack(crops[first:first + CLIP_LENGTH]).astype("float32")
        top, bottom = _strip_rows(tmp_path / "all" / f"face_f{first}.png")
        expected_top, expected_bottom = _expected_rows(model, clip)
        assert np.array_equal(top, expected_top)
        assert np.max(np.abs(bottom.astype(int) - expected_bottom.astype(int))) <= 1
        # explain.csv gives each strip's attention range (drawn on the absolute 0..1 scale, a flat map looks uniform)
        maps = np.asarray(model.explain(clip[None], training=False)["attention_maps"])
        row = next(r for r in csv.DictReader(open(tmp_path / "all" / "explain.csv")) if r["file"] == f"face_f{first}.png")
        assert float(row["attention_min"]) == pytest.approx(maps.min(), abs=1e-4)
        assert float(row["attention_max"]) == pytest.approx(maps.max(), abs=1e-4)

    expect_ok(invoke("--quiet", "explain", ram, video, "--count", 1, "--out", tmp_path / "one"))
    assert [p.name for p in (tmp_path / "one").glob("*.png")] == ["face_f7.png"]


def test_a_folder_of_frames_is_read_in_the_order_of_their_numbers(ram, tmp_path):
    folder = tmp_path / "S005" / "001"
    folder.mkdir(parents=True)
    frames = _frames(4, "surprise", count=12)
    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"frame{t + 1}.png"), frame[..., ::-1])  # frame10 would sort before frame2 as text
    (folder / "notes.txt").write_text("not a frame")
    result = expect_ok(invoke("explain", ram, folder, "--out", tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["001_f0.png", "001_f4.png", "001_f8.png"]
    assert "Wrote 3 overlays (all there are: fewer than the 8 asked for)" in result.output
    crops = [crop_faces(f, MODEL_SIZE, 1)[0][2] for f in frames]
    _, _, model = fit.load_run(ram)
    top, bottom = _strip_rows(tmp_path / "out" / "001_f8.png")
    expected_top, expected_bottom = _expected_rows(model, np.stack(crops[8:]))
    assert np.array_equal(top, expected_top)
    assert np.max(np.abs(bottom.astype(int) - expected_bottom.astype(int))) <= 1


def test_wrong_inputs_are_one_line_errors_and_write_nothing(ram, still_run, video, face_images, tmp_path):
    out = tmp_path / "out"
    image = sorted(face_images.glob("*.png"))[0]
    assert "takes clips of 4 frames" in expect_user_error(invoke("explain", ram, image, "--out", out))
    assert "takes still images" in expect_user_error(invoke("explain", still_run, video, "--out", out))

    short = tmp_path / "short.mp4"
    writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"mp4v"), 10, (VIDEO_SIZE, VIDEO_SIZE))
    for frame in _frames(3, "anger", count=CLIP_LENGTH - 1):
        writer.write(frame[..., ::-1].copy())
    writer.release()
    # shorter than a clip: one clip, its last face repeated, as training pads a short sequence
    expect_ok(invoke("--quiet", "explain", ram, short, "--out", tmp_path / "short"))
    assert [p.name for p in (tmp_path / "short").glob("*.png")] == ["short_f0.png"]
    top, _ = _strip_rows(tmp_path / "short" / "short_f0.png")
    assert np.array_equal(top[:, -MODEL_SIZE:], top[:, -2 * MODEL_SIZE:-MODEL_SIZE])  # the last face twice

    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video")
    assert "Cannot read video" in expect_user_error(invoke("explain", ram, fake, "--out", out))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no frames" in expect_user_error(invoke("explain", ram, empty, "--out", out))
    assert not out.exists()
    # overlays written among the frames would be read as the last frame next time
    for inside in (empty, empty / "overlays"):
        line = expect_user_error(invoke("explain", ram, empty, "--out", inside))
        assert line == (f"Error: --out {str(inside)!r} lies in the input folder {str(empty)!r}, where the overlays would "
                        "be read as frames next time; give a folder outside it.")
    assert list(empty.iterdir()) == []


def test_another_clip_model_gets_grad_cam_of_its_last_state_over_the_last_frame(clip_run, video, tmp_path):
    expect_ok(invoke("--quiet", "explain", clip_run, video, "--count", 1, "--out", tmp_path))
    (png,) = tmp_path.glob("*.png")
    assert png.name == "face_f7.png"
    strip = cv2.imread(str(png))[..., ::-1][CAPTION:]
    assert strip.shape == (MODEL_SIZE, (CLIP_LENGTH + 1) * MODEL_SIZE, 3)
    crops = video_crops(video, MODEL_SIZE, "dlib")
    clip = np.stack(crops[7:7 + CLIP_LENGTH]).astype("float32")
    _, _, model = fit.load_run(clip_run)
    heat = gradcam_plus_plus(model, clip[None])[0]
    assert np.array_equal(strip[:, :CLIP_LENGTH * MODEL_SIZE], np.concatenate([np.uint8(np.repeat(f, 3, -1)) for f in clip], 1))
    assert np.max(np.abs(strip[:, CLIP_LENGTH * MODEL_SIZE:].astype(int) - overlay(clip[-1], heat).astype(int))) <= 1
    # And on the run's own test clips, without an input.
    expect_ok(invoke("--quiet", "explain", clip_run, "--count", 2, "--out", tmp_path / "test"))
    assert len(list((tmp_path / "test").glob("*.png"))) == 2


def test_a_two_stream_clip_gets_the_flow_of_each_crop_from_the_one_before(video):
    x, ids = sequence_clips(video, (CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1), 2, flow_bound=5.0, quiet=True)
    faces = [c for c in video_crops(video, MODEL_SIZE, "dlib") if c is not None]  # the 10 frames with a face
    flow = np.clip(sequence_flow(np.uint8(np.stack(faces))), -5.0, 5.0)
    assert ids == ["face_f3", "face_f7"] and x["rgb"].shape == (2, CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1)
    # The clips are face frames 2-9 (video frames 3-10). Face frame 2 comes after the frame without a face, so its
    # flow is zeros, as predict feeds it; the second clip's first flow comes from the frame before it.
    flow[2] = 0
    assert np.allclose(x["flow"].reshape(-1, MODEL_SIZE, MODEL_SIZE, 2), flow[2:], atol=1e-5)
    assert not x["flow"][0, 0].any() and np.abs(x["flow"][1, 0]).max() > 0 and np.abs(flow).max() <= 5.0



def test_a_truncated_video_is_explained_with_a_note(tmp_path, capsys):
    """As predict reports it: the frames read are explained, and stderr says the video ends early."""
    avi = tmp_path / "cut.avi"
    frames = _frames(3, "happiness", count=20)
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 10, (VIDEO_SIZE, VIDEO_SIZE))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    avi.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    x, _ = sequence_clips(avi, (CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1), 1, quiet=True)
    assert x.shape == (1, CLIP_LENGTH, MODEL_SIZE, MODEL_SIZE, 1)
    note = capsys.readouterr().err
    assert note.startswith(f"Note: {avi} ends after ") and "of the 20 frames it states (truncated or damaged)" in note
