"""Exact posterior of a small ReLU network vs repriorised GHMC vs the NNGP posterior.

A 1-D regression with N = 8 points (``y = sin(x) + noise``, noise std 0.3) and a
one-hidden-layer ReLU network (width 32, NTK parameterisation). Three posterior
predictive distributions of the network output are overlaid in one PNG:

* exact draws by rejection sampling (``widebnn.samplers.rejection``: hidden
  weights proposed from the prior and accepted with the readout-marginalised
  likelihood, readout drawn exactly);
* repriorised GHMC (``widebnn.samplers.hmc``, 4 chains);
* the NNGP posterior of the infinitely wide network (``widebnn.gp``).

Bands are the 5-95 % quantiles (samplers) and mean +- 1.645 sd (NNGP). The
returned dict holds the acceptance rate, the evidence and how far the sampled
means/standard deviations are from the NNGP and from each other.

Run: ``python examples/exact_vs_mcmc.py`` (well under 2 minutes on 2 CPU cores);
``--out`` sets the PNG path.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from widebnn import WideBNN, gp, kernels, samplers  # noqa: E402

NOISE = 0.3
W_STD, B_STD = math.sqrt(2.0), 0.2
READOUT_W_STD, READOUT_B_STD = 1.0, 0.2


def problem(n_train: int = 8, seed: int = 0):
    """``(x, y, x_grid)``: ``n_train`` noisy points of ``sin`` on [-2.5, 2.5]."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-2.5, 2.5, n_train))[:, None]
    y = np.sin(x) + NOISE * rng.standard_normal(x.shape)
    x_grid = np.linspace(-4.0, 4.0, 121)[:, None]
    return x, y, x_grid


def network(width: int):
    """The finite network and its infinite-width kernel."""
    body = kernels.serial(kernels.Dense(width, W_STD, B_STD), kernels.Relu())
    model = WideBNN(body, width, READOUT_W_STD, READOUT_B_STD, NOISE, 1)
    limit = kernels.serial(body, kernels.Dense(1, READOUT_W_STD, READOUT_B_STD))
    return model, limit


def _band(draws):
    """Mean, 5 % and 95 % quantiles of ``(draws, points)``."""
    return draws.mean(0), np.quantile(draws, 0.05, 0), np.quantile(draws, 0.95, 0)


def main(
    width: int = 32,
    n_train: int = 8,
    exact_samples: int = 2000,
    hmc_samples: int = 1000,
    hmc_warmup: int = 1000,
    out: str | None = "exact_vs_mcmc.png",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Samples the three posteriors, writes the plot and returns summary numbers.

    Args:
        width: hidden units of the network.
        n_train: training points.
        exact_samples: rejection-sampling draws.
        hmc_samples: kept GHMC draws per chain (4 chains, thinned by 5); 0 skips
            the MCMC run.
        hmc_warmup: GHMC warm-up transitions (step size adapted).
        out: PNG path, or ``None`` for no plot.
        seed: data and sampler seed.
        progress: progress bars.

    Returns:
        A dict: ``acceptance_rate``, ``num_proposals``, ``log_evidence`` (and its
        ``log_evidence_stderr``), ``nngp_log_evidence``, the largest absolute
        differences of predictive means and sds on the grid (``exact_vs_nngp_*``,
        ``hmc_vs_exact_*``), and the wall ``seconds`` of each method.
    """
    x, y, x_grid = problem(n_train, seed)
    model, limit = network(width)
    key = jax.random.key(seed)
    result, seconds = {}, {}

    start = time.perf_counter()
    exact = samplers.rejection(
        model, x, y, num_samples=exact_samples, key=jax.random.fold_in(key, 1),
        x_pred=x_grid, progress=progress,
    )  # fmt: skip
    seconds["exact"] = time.perf_counter() - start
    exact_f = np.asarray(exact.predictions[0, :, :, 0])

    start = time.perf_counter()
    nngp = gp.posterior(limit, x, y, noise_var=NOISE**2)
    nngp_mean, nngp_var = nngp.predict(x_grid, full_cov=False)
    nngp_mean, nngp_sd = np.asarray(nngp_mean[:, 0]), np.sqrt(np.asarray(nngp_var))
    seconds["nngp"] = time.perf_counter() - start

    hmc_f = None
    if hmc_samples > 0:
        start = time.perf_counter()
        post = samplers.hmc(
            model, x, y, algorithm="ghmc", reparam="repriorised", num_chains=4,
            num_warmup=hmc_warmup, num_samples=hmc_samples, thin=5, x_pred=x_grid,
            key=jax.random.fold_in(key, 2), progress=progress,
        )  # fmt: skip
        seconds["hmc"] = time.perf_counter() - start
        hmc_f = np.asarray(post.predictions[..., 0]).reshape(-1, len(x_grid))
        result["hmc_vs_exact_mean"] = float(
            np.max(np.abs(hmc_f.mean(0) - exact_f.mean(0)))
        )
        result["hmc_vs_exact_sd"] = float(np.max(np.abs(hmc_f.std(0) - exact_f.std(0))))

    result.update(
        acceptance_rate=exact.acceptance_rate,
        num_proposals=exact.num_proposals,
        log_evidence=exact.log_evidence,
        log_evidence_stderr=exact.log_evidence_stderr,
        nngp_log_evidence=float(nngp.log_marginal_likelihood),
        exact_vs_nngp_mean=float(np.max(np.abs(exact_f.mean(0) - nngp_mean))),
        exact_vs_nngp_sd=float(np.max(np.abs(exact_f.std(0) - nngp_sd))),
        seconds=seconds,
    )
    if out is not None:
        _plot(out, x, y, x_grid, exact_f, hmc_f, nngp_mean, nngp_sd, width)
    return result


def _plot(path, x, y, x_grid, exact_f, hmc_f, nngp_mean, nngp_sd, width):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = x_grid[:, 0]
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    z = 1.645
    ax.fill_between(
        grid, nngp_mean - z * nngp_sd, nngp_mean + z * nngp_sd, color="0.8",
        label="NNGP posterior (infinite width)",
    )  # fmt: skip
    ax.plot(grid, nngp_mean, color="0.4", lw=1.5)
    mean, low, high = _band(exact_f)
    ax.plot(grid, mean, color="C0", lw=2, label=f"exact (rejection), width {width}")
    ax.plot(grid, low, color="C0", lw=1, ls="--")
    ax.plot(grid, high, color="C0", lw=1, ls="--")
    if hmc_f is not None:
        mean, low, high = _band(hmc_f)
        ax.plot(grid, mean, color="C3", lw=1.5, ls=":", label="repriorised GHMC")
        ax.plot(grid, low, color="C3", lw=1, ls=":")
        ax.plot(grid, high, color="C3", lw=1, ls=":")
    ax.scatter(x[:, 0], y[:, 0], color="k", zorder=5, s=18, label="data")
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.set_title("Posterior predictive of f: mean and 5-95 % band")
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--exact-samples", type=int, default=2000)
    parser.add_argument("--hmc-samples", type=int, default=1000)
    parser.add_argument("--out", default="exact_vs_mcmc.png")
    args = parser.parse_args()
    summary = main(
        width=args.width,
        exact_samples=args.exact_samples,
        hmc_samples=args.hmc_samples,
        out=args.out,
    )
    for name, value in summary.items():
        print(f"{name}: {value}")
