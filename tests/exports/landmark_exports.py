"""landmark_arm exports shared by tests/exports and tests/inference: each made once per session, through the CLI."""

from tests.conftest import expect_ok, invoke

_MADE = {}


def landmark_export(run, out, fmt, quantize="none"):
    """Path of `run`'s SavedModel version folder (fmt "savedmodel") or .tflite (fmt "tflite"), exported once."""
    key = (str(run), fmt, quantize)
    if key not in _MADE:
        expect_ok(invoke("--quiet", "export", run, "--format", fmt, *(["--quantize", quantize] if fmt == "tflite" else []),
                         "--out", out))
        base = out / run.name
        if fmt == "savedmodel":
            _MADE[key] = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        else:
            _MADE[key] = base / "tflite" / f"model_{quantize}.tflite"
    return _MADE[key]
