"""How to make a model's inputs, written into every export's metadata so that an app needs nothing else.

The TFLite sidecar JSON (still, clip and streaming models) and the SavedModel's
``assets.extra/fer_keras.json`` carry these entries. Each states what `fer-keras predict` and
`data_prep` do, with the numbers, so that an app in another language can do the same:
the pixel layout (`PIXELS`), the optical flow of the two-stream models (`flow_input`) and the
face alignment (`face_alignment`). Every export also names its run and its data (`source`).
"""

import json
import pathlib

from fer_keras.data.records import DEFAULT_FLOW_BOUND
from fer_keras.data_prep.faces import TEMPLATE

PIXELS = (
    "raw pixel values 0..255 as float (int8/int16 models: quantise them with the input's scale and zero point); the "
    "model rescales inside. RGB channel order (OpenCV reads BGR: convert). One channel: "
    "cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) of the aligned RGB crop."
)

# Why a TFLite export reads the run's data (ends the error when the data folder has moved).
TFLITE_NEEDS_DATA = ("A TFLite export checks its parity with Keras on the run's held-out samples (and calibrates int8 "
                     "on training ones), so it needs that data; `--format savedmodel` does not.")


def flow_input():
    """The flow input's entry: units, direction, the exact Farneback call, and the range training saw."""
    return {
        "units": "optical flow in pixels per frame, x then y (the model scales it inside)",
        "direction": "flow[t] maps frame t-1 to frame t; only a video's first frame (no frame before it) gets zeros: a "
                     "clip, or a stream after a reset, that starts later keeps the flow from the frame before it, as in "
                     "training",
        "method": "cv2.calcOpticalFlowFarneback(previous_grey, current_grey, None, 0.5, 3, 15, 3, 5, 1.2, 0) on the "
                  "aligned crops made grey with cv2.COLOR_RGB2GRAY (fer_keras.data_prep.flow.sequence_flow)",
        "range": f"training saw flow clipped to +-{DEFAULT_FLOW_BOUND:g} px and stored at 255 steps over that range",
    }


def face_alignment(size):
    """How a face becomes the model's `size` x `size` input (fer_keras.data_prep.faces.align_face)."""
    from fer_keras.inference.predictor import DETECTION_MIN_SCORE

    template = (TEMPLATE * size).round(3).tolist()
    return {
        "detector": f"dlib HOG frontal face detector, upsample 1; `predict` drops detections scored <= {DETECTION_MIN_SCORE:g}",
        "landmarks": "dlib 68-point iBUG shape predictor (shape_predictor_68_face_landmarks.dat of face_recognition_models)",
        "anchors": {"subject_right_eye": "mean of landmarks 36-41 (0-based)", "subject_left_eye": "mean of landmarks 42-47",
                    "mouth": "mean of landmarks 48-59"},
        "template_px": {"subject_right_eye": template[0], "subject_left_eye": template[1], "mouth": template[2]},
        "fit": "least-squares similarity transform (rotation, uniform scale, translation; Umeyama 1991) mapping the "
               "three anchors onto template_px",
        "warp": f"cv2.warpAffine(rgb, M, ({size}, {size}), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) "
                "on the RGB image, then grey if the model takes one channel",
        "crops_without_alignment": "`fer-keras predict --detect none` resizes an image to the input size with "
                                   "cv2.INTER_AREA",
    }


def source(run_dir, manifest):
    """Which run, and which data, an export comes from: so that a SynthFER model is never taken for a CK+ one."""
    name = manifest.get("dataset", "")
    return {
        "run": pathlib.Path(run_dir).resolve().name,
        "run_path": str(pathlib.Path(run_dir).resolve()),
        "run_id": _run_id(run_dir),
        "dataset": "SynthFER (synthetic faces)" if name == "synthfer" else name,
        "label_set": manifest.get("label_set"),
    }


def _run_id(run_dir):
    """The run's identity from its config.json (None for a run from before it was recorded)."""
    try:
        return json.loads((pathlib.Path(run_dir) / "config.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def export_folder(out, run_dir):
    """``out/<run name>``, refused when it already holds the exports of another run of the same name.

    Exports are named after the run folder; two runs named alike (runs/a/x and runs/b/x) would
    otherwise share version numbers and overwrite each other's .tflite files. A run folder that was
    moved is the same run (its config.json's run_id), and goes on exporting there.
    """
    from fer_keras.errors import UserError

    run_path, run_id = str(pathlib.Path(run_dir).resolve()), _run_id(run_dir)
    base = pathlib.Path(out) / pathlib.Path(run_dir).resolve().name
    for meta in [*base.glob("[0-9]*/assets.extra/fer_keras.json"), *base.glob("tflite/*.json")]:
        try:
            info = json.loads(meta.read_text())
            other, other_id = info.get("run_path"), info.get("run_id")
        except (OSError, ValueError, AttributeError):
            continue
        if other and other != run_path and not (run_id and other_id == run_id):  # the same run, moved, may go on
            raise UserError(f"{str(base)!r} holds the exports of another run, {other}; give another --out, or rename the run folder.")
    return base
