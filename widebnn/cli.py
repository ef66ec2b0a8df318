"""The ``widebnn`` command: ``demo``, ``kernel``, ``sample`` and ``compare``.

Every subcommand has ``--help``. Mistakes in what is passed (bad options, missing or
malformed files, a spec that does not fit the data) end with exit code 2 and one
line on stderr, ``widebnn <command>: error: <what>``; a run that cannot finish (a
rejection sampler out of ``--max-proposals``) with exit code 1 and one line. Set
``WIDEBNN_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from ._cli_io import InputError


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _model_options(parser):
    group = parser.add_argument_group("data and network")
    group.add_argument(
        "--data",
        required=True,
        help="training data: .npz with arrays x, y or .csv (targets last)",
    )
    group.add_argument("--test", help="test inputs (.npz with x, or .csv)")
    group.add_argument(
        "--y-cols", type=int, default=1, help="target columns of a .csv (default 1)"
    )
    group.add_argument(
        "--arch",
        help='JSON spec: {"layers": [{"layer": "Dense", "out_dim": "width"}, ...]}',
    )
    group.add_argument(
        "--depth", type=int, default=1, help="hidden ReLU layers without --arch"
    )
    group.add_argument("--width", type=int, default=512, help="hidden width")
    group.add_argument(
        "--noise-std", type=float, help="observation noise (default: spec or 0.1)"
    )
    group.add_argument("--out", default="widebnn-out", help="output directory")


def _sampler_options(parser):
    group = parser.add_argument_group("sampler")
    group.add_argument(
        "--sampler", choices=("ghmc", "hmc", "nuts", "rejection"), default="ghmc"
    )
    group.add_argument(
        "--reparam", choices=("repriorised", "none"), default="repriorised"
    )
    group.add_argument(
        "--exact-readout",
        action="store_true",
        help="repriorised: chain on the hidden weights, exact readout per draw",
    )
    group.add_argument(
        "--integrator",
        choices=("leapfrog", "gaussian_split"),
        default="leapfrog",
        help="gaussian_split: the prior's flow exactly, the rest by kicks",
    )
    group.add_argument("--chains", type=int, default=4)
    group.add_argument("--draws", type=int, default=500, help="draws per chain")
    group.add_argument("--warmup", type=int, default=500)
    group.add_argument("--thin", type=int, default=1)
    group.add_argument(
        "--max-proposals", type=int, help="rejection: give up after this many"
    )
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``widebnn`` argument parser."""
    from . import _cli_commands as commands

    parser = _Parser(
        prog="widebnn", description="Wide Bayesian neural networks in JAX."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser(
        "demo",
        help="the whole pipeline on built-in data, with plots",
        description="NNGP posterior, repriorised HMC of a wide network, exact "
        "rejection samples on a small subset, comparison tables, ArviZ summary and "
        "PNG plots, on a built-in 1-D regression problem.",
    )
    demo.add_argument("--out", default="widebnn-demo", help="output directory")
    demo.add_argument("--quick", action="store_true", help="tiny settings (smoke run)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(handler=commands.demo_command)

    kernel = sub.add_parser(
        "kernel",
        help="NNGP and NTK of a network",
        description="Without --data: print the kernels of a fully connected network "
        "on built-in inputs. With --data: save the kernels of the network of "
        "--arch/--depth/--width on your data to OUT/kernels.npz.",
    )
    kernel.add_argument(
        "--demo", action="store_true", help="built-in inputs (the default)"
    )
    kernel.add_argument("--data", help="training data (.npz with x, y or .csv)")
    kernel.add_argument("--test", help="test inputs")
    kernel.add_argument("--y-cols", type=int, default=1)
    kernel.add_argument("--arch", help="JSON architecture spec")
    kernel.add_argument("--depth", type=int, default=2, help="hidden layers")
    kernel.add_argument("--width", type=int, default=512)
    kernel.add_argument("--noise-std", type=float)
    kernel.add_argument("--out", default="widebnn-out")
    kernel.add_argument("--activation", choices=("relu", "erf"), default="relu")
    kernel.add_argument("--W-std", dest="W_std", type=float, default=1.5)
    kernel.add_argument("--b-std", dest="b_std", type=float, default=0.05)
    kernel.add_argument("--n", type=int, default=5, help="number of built-in inputs")
    kernel.set_defaults(handler=commands.kernel_command)

    sample = sub.add_parser(
        "sample",
        help="posterior samples of a finite network",
        description="Samples the weight posterior of the network on your data and "
        "writes OUT/posterior.nc (ArviZ), predictions.npz, mixing.json, trace.png.",
    )
    _model_options(sample)
    _sampler_options(sample)
    sample.set_defaults(handler=commands.sample_command)

    compare = sub.add_parser(
        "compare",
        help="finite-width posterior vs its infinite-width GP",
        description="Samples the network and compares its predictive with the "
        "NNGP posterior: OUT/comparison.json, posterior.nc, plots.",
    )
    _model_options(compare)
    _sampler_options(compare)
    compare.set_defaults(handler=commands.compare_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``widebnn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (InputError, ValueError, TypeError) as error:
        if os.environ.get("WIDEBNN_DEBUG"):
            raise
        return _fail(args.command, error, 2)
    except RuntimeError as error:  # e.g. a rejection sampler out of proposals
        if os.environ.get("WIDEBNN_DEBUG") or not _ours(error):
            raise
        return _fail(args.command, error, 1)


def _ours(error: Exception) -> bool:
    return type(error).__module__.startswith("widebnn")


def _fail(command: str, error: Exception, code: int) -> int:
    message = " ".join(str(error).split())
    print(f"widebnn {command}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
