"""Benchmark: memory and time of the CNN feature GP (``features.py --part cnn``).

The CNN of ``features.py`` (two 3x3 SAME convolutions of 64 channels with ReLU,
global average pooling, dense readout) at ``dim=1024`` on scikit-learn's digits:

* ``--mode compile``: the scratch memory XLA plans for the feature map of one block
  of ``--block-size`` images (``memory_analysis().temp_size_in_bytes``), without
  running it (safe where the run itself would not fit).
* ``--mode run``: wall time (including compilation) and peak resident memory of
  ``gp.feature_posterior`` on 1 500 images and its predictions on the other 297,
  and the test accuracy. Run each setting in a fresh process: the peak is the
  process's.

Run: ``python benchmarks/features_cnn_memory.py --mode run --block-size 1024``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import features  # noqa: E402

from widebnn import gp, kernels  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["compile", "run"], default="run")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--n-train", type=int, default=1500)
    args = parser.parse_args(argv)
    print(f"load {os.getloadavg()[0]:.1f}, jax {jax.__version__}", flush=True)
    fmap = kernels.feature_map(features.cnn(), jax.random.key(1), args.dim)
    if args.mode == "compile":
        x = jnp.ones((args.block_size, 8, 8, 1))
        lowered = jax.jit(lambda x: fmap(x, get="nngp")).lower(x)
        memory = lowered.compile().memory_analysis()
        print(
            f"block {args.block_size}: scratch "
            f"{memory.temp_size_in_bytes / 2**30:.2f} GiB",
            flush=True,
        )
        return
    x, labels = features.digits()
    n = args.n_train
    y = jax.nn.one_hot(labels, 10) - 0.1
    start = time.perf_counter()
    post = gp.feature_posterior(
        fmap, x[:n], y[:n], noise_var=0.01, block_size=args.block_size, progress=False
    )
    mean = post.predict(x[n:], full_cov=False, progress=False).mean
    jax.block_until_ready(mean)
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(np.argmax(np.asarray(mean), axis=1) == labels[n:]))
    print(
        f"block {args.block_size}: {seconds:.1f} s, accuracy {accuracy:.4f}, "
        f"peak resident {features.peak_gib():.2f} GiB",
        flush=True,
    )


if __name__ == "__main__":
    main()
