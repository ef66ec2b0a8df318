"""Exact NNGP posterior mean by Cholesky against conjugate gradients, over N.

Network: a 3-hidden-layer ReLU FCN (``W_std = 1.4``, ``b_std = 0.3``), inputs in
``d = 100`` (standard normal), one target ``sin(x . w / 10) + 0.1 noise``, noise
variance ``1e-2``, float64. For each ``N`` and solver, one fresh process (so the
peak resident memory, ``ru_maxrss``, is that run's) builds ``gp.posterior`` and
predicts the mean at 200 test points; the wall time includes compilation.
Solvers: ``cholesky``; ``cg`` with no preconditioner, with a rank-100 pivoted
Cholesky factor, and with dim-512 random features of the network. Reports the
CG iterations, and the largest difference of the CG mean from the Cholesky mean
where both ran.

Run: ``python benchmarks/gp_cg.py`` (N = 1000, 2000, 5000: a few minutes on 2
cores); ``--sizes 10000 20000 --solvers cg-pivoted`` for the large sizes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SOLVERS = ("cholesky", "cg-none", "cg-pivoted", "cg-features")


def run_one(n: int, solver: str, tile: int) -> dict:
    """One posterior in this process; returns times, memory and the mean."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from widebnn import gp, kernels

    rng = np.random.default_rng(0)
    d = 100
    w = rng.normal(size=d)
    x = rng.normal(size=(n, d))
    y = (np.sin(x @ w / 10) + 0.1 * rng.normal(size=n))[:, None]
    x_test = rng.normal(size=(200, d))
    layers = []
    for _ in range(3):
        layers += [kernels.Dense(512, 1.4, 0.3), kernels.Relu()]
    net = kernels.serial(*layers, kernels.Dense(1, 1.4, 0.3))
    start = time.perf_counter()
    if solver == "cholesky":
        post = gp.posterior(net, x, y, noise_var=1e-2, solver="cholesky")
        extra = {}
    else:
        choice = {
            "cg-none": None,
            "cg-pivoted": "pivoted_cholesky",
            "cg-features": kernels.feature_map(net, jax.random.key(0), dim=512),
        }[solver]
        options = {"preconditioner": choice, "tile": tile, "progress": False}
        post = gp.posterior(net, x, y, noise_var=1e-2, solver="cg", cg_options=options)
        extra = {"iterations": post.iterations, "converged": post.converged}
    mean = np.asarray(post.predict(x_test, full_cov=False).mean)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB
    return {"n": n, "solver": solver, "seconds": seconds, "peak_gib": peak,
            "mean": mean[:, 0].tolist(), **extra}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000])
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS))
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(int(args.one[0]), args.one[1], args.tile)))
        return
    rows = []
    for n in args.sizes:
        reference = None
        for solver in args.solvers:
            command = [sys.executable, __file__, "--one", str(n), solver]
            command += ["--tile", str(args.tile)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"N={n} {solver}: failed\n{done.stderr[-2000:]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            mean = row.pop("mean")
            if solver == "cholesky":
                reference = mean
            elif reference is not None:
                diff = max(abs(a - b) for a, b in zip(mean, reference, strict=True))
                row["max_mean_diff"] = diff
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
