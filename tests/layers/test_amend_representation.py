import numpy as np
import pytest
import tensorflow as tf

import keras

from fer_keras.layers.amend_representation import AmendRepresentation
from tests.layers.test_pixel_shuffle import reference_nhwc

# A small ARM: 4x4x8 features -> pixel shuffle x2 -> 8x8x2 -> 4x4 kernel, stride 2 -> 3x3.
SMALL = dict(upscale_factor=2, kernel_size=4, strides=2)


def small_arm(**kwargs):
    return AmendRepresentation(**{**SMALL, **kwargs})


def numpy_arm(x, kernel, gamma, beta, alpha, r, s, bn_mean=None, bn_var=None,
              global_mean=None, eps=1e-5):
    """Reference forward of Amend_raf (channel loop, one kernel, BN, channel + global mean)."""
    z = reference_nhwc(x, r)  # (B, Hr, Wr, c)
    b, hr, wr, c = z.shape
    k = kernel.shape[0]
    oh, ow = (hr - k) // s + 1, (wr - k) // s + 1
    d = np.zeros((b, oh, ow, c))
    for ch in range(c):  # same kernel for every channel
        for i in range(oh):
            for j in range(ow):
                patch = z[:, i * s:i * s + k, j * s:j * s + k, ch]
                d[:, i, j, ch] = (patch * kernel).sum(axis=(1, 2))
    if bn_mean is None:  # training: batch statistics (biased variance)
        bn_mean, bn_var = d.mean(axis=(0, 1, 2)), d.var(axis=(0, 1, 2))
    n = (d - bn_mean) / np.sqrt(bn_var + eps) * gamma + beta
    if global_mean is None:
        global_mean = n.mean(axis=(0, 3))  # (oh, ow)
    out = n.mean(axis=3) + alpha * global_mean[None]
    return out.reshape(b, -1), n.mean(axis=(0, 3))


def randomise(arm, rng):
    arm.de_albino_kernel.assign(rng.normal(size=arm.de_albino_kernel.shape))
    arm.alpha.assign([0.7])
    arm.bn.gamma.assign(rng.uniform(0.5, 1.5, size=arm.bn.gamma.shape))
    arm.bn.beta.assign(rng.normal(size=arm.bn.beta.shape))
    arm.bn.moving_mean.assign(rng.normal(size=arm.bn.moving_mean.shape))
    arm.bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=arm.bn.moving_variance.shape))


@pytest.mark.parametrize("features,expected", [((7, 7, 512), 121), ((4, 4, 512), 25)])
def test_output_shapes_default(features, expected):
    arm = AmendRepresentation()
    out = arm(np.zeros((2, *features), np.float32))
    assert out.shape == (2, expected)
    assert arm.compute_output_shape((None, *features)) == (None, expected)
    assert arm.output_size(*features[:2]) == (int(expected**0.5),) * 2


def test_unflattened_shape():
    arm = AmendRepresentation(flatten=False)
    assert arm(np.zeros((1, 7, 7, 512), np.float32)).shape == (1, 11, 11, 1)
    assert arm.compute_output_shape((None, 7, 7, 512)) == (None, 11, 11, 1)


def test_matches_numpy_reference_inference_batch_mode():
    # use_moving_global_mean=False is the reference code at test time: BN running stats,
    # global mean of the batch it is given.
    rng = np.random.default_rng(0)
    arm = small_arm(use_moving_global_mean=False)
    x = rng.normal(size=(3, 4, 4, 8)).astype(np.float32)
    arm.build(x.shape)
    randomise(arm, rng)
    expected, _ = numpy_arm(
        x, arm.de_albino_kernel.numpy()[:, :, 0, 0], arm.bn.gamma.numpy(), arm.bn.beta.numpy(),
        0.7, 2, 2, arm.bn.moving_mean.numpy(), arm.bn.moving_variance.numpy())
    out = keras.ops.convert_to_numpy(arm(x, training=False))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_training_matches_reference_and_updates_moving_global_mean():
    rng = np.random.default_rng(1)
    arm = small_arm(global_mean_momentum=0.9)
    x = rng.normal(size=(4, 4, 4, 8)).astype(np.float32)
    arm.build(x.shape)
    randomise(arm, rng)
    kernel = arm.de_albino_kernel.numpy()[:, :, 0, 0]
    expected, batch_global_mean = numpy_arm(
        x, kernel, arm.bn.gamma.numpy(), arm.bn.beta.numpy(), 0.7, 2, 2)
    out = keras.ops.convert_to_numpy(arm(x, training=True))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    # From zeros: moving = 0.9 * 0 + 0.1 * batch global mean.
    np.testing.assert_allclose(arm.moving_global_mean.numpy(), 0.1 * batch_global_mean,
                               rtol=1e-4, atol=1e-5)


def test_inference_uses_moving_global_mean():
    rng = np.random.default_rng(2)
    arm = small_arm()
    x = rng.normal(size=(2, 4, 4, 8)).astype(np.float32)
    arm.build(x.shape)
    randomise(arm, rng)
    moving = rng.normal(size=(3, 3))
    arm.moving_global_mean.assign(moving)
    expected, _ = numpy_arm(
        x, arm.de_albino_kernel.numpy()[:, :, 0, 0], arm.bn.gamma.numpy(), arm.bn.beta.numpy(),
        0.7, 2, 2, arm.bn.moving_mean.numpy(), arm.bn.moving_variance.numpy(), global_mean=moving)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(arm(x)), expected, rtol=1e-4, atol=1e-4)


