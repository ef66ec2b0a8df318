"""Mixing benchmark: repriorised vs standard parameterisation on a wide ReLU BNN.

1-hidden-layer ReLU network (NTK parameterisation, W_std = sqrt(2), b_std = 0.1,
readout W_std = 1, b_std = 0.1), N = 128 points of ``widebnn.data.toy_regression``
(noise 0.1), 64 test inputs. Samplers: GHMC (one leapfrog step, beta = 0.01,
step size tuned by dual averaging) and NUTS (window adaptation), each with
reparam "none" and "repriorised", 4 chains, the same number of transitions for
both parameterisations of an algorithm; optionally NumPyro NUTS on the standard
parameterisation. Metrics: bulk ESS (ArviZ) of 100 fixed random projections of the
test predictions (median, minimum), max R-hat, acceptance, gradient evaluations,
sampling time (chunks after the first, extrapolated to the whole run, so that
compilation is excluded).

Usage::

    python benchmarks/mixing.py --quick                 # smoke check, < 2 min idle
    python benchmarks/mixing.py --widths 512            # the headline width
    python benchmarks/mixing.py --widths 32 128 512 2048 --samplers ghmc nuts
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

# JAX's CPU LAPACK calls go through scipy's OpenBLAS, whose threading makes a
# 128x128 Cholesky ~200x slower on a busy 2-core machine (measured 127 ms vs
# 0.6 ms). One thread per call; set before numpy/jax load OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import widebnn  # noqa: E402
from widebnn import WideBNN, data, diagnostics, kernels, samplers  # noqa: E402

NOISE = 0.1
N_TRAIN, N_TEST = 128, 64
HERE = Path(__file__).parent


def make_problem(width):
    x, y, x_test, _ = data.toy_regression(
        N_TRAIN, jax.random.key(0), noise_std=NOISE, n_test=N_TEST
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
        **extra,
    }


def run_blackjax(width, algorithm, reparam, cfg):
    model, x, y, x_test = make_problem(width)
    kwargs = cfg[algorithm]
    start = time.perf_counter()
    post = samplers.hmc(
        model, x, y, algorithm=algorithm, reparam=reparam, x_pred=x_test,
        key=jax.random.key(1), progress=cfg["progress"], store_params=False, **kwargs,
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
        divergences=int(stats["diverging"].sum()),
        nonfinite=int(stats["nonfinite"].sum()),
        grads_per_draw=float(stats["n_steps"].mean()),
        total_seconds=total,
    )


def run_numpyro(width, cfg):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    model, x, y, x_test = make_problem(width)

    def np_model(x, y=None):
        w1 = numpyro.sample("w1", dist.Normal(0, 1).expand([1, width]).to_event(2))
        b1 = numpyro.sample("b1", dist.Normal(0, 1).expand([width]).to_event(1))
        w2 = numpyro.sample("w2", dist.Normal(0, 1).expand([width, 1]).to_event(2))
        b2 = numpyro.sample("b2", dist.Normal(0, 1).expand([1]).to_event(1))
        h = jax.nn.relu(math.sqrt(2.0) * x @ w1 + 0.1 * b1)
        f = h @ w2 / math.sqrt(width) + 0.1 * b2
        numpyro.sample("y", dist.Normal(f, NOISE).to_event(2), obs=y)

    kw = cfg["numpyro"]
    mcmc = MCMC(
        NUTS(np_model, max_tree_depth=kw["max_num_doublings"]),
        num_warmup=kw["num_warmup"],
        num_samples=kw["num_samples"],
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(jax.random.key(1), x, y, extra_fields=("num_steps", "accept_prob"))
    jax.block_until_ready(mcmc.get_samples())
    seconds = time.perf_counter() - start  # includes compilation (see README)
    s = mcmc.get_samples(group_by_chain=True)
    params = {
        "body": ({"W": s["w1"], "b": s["b1"]}, ()),
        "readout": {"W": s["w2"], "b": s["b2"]},
    }
    pred = jax.vmap(jax.vmap(model.predict, (0, None)), (0, None))(params, x_test)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    return summarise(
        pred,
        int(np.sum(extra["num_steps"])),
        seconds,
        np.mean(extra["accept_prob"]),
        grads_per_draw=float(np.mean(extra["num_steps"])),
    )


def configs(quick):
    if quick:
        ghmc = dict(num_warmup=200, num_samples=100, thin=4, chunk_size=50)
        nuts = dict(num_warmup=60, num_samples=40, chunk_size=20, max_num_doublings=6)
        numpyro_cfg = dict(num_warmup=60, num_samples=40, max_num_doublings=6)
        return {"ghmc": ghmc, "nuts": nuts, "numpyro": numpyro_cfg}
    ghmc = dict(num_warmup=2000, num_samples=1000, thin=10, chunk_size=100)
    nuts = dict(num_warmup=300, num_samples=300, chunk_size=50)
    numpyro_cfg = dict(num_warmup=300, num_samples=300, max_num_doublings=10)
    return {"ghmc": ghmc, "nuts": nuts, "numpyro": numpyro_cfg}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--widths", type=int, nargs="+", default=None)
    parser.add_argument(
        "--samplers", nargs="+", default=None, choices=["ghmc", "nuts", "numpyro"],
        help="default: ghmc nuts numpyro (--quick: ghmc nuts)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    widths = args.widths or ([32, 128] if args.quick else [32, 128, 512, 2048])
    if args.samplers is None:
        args.samplers = ["ghmc", "nuts"] if args.quick else ["ghmc", "nuts", "numpyro"]
    cfg = configs(args.quick) | {"progress": args.progress}
    print(
        f"# widebnn {widebnn.__version__}, jax {jax.__version__}, "
        f"device {jax.devices()[0].device_kind}, float64, python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs"
    )
    results = []
    header = (
        "| width | sampler | reparam | ESS med | ESS min | R-hat max | accept | "
        "grads | s | ESS/grad | ESS/s | step |"
    )
    print(header)
    print("|" + "---|" * 12)
    for width in widths:
        for sampler in args.samplers:
            reparams = ["none"] if sampler == "numpyro" else ["none", "repriorised"]
            for reparam in reparams:
                if sampler == "numpyro":
                    r = run_numpyro(width, cfg)
                else:
                    r = run_blackjax(width, sampler, reparam, cfg)
                r |= {"width": width, "sampler": sampler, "reparam": reparam}
                results.append(r)
                print(
                    f"| {width} | {sampler} | {reparam} | {r['ess_median']:.0f} | "
                    f"{r['ess_min']:.0f} | {r['rhat_max']:.3f} | "
                    f"{r['acceptance']:.2f} | {r['grads']:,} | {r['seconds']:.2f} | "
                    f"{r['ess_per_grad']:.2e} | {r['ess_per_second']:.1f} | "
                    f"{r.get('step_size', float('nan')):.4f} |",
                    flush=True,
                )
    print("\n| width | sampler | rep/std ESS per grad | rep/std ESS per s |")
    print("|---|---|---|---|")
    for width in widths:
        for sampler in ("ghmc", "nuts"):
            pair = {
                r["reparam"]: r
                for r in results
                if r["width"] == width and r["sampler"] == sampler
            }
            if len(pair) == 2:
                rep, std = pair["repriorised"], pair["none"]
                print(
                    f"| {width} | {sampler} | "
                    f"{rep['ess_per_grad'] / std['ess_per_grad']:.1f} | "
                    f"{rep['ess_per_second'] / std['ess_per_second']:.1f} |"
                )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
