"""The layers that merge a list of branches: ``FanInSum``, ``FanInProd``,
``FanInConcat`` — finite forms, kernels and feature maps together.

Kernel rules: a sum of independent branches sums their kernels, a product multiplies
them, a channel concatenation averages them weighted by channel counts and a spatial
concatenation places them in blocks. Feature rules mirror them: a sum of kernels is
a concatenation of features (inner products of concatenated blocks add), a channel
concatenation is a scaled concatenation, a spatial concatenation puts each branch in
its own block of columns, and a product of kernels is the inner product of tensor
products of features, sketched by TensorSRHT (Ahle et al. 2020).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ._feature_core import Features, split_keys
from ._kernel import Layer
from ._sketch import tensor_srht

# --- feature rules ----------------------------------------------------------------


def fan_in_branches(fs, name: str) -> list[Features]:
    """The branches as a list (checked to be a non-empty list or tuple)."""
    if not isinstance(fs, list | tuple) or not fs:
        raise ValueError(f"{name} expects a non-empty list of branches.")
    return list(fs)


def _check_same_feature_shapes(fs, name: str) -> None:
    _check_same_shapes([tuple(f.shape) for f in fs], name)


def _merged_mask(fs) -> jax.Array | None:
    """A position is padding if it is padding in any branch."""
    return _combine_masks([f.mask for f in fs])


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
    _check_same_feature_shapes(fs, "FanInSum")
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
    _check_same_feature_shapes(fs, "FanInProd")
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
        return _concat_channel_features(fs)
    return _concat_positions(fs, axis)


def _concat_channel_features(fs) -> Features:
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


# --- layers -------------------------------------------------------------------------


def _combine_masks(masks):
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = jnp.logical_or(out, m)
    return out


def _check_branch_kernels(ks, name: str):
    if not isinstance(ks, list | tuple) or not ks:
        raise ValueError(f"{name} expects a non-empty list of branches.")
    first = ks[0]
    for k in ks[1:]:
        if k.diagonal_spatial != first.diagonal_spatial or k.x1_is_x2 != first.x1_is_x2:
            raise ValueError(f"{name}: branches have different kernel layouts.")
    return first


def _check_same_shapes(shapes, name: str):
    if not isinstance(shapes, list | tuple) or not shapes:
        raise ValueError(f"{name} expects a non-empty list of input shapes.")
    for s in shapes[1:]:
        if tuple(s) != tuple(shapes[0]):
            raise ValueError(f"{name}: branch shapes differ: {list(shapes)}.")
    return tuple(shapes[0])


def _merged_masks(ks):
    mask1 = _combine_masks([k.mask1 for k in ks])
    mask2 = _combine_masks([k.mask2 for k in ks])
    return mask1, mask2


def _fan_in_mask(mask, input_shape):
    del input_shape
    if isinstance(mask, list | tuple):
        return _combine_masks(mask)
    return mask


def FanInSum() -> Layer:
    """Sums a list of branches.

    Infinite width: the branches must be uncorrelated (they are when each contains
    its own random weights, as in a residual block ``x + f(x)``, because the weights
    are centred), and then all covariances and NTKs add. Summing two copies of the
    same branch (e.g. ``parallel(Identity(), Identity())``) breaks that assumption.
    """

    def init(key, input_shape):
        del key
        return _check_same_shapes(input_shape, "FanInSum"), ()

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, mask, key, kwargs
        return sum(x[1:], start=x[0])

    def kernel_fn(ks, **kwargs):
        del kwargs
        first = _check_branch_kernels(ks, "FanInSum")
        _check_same_shapes([k.shape1 for k in ks], "FanInSum")

        def total(field):
            values = [getattr(k, field) for k in ks]
            if any(v is None for v in values):
                return None
            return sum(values[1:], start=values[0])

        mask1, mask2 = _merged_masks(ks)
        return first.replace(
            nngp=total("nngp"),
            ntk=total("ntk"),
            cov1=total("cov1"),
            cov2=total("cov2"),
            mask1=mask1,
            mask2=mask2,
            is_gaussian=all(k.is_gaussian for k in ks),
        ).zero_masked()

    def feature_fn(fs, key, spec):
        del key, spec
        return fan_in_sum_features(fs)

    return Layer(
        init,
        apply,
        kernel_fn,
        mask_fn=_fan_in_mask,
        name="FanInSum",
        feature_fn=feature_fn,
    )


def FanInProd() -> Layer:
    r"""Multiplies a list of branches elementwise.

    Infinite width, for independent branches: :math:`K = \prod_i K_i` and, by the
    product rule, :math:`\Theta = \sum_i \Theta_i \prod_{j\ne i} K_j`. The output is
    not Gaussian (unless there is one branch).

    Feature map: TensorSRHT sketches (Ahle et al. 2020) of the tensor products of
    the branches' features, ``dim`` columns per product; unbiased given the
    branches' features.
    """

    def init(key, input_shape):
        del key
        return _check_same_shapes(input_shape, "FanInProd"), ()

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, mask, key, kwargs
        out = x[0]
        for xi in x[1:]:
            out = out * xi
        return out

    def kernel_fn(ks, **kwargs):
        del kwargs
        first = _check_branch_kernels(ks, "FanInProd")
        _check_same_shapes([k.shape1 for k in ks], "FanInProd")

        def product(values):
            out = values[0]
            for v in values[1:]:
                out = out * v
            return out

        nngp = product([k.nngp for k in ks])
        ntk = None
        if all(k.ntk is not None for k in ks):
            ntk = sum(
                k.ntk * product([kj.nngp for j, kj in enumerate(ks) if j != i] or [1.0])
                for i, k in enumerate(ks)
            )
        cov2 = None if first.cov2 is None else product([k.cov2 for k in ks])
        mask1, mask2 = _merged_masks(ks)
        return first.replace(
            nngp=nngp,
            ntk=ntk,
            cov1=product([k.cov1 for k in ks]),
            cov2=cov2,
            mask1=mask1,
            mask2=mask2,
            is_gaussian=len(ks) == 1 and first.is_gaussian,
        ).zero_masked()

    def feature_fn(fs, key, spec):
        return fan_in_prod_features(fs, key, spec.dim)

    return Layer(
        init,
        apply,
        kernel_fn,
        mask_fn=_fan_in_mask,
        name="FanInProd",
        feature_fn=feature_fn,
    )


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenates a list of branches along ``axis``.

    Infinite width: along the channel axis the kernel is the channel-count-weighted
    average :math:`\\sum_i n_i K_i / \\sum_i n_i` (finite counts ``n_i``) and the
    output is marked non-Gaussian (its channels are not identically distributed);
    along a spatial axis the covariance is block diagonal (distinct branches are
    uncorrelated), which needs Gaussian branches.

    Args:
        axis: static; the axis of the activations ``(N, *S, C)`` to concatenate
            along; the batch axis (0) is not supported.
    """
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"axis must be an integer, got {axis!r}.")

    def _axis(ndim):
        ax = axis % ndim if -ndim <= axis < ndim else None
        if ax is None or ax == 0:
            raise ValueError(
                f"FanInConcat: axis must be a channel or spatial axis of inputs with "
                f"{ndim} axes (not the batch axis), got {axis}."
            )
        return ax

    def init(key, input_shape):
        del key
        if not isinstance(input_shape, list | tuple) or not input_shape:
            raise ValueError("FanInConcat expects a non-empty list of input shapes.")
        ax = _axis(len(input_shape[0]))
        out = list(input_shape[0])
        out[ax] = sum(s[ax] for s in input_shape)
        return tuple(out), ()

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, mask, key, kwargs
        return jnp.concatenate(x, axis=_axis(x[0].ndim))

    def kernel_fn(ks, **kwargs):
        del kwargs
        first = _check_branch_kernels(ks, "FanInConcat")
        ndim = len(first.shape1)
        ax = _axis(ndim)
        if ax == ndim - 1:
            return _concat_channels(ks)
        return _concat_spatial(ks, ax - 1)

    def full_spatial_input(needs_full_output):
        return needs_full_output

    def mask_fn(mask, input_shape):
        if not isinstance(mask, list | tuple):
            return mask
        ax = _axis(len(input_shape[0]))
        if ax == len(input_shape[0]) - 1:
            return _combine_masks(mask)
        filled = [
            jnp.zeros(s[:-1], bool) if m is None else m
            for m, s in zip(mask, input_shape, strict=True)
        ]
        return jnp.concatenate(filled, axis=ax)

    def feature_fn(fs, key, spec):
        del key, spec
        ndim = len(fan_in_branches(fs, "FanInConcat")[0].shape)
        return fan_in_concat_features(fs, _axis(ndim))

    return Layer(
        init,
        apply,
        kernel_fn,
        full_spatial_input,
        mask_fn,
        "FanInConcat",
        feature_fn=feature_fn,
    )


