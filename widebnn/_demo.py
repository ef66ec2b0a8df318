"""``widebnn demo``: the main job end to end on the built-in 1-D regression.

1. the NNGP posterior of a one-hidden-layer ReLU network (infinite width);
2. repriorised GHMC of the same network at a finite width, 4 chains (exact
   readout per draw, Gaussian-split integrator);
3. exact posterior samples by rejection on a small subset of the data (where
   rejection is feasible), with the NNGP posterior of that subset;
4. comparison tables (MCMC vs GP, exact vs GP), an ArviZ summary of random
   projections, and PNG plots, written to the output directory.

The acceptance rate of rejection sampling falls about exponentially with the
number of points the posterior has to bend to fit, so the exact part uses the
training points nearest to a few evenly spaced inputs on a short interval around
0, where :math:`\\sin 3x + x/2` rises monotonically: for the full demo's 4 points
on ``[-0.75, 0.75]`` the acceptance rate is about 5 % (the NNGP evidence over
the data bound), against about 2e-5 for the first 8 training points.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import time
from typing import NamedTuple

import numpy as np


class DemoSettings(NamedTuple):
    """Sizes of the demo (``quick``: a smoke run of a few tens of seconds)."""

    n_train: int
    n_test: int
    width: int
    chains: int
    warmup: int
    draws: int
    thin: int
    n_exact: int
    exact_width: int
    exact_range: float
    exact_draws: int
    exact_seconds: float


FULL = DemoSettings(
    n_train=64,
    n_test=60,
    width=512,
    chains=4,
    warmup=500,
    draws=500,
    thin=2,
    n_exact=4,
    exact_width=128,
    exact_range=0.75,
    exact_draws=1000,
    exact_seconds=60.0,
)
QUICK = DemoSettings(
    n_train=16,
    n_test=20,
    width=32,
    chains=2,
    warmup=60,
    draws=40,
    thin=1,
    n_exact=3,
    exact_width=16,
    exact_range=0.6,
    exact_draws=20,
    exact_seconds=30.0,
)
NOISE_STD = 0.3


def _model(width):
    from widebnn import WideBNN, kernels

    body = kernels.serial(kernels.Dense(width, 1.5, 1.0), kernels.Relu())
    return WideBNN(body, width, 1.0, 0.1, noise_std=NOISE_STD, out_dim=1)


def _gp(model, x, y):
    from widebnn import gp

    return gp.posterior(model.kernel, x, y, noise_var=model.noise_std**2, get="nngp")


def exact_subset(x, count: int, half_range: float) -> np.ndarray:
    """Indices of ``count`` distinct training points, each the nearest unused one
    to ``count`` evenly spaced inputs on ``[-half_range, half_range]``.

    Args:
        x: ``(N, 1)`` training inputs, ``N >= count``.
        count: number of points.
        half_range: the targets span ``[-half_range, half_range]``.

    Returns:
        ``(count,)`` integer indices into ``x``, in the order of the targets.
    """
    values = np.asarray(x, dtype=np.float64)[:, 0]
    chosen: list[int] = []
    for target in np.linspace(-half_range, half_range, count):
        distance = np.abs(values - target)
        distance[chosen] = np.inf
        chosen.append(int(np.argmin(distance)))
    return np.asarray(chosen)


def _blas_one_thread():
    """One BLAS thread while the demo runs: small factorisations on a busy
    machine are many times slower with OpenBLAS's thread pool."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of widebnn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run_demo(out: pathlib.Path, *, quick: bool = False, progress: bool = True) -> int:
    """Runs the demo and writes its files to ``out``.

    Runs in float64 when the caller turned it on (``widebnn demo`` does; the data
    are the same in float32, the sampling is not).

    Args:
        out: output directory (created).
        quick: tiny settings (a smoke run).
        progress: show progress bars.

    Returns:
        0 (the exit code).
    """
    with _blas_one_thread():
        return _run(out, QUICK if quick else FULL, progress)


