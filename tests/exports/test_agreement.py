"""Top-1 agreement statistics reported with every quantised export."""
import numpy as np
import pytest
from scipy import stats

from fer_keras.exports.tflite import agreement, wilson_interval


@pytest.mark.parametrize("k, n", [(97, 100), (485, 500), (0, 10), (10, 10), (193, 200)])
def test_wilson_interval_matches_scipy(k, n):
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected.low, abs=1e-4)
    assert high == pytest.approx(expected.high, abs=1e-4)
    assert low <= k / n <= high


def test_agreement_counts_disagreements_and_ties():
    ref = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.30, 0.31, 0.39], [0.5, 0.3, 0.2]])
    # Sample 1 flips (class 2 wins); sample 2 is an exact tie between classes 1 and 2 after rounding, so
    # argmax takes class 1 and disagrees with the float model; sample 3 ties below the top, which is no top-1 tie.
    got = np.array([[0.6, 0.3, 0.1], [0.1, 0.4, 0.5], [0.30, 0.35, 0.35], [0.6, 0.2, 0.2]])
    stats_ = agreement(ref, got)
    assert stats_["top1_agreement"] == pytest.approx(0.5)
    assert stats_["top1_ties"] == 1
    assert stats_["disagreements_at_ties"] == 1
    low, high = stats_["top1_agreement_95ci"]
    assert low < 0.5 < high


def test_agreement_on_the_decisions_float_is_sure_of():
    # Float top-1 probabilities 0.7, 0.5, 0.39, 0.5: samples 0, 1 and 3 reach 0.5; of those, sample 1 flips.
    ref = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.30, 0.31, 0.39], [0.5, 0.3, 0.2]])
    got = np.array([[0.6, 0.3, 0.1], [0.1, 0.4, 0.5], [0.40, 0.35, 0.25], [0.6, 0.2, 0.2]])
    sure = agreement(ref, got)["confident"]
    assert sure["threshold"] == 0.5
    assert sure["share"] == pytest.approx(0.75)
    assert sure["top1_agreement"] == pytest.approx(2 / 3)
    assert sure["top1_agreement_95ci"] == pytest.approx(list(wilson_interval(2, 3)))
    unsure = agreement(np.full((2, 3), 1 / 3), got[:2])["confident"]
    assert unsure["share"] == 0 and unsure["top1_agreement"] is None
