"""Locally connected convolution: every output position has its own filter."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ._affine import affine_kernel
from ._checks import check_choice, check_positive_int, check_std
from ._feature_core import Unsupported
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


def position_diagonal(cov, lead: int, n_spatial: int):
    """``cov[..., a, a', b, b', ...] -> cov[..., a, b, ...]`` (equal positions)."""
    for _ in range(n_spatial):
        cov = jnp.diagonal(cov, axis1=lead, axis2=lead + 1)
    return cov


def diagonal_to_full(values, lead: int, n_spatial: int):
    """Embeds equal-position values ``(*lead, S1, S2, ...)`` into the full layout with
    zeros between distinct positions: ``(*lead, S1, S1', S2, S2', ...)``."""
    for i in range(n_spatial):
        axis = lead + 2 * i
        size = values.shape[axis]
        eye = jnp.eye(size, dtype=values.dtype)
        eye = eye.reshape((1,) * axis + (size, size) + (1,) * (values.ndim - axis - 1))
        values = jnp.expand_dims(values, axis + 1) * eye
    return values


def ConvLocal(
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    W_std: float = 1.0,
    b_std: float | None = None,
    *,
    parameterization: str = "ntk",
) -> Layer:
    r"""Convolution with unshared weights (one filter and bias per output position).

    Infinite width: at equal positions the kernel is that of :func:`Conv`,
    :math:`K'_{ii} = \sigma_w^2\frac1{|f|}\sum_d K_{si+d,\,si+d} + \sigma_b^2`, and
    distinct output positions are uncorrelated (their weights are independent), so
    :math:`K'_{ii'} = 0` for :math:`i \ne i'`; it reads only equal-position input
    covariances. The NTK follows the same rule (see :func:`Conv`).

    It has no feature map (:func:`~widebnn.kernels.feature_map` refuses it):
    features with zero inner products between distinct positions need a separate
    block of columns per output position.

    Args:
        out_chan: static; output channels.
        filter_shape: static; filter size per spatial axis.
        strides: static; stride per axis (default 1).
        padding: static; ``"SAME"``, ``"VALID"`` or ``"CIRCULAR"``.
        W_std: weight standard deviation.
        b_std: bias standard deviation or ``None``.
        parameterization: static; ``"ntk"`` or ``"standard"``.

    Returns:
        A :class:`Layer`; params ``{"W": (*out_spatial, C*|f|, out_chan), "b":
        (*out_spatial, out_chan)}``.
    """
    out_chan = check_positive_int(out_chan, "out_chan")
    filter_shape = window_shape_tuple(filter_shape, "filter_shape")
    n = len(filter_shape)
    strides = as_tuple(1 if strides is None else strides, n, "strides")
    padding = check_choice(padding, "padding", PADDINGS)
    check_std(W_std, "W_std")
    check_std(b_std, "b_std", allow_none=True)
    standard = (
        check_choice(parameterization, "parameterization", ("ntk", "standard"))
        == "standard"
    )
    filter_size = math.prod(filter_shape)

    def geometry(shape):
        return layer_geometry("ConvLocal", shape, filter_shape, strides, padding)

    def out_spatial(shape):
        return tuple(g[2] for g in geometry(shape))

    def init(key, input_shape):
        w_key, b_key = jax.random.split(key)
        spatial = out_spatial(input_shape)
        fan_in = input_shape[-1] * filter_size
        w = jax.random.normal(w_key, (*spatial, fan_in, out_chan))
        params = {"W": w * (W_std / math.sqrt(fan_in)) if standard else w}
        if b_std is not None:
            b = jax.random.normal(b_key, (*spatial, out_chan))
            params["b"] = b * b_std if standard else b
        return (input_shape[0], *spatial, out_chan), params

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del key, kwargs
        geo = geometry(x.shape)
        if mask is not None:
            x = jnp.where(mask[..., None], 0.0, x)
        x, pads = pad_for_apply(x, geo, padding)
        patches = jax.lax.conv_general_dilated_patches(
            x, filter_shape, strides, pads, dimension_numbers=conv_dimension_numbers(n)
        )
        w = params["W"]
        if patches.shape[-1] != w.shape[-2]:
            raise ValueError(
                f"ConvLocal: x has {x.shape[-1]} channels but the parameters were "
                f"initialised for {w.shape[-2] // filter_size}."
            )
        z = jnp.einsum("n...i,...io->n...o", patches, w)
        if not standard:
            z = z * (W_std / math.sqrt(w.shape[-2]))
        if b_std is not None:
            b = params["b"][None]
            z = z + (b if standard else b_std * b)
        out_mask = conv_mask(mask, geo, padding)
        if out_mask is not None:
            z = jnp.where(out_mask[..., None], 0.0, z)
        return z

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        geo1 = geometry(k.shape1)
        diag = k.diagonal_spatial

        def local(cov, lead):
            values = cov if diag else position_diagonal(cov, lead, n)
            values = shared_conv_covariance(values, lead, True, geo1, padding)
            return values if diag else diagonal_to_full(values, lead, n)

        def equal_positions(cov, lead):
            # distinct positions have independent biases: a constant term sits on
            # equal positions only
            if diag:
                return 1.0
            ones = jnp.ones(cov.shape[:lead] + out_spatial(k.shape1), cov.dtype)
            return diagonal_to_full(ones, lead, n)

        out = affine_kernel(
            k,
            local,
            W_std,
            b_std,
            standard=standard,
            fan_in=k.shape1[-1] * filter_size,
            ones=equal_positions,
        )
        spatial = out_spatial(k.shape1)
        return out.replace(
            mask1=conv_mask(k.mask1, geo1, padding),
            mask2=None
            if k.mask2 is None
            else conv_mask(k.mask2, geometry(k.shape2), padding),
            shape1=(k.shape1[0], *spatial, out_chan),
            shape2=(k.shape2[0], *spatial, out_chan),
            is_gaussian=True,
        ).zero_masked()

    def mask_fn(mask, input_shape):
        return conv_mask(mask, geometry(input_shape), padding)

    no_features = Unsupported(
        "ConvLocal",
        "distinct output positions have independent weights, so exact features "
        "need a separate block of columns per output position",
    )
    return Layer(
        init,
        apply,
        kernel_fn,
        mask_fn=mask_fn,
        name="ConvLocal",
        feature_fn=no_features,
    )
