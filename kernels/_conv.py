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

from ._checks import check_choice, check_positive_int, check_std
from ._kernel import Kernel, Layer

PADDINGS = ("same", "valid", "circular")


def _as_tuple(value, n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f"{name} must have {n} entries, got {value}.")
    for v in value:
        check_positive_int(v, name)
    return value


def conv_geometry(size: int, filter_size: int, stride: int, padding: str):
    """Output size and ``(low, high)`` padding of one spatial axis (XLA convention).

    Raises:
        ValueError: if a ``VALID`` filter is larger than the input.
    """
    if padding == "valid":
        if filter_size > size:
            raise ValueError(
                f"filter_shape entry {filter_size} is larger than the input size "
                f"{size} with padding 'VALID'."
            )
        return (size - filter_size) // stride + 1, (0, 0)
    out = -(-size // stride)
    total = max((out - 1) * stride + filter_size - size, 0)
    return out, (total // 2, total - total // 2)


def _pad_pair_axes(cov, axes, pads, mode):
    widths = [(0, 0)] * cov.ndim
    for axis in axes:
        widths[axis] = pads
    return jnp.pad(cov, widths, mode="wrap" if mode == "circular" else "constant")


def _window_sum_pair(cov, axis_a, axis_b, f, stride, out, pads, padding):
    """``(1/f) sum_d cov[s i + d, s i' + d]`` over the position pair (axis_a, axis_b)."""
    cov = _pad_pair_axes(cov, (axis_a, axis_b), pads, padding)
    total = 0.0
    span = stride * (out - 1) + 1
    for d in range(f):
        part = jax.lax.slice_in_dim(cov, d, d + span, stride, axis=axis_a)
        part = jax.lax.slice_in_dim(part, d, d + span, stride, axis=axis_b)
        total = total + part
    return total / f


def _window_sum_diag(cov, axis, f, stride, out, pads, padding):
    """``(1/f) sum_d cov[s i + d]`` along one position axis."""
    cov = _pad_pair_axes(cov, (axis,), pads, padding)
    span = stride * (out - 1) + 1
    total = 0.0
    for d in range(f):
        total = total + jax.lax.slice_in_dim(cov, d, d + span, stride, axis=axis)
    return total / f


def conv_covariance(cov, lead, diagonal, geometry, padding):
    """Applies the shared-weight operator ``A`` to a covariance.

    Args:
        cov: ``(*lead_axes, *layout)`` covariance.
        lead: number of leading batch axes (2 for ``nngp``, 1 for ``cov1``).
        diagonal: whether ``cov`` is in diagonal layout.
        geometry: per spatial axis ``(filter, stride, out, pads)``.
        padding: ``"same"``, ``"valid"`` or ``"circular"``.
    """
    for i, (f, stride, out, pads) in enumerate(geometry):
        if diagonal:
            cov = _window_sum_diag(cov, lead + i, f, stride, out, pads, padding)
        else:
            a = lead + 2 * i
            cov = _window_sum_pair(cov, a, a + 1, f, stride, out, pads, padding)
    return cov


def conv_mask(mask, geometry, padding):
    """The output mask: the input mask sampled at the centre of each window.

    With ``SAME`` padding and stride 1 this is the input mask itself, which is what
    makes kernels invariant to extra padded positions.
    """
    if mask is None:
        return None
    for i, (f, stride, out_size, pads) in enumerate(geometry):
        size = mask.shape[1 + i]
        centres = jnp.arange(out_size) * stride - pads[0] + (f - 1) // 2
        if padding == "circular":
            centres = centres % size
        mask = jnp.take(mask, jnp.clip(centres, 0, size - 1), axis=1 + i)
    return mask


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
    filter_shape = tuple(filter_shape)
    n = len(filter_shape)
    if n == 0:
        raise ValueError("filter_shape must have at least one entry.")
    filter_shape = _as_tuple(filter_shape, n, "filter_shape")
    strides = _as_tuple(1 if strides is None else strides, n, "strides")
    padding = check_choice(padding, "padding", PADDINGS)
    check_std(W_std, "W_std")
    check_std(b_std, "b_std", allow_none=True)
    parameterization = check_choice(
        parameterization, "parameterization", ("ntk", "standard")
    )
    standard = parameterization == "standard"
    filter_size = math.prod(filter_shape)

    def geometry(shape):
        if len(shape) != n + 2:
            raise ValueError(
                f"Conv with a {n}-D filter needs inputs of shape (N, {n} spatial axes, "
                f"C), got shape {tuple(shape)}."
            )
        out = []
        for size, f, s in zip(shape[1:-1], filter_shape, strides, strict=True):
            out_size, pads = conv_geometry(size, f, s, padding)
            out.append((f, s, out_size, pads))
        return out

    def out_shape(shape):
        return (shape[0], *(g[2] for g in geometry(shape)), out_chan)

    def init(key, input_shape):
        w_key, b_key = jax.random.split(key)
        fan_in = input_shape[-1] * filter_size
        w = jax.random.normal(w_key, (*filter_shape, input_shape[-1], out_chan))
        params = {"W": w * (W_std / math.sqrt(fan_in)) if standard else w}
        if b_std is not None:
            b = jax.random.normal(b_key, (out_chan,))
            params["b"] = b * b_std if standard else b
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
        if padding == "circular":
            x = jnp.pad(x, [(0, 0), *(g[3] for g in geo), (0, 0)], mode="wrap")
            pads = [(0, 0)] * n
        else:
            pads = [g[3] for g in geo]
        spatial = "".join("DHW"[3 - n :]) if n <= 3 else None
        if spatial is None:
            raise ValueError("Conv supports 1-D, 2-D and 3-D inputs.")
        dims = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
        z = jax.lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=dims)
        if not standard:
            z = z * (W_std / math.sqrt(w.shape[-2] * filter_size))
        if b_std is not None:
            b = params["b"].reshape((1,) * (z.ndim - 1) + (-1,))
            z = z + (b if standard else b_std * b)
        out_mask = conv_mask(mask, geo, padding)
        if out_mask is not None:
            z = jnp.where(out_mask[..., None], 0.0, z)
        return z

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        geo = geometry(k.shape1)
        diag = k.diagonal_spatial

        def a(cov, lead):
            return conv_covariance(cov, lead, diag, geo, padding)

        bias_var = 0.0 if b_std is None else b_std**2
        nngp_in = a(k.nngp, 2)
        nngp = W_std**2 * nngp_in + bias_var
        cov1 = W_std**2 * a(k.cov1, 1) + bias_var
        cov2 = None if k.cov2 is None else W_std**2 * a(k.cov2, 1) + bias_var
        ntk = None
        if k.ntk is not None:
            if standard:
                ntk = k.shape1[-1] * filter_size * nngp_in + W_std**2 * a(k.ntk, 2)
                if b_std is not None:
                    ntk = ntk + 1.0
            else:
                ntk = nngp + W_std**2 * a(k.ntk, 2)
        return k.replace(
            nngp=nngp,
            ntk=ntk,
            cov1=cov1,
            cov2=cov2,
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
