"""Window geometry shared by the spatial layers: sizes, padding, window sums, masks.

One spatial axis of a convolution or pooling window is described by a tuple
``(f, s, out, pads)``: window (filter) size ``f``, stride ``s``, output size ``out``
and the ``(low, high)`` zero (or wrap-around) padding, in XLA's convention. The
helpers here turn such tuples into window sums over activations, over covariances in
diagonal layout (one position axis) and in full layout (a pair of position axes,
where shared weights couple only equal offsets), and into output masks.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_positive_int

PADDINGS = ("same", "valid", "circular")
AxisGeometry = tuple[int, int, int, tuple[int, int]]


def as_tuple(value, n: int, name: str) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ``n`` ints, each ``>= 1``) as a tuple."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f"{name} must have {n} entries, got {value}.")
    for v in value:
        check_positive_int(v, name)
    return value


def window_shape_tuple(shape, name: str, max_dims: int = 3) -> tuple[int, ...]:
    """Checks a filter/window shape: 1 to ``max_dims`` positive integers."""
    shape = tuple(shape)
    if not 1 <= len(shape) <= max_dims:
        raise ValueError(f"{name} must have 1 to {max_dims} entries, got {shape}.")
    return as_tuple(shape, len(shape), name)


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


def transpose_geometry(size: int, filter_size: int, stride: int, padding: str):
    """Output size and padding of a transposed convolution (``lax.conv_transpose``).

    The input is dilated by ``stride`` (``stride - 1`` zeros between positions),
    padded by the returned ``(low, high)`` and convolved with stride 1.
    """
    if padding == "same":
        pad_len = filter_size + stride - 2
        low = filter_size - 1 if stride > filter_size - 1 else -(-pad_len // 2)
    else:
        pad_len = filter_size + stride - 2 + max(filter_size - stride, 0)
        low = filter_size - 1
    pads = (low, pad_len - low)
    out = (size - 1) * stride + 1 + pads[0] + pads[1] - filter_size + 1
    return out, pads


def layer_geometry(name, shape, windows, strides, padding) -> list[AxisGeometry]:
    """Per spatial axis ``(f, s, out, pads)`` for inputs of ``shape`` ``(N, *S, C)``.

    Raises:
        ValueError: if the input rank does not match the window.
    """
    n = len(windows)
    if len(shape) != n + 2:
        raise ValueError(
            f"{name} with a {n}-D filter needs inputs of shape (N, {n} spatial axes, "
            f"C), got shape {tuple(shape)}."
        )
    return [
        (f, s, *conv_geometry(size, f, s, padding))
        for size, f, s in zip(shape[1:-1], windows, strides, strict=True)
    ]


def conv_dimension_numbers(n: int) -> tuple[str, str, str]:
    """``lax`` dimension numbers for batch-first, channels-last ``n``-D inputs."""
    if not 1 <= n <= 3:
        raise ValueError(f"convolutions support 1-D to 3-D inputs, got {n}-D.")
    spatial = "DHW"[3 - n :]
    return "N" + spatial + "C", spatial + "IO", "N" + spatial + "C"


def pad_for_apply(x, geometry, padding):
    """Wrap-pads ``x`` for ``CIRCULAR``; returns ``(x, pads)`` for a ``lax`` conv."""
    if padding == "circular":
        x = jnp.pad(x, [(0, 0), *(g[3] for g in geometry), (0, 0)], mode="wrap")
        return x, [(0, 0)] * len(geometry)
    return x, [g[3] for g in geometry]


def _pad(x, axes, pads, padding):
    widths = [(0, 0)] * x.ndim
    for axis in axes:
        widths[axis] = pads
    return jnp.pad(x, widths, mode="wrap" if padding == "circular" else "constant")


def window_sum(x, axis, geometry: AxisGeometry, padding):
    """``sum_d x[s i + d - p]`` along ``axis`` (unnormalised)."""
    f, s, out, pads = geometry
    x = _pad(x, (axis,), pads, padding)
    span = s * (out - 1) + 1
    return sum(jax.lax.slice_in_dim(x, d, d + span, s, axis=axis) for d in range(f))


def shared_window_sum(cov, axes, geometries, padding):
    """``sum_d cov[s i + d - p, s i' + d - p]`` over position pairs, all at once.

    Args:
        cov: covariance with position pairs at ``axes``.
        axes: per spatial axis the pair ``(a, a')`` of covariance axes.
        geometries: per spatial axis ``(f, s, out, pads)``.
        padding: ``"same"``, ``"valid"`` or ``"circular"``.

    Every combination of offsets (one per spatial axis, the same on both sides of
    each pair) is one strided slice of the padded covariance, so the sum is a
    single pass over it (``prod f`` reads per output entry).
    """
    widths = [(0, 0)] * cov.ndim
    for (a, b), (_, _, _, pads) in zip(axes, geometries, strict=True):
        widths[a] = widths[b] = pads
    mode = "wrap" if padding == "circular" else "constant"
    cov = jnp.pad(cov, widths, mode=mode)
    total: jax.Array | float = 0.0
    for offsets in itertools.product(*(range(g[0]) for g in geometries)):
        start, limit, stride = [0] * cov.ndim, list(cov.shape), [1] * cov.ndim
        for (a, b), (_, s, out, _), d in zip(axes, geometries, offsets, strict=True):
            for axis in (a, b):
                start[axis], limit[axis], stride[axis] = d, d + s * (out - 1) + 1, s
        total = total + jax.lax.slice(cov, start, limit, stride)
    return total


def shared_conv_covariance(cov, lead, diagonal, geometry, padding):
    """The shared-weight operator ``A`` of ``Conv`` applied to a covariance.

    Args:
        cov: ``(*lead_axes, *layout)`` covariance.
        lead: number of leading batch axes (2 for ``nngp``, 1 for ``cov1``).
        diagonal: whether ``cov`` is in diagonal layout.
        geometry: per spatial axis ``(f, s, out, pads)``.
        padding: ``"same"``, ``"valid"`` or ``"circular"``.

    Returns:
        ``(1/|f|) sum_d cov[s i + d - p, s i' + d - p]`` in the same layout.
    """
    size = math.prod(g[0] for g in geometry)
    if diagonal:
        for i, axis_geometry in enumerate(geometry):
            cov = window_sum(cov, lead + i, axis_geometry, padding)
        return cov / size
    axes = [(lead + 2 * i, lead + 2 * i + 1) for i in range(len(geometry))]
    return shared_window_sum(cov, axes, geometry, padding) / size


def dilate(x, axes, strides):
    """Inserts ``stride - 1`` zeros between neighbouring entries along ``axes``."""
    config = [(0, 0, 0)] * x.ndim
    for axis, s in zip(axes, strides, strict=True):
        config[axis] = (0, 0, s - 1)
    return jax.lax.pad(x, jnp.zeros((), x.dtype), config)


def conv_mask(mask, geometry, padding):
    """The output mask of a conv/pool: the input mask at the centre of each window.

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


def edge_counts(size, geometry: AxisGeometry):
    """``(out,)`` number of in-range positions in each window of one axis."""
    f, s, out, pads = geometry
    starts = np.arange(out) * s - pads[0]
    return (np.minimum(starts + f, size) - np.maximum(starts, 0)).astype(float)
