"""Layers that pool or flatten spatial axes, without parameters.

``Flatten`` only needs equal-position covariances (it lets convolutional networks
run in the cheap diagonal layout); global and windowed pooling need every pair of
positions.

Their feature rules are exact: pooling sums (or averages) the per-position features
over each window or over all positions, and ``Flatten`` concatenates them, scaled by
``1/sqrt(|S|)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp

from ._checks import check_choice
from ._feature_core import Features, FeatureSpec
from ._geometry import (
    PADDINGS,
    as_tuple,
    conv_mask,
    edge_counts,
    layer_geometry,
    window_shape_tuple,
    window_sum,
)
from ._kernel import Kernel, Layer, _keep


def _needs_full(needs_full_output):
    del needs_full_output
    return True


def _needs_diagonal(needs_full_output):
    del needs_full_output
    return False


def _check_spatial(k_or_shape, name):
    shape = k_or_shape.shape1 if isinstance(k_or_shape, Kernel) else k_or_shape
    if len(shape) < 3:
        raise ValueError(
            f"{name} needs inputs with spatial axes, shape (N, *S, C); got {shape}."
        )


def _global_pool(average: bool, name: str) -> Layer:
    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, key, kwargs
        _check_spatial(x.shape, name)
        keep = _keep(mask, x.shape)[..., None]
        axes = tuple(range(1, x.ndim - 1))
        total = jnp.sum(x * keep, axis=axes)
        if not average:
            return total
        count = jnp.sum(keep, axis=axes)
        return total / jnp.where(count > 0, count, 1.0)

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        _check_spatial(k, name)
        if k.diagonal_spatial:
            raise ValueError(
                f"{name} needs the covariance of every pair of positions; it got a "
                "diagonal-layout kernel."
            )
        n_sp = k.n_spatial

        def pooled(cov, lead):
            return jnp.sum(cov, axis=tuple(range(lead, lead + 2 * n_sp)))

        def counts(mask, shape):
            keep = _keep(mask, shape)
            count = jnp.sum(keep, axis=tuple(range(1, keep.ndim)))
            return jnp.where(count > 0, count, 1.0)

        nngp, cov1 = pooled(k.nngp, 2), pooled(k.cov1, 1)
        cov2 = None if k.cov2 is None else pooled(k.cov2, 1)
        ntk = None if k.ntk is None else pooled(k.ntk, 2)
        if average:
            c1 = counts(k.mask1, k.shape1)
            c2 = c1 if k.x1_is_x2 else counts(k.mask2, k.shape2)
            cross = c1[:, None] * c2[None, :]
            nngp = nngp / cross
            ntk = None if ntk is None else ntk / cross
            cov1 = cov1 / c1**2
            cov2 = None if cov2 is None else cov2 / c2**2
        return k.replace(
            nngp=nngp,
            ntk=ntk,
            cov1=cov1,
            cov2=cov2,
            mask1=None,
            mask2=None,
            shape1=(k.shape1[0], k.shape1[-1]),
            shape2=(k.shape2[0], k.shape2[-1]),
        )

    def mask_fn(mask, input_shape):
        del mask, input_shape
        return None

    def feature_fn(f: Features, key, spec: FeatureSpec) -> Features:
        # Exact: sum (or average) the features over the positions; inner products
        # of the sums are the sums of the position-pair covariances. Averages run
        # over unpadded positions, as in the kernel.
        del key, spec
        _check_spatial(f.shape, name)
        axes = tuple(range(1, 1 + f.n_spatial))
        scale = None
        if average:
            keep = _keep(f.mask, f.shape).astype(f.nngp.dtype)
            count = jnp.sum(keep, axis=tuple(range(1, keep.ndim)))
            scale = (1.0 / jnp.where(count > 0, count, 1.0))[:, None]

        def pooled(values):
            if values is None:
                return None
            total = jnp.sum(values, axis=axes)
            return total if scale is None else total * scale

        return f.replace(
            nngp=pooled(f.nngp),
            ntk=pooled(f.ntk),
            mask=None,
            shape=(f.shape[0], f.shape[-1]),
        )

    return Layer(
        _global_pool_init,
        apply,
        kernel_fn,
        _needs_full,
        mask_fn,
        name,
        feature_fn=feature_fn,
    )


def _global_pool_init(key, input_shape):
    """``init`` of a global pool: ``(N, *S, C) -> (N, C)``."""
    del key
    return (input_shape[0], input_shape[-1]), ()


def GlobalAvgPool() -> Layer:
    r"""Average over all spatial positions: ``(N, *S, C) -> (N, C)``.

    Infinite width: :math:`K'(x, x') = \frac{1}{|S||S'|}\sum_{i, i'} K_{ii'}(x, x')`;
    with masks the averages run over unpadded positions only (a fully padded input
    gives 0). Needs the full position-pair covariance.
    """
    return _global_pool(True, "GlobalAvgPool")


def GlobalSumPool() -> Layer:
    r"""Sum over all spatial positions: ``(N, *S, C) -> (N, C)``.

    Infinite width: :math:`K'(x, x') = \sum_{i, i'} K_{ii'}(x, x')` (padded positions
    contribute 0).
    """
    return _global_pool(False, "GlobalSumPool")


def Flatten() -> Layer:
    r"""Flattens ``(N, *S, C)`` to ``(N, |S| C)``.

    Infinite width: the flattened "channels" of a following ``Dense`` see
    :math:`K'(x, x') = \frac{1}{|S|}\sum_i K_{ii}(x, x')`, the mean of the
    equal-position covariances (so the network before ``Flatten`` may run in the
    diagonal layout). The output is marked non-Gaussian (its channels are not
    identically distributed): put a ``Dense`` before any nonlinearity. Padded
    positions stay zero and count in ``|S|``, as in the finite network.
    """

    def init(key, input_shape):
        del key
        return (input_shape[0], math.prod(input_shape[1:])), ()

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, key, kwargs
        if mask is not None:
            x = jnp.where(mask[..., None], 0.0, x)
        return x.reshape(x.shape[0], -1)

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        n_sp = k.n_spatial
        if n_sp == 0:
            return k
        size = math.prod(k.shape1[1:-1])

        def flat(cov, lead):
            if not k.diagonal_spatial:
                for _ in range(n_sp):
                    cov = jnp.diagonal(cov, axis1=lead, axis2=lead + 1)
            return jnp.sum(cov, axis=tuple(range(lead, lead + n_sp))) / size

        return k.replace(
            nngp=flat(k.nngp, 2),
            ntk=None if k.ntk is None else flat(k.ntk, 2),
            cov1=flat(k.cov1, 1),
            cov2=None if k.cov2 is None else flat(k.cov2, 1),
            mask1=None,
            mask2=None,
            shape1=(k.shape1[0], math.prod(k.shape1[1:])),
            shape2=(k.shape2[0], math.prod(k.shape2[1:])),
            diagonal_spatial=False,
            is_gaussian=False,
        )

    def mask_fn(mask, input_shape):
        del mask, input_shape
        return None

    def feature_fn(f: Features, key, spec: FeatureSpec) -> Features:
        # Exact: concatenate the positions' features, scaled by 1/sqrt(|S|), so the
        # inner product is the mean of the equal-position inner products.
        del key, spec
        if f.n_spatial == 0:
            return f
        size = math.prod(f.shape[1:-1])

        def flat(values):
            if values is None:
                return None
            scale = 1.0 / math.sqrt(size)
            return values.reshape(values.shape[0], -1) * scale

        return f.replace(
            nngp=flat(f.nngp),
            ntk=flat(f.ntk),
            mask=None,
            shape=(f.shape[0], math.prod(f.shape[1:])),
            is_gaussian=False,
        )

    return Layer(
        init,
        apply,
        kernel_fn,
        _needs_diagonal,
        mask_fn,
        "Flatten",
        feature_fn=feature_fn,
    )


def _pool(
    window_shape, strides, padding, normalize_edges, average: bool, name: str
) -> Layer:
    window_shape = window_shape_tuple(window_shape, "window_shape")
    n = len(window_shape)
    strides = window_shape if strides is None else as_tuple(strides, n, "strides")
    padding = check_choice(padding, "padding", PADDINGS)

    def geometry(shape):
        return layer_geometry(name, shape, window_shape, strides, padding)

    def weights(shape):
        """Per axis ``(out,)`` divisors of the window sums."""
        out = []
        for size, (f, s, o, pads) in zip(shape[1:-1], geometry(shape), strict=True):
            if not average:
                out.append(jnp.ones(o))
            elif normalize_edges and padding == "same":
                out.append(jnp.asarray(edge_counts(size, (f, s, o, pads))))
            else:
                out.append(jnp.full(o, float(f)))
        return out

    def init(key, input_shape):
        del key
        geo = geometry(input_shape)
        return (input_shape[0], *(g[2] for g in geo), input_shape[-1]), ()

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, key, kwargs
        if mask is not None:
            x = jnp.where(mask[..., None], 0.0, x)
        geo = geometry(x.shape)
        for i, (axis_geo, w) in enumerate(zip(geo, weights(x.shape), strict=True)):
            x = window_sum(x, 1 + i, axis_geo, padding)
            x = x / w.reshape((1,) * (1 + i) + (-1,) + (1,) * (x.ndim - 2 - i))
        out_mask = conv_mask(mask, geo, padding)
        if out_mask is not None:
            x = jnp.where(out_mask[..., None], 0.0, x)
        return x

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        if k.diagonal_spatial:
            raise ValueError(
                f"{name} needs the covariance of every pair of positions; it got a "
                "diagonal-layout kernel."
            )
        geo1, geo2 = geometry(k.shape1), geometry(k.shape2)
        w1, w2 = weights(k.shape1), weights(k.shape2)

        def pool(cov, lead, geo_a, geo_b, wa, wb):
            for i in range(len(geo_a)):
                a = lead + 2 * i
                cov = window_sum(cov, a, geo_a[i], padding)
                cov = window_sum(cov, a + 1, geo_b[i], padding)
                shape_a = [1] * cov.ndim
                shape_a[a] = -1
                shape_b = [1] * cov.ndim
                shape_b[a + 1] = -1
                cov = cov / (wa[i].reshape(shape_a) * wb[i].reshape(shape_b))
            return cov

        nngp = pool(k.nngp, 2, geo1, geo2, w1, w2)
        ntk = None if k.ntk is None else pool(k.ntk, 2, geo1, geo2, w1, w2)
        cov1 = pool(k.cov1, 1, geo1, geo1, w1, w1)
        cov2 = None if k.cov2 is None else pool(k.cov2, 1, geo2, geo2, w2, w2)

        def out_shape(shape, geo):
            return (shape[0], *(g[2] for g in geo), shape[-1])

        return k.replace(
            nngp=nngp,
            ntk=ntk,
            cov1=cov1,
            cov2=cov2,
            mask1=conv_mask(k.mask1, geo1, padding),
            mask2=None if k.mask2 is None else conv_mask(k.mask2, geo2, padding),
            shape1=out_shape(k.shape1, geo1),
            shape2=out_shape(k.shape2, geo2),
        ).zero_masked()

    def mask_fn(mask, input_shape):
        return conv_mask(mask, geometry(input_shape), padding)

    def feature_fn(f: Features, key, spec: FeatureSpec) -> Features:
        # Exact: pooling has no weights, so the features of each window are summed
        # and divided as the activations are (every pair of offsets then appears in
        # the inner products, as in the kernel).
        del key, spec
        geo = geometry(f.shape)
        w = weights(f.shape)

        def pooled(values):
            if values is None:
                return None
            for i, (axis_geo, wi) in enumerate(zip(geo, w, strict=True)):
                values = window_sum(values, 1 + i, axis_geo, padding)
                shape = [1] * values.ndim
                shape[1 + i] = -1
                values = values / wi.reshape(shape).astype(values.dtype)
            return values

        out_shape = (f.shape[0], *(g[2] for g in geo), f.shape[-1])
        return f.replace(
            nngp=pooled(f.nngp),
            ntk=pooled(f.ntk),
            mask=conv_mask(f.mask, geo, padding),
            shape=out_shape,
        ).zero_masked()

    return Layer(
        init, apply, kernel_fn, _needs_full, mask_fn, name, feature_fn=feature_fn
    )


def AvgPool(
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    normalize_edges: bool = False,
) -> Layer:
    r"""Average pooling over windows of the spatial axes.

    Infinite width: :math:`K'_{ii'} = \frac{1}{|w|^2}\sum_{d, d'} K_{si+d,\, si'+d'}`
    (every pair of offsets, since pooling has no weights to decorrelate them).

    Args:
        window_shape: static; window size per spatial axis.
        strides: static; stride per axis (default: the window size).
        padding: static; ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"``.
        normalize_edges: static; with ``SAME`` padding divide by the number of
            in-range positions of each window instead of the full window size.
    """
    return _pool(window_shape, strides, padding, normalize_edges, True, "AvgPool")


def SumPool(
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
) -> Layer:
    r"""Sum pooling over windows: :math:`K'_{ii'} = \sum_{d,d'} K_{si+d,\,si'+d'}`.

    Args:
        window_shape: static; window size per spatial axis.
        strides: static; stride per axis (default: the window size).
        padding: static; ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"``.
    """
    return _pool(window_shape, strides, padding, False, False, "SumPool")
