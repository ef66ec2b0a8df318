"""The ``widebnn`` command: ``demo``, ``kernel``, ``sample`` and ``compare``.

Every subcommand and every option has ``--help``. The network options
(``--depth``, ``--width``, ``--activation``, ``--W-std``, ``--b-std``, or
``--arch`` for any other network) and their defaults are the same in every
subcommand that builds a network.

Exit codes. Mistakes in what is passed (bad options, missing or malformed files, a
spec that does not fit the data, an output file that exists without
``--overwrite``) end with exit code 2 and one line on stderr,
``widebnn <command>: error: <what>``, naming the command-line flags involved; a
run that cannot finish (a rejection sampler out of ``--max-proposals``, a kernel
matrix that cannot be factorised) with exit code 1 and one line. Anything else
is a bug and shows its traceback. Set ``WIDEBNN_DEBUG=1`` to see the traceback of
every error.

Outputs. A command refuses to replace a file it would write in ``--out`` unless
``--overwrite`` is given (checked before any work starts).

Numerics and threads. Every subcommand computes in float64 (``jax_enable_x64``;
the command is an entry point, the library never sets it). BLAS (OpenBLAS,
through numpy/scipy, which JAX's CPU linear algebra uses) is limited to one
thread for the whole command with ``threadpoolctl``: its thread pool thrashes on
the small factorisations of sampling when the cores are shared (a sampling run
measured 10x slower on a busy 2-core machine without the limit). Setting
``OPENBLAS_NUM_THREADS`` in the environment would come too late here: numpy is
already imported when ``main`` runs. If you set ``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` yourself, the command leaves BLAS as
you configured it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import re
import sys

from ._cli_io import InputError

#: Files each subcommand may write in ``--out`` (refused if present, unless
#: ``--overwrite``).
OUTPUT_FILES = {
    "demo": (
        "posterior.nc",
        "predictive_ghmc.png",
        "predictive_rejection.png",
        "trace.png",
        "energy.png",
        "comparison.json",
    ),
    "kernel": ("kernels.npz",),
    "sample": ("posterior.nc", "predictions.npz", "mixing.json", "trace.png"),
    "compare": (
        "posterior.nc",
        "predictions.npz",
        "comparison.json",
        "trace.png",
        "predictive.png",
    ),
}
#: Library argument names and the flags that set them (for error messages).
FLAG_NAMES = {
    "num_chains": "--chains",
    "num_samples": "--draws",
    "num_warmup": "--warmup",
    "thin": "--thin",
    "max_proposals": "--max-proposals",
    "exact_readout": "--exact-readout",
    "integrator": "--integrator",
    "reparam": "--reparam",
    "algorithm": "--sampler",
    "noise_std": "--noise-std",
    "x_pred": "--test",
}
#: ``--activation`` values and the ``widebnn.kernels`` layers they name.
ACTIVATIONS = {"relu": "Relu", "erf": "Erf", "tanh": "Tanh", "gelu": "Gelu"}
#: Defaults of the network options (``None`` in the parser, so that giving one
#: together with ``--arch`` can be refused).
NETWORK_DEFAULTS = {"depth": 1, "activation": "relu", "W_std": 1.4, "b_std": 0.1}
_BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}, got {value}"
            )
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _float_above(minimum: float, *, inclusive: bool):
    relation = ">=" if inclusive else ">"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a number {relation} {minimum:g}, got {text!r}"
            ) from None
        ok = value >= minimum if inclusive else value > minimum
        if not (ok and value < float("inf")):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {relation} {minimum:g}, got {text}"
            )
        return value

    parse.__name__ = f"number {relation} {minimum:g}"
    return parse


_POSITIVE = _int_at_least(1)
_NONNEGATIVE = _int_at_least(0)
_STD = _float_above(0.0, inclusive=True)
_POSITIVE_FLOAT = _float_above(0.0, inclusive=False)


def _data_options(parser, *, targets_required: bool):
    group = parser.add_argument_group("data")
    targets = "x and y" if targets_required else "x (y optional, unused)"
    group.add_argument(
        "--data",
        required=targets_required,
        help=f"training data: .npz with arrays {targets}, or .csv (comma-separated "
        "numbers, optional header; the last --y-cols columns are targets)",
    )
    group.add_argument(
        "--test",
        help="test inputs: .npz with an array x, or .csv whose columns are all "
        "inputs (default: the training inputs)",
    )
    group.add_argument(
        "--y-cols",
        type=_NONNEGATIVE,
        metavar="N",
        help="how many trailing columns of a --data .csv are targets (default 1"
        + ("" if targets_required else "; 0: every column is an input")
        + ")",
    )


def _network_options(parser):
    d = NETWORK_DEFAULTS
    group = parser.add_argument_group(
        "network",
        "Without --arch: --depth hidden layers Dense(--width, --W-std, --b-std) + "
        "--activation, then a Dense readout (W_std 1.0, b_std 0.1).",
    )
    group.add_argument(
        "--arch",
        metavar="SPEC.json",
        help='any other network, as JSON: {"layers": [{"layer": "Dense", '
        '"out_dim": "width", "W_std": 1.4}, {"layer": "Relu"}, ...], '
        '"readout_W_std": 1.0, "readout_b_std": 0.1, "noise_std": 0.1}',
    )
    group.add_argument(
        "--depth",
        type=_POSITIVE,
        help=f"number of hidden layers (default {d['depth']})",
    )
    group.add_argument(
        "--width",
        type=_POSITIVE,
        default=512,
        help="hidden width of the finite network (default 512; the kernels are "
        "its infinite-width limit and do not depend on it)",
    )
    group.add_argument(
        "--activation",
        choices=tuple(ACTIVATIONS),
        help=f"hidden activation (default {d['activation']})",
    )
    group.add_argument(
        "--W-std",
        dest="W_std",
        type=_STD,
        help=f"weight standard deviation of the hidden layers (default {d['W_std']})",
    )
    group.add_argument(
        "--b-std",
        dest="b_std",
        type=_STD,
        help=f"bias standard deviation of the hidden layers (default {d['b_std']})",
    )


def _output_options(parser, default: str):
    group = parser.add_argument_group("output")
    group.add_argument("--out", help=f"output directory (default {default})")
    parser.set_defaults(default_out=default)
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist in --out (refused otherwise)",
    )


def _progress_option(parser):
    parser.add_argument(
        "--no-progress", action="store_true", help="do not show progress bars"
    )


def _sampler_options(parser):
    group = parser.add_argument_group("likelihood and sampler")
    group.add_argument(
        "--noise-std",
        type=_POSITIVE_FLOAT,
        help="observation noise standard deviation (default: the spec's, or 0.1)",
    )
    group.add_argument(
        "--sampler",
        choices=("ghmc", "hmc", "nuts", "rejection"),
        default="ghmc",
        help="ghmc/hmc/nuts: MCMC (BlackJAX); rejection: exact draws, for small "
        "data (default ghmc)",
    )
    group.add_argument(
        "--reparam",
        choices=("repriorised", "none"),
        default="repriorised",
        help="MCMC coordinates: repriorised (readout in whitened posterior "
        "coordinates) or none (the raw weights) (default repriorised)",
    )
    group.add_argument(
        "--exact-readout",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="repriorised: chain on the hidden weights, exact readout per draw "
        "(default: on for --reparam repriorised, off for none)",
    )
    group.add_argument(
        "--integrator",
        choices=("leapfrog", "gaussian_split"),
        default=None,
        help="gaussian_split: the prior's flow exactly, the rest by kicks "
        "(default: gaussian_split for --reparam repriorised, leapfrog for none)",
    )
    group.add_argument(
        "--chains", type=_POSITIVE, default=4, help="MCMC chains (default 4)"
    )
    group.add_argument(
        "--draws",
        type=_POSITIVE,
        default=500,
        help="draws per chain, after thinning (default 500)",
    )
    group.add_argument(
        "--warmup",
        type=_NONNEGATIVE,
        default=500,
        help="warm-up (adaptation) steps per chain (default 500)",
    )
    group.add_argument(
        "--thin",
        type=_POSITIVE,
        default=1,
        help="keep every --thin-th step (default 1)",
    )
    group.add_argument(
        "--max-proposals",
        type=_POSITIVE,
        help="rejection: give up after this many proposals (default: the "
        "sampler's budget)",
    )
    group.add_argument(
        "--seed", type=_NONNEGATIVE, default=0, help="random seed (default 0)"
    )
    _progress_option(group)


def build_parser() -> argparse.ArgumentParser:
    """The ``widebnn`` argument parser."""
    from . import _cli_commands as commands

    parser = _Parser(
        prog="widebnn", description="Wide Bayesian neural networks in JAX."
    )
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND"
    )

    demo = sub.add_parser(
        "demo",
        help="the whole pipeline on built-in data, with plots",
        description="NNGP posterior, repriorised HMC of a wide network, exact "
        "rejection samples on a small subset, comparison tables, ArviZ summary and "
        "PNG plots, on a built-in 1-D regression problem.",
    )
    _output_options(demo, "widebnn-demo")
    demo.add_argument(
        "--quick", action="store_true", help="tiny settings (a smoke run)"
    )
    _progress_option(demo)
    demo.set_defaults(handler=commands.demo_command)

    kernel = sub.add_parser(
        "kernel",
        help="NNGP and NTK of a network",
        description="Without --data: print the kernels of the network on built-in "
        "inputs (--n points on the unit half-circle). With --data: save the "
        "kernels of the network on your inputs to OUT/kernels.npz (and, with "
        "--test, the test-train kernels).",
    )
    kernel.add_argument(
        "--demo",
        action="store_true",
        help="built-in inputs (the default without --data)",
    )
    kernel.add_argument(
        "--n",
        type=_POSITIVE,
        help="number of built-in inputs (default 5; not with --data)",
    )
    _data_options(kernel, targets_required=False)
    _network_options(kernel)
    _output_options(kernel, "widebnn-out")
    kernel.set_defaults(handler=commands.kernel_command)

    sample = sub.add_parser(
        "sample",
        help="posterior samples of a finite network",
        description="Samples the weight posterior of the network on your data and "
        "writes OUT/posterior.nc (ArviZ), predictions.npz, mixing.json, trace.png.",
    )
    _data_options(sample, targets_required=True)
    _network_options(sample)
    _sampler_options(sample)
    _output_options(sample, "widebnn-out")
    sample.set_defaults(handler=commands.sample_command)

    compare = sub.add_parser(
        "compare",
        help="finite-width posterior vs its infinite-width GP",
        description="Samples the network and compares its predictive with the "
        "NNGP posterior: OUT/comparison.json, posterior.nc, predictions.npz, "
        "trace.png and (1-D inputs) predictive.png.",
    )
    _data_options(compare, targets_required=True)
    _network_options(compare)
    _sampler_options(compare)
    _output_options(compare, "widebnn-out")
    compare.set_defaults(handler=commands.compare_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``widebnn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(os.environ.get("WIDEBNN_DEBUG"))
    try:
        _prepare_out(args)
        import jax

        jax.config.update("jax_enable_x64", True)  # the CLI is an entry point
        with _one_blas_thread():
            return args.handler(args)
    except Exception as error:
        code = _exit_code(error)
        if debug or code is None:
            raise
        return _fail(args.command, error, code)


def _prepare_out(args) -> None:
    """Creates ``--out`` and refuses existing outputs unless ``--overwrite``."""
    if args.command == "kernel" and args.data is None:
        return  # prints only (kernel_command refuses --out without --data)
    if args.out is None:
        args.out = args.default_out
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a directory")
    if not args.overwrite:
        names = OUTPUT_FILES[args.command]
        existing = [name for name in names if (out / name).exists()]
        if existing:
            raise InputError(
                f"--out: {out} already holds {', '.join(existing)}; pass --overwrite "
                "to replace, or choose another --out"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"--out: cannot create {out}: {error.strerror or error}"
        ) from None


@contextlib.contextmanager
def _one_blas_thread():
    """One BLAS thread for the command, unless the user configured BLAS."""
    if any(variable in os.environ for variable in _BLAS_VARIABLES):
        yield
        return
    try:
        import scipy.linalg.cython_lapack  # noqa: F401  (loads the BLAS JAX uses)
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _package_dirs() -> tuple[pathlib.Path, ...]:
    from widebnn import kernels, samplers

    here = pathlib.Path(__file__).resolve().parent
    return (
        here,
        *(pathlib.Path(p).resolve() for p in kernels.__path__),
        *(pathlib.Path(p).resolve() for p in samplers.__path__),
    )


def _raised_by_us(error: BaseException) -> bool:
    """Whether ``error`` was raised by code of this package (not by a dependency)."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = pathlib.Path(tb.tb_frame.f_code.co_filename).resolve()
    return any(path.is_relative_to(d) for d in _package_dirs())


def _exit_code(error: Exception) -> int | None:
    """2 for the package's input errors, 1 for its run-time failures, else None."""
    if isinstance(error, InputError):
        return 2
    if isinstance(error, ValueError | TypeError) and _raised_by_us(error):
        return 2
    if type(error).__module__.startswith("widebnn"):
        return 1  # e.g. RejectionBudgetError, gp.LinAlgError
    return None


def flag_names(message: str) -> str:
    """Rewrites the library's argument names in ``message`` as the CLI's flags.

    ``"exact_readout=True needs reparam='repriorised'"`` becomes
    ``"--exact-readout needs --reparam repriorised"``.
    """
    for name, flag in FLAG_NAMES.items():
        message = re.sub(rf"\b{name}=True\b", flag, message)
        message = re.sub(rf"\b{name}='([^']*)'", rf"{flag} \1", message)
        message = re.sub(rf"(?<![-\w]){name}=(?=[\w.+-])", f"{flag} ", message)
        message = re.sub(rf"(?<![-\w]){name}\b", flag, message)
    return message


def _fail(command: str, error: Exception, code: int) -> int:
    message = " ".join(str(error).split())
    if not isinstance(error, InputError):
        message = flag_names(message)
    print(f"widebnn {command}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
