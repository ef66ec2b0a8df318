"""Plots saved as PNG files, usable headless (no display needed).

* :func:`plot_predictive`: sampled (MCMC or exact) vs GP predictive bands for 1-D
  inputs; the legend names how the draws were made (``"exact (rejection)"``,
  ``"MCMC (ghmc)"``).
* :func:`plot_width_sweep`: distances to the GP limit against width, log axes,
  with Monte Carlo error bars, floors and the NTK-ensemble reference.
* :func:`plot_trace`, :func:`plot_energy`: ArviZ trace/rank and energy plots; for a
  sampler result the traces are of random projections (a few scalars that summarise
  predictions and weights), not of every weight.

Every function takes the output path and returns it. Our own figures are built with
``matplotlib.figure.Figure`` (no pyplot state, no GUI backend); the ArviZ ones use
pyplot, are laid out with matplotlib's constrained layout (so that subplot titles
do not run into the tick labels of the panel above) and close their figure.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np

from ._draws import method_label, predictions_of


def _save(fig, path) -> str:
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_predictive(
    posterior_or_draws,
    gp_posterior,
    x_test,
    path,
    *,
    x_train=None,
    y_train=None,
    output: int = 0,
    level: float = 0.95,
    title: str | None = None,
    label: str | None = None,
) -> str:
    """Predictive bands of the sampled network and of the GP, for 1-D inputs.

    Draws: the mean and the central ``level`` interval (empirical quantiles),
    named in the legend by ``label``. GP: the mean and ``mean ± z sd`` (Gaussian
    quantile ``z``).

    Args:
        posterior_or_draws: a sampler result with ``.predictions (chain, draw,
            N_pred, d)`` made at ``x_test``, or such an array.
        gp_posterior: a :func:`widebnn.gp.posterior` result, or its prediction
            ``(mean (N_pred, d), covariance (N_pred, N_pred) or (N_pred,))``.
        x_test: ``(N_pred, 1)`` or ``(N_pred,)`` test inputs.
        path: the PNG file to write (folders are created).
        x_train: optional ``(N, 1)`` training inputs, shown as points.
        y_train: optional ``(N, d)`` training targets.
        output: which output column to plot.
        level: probability of the bands, in (0, 1).
        title: optional title.
        label: the draws' name in the legend (default: from the sampler result,
            ``"exact (rejection)"`` or ``"MCMC (<algorithm>)"``; ``"samples"`` for
            an array).

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: if the inputs are not 1-D, or on shape mismatches.
    """
    import scipy.stats
    from matplotlib.figure import Figure

    predictions = predictions_of(posterior_or_draws, "posterior_or_draws")
    x = np.asarray(x_test, dtype=float)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1 or x.shape[0] != predictions.shape[2]:
        raise ValueError(
            f"x_test must be 1-D inputs (N_pred,) or (N_pred, 1) with N_pred = "
            f"{predictions.shape[2]}, got shape {np.shape(x_test)}."
        )
    if not 0 <= output < predictions.shape[3]:
        raise ValueError(
            f"output must be in [0, {predictions.shape[3]}), got {output}."
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    if hasattr(gp_posterior, "predict"):
        mean, cov = gp_posterior.predict(x_test, full_cov=False)
    else:
        mean, cov = gp_posterior
    mean, cov = np.asarray(mean, float), np.asarray(cov, float)
    variance = np.diag(cov) if cov.ndim == 2 else cov
    if mean.shape != predictions.shape[2:] or variance.shape != x.shape:
        raise ValueError(
            f"the GP prediction has mean {mean.shape} and variance {variance.shape}; "
            f"expected {predictions.shape[2:]} and {x.shape}."
        )
    order = np.argsort(x)
    draws = predictions[..., output].reshape(-1, x.size)[:, order]
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    z = scipy.stats.norm.ppf((1 + level) / 2)
    gp_mean = mean[order, output]
    gp_sd = np.sqrt(np.clip(variance[order], 0, None))
    xs = x[order]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.fill_between(xs, gp_mean - z * gp_sd, gp_mean + z * gp_sd, color="C0",
                    alpha=0.25, label=f"GP {level:.0%}")  # fmt: skip
    ax.plot(xs, gp_mean, color="C0", label="GP mean")
    label = method_label(posterior_or_draws) if label is None else str(label)
    ax.plot(xs, lo, color="C1", ls="--", label=f"{label} {level:.0%}")
    ax.plot(xs, hi, color="C1", ls="--")
    ax.plot(xs, draws.mean(0), color="C1", label=f"{label} mean")
    if x_train is not None and y_train is not None:
        xt = np.asarray(x_train, float).reshape(len(np.asarray(x_train)), -1)[:, 0]
        yt = np.asarray(y_train, float).reshape(len(xt), -1)[:, output]
        ax.scatter(xt, yt, s=12, color="k", zorder=3, label="data")
    ax.set_xlabel("x")
    ax.set_ylabel(f"f(x)[{output}]")
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _sweep_parts(sweep):
    if hasattr(sweep, "rows"):
        return list(sweep.rows), dict(sweep.reference)
    if isinstance(sweep, dict) and "rows" in sweep:
        return list(sweep["rows"]), dict(sweep.get("reference", {}))
    raise TypeError(
        f"sweep must be a WidthSweep or its .to_dict(), got {type(sweep).__name__}."
    )


_SWEEP_LABELS = {"rejection": "exact (rejection)", "hmc": "MCMC"}


def plot_width_sweep(sweep, path, *, metrics=("w2", "kl", "mmd2", "rmse")) -> str:
    """Distance to the GP limit against width, log-log, one panel per metric.

    The points are named by the rows' ``sampler`` (``"exact (rejection)"`` or
    ``"MCMC"``; ``"samples"`` without one).

    Points are ``value ± se`` (Monte Carlo standard error); the dotted line is the
    Monte Carlo floor (the value exact GP draws of the same ESS give); the dashed
    line is the NTK gradient-descent ensemble's distance from the NNGP posterior.
    Non-positive values (``mmd2`` can be negative) are drawn at the bottom edge
    as open markers.

    Args:
        sweep: a :class:`widebnn.compare.WidthSweep` or its ``to_dict()``.
        path: the PNG file to write.
        metrics: metric names, one panel each.

    Returns:
        ``path`` as a string.
    """
    from matplotlib.figure import Figure

    rows, reference = _sweep_parts(sweep)
    if not rows:
        raise ValueError("sweep has no rows to plot.")
    widths = np.array([row["width"] for row in rows], dtype=float)
    names = {_SWEEP_LABELS.get(row.get("sampler"), "samples") for row in rows}
    label = " / ".join(sorted(names))
    fig = Figure(figsize=(3.6 * len(metrics), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, name in zip(axes, metrics, strict=True):
        values = np.array([row[name] for row in rows], dtype=float)
        se = np.array([row[f"{name}_se"] for row in rows], dtype=float)
        floors = np.array([row[f"{name}_floor"] for row in rows], dtype=float)
        positive = values > 0
        candidates = [values[positive], (values + se)[values + se > 0], floors]
        pool = np.concatenate([c[c > 0] for c in candidates] + [np.ones(0)])
        bottom = pool.min() / 3 if pool.size else 1e-6
        lower = np.clip(values - se, bottom, None)
        ax.errorbar(widths[positive], values[positive],
                    yerr=[values[positive] - lower[positive], se[positive]],
                    fmt="o-", color="C0", capsize=3,
                    label=f"{label} ± s.e.")  # fmt: skip
        if np.any(~positive):
            ax.plot(widths[~positive], np.full((~positive).sum(), bottom), "o",
                    mfc="none", color="C0", label="≤ 0")  # fmt: skip
        if np.any(floors > 0):
            ax.plot(widths, floors, ":", color="gray", label="MC floor")
        if name in reference and reference[name] > 0:
            ax.axhline(reference[name], ls="--", color="C3", label="NTK-GD ens.")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(bottom=bottom / 1.5)
        ax.set_xlabel("width")
        ax.set_title(name)
    axes[0].legend(fontsize="x-small", loc="best")
    return _save(fig, path)


def _save_arviz(path) -> str:
    """Saves and closes pyplot's current figure (an ArviZ plot), laid out with
    matplotlib's constrained layout so that titles clear the tick labels."""
    import matplotlib.pyplot as plt

    fig = plt.gcf()
    try:
        fig.set_layout_engine("constrained")
        return _save(fig, path)
    finally:
        plt.close(fig)


