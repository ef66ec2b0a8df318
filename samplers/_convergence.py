r"""Convergence checks run after every ``hmc`` run, and the warning they raise.

The checks look at fixed random projections of the predictions (the same
directions as ``widebnn.diagnostics.random_projections`` with its default seed, so
the numbers in a warning are those ``widebnn.diagnostics.projection_summary``
reports): rank-normalised split :math:`\hat R` (the larger of the bulk and the
folded one) and bulk effective sample size, computed here in numpy as in Vehtari,
Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization, folding, and
localization: an improved :math:`\hat R` for assessing convergence of MCMC",
Bayesian Analysis 16(2) (the estimators ArviZ and Stan use), plus divergences and
the mean acceptance rate.

Thresholds (module constants):

* :math:`\hat R` > 1.05 on any projection: the chains disagree;
* bulk ESS below ``max(100, 10 * num_chains)`` on any projection: with fewer than
  100 effective draws the Monte Carlo error of a mean exceeds a tenth of a
  posterior standard deviation and :math:`\hat R` itself is unreliable (Vehtari
  et al. 2021, section 4); many short chains need at least 10 effective draws
  each for their :math:`\hat R` to mean anything;
* any divergent transition;
* mean acceptance rate below 0.2.

:math:`\hat R` and ESS need at least 4 draws per chain; with fewer only the
divergence and acceptance checks run.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

RHAT_MAX = 1.05
ESS_MIN = 100
ESS_MIN_PER_CHAIN = 10
ACCEPTANCE_MIN = 0.2
NUM_PROJECTIONS = 100
MIN_DRAWS = 4


class SamplerWarning(UserWarning):
    """A sampler run whose draws should not be trusted as they are (not mixed,
    too few effective draws, divergent transitions or a very low acceptance
    rate). The message says what was seen and what to change."""


def projections(draws, num_projections: int = NUM_PROJECTIONS, seed: int = 0):
    """``(chain, draw, K)`` fixed Gaussian projections of ``(chain, draw, ...)``
    draws, scaled by ``1/sqrt(dim)`` (the directions of
    ``widebnn.diagnostics.random_projections`` for one array)."""
    draws = np.asarray(draws)
    chains, num_draws = draws.shape[:2]
    flat = draws.reshape(chains * num_draws, -1).astype(np.float64)
    rng = np.random.default_rng(seed)
    total = np.zeros((chains * num_draws, num_projections))
    for start in range(0, flat.shape[1], 8192):
        block = flat[:, start : start + 8192]
        total += block @ rng.standard_normal((block.shape[1], num_projections))
    return (total / np.sqrt(max(flat.shape[1], 1))).reshape(
        chains, num_draws, num_projections
    )


def _split(draws):
    """``(2 * chain, half, K)``: the first and last halves of every chain (the
    middle draw of an odd-length chain is dropped)."""
    half = draws.shape[1] // 2
    return np.concatenate([draws[:, :half], draws[:, draws.shape[1] - half :]], 0)


def _rank_normalise(draws):
    """Normal scores of the pooled ranks of each ``[..., k]`` column (average
    ranks for ties, Blom's offset :math:`(r - 3/8)/(S + 1/4)`)."""
    size = draws.shape[0] * draws.shape[1]
    flat = draws.reshape(size, -1)
    ranks = rankdata(flat, method="average", axis=0)
    return ndtri((ranks - 0.375) / (size + 0.25)).reshape(draws.shape)


def _rhat(draws):
    """Gelman-Rubin :math:`\\hat R` of ``(chain, draw, K)`` columns."""
    n = draws.shape[1]
    within = np.mean(np.var(draws, axis=1, ddof=1), axis=0)
    between = n * np.var(np.mean(draws, axis=1), axis=0, ddof=1)
    var_plus = (n - 1) / n * within + between / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(var_plus / within)


def rank_rhat(draws) -> np.ndarray:
    """Rank-normalised split :math:`\\hat R` (max of bulk and folded) per column.

    Args:
        draws: ``(chain, draw, K)`` with ``draw >= 4``.

    Returns:
        ``(K,)``.
    """
    split = _split(np.asarray(draws, dtype=np.float64))
    bulk = _rhat(_rank_normalise(split))
    folded = np.abs(split - np.median(split.reshape(-1, split.shape[-1]), axis=0))
    return np.maximum(bulk, _rhat(_rank_normalise(folded)))


def _autocovariance(draws):
    """Biased autocovariance of each chain along axis 1 (FFT, zero-padded)."""
    n = draws.shape[1]
    centred = draws - draws.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=1)[:, :n] / n


