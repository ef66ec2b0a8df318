"""Benchmark: kernel feature maps — accuracy against width, and GP fits at large N.

Three parts (``--part``):

* ``error``: relative Frobenius error ``||Phi Phi^T - K||_F / ||K||_F`` of the
  NNGP and NTK features against the exact kernels, against ``dim``, for a 3-hidden-
  layer ReLU FCN (``W_std`` 1.5, ``b_std`` 0.1, readout 1.0/0.05; 200 inputs in 20
  dimensions, the anchor setting of Neural Tangents' experimental feature code), the
  same FCN with Erf and with GELU, and a CNN (two 3x3 SAME convolutions with ReLU,
  global average pooling, dense readout) on 100 8x8 digit images. Median over
  ``--keys`` keys; a log-log plot with the ``1/sqrt(m)`` guide is written to
  ``features_error.png``.
* ``large``: NNGP regression with ``N = --n-large`` (default 100 000) training
  points in 100 dimensions with a finite draw of the ReLU FCN as the teacher
  (``examples/large_n_features.py``), the ReLU FCN,
  features of ``--dim`` columns: wall time and peak memory of the features and the
  Woodbury posterior mean (``widebnn.gp.feature_posterior``), test RMSE; and, on a
  10 000-point subset, the exact NNGP posterior (``widebnn.gp.posterior``) against
  the features on the same subset.
* ``cnn``: the CNN on scikit-learn's digits (8x8, 10 classes, one-hot targets):
  exact NNGP posterior against features on the same points, test accuracy and wall
  time of each, the speed-up at equal accuracy.

Run: ``python benchmarks/features.py --part error`` (a few minutes), ``--part
large`` (about 10 minutes on 2 cores), ``--part cnn``. Float64 throughout. No
network access is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from widebnn import gp, kernels  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def fcn(activation, depth=3, width=512):
    layers = []
    for _ in range(depth):
        layers += [kernels.Dense(width, 1.5, 0.1), activation()]
    return kernels.serial(*layers, kernels.Dense(1, 1.0, 0.05))


def cnn(width=64):
    return kernels.serial(
        kernels.Conv(width, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
        kernels.Relu(),
        kernels.Conv(width, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
        kernels.Relu(),
        kernels.GlobalAvgPool(),
        kernels.Dense(10, 1.0, 0.05),
    )


def digits(n=None, seed=0):
    """``(x, labels)``: digit images ``(N, 8, 8, 1)`` scaled to unit pixel variance."""
    bunch = load_digits()
    x = bunch.images.astype(np.float64)
    x = (x - x.mean()) / x.std()
    order = np.random.default_rng(seed).permutation(len(x))
    if n is not None:
        order = order[:n]
    return jnp.asarray(x[order][..., None]), bunch.target[order]


def relative_error(features, exact):
    return float(
        jnp.linalg.norm(features @ features.T - exact) / jnp.linalg.norm(exact)
    )


def part_error(args):
    x_fcn = jax.random.normal(jax.random.key(1), (200, 20))
    x_cnn, _ = digits(100)
    networks = {
        "ReLU FCN": (fcn(kernels.Relu), x_fcn, args.dims),
        "Erf FCN": (fcn(kernels.Erf), x_fcn, args.dims),
        "GELU FCN": (fcn(kernels.Gelu), x_fcn, args.dims),
        "CNN + GAP": (cnn(), x_cnn, [d for d in args.dims if d <= args.cnn_max_dim]),
    }
    rows = []
    for name, (net, x, dims) in networks.items():
        exact = net.kernel(x)
        for dim in dims:
            errors, seconds, widths = [], [], None
            for seed in range(args.keys):
                fmap = kernels.feature_map(net, jax.random.key(100 + seed), dim)
                start = time.perf_counter()
                nngp, ntk = jax.block_until_ready(fmap(x))
                seconds.append(time.perf_counter() - start)
                errors.append(
                    (relative_error(nngp, exact[0]), relative_error(ntk, exact[1]))
                )
                widths = (nngp.shape[-1], ntk.shape[-1])
            row = dict(
                network=name,
                dim=dim,
                m_nngp=widths[0],
                m_ntk=widths[1],
                nngp_error=statistics.median(e[0] for e in errors),
                ntk_error=statistics.median(e[1] for e in errors),
                seconds=statistics.median(seconds),
            )
            rows.append(row)
            print(
                f"{name:10s} dim {dim:5d}  widths {widths[0]:5d}/{widths[1]:5d}  "
                f"NNGP {row['nngp_error']:.4f}  NTK {row['ntk_error']:.4f}  "
                f"({row['seconds']:.2f} s, median over keys; the first compiles)",
                flush=True,
            )
    plot_errors(rows, os.path.join(HERE, "features_error.png"))
    return rows


def plot_errors(rows, path):
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained", sharey=True)
    for ax, kind in zip(axes, ("nngp", "ntk"), strict=True):
        for name in dict.fromkeys(r["network"] for r in rows):
            sub = [r for r in rows if r["network"] == name]
            ax.loglog(
                [r[f"m_{kind}"] for r in sub],
                [r[f"{kind}_error"] for r in sub],
                "o-",
                label=name,
            )
        m = np.array(
            [min(r[f"m_{kind}"] for r in rows), max(r[f"m_{kind}"] for r in rows)]
        )
        first = [r for r in rows if r["network"] == "ReLU FCN"][0]
        guide = first[f"{kind}_error"] * np.sqrt(first[f"m_{kind}"] / m)
        ax.loglog(m, guide, "k--", lw=1, label=r"$\propto 1/\sqrt{m}$")
        ax.axhline(0.05, color="grey", lw=0.8, ls=":")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"feature columns m ({kind.upper()})")
        ax.set_title(f"{kind.upper()} features")
    axes[0].set_ylabel(r"$\|\Phi\Phi^\top - K\|_F / \|K\|_F$")
    axes[1].legend(fontsize=8)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def peak_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def report(label, row):
    print(
        f"{label:28s} {row['seconds']:8.1f} s  test RMSE {row['rmse']:.4f}  "
        f"peak {row['peak_gib']:.2f} GiB",
        flush=True,
    )


def part_large(args):
    import sys

    sys.path.insert(0, os.path.join(HERE, "..", "examples"))
    from large_n_features import teacher_data  # a draw of the network as teacher

    n, n_sub = args.n_large, args.n_exact
    x, y, x_test, f_test = teacher_data(n, 2000, 100)
    net = fcn(kernels.Relu)
    noise = 0.01
    fmap = kernels.feature_map(net, jax.random.key(1), args.dim)
    rows = {}

    def fit(label, x_fit, y_fit):
        start = time.perf_counter()
        post = gp.feature_posterior(fmap, x_fit, y_fit, noise_var=noise, progress=False)
        mean = post.predict(x_test, full_cov=False).mean
        jax.block_until_ready(mean)
        seconds = time.perf_counter() - start
        rmse = float(jnp.sqrt(jnp.mean((mean - f_test) ** 2)))
        rows[label] = dict(seconds=seconds, rmse=rmse, peak_gib=peak_gib())
        report(label, rows[label])
        return mean

    # the large fit first: ru_maxrss is the peak so far, and the exact fit's
    # N_sub x N_sub matrices would otherwise dominate it
    fit(f"features, N = {n}", x, y)
    features_sub = fit(f"features, N = {n_sub}", x[:n_sub], y[:n_sub])
    start = time.perf_counter()
    exact = gp.posterior(net, x[:n_sub], y[:n_sub], noise_var=noise)
    exact_mean = exact.predict(x_test, full_cov=False).mean
    jax.block_until_ready(exact_mean)
    seconds = time.perf_counter() - start
    rmse = float(jnp.sqrt(jnp.mean((exact_mean - f_test) ** 2)))
    rows[f"exact NNGP, N = {n_sub}"] = dict(
        seconds=seconds, rmse=rmse, peak_gib=peak_gib()
    )
    gap = float(jnp.sqrt(jnp.mean((features_sub - exact_mean) ** 2)))
    rows["features vs exact (RMS)"] = dict(value=gap)
    report(f"exact NNGP, N = {n_sub}", rows[f"exact NNGP, N = {n_sub}"])
    print(f"RMS difference of the two posterior means on the test set: {gap:.4f}")
    return rows


def part_cnn(args):
    x, labels = digits()
    n_train = args.n_cnn
    onehot = jax.nn.one_hot(labels, 10) - 0.1
    x_train, y_train, x_test = x[:n_train], onehot[:n_train], x[n_train:]
    test_labels = labels[n_train:]
    net = cnn()
    noise = 0.01
    results = {}

    def accuracy(mean):
        return float(np.mean(np.argmax(np.asarray(mean), axis=1) == test_labels))

    start = time.perf_counter()
    post = gp.posterior(net, x_train, y_train, noise_var=noise)
    mean = post.predict(x_test, full_cov=False).mean
    jax.block_until_ready(mean)
    exact_seconds = time.perf_counter() - start
    results["exact"] = dict(seconds=exact_seconds, accuracy=accuracy(mean))
    print(
        f"exact CNN-GAP NNGP: {exact_seconds:.1f} s, accuracy {accuracy(mean):.4f}",
        flush=True,
    )
    for dim in args.cnn_dims:
        fmap = kernels.feature_map(net, jax.random.key(1), dim)
        start = time.perf_counter()
        blocks = {} if args.block_size is None else {"block_size": args.block_size}
        fpost = gp.feature_posterior(
            fmap, x_train, y_train, noise_var=noise, progress=False, **blocks
        )
        fmean = fpost.predict(x_test, full_cov=False, progress=False).mean
        jax.block_until_ready(fmean)
        seconds = time.perf_counter() - start
        results[f"features dim {dim}"] = dict(
            seconds=seconds, accuracy=accuracy(fmean), speedup=exact_seconds / seconds
        )
        print(
            f"features dim {dim:5d}: {seconds:.1f} s, accuracy {accuracy(fmean):.4f}, "
            f"speed-up {exact_seconds / seconds:.1f}x",
            flush=True,
        )
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["error", "large", "cnn"])
    parser.add_argument(
        "--dims", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096]
    )
    parser.add_argument("--cnn-max-dim", type=int, default=1024)
    parser.add_argument("--keys", type=int, default=3)
    parser.add_argument("--n-large", type=int, default=100_000)
    parser.add_argument("--n-exact", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--n-cnn", type=int, default=1500)
    parser.add_argument("--cnn-dims", type=int, nargs="+", default=[256, 1024])
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="rows per block of the CNN feature GP (default: gp.feature_posterior's)",
    )
    parser.add_argument(
        "--exact-seconds",
        type=float,
        help="skip the exact CNN run and use this time (from an earlier run)",
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--plot-from", help="redraw features_error.png from a --part error JSON file"
    )
    args = parser.parse_args(argv)
    if args.plot_from:
        with open(args.plot_from) as handle:
            plot_errors(json.load(handle), os.path.join(HERE, "features_error.png"))
        return
    print(
        f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__}, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if args.part is None:
        parser.error("--part is required (or --plot-from)")
    result = {"error": part_error, "large": part_large, "cnn": part_cnn}[args.part](
        args
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
