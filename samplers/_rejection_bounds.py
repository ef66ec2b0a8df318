r"""Upper bounds :math:`M` on the readout-marginalised likelihood, and the evidence.

With the readout integrated out, the likelihood of hidden weights with features
:math:`T` is :math:`\ell = \prod_j \mathcal N(y_j; 0, S)`, :math:`S = TT^\top +
\sigma^2 I_N`. Two bounds hold for every value of the hidden weights
(derived here; the scheme is that of Hron et al., "Exact posterior distributions of
wide Bayesian neural networks", 2020, arXiv:2006.10541):

* ``"prior"``: :math:`\log M_0 = -\tfrac{Nd}{2}\log(2\pi\sigma^2)`, because
  :math:`\det S\ge\sigma^{2N}` and the quadratic form is non-negative;
* ``"data"``: the supremum of :math:`\prod_j\mathcal N(y_j;0,S)` over all
  :math:`S\succeq A`, :math:`A = \sigma^2 I + \sigma_b^2\mathbf 1\mathbf 1^\top`
  (the bias column of :math:`T` gives :math:`TT^\top\succeq\sigma_b^2\mathbf 1
  \mathbf 1^\top`). Writing :math:`S = L_A R L_A^\top` with :math:`R\succeq I` and
  :math:`\mu_i` the eigenvalues of :math:`Y^\top A^{-1} Y/d`,
  :math:`s_i = \max(\mu_i, 1)`:

  .. math:: \log M = -\tfrac{Nd}{2}\log 2\pi - \tfrac d2\log\det A
      - \tfrac d2\sum_i(\log s_i + \mu_i/s_i),

  attained at :math:`R = U\operatorname{diag}(s)U^\top` (eigenvectors :math:`U` of
  :math:`L_A^{-1}YY^\top L_A^{-\top}`). With :math:`\sigma_b = 0` it is
  :math:`M_1`, otherwise the tighter :math:`M_2 \le M_1 \le M_0`.

The evidence accumulator keeps :math:`\log\sum\ell` and :math:`\log\sum\ell^2` of a
stream of log-likelihoods, so that means and their standard errors are computed
in log space without overflow.
"""

from __future__ import annotations

import math

import numpy as np

BOUNDS = ("data", "prior")


def log_likelihood_bound(y, noise_std, *, bound="data", readout_b_std=0.0) -> float:
    r"""Log of an upper bound :math:`M` on :math:`\prod_j\mathcal N(y_j; 0, TT^\top +
    \sigma^2 I)` over all features :math:`T` with a bias column
    :math:`\sigma_b\mathbf 1`.

    Args:
        y: ``(N, d)`` targets.
        noise_std: :math:`\sigma > 0`.
        bound: ``"data"`` (the supremum given ``y``; see the module docstring) or
            ``"prior"`` (:math:`-\tfrac{Nd}2\log 2\pi\sigma^2`).
        readout_b_std: :math:`\sigma_b \ge 0`, the readout bias scale.

    Returns:
        ``log M`` (a Python float, computed in float64).

    Raises:
        ValueError: for an unknown ``bound``, ``y`` not 2-D, or a non-positive
            ``noise_std`` / negative ``readout_b_std``.

    Example:
        >>> import numpy as np
        >>> y = np.array([[0.5], [-1.0]])
        >>> prior = log_likelihood_bound(y, 0.1, bound="prior")
        >>> data = log_likelihood_bound(y, 0.1, bound="data", readout_b_std=0.5)
        >>> bool(data < prior)
        True
    """
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}.")
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"y must be 2-D (N, d), got shape {y.shape}.")
    noise_var = float(noise_std) ** 2
    bias_var = float(readout_b_std) ** 2
    if not (math.isfinite(noise_var) and noise_var > 0):
        raise ValueError(f"noise_std must be a finite number > 0, got {noise_std}.")
    if not (math.isfinite(bias_var) and float(readout_b_std) >= 0):
        raise ValueError(
            f"readout_b_std must be a finite number >= 0, got {readout_b_std}."
        )
    n, d = y.shape
    if bound == "prior":
        return -0.5 * n * d * math.log(2 * math.pi * noise_var)
    # A = noise_var I + bias_var 11^T: determinant lemma and Sherman-Morrison.
    ratio = n * bias_var / noise_var
    log_det_a = n * math.log(noise_var) + math.log1p(ratio)
    column_sums = y.sum(axis=0)
    shrink = bias_var / (noise_var + n * bias_var)
    quad = (y.T @ y - shrink * np.outer(column_sums, column_sums)) / noise_var
    mu = np.clip(np.linalg.eigvalsh((quad + quad.T) / (2 * d)), 0.0, None)
    s = np.maximum(mu, 1.0)
    excess = float(np.sum(np.log(s) + mu / s))
    return -0.5 * n * d * math.log(2 * math.pi) - 0.5 * d * (log_det_a + excess)


class EvidenceAccumulator:
    """Running :math:`\\log\\sum\\ell`, :math:`\\log\\sum\\ell^2` and count of a
    stream of log-likelihoods (``-inf`` entries count as zero likelihood)."""

    def __init__(self):
        self.count = 0
        self.log_sum = -math.inf
        self.log_sum_sq = -math.inf

    def add(self, log_values) -> None:
        """Adds a 1-D array of log-likelihoods."""
        log_values = np.asarray(log_values, dtype=np.float64)
        if log_values.size == 0:
            return
        self.count += int(log_values.size)
        self.log_sum = float(np.logaddexp(self.log_sum, _logsumexp(log_values)))
        self.log_sum_sq = float(
            np.logaddexp(self.log_sum_sq, _logsumexp(2 * log_values))
        )

    def log_mean(self) -> float:
        """:math:`\\log\\hat Z`, the log of the mean likelihood (``-inf`` if none)."""
        if self.count == 0:
            return -math.inf
        return self.log_sum - math.log(self.count)

    def log_mean_stderr(self) -> float:
        """Standard error of :math:`\\log\\hat Z` by the delta method,
        :math:`\\mathrm{se}(\\hat Z)/\\hat Z` (``inf`` for fewer than two values
        or all zero)."""
        if self.count < 2 or self.log_sum == -math.inf:
            return math.inf
        n = self.count
        # n * sum(l^2) / sum(l)^2 - 1 = (n - 1) * (relative variance of the mean)
        spread = math.exp(math.log(n) + self.log_sum_sq - 2 * self.log_sum) - 1.0
        return math.sqrt(max(spread, 0.0) / (n - 1))


def _logsumexp(values) -> float:
    top = float(np.max(values))
    if top == -math.inf:
        return -math.inf
    return top + math.log(float(np.sum(np.exp(values - top))))