def _concat_channels(ks):
    widths = [k.shape1[-1] for k in ks]
    total = sum(widths)

    def average(field):
        values = [getattr(k, field) for k in ks]
        if any(v is None for v in values):
            return None
        return sum(w * v for w, v in zip(widths, values, strict=True)) / total

    mask1, mask2 = _merged_masks(ks)
    first = ks[0]
    return first.replace(
        nngp=average("nngp"),
        ntk=average("ntk"),
        cov1=average("cov1"),
        cov2=average("cov2"),
        mask1=mask1,
        mask2=mask2,
        shape1=first.shape1[:-1] + (total,),
        shape2=first.shape2[:-1] + (total,),
        is_gaussian=False,
    ).zero_masked()


def _block_diagonal(blocks, axes):
    """Concatenates along ``axes[0]`` and ``axes[1]`` with zero off-diagonal blocks."""
    a0, a1 = axes
    sizes = [b.shape[a1] for b in blocks]
    total = sum(sizes)
    rows = []
    offset = 0
    for block, size in zip(blocks, sizes, strict=True):
        pad = [(0, 0)] * block.ndim
        pad[a1] = (offset, total - offset - size)
        rows.append(jnp.pad(block, pad))
        offset += size
    return jnp.concatenate(rows, axis=a0)


