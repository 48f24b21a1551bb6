"""predict with a two-stream (rgb + optical flow) model: every backend, the flow it feeds, and still images refused."""

import json

import cv2
import numpy as np
import pytest

from fer_keras.data.records import DEFAULT_FLOW_BOUND
from fer_keras.data import synth
from fer_keras.data_prep.flow import sequence_flow
from fer_keras.inference.flow_stream import FlowStream
from fer_keras.inference.predictor import Predictor
from tests.conftest import CLIP_LENGTH, CLIP_STRIDE, MODEL_SIZE, expect_ok, expect_user_error, invoke
from tests.exports.streaming_runs import streaming_export
from tests.inference.videos import video_crops

FRAMES = 10
BLANK = 6  # a frame without a face: the flow of the next face starts from zeros
VIDEO_SIZE = 128  # dlib's HOG detector finds SynthFER faces at this size


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A SynthFER face sequence (mp4v, 10 fps) with frame BLANK replaced by a plain grey frame."""
    path = tmp_path_factory.mktemp("two_stream_video") / "face.mp4"
    frames = synth.render_sequence(synth.make_subject(2), "surprise", size=VIDEO_SIZE, grey=False, num_frames=FRAMES)["frames"]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (VIDEO_SIZE, VIDEO_SIZE))
    for t, frame in enumerate(frames):
        writer.write(np.full_like(frame, 128) if t == BLANK else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def run(sequence_data, runs_dir):
    """convgru trained 1 epoch at 32 px on clips of 4 frames with both streams (rgb, flow)."""
    path = runs_dir / "convgru_two_stream_run"
    if not (path / "model.keras").exists():
        expect_ok(invoke("--quiet", "train", "--model", "convgru", "--streams", "rgb,flow", "--data", sequence_data,
                         "--epochs", 1, "--batch-size", 8, "--image-size", MODEL_SIZE, "--folds", 2, "--fold", 0,
                         "--clip-length", CLIP_LENGTH, "--clip-stride", CLIP_STRIDE, "--out", runs_dir, "--name", path.name))
    return path


@pytest.fixture(scope="module")
def stream_tflite(run, exports_dir):
    return streaming_export(run, exports_dir)


@pytest.fixture(scope="module")
def savedmodel(run, exports_dir):
    base = exports_dir / run.name
    if not any(base.glob("*/saved_model.pb")):
        expect_ok(invoke("--quiet", "export", run, "--format", "savedmodel", "--out", exports_dir))
    return base


@pytest.fixture(scope="module")
def crops(video):
    """The aligned 32 px grey crop of every frame, as predict makes it (None for the blank frame)."""
    found = video_crops(video, MODEL_SIZE, "dlib")
    assert len(found) == FRAMES and [t for t, c in enumerate(found) if c is None] == [BLANK]
    return found


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _scores(records):
    return np.array([list(r["scores"].values()) for r in records])


def _predict(model, video, out, *args):
    expect_ok(invoke("--quiet", "predict", model, video, "--smoothing", 0, "--out", out, *args))
    return _records(out)


@pytest.mark.parametrize("backend", ["run", "run_streaming", "savedmodel", "stream_tflite"])
def test_every_backend_labels_the_frames_with_a_face(backend, run, savedmodel, stream_tflite, video, tmp_path):
    model = {"run": run, "run_streaming": run, "savedmodel": savedmodel, "stream_tflite": stream_tflite}[backend]
    records = _predict(model, video, tmp_path / "p.jsonl", *(["--streaming"] if backend == "run_streaming" else []))
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert records[BLANK]["error"] == "no face found"
    # A decision needs CLIP_LENGTH faces in a row, from the video's start and again after the frame without a face:
    # frames 0-2 and the 3 faces after it wait, for the clip model and the step model alike.
    labelled = [t for t, r in enumerate(records) if "label" in r]
    assert labelled == list(range(CLIP_LENGTH - 1, BLANK))
    waiting = [t for t, r in enumerate(records) if r.get("error") == "filling the clip window"]
    assert waiting == list(range(CLIP_LENGTH - 1)) + list(range(BLANK + 1, FRAMES))
    assert all(records[t]["box"] and len(records[t]["landmarks"]) == 68 for t in labelled)


def test_the_streaming_tflite_matches_the_keras_step_model(run, stream_tflite, video, crops, tmp_path):
    keras_records = _predict(run, video, tmp_path / "keras.jsonl", "--streaming")
    lite_records = _predict(stream_tflite, video, tmp_path / "lite.jsonl")
    labelled = list(range(CLIP_LENGTH - 1, BLANK))
    np.testing.assert_allclose(_scores([keras_records[t] for t in labelled]), _scores([lite_records[t] for t in labelled]),
                               atol=2e-4)  # both rounded to 4 decimals
    # Unrounded, on the same crops and flows, the two step models agree to 1e-4.
    keras_step, lite_step = Predictor(run, streaming=True).backend, Predictor(stream_tflite).backend
    flows = FlowStream()
    for t, crop in enumerate(c for c in crops if c is not None):
        if t % CLIP_LENGTH == 0:
            keras_step.reset(), lite_step.reset()
        frame = {"rgb": crop, "flow": flows(crop)}
        np.testing.assert_allclose(keras_step.step(frame), lite_step.step(frame), atol=1e-4)


class _Recording:
    """A real backend that also keeps every input predict gives it (clip batches or step frames)."""

    def __init__(self, backend):
        self.backend, self.fed = backend, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def __call__(self, batch, landmarks=None):
        self.fed.append(batch)
        return self.backend(batch)

    def step(self, frame):
        self.fed.append(frame)
        return self.backend.step(frame)


def _training_flow(crops):
    """sequence_flow of consecutive crops (zeros first), clipped to the bound training saw."""
    return np.clip(sequence_flow(np.stack(crops).astype(np.uint8)), -DEFAULT_FLOW_BOUND, DEFAULT_FLOW_BOUND)


def _video_flow(crops, t):
    """The flow training gives frame t of the video: from frame t-1's crop; zeros without one (frame 0, after BLANK)."""
    if t == 0 or crops[t - 1] is None:
        return np.zeros(crops[t].shape[:2] + (2,), np.float32)
    return _training_flow([crops[t - 1], crops[t]])[1]


