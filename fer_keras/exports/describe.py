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
        "direction": "flow[t] maps frame t-1 to frame t; only a video's first frame, and `predict`'s first face after "
                     "a frame without one, get zeros (no frame before them): a clip, or a stream after its every-T "
                     "reset, that starts later keeps the flow from the frame before it, as in training",
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
        "image": "the detector and the landmarks run on the RGB image (three channels); on a grey image (a camera's Y "
                 "plane) they find other points, and the crops differ by up to tens of grey levels",
        "orientation": "an image file's EXIF orientation is applied first (PIL.ImageOps.exif_transpose); Android's "
                       "BitmapFactory does not apply it",
        "faces": "largest box first; on video `predict` follows one face: the largest at the start, then the one "
                 "overlapping it from frame to frame, or the only one; where several faces are and none overlaps, "
                 "the largest starts a new window (as after a frame without a face)",
        "landmark_model_licence": "the 68-point model is trained on iBUG 300-W, whose licence excludes commercial use; "
                                  "another landmarker works if it gives the same eye and mouth centres (anchors), with "
                                  "crops that differ by its landmarks' error",
        "crops_without_alignment": "`fer-keras predict --detect none` resizes an image to the input size with "
                                   "cv2.INTER_AREA",
    }


def source(run_dir, manifest):
    """Which run, and which data, an export comes from: so that a SynthFER model is never taken for a CK+ one."""
    name, run_id = manifest.get("dataset", ""), _run_id(run_dir)
    return {
        "run": pathlib.Path(run_dir).resolve().name,
        # the folder's path only for a run without an id (older runs): a shipped model need not carry a home folder
        **({"run_id": run_id} if run_id else {"run_path": str(pathlib.Path(run_dir).resolve()), "run_id": None}),
        "dataset": "SynthFER (synthetic faces)" if name == "synthfer" else name,
        "label_set": manifest.get("label_set"),
    }


METADATA_VERSION = 3  # 2: TFLite signatures named as the SavedModel's, tensor positions, model_sha256; 3: JSON inside


def stamp(flatbuffer):
    """What ties a sidecar JSON to its .tflite: the metadata version, the fer-keras version and the model's sha256."""
    import hashlib

    return {"metadata_version": METADATA_VERSION, "fer_keras_version": _version(),
            "model_sha256": hashlib.sha256(flatbuffer).hexdigest(), "model_bytes": len(flatbuffer)}


# The name of the model metadata entry (schema.fbs: Model.metadata) that carries a .tflite's JSON inside the file.
EMBEDDED = "fer_keras.json"


def with_metadata(flatbuffer, metadata):
    """`flatbuffer` with `metadata` inside it as the UTF-8 JSON of the model metadata entry `EMBEDDED`.

    LiteRT runs the model as before (a metadata entry is data, not an op), so a .tflite copied without its JSON still
    carries its labels, input and face alignment. The embedded JSON is the sidecar's without `model_sha256` and
    `model_bytes`, which describe the file it is written into.
    """
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, indent=2).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = EMBEDDED, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != EMBEDDED.encode()] + [entry]
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def embedded_metadata(path):
    """The JSON a fer-keras .tflite carries inside (`EMBEDDED`), or None: not a TFLite file, or exported before it."""
    from ai_edge_litert import schema_py_generated as schema

    data = pathlib.Path(path).read_bytes()
    try:
        if not schema.Model.ModelBufferHasIdentifier(data, 0):
            return None
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == EMBEDDED.encode():
                meta = json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
                return meta if isinstance(meta, dict) else None
    except Exception:  # a damaged file: opening it as a model then says what is wrong
        return None
    return None


def write_tflite(path, flatbuffer, metadata):
    """Writes `path` (the model, `metadata` embedded) and its sidecar JSON together; returns the sidecar's dict.

    The sidecar is `metadata` after `stamp` of the written bytes, so `check_stamp` ties the two files.
    """
    from fer_keras import atomic

    versioned = {"metadata_version": METADATA_VERSION, "fer_keras_version": _version(), **metadata}
    model = with_metadata(flatbuffer, versioned)
    sidecar = {**stamp(model), **metadata}
    atomic.write_files([(path, model), (path.with_suffix(".json"), (json.dumps(sidecar, indent=2) + "\n").encode())])
    return sidecar


def read_tflite_metadata(path):
    """(metadata, where it came from) for a .tflite: its sidecar JSON, else the JSON inside it, else ({}, None).

    A symlinked .tflite without a JSON beside the link reads the one beside its target. The sidecar wins: it has the
    stamp that `check_stamp` compares (an app may have edited one of them; the sidecar is the one it ships beside).
    """
    from fer_keras.json_files import read_json_object

    path = pathlib.Path(path)
    sidecar = path.with_suffix(".json")
    if not sidecar.exists() and path.is_symlink():
        sidecar = path.resolve().with_suffix(".json")
    if sidecar.exists():
        return read_json_object(sidecar), str(sidecar)
    meta = embedded_metadata(path) if path.is_file() else None
    return (meta, f"{path.name} (inside, {EMBEDDED})") if meta else ({}, None)


def _version():
    from fer_keras import __version__

    return __version__


def check_stamp(path, meta):
    """UserError when the JSON beside `path` records another model's sha256 (a .tflite replaced without its JSON)."""
    import hashlib

    from fer_keras.errors import UserError

    expected = meta.get("model_sha256")
    if expected and hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest() != expected:
        raise UserError(f"{pathlib.Path(path).with_suffix('.json')} describes another model than {str(path)!r} (its "
                        "model_sha256 differs): copy a .tflite and its .json together, or export again. A .tflite "
                        "changed on purpose (metadata added) needs its new sha256 in the JSON.")


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
        if run_id and other_id:  # the same run, moved, may go on
            same = other_id == run_id
        else:  # a run or an export from before run ids: by the folder
            same = other == run_path or not (other or other_id)
        if not same:
            raise UserError(f"{str(base)!r} holds the exports of another run ({other or 'run id ' + str(other_id)}); "
                            "give another --out, or rename the run folder.")
    return base
