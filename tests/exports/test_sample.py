"""The calibration and parity samples of an export are drawn from the whole split, not its first samples."""

import numpy as np
import pytest
import tensorflow as tf

from fer_keras.exports.tflite import sample


def _ordered(n, batch=64, as_dict=False):
    """A batched (x, y) dataset in a fixed order, as a subject-ordered split reads: x = y = the sample's index."""
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(n)
    return tf.data.Dataset.from_tensor_slices(({"images": x, "flow": -x} if as_dict else x, y)).batch(batch)


def test_the_sample_spans_the_whole_dataset_in_its_order():
    x, y = sample(_ordered(2000), 200)
    assert x.shape == (200, 3) and y.shape == (200,)
    assert len(set(y.tolist())) == 200 and np.all(np.diff(y) > 0)  # no repeats, in the dataset's order
    np.testing.assert_array_equal(x[:, 0], y)  # inputs stay with their labels
    # Uniform over the 2000: each quarter holds about 50 of the 200 (binomial sd 6).
    counts = np.bincount(y // 500, minlength=4)
    assert counts.min() >= 25 and counts.max() <= 75, counts


def test_the_sample_is_the_same_every_time_and_changes_with_the_seed():
    first, again, other = sample(_ordered(1000), 50)[1], sample(_ordered(1000), 50)[1], sample(_ordered(1000), 50, seed=1)[1]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_small_dataset_gives_every_sample():
    x, y = sample(_ordered(30, batch=8), 200)
    np.testing.assert_array_equal(y, np.arange(30))


def test_several_inputs_are_sampled_together():
    x, y = sample(_ordered(500, as_dict=True), 40)
    assert set(x) == {"images", "flow"} and x["images"].shape == (40, 3)
    np.testing.assert_array_equal(x["images"][:, 0], y)
    np.testing.assert_array_equal(x["flow"][:, 0], -y)


def test_an_empty_dataset_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        sample(_ordered(0), 10)


def test_a_byte_budget_caps_the_sample():
    x, y = sample(_ordered(1000), 500, max_bytes=100 * 3 * 4)  # 100 samples of three float32 values
    assert x.shape == (100, 3) and len(set(y.tolist())) == 100
    assert y.max() >= 500  # still drawn from the whole dataset
