"""Paper 001 Conv-RNN + RAM classifiers: the two-branch loss against a hand computation, one
training step, attention maps, save/load, unrolled batch-1 rebuild, TFLite with builtin ops only.

Training steps run eagerly (see test_convrnn_models.py); the loss check runs `evaluate` in
graph mode, so the attention logits are carried from `call` to `compute_loss` inside one
traced `tf.function` as they are in `fit`.
"""

import keras
import numpy as np
import pytest

from fer_keras.exports.tflite import LiteRTModel, convert
from fer_keras.models.ram import RAMClassifier
from fer_keras.models.registry import get_model, get_spec
from tests.models.test_convrnn_models import K, SHAPE, clips, randomize_norms

NAMES = ("convlstm_ram", "econvlstm_ram")
TINY = {"conv_filters": 4, "rnn_filters": (4, 4, 4, 4), "attention_filters": 4, "dense_units": (8, 8)}


def build(name, **overrides):
    args = dict(TINY, groups=2) if name.startswith("e") else dict(TINY)
    return get_model(name, SHAPE, K, **dict(args, **overrides))


def numpy(outputs):
    return {key: keras.ops.convert_to_numpy(value) for key, value in outputs.items()}


def log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def test_registered_with_family_kind_and_sizes():
    for name in NAMES:
        spec = get_spec(name)
        assert (spec.family, spec.kind) == ("ram", "clip")
        assert {"small", "paper"} <= set(spec.sizes)
        for size, args in spec.sizes.items():
            assert len(args["rnn_filters"]) == 4, size  # paper 001 sec. 3.1
            if name.startswith("e"):
                assert all(f % args["groups"] == 0 for f in args["rnn_filters"] + (args["attention_filters"],)), size


def test_loss_is_attention_ce_plus_perception_ce():
    model = build("econvlstm_ram")
    randomize_norms(model)
    x, y = clips(batch=3, seed=2), np.array([2, 0, 1])
    out = numpy(model.explain(x))
    perception = -np.mean(np.log(out["probabilities"][np.arange(3), y]))
    attention = -np.mean(log_softmax(out["attention_logits"].astype("float64"))[np.arange(3), y])
    assert perception > 0.01 and attention > 0.01

    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    result = model.evaluate(x, y, batch_size=3, verbose=0, return_dict=True)  # graph mode
    np.testing.assert_allclose(result["loss"], perception + attention, rtol=1e-5)
    np.testing.assert_allclose(result["attention_loss"], attention, rtol=1e-5)
    accuracy = np.mean(out["probabilities"].argmax(axis=1) == y)
    np.testing.assert_allclose(result["accuracy"], accuracy)  # metrics read the perception branch

    # Zero the attention term: only the perception CE is left.
    model.attention_loss_weight = 0.0
    y_pred = model(x, training=False)
    loss = keras.ops.convert_to_numpy(model.compute_loss(x, y, y_pred, training=False))
    np.testing.assert_allclose(loss, perception, rtol=1e-5)


def test_compute_loss_without_a_forward_pass_is_refused():
    model = build("convlstm_ram")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(ValueError, match="call the model on x first"):
        model.compute_loss(None, np.array([0]), np.full((1, K), 1.0 / K, "float32"))


@pytest.mark.parametrize("name", NAMES)
def test_trains_one_step_and_the_attention_loss_reaches_the_attention_head(name):
    model = build(name)
    assert isinstance(model, RAMClassifier) and [t.name for t in model.inputs] == ["frames"]
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"], run_eagerly=True)
    ram = model.network.get_layer("ram")
    # The 1x1 logit convolution feeds only the attention logits: only CE(attention) trains it.
    before = {"logits": ram.logit_conv.kernel.numpy().copy(), "perception": model.network.get_layer("probabilities").kernel.numpy().copy()}
    history = model.fit(clips(), np.array([0, 2]), epochs=1, batch_size=2, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["attention_loss"][0] > 0
    assert not np.allclose(before["logits"], ram.logit_conv.kernel.numpy())
    assert not np.allclose(before["perception"], model.network.get_layer("probabilities").kernel.numpy())

    out = numpy(model.explain(clips()))
    h = SHAPE[1] // 8
    assert out["probabilities"].shape == (2, K) and out["attention_logits"].shape == (2, K)
    assert out["attention_maps"].shape == (2, SHAPE[0], h, h, 1)
    assert 0.0 <= out["attention_maps"].min() and out["attention_maps"].max() <= 1.0
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(clips(), training=False)), out["probabilities"])


def test_flow_stream_is_refused():
    with pytest.raises(ValueError, match="RGB clips only"):
        build("convlstm_ram", streams=("rgb", "flow"))


@pytest.mark.parametrize("name", NAMES)
def test_keras_round_trip_and_unrolled_batch1_rebuild_give_the_same_outputs(name, tmp_path):
    model = build(name, attention_loss_weight=0.5)
    randomize_norms(model)
    x = clips(batch=1, seed=3)
    expected = numpy(model.explain(x))

    model.save(tmp_path / f"{name}.keras")
    loaded = keras.saving.load_model(tmp_path / f"{name}.keras")
    assert isinstance(loaded, RAMClassifier) and loaded.attention_loss_weight == 0.5
    got = numpy(loaded.explain(x))
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected["probabilities"])

    device = build(name, unroll=True, batch_size=1, attention_loss_weight=0.5)
    assert tuple(device.inputs[0].shape) == (1,) + SHAPE  # what the TFLite exporter reads
    assert [w.path for w in device.weights] == [w.path for w in model.weights]
    device.set_weights(model.get_weights())
    got = numpy(device.explain(x))
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-6, err_msg=key)


def _check_tflite(name):
    model = build(name)
    randomize_norms(model)
    device = build(name, unroll=True, batch_size=1)
    device.set_weights(model.get_weights())
    lite = LiteRTModel(convert(device))  # builtin ops only; the output is the perception softmax
    assert lite.input_shape == (1,) + SHAPE and tuple(lite.output["shape"]) == (1, K)
    x = clips(batch=1, seed=6)
    np.testing.assert_allclose(lite(x[0]), keras.ops.convert_to_numpy(model(x, training=False))[0], atol=1e-4)


def test_tflite_builtins_only_matches_keras():
    _check_tflite("econvlstm_ram")


@pytest.mark.slow
def test_tflite_builtins_only_matches_keras_convlstm_ram():
    _check_tflite("convlstm_ram")


@pytest.mark.slow
def test_graph_mode_fit_trains_both_branches():
    model = build("convlstm_ram")
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    history = model.fit(clips(batch=4), np.array([0, 1, 2, 0]), epochs=2, batch_size=2, verbose=0).history
    assert all(np.isfinite(history["loss"])) and all(a > 0 for a in history["attention_loss"])
