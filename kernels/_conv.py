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

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ._affine import affine_kernel
from ._checks import check_choice, check_positive_int, check_std
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

    def mask_fn(mask, input_shape):
        return conv_mask(mask, geometry(input_shape), padding)

    return Layer(init, apply, kernel_fn, mask_fn=mask_fn, name="Conv")
