import numpy as np
import pytest
import tensorflow as tf

import keras

from fer_keras.layers.basic_block import BasicBlock


def conv_nchw(x, w, stride, pad):
    """PyTorch-style conv2d: x (N, C, H, W), w (O, C, kH, kW), symmetric zero padding."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out


def bn_nchw(x, p, eps=1e-5):
    shape = (1, -1, 1, 1)
    return ((x - p["running_mean"].reshape(shape)) / np.sqrt(p["running_var"].reshape(shape) + eps)
            * p["weight"].reshape(shape) + p["bias"].reshape(shape))


def torch_block_nchw(x, p, stride):
    """torchvision BasicBlock.forward in eval mode, from a dict of torch-named arrays."""
    out = np.maximum(bn_nchw(conv_nchw(x, p["conv1"], stride, 1), p["bn1"]), 0)
    out = bn_nchw(conv_nchw(out, p["conv2"], 1, 1), p["bn2"])
    if "downsample.0" in p:
        identity = bn_nchw(conv_nchw(x, p["downsample.0"], stride, 0), p["downsample.1"])
    else:
        identity = x
    return np.maximum(out + identity, 0)


def random_bn(rng, c):
    return {"weight": rng.uniform(0.5, 1.5, c), "bias": rng.normal(size=c),
            "running_mean": rng.normal(size=c), "running_var": rng.uniform(0.5, 2, c)}


def assign_bn(layer, p):
    for name, key in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                      ("moving_variance", "running_var")):
        getattr(layer, name).assign(p[key])


@pytest.mark.parametrize("in_c,filters,stride,size",
                         [(4, 4, 1, 5), (4, 8, 2, 6), (4, 8, 2, 5), (4, 6, 1, 4)])
def test_matches_torchvision_basic_block(in_c, filters, stride, size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, size, size, in_c)).astype(np.float32)
    block = BasicBlock(filters, strides=stride)
    block.build(x.shape)
    p = {"conv1": rng.normal(size=(filters, in_c, 3, 3)) * 0.3, "bn1": random_bn(rng, filters),
         "conv2": rng.normal(size=(filters, filters, 3, 3)) * 0.3, "bn2": random_bn(rng, filters)}
    if stride != 1 or in_c != filters:
        p["downsample.0"] = rng.normal(size=(filters, in_c, 1, 1))
        p["downsample.1"] = random_bn(rng, filters)
    block.conv1.kernel.assign(p["conv1"].transpose(2, 3, 1, 0))
    block.conv2.kernel.assign(p["conv2"].transpose(2, 3, 1, 0))
    assign_bn(block.bn1, p["bn1"])
    assign_bn(block.bn2, p["bn2"])
    assert block.use_projection == ("downsample.0" in p)
    if block.use_projection:
        block.downsample_conv.kernel.assign(p["downsample.0"].transpose(2, 3, 1, 0))
        assign_bn(block.downsample_bn, p["downsample.1"])
    out = keras.ops.convert_to_numpy(block(x, training=False))
    expected = torch_block_nchw(x.transpose(0, 3, 1, 2), p, stride).transpose(0, 2, 3, 1)
    assert out.shape == expected.shape == block.compute_output_shape(x.shape)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_identity_block_has_no_projection_weights():
    block = BasicBlock(8)
    block.build((None, 4, 4, 8))
    assert not block.use_projection
    assert len(block.trainable_weights) == 6  # 2 kernels + 2 x (gamma, beta)


@pytest.mark.parametrize("stride,in_c", [(1, 8), (2, 4)])
def test_every_weight_gets_a_gradient(stride, in_c):
    rng = np.random.default_rng(1)
    block = BasicBlock(8, strides=stride)
    x = tf.constant(rng.normal(size=(2, 4, 4, in_c)).astype(np.float32))
    block.build(x.shape)
    with tf.GradientTape() as tape:
        out = block(x, training=True)
        loss = tf.reduce_sum(out * rng.normal(size=out.shape).astype(np.float32))
    grads = tape.gradient(loss, block.trainable_variables)
    for var, grad in zip(block.trainable_variables, grads):
        assert grad is not None and np.abs(grad.numpy()).max() > 0, var.path


def test_config_and_keras_round_trip(tmp_path):
    block = BasicBlock(8, strides=2, bn_momentum=0.8, name="block")
    assert BasicBlock.from_config(block.get_config()).get_config() == block.get_config()
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, block(inputs))
    path = tmp_path / "block.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"filters": 0}, "filters"), ({"filters": 8, "strides": 3}, "strides"),
     ({"filters": 8, "downsample": "yes"}, "downsample"),
     ({"filters": 8, "bn_epsilon": 0}, "bn_epsilon")],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BasicBlock(**kwargs)


def test_rejects_identity_shortcut_that_cannot_fit():
    with pytest.raises(ValueError, match="downsample=False"):
        BasicBlock(8, strides=2, downsample=False).build((None, 4, 4, 8))
