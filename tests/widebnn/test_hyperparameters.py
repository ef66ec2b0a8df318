"""The marginal likelihood and ``widebnn.gp.fit_hyperparameters`` against numpy.

Oracles: the numpy ReLU NNGP recursion of ``relu_gp_oracle`` feeding a numpy log
marginal likelihood, its central finite differences, and ``scipy.optimize``'s
Nelder-Mead optimum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from _helpers import TraceCounter
from relu_gp_oracle import B_STD, W_STD, data as _data, relu_kernels_numpy, relu_network

from widebnn import gp


def _numpy_log_ml(log_params, x, y, depth):
    w_std, b_std, noise = np.exp(log_params)
    k = relu_kernels_numpy(x, None, w_std, b_std, depth)[0] + noise * np.eye(len(x))
    chol = np.linalg.cholesky(k)
    alpha = np.linalg.solve(k, y)
    return -(
        0.5 * np.sum(y * alpha)
        + y.shape[1] * np.sum(np.log(np.diag(chol)))
        + 0.5 * y.size * np.log(2 * np.pi)
    )


def _architecture(depth):
    def build(p):
        return relu_network(p["W_std"], p["b_std"], depth=depth)

    return build


def test_log_marginal_likelihood_gradient_is_finite_and_correct():
    """Deep ReLU, duplicated inputs (c = q exactly): the arc-cosine NaN trap."""
    x, _, y = _data(n=10, seed=8)
    x = np.concatenate([x, x[:2]])
    y = np.concatenate([y, y[:2] + 0.01])
    depth = 3

    def log_ml(log_params, x, y):
        w_std, b_std, noise = jnp.exp(log_params)
        net = relu_network(w_std, b_std, depth=depth)
        return gp.log_marginal_likelihood(net, x, y, noise_var=noise)

    log_params = np.log([W_STD, B_STD, 0.05])
    value, grad = jax.jit(jax.value_and_grad(log_ml))(log_params, x, y)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(
        value, _numpy_log_ml(log_params, x, y, depth), rtol=1e-10
    )
    step = 1e-5
    numeric = [
        (
            _numpy_log_ml(log_params + step * e, x, y, depth)
            - _numpy_log_ml(log_params - step * e, x, y, depth)
        )
        / (2 * step)
        for e in np.eye(3)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_log_marginal_likelihood_traces_once():
    net = relu_network()
    counted = TraceCounter(
        lambda x, y: gp.log_marginal_likelihood(net, x, y, noise_var=0.1)
    )
    jitted = jax.jit(counted)
    for seed in range(3):
        x, _, y = _data(seed=seed)
        assert np.isfinite(jitted(x, y))
    assert counted.count == 1


def test_fit_hyperparameters_reaches_the_scipy_optimum():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(20, 1))
    y = np.sin(2 * x) + 0.1 * rng.normal(size=(20, 1))
    depth = 2
    start = {"W_std": 1.0, "b_std": 0.7, "noise_var": 0.1}
    log_start = np.log([start["W_std"], start["b_std"], start["noise_var"]])
    reference = scipy.optimize.minimize(
        lambda p: -_numpy_log_ml(p, x, y, depth),
        log_start,
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 4000},
    )
    fit = gp.fit_hyperparameters(
        _architecture(depth),
        start,
        x,
        y,
        optimizer=optax.adam(0.05),
        steps=300,
        progress=False,
    )
    np.testing.assert_allclose(fit.log_marginal_likelihood, -reference.fun, atol=1e-6)
    fitted = np.log([fit.params[k] for k in ("W_std", "b_std", "noise_var")])
    np.testing.assert_allclose(fitted, reference.x, atol=1e-3)
    history = fit.history
    assert history["log_marginal_likelihood"].shape == (301,)
    assert history["W_std"].shape == (301,) and history["step"][-1] == 300
    assert history["log_marginal_likelihood"][0] == pytest.approx(
        _numpy_log_ml(log_start, x, y, depth), rel=1e-10
    )
    assert history["log_marginal_likelihood"][-1] == fit.log_marginal_likelihood


def test_fit_hyperparameters_stops_on_non_finite_likelihood():
    x, _, y = _data(seed=9)

    def broken(p):
        def kernel(x1, x2, get):
            x2 = x1 if x2 is None else x2
            return tuple(-p["scale"] * (x1 @ x2.T + 1.0) for _ in get)  # not PSD

        return kernel

    with pytest.raises(FloatingPointError, match="step 0"):
        gp.fit_hyperparameters(
            broken, {"scale": 1.0, "noise_var": 1e-3}, x, y, steps=3, progress=False
        )
