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
in log space without overflow. :class:`SearchBudget` follows a running search:
the estimated acceptance rate :math:`\\hat Z/M`, its upper confidence bound from the
counts, the time to the last draw, and when to give up.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.special

BOUNDS = ("data", "prior")
DEFAULT_MAX_SECONDS = 300.0
"""Default wall-time budget of ``samplers.rejection`` (seconds)."""
STOP_LEVEL = 1e-3
"""A run stops early when the ``1 - STOP_LEVEL`` upper bound on the acceptance
rate projects its end beyond ``max_seconds``."""
WARM_SECONDS = 1.0
"""The early stop waits for this much sampling after the first (compiling) batch."""


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


class RejectionBudgetError(RuntimeError):
    """The budget (``max_proposals`` or ``max_seconds``) ran out, or would run out
    before ``num_samples`` proposals are accepted.

    Attributes:
        num_accepted: proposals accepted so far.
        num_proposals: proposals made.
        acceptance_rate: ``num_accepted / num_proposals``.
        expected_rate: :math:`\\hat Z/M`, the mean acceptance probability
            :math:`\\ell/M` of all proposals made (an unbiased estimate of the
            acceptance rate, available even with no acceptance).
        rate_upper: the 95 % (Clopper-Pearson) upper confidence bound on the
            acceptance rate from the counts (about ``3 / num_proposals`` with no
            acceptance: the rule of three).
        expected_proposals: ``num_samples / expected_rate``, the expected total
            number of proposals needed (``inf`` when no likelihood was positive).
        seconds: wall time spent (compilation included).
        proposals_per_second: proposals per second after the first batch
            (compilation excluded).
        expected_seconds: ``expected_proposals / proposals_per_second``.
    """

    def __init__(
        self,
        message,
        *,
        num_accepted,
        num_proposals,
        expected_rate,
        num_samples,
        seconds=math.nan,
        proposals_per_second=math.nan,
    ):
        super().__init__(message)
        self.num_accepted = num_accepted
        self.num_proposals = num_proposals
        self.acceptance_rate = num_accepted / num_proposals
        self.expected_rate = expected_rate
        self.rate_upper = rate_upper_bound(num_accepted, num_proposals, 0.05)
        self.expected_proposals = (
            num_samples / expected_rate if expected_rate > 0 else math.inf
        )
        self.seconds = seconds
        self.proposals_per_second = proposals_per_second
        self.expected_seconds = self.expected_proposals / proposals_per_second


def rate_upper_bound(num_accepted: int, num_proposals: int, level: float) -> float:
    """One-sided ``1 - level`` Clopper-Pearson upper bound on a Bernoulli rate
    from ``num_accepted`` successes in ``num_proposals`` trials (for no success,
    :math:`1 - \\mathrm{level}^{1/n}\\approx -\\log(\\mathrm{level})/n`, the
    "rule of three" at ``level = 0.05``)."""
    if num_proposals <= 0:
        return 1.0
    if num_accepted >= num_proposals:
        return 1.0
    return float(
        scipy.special.betaincinv(
            num_accepted + 1, num_proposals - num_accepted, 1.0 - level
        )
    )


