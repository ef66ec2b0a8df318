"""Robust linear algebra of ``widebnn._linalg``.

Oracles: numpy/scipy factorisations, solves and densities (``numpy.linalg.cholesky``,
``scipy.stats.multivariate_normal``), and closed-form derivatives of the Gaussian
log density, all in float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from widebnn import _linalg


def _spd(n, seed=0):
    a = np.random.default_rng(seed).normal(size=(n, n))
    return a @ a.T + n * np.eye(n)


def _low_rank(n, rank, seed=0):
    a = np.random.default_rng(seed).normal(size=(n, rank))
    return a @ a.T


def test_cholesky_matches_numpy_with_relative_regulariser():
    k = _spd(12)
    chol = _linalg.cholesky(k, diag_reg=0.1)
    added = 0.1 * np.trace(k) / 12  # NT convention: relative to the mean diagonal
    np.testing.assert_allclose(chol.added_diagonal, added, rtol=1e-14)
    np.testing.assert_allclose(
        chol.factor, np.linalg.cholesky(k + added * np.eye(12)), rtol=1e-12, atol=1e-12
    )
    assert float(chol.jitter) == 0.0


def test_cholesky_absolute_regulariser():
    k = _spd(6, seed=1)
    chol = _linalg.cholesky(k, diag_reg=0.5, absolute=True)
    np.testing.assert_allclose(
        chol.factor, np.linalg.cholesky(k + 0.5 * np.eye(6)), rtol=1e-12, atol=1e-12
    )


def test_cholesky_symmetrises_its_input():
    k = _spd(5, seed=2)
    skew = np.triu(np.ones((5, 5)), 1) * 1e-9
    chol = _linalg.cholesky(k + skew)
    expected = np.linalg.cholesky(k + (skew + skew.T) / 2)
    np.testing.assert_allclose(chol.factor, expected, rtol=1e-12, atol=1e-12)


def _first_numpy_jitter(k, ladder):
    """The first relative jitter for which numpy's Cholesky succeeds."""
    scale = np.trace(k) / k.shape[0]
    for jitter in ladder:
        try:
            np.linalg.cholesky(k + jitter * scale * np.eye(k.shape[0]))
        except np.linalg.LinAlgError:
            continue
        return jitter * scale
    raise AssertionError("numpy needs more jitter than the ladder has")


def test_jitter_ladder_escalates_on_singular_matrix():
    k = _low_rank(40, 3)
    ladder = _linalg.DEFAULT_JITTER_LADDER
    chol = _linalg.cholesky(k)
    assert float(chol.jitter) > 0
    np.testing.assert_allclose(chol.jitter, _first_numpy_jitter(k, ladder), rtol=1e-12)
    rebuilt = np.asarray(chol.factor) @ np.asarray(chol.factor).T
    np.testing.assert_allclose(
        rebuilt, k + float(chol.added_diagonal) * np.eye(40), atol=1e-10
    )


def test_non_psd_matrix_raises_with_condition_estimate():
    k = _spd(8) - 40.0 * np.eye(8)
    smallest = np.linalg.eigvalsh(k)[0]
    assert smallest < 0
    with pytest.raises(_linalg.LinAlgError, match="condition estimate") as info:
        _linalg.cholesky(k)
    assert "not positive semi-definite" in str(info.value)
    np.testing.assert_allclose(info.value.min_eigenvalue, smallest, rtol=1e-10)
    assert info.value.condition_estimate == np.inf
    assert isinstance(info.value, np.linalg.LinAlgError)


def test_failure_under_jit_is_nan_not_an_exception():
    k = jnp.asarray(_spd(4) - 40.0 * np.eye(4))
    chol = jax.jit(_linalg.cholesky)(k)
    assert np.all(np.isnan(np.diag(chol.factor)))
    assert np.isnan(chol.jitter)


def test_bad_matrices_raise_value_errors():
    with pytest.raises(ValueError, match="square"):
        _linalg.cholesky(np.ones((3, 4)))
    bad = _spd(3)
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _linalg.cholesky(bad)


def test_float32_ladder_skips_unresolvable_jitters():
    assert _linalg._usable_ladder(_linalg.DEFAULT_JITTER_LADDER, jnp.float32) == (
        1e-6,
        1e-4,
    )
    assert _linalg._usable_ladder(_linalg.DEFAULT_JITTER_LADDER, jnp.float64) == (
        _linalg.DEFAULT_JITTER_LADDER
    )


def test_solves_and_gaussian_log_likelihood_match_scipy():
    k = _spd(9, seed=3)
    y = np.random.default_rng(4).normal(size=(9, 3))
    chol = _linalg.cholesky(k, diag_reg=0.2, absolute=True)
    c = k + 0.2 * np.eye(9)
    np.testing.assert_allclose(_linalg.cho_solve(chol, y), np.linalg.solve(c, y))
    np.testing.assert_allclose(
        _linalg.log_det(chol), np.linalg.slogdet(c)[1], rtol=1e-12
    )
    expected = sum(
        scipy.stats.multivariate_normal(np.zeros(9), c).logpdf(y[:, j])
        for j in range(3)
    )
    np.testing.assert_allclose(
        _linalg.gaussian_log_likelihood(chol, y), expected, rtol=1e-12
    )


def _log_density_gradient(k, y, added):
    """d/ds log N(y; s K + d I) at s = 1: 0.5 a^T K a - 0.5 tr(C^{-1} K)."""
    c = k + added * np.eye(k.shape[0])
    alpha = np.linalg.solve(c, y)
    return 0.5 * np.sum(alpha * (k @ alpha)) - 0.5 * y.shape[1] * np.trace(
        np.linalg.solve(c, k)
    )


@pytest.mark.parametrize("kind", ["regular", "needs_jitter"])
def test_gradient_is_finite_and_correct(kind):
    """Gradients through the factorisation match the closed form, also when the
    first attempt failed and the ladder was used (no NaN leaks from that attempt)."""
    # rank 2 of 7: the plain factorisation fails; a coarse ladder keeps the
    # jittered matrix well conditioned so the closed form is accurate
    k = _spd(7, seed=5) / 7 if kind == "regular" else _low_rank(7, 2, seed=5)
    ladder = (1e-3,)
    y = np.random.default_rng(6).normal(size=(7, 2))

    def log_density(scale):
        chol = _linalg.cholesky(scale * k, jitter_ladder=ladder)
        return _linalg.gaussian_log_likelihood(chol, y)

    grad = jax.grad(log_density)(1.0)
    chol = _linalg.cholesky(k, jitter_ladder=ladder)
    assert (float(chol.jitter) > 0) == (kind == "needs_jitter")
    assert np.isfinite(grad)
    expected = _log_density_gradient(k, y, float(chol.added_diagonal))
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_symmetric_eigh_and_condition_estimate():
    k = _spd(10, seed=7)
    values, vectors = _linalg.symmetric_eigh(k)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(k), rtol=1e-12)
    np.testing.assert_allclose(
        np.asarray(vectors) @ np.diag(values) @ np.asarray(vectors).T, k, atol=1e-10
    )
    np.testing.assert_allclose(_linalg.condition_estimate(k), np.linalg.cond(k))
    values, _ = _linalg.symmetric_eigh(_low_rank(10, 2))
    assert np.all(np.asarray(values) >= 0)
    assert _linalg.condition_estimate(-np.eye(3)) == np.inf
