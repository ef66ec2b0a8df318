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


@pytest.mark.slow
def test_monte_carlo_is_deterministic_and_batch_independent():
    net, _, x = _setup()
    a = kernels.monte_carlo_kernel(net, jax.random.key(5), 8, 8)(x)
    b = kernels.monte_carlo_kernel(net, jax.random.key(5), 8, 3)(x)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12)


# ------------------------------------- Neural Tangents' calling convention


def _flat_jacobian(apply, params, x):
    """``(*f(x).shape, P)``: the Jacobian with respect to the flattened parameters."""
    flat, unravel = ravel_pytree(params)
    return np.asarray(jax.jit(jax.jacfwd(lambda p: apply(unravel(p), x)))(flat))


def _explicit_full_ntk(apply1, params, x1, x2, apply2=None):
    """``J1 J2^T`` with every output axis kept: ``(*f(x1).shape, *f(x2).shape)``."""
    j1 = _flat_jacobian(apply1, params, x1)
    j2 = _flat_jacobian(apply1 if apply2 is None else apply2, params, x2)
    return np.tensordot(j1, j2, axes=([-1], [-1]))


@pytest.mark.parametrize("implementation", [1, 2, "jacobian", "vjp_jvp", 3])
def test_empirical_ntk_fn_equals_empirical_ntk(implementation):
    net, params, x1 = _setup()
    x2 = jax.random.normal(jax.random.key(2), (3, 3))
    ntk_fn = kernels.empirical_ntk_fn(net.apply, implementation=implementation)
    np.testing.assert_allclose(
        ntk_fn(x1, x2, params),
        kernels.empirical_ntk(net.apply, params, x1, x2),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        ntk_fn(x1, None, params), _explicit_ntk(net, params, x1, x1), rtol=1e-12
    )


@pytest.mark.parametrize("implementation", [1, 2])
def test_empirical_ntk_fn_trace_and_diagonal_axes(implementation):
    """Output (N, L, C): every combination against the explicit full Jacobian
    product ``(N1, L1, C1, N2, L2, C2)``, traced/diagonalised with numpy."""
    net = kernels.serial(kernels.Dense(5, 1.1, 0.2), kernels.Erf(), kernels.Dense(3))
    x1 = jax.random.normal(jax.random.key(0), (2, 4, 3))
    x2 = jax.random.normal(jax.random.key(3), (3, 4, 3))
    _, params = net.init(jax.random.key(1), x1.shape)
    full = _explicit_full_ntk(net.apply, params, x1, x2)  # n l c m k d
    cases = {
        ((-1,), ()): np.einsum("nlcmkc->nmlk", full) / 3,
        ((), ()): np.einsum("nlcmkd->nmlkcd", full),
        ((2,), (1,)): np.einsum("nlcmlc->nml", full) / 3,
        ((1, 2), ()): np.einsum("nlcmlc->nm", full) / 12,
        ((-1,), (0,)): None,  # N1 != N2: refused below
    }
    for (trace, diagonal), expected in cases.items():
        ntk_fn = kernels.empirical_ntk_fn(
            net.apply,
            trace_axes=trace,
            diagonal_axes=diagonal,
            vmap_axes=0,
            implementation=implementation,
        )
        if expected is None:
            with pytest.raises(ValueError, match="agree on trace_axes"):
                ntk_fn(x1, x2, params)
            continue
        np.testing.assert_allclose(
            ntk_fn(x1, x2, params), expected, rtol=1e-11, atol=1e-13
        )
    # the default equals empirical_ntk's layout, also diagonal_spatial
    default = kernels.empirical_ntk_fn(net.apply, implementation=implementation)
    np.testing.assert_allclose(
        default(x1, x2, params),
        kernels.empirical_ntk(net.apply, params, x1, x2),
        rtol=1e-11,
        atol=1e-13,
    )
    diagonal = kernels.empirical_ntk_fn(net.apply, diagonal_axes=(1,))
    np.testing.assert_allclose(
        diagonal(x1, x2, params),
        kernels.empirical_ntk(net.apply, params, x1, x2, diagonal_spatial=True),
        rtol=1e-11,
        atol=1e-13,
    )
    # variances only, as in Neural Tangents' example: diagonal over the batch
    variances = kernels.empirical_ntk_fn(net.apply, trace_axes=(1, 2), diagonal_axes=0)
    own = np.einsum("nlcnlc->n", _explicit_full_ntk(net.apply, params, x1, x1)) / 12
    np.testing.assert_allclose(variances(x1, None, params), own, rtol=1e-11)


def test_empirical_fns_split_keyword_pairs_between_the_inputs():
    """``pattern=(p1, p2)`` reaches f(x1) and f(x2) as Neural Tangents does."""
    net = kernels.serial(kernels.Dense(4, 1.0, 0.1), kernels.Aggregate())
    x1 = jax.random.normal(jax.random.key(0), (2, 3, 2))
    x2 = jax.random.normal(jax.random.key(1), (1, 3, 2))
    p1 = jax.random.uniform(jax.random.key(2), (2, 3, 3))
    p2 = jax.random.uniform(jax.random.key(3), (1, 3, 3))
    _, params = net.init(jax.random.key(4), x1.shape)

    def apply1(p, x):
        return net.apply(p, x, pattern=p1)

    def apply2(p, x):
        return net.apply(p, x, pattern=p2)

    full = _explicit_full_ntk(apply1, params, x1, x2, apply2)
    ntk = kernels.empirical_ntk_fn(net.apply)(x1, x2, params, pattern=(p1, p2))
    np.testing.assert_allclose(ntk, np.einsum("nlcmkc->nmlk", full) / 4, rtol=1e-12)
    own = _explicit_full_ntk(apply1, params, x1, x1)
    same = kernels.empirical_ntk_fn(net.apply)(x1, None, params, pattern=(p1, None))
    np.testing.assert_allclose(same, np.einsum("nlcmkc->nmlk", own) / 4, rtol=1e-12)
    y1, y2 = np.asarray(apply1(params, x1)), np.asarray(apply2(params, x2))
    nngp = kernels.empirical_nngp_fn(net.apply)(x1, x2, params, pattern=(p1, p2))
    np.testing.assert_allclose(nngp, np.einsum("nlc,mkc->nmlk", y1, y2) / 4)


def test_empirical_nngp_fn_equals_empirical_nngp():
    net, params, x = _setup()
    nngp_fn = kernels.empirical_nngp_fn(net.apply)
    np.testing.assert_allclose(
        nngp_fn(x, None, params), kernels.empirical_nngp(net.apply, params, x)
    )
    y = np.asarray(net.apply(params, x))
    full = kernels.empirical_nngp_fn(net.apply, trace_axes=())(x, None, params)
    np.testing.assert_allclose(full, np.einsum("nc,md->nmcd", y, y), rtol=1e-14)


def test_empirical_fn_bad_arguments():
    net, params, x = _setup()
    with pytest.raises(ValueError, match="implementation"):
        kernels.empirical_ntk_fn(net.apply, implementation=7)
    with pytest.raises(TypeError, match="trace_axes"):
        kernels.empirical_ntk_fn(net.apply, trace_axes="c")
    with pytest.raises(ValueError, match="overlap"):
        kernels.empirical_ntk_fn(net.apply, trace_axes=(1,), diagonal_axes=(-1,))(
            x, None, params
        )
    with pytest.raises(ValueError, match="out of range"):
        kernels.empirical_nngp_fn(net.apply, trace_axes=(5,))(x, None, params)
