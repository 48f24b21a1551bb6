import numpy as np
import pytest

import keras

from fer_keras.training.adabelief import AdaBelief


def numpy_adabelief(w, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-16, wd=0.0):
    """Zhuang et al. 2020, Algorithm 2, with decoupled weight decay, in float64."""
    w = np.asarray(w, np.float64).copy()
    m = np.zeros_like(w)
    s = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        w = w - lr * wd * w
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps
        m_hat = m / (1 - b1**t)
        s_hat = s / (1 - b2**t)
        w = w - lr * m_hat / (np.sqrt(s_hat) + eps)
    return w


W0 = np.array([1.0, -2.0, 0.5], np.float32)
G1 = np.array([0.1, -0.3, 0.02], np.float32)
G2 = np.array([-0.2, -0.1, 0.4], np.float32)


def run(optimizer, grads):
    var = keras.Variable(W0)
    for g in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
    return keras.ops.convert_to_numpy(var)


def test_defaults_are_paper_003_table4():
    opt = AdaBelief()
    assert (opt.epsilon, opt.beta_1, opt.beta_2, opt.weight_decay) == (1e-16, 0.9, 0.999, 1e-2)
    assert float(opt.learning_rate) == pytest.approx(1e-3)


def test_one_step_by_hand_without_weight_decay():
    # Step 1: m = 0.1 g, s = 0.001 (0.9 g)^2 + eps, m_hat = g, s_hat = 0.81 g^2 + 1000 eps,
    # so the step is lr * g / (0.9 |g|) = lr / 0.9 in the direction of -sign(g).
    expected = W0 - 1e-3 / 0.9 * np.sign(G1)
    np.testing.assert_allclose(run(AdaBelief(weight_decay=None), [G1]), expected, rtol=1e-6)
    np.testing.assert_allclose(run(AdaBelief(weight_decay=0.0), [G1]), expected, rtol=1e-6)


def test_one_step_by_hand_with_weight_decay():
    expected = W0 * (1 - 1e-3 * 1e-2) - 1e-3 / 0.9 * np.sign(G1)
    np.testing.assert_allclose(run(AdaBelief(), [G1]), expected, rtol=1e-6)


def test_two_steps_by_hand():
    # Step 2 for the first weight, by hand (lr 1e-3, no decay):
    # m1 = 0.01, s1 = 0.001 * 0.09^2 = 8.1e-6
    # m2 = 0.9 * 0.01 + 0.1 * (-0.2) = -0.011
    # s2 = 0.999 * 8.1e-6 + 0.001 * (-0.2 + 0.011)^2 = 4.380291e-05
    # m_hat = -0.011 / 0.19 = -0.0578947...; s_hat = 4.380291e-05 / 0.001999 = 0.0219124...
    # step 2 = 1e-3 * m_hat / sqrt(s_hat) = -3.91105e-4
    w1 = 1.0 - 1e-3 / 0.9
    expected_first = w1 + 3.911049e-4
    out = run(AdaBelief(weight_decay=None), [G1, G2])
    assert out[0] == pytest.approx(expected_first, rel=1e-6)
    np.testing.assert_allclose(out, numpy_adabelief(W0, [G1, G2]), rtol=1e-6)


def test_two_steps_with_weight_decay_and_other_hyperparameters():
    kwargs = dict(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-8, weight_decay=0.1)
    out = run(AdaBelief(**kwargs), [G1, G2])
    expected = numpy_adabelief(W0, [G1, G2], lr=0.01, b1=0.8, b2=0.99, eps=1e-8, wd=0.1)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # Weight decay must make a difference (so the test can fail).
    assert not np.allclose(out, numpy_adabelief(W0, [G1, G2], lr=0.01, b1=0.8, b2=0.99, eps=1e-8))


def test_epsilon_is_inside_the_belief():
    # Algorithm 2 adds epsilon to s_t itself (and again to the denominator); with a large
    # epsilon and a constant gradient this differs clearly from epsilon in the denominator only.
    g = np.array([0.3, 0.3, 0.3], np.float32)
    out = run(AdaBelief(learning_rate=0.1, epsilon=1e-4, weight_decay=None), [g, g, g])
    np.testing.assert_allclose(out, numpy_adabelief(W0, [g, g, g], lr=0.1, eps=1e-4), rtol=1e-5)
    w, m, s = W0.astype(np.float64), 0.0, 0.0
    for t in (1, 2, 3):  # epsilon only in the denominator
        m = 0.9 * m + 0.1 * 0.3
        s = 0.999 * s + 0.001 * (0.3 - m) ** 2
        w = w - 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(s / (1 - 0.999**t)) + 1e-4)
    assert np.abs(out - w).max() > 1e-3


def test_serialization_round_trip():
    opt = AdaBelief(learning_rate=5e-4, epsilon=1e-12, weight_decay=1e-3, clipnorm=1.0)
    config = opt.get_config()
    restored = AdaBelief.from_config(config)
    assert restored.get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(restored, AdaBelief)
    assert restored.get_config() == config


def test_fit_and_keras_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=10, decay_rate=0.9)
    model.compile(optimizer=AdaBelief(learning_rate=schedule), loss="mse")
    before = [w.copy() for w in model.get_weights()]
    model.fit(rng.normal(size=(8, 4)), rng.normal(size=(8, 3)), batch_size=4, verbose=0)
    assert all(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, AdaBelief)
    assert int(loaded.optimizer.iterations.numpy()) == 2


@pytest.mark.parametrize(
    "kwargs,match",
    [({"beta_1": 1.0}, "beta_1"), ({"beta_2": -0.1}, "beta_2"), ({"epsilon": -1.0}, "epsilon"),
     ({"weight_decay": -0.1}, "weight_decay"), ({"learning_rate": -1.0}, "learning_rate")],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaBelief(**kwargs)
