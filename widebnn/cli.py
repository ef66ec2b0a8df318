"""The ``widebnn`` command."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _demo_inputs(n: int) -> np.ndarray:
    """``(n, 2)`` points on the unit circle: a fixed, built-in data set."""
    angles = np.linspace(0.0, np.pi, n)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _kernel_command(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)  # the CLI is an entry point
    from widebnn import kernels

    if args.depth < 1:
        raise SystemExit("widebnn kernel: error: --depth must be >= 1")
    if args.n < 1:
        raise SystemExit("widebnn kernel: error: --n must be >= 1")
    activation = {"relu": kernels.Relu, "erf": kernels.Erf}[args.activation]
    hidden = [
        kernels.serial(kernels.Dense(512, args.W_std, args.b_std), activation())
        for _ in range(args.depth)
    ]
    net = kernels.serial(*hidden, kernels.Dense(1, args.W_std, args.b_std))
    x = _demo_inputs(args.n)
    nngp, ntk = net.kernel(x, get=("nngp", "ntk"))
    np.set_printoptions(precision=4, suppress=True, linewidth=120)
    print(
        f"{args.depth}-hidden-layer {args.activation} network, W_std={args.W_std}, "
        f"b_std={args.b_std}, {args.n} points on the unit half-circle"
    )
    print("NNGP kernel:")
    print(np.asarray(nngp))
    print("NTK:")
    print(np.asarray(ntk))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="widebnn", description="Wide Bayesian neural networks in JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    kernel = sub.add_parser(
        "kernel", help="print the NNGP and NTK of a fully connected network"
    )
    kernel.add_argument(
        "--demo", action="store_true", help="use the built-in inputs (the default)"
    )
    kernel.add_argument("--depth", type=int, default=2, help="hidden layers")
    kernel.add_argument("--activation", choices=("relu", "erf"), default="relu")
    kernel.add_argument("--W-std", dest="W_std", type=float, default=1.5)
    kernel.add_argument("--b-std", dest="b_std", type=float, default=0.05)
    kernel.add_argument("--n", type=int, default=5, help="number of inputs")
    kernel.set_defaults(handler=_kernel_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``widebnn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
