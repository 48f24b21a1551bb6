"""How to make a model's inputs, written into every export's metadata so that an app needs nothing else.

The TFLite sidecar JSON (still, clip and streaming models) and the SavedModel's
``assets.extra/fer_keras.json`` carry these entries. Each states what `fer-keras predict` and
`data_prep` do, with the numbers, so that an app in another language can do the same:
the pixel layout (`PIXELS`), the optical flow of the two-stream models (`flow_input`) and the
face alignment (`face_alignment`).
"""

from fer_keras.data.records import DEFAULT_FLOW_BOUND
from fer_keras.data_prep.faces import TEMPLATE

PIXELS = (
    "raw pixel values 0..255 as float (int8/int16 models: quantise them with the input's scale and zero point); the "
    "model rescales inside. RGB channel order (OpenCV reads BGR: convert). One channel: "
    "cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) of the aligned RGB crop."
)


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
