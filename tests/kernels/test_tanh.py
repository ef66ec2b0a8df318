"""``Tanh``: its quadrature dual against nested adaptive quadrature by scipy."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
from widebnn.kernels import _tanh

from widebnn import kernels


def _normal_pdf(z):
    return np.exp(-(z**2) / 2) / np.sqrt(2 * np.pi)


def _quad(fn, lo, hi, points=None):
    with warnings.catch_warnings():
        # quad warns about round-off at the requested 1e-13; it still returns the
        # best value it reached, far more accurate than the rule under test
        warnings.simplefilter("ignore", scipy.integrate.IntegrationWarning)
        return scipy.integrate.quad(
            fn, lo, hi, points=points, limit=400, epsabs=1e-15, epsrel=1e-13
        )[0]


def gaussian_expectation_scipy(f, c, q1, q2):
    """E[f(u) f(v)], (u, v) ~ N(0, [[q1, c], [c, q2]]): u = sqrt(q1) z1, then
    v | u ~ N(c z1 / sqrt(q1), q2 - c^2 / q1), both integrals by adaptive quad on
    [-12, 12] standard deviations, split where the argument of f crosses 0."""
    s1 = np.sqrt(q1)
    slope = c / s1
    s2 = np.sqrt(max(q2 - slope**2, 0.0))

    def inner(z1):
        if s2 < 1e-12 * np.sqrt(q2):
            return f(slope * z1)
        cross = -slope * z1 / s2
        points = [cross] if abs(cross) < 12 else None
        return _quad(lambda z: f(slope * z1 + s2 * z) * _normal_pdf(z), -12, 12, points)

    return _quad(lambda z: f(s1 * z) * inner(z) * _normal_pdf(z), -12, 12, [0.0])


def _tanh_prime(x):
    return 1 - np.tanh(x) ** 2


# (q1, q2): variances from small to saturating; correlations from -1 to 1
VARIANCES = [(0.05, 0.05), (1.0, 1.0), (0.3, 8.0), (25.0, 25.0)]
CORRELATIONS = [-1.0, -0.6, 0.0, 0.7, 0.995, 1.0]
# the accuracy stated in Tanh's docstring for variances up to 30 (measured max
# 5e-9 NNGP, 4.3e-8 NTK factor), with a factor of 2 of headroom
TOLERANCE = {"nngp": 1e-8, "ntk": 1e-7}


@pytest.mark.parametrize("q1, q2", VARIANCES)
def test_tanh_dual_matches_scipy_quadrature(q1, q2):
    c = np.array([r * np.sqrt(q1 * q2) for r in CORRELATIONS])
    duals = {
        "nngp": (_tanh._tanh_nngp, np.tanh),
        "ntk": (_tanh._tanh_d_nngp, _tanh_prime),
    }
    for name, (dual, f) in duals.items():
        got = np.asarray(dual(jnp.asarray(c), jnp.asarray(q1), jnp.asarray(q2)))
        expected = np.array([gaussian_expectation_scipy(f, ci, q1, q2) for ci in c])
        scale = np.sqrt(
            gaussian_expectation_scipy(f, q1, q1, q1)
            * gaussian_expectation_scipy(f, q2, q2, q2)
        )
        np.testing.assert_allclose(
            got, expected, rtol=0, atol=TOLERANCE[name] * scale, err_msg=name
        )


def test_tanh_network_kernel_and_finite_network():
    """One hidden layer: the kernel is the readout applied to the dual at the
    Dense covariances (computed here by scipy), and ``apply`` is tanh."""
    w_std, b_std = 1.5, 0.2
    net = kernels.serial(
        kernels.Dense(16, w_std, b_std), kernels.Tanh(), kernels.Dense(1, 1.0, 0.0)
    )
    x = np.array([[1.0, -0.5], [0.3, 2.0]])
    k = w_std**2 * x @ x.T / 2 + b_std**2
    nngp, ntk = net.kernel(x, get=("nngp", "ntk"))
    expected = np.array(
        [
            [
                gaussian_expectation_scipy(np.tanh, k[i, j], k[i, i], k[j, j])
                for j in (0, 1)
            ]
            for i in (0, 1)
        ]
    )
    deriv = np.array(
        [
            [
                gaussian_expectation_scipy(_tanh_prime, k[i, j], k[i, i], k[j, j])
                for j in (0, 1)
            ]
            for i in (0, 1)
        ]
    )
    np.testing.assert_allclose(nngp, expected, rtol=1e-8)
    np.testing.assert_allclose(ntk, expected + deriv * k, rtol=1e-7)
    assert net.kernel(x, x, get="nngp")[0, 1] == pytest.approx(float(nngp[0, 1]))
    layer = kernels.Tanh()
    values = jnp.linspace(-3.0, 3.0, 7)[:, None]
    np.testing.assert_array_equal(layer.apply((), values), jnp.tanh(values))
    assert layer.name == "Tanh"


def test_tanh_kernel_gradient_is_finite_at_equal_inputs():
    x = jnp.array([[0.4, -1.0], [0.4, -1.0], [1.0, 0.2]])

    def total(w_std):
        net = kernels.serial(
            kernels.Dense(8, w_std, 0.1), kernels.Tanh(), kernels.Dense(1)
        )
        return jnp.sum(net.kernel(x, get="ntk"))

    grad = jax.jit(jax.grad(total))(1.3)
    step = 1e-5
    value = jax.jit(total)
    numeric = (value(1.3 + step) - value(1.3 - step)) / (2 * step)
    assert np.isfinite(grad)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6)
