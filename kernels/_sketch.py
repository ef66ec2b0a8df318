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

    Returns:
        ``(m_in, m_out)`` array.
    """
    if not orthogonal or m_in < 2:
        return jax.random.normal(key, (m_in, m_out), dtype)
    blocks = []
    n_blocks = math.ceil(m_out / m_in)
    for block_key in jax.random.split(key, n_blocks):
        width = min(m_in, m_out - len(blocks) * m_in)
        g_key, n_key = jax.random.split(block_key)
        q, r = jnp.linalg.qr(jax.random.normal(g_key, (m_in, width), dtype))
        q = q * jnp.sign(jnp.diagonal(r))[None, :]  # Haar-distributed columns
        norms = jnp.linalg.norm(jax.random.normal(n_key, (m_in, width), dtype), axis=0)
        blocks.append(q * norms[None, :])
    return jnp.concatenate(blocks, axis=1)


def _hadamard_rows(key: jax.Array, x: jax.Array, width: int) -> jax.Array:
    """``H D x`` over the last axis, zero-padded to ``width`` (random signs ``D``)."""
    d = x.shape[-1]
    signs = jax.random.rademacher(key, (d,), dtype=x.dtype)
    signs = signs.reshape((1,) * (x.ndim - 1) + (d,))
    padded = jnp.pad(x * signs, [(0, 0)] * (x.ndim - 1) + [(0, width - d)])
    return fwht(padded)


def srht(key: jax.Array, x: jax.Array, m_out: int) -> jax.Array:
    """Subsampled randomized Hadamard transform of the last axis, ``d -> m_out``.

    ``z = (H D x)[idx] / sqrt(m_out)`` with random signs ``D`` and ``m_out`` sampled
    coordinates (without replacement within each block of ``d'`` coordinates, new
    signs per block when ``m_out > d'``, ``d'`` the power of two ``>= d``).
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
    width = _next_power_of_two(max(f.shape[-1] for f in factors))
    n_blocks = math.ceil(m_out / width)
    outputs = []
    for b, block_key in enumerate(jax.random.split(key, n_blocks)):
        take = min(width, m_out - b * width)
        keys = jax.random.split(block_key, len(factors) + 1)
        index = jax.random.permutation(keys[0], width)[:take]
        product = None
        for factor, sign_key in zip(factors, keys[1:], strict=True):
            rows = _hadamard_rows(sign_key, factor, width)[..., index]
            product = rows if product is None else product * rows
        outputs.append(product)
    dtype = factors[0].dtype
    return jnp.concatenate(outputs, axis=-1) / jnp.sqrt(jnp.asarray(m_out, dtype))
