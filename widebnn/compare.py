r"""Finite-width posterior predictive vs the infinite-width GP predictive.

* :func:`predictive`: distances between MCMC (or exact rejection) draws of the
  network outputs at test inputs and the GP posterior predictive there, each with a
  Monte Carlo standard error from the effective sample size, the value expected
  from Monte Carlo noise alone, and a p-value of "the draws come from the GP".
* :func:`width_sweep`: the same at growing widths, showing the finite posterior
  approach its GP limit, with the NTK gradient-descent ensemble for reference.

Metrics (draws of the ``M = N_pred * d`` outputs flattened, outputs i.i.d. under the
GP; :math:`\hat m,\hat\Sigma` the sample mean and covariance of the draws,
:math:`m,\Sigma` the GP's):

==================== ========================================================
``rmse``, ``max_abs`` root-mean-square and largest :math:`|\hat m - m|`
``cov_rel_frobenius`` :math:`\|\hat\Sigma-\Sigma\|_F/\|\Sigma\|_F`
``kl``                :math:`\mathrm{KL}(\mathcal N(\hat m,\hat\Sigma+s I)\,\|\,
                      \mathcal N(m,\Sigma+sI))`, ``s`` = GP noise variance (the
                      predictive of noisy targets; finite when :math:`\Sigma` is
                      singular) plus a :math:`10^{-10}` relative jitter
``w2``                2-Wasserstein distance of :math:`\mathcal N(\hat m,\hat\Sigma)`
                      and :math:`\mathcal N(m,\Sigma)`
``mmd2``              unbiased :math:`\mathrm{MMD}^2` of ``mmd_samples`` thinned
                      draws vs as many GP draws, Gaussian kernel
                      :math:`\exp(-\|a-b\|^2/2\ell^2)` with
                      :math:`\ell^2=2\,\mathrm{tr}\,\Sigma` (the mean squared
                      distance of two GP draws) unless ``mmd_bandwidth`` is given
==================== ========================================================

Monte Carlo error, with ``n_eff`` = the smallest bulk ESS over the ``M`` outputs
(capped at the number of draws): ``se`` is the standard deviation of the metric over
``num_bootstrap`` resamples of ``n_eff`` draws (with replacement) from the pooled
draws; ``floor`` is the mean of the metric over ``num_bootstrap`` sets of ``n_eff``
exact GP draws (what Monte Carlo noise alone gives, since every moment metric but
``mmd2`` is biased upwards) and ``p_value`` the fraction of those at least as large
as the observed value. For ``mmd2``: ``floor = 0`` (unbiased), ``se`` from the
U-statistic variance, ``p_value`` from a permutation test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import _distances
from ._draws import method_label, predictions_of
from ._sweep import WidthSweep as WidthSweep, width_sweep as width_sweep

METRICS = ("rmse", "max_abs", "cov_rel_frobenius", "kl", "w2", "mmd2")
"""Names of the metrics, in table order."""

MIN_DRAWS = 4
"""Fewest draws per chain :func:`predictive` accepts (ArviZ's ESS needs 4)."""


class Metric(NamedTuple):
    """One distance with its Monte Carlo uncertainty.

    Attributes:
        value: the distance computed from the draws.
        se: its Monte Carlo standard error (from the ESS).
        floor: its expected value for exact GP draws of the same effective size.
        p_value: probability, under "the draws are exact GP draws", of a value at
            least this large.
    """

    value: float
    se: float
    floor: float
    p_value: float


@dataclass(frozen=True)
class PredictiveComparison:
    """Result of :func:`predictive`.

    Attributes:
        metrics: ``{name: Metric}`` for the names in ``METRICS``.
        num_draws: total draws (chains x draws).
        ess: the effective sample size ``n_eff`` used for the standard errors.
        num_outputs: ``M = N_pred * d``.
        mmd_bandwidth: the Gaussian-kernel length scale of ``mmd2``.
        mmd_samples: draws per side used by ``mmd2``.
        settings: the other settings (``num_bootstrap``, ``kl_noise_var``, ...).
        label: how the draws were made (``"exact (rejection)"``, ``"MCMC
            (ghmc)"``, ...; :func:`widebnn._draws.method_label`), used by
            :meth:`table`.
    """

    metrics: dict[str, Metric]
    num_draws: int
    ess: float
    num_outputs: int
    mmd_bandwidth: float
    mmd_samples: int
    settings: dict[str, Any] = field(default_factory=dict)
    label: str = "samples"

    def __getitem__(self, name: str) -> Metric:
        return self.metrics[name]

    def to_dict(self) -> dict[str, float]:
        """A flat dict: ``name``, ``name_se``, ``name_floor``, ``name_p`` per metric,
        plus ``num_draws``, ``ess``, ``num_outputs``."""
        out: dict[str, float] = {
            "num_draws": self.num_draws,
            "ess": self.ess,
            "num_outputs": self.num_outputs,
        }
        for name, metric in self.metrics.items():
            out[name] = metric.value
            out[f"{name}_se"] = metric.se
            out[f"{name}_floor"] = metric.floor
            out[f"{name}_p"] = metric.p_value
        return out

    def to_dataframe(self):
        """A ``pandas.DataFrame``, one row per metric (value, se, floor, p_value)."""
        import pandas as pd

        rows = {name: metric._asdict() for name, metric in self.metrics.items()}
        return pd.DataFrame.from_dict(rows, orient="index")

    def table(self) -> str:
        """A plain-text table of the metrics."""
        lines = [
            f"{self.label} vs GP predictive: {self.num_outputs} outputs, "
            f"{self.num_draws} draws, ESS {self.ess:.0f}",
            f"{'metric':<18}{'value':>12}{'MC s.e.':>12}{'MC floor':>12}"
            f"{'p-value':>10}",
        ]
        for name, m in self.metrics.items():
            lines.append(
                f"{name:<18}{m.value:>12.4g}{m.se:>12.3g}{m.floor:>12.3g}"
                f"{m.p_value:>10.3f}"
            )
        return "\n".join(lines)


class _Reference:
    """The GP predictive (flattened) and what the moment metrics need of it."""

    def __init__(self, mean, cov, kl_noise_var):
        self.mean, self.cov = mean, cov
        self.root = _distances._psd_sqrt(cov)
        self.cov_norm = max(float(np.linalg.norm(cov)), np.finfo(float).tiny)
        scale = max(float(np.mean(np.diag(cov))), np.finfo(float).tiny)
        self.shift = (kl_noise_var + 1e-10 * scale) * np.eye(mean.size)

    def metrics(self, mean, cov) -> dict[str, float]:
        error = mean - self.mean
        return {
            "rmse": float(np.sqrt(np.mean(error**2))),
            "max_abs": float(np.max(np.abs(error))),
            "cov_rel_frobenius": float(np.linalg.norm(cov - self.cov) / self.cov_norm),
            "kl": _distances.gaussian_kl(
                mean, cov + self.shift, self.mean, self.cov + self.shift
            ),
            "w2": _distances._w2_with_root(mean, cov, self.mean, self.cov, self.root),
        }

    def of_samples(self, samples) -> dict[str, float]:
        cov = np.atleast_2d(np.cov(samples, rowvar=False))
        return self.metrics(samples.mean(0), cov)

    def draw(self, rng, count):
        return self.mean + rng.standard_normal((count, self.mean.size)) @ self.root


def _gp_moments(gp_posterior, x_test, n_pred, out_dim):
    if hasattr(gp_posterior, "predict"):
        if x_test is None:
            raise ValueError("x_test is required when gp_posterior is a GP posterior.")
        mean, cov = gp_posterior.predict(x_test, full_cov=True)
    else:
        try:
            mean, cov = gp_posterior
        except (TypeError, ValueError) as error:
            raise TypeError(
                "gp_posterior must be a widebnn.gp posterior (with .predict) or a "
                f"(mean, covariance) pair, got {type(gp_posterior).__name__}."
            ) from error
    mean, cov = np.asarray(mean, float), np.asarray(cov, float)
    if mean.shape != (n_pred, out_dim):
        raise ValueError(
            f"the GP mean has shape {mean.shape}; the draws need (N_pred, d) = "
            f"{(n_pred, out_dim)} (were the draws made at x_test?)."
        )
    if cov.shape != (n_pred, n_pred):
        raise ValueError(
            f"the GP covariance must be the full (N_pred, N_pred) = "
            f"{(n_pred, n_pred)} matrix (predict with full_cov=True), got {cov.shape}."
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise ValueError("the GP mean or covariance has NaN or inf.")
    return mean.reshape(-1), np.kron((cov + cov.T) / 2, np.eye(out_dim))


def _thinned(predictions, count):
    """``count`` draws spread evenly over each chain, pooled: ``(count, M)``."""
    chains, draws = predictions.shape[:2]
    per_chain = -(-count // chains)
    index = np.unique(np.linspace(0, draws - 1, min(per_chain, draws)).round())
    picked = predictions[:, index.astype(int)].reshape(-1, predictions[0, 0].size)
    step = max(len(picked) // count, 1)
    return picked[::step][:count]


def _check_count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return int(value)


def predictive(
    posterior_or_draws,
    gp_posterior,
    x_test=None,
    *,
    noise_var: float | None = None,
    num_bootstrap: int = 100,
    mmd_samples: int = 500,
    mmd_bandwidth: float | None = None,
    num_permutations: int = 100,
    seed: int = 0,
    label: str | None = None,
) -> PredictiveComparison:
    """Compares posterior draws of network outputs with the GP predictive.

    See the module docstring for the metrics and how their Monte Carlo standard
    errors, floors and p-values are computed.

    Args:
        posterior_or_draws: a sampler result with ``.predictions (chain, draw,
            N_pred, d)`` made at ``x_test`` (``Posterior``, ``RejectionPosterior``)
            or such an array.
        gp_posterior: a :func:`widebnn.gp.posterior` result (then ``x_test`` is
            required), or its prediction ``(mean (N_pred, d), covariance (N_pred,
            N_pred))`` at ``x_test``.
        x_test: ``(N_pred, ...)`` test inputs of the predictions.
        noise_var: the variance ``s`` added to both covariances in ``kl``
            (default: ``gp_posterior.noise_var``, or 0 for a prediction pair).
        num_bootstrap: resamples for ``se``, and exact-GP replicates for ``floor``
            and ``p_value`` (>= 10).
        mmd_samples: draws per side for ``mmd2`` (at most ``n_eff``, at least 4).
        mmd_bandwidth: the MMD kernel length scale (default
            ``sqrt(2 trace(Sigma))``).
        num_permutations: permutations of the MMD test.
        seed: numpy seed of the resamples, GP draws and permutations.
        label: the name of the draws in :meth:`PredictiveComparison.table`
            (default: from the sampler result, ``"exact (rejection)"`` or
            ``"MCMC (<algorithm>)"``; ``"samples"`` for an array).

    Returns:
        :class:`PredictiveComparison` (``.table()``, ``.to_dict()``,
        ``.to_dataframe()``).

    Raises:
        TypeError, ValueError: for draws that are not ``(chain, draw, N_pred, d)``
            finite arrays, fewer than ``MIN_DRAWS`` (4) draws per chain, a GP
            prediction of another shape or without the full covariance, or bad
            settings.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> draws = rng.normal(size=(2, 200, 3, 1))  # exact draws of N(0, I)
        >>> result = predictive(draws, (np.zeros((3, 1)), np.eye(3)),
        ...                     num_bootstrap=20, num_permutations=20)
        >>> bool(result["kl"].p_value > 0.01)
        True
    """
    predictions = predictions_of(posterior_or_draws, "posterior_or_draws")
    chains, draws, n_pred, out_dim = predictions.shape
    if draws < MIN_DRAWS:
        raise ValueError(
            f"posterior_or_draws must have at least {MIN_DRAWS} draws per chain (the "
            f"effective sample size needs {MIN_DRAWS}), got {draws} draw(s) in each "
            f"of {chains} chain(s): predictions of shape {predictions.shape}."
        )
    if label is None:
        label = method_label(posterior_or_draws)
    num_bootstrap = _check_count(num_bootstrap, "num_bootstrap", 10)
    mmd_samples = _check_count(mmd_samples, "mmd_samples", 4)
    num_permutations = _check_count(num_permutations, "num_permutations", 0)
    gp_mean, gp_cov = _gp_moments(gp_posterior, x_test, n_pred, out_dim)
    if noise_var is None:
        noise_var = float(getattr(gp_posterior, "noise_var", 0.0) or 0.0)
    if not (np.isfinite(noise_var) and noise_var >= 0):
        raise ValueError(f"noise_var must be a finite number >= 0, got {noise_var}.")
    from .diagnostics import bulk_ess

    total = chains * draws
    samples = predictions.reshape(total, -1)
    ess = float(np.min(bulk_ess(predictions)))
    if not np.isfinite(ess):  # pragma: no cover - ArviZ gives a number from 4 draws
        raise ValueError(f"the effective sample size of the draws is {ess}.")
    n_eff = int(np.clip(np.floor(ess), 2, total))
    reference = _Reference(gp_mean, gp_cov, noise_var)
    rng = np.random.default_rng(seed)
    observed = reference.of_samples(samples)
    boot = [
        reference.of_samples(samples[rng.integers(0, total, n_eff)])
        for _ in range(num_bootstrap)
    ]
    null = [
        reference.of_samples(reference.draw(rng, n_eff)) for _ in range(num_bootstrap)
    ]
    metrics = {}
    for name, value in observed.items():
        boot_values = np.array([b[name] for b in boot])
        null_values = np.array([b[name] for b in null])
        metrics[name] = Metric(
            value,
            float(np.std(boot_values, ddof=1)),
            float(np.mean(null_values)),
            float((1 + np.sum(null_values >= value)) / (1 + num_bootstrap)),
        )
    m = min(total, max(4, min(mmd_samples, n_eff)))  # total >= MIN_DRAWS = 4
    if mmd_bandwidth is None:
        trace = float(np.trace(gp_cov))
        mmd_bandwidth = float(np.sqrt(2 * trace)) if trace > 0 else 1.0
    mmd = _distances.mmd2(
        _thinned(predictions, m),
        reference.draw(rng, m),
        mmd_bandwidth,
        num_permutations=num_permutations,
        seed=seed + 1,
    )
    metrics["mmd2"] = Metric(mmd.mmd2, mmd.se, 0.0, mmd.p_value)
    return PredictiveComparison(
        metrics=metrics,
        num_draws=total,
        ess=float(min(ess, total)),
        num_outputs=n_pred * out_dim,
        mmd_bandwidth=float(mmd_bandwidth),
        mmd_samples=int(m),
        settings={
            "num_bootstrap": num_bootstrap,
            "num_permutations": num_permutations,
            "kl_noise_var": float(noise_var),
            "seed": seed,
        },
        label=str(label),
    )


def gaussian_distances(prediction, gp_prediction, *, noise_var: float = 0.0):
    """Exact distances between two Gaussian predictives (no Monte Carlo).

    Used for the NTK gradient-descent ensemble reference of :func:`width_sweep`.

    Args:
        prediction: ``(mean (N, d), covariance (N, N))`` of the compared predictive.
        gp_prediction: ``(mean (N, d), covariance (N, N))`` of the GP.
        noise_var: the variance added to both covariances in ``kl``.

    Returns:
        ``{name: value}`` for every metric in ``METRICS`` but ``mmd2``.
    """
    mean, cov = (np.asarray(a, float) for a in prediction)
    gp_mean, gp_cov = _gp_moments(tuple(gp_prediction), None, *mean.shape)
    mean_flat, cov_flat = _gp_moments((mean, cov), None, *mean.shape)
    return _Reference(gp_mean, gp_cov, float(noise_var)).metrics(mean_flat, cov_flat)
