"""Conjugate gradients, pivoted Cholesky and the tiled kernel operator.

Oracles: ``numpy.linalg.solve``/``inv``/``cholesky`` on the same matrices, and
the dense kernel of the same network (``Layer.kernel``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from relu_gp_oracle import relu_network

from widebnn._cg import (
    LowRankPreconditioner,
    conjugate_gradients,
    lanczos_tridiagonals,
    pivoted_cholesky,
    stochastic_log_det,
)
from widebnn._kernel_operator import KernelOperator
from widebnn._linalg import LinAlgError

NOISE = 1e-2


def _spd(n, condition, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.geomspace(1.0, 1.0 / condition, n)) @ q.T


@pytest.fixture(scope="module")
def relu_system():
    """A 3-hidden-layer ReLU NNGP on 150 inputs in 5-D, its dense kernel."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(150, 5)))
    net = relu_network(depth=3)
    dense = np.asarray(net.kernel(x, None, get="nngp"))
    y = jnp.asarray(rng.normal(size=(150, 2)))
    return net, x, dense, y


def test_cg_solves_several_right_hand_sides():
    a = _spd(60, 1e3)
    b = np.random.default_rng(2).normal(size=(60, 3))
    result = conjugate_gradients(lambda v: jnp.asarray(a) @ v, jnp.asarray(b))
    expected = np.linalg.solve(a, b)
    assert result.converged and result.relative_residuals.max() <= 1e-10
    np.testing.assert_allclose(result.solution, expected, rtol=1e-7, atol=1e-9)
    # The Chebyshev bound ||r_k|| / ||b|| <= 2 sqrt(kappa) rho^k, rho = (sqrt(kappa)
    # - 1) / (sqrt(kappa) + 1), reaches 1e-10 by k = 430 for kappa = 1e3 (in exact
    # arithmetic also k <= N = 60; rounding loses that, not the bound).
    rho = (np.sqrt(1e3) - 1) / (np.sqrt(1e3) + 1)
    bound = np.log(2 * np.sqrt(1e3) / 1e-10) / -np.log(rho)
    assert result.iterations <= bound, (result.iterations, bound)
    vector = conjugate_gradients(lambda v: jnp.asarray(a) @ v, jnp.asarray(b[:, 0]))
    np.testing.assert_allclose(vector.solution, expected[:, 0], rtol=1e-7, atol=1e-9)


def test_kernel_operator_products_equal_the_dense_kernel(relu_system):
    net, x, dense, _ = relu_system
    v = jnp.asarray(np.random.default_rng(3).normal(size=(150, 4)))
    expected = (dense + NOISE * np.eye(150)) @ np.asarray(v)
    for cache in (False, True):
        op = KernelOperator(net, x, "nngp", NOISE, tile=64, cache=cache)  # 3 blocks
        np.testing.assert_allclose(op(v), expected, rtol=1e-12, atol=1e-12)
        op(v)
        # 6 tiles on and above the diagonal per product; cached: computed once.
        assert op.tiles_computed == (6 if cache else 12)
    op = KernelOperator(net, x, "nngp", NOISE, tile=64, cache=False)
    np.testing.assert_allclose(op.diagonal(), np.diag(dense), rtol=1e-12)
    np.testing.assert_allclose(op.column(7), dense[:, 7], rtol=1e-12)


def test_cg_on_the_kernel_equals_the_cholesky_solve(relu_system):
    net, x, dense, y = relu_system
    op = KernelOperator(net, x, "nngp", NOISE, tile=64, cache=True)
    expected = np.linalg.solve(dense + NOISE * np.eye(150), np.asarray(y))
    plain = conjugate_gradients(op, y)
    assert plain.converged
    np.testing.assert_allclose(plain.solution, expected, rtol=1e-8, atol=1e-8)


def test_pivoted_cholesky_preconditioner_cuts_the_iterations(relu_system):
    """The deep ReLU NNGP plus noise 1e-2 has condition number 1.5e4 here: plain
    CG needed 170 products, rank-40 pivoted Cholesky 47 (3.6x; rank 10: 100,
    rank 80: 27; measured); the test asks for at least a 2x cut."""
    net, x, dense, y = relu_system
    op = KernelOperator(net, x, "nngp", NOISE, tile=64, cache=True)
    plain = conjugate_gradients(op, y)
    factor = pivoted_cholesky(op.diagonal(), op.column, rank=40)
    preconditioned = conjugate_gradients(
        op, y, precondition=LowRankPreconditioner(factor, NOISE)
    )
    expected = np.linalg.solve(dense + NOISE * np.eye(150), np.asarray(y))
    np.testing.assert_allclose(preconditioned.solution, expected, rtol=1e-8, atol=1e-8)
    assert preconditioned.iterations * 2 <= plain.iterations, (
        preconditioned.iterations,
        plain.iterations,
    )


def test_pivoted_cholesky_is_exact_at_full_rank_and_stops_at_the_rank():
    k = _spd(30, 1e4, seed=4)
    factor = np.asarray(pivoted_cholesky(jnp.diag(k), lambda i: k[:, i], rank=30))
    np.testing.assert_allclose(factor @ factor.T, k, atol=1e-12)
    a = np.random.default_rng(5).normal(size=(30, 3))
    low = a @ a.T
    factor = pivoted_cholesky(jnp.diag(low), lambda i: low[:, i], rank=10)
    assert factor.shape == (30, 3)
    np.testing.assert_allclose(factor @ factor.T, low, atol=1e-10)
    # The first pivot is the largest diagonal entry.
    first = int(np.argmax(np.diag(low)))
    np.testing.assert_allclose(factor[:, 0], low[:, first] / np.sqrt(low[first, first]))


