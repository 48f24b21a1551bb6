"""predict and serve-request on bad input: one line naming the file, exit 1, nothing half-written.

vae_swap runs and exports (which encode faces but do not classify them), exports without the
metadata predict needs, damaged .tflite / .json / SavedModel files, a corrupt video among good
inputs, --annotate targets that cannot be, and a URL that is not http(s). Also the frame
progress bar of a video.
"""

import json
import shutil

import cv2
import numpy as np
import pytest

from fer_keras.inference.predictor import Predictor
from tests.conftest import expect_ok, expect_user_error, invoke
from tests.inference.videos import write_synth_video

FRAMES = 6


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def vae_run(runs_dir):
    """vae_swap at its tiniest (latent 4, 1 round, 1 epoch per stage) on 6 generated SynthFER subjects at 48 px."""
    run = runs_dir / "vae_swap_predict_run"
    if not (run / "model.keras").exists():
        config = runs_dir / "vae_swap_predict.json"
        config.write_text(json.dumps({"model_args": {"encoder_filters": [4, 4, 8, 8], "decoder_filters": [8, 4, 4, 4],
                                                     "latent_dim": 4, "rounds": 1},
                                      "synth": {"samples_per_emotion": 1, "size": 48}}))
        expect_ok(invoke("--quiet", "train", "--model", "vae_swap", "--data", "synth", "--synth-subjects", 6, "--epochs", 1,
                         "--batch-size", 8, "--folds", 3, "--config", config, "--out", runs_dir, "--name", run.name))
    return run


@pytest.fixture(scope="module")
def vae_exports(vae_run, exports_dir):
    """{"tflite": the expression encoder .tflite, "savedmodel": version 1 of the SavedModel} of `vae_run`."""
    tflite = exports_dir / vae_run.name / "tflite" / "expression_encoder.tflite"
    savedmodel = exports_dir / vae_run.name / "1"
    if not tflite.exists():
        expect_ok(invoke("--quiet", "export", vae_run, "--format", "tflite", "--out", exports_dir))
    if not savedmodel.exists():
        expect_ok(invoke("--quiet", "export", vae_run, "--format", "savedmodel", "--out", exports_dir))
    return {"tflite": tflite, "savedmodel": savedmodel}


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    return write_synth_video(tmp_path_factory.mktemp("errors_video") / "face.mp4", subject=1, emotion="happiness", size=48, frames=FRAMES)


@pytest.fixture
def one_image(face_images):
    return sorted(face_images.glob("*.png"))[0]


# --- models that predict cannot run -----------------------------------------------------------


@pytest.mark.parametrize("with_image", [False, True])
def test_explain_refuses_a_vae_swap_run_in_one_line(vae_run, one_image, tmp_path, with_image):
    out = tmp_path / "explain"
    args = ("explain", vae_run, *((one_image,) if with_image else ()), "--out", out)
    line = expect_user_error(invoke(*args), exit_code=1)
    assert "is a vae_swap run" in line and "generate swap|interpolate" in line and str(vae_run) in line
    assert not out.exists()


@pytest.mark.parametrize("which", ["run", "tflite", "tflite alone", "savedmodel", "savedmodel base"])
def test_a_vae_swap_run_or_export_is_refused_in_one_line(vae_run, vae_exports, one_image, tmp_path, which):
    alone = tmp_path / "encoder.tflite"  # copied without its JSON: the one inside it says what it is
    shutil.copy(vae_exports["tflite"], alone)
    model = {"run": vae_run, "tflite": vae_exports["tflite"], "tflite alone": alone, "savedmodel": vae_exports["savedmodel"],
             "savedmodel base": vae_exports["savedmodel"].parent}[which]
    out = tmp_path / "p.jsonl"
    line = expect_user_error(invoke("predict", model, one_image, "--detect", "none", "--out", out), exit_code=1)
    assert "is a vae_swap identity/expression VAE" in line and "does not classify expressions" in line, line
    assert "predict does not apply" in line and "fer-keras evaluate" in line and "classifier" in line
    named = {"run": vae_run, "tflite": vae_exports["tflite"], "tflite alone": alone}.get(which, vae_exports["savedmodel"])
    assert str(named) in line
    assert not out.exists()