def _concat_spatial(ks, spatial_index: int):
    first = ks[0]
    if not all(k.is_gaussian for k in ks):
        raise ValueError(
            "FanInConcat along a spatial axis needs Gaussian branches (outputs of an "
            "affine layer), because the blocks between branches are set to zero."
        )
    diagonal = first.diagonal_spatial

    def join(field, lead: int):
        values = [getattr(k, field) for k in ks]
        if any(v is None for v in values):
            return None
        if diagonal:
            return jnp.concatenate(values, axis=lead + spatial_index)
        axis = lead + 2 * spatial_index
        return _block_diagonal(values, (axis, axis + 1))

    def concat_masks(attr, shape_attr):
        masks = [getattr(k, attr) for k in ks]
        if all(m is None for m in masks):
            return None
        filled = [
            jnp.zeros(getattr(k, shape_attr)[:-1], bool) if m is None else m
            for k, m in zip(ks, masks, strict=True)
        ]
        return jnp.concatenate(filled, axis=1 + spatial_index)

    def shape(attr):
        out = list(getattr(first, attr))
        out[1 + spatial_index] = sum(getattr(k, attr)[1 + spatial_index] for k in ks)
        return tuple(out)

    return first.replace(
        nngp=join("nngp", 2),
        ntk=join("ntk", 2),
        cov1=join("cov1", 1),
        cov2=join("cov2", 1),
        mask1=concat_masks("mask1", "shape1"),
        mask2=None if first.x1_is_x2 else concat_masks("mask2", "shape2"),
        shape1=shape("shape1"),
        shape2=shape("shape2"),
    ).zero_masked()
