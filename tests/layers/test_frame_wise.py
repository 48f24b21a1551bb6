import keras
import numpy as np

from fer_keras.layers.frame_wise import FrameWise


def _model():
    inputs = keras.Input((4, 8, 8, 2))
    x = FrameWise(keras.layers.Conv2D(3, 3, padding="same", kernel_initializer="glorot_uniform"))(inputs)
    return keras.Model(inputs, x)


def test_applies_the_layer_to_each_frame_independently():
    model = _model()
    x = np.random.default_rng(0).normal(size=(2, 4, 8, 8, 2)).astype("float32")
    y = model(x).numpy()
    assert y.shape == (2, 4, 8, 8, 3)
    conv = model.layers[1].layer
    for t in range(4):
        np.testing.assert_allclose(y[:, t], conv(x[:, t]).numpy(), atol=1e-6)


def test_works_on_a_partial_batch_inside_tf_function():
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(1).normal(size=(3, 4, 8, 8, 2)).astype("float32")
    history = model.fit(x, np.zeros((3, 4, 8, 8, 3), "float32"), batch_size=2, epochs=1, verbose=0)  # last batch of 1
    assert np.isfinite(history.history["loss"][0])
    y = model.predict(x, batch_size=2, verbose=0)  # a traced predict step on a batch of 2 and one of 1
    assert y.shape == (3, 4, 8, 8, 3)
    np.testing.assert_allclose(y[2:], model(x[2:]).numpy(), atol=1e-5)


def test_keras_round_trip(tmp_path):
    model = _model()
    x = np.random.default_rng(1).normal(size=(1, 4, 8, 8, 2)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), atol=1e-6)
