"""vae_swap evaluation: paper 004's k-means++ protocol, eq. 6, AU R^2."""

import numpy as np
import pytest

from fer_keras.evaluation.vae_swap import au_r2, kmeans_accuracy, subtract_subject_mean


def _blobs(classes=7, per_class=20, dim=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + rng.normal(0, spread, (len(labels), dim)), labels


def test_well_separated_latents_give_full_accuracy_with_k_equal_classes():
    z, y = _blobs()
    mean, std, scores = kmeans_accuracy(z, y, k=7, trials=10)
    assert len(scores) == 10
    # k-means++ with one init can merge two blobs now and then; most trials are perfect.
    assert np.median(scores) == 1.0 and mean > 0.9


def test_k_larger_than_classes_still_labels_every_cluster():
    z, y = _blobs()
    mean, _, _ = kmeans_accuracy(z, y, k=9, trials=10)
    assert mean > 0.9  # split blobs keep their label through the nearest point


def test_random_latents_are_near_chance():
    rng = np.random.default_rng(0)
    mean, _, _ = kmeans_accuracy(rng.normal(size=(140, 8)), np.repeat(np.arange(7), 20), k=9, trials=5)
    assert mean < 0.45


def test_too_few_points_is_an_error():
    with pytest.raises(ValueError, match="at least k=9"):
        kmeans_accuracy(np.zeros((5, 2)), np.zeros(5), k=9)


def test_subject_mean_subtraction_eq6():
    z = np.array([[1.0, 1.0], [3.0, 1.0], [10.0, 0.0]])
    out = subtract_subject_mean(z, np.array(["a", "a", "b"]))
    np.testing.assert_allclose(out, [[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])


def test_au_r2_is_high_for_a_linear_code():
    rng = np.random.default_rng(0)
    aus = rng.uniform(0, 1, (200, 5))
    z = aus @ rng.normal(size=(5, 8))
    assert au_r2(z[:150], aus[:150], z[150:], aus[150:]) > 0.95


def test_the_protocols_chance_grows_as_the_images_get_few():
    """Each cluster is labelled by one of its own points: on 28 images k=9 scores far above 1/7 on pure noise."""
    from fer_keras.evaluation.vae_swap import chance_accuracy

    few = chance_accuracy(np.arange(28) % 7, 64, k=9, trials=50)
    many = chance_accuracy(np.arange(504) % 7, 64, k=9, trials=20)
    assert few > 0.30 and 0.13 < many < 0.17 and few > many + 0.15