class SearchBudget:
    """Counts, clocks and estimates of a running search; raises when it is over.

    ``check`` looks at the projection only when the number of proposals has
    doubled since its last look (a few tens of looks in all), so that the chance
    of stopping a run that would have finished in time stays small.
    """

    def __init__(
        self, num_samples, log_bound, max_proposals, max_seconds, bound, started
    ):
        self.num_samples = num_samples
        self.log_bound = log_bound
        self.max_proposals = max_proposals
        self.max_seconds = max_seconds
        self.bound = bound
        self.started = started
        self.evidence = EvidenceAccumulator()
        self.num_accepted = 0
        self.num_proposals = 0
        # (time, proposals) after the first (compiling) batch
        self.warm: tuple[float, int] | None = None
        self.next_look = 0

    def add(self, num_proposals, num_accepted):
        self.num_proposals += num_proposals
        self.num_accepted += num_accepted
        if self.warm is None:
            self.warm = (time.perf_counter(), self.num_proposals)

    def rate(self) -> float:
        """:math:`\\hat Z/M`: the mean acceptance probability of the proposals."""
        return math.exp(min(self.evidence.log_mean() - self.log_bound, 0.0))

    def speed(self) -> float:
        """Proposals per second after the first batch (its compilation excluded);
        over all the time when only one batch ran."""
        now = time.perf_counter()
        if self.warm is None:  # before the first batch
            return 0.0
        warm_time, warm_count = self.warm
        if self.num_proposals > warm_count and now > warm_time:
            return (self.num_proposals - warm_count) / (now - warm_time)
        return self.num_proposals / max(now - self.started, 1e-9)

    def eta(self, rate) -> float:
        """Seconds to the last draw at acceptance rate ``rate``."""
        remaining = self.num_samples - self.num_accepted
        speed = self.speed()
        return remaining / (rate * speed) if rate > 0 and speed > 0 else math.inf

    def postfix(self) -> str:
        """The progress bar's ``proposals, rate, ETA`` text."""
        rate = self.rate()
        text = f"proposals={self.num_proposals:.3g}, rate~{rate:.2g}"
        if self.num_accepted == 0:
            upper = rate_upper_bound(0, self.num_proposals, 0.05)
            return (
                f"{text} (<{upper:.2g} at 95%), ETA~{_duration(self.eta(rate))} "
                f"(>{_duration(self.eta(upper))})"
            )
        return f"{text}, ETA~{_duration(self.eta(rate))}"

    def check(self):
        """Raises :class:`RejectionBudgetError` if the budget is spent, or if even
        an optimistic projection does not finish within ``max_seconds``: the
        ``1 - STOP_LEVEL`` upper bound on the rate and twice the measured speed
        (measured over at least ``WARM_SECONDS`` after the first batch)."""
        now = time.perf_counter()
        elapsed = now - self.started
        if self.num_proposals >= self.max_proposals:
            self._raise(f"max_proposals={self.max_proposals} reached")
        if elapsed >= self.max_seconds:
            self._raise(f"max_seconds={self.max_seconds:g} reached")
        if (
            self.max_seconds == math.inf
            or self.warm is None
            or self.num_proposals < self.next_look
            or now - self.warm[0] < WARM_SECONDS
        ):
            return
        self.next_look = 2 * self.num_proposals
        upper = rate_upper_bound(self.num_accepted, self.num_proposals, STOP_LEVEL)
        if elapsed + self.eta(upper) / 2 > self.max_seconds:
            self._raise(
                f"even at the {100 * (1 - STOP_LEVEL):g} % upper confidence bound "
                f"on the acceptance rate ({upper:.2g}) and twice the speed, the "
                f"remaining draws would take {_duration(self.eta(upper) / 2)}, "
                f"beyond max_seconds={self.max_seconds:g}"
            )

    def _raise(self, reason):
        rate, speed = self.rate(), self.speed()
        elapsed = time.perf_counter() - self.started
        k, n, wanted = self.num_accepted, self.num_proposals, self.num_samples
        if rate == 0:
            estimate = "No proposal had a positive likelihood"
        else:
            need = wanted / rate
            counted = (
                f"below {rate_upper_bound(0, n, 0.05):.2g} at 95 % as none was accepted"
                if k == 0
                else f"{k / n:.2g} counted"
            )
            estimate = (
                f"Estimated acceptance rate {rate:.2g} (the mean acceptance "
                f"probability of the proposals; {counted}), so the {wanted} draws "
                f"need about {need:.2g} proposals, about {_duration(need / speed)} "
                f"at {speed:.2g} proposals/s"
            )
        also = (
            "bound='data' (the default) accepts many times more; "
            if self.bound == "prior"
            else ""
        )
        raise RejectionBudgetError(
            f"rejection: {k} of num_samples={wanted} draws accepted after {n:.3g} "
            f"proposals in {_duration(elapsed)}: {reason}. {estimate}. To make "
            f"exact sampling feasible: {also}use fewer data points (the rate falls "
            "about exponentially with their number) or a larger noise_std; or "
            "sample with MCMC (samplers.hmc); or raise max_seconds / max_proposals "
            "(None: no limit).",
            num_accepted=k,
            num_proposals=n,
            expected_rate=rate,
            num_samples=wanted,
            seconds=elapsed,
            proposals_per_second=speed,
        )


def _duration(seconds: float) -> str:
    """``seconds`` in words: ``"12 s"``, ``"3.4 min"``, ``"11 h"``, ``"2e+03 days"``."""
    if not math.isfinite(seconds):
        return "forever"
    if seconds < 90:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.2g} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.2g} h"
    return f"{seconds / 86400:.2g} days"


def _logsumexp(values) -> float:
    top = float(np.max(values))
    if top == -math.inf:
        return -math.inf
    return top + math.log(float(np.sum(np.exp(values - top))))
