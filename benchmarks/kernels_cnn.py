"""Benchmark: NNGP + NTK of a small CNN with global pooling, widebnn vs Neural Tangents.

Default network (``network_spec``): ``Conv(64, 3x3, SAME, W_std=1.5, b_std=0.05) ->
Relu`` twice, ``GlobalAvgPool``, ``Dense(1, 1.5, 0.05)``, on 200 random images of
8x8x3 with ``x2=None`` (the symmetric 200 x 200 kernel), float64 and float32. Global
pooling needs the full position-pair covariance: ``(8 * 8)**2 = 4096`` entries per
pair of images.

``--myrtle`` switches to a Myrtle-style deeper CNN on 32x32x3 inputs (Shankar et al.
2020): ``Conv -> Relu`` stages separated by ``AvgPool(2x2)``, then ``GlobalAvgPool``
and ``Dense`` (``--myrtle-depth 5, 7 or 10`` convolutions). It is meant for a GPU; on
a CPU run it small (``--n 4``).

Every measurement runs in a fresh subprocess, which reports compile time, steady
time (median of ``--repeats`` calls), CPU time and peak memory (see ``_timing.py``).
Neural Tangents 0.6.5 runs with the interpreter of ``benchmarks/.nt-venv`` (see
``setup_nt_venv.sh``); the two sides are interleaved ``--rounds`` times and medians
over rounds are reported. Both save their kernels from the first round and the script
prints the largest relative difference of widebnn's kernels against NT's (the hand
check that both computed the same thing).

Usage::

    python benchmarks/kernels_cnn.py [--rounds 3] [--repeats 3] [--n 200]
        [--dtypes float64,float32] [--myrtle [--myrtle-depth 5]] [--no-nt]
        [--json OUT]

No network access is needed.
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
NT_SCRIPT = HERE / "_nt_cnn.py"
SIDES = {"ours": "widebnn", "nt": "Neural Tangents"}
W_STD, B_STD = 1.5, 0.05


def _conv(width):
    return ["conv", {"width": width, "filter": [3, 3], "W_std": W_STD, "b_std": B_STD}]


def network_spec(myrtle: bool, depth: int, width: int = 64):
    """The network as a JSON-able list of ``[kind, kwargs]`` (shared with NT)."""
    relu = ["relu", {}]
    head = [["gap", {}], ["dense", {"width": 1, "W_std": W_STD, "b_std": B_STD}]]
    if not myrtle:
        return [_conv(width), relu, _conv(width), relu, *head]
    per_stage = {5: 1, 7: 2, 10: 3}[depth]
    spec = [_conv(width), relu]
    for stage in range(3):
        spec += [_conv(width), relu] * per_stage
        if stage < 2:
            spec.append(["avgpool", {"window": [2, 2]}])
    return spec + head


def build(kernels, spec):
    """Turns the JSON layer descriptions into widebnn layers."""
    layers = []
    for kind, kw in spec:
        if kind == "conv":
            layers.append(
                kernels.Conv(
                    kw["width"],
                    tuple(kw["filter"]),
                    padding="SAME",
                    W_std=kw["W_std"],
                    b_std=kw["b_std"],
                )
            )
        elif kind == "relu":
            layers.append(kernels.Relu())
        elif kind == "avgpool":
            layers.append(kernels.AvgPool(tuple(kw["window"])))
        elif kind == "gap":
            layers.append(kernels.GlobalAvgPool())
        elif kind == "dense":
            layers.append(kernels.Dense(kw["width"], kw["W_std"], kw["b_std"]))
        else:
            raise ValueError(f"unknown layer {kind!r}")
    return kernels.serial(*layers)


def worker(config):
    """Times one configuration of widebnn in this process; prints one JSON line."""
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", config["dtype"] == "float64")
    sys.path.insert(0, str(HERE))
    from _timing import measure

    from widebnn import kernels

    net = build(kernels, config["spec"])
    rng = np.random.default_rng(config["seed"])
    shape = (config["n"], *config["image"])
    x1 = jax.device_put(rng.normal(size=shape).astype(config["dtype"]))

    def call(a, b):
        return net.kernel(a, b, ("nngp", "ntk"))

    fn = jax.jit(call)
    result = measure(fn, (x1, None), config["repeats"])
    if config.get("save"):
        nngp, ntk = fn(x1, None)
        np.savez(config["save"], nngp=np.asarray(nngp), ntk=np.asarray(ntk))
    result.update(side=config["side"], library="widebnn")
    print(json.dumps(result))


def _run(side, config, nt_python):
    config = dict(config, side=side)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.setdefault("JAX_PLATFORMS", "cpu")
    if side == "nt":
        cmd = [str(nt_python), str(NT_SCRIPT), json.dumps(config)]
    else:
        cmd = [sys.executable, __file__, "--worker", json.dumps(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{side} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _max_rel_diff(path_a, path_b):
    """Largest ``|a - b| / max|b|`` over NNGP and NTK (kernels saved by workers)."""
    import numpy as np

    a, b = np.load(path_a), np.load(path_b)
    return max(
        float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k])))
        for k in ("nngp", "ntk")
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=None, help="images (200; Myrtle 8)")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--myrtle", action="store_true", help="deeper CNN, 32x32")
    parser.add_argument("--myrtle-depth", type=int, default=5, choices=(5, 7, 10))
    parser.add_argument("--no-nt", action="store_true", help="only widebnn")
    parser.add_argument("--nt-python", default=os.environ.get("WIDEBNN_NT_PYTHON"))
    parser.add_argument("--json", help="write all raw measurements to this file")
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    sys.path.insert(0, str(HERE))
    from kernels_fcn import _cpu_model

    nt_python = pathlib.Path(args.nt_python or NT_PYTHON)
    sides = ["ours"]
    if args.no_nt:
        pass
    elif nt_python.exists():
        sides.append("nt")
    else:
        print(f"Neural Tangents venv not found at {nt_python}; widebnn only.\n")
    n = args.n or (8 if args.myrtle else 200)
    image = [32, 32, 3] if args.myrtle else [8, 8, 3]
    spec = network_spec(args.myrtle, args.myrtle_depth)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="kernels_cnn_"))
    configs = [
        {
            "dtype": dtype,
            "n": n,
            "image": image,
            "spec": spec,
            "seed": 0,
            "repeats": args.repeats,
        }
        for dtype in args.dtypes.split(",")
    ]
    runs = {}
    for round_ in range(args.rounds):
        for config in configs:
            order = sides if round_ % 2 == 0 else sides[::-1]
            for side in order:
                save = tmp / f"{config['dtype']}_{side}.npz" if round_ == 0 else None
                result = _run(side, dict(config, save=save and str(save)), nt_python)
                runs.setdefault((config["dtype"], side), []).append(result)
                print(
                    f"round {round_ + 1}/{args.rounds} {config['dtype']} "
                    f"{SIDES[side]:<15} steady {result['steady_s']:.3f} s, exec "
                    f"{result['exec_mib']:.0f} MiB",
                    file=sys.stderr,
                )
    first = {
        side: next(r[0] for k, r in runs.items() if k[1] == side) for side in sides
    }
    print(
        f"date: {time.strftime('%Y-%m-%d')}; machine: {_cpu_model()}, "
        f"{os.cpu_count()} cores, load average before/after: {os.getloadavg()[0]:.1f}"
    )
    for side in sides:
        info = first[side]
        print(
            f"{SIDES[side]:<15} {info['library']}, jax {info['jax']}, jaxlib "
            f"{info['jaxlib']}, Python {info['python']}, device {info['device']}"
        )
    names = " -> ".join(kind for kind, _ in spec)
    print(
        f"network: {names}; NNGP+NTK of {n} images {'x'.join(map(str, image))}, "
        f"x2=None; medians over {args.rounds} rounds of (median of {args.repeats} "
        "calls)\n"
    )
    header = (
        f"{'dtype':<8} {'side':<15} {'compile':>7} {'steady':>7} {'cpu':>7} "
        f"{'exec MiB':>8} {'peak MiB':>8} {'ms/entry':>8} {'NT/this':>8} "
        f"{'mem this/NT':>11} {'max rel Δ':>9}"
    )
    print(header)
    print("-" * len(header))
    fields = ("compile_s", "steady_s", "cpu_s", "exec_mib", "peak_mib")
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
            ratio = mem = delta = "-"
            if "nt" in med:
                ratio = f"{med['nt']['steady_s'] / m['steady_s']:.2f}x"
                mem = f"{m['peak_mib'] / med['nt']['peak_mib']:.2f}"
                if side == "ours":
                    paths = [tmp / f"{dtype}_{s}.npz" for s in ("ours", "nt")]
                    delta = f"{_max_rel_diff(*paths):.1e}"
            per_entry = 1e3 * m["steady_s"] / (n * (n + 1) / 2)
            print(
                f"{dtype:<8} {SIDES[side]:<15} {m['compile_s']:>7.2f} "
                f"{m['steady_s']:>7.3f} {m['cpu_s']:>7.3f} {m['exec_mib']:>8.0f} "
                f"{m['peak_mib']:>8.0f} {per_entry:>8.3f} {ratio:>8} {mem:>11} "
                f"{delta:>9}"
            )
            summary.append({"dtype": dtype, "side": side, **m})
    print(
        "\nTimes in seconds (see kernels_fcn.py for the columns). ms/entry: steady "
        "time per\ndistinct kernel entry, n(n+1)/2 of them. mem this/NT: peak RSS "
        "divided by NT's.\nmax rel Δ: max |widebnn - NT| / max |NT| over NNGP and NTK."
    )
    if args.json:
        raw = [{"key": list(k), "runs": v} for k, v in runs.items()]
        pathlib.Path(args.json).write_text(
            json.dumps({"summary": summary, "raw": raw}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
