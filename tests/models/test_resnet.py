import numpy as np
import pytest

import keras

from fer_keras.models.resnet import (
    convert_torch_state_dict,
    landmark_cnn_backbone,
    load_torch_state_dict,
    resnet18_backbone,
)
from tests.layers.test_basic_block import bn_nchw, conv_nchw, torch_block_nchw

TORCHVISION_RESNET18_PARAMS_WITHOUT_FC = 11_689_512 - (512 * 1000 + 1000)  # 11,176,512


def fake_torch_state_dict(seed=0):
    """Random arrays with torchvision resnet18's state-dict names and shapes."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, o, i, k):
        he_std = np.sqrt(2.0 / (i * k * k))
        sd[f"{name}.weight"] = (rng.normal(size=(o, i, k, k)) * he_std).astype(np.float32)

    def bn(name, c):
        sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[f"{name}.bias"] = rng.normal(scale=0.1, size=c).astype(np.float32)
        sd[f"{name}.running_mean"] = rng.normal(scale=0.1, size=c).astype(np.float32)
        sd[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[f"{name}.num_batches_tracked"] = np.array(7, dtype=np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    in_c = 64
    for stage, (c, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            conv(f"{prefix}.conv1", c, in_c, 3)
            bn(f"{prefix}.bn1", c)
            conv(f"{prefix}.conv2", c, c, 3)
            bn(f"{prefix}.bn2", c)
            if block == 0 and stage > 1:
                conv(f"{prefix}.downsample.0", c, in_c, 1)
                bn(f"{prefix}.downsample.1", c)
            in_c = c
    sd["fc.weight"] = rng.normal(size=(1000, 512)).astype(np.float32)
    sd["fc.bias"] = np.zeros(1000, np.float32)
    return sd


def torch_resnet18_features_nchw(x, sd):
    """torchvision resnet18 forward (eval mode) up to layer4, in NumPy."""
    def bn(name):
        return {k: sd[f"{name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}

    x = np.maximum(bn_nchw(conv_nchw(x, sd["conv1.weight"], 2, 3), bn("bn1")), 0)
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)  # MaxPool2d(3, 2, 1)
    n, c, h, w = x.shape
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    x = np.stack([np.stack([x[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(2, 3))
                            for j in range(ow)], -1) for i in range(oh)], -2)
    for stage in range(1, 5):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            p = {"conv1": sd[f"{prefix}.conv1.weight"], "bn1": bn(f"{prefix}.bn1"),
                 "conv2": sd[f"{prefix}.conv2.weight"], "bn2": bn(f"{prefix}.bn2")}
            if f"{prefix}.downsample.0.weight" in sd:
                p["downsample.0"] = sd[f"{prefix}.downsample.0.weight"]
                p["downsample.1"] = bn(f"{prefix}.downsample.1")
            x = torch_block_nchw(x, p, 2 if (block == 0 and stage > 1) else 1)
    return x


@pytest.fixture(scope="module")
def resnet64():
    return resnet18_backbone((64, 64, 3))


@pytest.fixture(scope="module")
def state_dict():
    return fake_torch_state_dict()


def test_parameter_count_equals_torchvision(resnet64):
    trainable = sum(int(np.prod(v.shape)) for v in resnet64.trainable_weights)
    assert trainable == TORCHVISION_RESNET18_PARAMS_WITHOUT_FC == 11_176_512


def test_output_shapes(resnet64):
    assert resnet64.output_shape == (None, 2, 2, 512)
    x = np.zeros((2, 64, 64, 3), np.float32)
    assert resnet64(x).shape == (2, 2, 2, 512)
    assert resnet18_backbone((224, 224, 3)).output_shape == (None, 7, 7, 512)
    assert resnet18_backbone((112, 112, 3)).output_shape == (None, 4, 4, 512)


def test_conversion_matches_torchvision_forward(resnet64, state_dict):
    resnet64.set_weights(convert_torch_state_dict(state_dict))
    x = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype(np.float32)
    expected = torch_resnet18_features_nchw(x.transpose(0, 3, 1, 2), state_dict)
    expected = expected.transpose(0, 2, 3, 1)  # NCHW -> NHWC
    out = keras.ops.convert_to_numpy(resnet64(x, training=False))
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)


def test_convert_order_and_transposes(resnet64, state_dict):
    weights = convert_torch_state_dict(state_dict)
    assert [w.shape for w in weights] == [tuple(v.shape) for v in resnet64.weights]
    by_path = dict(zip([v.path for v in resnet64.weights], weights))
    np.testing.assert_array_equal(by_path["conv1/kernel"],
                                  state_dict["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(by_path["layer3_0/downsample_bn/moving_variance"],
                                  state_dict["layer3.0.downsample.1.running_var"])
    np.testing.assert_array_equal(by_path["layer4_1/bn2/gamma"], state_dict["layer4.1.bn2.weight"])


def test_load_by_name_with_dataparallel_and_arm_names(state_dict):
    # An ARM checkpoint: DataParallel's `module.` + `features.N.` + arm/fc weights.
    renamed = {}
    sequential = {"conv1.": "features.0.", "bn1.": "features.1.", "layer1.": "features.4.",
                  "layer2.": "features.5.", "layer3.": "features.6.", "layer4.": "features.7."}
    for key, value in state_dict.items():
        for old, new in sequential.items():
            if key.startswith(old):
                key = new + key[len(old):]
        renamed["module." + key] = value
    renamed["module.arm.alpha"] = np.ones(1, np.float32)
    model = resnet18_backbone((32, 32, 3))
    with pytest.raises(ValueError, match="strict=False"):
        load_torch_state_dict(model, renamed)
    assert load_torch_state_dict(model, renamed, strict=False) == 100
    expected = convert_torch_state_dict(state_dict)
    for variable, array in zip(model.weights, expected):
        np.testing.assert_array_equal(variable.numpy(), array)


def test_missing_and_malformed_keys(state_dict):
    incomplete = {k: v for k, v in state_dict.items() if k != "layer2.1.conv2.weight"}
    with pytest.raises(ValueError, match="layer2_1/conv2/kernel"):
        convert_torch_state_dict(incomplete)
    bad = dict(state_dict)
    bad["conv1.weight"] = bad["conv1.weight"][0]
    with pytest.raises(ValueError, match="4D"):
        convert_torch_state_dict(bad)


def test_weights_file_round_trip(tmp_path, resnet64, state_dict):
    resnet64.set_weights(convert_torch_state_dict(state_dict))
    path = tmp_path / "resnet18.weights.h5"
    resnet64.save_weights(path)
    loaded = resnet18_backbone((64, 64, 3), weights=path)
    x = np.random.default_rng(2).normal(size=(1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(resnet64(x)), atol=1e-6)


def test_weights_argument_is_checked(tmp_path):
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        resnet18_backbone((64, 64, 3), weights="resnet18.pth")
    with pytest.raises(FileNotFoundError):
        resnet18_backbone((64, 64, 3), weights=tmp_path / "missing.weights.h5")
    with pytest.raises(ValueError, match="input_shape"):
        resnet18_backbone((64, 64))


def test_landmark_cnn_table1_shapes():
    model = landmark_cnn_backbone()
    assert model.output_shape == (None, 7, 7, 512)
    expected_outputs = {"conv1": (220, 220, 32), "pool1": (110, 110, 32), "conv2": (108, 108, 64),
                        "pool2": (54, 54, 64), "conv3": (52, 52, 128), "pool3": (26, 26, 128),
                        "conv4": (24, 24, 256), "pool4": (12, 12, 256), "conv5": (10, 10, 512),
                        "conv6": (7, 7, 512)}
    for name, shape in expected_outputs.items():
        assert model.get_layer(name).output.shape[1:] == shape, name
    kernels = [(32, 5, 1), (64, 3, 32), (128, 3, 64), (256, 3, 128), (512, 3, 256), (512, 4, 512)]
    assert model.count_params() == sum(o * k * k * i + o for o, k, i in kernels)


def test_landmark_cnn_small_input_and_validation():
    model = landmark_cnn_backbone((128, 128, 1))
    assert model(np.zeros((2, 128, 128, 1), np.float32)).shape == (2, 1, 1, 512)
    with pytest.raises(ValueError, match="at least 128"):
        landmark_cnn_backbone((112, 112, 1))
