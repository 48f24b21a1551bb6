"""Prediction with landmark_arm (images + 68 landmarks) on a real photograph, for a run, a SavedModel and a .tflite.

The predictor maps dlib's 68 points into the aligned crop with the similarity transform that cut
the crop, and feeds both to the model.
"""

import numpy as np
import pytest
import skimage.data

from fer_keras.errors import UserError
from fer_keras.inference.predictor import Predictor, crop_faces, load_backend
from fer_keras.training import fit
from tests.conftest import MODEL_SIZE, expect_user_error, invoke
from tests.exports.landmark_exports import landmark_export


@pytest.fixture(scope="module")
def astronaut_face():
    """(box, dlib points in the photo, grey crop, points in the crop) of the astronaut's face."""
    image = skimage.data.astronaut()
    found = crop_faces(image, MODEL_SIZE, 1, "dlib", crop_landmarks=True)
    box, points, crop, crop_points = found[0]
    x0, y0, x1, y1 = box
    assert 150 <= x0 < x1 <= 300 and 50 <= y0 < y1 <= 200  # the astronaut's face, as test_predictor checks
    return image, box, points, crop, crop_points


@pytest.fixture(scope="module")
def expected(landmark_arm_run, astronaut_face):
    """The Keras model called directly with the crop and its landmarks."""
    _, _, _, crop, crop_points = astronaut_face
    _, _, model = fit.load_run(landmark_arm_run)
    x = {"images": crop[None], "landmarks": crop_points[None]}
    return np.asarray(model(x, training=False))[0], np.asarray(model.explain(x)["heatmap"])[0]


def test_crop_landmarks_land_inside_the_crop(astronaut_face):
    _, _, points, crop, crop_points = astronaut_face
    assert crop.shape == (MODEL_SIZE, MODEL_SIZE, 1)
    assert crop_points.shape == (68, 2) and crop_points.dtype == np.float32
    inner = crop_points[17:]  # brows, nose, eyes, mouth: inside the crop
    assert (inner >= 0).all() and (inner < MODEL_SIZE).all(), inner
    # The jaw line may run to the crop's border (the template puts the eyes at 35 % and the mouth at 75 % of the height).
    assert (crop_points > -0.25 * MODEL_SIZE).all() and (crop_points < 1.25 * MODEL_SIZE).all()
    # The eye and mouth centres land on the alignment template, as the crop itself was cut.
    from fer_keras.data_prep.faces import TEMPLATE, anchor_points

    np.testing.assert_allclose(anchor_points(crop_points), TEMPLATE * MODEL_SIZE, atol=0.06 * MODEL_SIZE)
    # The same similarity transform: distances scale uniformly from the photo to the crop.
    scale = np.linalg.norm(crop_points[45] - crop_points[36]) / np.linalg.norm(points[45] - points[36])
    np.testing.assert_allclose(np.linalg.norm(crop_points[8] - crop_points[27]), scale * np.linalg.norm(points[8] - points[27]),
                               rtol=1e-4)


def _scores(record, labels):
    return np.array([record["scores"][label] for label in labels])


def test_run_folder_prediction_equals_keras_with_crop_and_landmarks(landmark_arm_run, astronaut_face, expected):
    image, box, points, crop, crop_points = astronaut_face
    probabilities, heatmap = expected
    assert heatmap.sum() > 20  # the landmarks drew a face, not a black image
    predictor = Predictor(landmark_arm_run, detect="dlib")
    assert predictor.takes_landmarks
    record = predictor.predict_image(image, name="astronaut")[0]
    assert record["box"] == [int(v) for v in box]
    np.testing.assert_allclose(record["landmarks"], np.round(points, 1))
    np.testing.assert_allclose(_scores(record, predictor.backend.labels), probabilities, atol=1e-4)  # records round to 4 places
    assert record["label"] == predictor.backend.labels[int(np.argmax(probabilities))]
    # Unrounded: the backend gets exactly the crop and its points.
    np.testing.assert_allclose(predictor.backend(crop[None], landmarks=crop_points[None])[0], probabilities, atol=1e-6)


@pytest.mark.parametrize("fmt, quantize, tolerance", [("savedmodel", "none", 1e-4), ("tflite", "none", 2e-4)])
def test_savedmodel_and_tflite_predictions_equal_keras(landmark_arm_run, exports_dir, astronaut_face, expected, fmt, quantize,
                                                       tolerance):
    image, _, _, crop, crop_points = astronaut_face
    path = landmark_export(landmark_arm_run, exports_dir, fmt, quantize)
    predictor = Predictor(path, detect="dlib")
    assert predictor.takes_landmarks and predictor.size == MODEL_SIZE and predictor.channels == 1
    record = predictor.predict_image(image, name="astronaut")[0]
    np.testing.assert_allclose(_scores(record, predictor.backend.labels), expected[0], atol=tolerance)
    np.testing.assert_allclose(load_backend(path)(crop[None], landmarks=crop_points[None])[0], expected[0], atol=1e-4)


def test_detect_none_is_refused_for_a_landmark_model(landmark_arm_run, tmp_path):
    import cv2

    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((MODEL_SIZE, MODEL_SIZE, 3), 128, np.uint8))
    with pytest.raises(UserError, match="--detect dlib"):
        Predictor(landmark_arm_run, detect="none")
    line = expect_user_error(invoke("predict", landmark_arm_run, face, "--detect", "none"))
    assert "landmarks" in line and "--detect dlib" in line
