"""``width_sweep``: the finite-width posterior approaching its GP limit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAMPLERS = ("rejection", "hmc")
_PLOT_METRICS = ("w2", "kl", "mmd2", "rmse")


@dataclass
class WidthSweep:
    """Result of :func:`width_sweep`.

    Attributes:
        rows: one dict per width: ``width``, ``sampler``, ``seconds`` (sampling
            wall time, compilation included), ``acceptance_rate`` (NaN when the
            sampler gives none) and the columns of
            :meth:`PredictiveComparison.to_dict` (``num_draws``, ``ess``, and
            ``rmse``, ``rmse_se``, ``rmse_floor``, ``rmse_p`` ... for every
            metric).
        reference: exact distances of the NTK gradient-descent ensemble
            (``t = inf``, ridge ``noise_std**2``) from the NNGP posterior, keyed
            by metric (no ``mmd2``): the scale of "a different infinite-width
            predictive".
        comparisons: ``{width: PredictiveComparison}``.
        plot_path: where the distance-vs-width plot was written, or ``None``.
    """

    rows: list[dict[str, Any]]
    reference: dict[str, float]
    comparisons: dict[int, Any] = field(default_factory=dict)
    plot_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"rows": [...], "reference": {...}}`` (plain Python values)."""
        return {"rows": [dict(r) for r in self.rows], "reference": dict(self.reference)}

    def to_dataframe(self):
        """A ``pandas.DataFrame`` with one row per width."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def table(self, metrics=("rmse", "cov_rel_frobenius", "kl", "w2", "mmd2")) -> str:
        """Plain-text table: width, ESS, and ``value ± se`` of each metric.

        Args:
            metrics: the metric names to show.
        """
        head = f"{'width':>7}{'sampler':>10}{'ESS':>8}"
        head += "".join(f"{name:>22}" for name in metrics) + f"{'seconds':>9}"
        lines = [head]
        for row in self.rows:
            line = f"{row['width']:>7}{row['sampler']:>10}{row['ess']:>8.0f}"
            for name in metrics:
                line += f"{row[name]:>12.3g} ± {row[name + '_se']:<7.2g}"
            lines.append(line + f"{row['seconds']:>9.1f}")
        ref = "".join(
            f"{self.reference[n]:>12.3g}{'':>10}"
            if n in self.reference
            else f"{'':>22}"
            for n in metrics
        )
        lines.append(f"{'inf':>7}{'ntk-gd':>10}{'':>8}{ref}")
        return "\n".join(lines)

    def plot(self, path, metrics=_PLOT_METRICS) -> str:
        """Writes the distance-vs-width plot (:func:`widebnn.plots.plot_width_sweep`).

        Args:
            path: the PNG file to write.
            metrics: the metric names, one panel each.

        Returns:
            ``path`` as a string.
        """
        from .plots import plot_width_sweep

        return plot_width_sweep(self, path, metrics=metrics)


def _run_sampler(sampler, model, x, y, x_test, key, settings, progress):
    from widebnn import samplers

    if sampler == "rejection":
        kwargs = {"num_samples": settings["num_samples"]} | settings["extra"]
        return samplers.rejection(
            model, x, y, key=key, x_pred=x_test, progress=progress, **kwargs
        )
    kwargs = {
        "num_chains": settings["num_chains"],
        "num_warmup": settings["num_warmup"],
        "num_samples": settings["num_samples"],
        "store_params": False,
    } | settings["extra"]
    return samplers.hmc(
        model, x, y, key=key, x_pred=x_test, progress=progress, **kwargs
    )


def _acceptance(posterior) -> float:
    rate = getattr(posterior, "acceptance_rate", None)
    if rate is None:
        stats = getattr(posterior, "sample_stats", None) or {}
        rate = stats.get("acceptance_rate")
    return float("nan") if rate is None else float(np.mean(np.asarray(rate)))


def width_sweep(
    body_fn,
    widths,
    x,
    y,
    x_test,
    *,
    key,
    sampler: str = "rejection",
    noise_std: float = 0.1,
    readout_W_std: float = 1.0,
    readout_b_std: float = 0.1,
    parameterization: str = "ntk",
    num_samples: int = 1000,
    num_chains: int = 4,
    num_warmup: int = 500,
    sampler_kwargs: dict | None = None,
    compare_kwargs: dict | None = None,
    plot_path=None,
    progress: bool = True,
):
    """Samples the posterior of the same network at several widths and compares
    each with the GP (NNGP) posterior of its infinite-width limit.

    For every width ``n``: ``model = WideBNN(body_fn(n), n, readout_W_std,
    readout_b_std, noise_std, out_dim, parameterization)``, draws from ``sampler``
    with predictions at ``x_test``, and :func:`widebnn.compare.predictive` against
    ``gp.posterior(model.kernel, x, y, noise_var=noise_std**2)``. The NTK
    gradient-descent ensemble's exact distance from the NNGP posterior is given for
    reference. Nothing about the trend is assumed: read it off the table/plot with
    the error bars and the Monte Carlo floors.

    Args:
        body_fn: ``width -> widebnn.kernels`` layer mapping inputs to ``(N,
            width)`` features (e.g. ``lambda n: serial(Dense(n, 1.5, 0.1),
            Relu())``).
        widths: increasing positive integers.
        x: ``(N, ...)`` training inputs.
        y: ``(N, d)`` training targets.
        x_test: ``(N_pred, ...)`` test inputs.
        key: a PRNG key (width ``i`` uses ``fold_in(key, i)``).
        sampler: ``"rejection"`` (exact, small data) or ``"hmc"``
            (:func:`widebnn.samplers.hmc`, repriorised GHMC by default).
        noise_std: observation noise standard deviation of the model and the GP.
        readout_W_std: readout weight standard deviation.
        readout_b_std: readout bias standard deviation.
        parameterization: ``"ntk"`` or ``"standard"`` (of the readout).
        num_samples: draws (per chain for ``"hmc"``).
        num_chains: chains of ``"hmc"``.
        num_warmup: warm-up transitions of ``"hmc"``.
        sampler_kwargs: extra keyword arguments of the sampler.
        compare_kwargs: extra keyword arguments of ``compare.predictive``.
        plot_path: if given, the distance-vs-width PNG is written there.
        progress: show progress bars.

    Returns:
        :class:`WidthSweep` (``.table()``, ``.to_dict()``, ``.plot(path)``).

    Raises:
        ValueError: for an unknown sampler, empty or non-positive widths, or
            ``y`` that is not 2-D.
    """
    import jax
    from tqdm.auto import tqdm

    from . import gp
    from ._model import WideBNN
    from .compare import gaussian_distances, predictive

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
    widths = [int(w) for w in np.atleast_1d(widths)]
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be positive integers, got {widths}.")
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"y must be 2-D with shape (N, d), got shape {y.shape}.")
    settings = {
        "num_samples": num_samples,
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "extra": dict(sampler_kwargs or {}),
    }
    rows, comparisons, reference = [], {}, {}
    for i, width in enumerate(tqdm(widths, desc="widths", disable=not progress)):
        model = WideBNN(
            body_fn(width),
            width,
            readout_W_std,
            readout_b_std,
            noise_std,
            y.shape[1],
            parameterization,
        )
        start = time.perf_counter()
        posterior = _run_sampler(
            sampler, model, x, y, x_test, jax.random.fold_in(key, i), settings, progress
        )
        seconds = time.perf_counter() - start
        nngp = gp.posterior(model.kernel, x, y, noise_var=noise_std**2)
        result = predictive(posterior, nngp, x_test, **(compare_kwargs or {}))
        comparisons[width] = result
        rows.append(
            {
                "width": width,
                "sampler": sampler,
                "seconds": seconds,
                "acceptance_rate": _acceptance(posterior),
                **result.to_dict(),
            }
        )
        if i == len(widths) - 1:
            ntk = gp.posterior(model.kernel, x, y, noise_var=noise_std**2, get="ntk")
            reference = gaussian_distances(
                ntk.predict(x_test),
                nngp.predict(x_test),
                noise_var=result.settings["kl_noise_var"],
            )
    sweep = WidthSweep(rows, reference, comparisons)
    if plot_path is not None:
        sweep.plot_path = sweep.plot(plot_path)
    return sweep
