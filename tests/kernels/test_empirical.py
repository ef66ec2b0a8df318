"""Empirical (finite-width) kernels against explicit Jacobians and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from widebnn import kernels


def _setup(shape=(4, 3)):
    net = kernels.serial(
        kernels.Dense(6, 1.2, 0.3), kernels.Erf(), kernels.Dense(2, 0.9, 0.1)
    )
    x = jax.random.normal(jax.random.key(0), shape)
    _, params = net.init(jax.random.key(1), x.shape)
    return net, params, x


def _explicit_ntk(net, params, x1, x2):
    """Flattened parameters, full Jacobian matrix, contracted with numpy."""
    flat, unravel = ravel_pytree(params)

    def jac(x):
        j = jax.jacfwd(lambda p: net.apply(unravel(p), x))(flat)
        return np.asarray(j)  # (N, C, P)

    j1, j2 = jac(x1), jac(x2)
    return np.einsum("ncp,mcp->nm", j1, j2) / j1.shape[1]


@pytest.mark.parametrize("implementation", ["jacobian", "vjp_jvp"])
def test_empirical_ntk_matches_explicit_jacobian(implementation):
    net, params, x1 = _setup()
    x2 = jax.random.normal(jax.random.key(2), (3, 3))
    expected = _explicit_ntk(net, params, x1, x2)
    ntk = kernels.empirical_ntk(
        net.apply, params, x1, x2, implementation=implementation
    )
    np.testing.assert_allclose(ntk, expected, rtol=1e-12)
    same = kernels.empirical_ntk(net.apply, params, x1, implementation=implementation)
    np.testing.assert_allclose(same, _explicit_ntk(net, params, x1, x1), rtol=1e-12)


def test_implementations_agree_on_spatial_outputs():
    net = kernels.serial(kernels.Dense(5, 1.1, 0.2), kernels.Relu(), kernels.Dense(3))
    x = jax.random.normal(jax.random.key(0), (2, 4, 3))
    _, params = net.init(jax.random.key(1), x.shape)
    a = kernels.empirical_ntk(net.apply, params, x)
    b = kernels.empirical_ntk(net.apply, params, x, implementation="vjp_jvp")
    assert a.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    diag = kernels.empirical_ntk(net.apply, params, x, diagonal_spatial=True)
    np.testing.assert_allclose(diag, np.einsum("nmaa->nma", a), rtol=1e-12)


def test_empirical_nngp_is_output_inner_product():
    net, params, x = _setup()
    y = np.asarray(net.apply(params, x))
    np.testing.assert_allclose(
        kernels.empirical_nngp(net.apply, params, x), y @ y.T / 2, rtol=1e-13
    )


def test_bad_arguments():
    net, params, x = _setup()
    with pytest.raises(ValueError, match="implementation"):
        kernels.empirical_ntk(net.apply, params, x, implementation="fast")
    with pytest.raises(ValueError, match="n_samples"):
        kernels.monte_carlo_kernel(net, jax.random.key(0), 0)
    with pytest.raises(ValueError, match="batch_size"):
        kernels.monte_carlo_kernel(net, jax.random.key(0), 4, batch_size=-1)
    with pytest.raises(ValueError, match="apply_fn"):
        kernels.empirical_nngp(lambda p, x: jnp.sum(x, -1), params, x)


def test_monte_carlo_is_deterministic_and_batch_independent():
    net, _, x = _setup()
    a = kernels.monte_carlo_kernel(net, jax.random.key(5), 8, 8)(x)
    b = kernels.monte_carlo_kernel(net, jax.random.key(5), 8, 3)(x)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12)