def test_flow_stream_is_the_training_flow_of_consecutive_crops(crops):
    flows = FlowStream(DEFAULT_FLOW_BOUND)
    assert not flows(crops[0]).any()  # the first frame: zeros
    got = flows(crops[1])
    assert got.shape == (MODEL_SIZE, MODEL_SIZE, 2) and np.abs(got).max() > 0
    np.testing.assert_array_equal(got, _training_flow([crops[0], crops[1]])[1])
    flows.reset()
    assert not flows(crops[2]).any()  # the first frame after a reset: zeros
    capped = FlowStream(0.05)
    capped(crops[2])
    assert np.abs(capped(crops[3])).max() == pytest.approx(0.05)


def test_the_clip_model_is_fed_each_window_with_its_training_flow(run, savedmodel, stream_tflite, video, crops):
    for model in (run, savedmodel, stream_tflite):
        assert Predictor(model).flow_bound == DEFAULT_FLOW_BOUND  # the manifest's flow_bound / the export's default
    predictor = Predictor(run)
    predictor.backend = _Recording(predictor.backend)
    predictor.predict_video(video, smoothing=0)
    # windows of consecutive faces only: none across the frame without a face, and too few faces after it for one
    windows = [list(range(i, i + CLIP_LENGTH)) for i in range(BLANK - CLIP_LENGTH + 1)]
    assert len(predictor.backend.fed) == len(windows)
    for window, fed in zip(windows, predictor.backend.fed):
        np.testing.assert_array_equal(fed["rgb"][0], np.stack([crops[t] for t in window]))
        # A window starting after frame 0 keeps its first frame's flow from the frame before, as a training clip does.
        expected = np.stack([_video_flow(crops, t) for t in window])
        np.testing.assert_allclose(fed["flow"][0], expected, atol=1e-6)
    assert np.abs(predictor.backend.fed[1]["flow"][0][0]).max() > 0  # the second window starts at frame 1


def test_the_step_model_keeps_the_flow_across_resets_and_zeroes_it_after_a_frame_without_a_face(stream_tflite, video, crops):
    predictor = Predictor(stream_tflite)
    predictor.backend = _Recording(predictor.backend)
    records = predictor.predict_video(video, smoothing=0)
    faces = [t for t in range(FRAMES) if t != BLANK]
    assert len(predictor.backend.fed) == len(faces)
    for t, fed in zip(faces, predictor.backend.fed):
        np.testing.assert_array_equal(fed["rgb"], crops[t])
        np.testing.assert_allclose(fed["flow"], _video_flow(crops, t), atol=1e-6)
        if t in (0, BLANK + 1):
            assert not fed["flow"].any(), t
    after_reset = [t for t in faces if records[t]["window_frame"] == 0 and t not in (0, BLANK + 1)]
    assert after_reset and all(np.abs(predictor.backend.fed[faces.index(t)]["flow"]).max() > 0 for t in after_reset)


@pytest.mark.parametrize("streaming", [False, True])
def test_an_image_is_refused_by_a_two_stream_model(run, stream_tflite, video, streaming, tmp_path):
    capture = cv2.VideoCapture(str(video))
    ok, frame = capture.read()
    capture.release()
    image, out = tmp_path / "face.png", tmp_path / "p.jsonl"
    cv2.imwrite(str(image), frame)
    line = expect_user_error(invoke("predict", stream_tflite if streaming else run, image, "--out", out))
    assert "two-stream" in line and "needs a video" in line
    assert not out.exists()
