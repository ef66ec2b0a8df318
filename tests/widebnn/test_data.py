"""Built-in data sets: shapes, determinism, the stated generating formulas, errors."""

import jax
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from widebnn import data


def test_toy_regression_formula_and_grid():
    x, y, x_test, f_test = data.toy_regression(50, jax.random.key(0), n_test=11,
                                               noise_std=0.0)  # fmt: skip
    assert x.shape == y.shape == (50, 1) and x_test.shape == f_test.shape == (11, 1)
    assert np.all(np.abs(np.asarray(x)) <= 2.0)
    np.testing.assert_allclose(y, np.sin(3 * np.asarray(x)) + np.asarray(x) / 2)
    np.testing.assert_allclose(x_test[:, 0], np.linspace(-2.5, 2.5, 11))


@pytest.mark.parametrize("d_in", [1, 4, 16])
def test_teacher_regression_formula(d_in):
    """y = sin(2 x.a) + x1 x2 / 4 + noise for one unit vector a: a is found from the
    noise-free test values (Stein's lemma, E[x sin(2 x.a)] = 2 e^-2 a, gives a
    start; least squares refines it), then the same a must explain the test values
    to rounding and the training targets up to N(0, 0.1^2) noise."""
    x, y, x_test, f_test = data.teacher_regression(
        400, jax.random.key(1), d_in=d_in, noise_std=0.1, n_test=2000
    )
    assert x.shape == (400, d_in) and y.shape == (400, 1)
    assert x_test.shape == (2000, d_in) and f_test.shape == (2000, 1)
    xt, ft = np.asarray(x_test, float), np.asarray(f_test, float)[:, 0]
    s = ft - _product(xt)  # sin(2 x.a) by the stated formula
    start = xt.T @ s / len(s) / (2 * np.exp(-2))
    fit = scipy.optimize.least_squares(
        lambda a: np.sin(2 * xt @ a) - s, start, xtol=1e-14, ftol=1e-14
    )
    a = fit.x
    np.testing.assert_allclose(np.linalg.norm(a), 1.0, atol=1e-8)
    np.testing.assert_allclose(np.sin(2 * xt @ a), s, atol=1e-8)
    inputs = np.asarray(x, float)
    noise = np.asarray(y)[:, 0] - np.sin(2 * inputs @ a) - _product(inputs)
    # 5-sigma bounds on the sample sd and mean of 400 N(0, 0.1^2) draws.
    assert abs(noise.std() - 0.1) < 5 * 0.1 / np.sqrt(2 * 400)
    assert abs(noise.mean()) < 5 * 0.1 / np.sqrt(400)


def _product(x):
    second = x[:, 1] if x.shape[1] > 1 else x[:, 0]
    return x[:, 0] * second / 4


def test_teacher_regression_is_deterministic_and_keyed():
    a = data.teacher_regression(8, jax.random.key(2), d_in=3)
    b = data.teacher_regression(8, jax.random.key(2), d_in=3)
    c = data.teacher_regression(8, jax.random.key(3), d_in=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n": 0}, "n"),
        ({"d_in": 0}, "d_in"),
        ({"d_in": 2.0}, "d_in"),
        ({"n_test": -1}, "n_test"),
        ({"noise_std": -0.1}, "noise_std"),
    ],
)
def test_teacher_regression_bad_arguments(kwargs, name):
    args = {"n": 4} | kwargs
    n = args.pop("n")
    with pytest.raises(ValueError, match=name):
        data.teacher_regression(n, jax.random.key(0), **args)


GENERATORS = {
    "toy_regression": lambda key: data.toy_regression(12, key, noise_std=0.3, n_test=7),
    "teacher_regression": lambda key: data.teacher_regression(
        12, key, d_in=3, noise_std=0.3, n_test=7
    ),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_points_in_float32_and_float64(name):
    """The same key gives the same data in both precisions, up to rounding to
    float32 (the generators draw in float64 and cast): float32 draws of their own
    would differ in every value."""
    wide = GENERATORS[name](jax.random.key(4))
    with jax.enable_x64(False):
        narrow = GENERATORS[name](jax.random.key(4))
    assert {a.dtype for a in wide} == {np.dtype(np.float64)}
    assert {a.dtype for a in narrow} == {np.dtype(np.float32)}
    for a, b in zip(wide, narrow, strict=True):
        np.testing.assert_array_equal(np.asarray(a).astype(np.float32), b)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_are_deterministic_and_keyed(name):
    a = GENERATORS[name](jax.random.key(2))
    b = GENERATORS[name](jax.random.key(2))
    c = GENERATORS[name](jax.random.key(3))
    for first, second in zip(a, b, strict=True):
        np.testing.assert_array_equal(first, second)
    assert not np.allclose(a[0], c[0]) and not np.allclose(a[1], c[1])
    # a raw uint32 key with the same bits gives the same data
    legacy = GENERATORS[name](jax.random.PRNGKey(2))
    for first, second in zip(a, legacy, strict=True):
        np.testing.assert_array_equal(first, second)


def test_toy_regression_noise_and_inputs_law():
    """x ~ U(-2, 2): KS test; y - f(x) ~ N(0, 0.3^2): KS test (false-alarm rate
    1e-3 each, 2000 points)."""
    x, y = data.toy_regression(2000, jax.random.key(5), noise_std=0.3)
    x, y = np.asarray(x)[:, 0], np.asarray(y)[:, 0]
    assert scipy.stats.kstest(x, scipy.stats.uniform(-2, 4).cdf).pvalue > 1e-3
    noise = y - np.sin(3 * x) - x / 2
    assert scipy.stats.kstest(noise, scipy.stats.norm(0, 0.3).cdf).pvalue > 1e-3


@pytest.mark.parametrize("key", [0, np.zeros(3, np.uint32), "seed"])
def test_bad_key_is_a_type_error(key):
    with pytest.raises(TypeError, match="key"):
        data.toy_regression(4, key)
    with pytest.raises(TypeError, match="key"):
        data.teacher_regression(4, key)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"n": 0}, "n"), ({"n_test": -1}, "n_test"), ({"n": 2.0}, "n"),
     ({"noise_std": float("nan")}, "noise_std"), ({"noise_std": -1.0}, "noise_std")],
)  # fmt: skip
def test_toy_regression_bad_arguments(kwargs, name):
    args = {"n": 4} | kwargs
    n = args.pop("n")
    with pytest.raises(ValueError, match=name):
        data.toy_regression(n, jax.random.key(0), **args)


def test_noise_std_of_the_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="noise_std"):
        data.toy_regression(4, jax.random.key(0), noise_std="0.1")
    with pytest.raises(TypeError, match="noise_std"):
        data.teacher_regression(4, jax.random.key(0), noise_std=None)