def test_low_rank_preconditioner_is_the_inverse_of_f_ft_plus_d():
    rng = np.random.default_rng(6)
    f, r = rng.normal(size=(20, 4)), rng.normal(size=(20, 2))
    apply = LowRankPreconditioner(jnp.asarray(f), 0.3)
    expected = np.linalg.solve(f @ f.T + 0.3 * np.eye(20), r)
    np.testing.assert_allclose(apply(jnp.asarray(r)), expected, rtol=1e-10)


def test_indefinite_matrix_is_refused_and_singular_never_gives_nan():
    indefinite = jnp.diag(jnp.asarray([1.0, -1.0, 2.0, 3.0]))
    with pytest.raises(LinAlgError, match="not positive definite"):
        conjugate_gradients(lambda v: indefinite @ v, jnp.ones((4, 1)))
    # Duplicated inputs, no noise: a singular kernel and a target outside its range.
    x = jnp.concatenate([jnp.linspace(-1, 1, 6)[:, None]] * 2)
    k = relu_network(depth=1).kernel(x, None, get="nngp")
    y = jnp.arange(12.0)[:, None]
    try:
        result = conjugate_gradients(lambda v: k @ v, y, max_iters=50)
    except LinAlgError:
        return
    assert not result.converged
    assert np.all(np.isfinite(result.solution))


def test_bad_arguments_name_themselves():
    a = jnp.eye(3)
    with pytest.raises(ValueError, match="tol"):
        conjugate_gradients(lambda v: a @ v, jnp.ones(3), tol=0.0)
    with pytest.raises(ValueError, match="max_iters"):
        conjugate_gradients(lambda v: a @ v, jnp.ones(3), max_iters=0)
    with pytest.raises(ValueError, match="b must be"):
        conjugate_gradients(lambda v: a @ v, jnp.ones((3, 1, 1)))
    with pytest.raises(ValueError, match="rank"):
        pivoted_cholesky(jnp.ones(3), lambda i: a[:, i], rank=0)
    with pytest.raises(ValueError, match="diagonal"):
        LowRankPreconditioner(jnp.ones((3, 1)), 0.0)
    with pytest.raises(ValueError, match="tile"):
        KernelOperator(
            relu_network(), jnp.ones((3, 2)), "nngp", 0.1, tile=0, cache=False
        )


def test_progress_bar_and_a_zero_right_hand_side(capsys):
    a = jnp.asarray(_spd(10, 10.0))
    b = jnp.stack([jnp.zeros(10), jnp.ones(10)], axis=1)
    result = conjugate_gradients(lambda v: a @ v, b, progress=True)
    assert result.converged
    np.testing.assert_array_equal(result.solution[:, 0], 0.0)
    assert "conjugate gradients" in capsys.readouterr().err


def test_lanczos_quadrature_from_cg_is_exact_at_full_length():
    """Run to convergence on 20 well-separated eigenvalues, CG's Lanczos matrix has
    A's spectrum, so ``|b|^2 e1' log(T) e1`` is ``b' log(A) b`` (numpy's eigh)."""
    a = _spd(20, 10.0, seed=7)
    b = np.random.default_rng(8).normal(size=(20, 1))
    result = conjugate_gradients(
        lambda v: jnp.asarray(a) @ v, jnp.asarray(b), tol=1e-13
    )
    (t,) = lanczos_tridiagonals(result)
    theta, vectors = np.linalg.eigh(t)
    quadrature = result.initial_rz[0] * np.sum(vectors[0] ** 2 * np.log(theta))
    lam, q = np.linalg.eigh(a)
    exact = float(b[:, 0] @ (q * np.log(lam)) @ q.T @ b[:, 0])
    np.testing.assert_allclose(quadrature, exact, rtol=1e-8)


@pytest.mark.parametrize("preconditioned", [False, True])
def test_stochastic_log_det_is_within_its_standard_error(relu_system, preconditioned):
    """32 probes; |estimate - slogdet| <= 4 standard errors (two-sided false-alarm
    rate 6e-5 for a normal mean; the estimate is a mean of 32 i.i.d. terms).
    Measured over keys 0-2 (log-det -331.2): standard error ~8 with 141 products
    unpreconditioned, ~4 with 36 products with the rank-40 pivoted Cholesky."""
    net, x, dense, _ = relu_system
    op = KernelOperator(net, x, "nngp", NOISE, tile=64, cache=True)
    precondition = None
    if preconditioned:
        factor = pivoted_cholesky(op.diagonal(), op.column, rank=40)
        precondition = LowRankPreconditioner(factor, NOISE)
    estimate = stochastic_log_det(
        op, 150, jax.random.key(9), probes=32, preconditioner=precondition
    )
    exact = np.linalg.slogdet(dense + NOISE * np.eye(150))[1]
    assert abs(estimate.value - exact) <= 4 * estimate.standard_error, (
        estimate,
        exact,
    )
    assert 0 < estimate.standard_error < 0.05 * abs(exact)
