"""predict with a streaming step model (frame by frame, states carried), and the webcam source."""

import json

import cv2
import numpy as np
import pytest

from fer_keras.data import synth
from fer_keras.inference.predictor import Predictor
from fer_keras.training import fit
from tests.conftest import CLIP_LENGTH, MODEL_SIZE, expect_ok, expect_user_error, invoke
from tests.exports.streaming_runs import streaming_export
from tests.inference.videos import video_crops, write_synth_video

FRAMES = 9


@pytest.fixture(scope="module")
def synth_video(tmp_path_factory):
    return write_synth_video(tmp_path_factory.mktemp("stream_video") / "face.mp4", subject=3, emotion="happiness", size=64, frames=FRAMES)


@pytest.fixture(scope="module")
def stream_tflite(clip_run, exports_dir):
    return streaming_export(clip_run, exports_dir)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _scores(records):
    return np.array([list(r["scores"].values()) for r in records])


def test_streaming_tflite_decides_once_per_window_as_the_clip_model(clip_run, stream_tflite, synth_video, tmp_path):
    """Unsmoothed, the probabilities at the last frame of each window of T frames are the clip model's; the frames
    after it carry that decision until the next window is complete, and the first T - 1 frames wait for one."""
    out = tmp_path / "stream.jsonl"
    expect_ok(invoke("--quiet", "predict", stream_tflite, synth_video, "--detect", "none", "--smoothing", 0, "--out", out,
                     "--annotate", tmp_path / "stream.mp4"))
    records = _records(out)
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert [r.get("error") for r in records[: CLIP_LENGTH - 1]] == ["filling the clip window"] * (CLIP_LENGTH - 1)
    assert all("label" in r for r in records[CLIP_LENGTH - 1 :])
    assert [r["window_frame"] for r in records] == [t % CLIP_LENGTH for t in range(FRAMES)]
    scores = _scores(records[CLIP_LENGTH - 1 :])
    held = [t - (CLIP_LENGTH - 1) for t in range(CLIP_LENGTH, 2 * CLIP_LENGTH - 1)]  # frames between two decisions
    assert all(np.array_equal(scores[i], scores[0]) for i in held)
    crops = video_crops(synth_video, MODEL_SIZE, "none")
    _, _, model = fit.load_run(clip_run)
    windows = np.stack([crops[0:CLIP_LENGTH], crops[CLIP_LENGTH : 2 * CLIP_LENGTH]])  # (2, T, H, W, 1)
    expected = np.asarray(model(windows, training=False))
    got = scores[[0, CLIP_LENGTH]]  # frames T - 1 and 2T - 1
    np.testing.assert_allclose(got, expected, atol=2e-4)  # scores are rounded to 4 decimals


def test_run_folder_with_streaming_matches_the_tflite_step_model(clip_run, stream_tflite, synth_video, tmp_path):
    keras_out, lite_out = tmp_path / "keras.jsonl", tmp_path / "lite.jsonl"
    expect_ok(invoke("--quiet", "predict", clip_run, synth_video, "--streaming", "--detect", "none", "--out", keras_out))
    expect_ok(invoke("--quiet", "predict", stream_tflite, synth_video, "--detect", "none", "--out", lite_out))
    keras_records, lite_records = _records(keras_out), _records(lite_out)
    assert [("label" in r) for r in keras_records] == [("label" in r) for r in lite_records]
    labelled = [t for t, r in enumerate(keras_records) if "label" in r]
    assert labelled == list(range(CLIP_LENGTH - 1, FRAMES))
    np.testing.assert_allclose(_scores([keras_records[t] for t in labelled]), _scores([lite_records[t] for t in labelled]),
                               atol=2e-4)