@contextlib.contextmanager
def _quiet_arviz():
    """ArviZ 0.23.4 plots call a matplotlib helper deprecated in matplotlib 3.11."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Passing a dict or None as alias_mapping")
        yield


def _as_inference_data(data, num_projections):
    from .diagnostics import to_inference_data

    if hasattr(data, "groups") or hasattr(data, "children"):
        posterior = getattr(data, "posterior", None)
        names = [
            name
            for name in ("f_projection", "weight_projection")
            if posterior is not None and name in posterior
        ]
        return data, names or None
    idata = to_inference_data(
        data, include_params=False, num_projections=num_projections
    )
    names = ["f_projection"]
    if "weight_projection" in idata.posterior:
        names.append("weight_projection")
    return idata, names


def plot_trace(
    data, path, *, var_names=None, kind: str = "trace", num_projections: int = 4
) -> str:
    """ArviZ trace (``kind="trace"``) or rank (``kind="rank"``) plot.

    Args:
        data: an ``InferenceData`` (from :func:`widebnn.diagnostics.to_inference_data`)
            or a sampler result / predictions array, which is converted keeping
            ``num_projections`` random projections of predictions and weights.
        path: the PNG file to write.
        var_names: variables to plot (default: the random projections
            ``f_projection``/``weight_projection`` when present, else every
            posterior variable).
        kind: ``"trace"`` or ``"rank"``.
        num_projections: projections per group when converting a sampler result.

    Returns:
        ``path`` as a string.
    """
    import arviz as az

    if kind not in ("trace", "rank"):
        raise ValueError(f"kind must be 'trace' or 'rank', got {kind!r}.")
    idata, default_names = _as_inference_data(data, num_projections)
    var_names = var_names if var_names is not None else default_names
    plot = az.plot_trace if kind == "trace" else az.plot_rank
    with _quiet_arviz():
        plot(idata, var_names=var_names)
    return _save_arviz(path)


def plot_energy(data, path) -> str:
    """ArviZ energy plot (marginal energy vs energy transitions, with BFMI).

    Args:
        data: an ``InferenceData`` with ``sample_stats.energy``, or a sampler
            result whose ``sample_stats`` has ``energy``.
        path: the PNG file to write.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: if there is no ``energy`` statistic.
    """
    import arviz as az

    idata, _ = _as_inference_data(data, 1)
    stats = getattr(idata, "sample_stats", None)
    if stats is None or "energy" not in stats:
        raise ValueError("plot_energy needs sample_stats with 'energy'.")
    with _quiet_arviz():
        az.plot_energy(idata)
    return _save_arviz(path)
