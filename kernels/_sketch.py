r"""Random projections and sketches that preserve inner products in expectation.

Each map ``g`` here draws its randomness from a key and the *widths* of its inputs
only (never the batch), and is unbiased: :math:`\mathbb E[g(x)\cdot g(y)] = x\cdot y`
(for :func:`tensor_srht`, :math:`(x\cdot x')(y\cdot y')` for the pairs
:math:`(x, y), (x', y')`).

* :func:`gaussian_matrix`: i.i.d. :math:`\mathcal N(0, 1)` (or orthogonal-block)
  projection matrices for random features of activations.
* :func:`srht`: subsampled randomized Hadamard transform, a fast Johnson-Lindenstrauss
  projection (``O(d log d)`` per vector).
* :func:`tensor_srht`: features of the tensor product :math:`x\otimes y` without
  forming it (Ahle et al. 2020, "Oblivious sketching of high-degree polynomial
  kernels"): two independent randomized Hadamard transforms, multiplied elementwise
  at shared sampled coordinates.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def fwht(x: jax.Array) -> jax.Array:
    """Unnormalised fast Walsh-Hadamard transform over the last axis.

    Args:
        x: ``(..., d)`` with ``d`` a power of two.

    Returns:
        ``(..., d)``: ``x @ H`` with ``H`` the ``d x d`` Sylvester Hadamard matrix
        (entries +-1, ``H H^T = d I``).
    """
    d = x.shape[-1]
    if d & (d - 1):
        raise ValueError(f"fwht needs a power-of-two length, got {d}.")
    lead = x.shape[:-1]
    half = 1
    while half < d:
        y = x.reshape(*lead, d // (2 * half), 2, half)
        a, b = y[..., 0, :], y[..., 1, :]
        x = jnp.stack([a + b, a - b], axis=-2).reshape(*lead, d)
        half *= 2
    return x


def gaussian_matrix(
    key: jax.Array, m_in: int, m_out: int, dtype, *, orthogonal: bool = False
) -> jax.Array:
    """An ``(m_in, m_out)`` matrix whose columns are ``N(0, I)`` vectors.

    Args:
        key: PRNG key.
        m_in: rows (the input width).
        m_out: columns (the number of random features).
        dtype: floating dtype of the result.
        orthogonal: draw the columns in blocks of up to ``m_in`` mutually orthogonal
            columns, each rescaled to a chi-distributed norm (orthogonal random
            features, Yu et al. 2016): every column is still ``N(0, I)``, so
            estimates stay unbiased, and the columns of a block are less redundant.
            Costs ``O(m_out m_in^2)`` (one QR per block): cheap for narrow inputs
            (raw data, the first activation), but two layers with
            ``m_in = 4097, m_out = 4096`` added about 145 s per map in float64 on a
            busy two-core machine (12.7 s without), so callers use it for narrow
            inputs only.

    Returns:
        ``(m_in, m_out)`` array.
    """
    if not orthogonal or m_in < 2:
        return jax.random.normal(key, (m_in, m_out), dtype)
    n_blocks = math.ceil(m_out / m_in)

    def block(block_key):
        g_key, n_key = jax.random.split(block_key)
        q, r = jnp.linalg.qr(jax.random.normal(g_key, (m_in, m_in), dtype))
        q = q * jnp.sign(jnp.diagonal(r))[None, :]  # Haar-distributed columns
        norms = jnp.linalg.norm(jax.random.normal(n_key, (m_in, m_in), dtype), axis=0)
        return q * norms[None, :]

    # One QR at a time (lax.map, not vmap): batched factorisations running at the
    # same time on several CPU devices deadlock XLA's thread pool on small machines
    # (seen with jaxlib 0.10 under shard_map on 2 cores).
    blocks = jax.lax.map(
        block, jax.random.split(key, n_blocks)
    )  # (n_blocks, m_in, m_in)
    return jnp.moveaxis(blocks, 0, 1).reshape(m_in, n_blocks * m_in)[:, :m_out]


def _row_width(d: int, m_out: int) -> int:
    """The Hadamard size for ``d`` inputs and ``m_out`` sampled rows: the largest
    power of two ``<= d``, but at least ``m_out`` (rounded up to a power of two) and
    at most the power of two ``>= d``."""
    below = 1 << max(0, d.bit_length() - 1)
    return min(_next_power_of_two(d), max(below, _next_power_of_two(m_out)))


def _hadamard_rows(key: jax.Array, x: jax.Array, width: int) -> jax.Array:
    """``sum_c H D_c x_c`` over the last axis: ``x``'s coordinates randomly permuted,
    zero-padded and cut into chunks ``x_c`` of ``width`` coordinates, each with its
    own random signs ``D_c``.

    Every output coordinate ``h_i`` satisfies ``E[h_i(x) h_i(y)] = x . y`` (chunks
    with independent signs add no bias). Folding ``d`` coordinates into a Hadamard
    size below ``d`` (e.g. 8193 into 8192 rather than padding to 16384) keeps the
    sampled rows a larger fraction of all rows; sampling without replacement then
    removes more of the variance. The permutation matters when folding: without it,
    coordinate ``k`` of every chunk lands on the same row, and structured features
    (a convolution's window of copies of one layer's features, each with its large
    mean and bias columns at the same offsets) collide there with a cross-term
    variance that does not fall with ``width``.
    """
    d = x.shape[-1]
    chunks = math.ceil(d / width)
    sign_key, permutation_key = jax.random.split(key)
    if chunks > 1:
        x = x[..., jax.random.permutation(permutation_key, d)]
    signs = jax.random.rademacher(sign_key, (chunks, width), dtype=x.dtype)
    padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, chunks * width - d)])
    signs = signs.reshape((1,) * (x.ndim - 1) + (chunks, width))
    padded = padded.reshape(*x.shape[:-1], chunks, width) * signs
    return fwht(padded).sum(axis=-2)


def srht(key: jax.Array, x: jax.Array, m_out: int) -> jax.Array:
    """Subsampled randomized Hadamard transform of the last axis, ``d -> m_out``.

    ``z = (H D x)[idx] / sqrt(m_out)`` with random signs ``D`` and ``m_out`` sampled
    coordinates (without replacement within each block of ``d'`` coordinates, new
    signs per block when ``m_out > d'``). ``d'`` is a power of two: the largest
    ``<= d`` unless ``m_out`` needs more (never above the one ``>= d``); when
    ``d' < d``, ``x`` is cut into chunks of ``d'`` whose transforms, with
    independent signs, are added.
    Unbiased: ``E[z . z'] = x . x'``.

    Args:
        key: PRNG key.
        x: ``(..., d)``.
        m_out: output width.

    Returns:
        ``(..., m_out)``.
    """
    return _sampled_products(key, [x], m_out)


def tensor_srht(key: jax.Array, x: jax.Array, y: jax.Array, m_out: int) -> jax.Array:
    """Features of the tensor product of ``x`` and ``y`` (over their last axes).

    ``z_k = (H D_1 x)_{i_k} (H D_2 y)_{i_k} / sqrt(m_out)``: for every sampled
    coordinate the expectation over the independent signs is
    ``(x . x')(y . y')``, so ``E[z . z'] = (x . x')(y . y')``.

    Args:
        key: PRNG key.
        x: ``(..., d1)``.
        y: ``(..., d2)`` with the same leading axes.
        m_out: output width.

    Returns:
        ``(..., m_out)``.
    """
    return _sampled_products(key, [x, y], m_out)


def _sampled_products(key: jax.Array, factors: list[jax.Array], m_out: int):
    width = _row_width(max(f.shape[-1] for f in factors), m_out)
    n_blocks = math.ceil(m_out / width)
    lead = factors[0].shape[:-1]
    dtype = factors[0].dtype

    def block(block_key):
        keys = jax.random.split(block_key, len(factors) + 1)
        index = jax.random.permutation(keys[0], width)
        product = jnp.ones((*lead, width), dtype)
        for factor, sign_key in zip(factors, keys[1:], strict=True):
            product = product * _hadamard_rows(sign_key, factor, width)[..., index]
        return product

    # Blocks are vectorised (not unrolled): narrow inputs need many of them.
    blocks = jax.vmap(block)(jax.random.split(key, n_blocks))  # (B, *lead, width)
    rows = jnp.moveaxis(blocks, 0, -2).reshape(*lead, n_blocks * width)[..., :m_out]
    return rows / jnp.sqrt(jnp.asarray(m_out, dtype))
