"""What the subcommands of ``widebnn`` do (argument parsing lives in ``cli.py``)."""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import numpy as np

from ._cli_io import (
    InputError,
    build_body,
    default_spec,
    load_arrays,
    read_spec,
)


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)  # the CLI is an entry point
    return jax


def _network_settings(args) -> dict:
    """``--depth``, ``--activation``, ``--W-std``, ``--b-std`` with their defaults;
    refused together with ``--arch`` (the spec gives the layers)."""
    from .cli import NETWORK_DEFAULTS

    given = {k: getattr(args, k) for k in NETWORK_DEFAULTS}
    if args.arch:
        flags = {"depth": "--depth", "activation": "--activation"}
        flags.update(W_std="--W-std", b_std="--b-std")
        clashes = [flags[k] for k, v in given.items() if v is not None]
        if clashes:
            raise InputError(
                f"{', '.join(clashes)} cannot be combined with --arch (the spec "
                "gives the layers)"
            )
    return {k: NETWORK_DEFAULTS[k] if v is None else v for k, v in given.items()}


def network_spec(args) -> dict:
    """The architecture spec of ``--arch``, or of the network options."""
    from .cli import ACTIVATIONS

    settings = _network_settings(args)
    if args.arch:
        return read_spec(args.arch)
    return default_spec(
        settings["depth"],
        ACTIVATIONS[settings["activation"]],
        W_std=settings["W_std"],
        b_std=settings["b_std"],
    )


def build_model(args, x, out_dim: int):
    """The :class:`widebnn.WideBNN` of the network options (or ``--arch``),
    ``--width`` and ``--noise-std`` for inputs shaped like ``x`` ``(N, ...)``."""
    from widebnn import WideBNN

    jax = _jax()
    body, settings = build_body(network_spec(args), args.width)
    try:
        shape, _ = body.init(jax.random.key(0), (1, *x.shape[1:]))
    except (TypeError, ValueError) as error:
        raise InputError(
            f"--arch: the network does not fit the data: {error}"
        ) from None
    if len(shape) != 2:
        raise InputError(
            f"--arch: the network must end in features (N, width); it gives {shape} "
            "(add Flatten or a global pooling layer)"
        )
    noise_std = getattr(args, "noise_std", None)
    if noise_std is None:
        noise_std = settings["noise_std"]
    try:
        return WideBNN(
            body,
            int(shape[1]),
            settings["readout_W_std"],
            settings["readout_b_std"],
            noise_std,
            out_dim,
        )
    except ValueError as error:
        raise InputError(f"--arch: {error}") from None


def _data(args, *, need_y: bool = True):
    """``(x, y, x_test)`` of ``--data``/``--y-cols`` and ``--test`` (``x_test`` is
    ``x`` without ``--test``; ``y`` is ``None`` when not needed and absent)."""
    y_cols = 1 if args.y_cols is None else args.y_cols
    if need_y and y_cols < 1:
        raise InputError(f"--y-cols must be >= 1 (the targets), got {y_cols}")
    x, y = load_arrays(args.data, role="--data", need_y=need_y, y_columns=y_cols)
    if args.test:
        x_test, _ = load_arrays(args.test, role="--test", need_y=False, y_columns=0)
        if x_test.shape[1:] != x.shape[1:]:
            raise InputError(
                f"--test: inputs of shape {x_test.shape[1:]} per row, but --data has "
                f"{x.shape[1:]}"
            )
    else:
        x_test = x
    return x, y, x_test


def run_sampler(args, model, x, y, x_test, key):
    """Runs ``--sampler`` and returns its posterior."""
    from widebnn import samplers

    progress = not args.no_progress
    if args.sampler == "rejection":
        return samplers.rejection(
            model,
            x,
            y,
            num_samples=args.draws,
            key=key,
            x_pred=x_test,
            max_proposals=args.max_proposals,
            progress=progress,
        )
    return samplers.hmc(
        model,
        x,
        y,
        algorithm=args.sampler,
        reparam=args.reparam,
        exact_readout=args.exact_readout,
        integrator=args.integrator,
        num_chains=args.chains,
        num_warmup=args.warmup,
        num_samples=args.draws,
        thin=args.thin,
        key=key,
        x_pred=x_test,
        progress=progress,
    )


def _save_posterior(posterior, model, x, y, x_test, out, *, plots=True):
    from widebnn import diagnostics, plots as plotting

    idata = diagnostics.to_inference_data(
        posterior,
        model=model,
        x_test=x_test,
        x_train=x,
        observed={"y": y},
        num_projections=8,
    )
    files = [diagnostics.save_inference_data(idata, out / "posterior.nc")]
    np.savez(
        out / "predictions.npz",
        x_test=np.asarray(x_test),
        predictions=np.asarray(posterior.predictions),
    )
    files.append(str(out / "predictions.npz"))
    if plots:
        files.append(plotting.plot_trace(idata, out / "trace.png"))
    return idata, files


def _print_mixing(posterior):
    from widebnn import diagnostics

    summary = diagnostics.projection_summary(posterior, num_projections=20)
    for group, stats in summary.items():
        print(
            f"  {group:<12} ESS bulk median {stats['ess_bulk_median']:.0f}, "
            f"min {stats['ess_bulk_min']:.0f}, R-hat max {stats['r_hat_max']:.3f} "
            f"({stats['num_draws']:.0f} draws, 20 random projections)"
        )
    return summary