def test_prediction_does_not_depend_on_the_batch():
    rng = np.random.default_rng(3)
    arm = small_arm()
    batch = rng.normal(size=(5, 4, 4, 8)).astype(np.float32)
    for _ in range(3):  # a few training steps give a non-trivial moving global mean
        arm(rng.normal(size=(4, 4, 4, 8)).astype(np.float32), training=True)
    assert np.abs(arm.moving_global_mean.numpy()).max() > 0
    alone = keras.ops.convert_to_numpy(arm(batch[:1], training=False))
    in_batch = keras.ops.convert_to_numpy(arm(batch, training=False))[:1]
    in_other_batch = keras.ops.convert_to_numpy(
        arm(np.concatenate([batch[:1], 10.0 * batch[1:]]), training=False))[:1]
    np.testing.assert_allclose(alone, in_batch, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone, in_other_batch, rtol=1e-5, atol=1e-5)


def test_reference_mode_depends_on_the_batch():
    # The behaviour the moving average fixes (so the test above can fail).
    rng = np.random.default_rng(4)
    arm = small_arm(use_moving_global_mean=False)
    batch = rng.normal(size=(5, 4, 4, 8)).astype(np.float32)
    alone = keras.ops.convert_to_numpy(arm(batch[:1]))
    in_batch = keras.ops.convert_to_numpy(arm(batch))[:1]
    assert np.abs(alone - in_batch).max() > 1e-3


def test_every_weight_gets_a_gradient():
    rng = np.random.default_rng(5)
    arm = small_arm()
    x = tf.constant(rng.normal(size=(3, 4, 4, 8)).astype(np.float32))
    arm.build(x.shape)
    weights = rng.normal(size=(3, 9)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(arm(x, training=True) * weights)
    grads = tape.gradient(loss, arm.trainable_variables)
    names = [v.path for v in arm.trainable_variables]
    assert len(grads) == 4, names  # de-albino kernel, alpha, BN gamma and beta
    for name, grad in zip(names, grads):
        assert grad is not None, name
        assert np.abs(grad.numpy()).max() > 0, name
    assert {v.path for v in arm.non_trainable_variables} >= {
        f"{arm.name}/moving_global_mean"}


def test_config_round_trip():
    arm = AmendRepresentation(upscale_factor=4, kernel_size=8, strides=4, alpha_init=0.5,
                              use_moving_global_mean=False, global_mean_momentum=0.8,
                              flatten=False, name="arm")
    config = arm.get_config()
    assert AmendRepresentation.from_config(config).get_config() == config


def test_keras_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    inputs = keras.Input((4, 4, 8))
    outputs = keras.layers.Dense(3)(small_arm(name="arm")(inputs))
    model = keras.Model(inputs, outputs)
    model(rng.normal(size=(4, 4, 4, 8)).astype(np.float32), training=True)
    path = tmp_path / "arm.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = rng.normal(size=(2, 4, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(loaded.get_layer("arm").moving_global_mean.numpy(),
                                  model.get_layer("arm").moving_global_mean.numpy())


@pytest.mark.parametrize(
    "kwargs,shape,match",
    [
        ({}, (1, 4, 4, 10), "divisible"),
        ({"kernel_size": 16}, (1, 4, 4, 8), "smaller than the de-albino kernel"),
    ],
)
def test_rejects_bad_inputs(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        small_arm(**kwargs)(np.zeros(shape, np.float32))


def test_rejects_dynamic_spatial_shape():
    with pytest.raises(ValueError, match="static height"):
        small_arm()(keras.Input((None, None, 8)))


@pytest.mark.parametrize(
    "kwargs,match",
    [({"kernel_size": 0}, "kernel_size"), ({"strides": 1.5}, "strides"),
     ({"global_mean_momentum": 1.0}, "global_mean_momentum"),
     ({"upscale_factor": 0}, "upscale_factor")],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AmendRepresentation(**kwargs)


def test_fit_updates_moving_global_mean_in_graph_mode():
    rng = np.random.default_rng(7)
    inputs = keras.Input((4, 4, 8))
    outputs = keras.layers.Dense(3)(small_arm(name="arm")(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = rng.normal(size=(8, 4, 4, 8)).astype(np.float32)
    model.fit(x, rng.integers(0, 3, size=8), batch_size=4, epochs=1, verbose=0)
    assert np.abs(model.get_layer("arm").moving_global_mean.numpy()).max() > 0


def test_frozen_layer_runs_as_at_inference():
    rng = np.random.default_rng(8)
    arm = small_arm()
    x = rng.normal(size=(3, 4, 4, 8)).astype(np.float32)
    arm.build(x.shape)
    randomise(arm, rng)
    arm.trainable = False
    before = arm.moving_global_mean.numpy().copy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(arm(x, training=True)),
                               keras.ops.convert_to_numpy(arm(x, training=False)), atol=1e-6)
    np.testing.assert_array_equal(arm.moving_global_mean.numpy(), before)
