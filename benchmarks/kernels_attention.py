"""Benchmark: NNGP + NTK of a small attention network, widebnn vs Neural Tangents.

The network (NTK parameterisation, same arguments on both sides)::

    Dense(256) -> GlobalSelfAttention(256, 256, 256, 4 heads, linear scaling,
    SOFTMAX, W_key 1.2, W_query 0.9, W_value 1.1, W_out 1.0, b 0.05)
    -> LayerNorm -> Dense(256, 1.4, 0.05) -> Relu -> Dense(256, 1.4, 0.05)
    -> GlobalAvgPool -> Dense(1)

on 256 random sequences of length 32 with 16 channels, ``x2=None`` (the symmetric
``256 x 256`` kernel; the attention layer needs every pair of positions, so the
intermediate kernels are ``256 x 256 x 32 x 32``), in float64 and float32. Both
sides jit the whole kernel call (``get=("nngp", "ntk")``).

Each measurement runs in a fresh subprocess (see ``kernels_fcn.py`` for the fields:
compile, first call, steady median, CPU time, memory). Neural Tangents 0.6.5 runs
with ``benchmarks/.nt-venv`` (``_nt_attention.py``); the runs are interleaved,
``--rounds`` times, and medians over rounds are reported. The first round also saves
both sides' kernels and prints their largest relative difference,
``max |ours - NT| / max |NT|`` (the hand check of the issue: same arguments, same
kernels).

Usage::

    python benchmarks/kernels_attention.py [--rounds 3] [--repeats 5] [--n 256]
        [--length 32] [--dtypes float64,float32] [--no-nt] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
NT_PYTHON = HERE / ".nt-venv" / "bin" / "python"
NT_SCRIPT = HERE / "_nt_attention.py"
SIDES = {"ours": "widebnn", "nt": "Neural Tangents"}


def network(kernels, width):
    """The benchmark network in widebnn's layers (mirrors ``_nt_attention.network``)."""
    return kernels.serial(
        kernels.Dense(width, 1.0, 0.0),
        kernels.GlobalSelfAttention(
            width,
            width,
            width,
            4,
            linear_scaling=True,
            W_key_std=1.2,
            W_value_std=1.1,
            W_query_std=0.9,
            W_out_std=1.0,
            b_std=0.05,
            attention_mechanism="SOFTMAX",
        ),
        kernels.LayerNorm(axis=-1),
        kernels.Dense(width, 1.4, 0.05),
        kernels.Relu(),
        kernels.Dense(width, 1.4, 0.05),
        kernels.GlobalAvgPool(),
        kernels.Dense(1, 1.0, 0.0),
    )


def worker(config):
    """Times one configuration of widebnn in this process; prints one JSON line."""
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", config["dtype"] == "float64")
    sys.path.insert(0, str(HERE))
    from _timing import measure

    from widebnn import kernels

    net = network(kernels, config["width"])
    rng = np.random.default_rng(config["seed"])
    shape = (config["n"], config["length"], config["d"])
    x1 = jax.device_put(rng.normal(size=shape).astype(config["dtype"]))
    get = ("nngp", "ntk")

    def call(a):
        return net.kernel(a, None, get)

    jitted = jax.jit(call)
    result = measure(jitted, (x1,), config["repeats"])
    if config.get("save"):
        out = jitted(x1)
        np.savez(
            config["save"], **{k: np.asarray(v) for k, v in zip(get, out, strict=True)}
        )
    result.update(side="ours", library="widebnn")
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


def _max_relative_difference(ours_path, nt_path):
    import numpy as np

    with np.load(ours_path) as ours, np.load(nt_path) as nt:
        return {
            name: float(
                np.max(np.abs(ours[name] - nt[name])) / np.max(np.abs(nt[name]))
            )
            for name in ("nngp", "ntk")
        }


