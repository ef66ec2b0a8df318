"""``widebnn demo``: the main job end to end on the built-in 1-D regression.

1. the NNGP posterior of a one-hidden-layer ReLU network (infinite width);
2. repriorised GHMC of the same network at a finite width, 4 chains;
3. exact posterior samples by rejection on a small subset of the data (where
   rejection is feasible), with the NNGP posterior of that subset;
4. comparison tables (MCMC vs GP, exact vs GP), an ArviZ summary of random
   projections, and PNG plots, written to the output directory.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import NamedTuple


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
    exact_draws: int


FULL = DemoSettings(
    n_train=64,
    n_test=60,
    width=512,
    chains=4,
    warmup=1000,
    draws=400,
    thin=5,
    n_exact=8,
    exact_width=128,
    exact_draws=300,
)
QUICK = DemoSettings(
    n_train=16,
    n_test=20,
    width=32,
    chains=2,
    warmup=60,
    draws=40,
    thin=1,
    n_exact=4,
    exact_width=16,
    exact_draws=20,
)
NOISE_STD = 0.3


def _model(width):
    from widebnn import WideBNN, kernels

    body = kernels.serial(kernels.Dense(width, 1.5, 1.0), kernels.Relu())
    return WideBNN(body, width, 1.0, 0.1, noise_std=NOISE_STD, out_dim=1)


def _gp(model, x, y):
    from widebnn import gp

    return gp.posterior(model.kernel, x, y, noise_var=model.noise_std**2, get="nngp")


def run_demo(out: pathlib.Path, *, quick: bool = False, progress: bool = True) -> int:
    """Runs the demo and writes its files to ``out``.

    Runs in float64 when the caller turned it on (``widebnn demo`` does).

    Args:
        out: output directory (created).
        quick: tiny settings (a smoke run).
        progress: show progress bars.

    Returns:
        0 (the exit code).
    """
    import arviz as az
    import jax

    from widebnn import compare, data, diagnostics, plots, samplers

    settings = QUICK if quick else FULL
    out.mkdir(parents=True, exist_ok=True)
    key_data, key_hmc, key_exact = jax.random.split(jax.random.key(0), 3)
    x, y, x_test, _ = data.toy_regression(
        settings.n_train, key_data, noise_std=NOISE_STD, n_test=settings.n_test
    )
    files, tables = [], {}
    print(
        f"data: y = sin(3x) + x/2 + noise (sd {NOISE_STD}), {settings.n_train} "
        f"training points, {settings.n_test} test inputs on [-2.5, 2.5]"
    )

    # 1-2. NNGP posterior and repriorised GHMC at finite width.
    model = _model(settings.width)
    gp_posterior = _gp(model, x, y)
    print(
        f"\n[1/3] repriorised GHMC, width {settings.width}, {settings.chains} chains "
        f"x {settings.draws} draws (thin {settings.thin})"
    )
    start = time.perf_counter()
    posterior = samplers.hmc(
        model,
        x,
        y,
        algorithm="ghmc",
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
    tables["ghmc_vs_nngp"] = result.to_dict()
    idata = diagnostics.to_inference_data(
        posterior, model=model, x_test=x_test, observed={"y": y}, num_projections=4
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
            title=f"repriorised GHMC (width {settings.width}) vs NNGP",
        )
    )
    files.append(plots.plot_trace(idata, out / "trace.png"))
    files.append(plots.plot_energy(idata, out / "energy.png"))

    # 3. exact samples by rejection on a subset.
    n_exact = settings.n_exact
    x_small, y_small = x[:n_exact], y[:n_exact]
    exact_model = _model(settings.exact_width)
    print(
        f"\n[2/3] exact posterior by rejection: {n_exact} training points, width "
        f"{settings.exact_width}, {settings.exact_draws} draws"
    )
    start = time.perf_counter()
    exact = samplers.rejection(
        exact_model,
        x_small,
        y_small,
        num_samples=settings.exact_draws,
        key=key_exact,
        x_pred=x_test,
        progress=progress,
    )
    print(
        f"      {time.perf_counter() - start:.1f} s, acceptance rate "
        f"{exact.acceptance_rate:.3g} ({exact.num_proposals} proposals), "
        f"log evidence {exact.log_evidence:.3f} +- {exact.log_evidence_stderr:.3f}"
    )
    gp_small = _gp(exact_model, x_small, y_small)
    result = compare.predictive(exact, gp_small, x_test)
    print(result.table())
    tables["rejection_vs_nngp"] = result.to_dict()
    files.append(
        plots.plot_predictive(
            exact,
            gp_small,
            x_test,
            out / "predictive_rejection.png",
            x_train=x_small,
            y_train=y_small,
            title=f"exact posterior (width {settings.exact_width}) vs NNGP",
        )
    )

    print("\n[3/3] files")
    (out / "comparison.json").write_text(json.dumps(tables, indent=2))
    files.append(str(out / "comparison.json"))
    for path in files:
        print(f"  {path}")
    return 0
