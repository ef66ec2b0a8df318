"""Exact NNGP posterior at scale: 10,000 training points in float64.

Data: scikit-learn's 8x8 digits (1,797 images), upsampled to ``--n-train +
--n-test`` images by random one-pixel shifts plus small Gaussian noise (no network
access). Targets are one-hot minus 0.1 (10 outputs sharing one kernel).

Measured, each with a wall clock around a blocking call:

* kernel: the ``(N, N)`` training NNGP of a deep ReLU network, through
  ``widebnn.kernels.batched`` (tiles, symmetry, all local devices), after a
  warm-up call on two tiles that compiles the tile functions;
* posterior: ``widebnn.gp.posterior`` given that kernel (the symmetric check,
  the regularised Cholesky factorisation, the solve for 10 outputs and the log
  marginal likelihood), i.e. the solve time; run twice, first call with
  compilation, second steady state;
* predict: the ``(M, N)`` test-train kernel plus predictive means and variances;
* peak resident memory of the process (``ru_maxrss``).

Run: ``python benchmarks/gp_scale.py`` (about 2-4 minutes on 2 CPU cores);
``--n-train 2000`` for a quick check. Uses every core JAX sees; on CPU, restrict
with ``taskset -c 0,1``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from widebnn import gp, kernels  # noqa: E402


def upsampled_digits(n: int, seed: int = 0):
    """``n`` digit images: random shifts by at most one pixel plus noise."""
    digits = load_digits()
    images = digits.images / 16.0
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), n)
    shifts = rng.integers(-1, 2, size=(n, 2))
    out = np.empty((n, 8, 8))
    for k, (i, (dy, dx)) in enumerate(zip(pick, shifts, strict=True)):
        out[k] = np.roll(images[i], (dy, dx), axis=(0, 1))
    out += 0.05 * rng.normal(size=out.shape)
    x = out.reshape(n, 64)
    x = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    labels = digits.target[pick]
    y = np.eye(10)[labels] - 0.1
    return x, y, labels


def network(depth: int, w_std: float, b_std: float) -> kernels.Layer:
    layers = []
    for _ in range(depth):
        layers += [kernels.Dense(512, w_std, b_std), kernels.Relu()]
    return kernels.serial(*layers, kernels.Dense(10, w_std, b_std))


class TimedKernel:
    """Wraps a kernel callable and adds up the wall time spent in it."""

    def __init__(self, fn):
        self.fn = fn
        self.seconds = 0.0

    def __call__(self, x1, x2, get):
        start = time.perf_counter()
        out = jax.block_until_ready(self.fn(x1, x2, get))
        self.seconds += time.perf_counter() - start
        return out


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=1_000)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2_500)
    parser.add_argument("--noise-var", type=float, default=1e-3)
    args = parser.parse_args(argv)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print(
        f"device {jax.devices()[0].device_kind} x {len(jax.devices())} "
        f"({jax.default_backend()}), CPU cores available {cores}, float64, "
        f"jax {jax.__version__}, python {platform.python_version()}"
    )
    x, y, labels = upsampled_digits(args.n_train + args.n_test)
    x_train, y_train = x[: args.n_train], y[: args.n_train]
    x_test, labels_test = x[args.n_train :], labels[args.n_train :]
    net = network(args.depth, w_std=1.4, b_std=0.1)
    kernel = TimedKernel(kernels.batched(net, args.batch_size, progress=True))

    def timed(fn):
        """Runs ``fn`` and returns ``(result, wall seconds, process CPU seconds)``."""
        wall, cpu = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(fn())
        return out, time.perf_counter() - wall, time.process_time() - cpu

    # a call on two tiles compiles the tile functions (same tile shapes as below)
    _, *warmup = timed(lambda: kernel(x_train[: 2 * args.batch_size], None, ("nngp",)))
    (k_train,), *kernel_times = timed(lambda: kernel(x_train, None, ("nngp",)))

    def precomputed(x1, x2, get):  # serves the training kernel to gp.posterior
        if x2 is None and x1.shape[0] == args.n_train:
            return (k_train,)
        return kernel(x1, x2, get)

    def fit_posterior():
        post = gp.posterior(precomputed, x_train, y_train, noise_var=args.noise_var)
        jax.block_until_ready(post.log_marginal_likelihood)
        return post

    _, *first_solve = timed(fit_posterior)  # compiles the factorisation
    post, *solve = timed(fit_posterior)  # steady state
    kernel.seconds = 0.0
    (mean, _), *predict = timed(lambda: tuple(post.predict(x_test, full_cov=False)))
    accuracy = float(jnp.mean(jnp.argmax(mean, axis=1) == labels_test))

    def pair(times):
        return f"{times[0]:.1f} / {times[1]:.1f}"

    rows = [
        ("N train / M test", f"{args.n_train} / {args.n_test}"),
        ("network", f"{args.depth} x (Dense, Relu), Dense; tiles {args.batch_size}"),
        ("phase", "wall s / process CPU s"),
        ("kernel warm-up (compile, 2 tiles)", pair(warmup)),
        ("kernel (N x N)", pair(kernel_times)),
        ("posterior, first call (compile)", pair(first_solve)),
        ("posterior (Cholesky + solve)", pair(solve)),
        ("predict (M x N kernel + solve)", pair(predict)),
        ("  of which test kernels (wall)", f"{kernel.seconds:.1f}"),
        ("jitter added", f"{float(post.jitter):.3g}"),
        ("log marginal likelihood", f"{float(post.log_marginal_likelihood):.6g}"),
        ("test accuracy", f"{accuracy:.4f}"),
        ("peak RSS, GiB", f"{peak_rss_gib():.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return dict(rows)


if __name__ == "__main__":
    main()