def _ess(draws):
    """ESS of ``(chain, draw, K)`` columns: autocorrelations combined over chains,
    truncated by Geyer's initial positive sequence and made monotone."""
    chains, n = draws.shape[:2]
    acov = _autocovariance(draws)
    mean_var = np.mean(acov[:, 0], axis=0) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if chains > 1:
        var_plus = var_plus + np.var(np.mean(draws, axis=1), axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var - np.mean(acov, axis=0)) / var_plus  # (n, K)
    rho[0] = 1.0
    num_columns = rho.shape[1]
    kept = np.zeros_like(rho)
    kept[:2] = rho[:2]
    last = np.ones(num_columns, dtype=int)  # index of the last lag of a kept pair
    active = (rho[0] + rho[1]) > 0
    even = rho[0].copy()
    t = 1
    # Initial positive sequence: pairs (t+1, t+2) while the previous pair sum is
    # positive; a pair with a negative sum is not kept.
    while t < n - 3 and np.any(active):
        pair_even, pair_odd = rho[t + 1], rho[t + 2]
        even = np.where(active, pair_even, even)
        keep = active & (pair_even + pair_odd >= 0)
        kept[t + 1] = np.where(keep, pair_even, kept[t + 1])
        kept[t + 2] = np.where(keep, pair_odd, kept[t + 2])
        last = np.where(active, t + 2, last)
        active = active & (pair_even + pair_odd > 0)
        t += 2
    max_t = last - 2
    # The even lag after the last kept pair counts once when positive.
    rows = np.arange(num_columns)
    kept[max_t + 1, rows] = np.where(even > 0, even, kept[max_t + 1, rows])
    # Initial monotone sequence: a pair sum may not exceed the previous one.
    for t in range(1, int(max_t.max()) - 1, 2):
        inside = t <= max_t - 2
        previous = kept[t - 1] + kept[t]
        fix = inside & (kept[t + 1] + kept[t + 2] > previous)
        kept[t + 1] = np.where(fix, previous / 2, kept[t + 1])
        kept[t + 2] = np.where(fix, previous / 2, kept[t + 2])
    lags = np.arange(n)[:, None]
    tau = (
        -1.0
        + 2.0 * np.sum(np.where(lags <= max_t, kept, 0.0), axis=0)
        + np.sum(np.where(lags == max_t + 1, kept, 0.0), axis=0)
    )
    total = chains * n
    tau = np.maximum(tau, 1.0 / np.log10(total))
    ess = total / tau
    return np.where(np.any(np.isnan(rho), axis=0), np.nan, ess)


def bulk_ess(draws) -> np.ndarray:
    """Bulk ESS (rank-normalised, split chains) of each ``(chain, draw, K)``
    column (``draw >= 4``); returns ``(K,)``."""
    return _ess(_rank_normalise(_split(np.asarray(draws, dtype=np.float64))))


def _faster_options(settings) -> str:
    """A hint for runs that did not use the fastest-mixing options."""
    if settings is None or settings.get("exact_readout", True):
        return ""
    if settings.get("reparam") == "repriorised":
        return (
            " exact_readout=True and integrator='gaussian_split' (the defaults "
            "with kernel_reg = noise_std**2) mix much faster."
        )
    return (
        " reparam='repriorised' (with its defaults exact_readout=True and "
        "integrator='gaussian_split') mixes much faster for wide networks."
    )


def problems(predictions, sample_stats, settings=None) -> list[str]:
    """The reasons not to trust a run, each with what to do about it.

    Args:
        predictions: ``(chain, draw, M, out_dim)`` predictions.
        sample_stats: ``(chain, draw)`` arrays ``acceptance_rate`` and
            ``diverging``.
        settings: the run's settings (``reparam``, ``exact_readout``), for the
            advice; optional.

    Returns:
        Messages (empty for a run that passes every check).
    """
    messages = []
    faster = _faster_options(settings)
    chains, num_draws = np.shape(predictions)[:2]
    if num_draws >= MIN_DRAWS:
        projected = projections(predictions)
        rhat = rank_rhat(projected)
        ess = bulk_ess(projected)
        # All-NaN columns (predictions that never vary) say nothing: skipped.
        worst_rhat = float(np.nanmax(rhat)) if np.any(~np.isnan(rhat)) else 1.0
        if worst_rhat > RHAT_MAX:
            messages.append(
                f"R-hat of random projections of the predictions is up to "
                f"{worst_rhat:.3g} (> {RHAT_MAX}): the chains disagree and have not "
                "converged. Run a longer warm-up (num_warmup) and more draws "
                "(num_samples)." + faster
            )
        floor = max(ESS_MIN, ESS_MIN_PER_CHAIN * chains)
        worst_ess = float(np.nanmin(ess)) if np.any(~np.isnan(ess)) else np.inf
        if worst_ess < floor:
            messages.append(
                f"bulk ESS of random projections of the predictions is as low as "
                f"{worst_ess:.0f} of {chains * num_draws} draws (< {floor}): "
                "Monte Carlo errors are large and R-hat is unreliable. Run more "
                "draws (num_samples) or more chains." + faster
            )
    diverging = int(np.sum(sample_stats["diverging"]))
    if diverging:
        messages.append(
            f"{diverging} of {chains * num_draws} kept draws followed a divergent "
            "transition: the step size is too large for part of the posterior, and "
            "the draws may miss it. Raise target_acceptance (e.g. 0.95), lengthen "
            "the warm-up, or pass a smaller step_size."
        )
    acceptance = float(np.mean(sample_stats["acceptance_rate"]))
    if not acceptance >= ACCEPTANCE_MIN:
        messages.append(
            f"mean acceptance rate {acceptance:.3g} (< {ACCEPTANCE_MIN}): the chains "
            "barely move. With a fixed step_size, make it smaller or pass "
            "step_size=None to adapt it; otherwise lengthen the warm-up "
            "(num_warmup)."
        )
    return messages


def warn_if_unreliable(posterior, stacklevel: int = 2) -> None:
    """Raises a :class:`SamplerWarning` for each of :func:`problems`."""
    found = problems(posterior.predictions, posterior.sample_stats, posterior.settings)
    for message in found:
        warnings.warn(message, SamplerWarning, stacklevel=stacklevel + 1)
