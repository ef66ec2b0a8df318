"""Layer normalisation (no learnable gain or bias)."""

from __future__ import annotations

import jax.numpy as jnp

from ._checks import check_std
from ._feature_core import Features, FeatureSpec
from ._kernel import Kernel, Layer, pair_broadcast, stateless_init


def _normalized_axes(axis, ndim: int, name: str = "LayerNorm") -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int) or not -ndim <= a < ndim:
            raise ValueError(f"{name}: axis {a!r} is not an axis of {ndim}-D inputs.")
        out.append(a % ndim)
    if ndim - 1 not in out:
        raise ValueError(
            f"{name}: axis must include the channel axis (-1), got {axis!r}."
        )
    if 0 in out:
        raise ValueError(f"{name}: axis must not include the batch axis (0).")
    return tuple(sorted(set(out)))


def LayerNorm(axis=-1, eps: float = 1e-12) -> Layer:
    r"""Normalises activations to zero mean and unit variance over ``axis``.

    Finite network: :math:`\hat x = (x - \bar x)/\sqrt{\overline{(x-\bar x)^2} +
    \epsilon}` with means over ``axis`` (padded positions excluded).

    Infinite width (centred Gaussian channels, so the channel mean vanishes and the
    channel variance at position ``i`` is :math:`K_{ii}`): with :math:`v(x)` the mean
    of :math:`K_{ii}(x, x)` over the normalised spatial axes plus ``eps``,
    :math:`K'(x, x') = K(x, x')/\sqrt{v(x) v(x')}`, and the NTK likewise.

    Feature map: the squared norm of a position's NNGP features is its variance, so
    both kinds of features are divided by :math:`\sqrt{v(x)}` computed from them
    (exact on exact features; after random layers a ratio estimate, consistent as
    ``dim`` grows, with a bias of order ``1/dim``).

    Args:
        axis: static; axis or axes of ``(N, *S, C)`` to normalise over; must include
            the channel axis ``-1``.
        eps: added to the variance.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        ValueError: if ``axis`` misses the channel axis or includes the batch axis.
    """
    check_std(eps, "eps")
    if isinstance(axis, bool) or not isinstance(axis, int | tuple | list):
        raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}.")

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, key, kwargs
        axes = _normalized_axes(axis, x.ndim)
        keep = jnp.ones(x.shape[:-1] + (1,)) if mask is None else (~mask)[..., None]
        keep = keep.astype(x.dtype)
        count = jnp.sum(jnp.broadcast_to(keep, x.shape), axis=axes, keepdims=True)
        count = jnp.where(count > 0, count, 1.0)
        mean = jnp.sum(x * keep, axis=axes, keepdims=True) / count
        centred = (x - mean) * keep
        var = jnp.sum(centred**2, axis=axes, keepdims=True) / count
        return centred / jnp.sqrt(var + eps)

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        if not k.is_gaussian:
            raise ValueError(
                "LayerNorm needs centred Gaussian inputs: put an affine layer (Dense, "
                "Conv, attention) directly before it."
            )
        spatial_axes = tuple(
            a for a in _normalized_axes(axis, len(k.shape1)) if a != len(k.shape1) - 1
        )

        def norms(var, mask):
            if not spatial_axes:
                return var + eps
            keep = jnp.ones(var.shape) if mask is None else (~mask).astype(var.dtype)
            count = jnp.sum(keep, axis=spatial_axes, keepdims=True)
            count = jnp.where(count > 0, count, 1.0)
            mean = jnp.sum(var * keep, axis=spatial_axes, keepdims=True) / count
            return jnp.broadcast_to(mean, var.shape) + eps

        v1 = norms(k.var1, k.mask1)
        v2 = (
            v1
            if k.cov2 is None
            else norms(k.var2, k.mask2 if not k.x1_is_x2 else k.mask1)
        )
        a, b = pair_broadcast(v1, v2, k.diagonal_spatial, batch_pair=True)
        cross = jnp.sqrt(a * b)
        s1, s1b = pair_broadcast(v1, v1, k.diagonal_spatial, batch_pair=False)
        cov2 = None
        if k.cov2 is not None:
            s2, s2b = pair_broadcast(v2, v2, k.diagonal_spatial, batch_pair=False)
            cov2 = k.cov2 / jnp.sqrt(s2 * s2b)
        return k.replace(
            nngp=k.nngp / cross,
            ntk=None if k.ntk is None else k.ntk / cross,
            cov1=k.cov1 / jnp.sqrt(s1 * s1b),
            cov2=cov2,
        )

    def feature_fn(f: Features, key, spec: FeatureSpec) -> Features:
        # The squared norm of a position's NNGP features is the variance the kernel
        # divides by (exactly, when the features are exact; a ratio estimate, with
        # a bias of order 1/dim, after random features). Both kinds of features are
        # divided by the square root of the normalised variance, as in the kernel.
        del key, spec
        if not f.is_gaussian:
            raise ValueError(
                "LayerNorm needs centred Gaussian inputs: put an affine layer (Dense, "
                "Conv, attention) directly before it."
            )
        ndim = len(f.shape)
        spatial_axes = tuple(a for a in _normalized_axes(axis, ndim) if a != ndim - 1)
        var = jnp.sum(f.nngp**2, axis=-1)
        if spatial_axes:
            keep = jnp.ones(var.shape, var.dtype)
            if f.mask is not None:
                keep = (~f.mask).astype(var.dtype)
            count = jnp.sum(keep, axis=spatial_axes, keepdims=True)
            count = jnp.where(count > 0, count, 1.0)
            mean = jnp.sum(var * keep, axis=spatial_axes, keepdims=True) / count
            var = jnp.broadcast_to(mean, var.shape)
        scale = (1.0 / jnp.sqrt(var + eps))[..., None]
        ntk = None if f.ntk is None else f.ntk * scale
        return f.replace(nngp=f.nngp * scale, ntk=ntk)

    return Layer(
        stateless_init, apply, kernel_fn, name="LayerNorm", feature_fn=feature_fn
    )