def test_a_vae_swap_run_is_refused_for_streaming_too(vae_run, face_video):
    line = expect_user_error(invoke("predict", vae_run, face_video, "--streaming", "--detect", "none"), exit_code=1)
    assert f"Run {str(vae_run)!r} is a vae_swap" in line


def test_a_tflite_without_labels_in_its_json_names_the_json(still_tflite, one_image, tmp_path):
    model = tmp_path / "model.tflite"
    shutil.copy(still_tflite["none"], model)
    meta = json.loads(still_tflite["none"].with_suffix(".json").read_text())
    del meta["labels"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    line = expect_user_error(invoke("predict", model, one_image, "--detect", "none"), exit_code=1)
    assert line == (f"Error: {tmp_path / 'model.json'} has no 'labels': TFLite {str(model)!r} is not a fer-keras classifier "
                    f"export, and predict needs its labels and input shape.")


def test_a_savedmodel_without_predict_metadata_names_its_json(still_savedmodels, one_image, tmp_path):
    model = tmp_path / "sm"
    shutil.copytree(still_savedmodels["versions"][0], model)
    info_path = model / "assets.extra" / "fer_keras.json"
    info = json.loads(info_path.read_text())
    del info["input"], info["labels"]
    info_path.write_text(json.dumps(info))
    line = expect_user_error(invoke("predict", model, one_image, "--detect", "none"), exit_code=1)
    assert line.startswith(f"Error: {info_path} has no 'input', 'labels': SavedModel {str(model)!r} is not a fer-keras"), line


# --- damaged model files ----------------------------------------------------------------------


def test_a_truncated_tflite_is_one_line_naming_it(still_tflite, one_image, tmp_path):
    model = tmp_path / "bad.tflite"
    model.write_bytes(still_tflite["none"].read_bytes()[:100])
    shutil.copy(still_tflite["none"].with_suffix(".json"), tmp_path / "bad.json")
    line = expect_user_error(invoke("predict", model, one_image, "--detect", "none"), exit_code=1)
    assert line.startswith(f"Error: {model} is not a valid TFLite model (") and "Flatbuffer" in line, line


def test_a_corrupt_json_beside_a_tflite_is_one_line_naming_it(still_tflite, one_image, tmp_path):
    model = tmp_path / "bad.tflite"
    shutil.copy(still_tflite["none"], model)
    (tmp_path / "bad.json").write_text('{"labels": ["a", ')
    line = expect_user_error(invoke("predict", model, one_image, "--detect", "none"), exit_code=1)
    assert line.startswith(f"Error: {tmp_path / 'bad.json'} is not valid JSON ("), line


def test_a_corrupt_savedmodel_is_one_line_naming_it(still_savedmodels, one_image, tmp_path):
    model = tmp_path / "sm"
    shutil.copytree(still_savedmodels["versions"][0], model)
    (model / "saved_model.pb").write_bytes((model / "saved_model.pb").read_bytes()[:200])
    line = expect_user_error(invoke("predict", model, one_image, "--detect", "none"), exit_code=1)
    assert line.startswith(f"Error: {model} is not a valid SavedModel ("), line


# --- inputs -----------------------------------------------------------------------------------


def test_a_corrupt_video_is_one_record_like_a_corrupt_image(still_run, face_images, tmp_path):
    images = sorted(face_images.glob("*.png"))
    corrupt_video, corrupt_image = tmp_path / "corrupt.mp4", tmp_path / "corrupt.png"
    corrupt_video.write_bytes(b"not a video at all")
    corrupt_image.write_bytes(b"not a png at all")
    results = {}
    for bad in (corrupt_image, corrupt_video):
        out = tmp_path / f"{bad.suffix[1:]}.jsonl"
        result = invoke("predict", still_run, face_images, bad, "--detect", "none", "--out", out)
        line = expect_user_error(result)
        records = _jsonl(out)  # every good input's prediction is kept
        assert sorted(r["file"] for r in records if "label" in r) == sorted(str(p) for p in images)
        (failed,) = [r for r in records if "error" in r]
        assert failed["file"] == str(bad) and failed["face"] is None
        results[bad.suffix] = (result.exit_code, line, failed["error"])
    exit_code, line, error = results[".mp4"]
    assert error == f"Cannot read video {str(corrupt_video)!r}: not a video or an unsupported codec."
    assert line == f"Error: 1 of {len(images) + 1} inputs could not be read, e.g. {error}"
    assert exit_code == results[".png"][0] == 1
    assert results[".png"][1] == line.replace(error, results[".png"][2])
    assert not list(tmp_path.glob("*.tmp"))


def test_a_video_shows_a_frame_progress_bar_unless_quiet(still_run, face_video, tmp_path):
    result = expect_ok(invoke("predict", still_run, face_video, "--detect", "none", "--out", tmp_path / "v.jsonl"))
    assert f"{face_video.name}: 100%" in result.stderr and f"{FRAMES}/{FRAMES}" in result.stderr, result.stderr
    assert "frame/s" in result.stderr
    quiet = expect_ok(invoke("--quiet", "predict", still_run, face_video, "--detect", "none", "--out", tmp_path / "q.jsonl"))
    assert quiet.stderr == "" and len(_jsonl(tmp_path / "q.jsonl")) == FRAMES


def test_annotate_mp4_with_image_inputs_is_refused_before_any_work(still_run, face_images, tmp_path):
    target = tmp_path / "x" / "ann.mp4"
    out = tmp_path / "p.jsonl"
    line = expect_user_error(invoke("predict", still_run, face_images, "--detect", "none", "--annotate", target,
                                    "--out", out), exit_code=1)
    assert line == (f"Error: --annotate {str(target)!r} names a video file, which is for a single video input only; "
                    f"for 8 inputs (8 images, 0 videos) give a folder.")
    assert list(tmp_path.iterdir()) == []  # neither the .mp4 folder nor its parent, nor the records


def test_annotate_mp4_for_a_video_and_an_image_is_refused(still_run, face_video, one_image, tmp_path):
    target = tmp_path / "ann.mp4"
    line = expect_user_error(invoke("predict", still_run, face_video, one_image, "--detect", "none", "--annotate", target),
                             exit_code=1)
    assert "for 2 inputs (1 image, 1 video) give a folder" in line
    assert not target.exists()


def test_annotate_an_existing_file_is_refused_before_any_work(still_run, one_image, face_video, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    out = tmp_path / "p.jsonl"
    for inputs in ([one_image], [face_video, one_image]):
        line = expect_user_error(invoke("predict", still_run, *inputs, "--detect", "none", "--annotate", target,
                                        "--out", out), exit_code=1)
        assert line == f"Error: --annotate {str(target)!r} is a file; give a folder (or an .mp4 for a single video)."
    assert target.read_text() == "keep me" and sorted(tmp_path.iterdir()) == [target]
    below = target / "annotated"
    line = expect_user_error(invoke("predict", still_run, one_image, "--detect", "none", "--annotate", below), exit_code=1)
    assert line == f"Error: --annotate {str(below)!r} cannot be written: {str(target)!r} is a file, not a folder."


def test_annotate_a_folder_still_draws_images(still_run, one_image, tmp_path):
    target = tmp_path / "annotated"
    expect_ok(invoke("--quiet", "predict", still_run, one_image, "--detect", "none", "--annotate", target))
    assert [p.name for p in target.iterdir()] == [f"{one_image.stem}.png"]


def test_annotate_never_writes_over_or_among_the_inputs(still_run, one_image, face_video, tmp_path):
    """Annotations in an input folder would overwrite its files, or be read as inputs by the next run: refused first."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    image, video = folder / one_image.name, folder / face_video.name
    image.write_bytes(one_image.read_bytes())
    video.write_bytes(face_video.read_bytes())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = tmp_path / "p.jsonl"
    line = expect_user_error(invoke("predict", still_run, folder, "--detect", "none", "--annotate", folder, "--out", out))
    assert line == f"Error: --annotate would overwrite the input {str(video)!r}; give another folder or file name."
    target = folder / "annotated"
    line = expect_user_error(invoke("predict", still_run, folder, "--detect", "none", "--annotate", target, "--out", out))
    assert line == (f"Error: --annotate {str(target)!r} lies in the input folder {str(folder)!r}, where the annotations "
                    "would be read as inputs next time; give a folder outside it.")
    line = expect_user_error(invoke("predict", still_run, video, "--detect", "none", "--annotate", video))
    assert line == f"Error: --annotate would overwrite the input {str(video)!r}; give another folder or file name."
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before and not out.exists()


def test_inputs_of_one_name_get_annotations_of_their_own(still_run, one_image, face_video, tmp_path):
    for folder, image in (("a", "x.png"), ("b", "x.png"), (".", "x.png")):
        (tmp_path / "in" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / folder / image).write_bytes(one_image.read_bytes())
    avi = tmp_path / "in" / "clip.avi"
    capture, writer = cv2.VideoCapture(str(face_video)), None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        writer = writer or cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 10, frame.shape[1::-1])
        writer.write(frame)
    writer.release()
    (tmp_path / "in" / "clip.mp4").write_bytes(face_video.read_bytes())
    target = tmp_path / "annotated"
    expect_ok(invoke("--quiet", "predict", still_run, tmp_path / "in", "--detect", "none", "--annotate", target))
    assert sorted(p.name for p in target.iterdir()) == ["a_x.png.png", "b_x.png.png", "clip.avi.mp4", "clip.mp4.mp4", "x.png.png"]


def test_out_is_checked_before_the_model_is_loaded(one_image, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = expect_user_error(invoke("predict", tmp_path / "no_such_model", one_image, "--out", blocker / "p.jsonl"))
    assert line == f"Error: --out {str(blocker / 'p.jsonl')!r} cannot be written: {str(blocker)!r} is a file, not a folder."
    line = expect_user_error(invoke("predict", tmp_path / "no_such_model", one_image, "--out", tmp_path), exit_code=2)
    assert "is a directory" in line


def test_a_video_model_given_images_says_so_before_reading_the_videos(clip_run, face_video, one_image, tmp_path):
    out = tmp_path / "p.jsonl"
    line = expect_user_error(invoke("predict", clip_run, face_video, one_image, "--detect", "none", "--out", out))
    assert "takes clips of" in line and "give it a video" in line
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_jpeg_is_an_unreadable_image_not_a_face(still_run, one_image, tmp_path):
    """OpenCV decodes a truncated JPEG without complaint (grey below the cut); predict reads as prepare does."""
    from PIL import Image

    jpeg = tmp_path / "cut.jpg"
    Image.open(one_image).convert("RGB").resize((192, 192)).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 3])
    assert cv2.imread(str(jpeg)) is not None  # what predict read before
    out = tmp_path / "p.jsonl"
    line = expect_user_error(invoke("predict", still_run, jpeg, "--detect", "none", "--out", out))
    (record,) = _jsonl(out)
    assert record["face"] is None and record["error"] == f"Cannot read image {str(jpeg)!r}: not an image, or corrupt or truncated."
    assert line == f"Error: 1 of 1 inputs could not be read, e.g. {record['error']}"


def test_a_truncated_video_says_where_it_ends(still_run, face_video, tmp_path):
    avi = tmp_path / "long.avi"
    capture, writer, count = cv2.VideoCapture(str(face_video)), None, 0
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 10, frames[0].shape[1::-1])
    for frame in frames * 4:
        writer.write(frame)
        count += 1
    writer.release()
    avi.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    out = tmp_path / "p.jsonl"
    line = expect_user_error(invoke("predict", still_run, avi, "--detect", "none", "--out", out))
    records = _jsonl(out)
    read = len(records) - 1
    assert 0 < read < count and all("label" in r for r in records[:-1])
    assert records[-1]["error"] == f"Video {str(avi)!r} ends after {read} of the {count} frames it states: truncated or damaged."
    assert line.startswith("Error: 1 of 1 inputs could not be read (or not to their end), e.g. Video")


def test_an_interrupted_video_leaves_no_annotated_file(still_run, face_video, tmp_path, monkeypatch):
    from fer_keras.inference import predictor as predictor_module

    real = predictor_module.Predictor._faces
    seen = []

    def faces_then_ctrl_c(self, image):
        seen.append(1)
        if len(seen) == 4:
            raise KeyboardInterrupt
        return real(self, image)

    monkeypatch.setattr(predictor_module.Predictor, "_faces", faces_then_ctrl_c)
    target = tmp_path / "ann.mp4"
    target.write_bytes(b"an earlier good annotation")
    result = invoke("predict", still_run, face_video, "--detect", "none", "--annotate", target, "--out", tmp_path / "p.jsonl")
    assert expect_user_error(result, exit_code=130) == "Error: Interrupted."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann.mp4"] and target.read_bytes() == b"an earlier good annotation"


def test_ctrl_c_leaves_no_empty_annotate_folder_it_made(still_run, face_video, tmp_path, monkeypatch):
    from fer_keras.inference import predictor as predictor_module

    real, seen = predictor_module.Predictor._faces, []

    def ctrl_c(self, image):  # after three frames: the annotated video had begun, in the folder made for it
        seen.append(1)
        if len(seen) % 4 == 0:
            raise KeyboardInterrupt
        return real(self, image)

    monkeypatch.setattr(predictor_module.Predictor, "_faces", ctrl_c)
    result = invoke("predict", still_run, face_video, "--detect", "none", "--annotate", tmp_path / "new" / "ann")
    assert expect_user_error(result, exit_code=130) == "Error: Interrupted."
    assert list(tmp_path.iterdir()) == []  # neither ann/ nor the new/ above it
    (tmp_path / "mine").mkdir()  # a folder the user made stays
    result = invoke("predict", still_run, face_video, "--detect", "none", "--annotate", tmp_path / "mine")
    assert expect_user_error(result, exit_code=130) == "Error: Interrupted."
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_a_webcam_session_hands_on_each_record_and_keeps_none(still_run, face_video):
    """Live capture (a webcam; here the video through the same OpenCV capture): records go out as they are made."""
    predictor = Predictor(still_run, detect="none")
    handed = []
    kept = predictor._run_capture(cv2.VideoCapture(str(face_video)), "webcam:0", annotate=None, smoothing=0.6,
                                  progress=None, live=True, on_record=handed.append)
    assert kept == [] and [r["frame"] for r in handed] == list(range(FRAMES)) and all("label" in r for r in handed)


# --- serve-request ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["notaurl", "ftp://localhost/v1/models/fer:predict", "http://"])
def test_serve_request_refuses_a_url_that_is_not_http(one_image, url):
    line = expect_user_error(invoke("serve-request", url, one_image, "--size", 48, "--detect", "none"), exit_code=1)
    assert line == (f"Error: URL must start with http:// or https:// and name a host, e.g. "
                    f"http://localhost:8501/v1/models/fer:predict. Received: {url!r}")


def test_serve_request_refuses_a_bad_port_in_one_line(one_image):
    line = expect_user_error(invoke("serve-request", "http://localhost:abc/v1/models/fer:predict", one_image,
                                    "--size", 48, "--detect", "none"), exit_code=1)
    assert line == "Error: Bad URL 'http://localhost:abc/v1/models/fer:predict': nonnumeric port: 'abc'"


def test_a_record_names_the_labels_tied_with_its_top_one():
    """int8 outputs can tie exactly; the record says so instead of passing argmax's first label off as a decision."""
    from types import SimpleNamespace

    from fer_keras.inference.predictor import Predictor

    me = SimpleNamespace(backend=SimpleNamespace(labels=["a", "b", "c"]), min_confidence=0)
    tied = Predictor._record(me, "x.png", 0, None, None, np.array([0.25, 0.375, 0.375]))
    assert tied["label"] == "b" and tied["tied_with"] == ["c"]
    assert "tied_with" not in Predictor._record(me, "x.png", 0, None, None, np.array([0.2, 0.5, 0.3]))


def test_a_link_to_an_export_finds_the_json_beside_the_model(still_tflite, one_image, tmp_path):
    link = tmp_path / "model.tflite"
    link.symlink_to(still_tflite["none"])
    out = tmp_path / "p.jsonl"
    expect_ok(invoke("--quiet", "predict", link, one_image, "--detect", "none", "--out", out))
    assert "label" in _jsonl(out)[0]
