"""How fast finite multi-head attention approaches its infinite-width kernel.

For ``GlobalSelfAttention`` (linear scaling, softmax, fixed per-head widths
``d_key = d_val``) on fixed inputs, the empirical NNGP of one random layer,
``k_emp(x, x')_{ii'} = f(x)_i . f(x')_{i'} / n_out``, is compared with the layer's
infinite-width kernel over ``--draws`` random layers, for several head counts.

To see the heads alone, the output projection ``W_out`` (Gaussian, ``n_out``
columns) is replaced by ``sqrt(H d_val) I``, which has the same second moment
``E[W W^T] / n_out = I``: the empirical kernel is then exactly the mean over the
Gaussian readout, ``W_out_std^2 <heads, heads'> / (H d_val)``, an average of ``H``
i.i.d. per-head terms. So

* its **variance** over draws is exactly ``v_1 / H`` (``v_1``: one head's);
* its **bias** (mean minus the infinite kernel) does not depend on ``H``: it comes
  from the finite key width (logits ``q . k / d_key`` fluctuate by
  ``O(1/sqrt(d_key))`` around their limit; softmax is nonlinear), ``O(1/d_key)``.

The script prints, per ``H``: the relative bias ``||mean - K|| / ||K||`` with its
Monte Carlo standard error, the mean entry variance relative to ``mean(K^2)``, and
``H`` times it (constant if the variance falls like ``1/H``), then the fitted
slope of ``log variance`` against ``log H`` (``-1`` expected) and the bias at a
larger key width for comparison.

Usage::

    python benchmarks/attention_heads_rate.py [--draws 200] [--heads 16,64,256,1024]
        [--d-key 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from widebnn import kernels  # noqa: E402

STDS = dict(W_key_std=1.2, W_query_std=0.9, W_value_std=1.1, W_out_std=1.0)


def inputs(seed: int = 0, n: int = 3, length: int = 5, channels: int = 4):
    """``(n, length, channels)`` standard normal sequences."""
    return jax.random.normal(jax.random.key(seed), (n, length, channels))


def empirical_kernels(x, n_heads: int, d_key: int, draws: int, seed: int, batch=50):
    """``(draws, N, N, T, T)`` empirical NNGPs of random attention layers.

    Weights come from the layer's own ``init``; ``W_out`` is replaced by
    ``sqrt(H d_key) I`` (see the module docstring).
    """
    width = n_heads * d_key
    small = kernels.GlobalSelfAttention(1, d_key, d_key, n_heads, **STDS)
    full = kernels.GlobalSelfAttention(width, d_key, d_key, n_heads, **STDS)
    w_out = np.sqrt(width) * jnp.eye(width)

    @jax.jit
    def some(keys):
        def one(key):
            _, params = small.init(key, x.shape)
            f = full.apply({**params, "W_out": w_out}, x)
            return jnp.einsum("aic,bjc->abij", f, f) / width

        return jax.vmap(one)(keys)

    keys = jax.random.split(jax.random.key(seed), draws)
    return np.concatenate(
        [np.asarray(some(keys[i : i + batch])) for i in range(0, draws, batch)]
    )


def limit_kernel(x, d_key: int = 4):
    """The infinite-width NNGP ``(N, N, T, T)`` (no readout noise, heads -> inf)."""
    return np.asarray(
        kernels.GlobalSelfAttention(8, d_key, d_key, 2, **STDS).kernel(x, get="nngp")
    )


def summarize(samples, limit):
    """Relative bias with its standard error, and relative mean entry variance."""
    draws = samples.shape[0]
    mean = samples.mean(0)
    scale = float(np.sqrt(np.mean(limit**2)))
    bias = float(np.linalg.norm(mean - limit) / np.linalg.norm(limit))
    # the norm of the mean's own noise: sqrt(sum var / draws) / ||K||
    variance = samples.var(0, ddof=1)
    noise = float(np.sqrt(variance.sum() / draws) / np.linalg.norm(limit))
    return {
        "bias": bias,
        "bias_noise": noise,
        "variance": float(variance.mean() / scale**2),
    }


def main(heads=(16, 64, 256, 1024), d_key=4, draws=200, seed=0, progress=True):
    """Measures bias and variance for each head count; returns rows of numbers.

    Args:
        heads: head counts ``H``.
        d_key: key and value width per head.
        draws: random layers per head count.
        seed: the weights (inputs are fixed).
        progress: show a progress bar over head counts.

    Returns:
        ``{"rows": [{"heads", "bias", "bias_noise", "variance"}], "slope",
        "wide_key_bias"}``.
    """
    x = inputs()
    limit = limit_kernel(x, d_key)
    rows = []
    for h in tqdm(heads, disable=not progress, desc="heads"):
        samples = empirical_kernels(x, h, d_key, draws, seed)
        rows.append({"heads": h, **summarize(samples, limit)})
    slope = float(
        np.polyfit(
            np.log([r["heads"] for r in rows]), np.log([r["variance"] for r in rows]), 1
        )[0]
    )
    wide = summarize(empirical_kernels(x, heads[0], 16 * d_key, draws, seed), limit)
    return {"rows": rows, "slope": slope, "wide_key": wide, "wide_d_key": 16 * d_key}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--heads", default="16,64,256,1024")
    parser.add_argument("--d-key", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    heads = tuple(int(h) for h in args.heads.split(","))
    out = main(heads, args.d_key, args.draws, args.seed)
    print(
        f"GlobalSelfAttention(linear scaling, softmax), d_key = d_val = {args.d_key}, "
        f"inputs (3, 5, 4), {args.draws} draws per row\n"
    )
    print(
        f"{'heads':>6} {'rel. bias':>10} {'(MC noise)':>10} {'rel. var':>10} "
        f"{'H * var':>8}"
    )
    for r in out["rows"]:
        print(
            f"{r['heads']:>6} {r['bias']:>10.4f} {r['bias_noise']:>10.4f} "
            f"{r['variance']:>10.3e} {r['heads'] * r['variance']:>8.3f}"
        )
    w = out["wide_key"]
    print(
        f"\nslope of log(var) vs log(heads): {out['slope']:.3f} (expected -1)\n"
        f"d_key = {out['wide_d_key']}, heads = {heads[0]}: rel. bias {w['bias']:.4f} "
        f"(MC noise {w['bias_noise']:.4f})\ntotal {time.perf_counter() - start:.1f} s"
    )
