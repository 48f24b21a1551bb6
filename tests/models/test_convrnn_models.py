"""Paper 000 Conv-RNN classifiers: registration, one training step, two streams, save/load,
unrolled batch-1 rebuild, TFLite with builtin ops only.

Training steps run eagerly (`run_eagerly=True`): tracing the train step of four stacked
Conv-RNN while-loops and their gradients takes tens of seconds on a CI CPU, while one eager
step on these tiny shapes takes about a second. The shared registry sweep
(tests/models/test_registry.py) covers a compiled graph-mode step.
"""

import keras
import numpy as np
import pytest

from fer_keras.exports.tflite import LiteRTModel, convert
from fer_keras.models.convrnn import parse_streams
from fer_keras.models.registry import get_model, get_spec, list_models

NAMES = ("convgru", "convlstm", "econvgru", "econvlstm")
SHAPE = (3, 16, 16, 1)  # (T, H, W, C): T=3 is the shortest clip in which h(t-2) is read
K = 3
TINY = {"conv_filters": 4, "rnn_filters": (4, 4, 4, 4), "dense_units": (8, 8)}


def tiny_args(name):
    return dict(TINY, groups=2) if name.startswith("e") else dict(TINY)


def build(name, **overrides):
    return get_model(name, SHAPE, K, **dict(tiny_args(name), **overrides))


def clips(batch=2, seed=0, shape=SHAPE):
    return np.random.default_rng(seed).uniform(0, 255, (batch,) + shape).astype("float32")


def flows(batch=2, seed=1):
    return np.random.default_rng(seed).normal(0, 3, (batch,) + SHAPE[:3] + (2,)).astype("float32")


def randomize_norms(model):
    """Non-trivial BatchNorm statistics, so that inference differs from a fresh model's."""
    rng = np.random.default_rng(5)
    for w in model.weights:
        if "moving_mean" in w.path or "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32") * (0.1 if "mean" in w.path else 1.0))


def test_registered_with_family_kind_and_sizes():
    for name in NAMES:
        assert name in list_models()
        spec = get_spec(name)
        assert (spec.family, spec.kind) == ("convrnn", "clip")
        assert {"small", "paper"} <= set(spec.sizes)


@pytest.mark.parametrize("name", NAMES)
def test_sizes_follow_the_papers_and_group_norm_groups_divide_filters(name):
    for size, args in get_spec(name).sizes.items():
        assert len(args["rnn_filters"]) == 4, size  # paper 001 sec. 3.1: four Conv-RNN layers
        assert len(args["dense_units"]) == 2, size  # + the softmax layer: paper 000's three FC layers
        if name.startswith("e"):
            assert all(f % args["groups"] == 0 for f in args["rnn_filters"]), size


@pytest.mark.parametrize("name", NAMES)
def test_trains_one_step(name):
    model = build(name)
    assert [t.name for t in model.inputs] == ["frames"]
    assert model.output.shape == (None, K) and model.get_layer("probabilities").activation.__name__ == "softmax"
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"], run_eagerly=True)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(clips(), np.array([0, 2]), epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    unchanged = [w.path for b, w in zip(before, model.trainable_weights) if np.allclose(b, w.numpy())]
    assert not unchanged  # every weight, the recurrent ones of all four layers included, trains
    probabilities = keras.ops.convert_to_numpy(model(clips(), training=False))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_two_streams_take_named_rgb_and_flow_inputs_and_use_both():
    model = build("econvlstm", streams=("rgb", "flow"))
    assert sorted(t.name for t in model.inputs) == ["flow", "rgb"]
    assert {n: tuple(model.get_layer(n).output.shape) for n in ("rgb_rnn4", "flow_rnn4")} == {
        "rgb_rnn4": (None, 2, 2, 4),
        "flow_rnn4": (None, 2, 2, 4),
    }
    assert tuple(model.get_layer("streams").output.shape) == (None, 2, 2, 8)
    x = {"rgb": clips(), "flow": flows()}
    y = keras.ops.convert_to_numpy(model(x, training=False))
    moved = keras.ops.convert_to_numpy(model({"rgb": x["rgb"], "flow": x["flow"] + 5.0}, training=False))
    assert np.abs(moved - y).max() > 1e-6  # the flow stream reaches the output
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(), run_eagerly=True)
    loss = model.fit(x, np.array([1, 0]), epochs=1, batch_size=2, verbose=0).history["loss"][0]
    assert np.isfinite(loss)


def test_streams_argument_is_validated_and_accepts_the_cli_string():
    assert parse_streams("rgb, flow") == ("rgb", "flow") == parse_streams(("flow", "rgb"))
    assert parse_streams(["rgb"]) == ("rgb",)
    for bad in (("flow",), ("rgb", "depth"), ("rgb", "rgb"), ""):
        with pytest.raises(ValueError, match="streams must be"):
            parse_streams(bad)


def test_bad_arguments_say_what_was_received():
    with pytest.raises(ValueError, match="groups=3, filters=4"):
        build("econvlstm", groups=3)
    with pytest.raises(ValueError, match="pool_after"):
        build("convlstm", pool_after=(0, 4))
    with pytest.raises(ValueError, match="too small"):
        get_model("convgru", (3, 4, 4, 1), K, **TINY)
    with pytest.raises(ValueError, match="input_shape"):
        get_model("convgru", (32, 32, 1), K, **TINY)


@pytest.mark.parametrize("name", NAMES)
def test_keras_round_trip_and_unrolled_batch1_rebuild_give_the_same_outputs(name, tmp_path):
    model = build(name)
    randomize_norms(model)
    x = clips(batch=1, seed=3)
    expected = keras.ops.convert_to_numpy(model(x, training=False))

    model.save(tmp_path / f"{name}.keras")
    loaded = keras.saving.load_model(tmp_path / f"{name}.keras")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)

    # What the TFLite exporter does: rebuild unrolled at batch 1, copy the weights by position.
    device = build(name, unroll=True, batch_size=1)
    assert [w.path for w in device.weights] == [w.path for w in model.weights]
    device.set_weights(model.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(device(x, training=False)), expected, atol=1e-6)


def test_two_stream_keras_round_trip(tmp_path):
    model = build("convgru", streams=("rgb", "flow"))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x = {"rgb": clips(), "flow": flows()}
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(loaded(x)))


def _check_tflite(name):
    model = build(name)
    randomize_norms(model)
    device = build(name, unroll=True, batch_size=1)
    device.set_weights(model.get_weights())
    lite = LiteRTModel(convert(device))  # converter limited to TFLITE_BUILTINS: a Flex op fails here
    assert lite.input_shape == (1,) + SHAPE
    for seed in (6, 7):
        x = clips(batch=1, seed=seed)
        np.testing.assert_allclose(lite(x[0]), keras.ops.convert_to_numpy(model(x, training=False))[0], atol=1e-4)


# One TFLite conversion takes 10-15 s here; the unmarked one is test_ram_models.py's
# econvlstm_ram (Enhanced ConvLSTM cells + RAM), the others run with -m slow.
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_tflite_builtins_only_matches_keras(name):
    _check_tflite(name)
