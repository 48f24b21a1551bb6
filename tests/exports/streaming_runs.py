"""Runs and streaming exports shared by the export and inference tests, made once per session.

Module fixtures call these; each checks for its files first, so a second module reuses what the
first made under the session's runs/ and exports/ folders.
"""

from tests.conftest import CLIP_LENGTH, CLIP_STRIDE, MODEL_SIZE, expect_ok, invoke

RAM_RUN = "econvlstm_ram_run"


def ram_run(sequence_data, runs_dir):
    """econvlstm_ram (small) trained 1 epoch at 32 px on clips of 4 frames (2-fold split, test fold 0)."""
    run = runs_dir / RAM_RUN
    if not (run / "model.keras").exists():
        expect_ok(invoke("--quiet", "train", "--model", "econvlstm_ram", "--data", sequence_data, "--epochs", 1,
                         "--batch-size", 8, "--image-size", MODEL_SIZE, "--folds", 2, "--fold", 0,
                         "--clip-length", CLIP_LENGTH, "--clip-stride", CLIP_STRIDE, "--out", runs_dir, "--name", RAM_RUN))
    return run


def streaming_export(run, exports_dir, quantize="none"):
    """`fer-keras export RUN --format tflite --streaming --quantize Q`: the .tflite path (its .json beside it)."""
    path = exports_dir / run.name / "tflite" / f"stream_{quantize}.tflite"
    if not path.exists():
        expect_ok(invoke("--quiet", "export", run, "--format", "tflite", "--streaming", "--quantize", quantize,
                         "--out", exports_dir))
    return path
