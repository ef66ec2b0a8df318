r"""Transposed convolution: finite layer and its infinite-width kernel map.

A transposed convolution with stride ``s`` dilates its input (``s - 1`` zeros between
neighbouring positions), pads it by ``(low, high)`` (see
:func:`~widebnn.kernels._geometry.transpose_geometry`, the convention of
``jax.lax.conv_transpose``) and convolves with stride 1. Per spatial axis the kernel
map is therefore the shared-weight operator of ``Conv`` applied to the dilated
covariance :math:`\tilde K` (zero between dilated positions):

.. math:: A^T(K)_{o o'} = \frac1f \sum_{d=0}^{f-1}
    \tilde K_{o + d - \mathrm{low},\; o' + d - \mathrm{low}}.

In diagonal layout only :math:`\tilde K_{oo}` is read, so the diagonal layout is
closed under ``ConvTranspose`` as under ``Conv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ._affine import affine_kernel
from ._checks import check_choice, check_positive_int, check_std
from ._conv import (
    shared_filter_features,
    shared_filter_init,
    shared_filter_output,
)
from ._feature_core import Features, FeatureSpec
from ._geometry import (
    as_tuple,
    conv_dimension_numbers,
    conv_mask,
    dilate,
    shared_conv_covariance,
    transpose_geometry,
    window_shape_tuple,
)
from ._kernel import Kernel, Layer


def ConvTranspose(
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    W_std: float = 1.0,
    b_std: float | None = None,
    *,
    parameterization: str = "ntk",
) -> Layer:
    r"""Transposed convolution over ``(N, *S, C)`` inputs (1-D, 2-D, 3-D).

    Finite network (``"ntk"``): :math:`z = \frac{\sigma_w}{\sqrt{C|f|}}\, W
    \circledast^T x + \sigma_b b` with :math:`W, b \sim \mathcal N(0, 1)` and
    :math:`\circledast^T` ``jax.lax.conv_transpose``; ``"standard"`` draws
    :math:`W \sim \mathcal N(0, \sigma_w^2/(C|f|))`, :math:`b \sim \mathcal N(0,
    \sigma_b^2)`. Output size per axis: ``SAME``: ``s * size``; ``VALID``:
    ``s * (size - 1) + max(f, s)``.

    Infinite width: :math:`K' = \sigma_w^2 A^T(K) + \sigma_b^2` (operator in the
    module docstring); NTK :math:`\Theta' = K' + \sigma_w^2 A^T(\Theta)` (``"ntk"``)
    or :math:`C|f|\,A^T(K) + \sigma_w^2 A^T(\Theta) + [b]` (``"standard"``).

    Masks: with ``SAME`` padding output ``i`` is padding iff input ``i // s`` is, so
    extra padded positions at the end leave the kernel unchanged (any filter size
    and stride); with ``VALID`` the input mask is upsampled by the stride and sampled
    at the centre of each window (as for ``Conv``). Padded inputs are zeroed first.

    Features: the input features dilated by the stride (zero columns between
    positions, whose inner products are the dilated covariance), then the window
    concatenation of :func:`~widebnn.kernels.Conv` with stride 1 (exact; when
    wider than ``dim``, sketched to ``dim`` columns offset by offset as for
    ``Conv``; widths as for ``Conv``).

    Args:
        out_chan: static; output channels of the finite layer.
        filter_shape: static; filter size per spatial axis.
        strides: static; stride (upsampling factor) per axis, default 1.
        padding: static; ``"SAME"`` or ``"VALID"`` (``"CIRCULAR"`` is refused).
        W_std: weight standard deviation.
        b_std: bias standard deviation, or ``None`` for no bias.
        parameterization: static; ``"ntk"`` or ``"standard"``.

    Returns:
        A :class:`Layer`; params ``{"W": (*filter_shape, C, out_chan), "b":
        (out_chan,)}``.

    Raises:
        ValueError: on non-positive sizes, an unknown or circular padding, or inputs
            of the wrong rank.
    """
    out_chan = check_positive_int(out_chan, "out_chan")
    filter_shape = window_shape_tuple(filter_shape, "filter_shape")
    n = len(filter_shape)
    strides = as_tuple(1 if strides is None else strides, n, "strides")
    if isinstance(padding, str) and padding.lower() == "circular":
        raise ValueError(
            "padding 'CIRCULAR' is not supported by ConvTranspose; use 'SAME' or "
            "'VALID'."
        )
    padding = check_choice(padding, "padding", ("same", "valid"))
    check_std(W_std, "W_std")
    check_std(b_std, "b_std", allow_none=True)
    standard = (
        check_choice(parameterization, "parameterization", ("ntk", "standard"))
        == "standard"
    )
    filter_size = math.prod(filter_shape)

    def geometry(shape):
        """Per axis ``(f, 1, out, pads)``: the stride-1 conv after dilation."""
        if len(shape) != n + 2:
            raise ValueError(
                f"ConvTranspose with a {n}-D filter needs inputs of shape (N, {n} "
                f"spatial axes, C), got shape {tuple(shape)}."
            )
        return [
            (f, 1, *transpose_geometry(size, f, s, padding))
            for size, f, s in zip(shape[1:-1], filter_shape, strides, strict=True)
        ]

    def out_shape(shape):
        return (shape[0], *(g[2] for g in geometry(shape)), out_chan)

    def init(key, input_shape):
        params = shared_filter_init(
            key, input_shape, filter_shape, out_chan, W_std, b_std, standard
        )
        return out_shape(input_shape), params

    def out_mask(mask, shape):
        """``SAME``: output ``i`` is padding iff input ``i // stride`` is (the input
        mask repeated ``stride`` times), so extra padded positions at the end leave
        the kernel unchanged for every filter size and stride. ``VALID``: the input
        mask, upsampled, sampled at the centre of each window as :func:`conv_mask`
        does for ``Conv``."""
        if mask is None:
            return None
        if padding == "same":
            for i, s in enumerate(strides):
                mask = jnp.repeat(mask, s, axis=1 + i)
            return mask
        for i, s in enumerate(strides):
            size = mask.shape[1 + i]
            mask = jax.lax.slice_in_dim(
                jnp.repeat(mask, s, axis=1 + i), 0, (size - 1) * s + 1, axis=1 + i
            )
        return conv_mask(mask, geometry(shape), padding)

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del key, kwargs
        geometry(x.shape)
        w = params["W"]
        if x.shape[-1] != w.shape[-2]:
            raise ValueError(
                f"ConvTranspose: x has {x.shape[-1]} channels but the parameters "
                f"were initialised for {w.shape[-2]}."
            )
        if mask is not None:
            x = jnp.where(mask[..., None], 0.0, x)
        z = jax.lax.conv_transpose(
            x,
            w,
            strides,
            padding.upper(),
            dimension_numbers=conv_dimension_numbers(n),
        )
        fan_in = w.shape[-2] * filter_size
        z = shared_filter_output(z, params, W_std, b_std, standard, fan_in)
        mask_out = out_mask(mask, x.shape)
        if mask_out is not None:
            z = jnp.where(mask_out[..., None], 0.0, z)
        return z

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        geo = geometry(k.shape1)
        diag = k.diagonal_spatial

        def a(cov, lead):
            step = 1 if diag else 2
            axes = [lead + step * i + j for i in range(n) for j in range(step)]
            cov = dilate(cov, axes, [s for s in strides for _ in range(step)])
            return shared_conv_covariance(cov, lead, diag, geo, padding)

        out = affine_kernel(
            k, a, W_std, b_std, standard=standard, fan_in=k.shape1[-1] * filter_size
        )
        return out.replace(
            mask1=out_mask(k.mask1, k.shape1),
            mask2=out_mask(k.mask2, k.shape2),
            shape1=out_shape(k.shape1),
            shape2=out_shape(k.shape2),
            is_gaussian=True,
        ).zero_masked()

    def feature_fn(f: Features, key, spec: FeatureSpec) -> Features:
        # Exact as for Conv: the dilated features (zeros between positions) have
        # the dilated covariance, and then the layer is a stride-1 Conv.
        def dilated(x):
            return dilate(x, range(1, n + 1), strides)

        out = shared_filter_features(
            f,
            key,
            spec,
            geometry(f.shape),
            padding,
            prepare=dilated,
            W_std=W_std,
            b_std=b_std,
            standard=standard,
            fan_in=f.shape[-1] * filter_size,
        )
        return out.replace(
            mask=out_mask(f.mask, f.shape),
            shape=out_shape(f.shape),
            is_gaussian=True,
        ).zero_masked()

    def mask_fn(mask, input_shape):
        return out_mask(mask, input_shape)

    return Layer(
        init,
        apply,
        kernel_fn,
        mask_fn=mask_fn,
        name="ConvTranspose",
        feature_fn=feature_fn,
    )