def test_after_a_frame_without_a_face_the_step_model_starts_from_zero_states(clip_run, stream_tflite, tmp_path):
    """T faces, a frame without one, T faces: the second decision is the clip model's on the last T faces alone; the
    states and the smoothing of the faces before the gap are gone (a decision carried over them differs, so this can
    fail)."""
    size, blank = 128, CLIP_LENGTH  # dlib's HOG detector finds SynthFER faces at 128 px
    video = tmp_path / "gap.mp4"
    frames = synth.render_sequence(synth.make_subject(2), "surprise", size=size, grey=False,
                                   num_frames=2 * CLIP_LENGTH + 1)["frames"]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size, size))
    for t, frame in enumerate(frames):
        writer.write(np.full_like(frame, 128) if t == blank else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    crops = video_crops(video, MODEL_SIZE, "dlib")
    assert [t for t, c in enumerate(crops) if c is None] == [blank]

    out = tmp_path / "gap.jsonl"
    expect_ok(invoke("--quiet", "predict", stream_tflite, video, "--smoothing", 0, "--out", out))
    records = _records(out)
    assert [t for t, r in enumerate(records) if "label" in r] == [CLIP_LENGTH - 1, 2 * CLIP_LENGTH]
    _, _, model = fit.load_run(clip_run)
    after = np.stack(crops[blank + 1 :])[None]  # (1, T, H, W, 1)
    expected = np.asarray(model(after, training=False))[0]
    np.testing.assert_allclose(_scores([records[2 * CLIP_LENGTH]])[0], expected, atol=2e-4)  # scores: 4 decimals

    # Smoothed (0.6 of the past, the default), the decision after the gap is not blended with the one before it. The
    # near-chance run gives both windows almost the same probabilities, so here its step model is followed by a
    # stand-in head that is sure of one class before the gap and of another after it.
    smoothing = Predictor(clip_run, streaming=True)
    real_step = smoothing.backend.step
    seen = []

    def sure(crop):
        real_step(crop)
        seen.append(crop)
        return np.eye(7)[0 if len(seen) <= CLIP_LENGTH else 1]

    smoothing.backend.step = sure
    smoothed = smoothing.predict_video(video, smoothing=0.6)
    assert len(seen) == 2 * CLIP_LENGTH
    assert smoothed[CLIP_LENGTH - 1]["label"] == smoothing.backend.labels[0]
    assert smoothed[2 * CLIP_LENGTH]["scores"] == dict(zip(smoothing.backend.labels, np.eye(7)[1].tolist()))

    step = Predictor(clip_run, streaming=True).backend
    step.reset()
    for crop in crops[:blank] + crops[blank + 1 :]:
        carried = step.step(crop)
    assert np.abs(carried - expected).max() > 1e-3


def test_a_video_s_records_are_handed_over_as_they_are_made(still_run, synth_video):
    """Not held until the video ends: an hour of video is not kept in memory, and Ctrl-C keeps what was printed."""

    class Stop(Exception):
        pass

    got = []

    def on_record(record):
        got.append(record)
        if len(got) == 3:
            raise Stop

    predictor = Predictor(still_run, detect="none")
    with pytest.raises(Stop):
        predictor.predict_video(synth_video, on_record=on_record)
    assert [r["frame"] for r in got] == [0, 1, 2]
    assert predictor.predict_video(synth_video, on_record=lambda r: None) == []  # none kept
    assert len(predictor.predict_video(synth_video)) == FRAMES


@pytest.mark.parametrize("suffix", [".3gp", ".mpg"])
def test_phone_and_mpeg_suffixes_are_read_as_videos(still_run, synth_video, suffix, tmp_path):
    """The container is probed by its content; the suffix only says that an input is a video, not an image."""
    import shutil

    video = tmp_path / f"clip{suffix}"
    shutil.copy(synth_video, video)
    out = tmp_path / "p.jsonl"
    expect_ok(invoke("--quiet", "predict", still_run, video, "--detect", "none", "--out", out))
    assert [r["frame"] for r in _records(out)] == list(range(FRAMES))


def test_a_streaming_model_refuses_still_images(stream_tflite, face_images):
    line = expect_user_error(invoke("predict", stream_tflite, face_images, "--detect", "none"))
    assert "streaming" in line and "video" in line


def test_streaming_needs_a_run_folder_or_a_streaming_tflite(still_tflite, synth_video):
    line = expect_user_error(invoke("predict", still_tflite["none"], synth_video, "--streaming", "--detect", "none"))
    assert "not a streaming model" in line


def test_a_missing_webcam_is_one_clear_error(still_run):
    """This machine has no camera: OpenCV cannot open one, and predict says so in one line."""
    line = expect_user_error(invoke("predict", still_run, "--webcam", 7, "--detect", "none"))
    assert line == "Error: Cannot open webcam 7"


def test_predict_needs_inputs_or_a_webcam(still_run, synth_video):
    assert "--webcam" in expect_user_error(invoke("predict", still_run), exit_code=2)  # a usage error, as click's own
    assert "not both" in expect_user_error(invoke("predict", still_run, synth_video, "--webcam", 0), exit_code=2)