def _cpu_model():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--no-nt", action="store_true", help="only widebnn")
    parser.add_argument("--nt-python", default=os.environ.get("WIDEBNN_NT_PYTHON"))
    parser.add_argument("--json", help="write all raw measurements to this file")
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    nt_python = pathlib.Path(args.nt_python or NT_PYTHON)
    sides = ["ours"]
    if not args.no_nt:
        if nt_python.exists():
            sides.append("nt")
        else:
            print(
                f"Neural Tangents venv not found at {nt_python} (make it with "
                "benchmarks/setup_nt_venv.sh); showing widebnn's numbers only.\n"
            )
    configs = [
        {
            "dtype": dtype,
            "n": args.n,
            "length": args.length,
            "d": args.d,
            "width": 256,
            "seed": 0,
            "repeats": args.repeats,
        }
        for dtype in args.dtypes.split(",")
    ]
    runs, differences = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for config in configs:
                order = sides if round_ % 2 == 0 else sides[::-1]
                saves = {}
                for side in order:
                    run_config = dict(config)
                    if round_ == 0:
                        saves[side] = f"{scratch}/{side}_{config['dtype']}.npz"
                        run_config["save"] = saves[side]
                    result = _run(side, run_config, nt_python)
                    runs.setdefault((config["dtype"], side), []).append(result)
                    print(
                        f"round {round_ + 1}/{args.rounds} {config['dtype']} "
                        f"{SIDES[side]:<15} steady {result['steady_s']:.3f} s",
                        file=sys.stderr,
                    )
                if round_ == 0 and "nt" in saves:
                    differences[config["dtype"]] = _max_relative_difference(
                        saves["ours"], saves["nt"]
                    )

    print(
        f"date: {time.strftime('%Y-%m-%d')}; machine: {_cpu_model()}, "
        f"{os.cpu_count()} cores; load average before: "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    for side in sides:
        info = next(r[0] for k, r in runs.items() if k[1] == side)
        print(
            f"{SIDES[side]:<15} {info['library']}, jax {info['jax']}, jaxlib "
            f"{info['jaxlib']}, Python {info['python']}, device {info['device']}"
        )
    print(
        f"network: Dense(256) -> GlobalSelfAttention(4 heads, linear, SOFTMAX) -> "
        f"LayerNorm -> Dense-Relu-Dense -> GlobalAvgPool -> Dense(1); NNGP+NTK of "
        f"{args.n} sequences of length {args.length} (x2=None); medians over "
        f"{args.rounds} rounds of (median of {args.repeats} calls)\n"
    )
    header = (
        f"{'dtype':<8} {'side':<15} {'compile':>7} {'1st call':>8} {'steady':>7} "
        f"{'cpu':>6} {'exec MiB':>8} {'peak MiB':>8} {'NT/this':>8} "
        f"{'cpu NT/this':>11}"
    )
    print(header)
    print("-" * len(header))
    fields = ("compile_s", "first_call_s", "steady_s", "cpu_s", "exec_mib", "peak_mib")
    summary = []
    for config in configs:
        dtype = config["dtype"]
        med = {
            side: {
                f: statistics.median(r[f] for r in runs[(dtype, side)]) for f in fields
            }
            for side in sides
        }
        for side in sides:
            m = med[side]
            ratio = cpu_ratio = "-"
            if "nt" in med:
                ratio = f"{med['nt']['steady_s'] / m['steady_s']:.2f}x"
                cpu_ratio = f"{med['nt']['cpu_s'] / m['cpu_s']:.2f}x"
            print(
                f"{dtype:<8} {SIDES[side]:<15} {m['compile_s']:>7.2f} "
                f"{m['first_call_s']:>8.2f} {m['steady_s']:>7.3f} {m['cpu_s']:>6.3f} "
                f"{m['exec_mib']:>8.0f} {m['peak_mib']:>8.0f} {ratio:>8} "
                f"{cpu_ratio:>11}"
            )
            summary.append({"dtype": dtype, "side": side, **m})
    for dtype, diff in differences.items():
        print(
            f"\n{dtype}: max |widebnn - NT| / max |NT|: nngp {diff['nngp']:.1e}, "
            f"ntk {diff['ntk']:.1e}",
            end="",
        )
    print(
        "\n\nTimes in seconds (see kernels_fcn.py for the columns). NT/this: Neural "
        "Tangents' time\ndivided by widebnn's (> 1: widebnn faster)."
    )
    if args.json:
        raw = [{"key": list(k), "runs": v} for k, v in runs.items()]
        pathlib.Path(args.json).write_text(
            json.dumps(
                {"summary": summary, "differences": differences, "raw": raw}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
