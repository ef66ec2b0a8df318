"""Benchmark: NNGP + NTK of a 3-hidden-layer ReLU network, widebnn vs Neural Tangents.

The network is ``Dense(512, W_std=1.5, b_std=0.05) -> Relu`` three times, then
``Dense(1, W_std=1.5, b_std=0.05)``; the kernels are computed for 2000 inputs of
dimension 100, both as the symmetric ``2000 x 2000`` kernel (``x2=None``) and as the
cross kernel of two batches of 2000 (``x1`` vs ``x2``), in float64 and float32.
Both sides jit the whole kernel call (``get=("nngp", "ntk")``).

Every measurement runs in a fresh subprocess, which reports

* compile: the first call (tracing, compilation and one evaluation);
* steady: the median of ``--repeats`` further calls, each ended by
  ``block_until_ready``;
* peak: the process's peak resident memory (``ru_maxrss``) and, for reference, its
  resident memory just before the first call (imports, inputs).

Neural Tangents 0.6.5 runs with the interpreter of ``benchmarks/.nt-venv`` (see
``setup_nt_venv.sh``) on its own old jax; if that venv is missing only widebnn's
numbers are printed. widebnn and NT runs are interleaved, ``--rounds`` times, and the
medians over rounds are reported, since the machine may be shared.

``widebnn`` is ``layer.kernel`` as shipped (tiled, see ``kernels/_tiling.py``); the
row ``widebnn untiled`` is the same call with ``tile_entries=0`` (the whole kernel in
one piece), for reference.

Usage::

    python benchmarks/kernels_fcn.py [--rounds 3] [--repeats 7] [--n 2000]
        [--dtypes float64,float32] [--modes sym,cross] [--no-nt] [--json OUT]

No network access is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
NT_PYTHON = HERE / ".nt-venv" / "bin" / "python"
NT_SCRIPT = HERE / "_nt_fcn.py"
SIDES = {"ours": "widebnn", "untiled": "widebnn untiled", "nt": "Neural Tangents"}


def worker(config):
    """Times one configuration of widebnn in this process; prints one JSON line."""
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", config["dtype"] == "float64")
    sys.path.insert(0, str(HERE))
    from _timing import measure

    from widebnn import kernels

    layers = []
    for _ in range(config["depth"]):
        layers += [
            kernels.Dense(config["width"], W_std=1.5, b_std=0.05),
            kernels.Relu(),
        ]
    net = kernels.serial(*layers, kernels.Dense(1, W_std=1.5, b_std=0.05))
    rng = np.random.default_rng(config["seed"])
    shape, dtype = (config["n"], config["d"]), config["dtype"]
    x1 = jax.device_put(rng.normal(size=shape).astype(dtype))
    x2 = None
    if config["mode"] == "cross":
        x2 = jax.device_put(rng.normal(size=shape).astype(dtype))
    get = ("nngp", "ntk")
    tile_entries = 0 if config["side"] == "untiled" else None

    def call(a, b):
        return net.kernel(a, b, get, tile_entries=tile_entries)

    result = measure(jax.jit(call), (x1, x2), config["repeats"])
    result.update(side=config["side"], library="widebnn")
    print(json.dumps(result))


def _run(side, config, nt_python):
    config = dict(config, side=side)
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    if side == "nt":
        cmd = [str(nt_python), str(NT_SCRIPT), json.dumps(config)]
    else:
        cmd = [sys.executable, __file__, "--worker", json.dumps(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{side} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _cpu_model():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=100)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--modes", default="sym,cross")
    parser.add_argument("--no-nt", action="store_true", help="only widebnn")
    parser.add_argument(
        "--no-untiled", action="store_true", help="skip the untiled reference"
    )
    parser.add_argument("--nt-python", default=os.environ.get("WIDEBNN_NT_PYTHON"))
    parser.add_argument("--json", help="write all raw measurements to this file")
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    nt_python = pathlib.Path(args.nt_python or NT_PYTHON)
    sides = ["ours"] + ([] if args.no_untiled else ["untiled"])
    if args.no_nt:
        pass
    elif nt_python.exists():
        sides.append("nt")
    else:
        print(
            f"Neural Tangents venv not found at {nt_python} (make it with "
            "benchmarks/setup_nt_venv.sh); showing widebnn's numbers only.\n"
        )
    configs = [
        {
            "dtype": dtype,
            "mode": mode,
            "n": args.n,
            "d": args.d,
            "depth": 3,
            "width": 512,
            "seed": 0,
            "repeats": args.repeats,
        }
        for dtype in args.dtypes.split(",")
        for mode in args.modes.split(",")
    ]
    runs = {}
    for round_ in range(args.rounds):
        for config in configs:
            order = sides if round_ % 2 == 0 else sides[::-1]
            for side in order:
                key = (config["dtype"], config["mode"], side)
                result = _run(side, config, nt_python)
                runs.setdefault(key, []).append(result)
                print(
                    f"round {round_ + 1}/{args.rounds} {config['dtype']} "
                    f"{config['mode']:<5} {SIDES[side]:<15} steady "
                    f"{result['steady_s']:.3f} s",
                    file=sys.stderr,
                )

    first = {
        side: next(r[0] for k, r in runs.items() if k[2] == side) for side in sides
    }
    print(
        f"date: {time.strftime('%Y-%m-%d')}; machine: {_cpu_model()}, "
        f"{os.cpu_count()} cores"
    )
    for side in sides:
        info = first[side]
        print(
            f"{SIDES[side]:<15} {info['library']}, jax {info['jax']}, jaxlib "
            f"{info['jaxlib']}, Python {info['python']}, device {info['device']}"
        )
    print(
        f"network: 3 x (Dense(512, 1.5, 0.05) -> Relu) -> Dense(1, 1.5, 0.05); "
        f"NNGP+NTK, {args.n} inputs of dim {args.d}; sym = x2 None ({args.n}x{args.n}),"
        f" cross = x1 vs x2 ({args.n} each); medians over {args.rounds} rounds "
        f"of (median of {args.repeats} calls)\n"
    )
    header = (
        f"{'dtype':<8} {'mode':<5} {'side':<15} {'compile':>7} {'1st call':>8} "
        f"{'steady':>7} {'cpu':>6} {'exec MiB':>8} {'peak MiB':>8} {'NT/this':>8} "
        f"{'cpu NT/this':>11} {'rel Δ':>8}"
    )
    print(header)
    print("-" * len(header))
    fields = (
        "compile_s",
        "first_call_s",
        "steady_s",
        "cpu_s",
        "exec_mib",
        "peak_mib",
        "baseline_mib",
    )
    summary = []
    for config in configs:
        key = (config["dtype"], config["mode"])
        med = {}
        for side in sides:
            rs = runs[(*key, side)]
            med[side] = {f: statistics.median(r[f] for r in rs) for f in fields}
            med[side]["checksum"] = rs[0]["checksum"]
        for side in sides:
            m = med[side]
            ratio = cpu_ratio = "-"
            if "nt" in med:
                ratio = f"{med['nt']['steady_s'] / m['steady_s']:.2f}x"
                cpu_ratio = f"{med['nt']['cpu_s'] / m['cpu_s']:.2f}x"
            ref = med.get("nt", med["ours"])["checksum"]
            delta = max(
                abs(a - b) / max(abs(b), 1e-300)
                for a, b in zip(m["checksum"], ref, strict=True)
            )
            print(
                f"{config['dtype']:<8} {config['mode']:<5} {SIDES[side]:<15} "
                f"{m['compile_s']:>7.2f} {m['first_call_s']:>8.2f} "
                f"{m['steady_s']:>7.3f} {m['cpu_s']:>6.3f} {m['exec_mib']:>8.0f} "
                f"{m['peak_mib']:>8.0f} {ratio:>8} {cpu_ratio:>11} {delta:>8.1e}"
            )
            summary.append({"dtype": key[0], "mode": key[1], "side": side, **m})
    base = {
        side: statistics.median(
            r["baseline_mib"] for k, rs in runs.items() if k[2] == side for r in rs
        )
        for side in sides
    }
    base = ", ".join(f"{SIDES[side]} {mib:.0f} MiB" for side, mib in base.items())
    print(
        "\nTimes in seconds. compile: trace, lower and compile (ahead of time); "
        "1st call:\ncompile plus the first execution; steady: median wall time of "
        "a call; cpu: median\nCPU time of a call, all threads (less sensitive to "
        "other load on a shared machine).\nexec MiB: peak resident memory during "
        "the calls minus the resident memory just\nbefore them (freed heap "
        "returned to the OS first); peak MiB: the process's peak\nresident "
        "memory, compilation and imports included\n"
        f"(before compiling: {base}).\n"
        "NT/this: Neural Tangents' time divided by this row's (> 1: faster than "
        "NT).\nrel Δ: relative difference of the sums of NNGP and NTK against NT's "
        "(widebnn's\nwithout NT): a sanity check that all rows computed the same "
        "kernel."
    )
    if args.json:
        raw = [{"key": list(k), "runs": v} for k, v in runs.items()]
        pathlib.Path(args.json).write_text(
            json.dumps({"summary": summary, "raw": raw}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