def _describe(args) -> str:
    if args.arch:
        return f"the network of {args.arch}"
    s = _network_settings(args)
    return (
        f"{s['depth']}-hidden-layer {s['activation']} network, W_std={s['W_std']}, "
        f"b_std={s['b_std']}"
    )


def kernel_command(args) -> int:
    """``widebnn kernel``: NNGP/NTK of a network on built-in or user data."""
    if args.data is None:
        return _kernel_demo(args)
    if args.demo:
        raise InputError("--demo (built-in inputs) cannot be combined with --data")
    if args.n is not None:
        raise InputError("--n sets the number of built-in inputs; not with --data")
    jax = _jax()
    x, y, x_test = _data(args, need_y=False)
    model = build_model(args, x, 1 if y is None else y.shape[1])
    out = pathlib.Path(args.out)  # created by cli.main
    nngp, ntk = jax.jit(lambda a: model.kernel(a, get=("nngp", "ntk")))(x)
    arrays: dict[str, Any] = {"nngp": np.asarray(nngp), "ntk": np.asarray(ntk)}
    if args.test:
        cross = jax.jit(lambda a, b: model.kernel(a, b, get=("nngp", "ntk")))(x_test, x)
        arrays.update(nngp_test=np.asarray(cross[0]), ntk_test=np.asarray(cross[1]))
    np.savez(out / "kernels.npz", **arrays)
    print(f"{_describe(args)}, {x.shape[0]} inputs of {args.data}")
    for name, value in arrays.items():
        print(f"{name:<10} {value.shape}  diagonal mean {np.mean(_diag(value)):.4g}")
    print(f"wrote {out / 'kernels.npz'}")
    return 0


def _diag(matrix):
    n = min(matrix.shape)
    return matrix[np.arange(n), np.arange(n)]


def _kernel_demo(args) -> int:
    for flag, given in (
        ("--test", args.test is not None),
        ("--out", args.out is not None),
        ("--y-cols", args.y_cols is not None),
        ("--overwrite", args.overwrite),
    ):
        if given:
            raise InputError(f"{flag} needs --data (your inputs)")
    n = 5 if args.n is None else args.n
    angles = np.linspace(0.0, np.pi, n)
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    model = build_model(args, x, 1)
    nngp, ntk = model.kernel(x, get=("nngp", "ntk"))
    np.set_printoptions(precision=4, suppress=True, linewidth=120)
    print(
        f"{_describe(args)}, readout W_std={model.readout_W_std}, "
        f"b_std={model.readout_b_std}; {n} points on the unit half-circle"
    )
    print("NNGP kernel:")
    print(np.asarray(nngp))
    print("NTK:")
    print(np.asarray(ntk))
    return 0


def sample_command(args) -> int:
    """``widebnn sample``: posterior draws of a finite network on user data."""
    jax = _jax()
    x, y, x_test = _data(args)
    model = build_model(args, x, y.shape[1])
    out = pathlib.Path(args.out)  # created by cli.main
    start = time.perf_counter()
    posterior = run_sampler(args, model, x, y, x_test, jax.random.key(args.seed))
    print(f"{args.sampler}: {posterior.num_chains} chain(s) x {posterior.num_draws}")
    print(f"draws in {time.perf_counter() - start:.1f} s")
    summary = _print_mixing(posterior)
    _, files = _save_posterior(posterior, model, x, y, x_test, out)
    (out / "mixing.json").write_text(json.dumps(summary, indent=2))
    files.append(str(out / "mixing.json"))
    _print_files(files)
    return 0


def _gp(model, x, y):
    """The NNGP posterior of ``model`` (its kernel as one layer: compiled once)."""
    from widebnn import gp, kernels

    readout = kernels.Dense(
        model.out_dim,
        model.readout_W_std,
        model.readout_b_std,
        parameterization=model.parameterization,
    )
    network = kernels.serial(model.body, readout)
    return gp.posterior(network, x, y, noise_var=model.noise_std**2, get="nngp")


def compare_command(args) -> int:
    """``widebnn compare``: finite-width posterior against its GP limit."""
    jax = _jax()
    from widebnn import compare, plots

    x, y, x_test = _data(args)
    model = build_model(args, x, y.shape[1])
    out = pathlib.Path(args.out)  # created by cli.main
    gp_posterior = _gp(model, x, y)
    posterior = run_sampler(args, model, x, y, x_test, jax.random.key(args.seed))
    result = compare.predictive(posterior, gp_posterior, x_test)
    print(result.table())
    _, files = _save_posterior(posterior, model, x, y, x_test, out)
    (out / "comparison.json").write_text(json.dumps(result.to_dict(), indent=2))
    files.append(str(out / "comparison.json"))
    if x.shape[1:] == (1,):
        files.append(
            plots.plot_predictive(
                posterior,
                gp_posterior,
                x_test,
                out / "predictive.png",
                x_train=x,
                y_train=y,
                title=f"{args.sampler} (width {model.width}) vs NNGP",
            )
        )
    _print_files(files)
    return 0


def _print_files(files):
    print("files:")
    for path in files:
        print(f"  {path}")


def demo_command(args: argparse.Namespace) -> int:
    """``widebnn demo``: the whole pipeline on the built-in 1-D regression, in
    float64 (``main`` has created ``--out``; float64 is turned on here too, before
    any JAX operation, for callers other than ``main``)."""
    _jax()
    out = pathlib.Path(args.out)
    probe = out / ".widebnn-demo-write-test"
    try:  # before minutes of work, not after
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InputError(f"--out: cannot write to {out}: {error.strerror}") from None
    from ._demo import run_demo

    return run_demo(out, quick=args.quick, progress=not args.no_progress)
