"""Feature rules of the layers that merge a list of branches (``FanIn*``).

Each takes the list of the branches' :class:`Features` and mirrors the kernel rule
of its layer in ``_combinators.py``: a sum of kernels is a concatenation of
features (inner products of concatenated blocks add), a channel concatenation is a
scaled concatenation, a spatial concatenation puts each branch in its own block of
columns, and a product of kernels is the inner product of tensor products of
features, sketched by TensorSRHT (Ahle et al. 2020).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ._feature_core import Features, split_keys
from ._sketch import tensor_srht


def fan_in_branches(fs, name: str) -> list[Features]:
    """The branches as a list (checked to be a non-empty list or tuple)."""
    if not isinstance(fs, list | tuple) or not fs:
        raise ValueError(f"{name} expects a non-empty list of branches.")
    return list(fs)


def _check_same_shapes(fs, name: str) -> None:
    shapes = [tuple(f.shape) for f in fs]
    if any(s != shapes[0] for s in shapes[1:]):
        raise ValueError(f"{name}: branch shapes differ: {shapes}.")


def _merged_mask(fs) -> jax.Array | None:
    """A position is padding if it is padding in any branch."""
    masks = [f.mask for f in fs if f.mask is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = jnp.logical_or(out, m)
    return out


def _concat(values):
    """Concatenates feature blocks over the last axis; ``None`` if any is."""
    if any(v is None for v in values):
        return None
    return jnp.concatenate(values, axis=-1)


def fan_in_sum_features(fs) -> Features:
    """``FanInSum``: the kernels add, so the features are concatenated (exact).

    Args:
        fs: list of branch :class:`Features`, each ``(N, *S, m_i)``, one shape.

    Returns:
        :class:`Features` ``(N, *S, sum_i m_i)``.
    """
    fs = fan_in_branches(fs, "FanInSum")
    _check_same_shapes(fs, "FanInSum")
    return (
        fs[0]
        .replace(
            nngp=_concat([f.nngp for f in fs]),
            ntk=_concat([f.ntk for f in fs]),
            mask=_merged_mask(fs),
            is_gaussian=all(f.is_gaussian for f in fs),
        )
        .zero_masked()
    )


def _sketched_product(factors, key: jax.Array, dim: int) -> jax.Array:
    """``(..., dim)`` features of the tensor product of ``factors`` (TensorSRHT,
    chained with an independent key per link: unbiased)."""
    out = factors[0]
    keys = split_keys(key, len(factors) - 1)
    for factor, link_key in zip(factors[1:], keys, strict=True):
        out = tensor_srht(link_key, out, factor, dim)
    return out


def fan_in_prod_features(fs, key: jax.Array, dim: int) -> Features:
    r"""``FanInProd``: sketched tensor products of the branches' features.

    The NNGP :math:`\prod_i K_i` gets ``dim`` TensorSRHT columns of
    :math:`\otimes_i \phi_i`; the NTK :math:`\sum_i \Theta_i \prod_{j\ne i} K_j`
    concatenates one such sketch per branch (``dim`` columns each). Unbiased given
    the branches' features.

    Args:
        fs: list of branch :class:`Features`, each ``(N, *S, m_i)``, one shape.
        key: PRNG key of the sketches.
        dim: static; columns per sketch.

    Returns:
        :class:`Features` with ``nngp`` ``(N, *S, dim)`` and ``ntk``
        ``(N, *S, len(fs) * dim)`` (a single branch is returned unchanged).
    """
    fs = fan_in_branches(fs, "FanInProd")
    _check_same_shapes(fs, "FanInProd")
    if len(fs) == 1:
        return fs[0]
    nngp_key, ntk_key = jax.random.split(key)
    nngp = _sketched_product([f.nngp for f in fs], nngp_key, dim)
    ntk = None
    if all(f.ntk is not None for f in fs):
        terms = []
        for i, term_key in enumerate(split_keys(ntk_key, len(fs))):
            factors = [fs[i].ntk] + [f.nngp for j, f in enumerate(fs) if j != i]
            terms.append(_sketched_product(factors, term_key, dim))
        ntk = jnp.concatenate(terms, axis=-1)
    return (
        fs[0]
        .replace(nngp=nngp, ntk=ntk, mask=_merged_mask(fs), is_gaussian=False)
        .zero_masked()
    )


def fan_in_concat_features(fs, axis: int) -> Features:
    """``FanInConcat`` along ``axis`` (exact).

    Along the channel axis the kernel is the channel-count-weighted average
    :math:`\\sum_i n_i K_i / \\sum_i n_i`: the branches' features are scaled by
    :math:`\\sqrt{n_i / \\sum_i n_i}` and concatenated. Along a spatial axis the
    kernel is block diagonal: each branch's features fill their own block of
    columns (zero elsewhere, so positions of different branches are orthogonal)
    and the blocks are concatenated along ``axis``.

    Args:
        fs: list of branch :class:`Features`.
        axis: static; the normalised axis (``1 .. len(shape) - 1``) of the
            activations ``(N, *S, C)``.

    Returns:
        :class:`Features` of the concatenated activations.

    Raises:
        ValueError: for a spatial axis when a branch is not Gaussian (as the
            kernel).
    """
    fs = fan_in_branches(fs, "FanInConcat")
    if axis == len(fs[0].shape) - 1:
        return _concat_channels(fs)
    return _concat_positions(fs, axis)


def _concat_channels(fs) -> Features:
    widths = [f.shape[-1] for f in fs]
    total = sum(widths)

    def join(field):
        values = [getattr(f, field) for f in fs]
        if any(v is None for v in values):
            return None
        scaled = [math.sqrt(w / total) * v for w, v in zip(widths, values, strict=True)]
        return jnp.concatenate(scaled, axis=-1)

    return (
        fs[0]
        .replace(
            nngp=join("nngp"),
            ntk=join("ntk"),
            mask=_merged_mask(fs),
            shape=fs[0].shape[:-1] + (total,),
            is_gaussian=False,
        )
        .zero_masked()
    )


def _concat_positions(fs, axis: int) -> Features:
    if not all(f.is_gaussian for f in fs):
        raise ValueError(
            "FanInConcat along a spatial axis needs Gaussian branches (outputs of an "
            "affine layer), because the blocks between branches are set to zero."
        )

    def join(field):
        values = [getattr(f, field) for f in fs]
        if any(v is None for v in values):
            return None
        widths = [v.shape[-1] for v in values]
        total, offset, blocks = sum(widths), 0, []
        for v, w in zip(values, widths, strict=True):
            pad = [(0, 0)] * (v.ndim - 1) + [(offset, total - offset - w)]
            blocks.append(jnp.pad(v, pad))
            offset += w
        return jnp.concatenate(blocks, axis=axis)

    mask = None
    if any(f.mask is not None for f in fs):
        filled = [
            jnp.zeros(f.shape[:-1], bool) if f.mask is None else f.mask for f in fs
        ]
        mask = jnp.concatenate(filled, axis=axis)
    shape = list(fs[0].shape)
    shape[axis] = sum(f.shape[axis] for f in fs)
    return (
        fs[0]
        .replace(nngp=join("nngp"), ntk=join("ntk"), mask=mask, shape=tuple(shape))
        .zero_masked()
    )
