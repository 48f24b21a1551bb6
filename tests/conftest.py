"""Session-wide fixtures: one tiny SynthFER still set and sequence set, one tiny trained run of
each baseline, and their exports, all made once through the CLI and shared by every test.

Sizes are the smallest that still exercise everything: 6 subjects at 48 px (the smallest SynthFER
renders), models trained at 32 px for 1-2 epochs, a 2-fold split so that 3 subjects train. The
still set has 5 samples per emotion so that its training side holds 3 * 7 * 5 = 105 >= 100 images,
the minimum of an int8 TFLite export.
"""

import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from fer_keras.cli import cli  # noqa: E402

STILL_SUBJECTS = 6
STILL_PER_EMOTION = 5
SEQUENCE_SUBJECTS = 6
DATA_SIZE = 48
MODEL_SIZE = 32
CLIP_LENGTH = 4
CLIP_STRIDE = 4


def invoke(*args):
    """Runs `fer-keras ARGS` in-process; returns click's Result (output holds stdout + stderr)."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def expect_ok(result):
    """Asserts a CLI call succeeded, showing its output and exception when it did not."""
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def expect_user_error(result, exit_code=None):
    """A clean failure: non-zero exit, exactly one line starting 'Error:', no traceback.

    click's CliRunner catches an uncaught exception itself (exit 1, no traceback printed), so a
    clean failure is also told apart by the exception being SystemExit.
    """
    assert result.exit_code != 0, result.output
    if exit_code is not None:
        assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}\n{result.output}"
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output, result.output
    return errors[0]


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fer")


@pytest.fixture(scope="session")
def still_data(session_dir):
    """Prepared SynthFER stills: 6 subjects x 7 emotions x 5 samples, 48 px grey."""
    out = session_dir / "data" / "still"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", out, "--kind", "still", "--subjects", STILL_SUBJECTS,
                     "--samples-per-emotion", STILL_PER_EMOTION, "--size", DATA_SIZE, "--grey"))
    return out


@pytest.fixture(scope="session")
def sequence_data(session_dir):
    """Prepared SynthFER sequences with optical flow: 6 subjects x 7 emotions x 1 sequence, 48 px grey."""
    out = session_dir / "data" / "sequence"
    expect_ok(invoke("--quiet", "prepare", "synth", "--out", out, "--kind", "sequence", "--subjects", SEQUENCE_SUBJECTS,
                     "--sequences-per-emotion", 1, "--size", DATA_SIZE, "--grey", "--flow"))
    return out


@pytest.fixture(scope="session")
def runs_dir(session_dir):
    path = session_dir / "runs"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def still_run(still_data, runs_dir):
    """frame_cnn trained 2 epochs at 32 px on 3 subjects (2-fold split, test fold 0)."""
    expect_ok(invoke("--quiet", "train", "--model", "frame_cnn", "--data", still_data, "--epochs", 2,
                     "--batch-size", 16, "--image-size", MODEL_SIZE, "--folds", 2, "--fold", 0,
                     "--out", runs_dir, "--name", "frame_cnn_run"))
    return runs_dir / "frame_cnn_run"


@pytest.fixture(scope="session")
def clip_run(sequence_data, runs_dir):
    """convlstm2d_clip trained 1 epoch at 32 px on clips of 4 frames (2-fold split, test fold 0)."""
    expect_ok(invoke("--quiet", "train", "--model", "convlstm2d_clip", "--data", sequence_data, "--epochs", 1,
                     "--batch-size", 8, "--image-size", MODEL_SIZE, "--folds", 2, "--fold", 0,
                     "--clip-length", CLIP_LENGTH, "--clip-stride", CLIP_STRIDE,
                     "--out", runs_dir, "--name", "convlstm_run"))
    return runs_dir / "convlstm_run"


@pytest.fixture(scope="session")
def still_metrics(still_run):
    expect_ok(invoke("--quiet", "evaluate", still_run))
    return json.loads((still_run / "metrics.json").read_text())


@pytest.fixture(scope="session")
def clip_metrics(clip_run):
    expect_ok(invoke("--quiet", "evaluate", clip_run))
    return json.loads((clip_run / "metrics.json").read_text())


@pytest.fixture(scope="session")
def exports_dir(session_dir):
    return session_dir / "exports"


@pytest.fixture(scope="session")
def still_tflite(still_run, exports_dir):
    """{quantize: path of the .tflite} for the frame_cnn run, exported lazily per quantisation."""

    class _Lazy(dict):
        def __missing__(self, quantize):
            expect_ok(invoke("--quiet", "export", still_run, "--format", "tflite", "--quantize", quantize,
                             "--out", exports_dir))
            path = exports_dir / still_run.name / "tflite" / f"model_{quantize}.tflite"
            self[quantize] = path
            return path

    return _Lazy()


@pytest.fixture(scope="session")
def still_savedmodels(still_run, exports_dir):
    """The frame_cnn run exported twice as a SavedModel: (base folder, [version 1 path, version 2 path], v1 digest before v2)."""
    import hashlib

    def digest(folder):
        h = hashlib.sha256()
        for p in sorted(pathlib.Path(folder).rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(folder)).encode())
                h.update(p.read_bytes())
        return h.hexdigest()

    base = exports_dir / still_run.name
    expect_ok(invoke("--quiet", "export", still_run, "--format", "savedmodel", "--out", exports_dir))
    first = digest(base / "1")
    expect_ok(invoke("--quiet", "export", still_run, "--format", "savedmodel", "--out", exports_dir))
    return {"base": base, "versions": [base / "1", base / "2"], "v1_digest_before": first, "v1_digest_after": digest(base / "1")}


@pytest.fixture(scope="session")
def face_images(session_dir):
    """SynthFER faces as PNG files (1 subject x 8 emotions, 48 px RGB) from `synth generate`."""
    out = session_dir / "faces"
    expect_ok(invoke("--quiet", "synth", "generate", "--out", out, "--subjects", 1, "--size", DATA_SIZE, "--rgb"))
    return out


@pytest.fixture(scope="session")
def arm_run(still_data, runs_dir):
    """arm_resnet18 trained 1 epoch at 32 px: the frozen RGB branch of the landmark_arm run."""
    expect_ok(invoke("--quiet", "train", "--model", "arm_resnet18", "--data", still_data, "--epochs", 1,
                     "--batch-size", 16, "--image-size", MODEL_SIZE, "--folds", 2, "--fold", 0,
                     "--out", runs_dir, "--name", "arm_run"))
    return runs_dir / "arm_run"


@pytest.fixture(scope="session")
def landmark_arm_run(arm_run, still_data, runs_dir, session_dir):
    """landmark_arm (size small: 128 px heatmaps) trained 1 epoch at 32 px on top of `arm_run`."""
    config = session_dir / "landmark_arm.json"
    config.write_text(json.dumps({"model_args": {"rgb_run": str(arm_run)}}))
    expect_ok(invoke("--quiet", "train", "--model", "landmark_arm", "--config", config, "--data", still_data,
                     "--epochs", 1, "--batch-size", 16, "--image-size", MODEL_SIZE, "--folds", 2, "--fold", 0,
                     "--out", runs_dir, "--name", "landmark_arm_run"))
    return runs_dir / "landmark_arm_run"
