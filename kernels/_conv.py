"""Convolution with shared weights: finite layer and its infinite-width kernel map.

Infinite width, per spatial axis with filter size ``f``, stride ``s`` and padding
``p``, shared weights couple filter offset ``d`` at output ``i`` only with the same
offset at output ``i'``:

.. math:: A(K)_{i i'} = \\frac1f \\sum_{d=0}^{f-1} K_{s i + d - p,\\; s i' + d - p},

with out-of-range positions contributing 0 (``SAME``/``VALID``) or wrapping around
(``CIRCULAR``). Over several spatial axes ``A`` is the product of the per-axis maps.
In diagonal layout only ``A(K)_{ii} = \\frac1f\\sum_d K_{si+d-p}`` is needed, which
only reads the diagonal: so the diagonal layout is closed under ``Conv``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ._affine import affine_features, affine_kernel
from ._checks import check_choice, check_positive_int, check_std
from ._feature_core import Features, FeatureSpec
from ._geometry import (
    PADDINGS,
    as_tuple,
    conv_dimension_numbers,
    conv_mask,
    layer_geometry,
    pad_for_apply,
    shared_conv_covariance,
    window_shape_tuple,
)
from ._kernel import Kernel, Layer
from ._sketch import srht


def shared_filter_init(
    key, input_shape, filter_shape, out_chan, W_std, b_std, standard
):
    """Draws ``{"W": (*filter_shape, C, out_chan), "b": (out_chan,)}``."""
    w_key, b_key = jax.random.split(key)
    fan_in = input_shape[-1] * math.prod(filter_shape)
    w = jax.random.normal(w_key, (*filter_shape, input_shape[-1], out_chan))
    params = {"W": w * (W_std / math.sqrt(fan_in)) if standard else w}
    if b_std is not None:
        b = jax.random.normal(b_key, (out_chan,))
        params["b"] = b * b_std if standard else b
    return params


def shared_filter_output(z, params, W_std, b_std, standard, fan_in):
    """Scales a raw filter response and adds the bias (finite ``apply``)."""
    if not standard:
        z = z * (W_std / math.sqrt(fan_in))
    if b_std is not None:
        b = params["b"].reshape((1,) * (z.ndim - 1) + (-1,))
        z = z + (b if standard else b_std * b)
    return z


def _padded(x, geometry, padding):
    """``x`` padded by each spatial axis's ``pads`` (zeros, or wrapped around for
    ``"circular"``)."""
    widths = [(0, 0), *(g[3] for g in geometry), (0, 0)]
    return jnp.pad(x, widths, mode="wrap" if padding == "circular" else "constant")


def _offsets(geometry):
    """Every filter offset ``d``, one tuple of per-axis offsets each."""
    return list(itertools.product(*(range(g[0]) for g in geometry)))


def _window_limits(x, geometry):
    """Sizes and strides of the slice ``x[s i + d]`` over the outputs ``i``."""
    sizes = [x.shape[0], *(s * (out - 1) + 1 for _, s, out, _ in geometry)]
    strides = [1, *(s for _, s, _, _ in geometry), 1]
    return [*sizes, x.shape[-1]], strides


def window_features(x, geometry, padding):
    """The features of every filter window, concatenated over the filter offsets.

    Args:
        x: ``(N, *S, m)`` features per position.
        geometry: per spatial axis ``(f, s, out, pads)``.
        padding: ``"same"``/``"valid"`` (zeros outside the input) or
            ``"circular"`` (wrap-around).

    Returns:
        ``(N, *S_out, |f| m)``: at output ``i`` the blocks ``x[s i + d - p]`` for
        every offset ``d`` (one block per combination of per-axis offsets), so
        inner products of windows are the window sums of the positions' inner
        products: the operator ``|f| A`` of the module docstring.
    """
    x = _padded(x, geometry, padding)
    sizes, strides = _window_limits(x, geometry)
    blocks = []
    for offsets in _offsets(geometry):
        start = [0, *offsets, 0]
        limit = [a + b for a, b in zip(start, sizes, strict=True)]
        blocks.append(jax.lax.slice(x, start, limit, strides))
    return jnp.concatenate(blocks, axis=-1)


def projected_window_features(key, x, geometry, padding, dim):
    """A sketch of :func:`window_features` to ``dim`` columns, one offset at a time.

    ``sum_d S_d x[s i + d - p]`` with an independent SRHT ``S_d: m -> dim`` per
    filter offset ``d``: the sketch of the concatenation whose column blocks are
    the ``S_d``, unbiased (``E[S_d^T S_d] = I``, and independent ``S_d`` leave the
    cross terms of different offsets mean-zero), without forming the ``|f| m``
    concatenated columns. The offsets are a ``lax.scan``, so the largest
    intermediate is one offset's ``(N, *S_out, max(m, dim))``-sized transform,
    whatever the filter size.

    Each offset's columns are randomly permuted before its SRHT. Independent
    signs alone do not decorrelate the offsets: the cross term of offsets ``d, e``
    is ``x_d^T D_d H^T P_d^T P_e H D_e x_e / dim`` (``m = dim``) and the
    all-ones Hadamard column is fixed by every row sampling ``P``, so a large
    column at the same index in every offset (the exact mean column of ReLU
    features) gave a cross term of random sign and full size at every ``dim``
    (a ReLU CNN's NNGP error stalled at 30 % from dim 64 to 1024). Permuted,
    such columns meet at random indices, where the cross terms are
    ``O(1/sqrt(dim))``.

    An SRHT rather than a Gaussian matrix even for narrow ``m``: for ``m <= dim``
    it stacks ``dim / 2^ceil(log2 m)`` independently signed Hadamard transforms,
    each an exact isometry of the ``m`` inputs (so ``S_d^T S_d`` is ``I`` up to
    the last, partly sampled block: less variance than Gaussian columns, and
    ``O(dim log m)`` per position instead of ``O(dim m)``).

    Args:
        key: PRNG key; split into one key per offset.
        x: ``(N, *S, m)`` features per position.
        geometry: per spatial axis ``(f, s, out, pads)``.
        padding: as in :func:`window_features`.
        dim: static; output columns.

    Returns:
        ``(N, *S_out, dim)``, with ``E[z_i . z'_j]`` the inner product of the
        windows of :func:`window_features`.
    """
    x = _padded(x, geometry, padding)
    sizes, strides = _window_limits(x, geometry)
    offsets = _offsets(geometry)
    starts = jnp.asarray([[0, *d, 0] for d in offsets], jnp.int32)
    keys = jax.random.split(key, len(offsets))

    def sketch(start, offset_key):
        permutation_key, sketch_key = jax.random.split(offset_key)
        window = jax.lax.dynamic_slice(x, list(start), sizes)
        shifted = jax.lax.slice(window, [0] * x.ndim, sizes, strides)
        columns = jax.random.permutation(permutation_key, x.shape[-1])
        return srht(sketch_key, shifted[..., columns], dim)

    def add_offset(total, start_and_key):
        return total + sketch(*start_and_key), None

    # The first offset starts the sum (not zeros: under shard_map the carry must
    # vary over the sharded rows as the features do).
    total = sketch(starts[0], keys[0])
    if len(offsets) > 1:
        total, _ = jax.lax.scan(add_offset, total, (starts[1:], keys[1:]))
    return total


def shared_filter_features(
    f: Features, key, spec: FeatureSpec, geometry, padding, *, prepare=None, **affine
) -> Features:
    """Features after a shared-filter layer (nngp and ntk; mask and shape unset).

    The feature operator of :func:`~widebnn.kernels._affine.affine_features` is
    ``window_features(prepare(u)) / sqrt(|f|)`` (exact) when its ``|f| m``
    columns fit in ``spec.dim``, else its sketch to ``spec.dim`` columns by
    :func:`projected_window_features` (one independent SRHT per filter offset,
    summed; independent keys for ``nngp`` and ``ntk``; the same projection at
    every position and for every input, so it is unbiased for every pair), which
    never forms the ``|f| m`` columns: its memory does not grow with ``|f|``.

    Args:
        f: the input features.
        key: PRNG key (used only when a projection is needed).
        spec: the feature settings.
        geometry: per spatial axis ``(f, s, out, pads)`` of the windows.
        padding: as in :func:`window_features`.
        prepare: static; a map applied to the features first (the dilation of a
            transposed convolution), or ``None``.
        **affine: ``W_std``, ``b_std``, ``standard``, ``fan_in`` of
            :func:`~widebnn.kernels._affine.affine_features`.
    """
    filter_size = math.prod(g[0] for g in geometry)
    keys = dict(zip(("nngp", "ntk"), jax.random.split(key), strict=True))

    def a(x, which):
        if prepare is not None:
            x = prepare(x)
        if filter_size * x.shape[-1] > spec.dim:
            windows = projected_window_features(
                keys[which], x, geometry, padding, spec.dim
            )
        else:
            windows = window_features(x, geometry, padding)
        return windows / jnp.sqrt(jnp.asarray(filter_size, windows.dtype))

    return affine_features(f, a, **affine)


def Conv(
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    W_std: float = 1.0,
    b_std: float | None = None,
    *,
    parameterization: str = "ntk",
) -> Layer:
    r"""Convolution over the spatial axes of ``(N, *S, C)`` inputs (1-D, 2-D, 3-D).

    Finite network (``"ntk"``):
    :math:`z = \frac{\sigma_w}{\sqrt{C|f|}}\, W * x + \sigma_b b` with
    :math:`W, b \sim \mathcal N(0, 1)` and ``|f|`` the filter size; ``"standard"``
    draws :math:`W \sim \mathcal N(0, \sigma_w^2/(C|f|))`, :math:`b\sim\mathcal N(0,
    \sigma_b^2)` and computes :math:`W * x + b`.

    Infinite width: :math:`K' = \sigma_w^2 A(K) + \sigma_b^2` with the shared-weight
    operator ``A`` of this module; NTK :math:`\Theta' = K' + \sigma_w^2 A(\Theta)`
    (``"ntk"``) or :math:`C|f|\,A(K) + \sigma_w^2 A(\Theta) + [b]` (``"standard"``).

    Features (:func:`~widebnn.kernels.feature_map`): at output ``i`` the input
    features of the window, :math:`[\phi_{s i + d - p}]_d / \sqrt{|f|}`
    concatenated over the filter offsets ``d`` (zeros outside the input for
    ``SAME``/``VALID``, wrapped around for ``CIRCULAR``), have inner products
    :math:`A(K)` exactly; the NNGP and NTK features then follow ``Dense``'s rule
    (:mod:`~widebnn.kernels._affine`). Widths: ``m`` input columns give ``|f| m``
    window columns; when that exceeds ``dim`` the window is sketched to ``dim``
    columns offset by offset, :math:`\sum_d S_d \phi_{s i + d - p} / \sqrt{|f|}`
    with an independent subsampled randomized Hadamard transform ``S_d`` per
    offset (one draw for all positions and inputs, independent for NNGP and NTK;
    unbiased), so the ``|f| m`` columns are never formed and memory does not grow
    with the filter (one 1024-image block of an 8x8 CNN at ``dim=1024`` with 3x3
    filters: 2.3 GiB of scratch, against 16 GiB when the window was concatenated
    first). So ``nngp`` has
    ``min(|f| m_nngp, dim) [+ 1]`` columns and ``ntk`` ``min(|f| m_ntk, dim)`` plus
    the ``nngp`` columns (``"ntk"``) or ``min(|f| m_nngp, dim) [+ 1]``
    (``"standard"``).

    Args:
        out_chan: static; output channels of the finite layer.
        filter_shape: static; filter size per spatial axis.
        strides: static; stride per spatial axis (default 1).
        padding: static; ``"SAME"``, ``"VALID"`` or ``"CIRCULAR"`` (wrap-around).
        W_std: weight standard deviation (may be traced).
        b_std: bias standard deviation, or ``None`` for no bias.
        parameterization: static; ``"ntk"`` or ``"standard"``.

    Returns:
        A :class:`Layer`; params ``{"W": (*filter_shape, C, out_chan), "b":
        (out_chan,)}``.

    Raises:
        ValueError: on non-positive sizes, unknown padding, or a ``VALID`` filter
            larger than the input.
    """
    out_chan = check_positive_int(out_chan, "out_chan")
    filter_shape = window_shape_tuple(filter_shape, "filter_shape")
    n = len(filter_shape)
    strides = as_tuple(1 if strides is None else strides, n, "strides")
    padding = check_choice(padding, "padding", PADDINGS)
    check_std(W_std, "W_std")
    check_std(b_std, "b_std", allow_none=True)
    parameterization = check_choice(
        parameterization, "parameterization", ("ntk", "standard")
    )
    standard = parameterization == "standard"
    filter_size = math.prod(filter_shape)

    def geometry(shape):
        return layer_geometry("Conv", shape, filter_shape, strides, padding)

    def out_shape(shape):
        return (shape[0], *(g[2] for g in geometry(shape)), out_chan)

    def init(key, input_shape):
        params = shared_filter_init(
            key, input_shape, filter_shape, out_chan, W_std, b_std, standard
        )
        return out_shape(input_shape), params

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del key, kwargs
        geo = geometry(x.shape)
        w = params["W"]
        if x.shape[-1] != w.shape[-2]:
            raise ValueError(
                f"Conv: x has {x.shape[-1]} channels but the parameters were "
                f"initialised for {w.shape[-2]}."
            )
        if mask is not None:
            x = jnp.where(mask[..., None], 0.0, x)
        x, pads = pad_for_apply(x, geo, padding)
        dims = conv_dimension_numbers(n)
        z = jax.lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=dims)
        fan_in = w.shape[-2] * filter_size
        z = shared_filter_output(z, params, W_std, b_std, standard, fan_in)
        out_mask = conv_mask(mask, geo, padding)
        if out_mask is not None:
            z = jnp.where(out_mask[..., None], 0.0, z)
        return z

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        geo = geometry(k.shape1)
        diag = k.diagonal_spatial

        def a(cov, lead):
            return shared_conv_covariance(cov, lead, diag, geo, padding)

        out = affine_kernel(
            k, a, W_std, b_std, standard=standard, fan_in=k.shape1[-1] * filter_size
        )
        return out.replace(
            mask1=conv_mask(k.mask1, geo, padding),
            mask2=None
            if k.mask2 is None
            else conv_mask(k.mask2, geometry(k.shape2), padding),
            shape1=out_shape(k.shape1),
            shape2=out_shape(k.shape2),
            is_gaussian=True,
        ).zero_masked()

    def feature_fn(f: Features, key, spec: FeatureSpec) -> Features:
        geo = geometry(f.shape)
        out = shared_filter_features(
            f,
            key,
            spec,
            geo,
            padding,
            W_std=W_std,
            b_std=b_std,
            standard=standard,
            fan_in=f.shape[-1] * filter_size,
        )
        return out.replace(
            mask=conv_mask(f.mask, geo, padding),
            shape=out_shape(f.shape),
            is_gaussian=True,
        ).zero_masked()

    def mask_fn(mask, input_shape):
        return conv_mask(mask, geometry(input_shape), padding)

    return Layer(
        init,
        apply,
        kernel_fn,
        mask_fn=mask_fn,
        name="Conv",
        feature_fn=feature_fn,
    )
