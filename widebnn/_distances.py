r"""Distances between predictive distributions (numpy, float64).

* :func:`gaussian_kl`: :math:`\mathrm{KL}(\mathcal N(m_p,\Sigma_p)\,\|\,
  \mathcal N(m_q,\Sigma_q))`.
* :func:`gaussian_w2`: the 2-Wasserstein distance between two Gaussians.
* :func:`mmd2`: the unbiased squared maximum mean discrepancy with a Gaussian kernel,
  with the standard error of the U-statistic and a permutation p-value.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg


def _check_moments(mean, cov, name):
    mean = np.asarray(mean, dtype=float).reshape(-1)
    cov = np.asarray(cov, dtype=float)
    if cov.shape != (mean.size, mean.size):
        raise ValueError(
            f"{name} covariance must have shape {(mean.size, mean.size)} to match "
            f"its mean, got {cov.shape}."
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise ValueError(f"{name} mean or covariance has NaN or inf.")
    return mean, (cov + cov.T) / 2


def _psd_sqrt(cov):
    """Symmetric square root of a PSD matrix (negative eigenvalues clipped)."""
    values, vectors = np.linalg.eigh(cov)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def gaussian_kl(mean_p, cov_p, mean_q, cov_q) -> float:
    r"""KL divergence :math:`\mathrm{KL}(P\|Q)` between two Gaussians.

    .. math:: \tfrac12\big[\mathrm{tr}(\Sigma_q^{-1}\Sigma_p)
        + (m_q-m_p)^\top\Sigma_q^{-1}(m_q-m_p) - M
        + \log\det\Sigma_q - \log\det\Sigma_p\big]

    Args:
        mean_p: ``(M,)`` mean of ``P``.
        cov_p: ``(M, M)`` positive-definite covariance of ``P``.
        mean_q: ``(M,)`` mean of ``Q``.
        cov_q: ``(M, M)`` positive-definite covariance of ``Q``.

    Returns:
        The divergence (nats), a float ``>= 0``.

    Raises:
        ValueError: on mismatched shapes or a covariance that is not positive
            definite.

    Example:
        >>> import numpy as np
        >>> round(gaussian_kl([0.0], [[1.0]], [1.0], [[1.0]]), 6)
        0.5
    """
    mean_p, cov_p = _check_moments(mean_p, cov_p, "P")
    mean_q, cov_q = _check_moments(mean_q, cov_q, "Q")
    if mean_p.size != mean_q.size:
        raise ValueError(f"P has dimension {mean_p.size} but Q has {mean_q.size}.")
    try:
        chol_q = np.linalg.cholesky(cov_q)
        chol_p = np.linalg.cholesky(cov_p)
    except np.linalg.LinAlgError as error:
        raise ValueError(
            "gaussian_kl needs positive-definite covariances (add observation "
            "noise or jitter)."
        ) from error
    white = scipy.linalg.solve_triangular(chol_q, chol_p, lower=True)
    delta = scipy.linalg.solve_triangular(chol_q, mean_q - mean_p, lower=True)
    logdet = 2 * (np.sum(np.log(np.diag(chol_q))) - np.sum(np.log(np.diag(chol_p))))
    kl = 0.5 * (np.sum(white**2) + np.sum(delta**2) - mean_p.size + logdet)
    return float(max(kl, 0.0))


def gaussian_w2(mean_p, cov_p, mean_q, cov_q) -> float:
    r"""2-Wasserstein distance between two Gaussians.

    .. math:: W_2^2 = \|m_p-m_q\|^2 + \mathrm{tr}\,\Sigma_p + \mathrm{tr}\,\Sigma_q
        - 2\,\mathrm{tr}\big(\Sigma_q^{1/2}\Sigma_p\Sigma_q^{1/2}\big)^{1/2}

    Args:
        mean_p: ``(M,)`` mean of ``P``.
        cov_p: ``(M, M)`` PSD covariance of ``P`` (may be singular).
        mean_q: ``(M,)`` mean of ``Q``.
        cov_q: ``(M, M)`` PSD covariance of ``Q`` (may be singular).

    Returns:
        :math:`W_2` (not squared), a float ``>= 0``.

    Example:
        >>> round(gaussian_w2([0.0], [[4.0]], [3.0], [[1.0]]), 6)  # sqrt(9 + 1)
        3.162278
    """
    mean_p, cov_p = _check_moments(mean_p, cov_p, "P")
    mean_q, cov_q = _check_moments(mean_q, cov_q, "Q")
    if mean_p.size != mean_q.size:
        raise ValueError(f"P has dimension {mean_p.size} but Q has {mean_q.size}.")
    return _w2_with_root(mean_p, cov_p, mean_q, cov_q, _psd_sqrt(cov_q))


def _w2_with_root(mean_p, cov_p, mean_q, cov_q, root_q) -> float:
    middle = root_q @ cov_p @ root_q
    cross = np.sum(
        np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None))
    )
    squared = np.sum((mean_p - mean_q) ** 2) + np.trace(cov_p) + np.trace(cov_q)
    return float(np.sqrt(max(squared - 2 * cross, 0.0)))


class MMDResult(NamedTuple):
    """Unbiased squared MMD with its standard error and a permutation p-value.

    Attributes:
        mmd2: the U-statistic estimate of :math:`\\mathrm{MMD}^2` (may be < 0).
        se: standard error of the U-statistic (Hoeffding variance, estimated).
        p_value: permutation p-value of ``P = Q`` (``(1 + #{perm >= obs}) /
            (1 + num_permutations)``), or NaN without permutations.
        bandwidth: the kernel length scale used.
    """

    mmd2: float
    se: float
    p_value: float
    bandwidth: float


def gaussian_gram(a, b, bandwidth: float) -> np.ndarray:
    r"""``exp(-|a_i - b_j|^2 / (2 bandwidth^2))`` for ``a (n, M)``, ``b (m, M)``.

    Args:
        a: ``(n, M)`` points.
        b: ``(m, M)`` points.
        bandwidth: the length scale ``> 0``.

    Returns:
        ``(n, m)`` kernel matrix.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    squared = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2 * a @ b.T
    return np.exp(-np.clip(squared, 0, None) / (2 * bandwidth**2))


def _h_matrix(gram, m):
    kxx, kyy, kxy = gram[:m, :m], gram[m:, m:], gram[:m, m:]
    h = kxx + kyy - kxy - kxy.T
    np.fill_diagonal(h, 0.0)
    return h


def mmd2(
    x, y, bandwidth: float, *, num_permutations: int = 0, seed: int = 0
) -> MMDResult:
    r"""Unbiased :math:`\mathrm{MMD}^2` between samples with a Gaussian kernel.

    With :math:`k(a,b)=\exp(-\|a-b\|^2/2\ell^2)` and equally many samples
    ``x_i ~ P``, ``y_i ~ Q`` (``i = 1..m``),
    :math:`\widehat{\mathrm{MMD}}{}^2=\frac{1}{m(m-1)}\sum_{i\ne j}h_{ij}`,
    :math:`h_{ij}=k(x_i,x_j)+k(y_i,y_j)-k(x_i,y_j)-k(x_j,y_i)`, whose expectation is
    exactly :math:`\mathrm{MMD}^2` (0 when ``P = Q``). Its variance is
    :math:`\frac{4(m-2)}{m(m-1)}\zeta_1+\frac{2}{m(m-1)}\zeta_2` with
    :math:`\zeta_1=\mathrm{Var}\,E[h_{ij}|z_i]`, :math:`\zeta_2=\mathrm{Var}\,h_{ij}`,
    both estimated from the :math:`h_{ij}`. Assumes independent samples.

    Args:
        x: ``(m, M)`` samples of ``P``.
        y: ``(m, M)`` samples of ``Q`` (same count).
        bandwidth: the length scale :math:`\ell > 0`.
        num_permutations: static; permutations of the pooled sample for the
            p-value (0: no test).
        seed: numpy seed of the permutations.

    Returns:
        :class:`MMDResult`.

    Raises:
        ValueError: if the sample counts differ, ``m < 4``, or the bandwidth is
            not positive.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 2 or y.shape != x.shape:
        raise ValueError(
            f"x and y must be 2-D of the same shape (m, M), got {x.shape}, {y.shape}."
        )
    m = x.shape[0]
    if m < 4:
        raise ValueError(f"mmd2 needs at least 4 samples per side, got {m}.")
    if not (np.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth must be a finite number > 0, got {bandwidth}.")
    gram = gaussian_gram(np.concatenate([x, y]), np.concatenate([x, y]), bandwidth)
    h = _h_matrix(gram, m)
    pairs = m * (m - 1)
    estimate = h.sum() / pairs
    zeta2 = max(np.sum(h**2) / pairs - estimate**2, 0.0)
    rows = h.sum(1) / (m - 1)
    zeta1 = max((np.var(rows, ddof=1) - zeta2 / (m - 1)) / (1 - 1 / (m - 1)), 0.0)
    variance = 4 * (m - 2) / pairs * zeta1 + 2 / pairs * zeta2
    p_value = float("nan")
    if num_permutations:
        rng = np.random.default_rng(seed)
        count = 0
        for _ in range(num_permutations):
            order = rng.permutation(2 * m)
            permuted = _h_matrix(gram[np.ix_(order, order)], m).sum() / pairs
            count += permuted >= estimate
        p_value = (1 + count) / (1 + num_permutations)
    return MMDResult(float(estimate), float(np.sqrt(variance)), p_value, bandwidth)
