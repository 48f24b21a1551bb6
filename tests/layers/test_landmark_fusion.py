"""LandmarkFusion: eq. (1)-(2) weighting in each of the four modes, against hand-computed numbers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fer_keras.layers.landmark_fusion import LandmarkFusion

F_RGB = np.array([[9.0], [8.0]], np.float32)
F_LANDMARK = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
P_RGB = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], np.float32)  # argmax 0, 1
P_LANDMARK = np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]], np.float32)  # argmax 0, 0: sample 0 agrees, 1 disagrees

# By hand: p_landmark = (0.5, 0.6); w = (1, 0.6) with w_disagree = 0.6.
EXPECTED = {
    "none": [[9, 1, 2], [8, 3, 4]],
    "uncertainty": [[9, 0.5, 1.0], [8, 1.8, 2.4]],  # p * F
    "agreement": [[9, 1, 2], [8, 1.8, 2.4]],  # w * F
    "both": [[9, 0.5, 1.0], [8, 1.08, 1.44]],  # p * w * F, eq. (2)
}


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_each_mode_weights_the_landmark_features_as_the_paper(mode):
    out = LandmarkFusion(mode=mode, disagreement_weight=0.6)([F_RGB, F_LANDMARK, P_RGB, P_LANDMARK])
    np.testing.assert_allclose(np.asarray(out), EXPECTED[mode], rtol=1e-6)


def test_the_disagreement_weight_is_configurable():
    out = LandmarkFusion(mode="both", disagreement_weight=0.25)([F_RGB, F_LANDMARK, P_RGB, P_LANDMARK])
    np.testing.assert_allclose(np.asarray(out), [[9, 0.5, 1.0], [8, 0.45, 0.6]], rtol=1e-6)  # 0.6 * 0.25 = 0.15


def test_gradients_reach_both_feature_vectors_and_the_landmark_confidence():
    fusion = LandmarkFusion(mode="both")
    tensors = [tf.constant(t) for t in (F_RGB, F_LANDMARK, P_RGB, P_LANDMARK)]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        total = tf.reduce_sum(fusion(tensors))
    g_rgb, g_landmark, g_p_rgb, g_p_landmark = tape.gradient(total, tensors)
    np.testing.assert_allclose(g_rgb, 1.0)
    np.testing.assert_allclose(g_landmark, [[0.5, 0.5], [0.36, 0.36]], rtol=1e-6)
    assert g_p_rgb is None or not np.any(g_p_rgb)  # through argmax only: no gradient
    # d/dp_max of p_max * w * (F1 + F2): w * (F1 + F2) at the argmax, 0 elsewhere.
    np.testing.assert_allclose(g_p_landmark, [[3.0, 0, 0], [4.2, 0, 0]], rtol=1e-6)


def test_config_round_trip_saving_and_validation(tmp_path):
    layer = LandmarkFusion(mode="agreement", disagreement_weight=0.3, name="fusion")
    assert LandmarkFusion.from_config(layer.get_config()).get_config() == layer.get_config()
    inputs = [keras.Input((1,)), keras.Input((2,)), keras.Input((3,)), keras.Input((3,))]
    model = keras.Model(inputs, layer(inputs))
    assert model.output.shape == (None, 3)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded([F_RGB, F_LANDMARK, P_RGB, P_LANDMARK]), [[9, 1, 2], [8, 0.9, 1.2]], rtol=1e-6)
    with pytest.raises(ValueError, match="mode must be one of"):
        LandmarkFusion(mode="average")
    with pytest.raises(ValueError, match="disagreement_weight must be in"):
        LandmarkFusion(disagreement_weight=1.5)
