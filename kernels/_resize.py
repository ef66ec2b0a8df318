r"""Image resizing as a fixed linear map of the spatial axes.

``jax.image.resize`` with ``"linear"`` or ``"nearest"`` is separable and linear: along
each resized axis it multiplies by a fixed ``(out, in)`` matrix ``R``. The covariance
of the resized activations is ``R`` applied on both sides of each position pair,
:math:`K'_{oo'} = \sum_{a a'} R_{oa} R_{o'a'} K_{aa'}`. A linear resize mixes
positions, so it needs the full layout; a nearest resize only copies positions
(each row of ``R`` has a single 1), so it keeps whichever layout it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_choice
from ._feature_core import Features, FeatureSpec
from ._kernel import Kernel, Layer

_METHODS = {"linear": "linear", "bilinear": "linear", "trilinear": "linear"}
_METHODS["nearest"] = "nearest"


def resize_matrix(in_size: int, out_size: int, method: str, antialias: bool):
    """``(out_size, in_size)`` matrix of ``jax.image.resize`` along one axis."""
    with jax.ensure_compile_time_eval():
        x64 = jax.config.read("jax_enable_x64")
        eye = jnp.eye(in_size, dtype=jnp.float64 if x64 else None)
        matrix = jax.image.resize(eye, (out_size, in_size), method, antialias=antialias)
    return np.asarray(matrix)


def _apply_on_axis(values, matrix, axis):
    """``sum_a matrix[o, a] values[..., a, ...]`` with ``o`` at ``axis``."""
    out = jnp.tensordot(jnp.asarray(matrix, values.dtype), values, axes=((1,), (axis,)))
    return jnp.moveaxis(out, 0, axis)


def ImageResize(
    shape: Sequence[int],
    method: str = "linear",
    antialias: bool = True,
    precision=None,
    batch_axis: int = 0,
    channel_axis: int = -1,
) -> Layer:
    r"""Resizes the spatial axes of ``(N, *S, C)`` activations to ``shape``.

    Finite network: ``jax.image.resize(x, (N, *shape, C), method, antialias)``
    (no parameters). Infinite width: every covariance is resized on both sides of
    each position pair (see the module docstring). Masks: an output position is
    padding when all the input positions it reads are padding.

    Args:
        shape: static; output size per spatial axis, ``-1`` to keep an axis; or,
            as in Neural Tangents, one entry per axis of the ``(N, *S, C)`` inputs,
            with ``-1`` (or the unchanged size) for the batch and channel axes.
        method: static; ``"linear"`` (also ``"bilinear"``, ``"trilinear"``) or
            ``"nearest"``.
        antialias: static; passed to ``jax.image.resize`` (matters when a linear
            resize shrinks an axis).
        precision: accepted for compatibility (the resize matrices are exact).
        batch_axis: static; must be 0.
        channel_axis: static; must be -1.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        ValueError: on an unknown method, sizes that are not positive (or -1), or
            a ``shape`` whose length differs from the number of spatial axes.
    """
    del precision
    if batch_axis != 0 or channel_axis != -1:
        raise ValueError(
            "ImageResize: only batch_axis=0 and channel_axis=-1 are supported, got "
            f"batch_axis={batch_axis}, channel_axis={channel_axis}."
        )
    shape = tuple(shape)
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, int | np.integer):
            raise TypeError(f"shape entries must be integers, got {shape}.")
        if size < 1 and size != -1:
            raise ValueError(f"shape entries must be >= 1 or -1, got {shape}.")
    method = _METHODS[check_choice(method, "method", tuple(_METHODS))]
    linear = method == "linear"

    def spatial_request(input_shape):
        """``shape`` per spatial axis (from Neural Tangents' every-axis form too)."""
        if len(shape) != len(input_shape):
            return shape
        for name, i in (("batch", 0), ("channel", -1)):
            if shape[i] not in (-1, input_shape[i]):
                raise ValueError(
                    f"ImageResize: shape {shape} changes the {name} axis of inputs "
                    f"{tuple(input_shape)}; use -1 there."
                )
        return shape[1:-1]

    def sizes(input_shape):
        spatial = tuple(input_shape[1:-1])
        request = spatial_request(input_shape)
        if len(spatial) != len(request) or not spatial:
            raise ValueError(
                f"ImageResize: shape {shape} has {len(shape)} entries but the inputs "
                f"{tuple(input_shape)} have {len(spatial)} spatial axes."
            )
        return [(a, a if b == -1 else b) for a, b in zip(spatial, request, strict=True)]

    def matrices(input_shape):
        """Per spatial axis ``(R, index)``: ``R`` or ``None`` when unchanged; for
        ``nearest``, ``index`` are the input positions the outputs copy."""
        out = []
        for a, b in sizes(input_shape):
            if a == b:
                out.append((None, None))
                continue
            matrix = resize_matrix(a, b, method, antialias)
            out.append((matrix, None if linear else np.argmax(matrix, axis=1)))
        return out

    def out_shape(input_shape):
        return (input_shape[0], *(b for _, b in sizes(input_shape)), input_shape[-1])

    def init(key, input_shape):
        del key
        return out_shape(input_shape), ()

    def resize_values(values, mats, first_axis, step):
        """Resizes axes ``first_axis + step * i`` (and the next when ``step == 2``)."""
        for i, (matrix, index) in enumerate(mats):
            if matrix is None:
                continue
            for axis in range(first_axis + step * i, first_axis + step * (i + 1)):
                if index is not None:
                    values = jnp.take(values, index, axis=axis)
                else:
                    values = _apply_on_axis(values, matrix, axis)
        return values

    def out_mask(mask, input_shape):
        if mask is None:
            return None
        keep = jnp.logical_not(mask).astype(float)
        for i, (matrix, _) in enumerate(matrices(input_shape)):
            if matrix is not None:
                keep = _apply_on_axis(keep, np.abs(matrix), 1 + i)
        return keep == 0

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, key, kwargs
        if mask is not None:
            x = jnp.where(mask[..., None], 0.0, x)
        y = resize_values(x, matrices(x.shape), 1, 1)
        mask_out = out_mask(mask, x.shape)
        return y if mask_out is None else jnp.where(mask_out[..., None], 0.0, y)

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        mats1, mats2 = matrices(k.shape1), matrices(k.shape2)
        step = 1 if k.diagonal_spatial else 2
        if k.diagonal_spatial and linear and any(m is not None for m, _ in mats1):
            raise ValueError(
                "ImageResize with method 'linear' needs the covariance of every "
                "pair of positions; it got a diagonal-layout kernel."
            )

        def cross(cov):
            if k.diagonal_spatial:
                return resize_values(cov, mats1, 2, 1)
            for i, ((m1, i1), (m2, i2)) in enumerate(zip(mats1, mats2, strict=True)):
                cov = resize_values(cov, [(m1, i1)], 2 + 2 * i, 1)
                cov = resize_values(cov, [(m2, i2)], 3 + 2 * i, 1)
            return cov

        def own(cov, mats):
            return None if cov is None else resize_values(cov, mats, 1, step)

        return k.replace(
            nngp=cross(k.nngp),
            ntk=None if k.ntk is None else cross(k.ntk),
            cov1=own(k.cov1, mats1),
            cov2=own(k.cov2, mats2),
            mask1=out_mask(k.mask1, k.shape1),
            mask2=out_mask(k.mask2, k.shape2),
            shape1=out_shape(k.shape1),
            shape2=out_shape(k.shape2),
        ).zero_masked()

    def full_spatial_input(needs_full_output):
        return needs_full_output or (linear and any(size != -1 for size in shape))

    def feature_fn(f: Features, key, spec: FeatureSpec) -> Features:
        # Exact: the features are resized as the activations.
        del key, spec
        mats = matrices(f.shape)

        def resized(values):
            return None if values is None else resize_values(values, mats, 1, 1)

        return f.replace(
            nngp=resized(f.nngp),
            ntk=resized(f.ntk),
            mask=out_mask(f.mask, f.shape),
            shape=out_shape(f.shape),
        ).zero_masked()

    return Layer(
        init,
        apply,
        kernel_fn,
        full_spatial_input,
        out_mask,
        name="ImageResize",
        feature_fn=feature_fn,
    )
