import numpy as np
import pytest
import tensorflow as tf

import keras

from fer_keras.layers.pixel_shuffle import PixelShuffle


def torch_pixel_shuffle_nchw(x, r):
    """NumPy copy of PyTorch's pixel_shuffle: view (N, C, r, r, H, W), permute 0,1,4,2,5,3."""
    n, c, h, w = x.shape
    oc = c // (r * r)
    x = x.reshape(n, oc, r, r, h, w)
    x = x.transpose(0, 1, 4, 2, 5, 3)  # (N, oc, H, r, W, r)
    return x.reshape(n, oc, h * r, w * r)


def reference_nhwc(x, r):
    nchw = np.transpose(x, (0, 3, 1, 2))
    return np.transpose(torch_pixel_shuffle_nchw(nchw, r), (0, 2, 3, 1))


@pytest.mark.parametrize("shape,r", [((2, 3, 4, 18), 3), ((1, 2, 2, 8), 2), ((2, 5, 3, 4), 1)])
def test_matches_pytorch_order(shape, r):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    out = keras.ops.convert_to_numpy(PixelShuffle(r)(x))
    np.testing.assert_array_equal(out, reference_nhwc(x, r))


def test_matches_pytorch_order_for_arm_shapes():
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 512)).astype(np.float32)
    out = keras.ops.convert_to_numpy(PixelShuffle(16)(x))
    assert out.shape == (2, 112, 112, 2)
    np.testing.assert_array_equal(out, reference_nhwc(x, 16))


def test_differs_from_tf_depth_to_space():
    # The reason for the layer: NHWC depth_to_space uses another channel order.
    x = np.arange(2 * 2 * 2 * 8, dtype=np.float32).reshape(2, 2, 2, 8)
    ours = keras.ops.convert_to_numpy(PixelShuffle(2)(x))
    theirs = tf.nn.depth_to_space(x, 2).numpy()
    assert not np.array_equal(ours, theirs)


def test_dynamic_spatial_shape_in_functional_model():
    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, PixelShuffle(2)(inputs))
    assert model.output_shape == (None, None, None, 2)
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 8)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x, verbose=0), reference_nhwc(x, 2))


def test_compute_output_shape():
    assert PixelShuffle(4).compute_output_shape((None, 7, 7, 64)) == (None, 28, 28, 4)


@pytest.mark.parametrize("factor", [0, -2, 2.0, True, "2"])
def test_rejects_bad_factor(factor):
    with pytest.raises(ValueError, match="upscale_factor"):
        PixelShuffle(factor)


def test_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="divisible"):
        PixelShuffle(2)(np.zeros((1, 2, 2, 6), np.float32))


def test_config_and_keras_round_trip(tmp_path):
    layer = PixelShuffle(2, name="ps")
    assert PixelShuffle.from_config(layer.get_config()).get_config() == layer.get_config()
    inputs = keras.Input((3, 3, 8))
    model = keras.Model(inputs, layer(inputs))
    path = tmp_path / "ps.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(2).normal(size=(1, 3, 3, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