def _run(out: pathlib.Path, settings: DemoSettings, progress: bool) -> int:
    import arviz as az
    import jax

    from widebnn import compare, data, diagnostics, plots, samplers

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    key_data, key_hmc, key_exact = jax.random.split(jax.random.key(0), 3)
    x, y, x_test, _ = data.toy_regression(
        settings.n_train, key_data, noise_std=NOISE_STD, n_test=settings.n_test
    )
    files, tables = [], {}
    print(
        f"data: y = sin(3x) + x/2 + noise (sd {NOISE_STD}), {settings.n_train} "
        f"training points, {settings.n_test} test inputs on [-2.5, 2.5] "
        f"({x.dtype})"
    )

    # 1-2. NNGP posterior and repriorised GHMC at finite width.
    model = _model(settings.width)
    gp_posterior = _gp(model, x, y)
    print(
        f"\n[1/3] MCMC: repriorised GHMC (exact readout, Gaussian-split integrator), "
        f"width {settings.width}, {settings.chains} chains x {settings.draws} draws "
        f"(thin {settings.thin}) after {settings.warmup} warm-up transitions"
    )
    start = time.perf_counter()
    posterior = samplers.hmc(
        model,
        x,
        y,
        algorithm="ghmc",
        exact_readout=True,
        integrator="gaussian_split",
        num_chains=settings.chains,
        num_warmup=settings.warmup,
        num_samples=settings.draws,
        thin=settings.thin,
        key=key_hmc,
        x_pred=x_test,
        progress=progress,
    )
    print(f"      {time.perf_counter() - start:.1f} s (compilation included)")
    result = compare.predictive(posterior, gp_posterior, x_test)
    print(result.table())
    tables["ghmc_vs_nngp"] = {"draws": result.label} | result.to_dict()
    idata = diagnostics.to_inference_data(
        posterior,
        model=model,
        x_test=x_test,
        x_train=x,
        observed={"y": y},
        num_projections=4,
    )
    summary = az.summary(idata, var_names=["f_projection", "weight_projection"])
    print("\nArviZ summary of 4 random projections of predictions and weights:")
    print(summary.to_string())
    files.append(diagnostics.save_inference_data(idata, out / "posterior.nc"))
    files.append(
        plots.plot_predictive(
            posterior,
            gp_posterior,
            x_test,
            out / "predictive_ghmc.png",
            x_train=x,
            y_train=y,
            title=f"MCMC: repriorised GHMC (width {settings.width}) vs NNGP",
        )
    )
    files.append(plots.plot_trace(idata, out / "trace.png"))
    files.append(plots.plot_energy(idata, out / "energy.png"))

    # 3. exact samples by rejection on a subset.
    files += _exact_part(settings, x, y, x_test, key_exact, progress, out, tables)

    print("\n[3/3] files")
    (out / "comparison.json").write_text(json.dumps(tables, indent=2))
    files.append(str(out / "comparison.json"))
    for path in files:
        print(f"  {path}")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    return 0


def _exact_part(settings, x, y, x_test, key, progress, out, tables) -> list[str]:
    """Rejection sampling on the subset, its table and plot; on a budget error
    the message is printed and the part skipped (the rest of the demo stands)."""
    from widebnn import compare, plots, samplers

    subset = exact_subset(x, settings.n_exact, settings.exact_range)
    x_small, y_small = x[subset], y[subset]
    exact_model = _model(settings.exact_width)
    inputs = ", ".join(f"{v:.2f}" for v in np.sort(np.asarray(x_small)[:, 0]))
    print(
        f"\n[2/3] exact posterior by rejection sampling: {settings.n_exact} training "
        f"points (x = {inputs}), width {settings.exact_width}, "
        f"{settings.exact_draws} draws"
    )
    start = time.perf_counter()
    try:
        exact = samplers.rejection(
            exact_model,
            x_small,
            y_small,
            num_samples=settings.exact_draws,
            key=key,
            x_pred=x_test,
            max_seconds=settings.exact_seconds,
            progress=progress,
        )
    except samplers.RejectionBudgetError as error:
        print(f"      skipped: {error}")
        return []
    print(
        f"      {time.perf_counter() - start:.1f} s, acceptance rate "
        f"{exact.acceptance_rate:.3g} ({exact.num_proposals} proposals), "
        f"log evidence {exact.log_evidence:.3f} +- {exact.log_evidence_stderr:.3f}"
    )
    gp_small = _gp(exact_model, x_small, y_small)
    result = compare.predictive(exact, gp_small, x_test)
    print(result.table())
    tables["rejection_vs_nngp"] = {"draws": result.label} | result.to_dict()
    return [
        plots.plot_predictive(
            exact,
            gp_small,
            x_test,
            out / "predictive_rejection.png",
            x_train=x_small,
            y_train=y_small,
            title=f"exact posterior by rejection (width {settings.exact_width}) "
            "vs NNGP",
        )
    ]
