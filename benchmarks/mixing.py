"""Mixing benchmark: repriorised vs standard parameterisation on a wide ReLU BNN.

1-hidden-layer ReLU network in NTK parameterisation (W_std = sqrt(2), b_std = 0.1;
readout W_std = 1, b_std = 0.1), noise sigma = 0.1, N = 128 training points of
``widebnn.data.teacher_regression`` (inputs N(0, I_d), default d = 64), 64 test
inputs. Samplers (4 chains each, prior initialisation, each tuned by its own
warm-up):

* ``ghmc-std`` / ``ghmc-rep``: GHMC with one leapfrog step, step size by dual
  averaging (full refresh during warm-up), on the parameters / on the repriorised
  coordinates; momentum refresh beta = min(1, step/tau) with tau = 1, the package
  default (``--refresh-time``), or a fixed beta (``--momentum-refresh 0.01`` is
  the reference setting);
* ``ghmc-exact``: ``ghmc-rep`` with ``exact_readout=True`` (the chain moves the
  hidden weights only; every kept draw gets an exact readout);
* ``ghmc-exact-split``: ``ghmc-exact`` with the Gaussian-split integrator
  (the prior's flow exact, the rest by kicks);
* ``ghmc-defaults``: ``widebnn.samplers.hmc`` with every sampler option at the
  package default (repriorised, exact readout, Gaussian split, tau = 1, target
  acceptance 0.9), no environment variable set (``--defaults`` runs it against
  ``ghmc-std``);
* ``nuts-std`` / ``nuts-rep`` / ``nuts-exact``: BlackJAX NUTS with window
  adaptation (step size and diagonal mass), same three coordinate systems;
* ``numpyro``: NumPyro NUTS (defaults, vectorised chains) on the standard
  parameterisation of the same model (``widebnn.numpyro_model``).

GHMC runs use the same number of gradient evaluations in every coordinate system.
Metrics: ArviZ bulk ESS of 100 fixed random projections of the test predictions
(median and minimum), max rank R-hat, acceptance, gradient evaluations of the
sampling phase, sampling time without compilation, ESS per gradient and per second,
and the ratios of each repriorised sampler to its standard counterpart.

Usage::

    python benchmarks/mixing.py --quick                 # smoke check, < 2 min idle
    python benchmarks/mixing.py --widths 512            # the headline width
    python benchmarks/mixing.py --momentum-refresh 0.01 # reference beta = 0.01
    python benchmarks/mixing.py --out r.json            # all widths, all samplers
    python benchmarks/mixing.py --plot-from r.json --plot ratio.png
    python benchmarks/mixing.py --defaults --widths 512 --n 64 --d-in 16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

# No OPENBLAS_NUM_THREADS: samplers.hmc limits BLAS to one thread itself
# (threadpoolctl), which is what the package defaults are measured with.
import jax

jax.config.update("jax_enable_x64", True)

import warnings  # noqa: E402

import numpy as np  # noqa: E402

import widebnn  # noqa: E402
from widebnn import WideBNN, data, diagnostics, kernels, samplers  # noqa: E402

NOISE = 0.1
N_TEST = 64
HERE = Path(__file__).parent

# name -> (algorithm, hmc keyword arguments); "numpyro" is separate.
SAMPLERS = {
    "ghmc-std": ("ghmc", {"reparam": "none"}),
    "ghmc-rep": ("ghmc", {"reparam": "repriorised"}),
    "ghmc-exact": ("ghmc", {"reparam": "repriorised", "exact_readout": True}),
    "ghmc-exact-split": (
        "ghmc",
        {
            "reparam": "repriorised",
            "exact_readout": True,
            "integrator": "gaussian_split",
        },
    ),
    "ghmc-defaults": ("ghmc", {}),
    "nuts-std": ("nuts", {"reparam": "none"}),
    "nuts-rep": ("nuts", {"reparam": "repriorised"}),
    "nuts-exact": ("nuts", {"reparam": "repriorised", "exact_readout": True}),
}
ALL = [*SAMPLERS, "numpyro"]
# (repriorised, standard) pairs whose ratios are reported.
PAIRS = [
    ("ghmc-rep", "ghmc-std"),
    ("ghmc-exact", "ghmc-std"),
    ("ghmc-exact-split", "ghmc-std"),
    ("ghmc-defaults", "ghmc-std"),
    ("nuts-rep", "nuts-std"),
    ("nuts-exact", "nuts-std"),
    ("nuts-exact", "numpyro"),
]


def make_problem(width, d_in, n_train):
    x, y, x_test, _ = data.teacher_regression(
        n_train, jax.random.key(0), d_in=d_in, noise_std=NOISE, n_test=N_TEST
    )
    body = kernels.serial(kernels.Dense(width, math.sqrt(2.0), 0.1), kernels.Relu())
    return WideBNN(body, width, 1.0, 0.1, NOISE, 1), x, y, x_test


def summarise(predictions, grads, seconds, acceptance, **extra):
    ess, rhat = diagnostics.projection_ess(predictions, 100, seed=0)
    med = float(np.median(ess))
    return {
        "ess_median": med,
        "ess_min": float(ess.min()),
        "rhat_max": float(rhat.max()),
        "grads": int(grads),
        "seconds": float(seconds),
        "ess_per_grad": med / grads,
        "ess_per_second": med / seconds,
        "acceptance": float(acceptance),
        "draws": int(predictions.shape[0] * predictions.shape[1]),
        **extra,
    }


def run_blackjax(name, problem, cfg):
    model, x, y, x_test = problem
    algorithm, kwargs = SAMPLERS[name]
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", samplers.SamplerWarning)
        post = samplers.hmc(
            model, x, y, algorithm=algorithm, x_pred=x_test, key=jax.random.key(1),
            progress=cfg["progress"], store_params=False, **kwargs, **cfg[algorithm],
        )  # fmt: skip
    total = time.perf_counter() - start
    chunks = post.settings["chunk_seconds"]
    # Sampling time without compilation: mean of chunks 2.. times the number.
    seconds = np.mean(chunks[1:]) * len(chunks) if len(chunks) > 1 else chunks[0]
    stats = post.sample_stats
    return summarise(
        post.predictions,
        post.num_grad_evals,
        seconds,
        stats["acceptance_rate"].mean(),
        warmup_grads=post.num_warmup_grad_evals,
        step_size=float(np.mean(stats["step_size"][:, 0])),
        momentum_refresh=(
            float(np.mean(post.settings["momentum_refresh"]))
            if algorithm == "ghmc"
            else float("nan")  # NUTS has no momentum refresh
        ),
        divergences=int(stats["diverging"].sum()),
        nonfinite=int(stats["nonfinite"].sum()),
        grads_per_draw=float(stats["n_steps"].mean()),
        total_seconds=total,
        load_average=os.getloadavg()[0],
        exact_readout=post.settings["exact_readout"],
        integrator=post.settings["integrator"],
        warnings=[str(w.message)[:60] for w in caught],
    )


def run_numpyro(problem, cfg):
    from numpyro.infer import MCMC, NUTS

    model, x, y, x_test = problem
    npm = widebnn.numpyro_model(model)
    kw = cfg["numpyro"]
    mcmc = MCMC(
        NUTS(npm, max_tree_depth=kw["max_num_doublings"]),
        num_warmup=kw["num_warmup"],
        num_samples=kw["num_samples"],
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(jax.random.key(1), x, y, extra_fields=("num_steps", "accept_prob"))
    # run() returns before the work is done: wait for the draws.
    jax.block_until_ready(mcmc.get_samples())
    seconds = time.perf_counter() - start  # includes compilation (see README)
    params = npm.to_params(mcmc.get_samples(group_by_chain=True), x.shape)
    pred = jax.vmap(jax.vmap(model.predict, (0, None)), (0, None))(params, x_test)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    return summarise(
        np.asarray(pred),
        int(np.sum(extra["num_steps"])),
        seconds,
        np.mean(extra["accept_prob"]),
        grads_per_draw=float(np.mean(extra["num_steps"])),
        step_size=float("nan"),
    )


def configs(quick):
    if quick:
        ghmc = dict(num_warmup=200, num_samples=100, thin=4, chunk_size=50)
        nuts = dict(num_warmup=60, num_samples=40, chunk_size=20, max_num_doublings=6)
        numpyro_cfg = dict(num_warmup=60, num_samples=40, max_num_doublings=6)
        return {"ghmc": ghmc, "nuts": nuts, "numpyro": numpyro_cfg}
    ghmc = dict(num_warmup=2000, num_samples=5000, thin=2, chunk_size=500)
    nuts = dict(num_warmup=200, num_samples=200, chunk_size=50)
    numpyro_cfg = dict(num_warmup=200, num_samples=200, max_num_doublings=10)
    return {"ghmc": ghmc, "nuts": nuts, "numpyro": numpyro_cfg}


def ratios(results):
    """Rows ``(width, rep, std, ESS/grad ratio, ESS/s ratio, min-ESS/grad ratio)``
    between runs of the same GHMC setting (``rep``/``std`` carry it when not the
    default, e.g. ``ghmc-std [beta=0.01]``); NUTS pairs with any setting."""
    by_key = {(r["width"], label(r)): r for r in results}
    settings = sorted({setting(r) for r in results})
    rows = []
    for width in sorted({r["width"] for r in results}):
        for tag, (rep, std) in [(t, pair) for t in settings for pair in PAIRS]:
            if not rep.startswith("ghmc") and tag != settings[0]:
                continue  # NUTS pairs: once
            rep_l = rep + tag if rep.startswith("ghmc") else rep
            std_l = std + tag if std.startswith("ghmc") else std
            a, b = by_key.get((width, rep_l)), by_key.get((width, std_l))
            if a and b:
                rows.append((
                    width, rep_l, std_l,
                    a["ess_per_grad"] / b["ess_per_grad"],
                    a["ess_per_second"] / b["ess_per_second"],
                    (a["ess_min"] / a["grads"]) / (b["ess_min"] / b["grads"]),
                ))  # fmt: skip
    return rows


def setting(result):
    """The GHMC setting of a result as a label suffix ('' for the defaults)."""
    parts = []
    beta = result.get("ghmc_momentum_refresh")
    if beta is not None:
        parts.append(f"beta={beta}")
    elif result.get("refresh_time", 1.0) != 1.0:
        parts.append(f"tau={result['refresh_time']}")
    if result.get("target_acceptance") is not None:
        parts.append(f"target={result['target_acceptance']}")
    return f" [{', '.join(parts)}]" if parts else ""


def label(result):
    name = result["sampler"]
    return name + setting(result) if name.startswith("ghmc") else name


def print_tables(results):
    print(
        "| width | sampler | ESS med | ESS min | R-hat max | accept | grads | "
        "grads/draw | s | ESS/grad | ESS/s | step | beta |"
    )
    print("|" + "---|" * 13)
    for r in results:
        print(
            f"| {r['width']} | {label(r)} | {r['ess_median']:.0f} | "
            f"{r['ess_min']:.0f} | {r['rhat_max']:.3f} | {r['acceptance']:.2f} | "
            f"{r['grads']:,} | {r['grads_per_draw']:.0f} | {r['seconds']:.1f} | "
            f"{r['ess_per_grad']:.2e} | {r['ess_per_second']:.2f} | "
            f"{r.get('step_size', float('nan')):.4f} | "
            f"{r.get('momentum_refresh', float('nan')):.3f} |"
        )
    print("\n| width | repriorised | standard | ESS/grad ratio | ESS/s ratio | "
          "min-ESS/grad ratio |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for width, rep, std, per_grad, per_s, per_min in ratios(results):
        print(f"| {width} | {rep} | {std} | **{per_grad:.1f}** | {per_s:.2f} | "
              f"{per_min:.1f} |")  # fmt: skip


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ratios(results)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    pairs = list(dict.fromkeys((row[1], row[2]) for row in rows))
    for (rep, std), marker in zip(pairs, "osD^vPXh*<>p", strict=False):
        mine = [row for row in rows if row[1] == rep and row[2] == std]
        widths = [row[0] for row in mine]
        name = f"{rep} / {std}"
        axes[0].plot(widths, [row[3] for row in mine], marker=marker, label=name)
        axes[1].plot(widths, [row[4] for row in mine], marker=marker, label=name)
    for ax, title in zip(axes, ("ESS per gradient", "ESS per second (CPU)"),
                         strict=True):  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.axhline(1.0, color="0.6", lw=0.8)
        ax.set_xlabel("width")
        ax.set_title(f"{title}: repriorised / standard", fontsize=10)
    axes[0].axhline(20.0, color="0.6", lw=0.8, ls="--")
    axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--widths", type=int, nargs="+", default=None)
    parser.add_argument("--d-in", type=int, default=64, help="input dimension")
    parser.add_argument("--n-train", "--n", type=int, default=128)
    parser.add_argument(
        "--defaults", action="store_true",
        help="samplers.hmc at the package defaults vs ghmc-std (= --samplers "
        "ghmc-defaults ghmc-std)",
    )  # fmt: skip
    parser.add_argument(
        "--samplers", nargs="+", default=None, choices=ALL,
        help="default: all (--quick: ghmc-std ghmc-exact nuts-exact)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument("--plot", type=Path, default=None, help="ratio plot (PNG)")
    parser.add_argument(
        "--plot-from", type=Path, nargs="+", default=None,
        help="JSON results files to tabulate and plot instead of running",
    )  # fmt: skip
    parser.add_argument(
        "--momentum-refresh", type=float, default=None,
        help="fixed GHMC beta (the reference setting is 0.01)",
    )  # fmt: skip
    parser.add_argument(
        "--refresh-time", type=float, default=None,
        help="GHMC tau: beta = min(1, step/tau) (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--target-acceptance", type=float, default=None,
        help="GHMC step-size adaptation target (default 0.9)",
    )  # fmt: skip
    parser.add_argument(
        "--num-samples", type=int, default=None,
        help="GHMC kept draws per chain (default 5000, thin 2)",
    )  # fmt: skip
    parser.add_argument(
        "--nuts-iterations", type=int, nargs=2, default=None,
        metavar=("WARMUP", "SAMPLES"),
        help="NUTS/NumPyro warm-up and kept draws per chain (default 200 200)",
    )  # fmt: skip
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.plot_from:
        results = [r for p in args.plot_from for r in json.loads(p.read_text())]
        print_tables(results)
        if args.plot:
            plot(results, args.plot)
        return results
    widths = args.widths or ([32, 128] if args.quick else [32, 128, 512, 2048])
    if args.defaults:
        args.samplers = ["ghmc-defaults", "ghmc-std"]
    if args.samplers is None:
        args.samplers = ["ghmc-std", "ghmc-exact", "nuts-exact"] if args.quick else ALL
    cfg = configs(args.quick) | {"progress": args.progress}
    cfg["ghmc"] |= {
        "momentum_refresh": args.momentum_refresh,
        "refresh_time": args.refresh_time,
        "target_acceptance": args.target_acceptance,
    }
    if args.num_samples:
        cfg["ghmc"]["num_samples"] = args.num_samples
    if args.nuts_iterations:
        warmup, samples = args.nuts_iterations
        for name in ("nuts", "numpyro"):
            cfg[name] |= {"num_warmup": warmup, "num_samples": samples}
        cfg["nuts"]["chunk_size"] = min(cfg["nuts"]["chunk_size"], samples)
    print(
        f"# widebnn {widebnn.__version__}, jax {jax.__version__}, "
        f"device {jax.devices()[0].device_kind}, float64, python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, d_in {args.d_in}, "
        f"N {args.n_train}",
        flush=True,
    )
    results = []
    for width in widths:
        problem = make_problem(width, args.d_in, args.n_train)
        for name in args.samplers:
            if name == "numpyro":
                r = run_numpyro(problem, cfg)
            else:
                r = run_blackjax(name, problem, cfg)
            r |= {"width": width, "sampler": name, "d_in": args.d_in}
            if name.startswith("ghmc"):
                r |= {
                    "ghmc_momentum_refresh": args.momentum_refresh,
                    "refresh_time": args.refresh_time or 1.0,
                    "target_acceptance": args.target_acceptance,
                }
            results.append(r)
            print(json.dumps(r), flush=True)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1))
    print()
    print_tables(results)
    if args.plot:
        plot(results, args.plot)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
