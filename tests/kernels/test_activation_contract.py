"""Contract tests shared by every activation in ``layer_cases.ACTIVATIONS``.

Oracle: Monte Carlo of the finite network built from the same layer. For the
network ``Dense(n) -> activation`` (and with a ``Dense(1)`` readout for the NTK) the
finite-width empirical kernels are *unbiased* estimates of the analytic kernels at
every width, because the first layer's pre-activations are exactly Gaussian and the
readout weights are independent of them. So the only error is Monte Carlo noise, and
the tolerance is a Bonferroni-corrected Student-t multiple of the standard error
estimated from the samples themselves (false alarm rate 1e-4 per test).

Power: with width 1024 and 48 samples the standard errors are below 1 % of the
kernel entries for every activation here, so a 5 % error in a kernel formula fails
the test (|error| / stderr > 5 > the bound of about 4.6 for 30 entries).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import (
    TraceCounter,
    assert_symmetric_psd,
    assert_within_stderr,
    slow_except_first,
    slow_unless,
)
from layer_cases import ACTIVATIONS

from widebnn import kernels

WIDTH = 1024
N_SAMPLES = 48
PARAMETERIZATIONS = ("ntk", "standard")
# activations with a finite network to sample (the table says which)
FINITE = sorted(name for name, case in ACTIVATIONS.items() if case.has_finite)


def _inputs(case, n=4, d=3, seed=0):
    x = jax.random.normal(jax.random.key(seed), (n, d)) * case.input_std
    # an exact duplicate, to hit the diagonal of the cross kernel (c = q)
    return jnp.concatenate([x, x[:1]], axis=0)


def _hidden(parameterization, W_std=1.3, b_std=0.4):
    return kernels.Dense(WIDTH, W_std, b_std, parameterization=parameterization)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("name", slow_except_first(FINITE))
def test_nngp_matches_monte_carlo(name, parameterization):
    case = ACTIVATIONS[name]
    x1 = _inputs(case)
    x2 = _inputs(case, n=3, seed=1)
    net = kernels.serial(_hidden(parameterization), case.make())
    expected = net.kernel(x1, x2, get="nngp")
    mc = kernels.monte_carlo_kernel(net, jax.random.key(42), N_SAMPLES, 16)
    estimate, stderr = mc(x1, x2, get="nngp", return_stderr=True)
    assert_within_stderr(estimate, stderr, expected, dof=N_SAMPLES - 1, name=name)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("name", slow_except_first(FINITE))
def test_ntk_matches_monte_carlo(name, parameterization):
    case = ACTIVATIONS[name]
    x1 = _inputs(case)
    net = kernels.serial(
        _hidden(parameterization),
        case.make(),
        kernels.Dense(1, 0.9, 0.2, parameterization=parameterization),
    )
    expected = net.kernel(x1, get="ntk")
    mc = kernels.monte_carlo_kernel(net, jax.random.key(7), N_SAMPLES, 16)
    estimate, stderr = mc(x1, get="ntk", return_stderr=True)
    assert_within_stderr(estimate, stderr, expected, dof=N_SAMPLES - 1, name=name)


def _net(case):
    return kernels.serial(
        kernels.Dense(16, 1.2, 0.3), case.make(), kernels.Dense(16, 0.8, 0.1)
    )


@pytest.mark.parametrize("name", slow_unless(sorted(ACTIVATIONS)))
def test_symmetric_psd_finite_and_consistent(name):
    case = ACTIVATIONS[name]
    net = _net(case)
    x1 = _inputs(case, n=6)
    x2 = _inputs(case, n=3, seed=3)
    get = ("nngp", "ntk") if case.has_ntk else ("nngp",)
    full = net.kernel(jnp.concatenate([x1, x2]), get=get)
    same = net.kernel(x1, x1, get=get)
    alone = net.kernel(x1, get=get)
    cross = net.kernel(x1, x2, get=get)
    cov1 = net.kernel(x1, x2, get="cov1")
    n1 = x1.shape[0]
    for i, which in enumerate(get):
        assert np.all(np.isfinite(full[i])), which
        assert_symmetric_psd(full[i], name=f"{name} {which}")
        np.testing.assert_allclose(alone[i], same[i], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(cross[i], full[i][:n1, n1:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov1, np.diag(full[0])[:n1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", slow_unless(sorted(ACTIVATIONS)))
def test_gradients_finite(name):
    """Gradients w.r.t. hyperparameters and inputs, at x1 == x2 and at zero inputs."""
    case = ACTIVATIONS[name]
    get = "ntk" if case.has_ntk else "nngp"

    def total(W_std, b_std, x):
        net = kernels.serial(
            kernels.Dense(8, W_std, b_std), case.make(), kernels.Dense(1, W_std, b_std)
        )
        return jnp.sum(net.kernel(x, get=get))

    x = _inputs(case)
    for inputs in (x, jnp.zeros_like(x)):
        grads = jax.grad(total, argnums=(0, 1, 2))(1.1, 0.3, inputs)
        for g in jax.tree.leaves(grads):
            assert np.all(np.isfinite(g)), f"{name}: non-finite gradient"


@pytest.mark.parametrize("name", slow_unless(sorted(ACTIVATIONS)))
def test_jit_traces_once_and_keeps_dtype(name):
    case = ACTIVATIONS[name]
    net = _net(case)
    get = ("nngp", "ntk") if case.has_ntk else ("nngp",)
    counted = TraceCounter(lambda a, b: net.kernel(a, b, get=get))
    fn = jax.jit(counted)
    for seed in range(3):
        out = fn(_inputs(case, seed=seed), _inputs(case, n=2, seed=seed + 10))
    assert counted.count == 1
    x32 = _inputs(case).astype(jnp.float32)
    for value in net.kernel(x32, get=get):
        assert value.dtype == jnp.float32
    assert out[0].dtype == jnp.float64


@pytest.mark.parametrize("name", slow_unless(sorted(ACTIVATIONS)))
def test_needs_gaussian_input(name):
    layer = ACTIVATIONS[name].make()
    with pytest.raises(ValueError, match="Gaussian"):
        layer.kernel(jnp.ones((2, 3)))
