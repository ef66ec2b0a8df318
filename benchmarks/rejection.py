"""Rejection-sampling benchmark: acceptance rate and exact draws per second.

One-hidden-layer ReLU network (NTK parameterisation, ``W_std = sqrt(2)``,
``b_std = 0.1``; readout ``W_std = 1``, ``b_std = 0.1``), inputs on a grid in
[-2, 2], ``y = sin(x)`` without added noise, one output, noise std 0.3 by
default (``--noise``). For
every number of points ``N`` and width, ``widebnn.samplers.rejection`` is run
with the "prior" bound :math:`M_0` and the "data" bound (bias-aware :math:`M_2`).

Reported per cell: the acceptance rate estimated as :math:`\\hat Z/M` from the
mean likelihood of the proposals (lower variance than the accepted fraction,
which is also given), proposals per second and exact draws per second after
compilation (a warm-up call of one batch compiles first; its time is the
"compile s" column). When ``--max-proposals`` is reached before ``--samples``
acceptances, draws per second are extrapolated as proposals/s times
:math:`\\hat Z/M` (marked ``~``).

Usage::

    python benchmarks/rejection.py --quick        # N in {2, 8}, widths {16, 256}
    python benchmarks/rejection.py                # N in {2,4,8,16}, widths 16-1024
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

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import widebnn  # noqa: E402
from widebnn import WideBNN, kernels, samplers  # noqa: E402

NOISE = 0.3
HERE = Path(__file__).parent


def make_problem(n_points, width, noise=NOISE):
    body = kernels.serial(kernels.Dense(width, math.sqrt(2.0), 0.1), kernels.Relu())
    model = WideBNN(body, width, 1.0, 0.1, noise, 1)
    x = np.linspace(-2.0, 2.0, n_points)[:, None]
    return model, x, np.sin(x)


def run_cell(model, x, y, bound, num_samples, max_proposals, batch_size, seed):
    start = time.perf_counter()
    try:
        post = samplers.rejection(
            model, x, y, num_samples=num_samples, bound=bound, batch_size=batch_size,
            max_proposals=max_proposals, key=jax.random.key(seed), progress=False,
            max_seconds=None,  # the budget here is max_proposals, not time
        )  # fmt: skip
    except samplers.RejectionBudgetError as error:
        seconds = time.perf_counter() - start
        rate = error.expected_rate
        proposals_per_s = error.num_proposals / seconds
        return {
            "bound": bound,
            "complete": False,
            "accepted": error.num_accepted,
            "proposals": error.num_proposals,
            "acceptance": rate,
            "accepted_fraction": error.acceptance_rate,
            "proposals_per_s": proposals_per_s,
            "samples_per_s": proposals_per_s * rate,
            "seconds": seconds,
        }
    seconds = time.perf_counter() - start
    return {
        "bound": bound,
        "complete": True,
        "accepted": post.num_accepted,
        "proposals": post.num_proposals,
        "acceptance": math.exp(post.log_evidence - post.log_bound),
        "acceptance_stderr": post.log_evidence_stderr,  # relative
        "accepted_fraction": post.acceptance_rate,
        "proposals_per_s": post.num_proposals / seconds,
        "samples_per_s": post.num_accepted / seconds,
        "seconds": seconds,
        "log_evidence": post.log_evidence,
        "log_bound": post.log_bound,
    }


def table(rows):
    lines = [
        "| N | width | bound | acceptance Z/M | accepted / proposals | proposals/s "
        "| exact draws/s | compile s |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = "" if r["complete"] else "~"
        lines.append(
            f"| {r['N']} | {r['width']} | {r['bound']} | {r['acceptance']:.2e} "
            f"| {r['accepted']} / {r['proposals']} | {r['proposals_per_s']:.3g} "
            f"| {mark}{r['samples_per_s']:.3g} | {r['compile_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--points", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--max-proposals", type=int, default=2_000_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--noise", type=float, default=NOISE, help="noise std")
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.quick:
        args.points, args.widths = [2, 8], [16, 256]
        args.samples, args.max_proposals = 50, 200_000
    rows = []
    for n_points in args.points:
        for width in args.widths:
            model, x, y = make_problem(n_points, width, args.noise)
            # Compile: one batch of the same jitted function (same static args).
            start = time.perf_counter()
            run_cell(
                model, x, y, "data", args.samples, args.batch_size, args.batch_size,
                seed=0,
            )  # fmt: skip
            compile_seconds = time.perf_counter() - start
            for bound in ("prior", "data"):
                row = run_cell(
                    model, x, y, bound, args.samples, args.max_proposals,
                    args.batch_size, seed=1,
                )  # fmt: skip
                row.update(N=n_points, width=width, compile_seconds=compile_seconds)
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    meta = {
        "widebnn": widebnn.__version__,
        "jax": jax.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "args": vars(args),
    }
    out = (
        Path(args.out)
        if args.out
        else HERE
        / "results"
        / ("rejection_quick.json" if args.quick else "rejection.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
