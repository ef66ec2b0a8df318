"""What the subcommands of ``widebnn`` do (argument parsing lives in ``cli.py``)."""

from __future__ import annotations

import argparse
import json
import pathlib
import time

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


def _out_dir(path) -> pathlib.Path:
    out = pathlib.Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--out: cannot create {out}: {error.strerror}") from None
    return out


def _positive(value, name):
    if value is not None and value < 1:
        raise InputError(f"{name} must be >= 1, got {value}")


def build_model(args, x, out_dim: int):
    """The :class:`widebnn.WideBNN` of ``--arch``/``--depth``, ``--width`` and
    ``--noise-std`` for inputs shaped like ``x`` ``(N, ...)``."""
    jax = _jax()
    from widebnn import WideBNN

    _positive(args.width, "--width")
    _positive(args.depth, "--depth")
    spec = read_spec(args.arch) if args.arch else default_spec(args.depth)
    body, settings = build_body(spec, args.width)
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
    noise_std = settings["noise_std"] if args.noise_std is None else args.noise_std
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
        raise InputError(str(error)) from None


def _data(args):
    x, y = load_arrays(args.data, role="--data", need_y=True, y_columns=args.y_cols)
    if args.test:
        x_test, _ = load_arrays(args.test, role="--test", need_y=False)
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

    _positive(args.draws, "--draws")
    _positive(args.chains, "--chains")
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


def _save_posterior(posterior, model, y, x_test, out, *, plots=True):
    from widebnn import diagnostics, plots as plotting

    idata = diagnostics.to_inference_data(
        posterior, model=model, x_test=x_test, observed={"y": y}, num_projections=8
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


def kernel_command(args) -> int:
    """``widebnn kernel``: NNGP/NTK of a network on built-in or user data."""
    jax = _jax()
    if args.data is None:
        return _kernel_demo(args)
    x, y, x_test = _data(args)
    model = build_model(args, x, y.shape[1])
    out = _out_dir(args.out)
    nngp, ntk = jax.jit(lambda a: model.kernel(a, get=("nngp", "ntk")))(x)
    arrays = {"nngp": np.asarray(nngp), "ntk": np.asarray(ntk)}
    if args.test:
        cross = model.kernel(x_test, x, get=("nngp", "ntk"))
        arrays.update(nngp_test=np.asarray(cross[0]), ntk_test=np.asarray(cross[1]))
    np.savez(out / "kernels.npz", **arrays)
    for name, value in arrays.items():
        print(f"{name:<10} {value.shape}  diagonal mean {np.mean(_diag(value)):.4g}")
    print(f"wrote {out / 'kernels.npz'}")
    return 0


def _diag(matrix):
    n = min(matrix.shape)
    return matrix[np.arange(n), np.arange(n)]


def _kernel_demo(args) -> int:
    from widebnn import kernels

    _positive(args.depth, "--depth")
    _positive(args.n, "--n")
    activation = {"relu": kernels.Relu, "erf": kernels.Erf}[args.activation]
    hidden = [
        kernels.serial(kernels.Dense(512, args.W_std, args.b_std), activation())
        for _ in range(args.depth)
    ]
    net = kernels.serial(*hidden, kernels.Dense(1, args.W_std, args.b_std))
    angles = np.linspace(0.0, np.pi, args.n)
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
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


def sample_command(args) -> int:
    """``widebnn sample``: posterior draws of a finite network on user data."""
    jax = _jax()
    x, y, x_test = _data(args)
    model = build_model(args, x, y.shape[1])
    out = _out_dir(args.out)
    start = time.perf_counter()
    posterior = run_sampler(args, model, x, y, x_test, jax.random.key(args.seed))
    print(f"{args.sampler}: {posterior.num_chains} chain(s) x {posterior.num_draws}")
    print(f"draws in {time.perf_counter() - start:.1f} s")
    summary = _print_mixing(posterior)
    _, files = _save_posterior(posterior, model, y, x_test, out)
    (out / "mixing.json").write_text(json.dumps(summary, indent=2))
    files.append(str(out / "mixing.json"))
    _print_files(files)
    return 0


def _gp(model, x, y):
    from widebnn import gp

    return gp.posterior(model.kernel, x, y, noise_var=model.noise_std**2, get="nngp")


def compare_command(args) -> int:
    """``widebnn compare``: finite-width posterior against its GP limit."""
    jax = _jax()
    from widebnn import compare, plots

    x, y, x_test = _data(args)
    model = build_model(args, x, y.shape[1])
    out = _out_dir(args.out)
    gp_posterior = _gp(model, x, y)
    posterior = run_sampler(args, model, x, y, x_test, jax.random.key(args.seed))
    result = compare.predictive(posterior, gp_posterior, x_test)
    print(result.table())
    _, files = _save_posterior(posterior, model, y, x_test, out)
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
    float64 (turned on here, before any JAX operation)."""
    _jax()
    out = _out_dir(args.out)
    probe = out / ".widebnn-demo-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InputError(f"--out: cannot write to {out}: {error.strerror}") from None
    from ._demo import run_demo

    return run_demo(out, quick=args.quick, progress=not args.no_progress)
