r"""Fixed linear maps of the activations: static indexing and ``dot_general``.

Neither layer has parameters; both act on the spatial (or channel) axes of
``(N, *S, C)`` activations with a fixed linear map ``L``, so the covariance of the
outputs is ``L`` applied on both sides of each position pair,
:math:`K' = L K L^\top`, and the per-position features are mapped by ``L`` as the
activations are (exact).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._feature_core import Features, FeatureSpec
from ._kernel import Kernel, Layer


def _needs_full(needs_full_output):
    del needs_full_output
    return True


def _normalise_axis(axis, ndim, name):
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {axis!r}.")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name} {axis} is out of range for {ndim}-D activations.")
    return int(axis) % ndim


class _SliceMaker:
    """``Slice[1:3, :, ::2]`` returns the index ``(slice(1, 3), slice(None), ...)``."""

    def __getitem__(self, idx):
        return idx


#: builds the ``idx`` of :func:`Index` with slicing syntax, as Neural Tangents'
#: ``stax.Slice``.
Slice = _SliceMaker()


def _int_tuple(items: Any) -> tuple[int, ...]:
    """``tuple(int(i) for i in items)``; ``TypeError`` if ``items`` is not iterable."""
    return tuple(int(i) for i in items)


def _check_default_axes(batch_axis, channel_axis, name):
    if batch_axis != 0 or channel_axis not in (-1,):
        raise ValueError(
            f"{name}: only batch_axis=0 and channel_axis=-1 are supported (inputs are "
            f"(N, *S, C)), got batch_axis={batch_axis}, channel_axis={channel_axis}."
        )


def Index(idx, axis: int | None = None, batch_axis: int = 0, channel_axis: int = -1):
    r"""Static indexing of the activations, as ``x[idx]``.

    Two forms: ``Index(idx)`` with a NumPy-style index over all axes of the ``(N, *S,
    C)`` activations (Neural Tangents' form; build it with :data:`Slice`, e.g.
    ``Index(Slice[:, 1:3, ::-1])``; the batch entry must be ``:``), or
    ``Index(idx, axis=a)`` indexing the single axis ``a``. See :func:`_index_axis`
    for what each axis's index does to the kernel.

    Args:
        idx: static; a tuple of integers, slices, integer sequences and at most one
            ``Ellipsis`` (without ``axis``), or one such entry (with ``axis``).
        axis: static; the axis ``idx`` applies to, or ``None`` for the full form.
        batch_axis: static; must be 0.
        channel_axis: static; must be -1.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        ValueError: on an index of the batch axis, more than one ``Ellipsis``, other
            batch/channel axes, or what :func:`_index_axis` refuses.

    Example:
        >>> from widebnn import kernels
        >>> layer = kernels.Index(kernels.Slice[:, 1:3])
        >>> layer.init(None, (4, 5, 2))[0]
        (4, 2, 2)
    """
    from ._combinators import Identity, serial

    _check_default_axes(batch_axis, channel_axis, "Index")
    if axis is not None:
        return _index_axis(axis, idx)
    entries = idx if isinstance(idx, tuple) else (idx,)
    if sum(entry is Ellipsis for entry in entries) > 1:
        raise ValueError(f"Index: idx {idx!r} has more than one Ellipsis.")
    if Ellipsis in entries:
        cut = entries.index(Ellipsis)
        before, after = entries[:cut], entries[cut + 1 :]
    else:
        before, after = entries, ()
    if before and before[0] != slice(None):
        raise ValueError(
            f"Index: idx {idx!r} indexes the batch axis (axis 0); index the inputs "
            "instead and leave the batch entry ':'."
        )
    steps = [(a, e) for a, e in enumerate(before) if e != slice(None)]
    # from the highest positive axis down, then from the most negative axis up:
    # removing an axis never renumbers the ones still to be indexed.
    layers = [_index_axis(a, e) for a, e in sorted(steps, reverse=True)]
    offsets = range(-len(after), 0)
    layers += [
        _index_axis(a, e)
        for a, e in zip(offsets, after, strict=True)
        if e != slice(None)
    ]
    return serial(*layers) if layers else Identity()


def _index_axis(axis: int, idx) -> Layer:
    r"""Static indexing of one spatial or channel axis: ``x[(slice(None),) * axis +
    (idx,)]``.

    Infinite width: indexing a spatial axis indexes both position axes of each pair
    of the covariances (an integer removes the axis); indexing the channel axis keeps
    the kernel (channels are i.i.d.) and changes only the finite width. Masks are
    indexed like the activations.

    Args:
        axis: static; axis of the ``(N, *S, C)`` activations (negative counts from the
            end); not the batch axis.
        idx: static; an integer, a ``slice`` or a sequence of integers. An integer
            is not allowed on the channel axis (it would remove it).

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        ValueError: on the batch axis, an out-of-range axis or index, or an integer
            index of the channel axis.
    """
    if isinstance(idx, bool) or not isinstance(idx, int | np.integer | slice):
        try:
            idx = _int_tuple(idx)
        except TypeError as error:
            raise TypeError(
                f"idx must be an integer, a slice or a sequence of integers, got "
                f"{idx!r}."
            ) from error

    def resolve(shape):
        """``(axis, positions, drop)`` with ``positions`` an integer array."""
        ax = _normalise_axis(axis, len(shape), "axis")
        if ax == 0:
            raise ValueError("Index: axis 0 is the batch axis; index the inputs.")
        size = shape[ax]
        if isinstance(idx, slice):
            positions = np.arange(size)[idx]
        else:
            positions = np.asarray(idx, dtype=int)
            if np.any(positions < -size) or np.any(positions >= size):
                raise ValueError(
                    f"Index: idx {idx} is out of range for axis {axis} of size {size}."
                )
            positions = positions % size
        if positions.size == 0:
            raise ValueError(f"Index: idx {idx} selects no position of axis {axis}.")
        drop = positions.ndim == 0
        if drop and ax == len(shape) - 1:
            raise ValueError(
                "Index: an integer idx on the channel axis would remove it; use a "
                "slice."
            )
        return ax, positions, drop

    def out_shape(shape):
        ax, positions, drop = resolve(shape)
        shape = list(shape)
        if drop:
            del shape[ax]
        else:
            shape[ax] = positions.size
        return tuple(shape)

    def init(key, input_shape):
        del key
        return out_shape(input_shape), ()

    def take(values, positions, axis):
        return jnp.take(values, jnp.asarray(positions), axis=axis)

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, key, kwargs
        ax, positions, _ = resolve(x.shape)
        if mask is not None:
            x = jnp.where(mask[..., None], 0.0, x)
        return take(x, positions, ax)

    def mask_fn(mask, input_shape):
        if mask is None:
            return None
        ax, positions, _ = resolve(input_shape)
        return mask if ax == len(input_shape) - 1 else take(mask, positions, ax)

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        ax, positions, _ = resolve(k.shape1)
        resolve(k.shape2)
        changes = {"shape1": out_shape(k.shape1), "shape2": out_shape(k.shape2)}
        if ax == len(k.shape1) - 1:
            return k.replace(**changes)
        spatial = ax - 1

        def index(cov, lead):
            if cov is None:
                return None
            if k.diagonal_spatial:
                return take(cov, positions, lead + spatial)
            cov = take(cov, positions, lead + 2 * spatial)
            if positions.ndim == 0:
                return take(cov, positions, lead + 2 * spatial)
            return take(cov, positions, lead + 2 * spatial + 1)

        return k.replace(
            nngp=index(k.nngp, 2),
            ntk=index(k.ntk, 2),
            cov1=index(k.cov1, 1),
            cov2=index(k.cov2, 1),
            mask1=mask_fn(k.mask1, k.shape1),
            mask2=mask_fn(k.mask2, k.shape2),
            **changes,
        )

    def feature_fn(f: Features, key, spec: FeatureSpec) -> Features:
        # Exact: index the features' positions as the activations'; indexing the
        # channel axis keeps the kernel, so only the finite shape changes.
        del key, spec
        ax, positions, _ = resolve(f.shape)
        shape = out_shape(f.shape)
        if ax == len(f.shape) - 1:
            return f.replace(shape=shape)

        def index(values):
            return None if values is None else take(values, positions, ax)

        return f.replace(
            nngp=index(f.nngp),
            ntk=index(f.ntk),
            mask=mask_fn(f.mask, f.shape),
            shape=shape,
        )

    return Layer(
        init, apply, kernel_fn, mask_fn=mask_fn, name="Index", feature_fn=feature_fn
    )


def DotGeneral(
    rhs=None,
    dimension_numbers=(((), ()), ((), ())),
    is_lhs: bool = False,
    *,
    lhs=None,
    precision=None,
    batch_axis: int = 0,
    channel_axis: int = -1,
) -> Layer:
    r"""Multiplication of the activations by a fixed array with ``lax.dot_general``.

    The finite layer computes ``lax.dot_general(x, rhs, dimension_numbers)`` (or
    ``lax.dot_general(rhs, x, dimension_numbers)`` with ``is_lhs=True``) and then
    moves the batch axis of ``x`` to the front and its channel axis to the end; the
    remaining axes, in ``dot_general`` order (batch dimensions, then the free axes of
    the left and of the right operand), are the spatial axes of the output. The batch
    and channel axes of ``x`` may be neither contracted nor batched.

    Infinite width: with ``L`` the fixed map,
    :math:`K'_{oo'} = \sum_{a a'} L_{oa} L_{o'a'} K_{aa'}` over the spatial axes of
    ``x`` (one ``einsum``); this needs the full layout.

    Args:
        rhs: the fixed array (not trained).
        dimension_numbers: static; ``((lhs_contract, rhs_contract), (lhs_batch,
            rhs_batch))`` as in ``jax.lax.dot_general``, the activations being the
            left operand unless ``is_lhs``.
        is_lhs: static; ``True`` if ``rhs`` is the left operand.
        lhs: Neural Tangents' form: the fixed array as the left operand (then
            ``rhs`` must be ``None``); ``DotGeneral(lhs=a, ...)`` is
            ``DotGeneral(a, ..., is_lhs=True)``.
        precision: accepted for compatibility; the contraction runs at the
            precision of the inputs.
        batch_axis: static; must be 0.
        channel_axis: static; must be -1.

    Returns:
        A :class:`Layer` without parameters. Masks are not supported.

    Raises:
        ValueError: if ``dimension_numbers`` is malformed, touches the batch or
            channel axis of the activations, or pairs axes of different sizes.
    """
    del precision
    _check_default_axes(batch_axis, channel_axis, "DotGeneral")
    if lhs is not None:
        if rhs is not None:
            raise ValueError("DotGeneral: give either lhs or rhs, not both.")
        rhs, is_lhs = lhs, True
    if rhs is None:
        raise ValueError("DotGeneral: rhs (or lhs) must be an array.")
    array = jnp.asarray(rhs)
    try:
        (c_lhs, c_rhs), (b_lhs, b_rhs) = dimension_numbers
        c_lhs, c_rhs, b_lhs, b_rhs = (
            tuple(int(a) for a in v) for v in (c_lhs, c_rhs, b_lhs, b_rhs)
        )
    except (TypeError, ValueError) as error:
        raise ValueError(
            "dimension_numbers must be ((lhs_contract, rhs_contract), (lhs_batch, "
            f"rhs_batch)) of integers, got {dimension_numbers!r}."
        ) from error
    if is_lhs:
        c_x, c_r, b_x, b_r = c_rhs, c_lhs, b_rhs, b_lhs
    else:
        c_x, c_r, b_x, b_r = c_lhs, c_rhs, b_lhs, b_rhs
    if len(c_x) != len(c_r) or len(b_x) != len(b_r):
        raise ValueError(
            f"dimension_numbers {dimension_numbers}: contracting and batch axes must "
            "come in pairs."
        )
    c_r = tuple(_normalise_axis(a, array.ndim, "dimension_numbers") for a in c_r)
    b_r = tuple(_normalise_axis(a, array.ndim, "dimension_numbers") for a in b_r)

    def plan(shape):
        """Axes of ``x`` paired with ``rhs`` and the sources of the output axes."""
        ndim = len(shape)
        cx = tuple(_normalise_axis(a, ndim, "dimension_numbers") for a in c_x)
        bx = tuple(_normalise_axis(a, ndim, "dimension_numbers") for a in b_x)
        if {0, ndim - 1} & set(cx + bx):
            raise ValueError(
                f"dimension_numbers {dimension_numbers}: the batch axis 0 and the "
                f"channel axis {ndim - 1} of the activations may not be contracted or "
                "batched."
            )
        for ax, ar in zip(cx + bx, c_r + b_r, strict=True):
            if shape[ax] != array.shape[ar]:
                raise ValueError(
                    f"dimension_numbers pairs axis {ax} of the activations (size "
                    f"{shape[ax]}) with axis {ar} of rhs (size {array.shape[ar]})."
                )
        x_free = [("x", a) for a in range(ndim) if a not in cx + bx]
        r_free = [("r", a) for a in range(array.ndim) if a not in c_r + b_r]
        batch = [("x", a) for a in bx]
        order = batch + (r_free + x_free if is_lhs else x_free + r_free)
        spatial = [s for s in order if s not in (("x", 0), ("x", ndim - 1))]
        perm = [order.index(s) for s in [("x", 0), *spatial, ("x", ndim - 1)]]
        return cx, bx, spatial, perm

    def out_shape(shape):
        _, _, spatial, _ = plan(shape)
        sizes = [shape[a] if s == "x" else array.shape[a] for s, a in spatial]
        return (shape[0], *sizes, shape[-1])

    def init(key, input_shape):
        del key
        return out_shape(input_shape), ()

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, key, kwargs
        if mask is not None:
            raise ValueError("DotGeneral does not support masks (mask must be None).")
        _, _, _, perm = plan(x.shape)
        fixed = array.astype(x.dtype)
        lhs, rhs = (fixed, x) if is_lhs else (x, fixed)
        z = jax.lax.dot_general(lhs, rhs, dimension_numbers)
        return jnp.transpose(z, perm)

    def covariance_map(shape, lead):
        """``einsum`` sublists mapping a ``lead``-batch full-layout covariance."""
        ndim = len(shape)
        cx, bx, spatial, _ = plan(shape)
        label = {a: (2 + 2 * a, 3 + 2 * a) for a in range(1, ndim - 1)}
        base = 2 + 2 * ndim
        free = {a: (base + 2 * a, base + 2 * a + 1) for a in range(array.ndim)}
        cov_sub = list(range(lead)) + [v for a in range(1, ndim - 1) for v in label[a]]
        r_sub: list[list[int | None]] = [[None] * array.ndim for _ in range(2)]
        for ax, ar in zip(cx + bx, c_r + b_r, strict=True):
            r_sub[0][ar], r_sub[1][ar] = label[ax]
        for ar in range(array.ndim):
            if r_sub[0][ar] is None:
                r_sub[0][ar], r_sub[1][ar] = free[ar]
        out = list(range(lead))
        for source, a in spatial:
            out += list(label[a] if source == "x" else free[a])
        return cov_sub, r_sub[0], r_sub[1], out

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        if k.mask1 is not None or k.mask2 is not None:
            raise ValueError("DotGeneral does not support masks (mask1/mask2).")
        if k.diagonal_spatial and k.n_spatial > 0:
            raise ValueError(
                "DotGeneral needs the covariance of every pair of positions; it got "
                "a diagonal-layout kernel."
            )

        def mapped(cov, lead):
            if cov is None:
                return None
            cov_sub, r1, r2, out = covariance_map(k.shape1, lead)
            fixed = array.astype(cov.dtype)
            return jnp.einsum(cov, cov_sub, fixed, r1, fixed, r2, out)

        return k.replace(
            nngp=mapped(k.nngp, 2),
            ntk=mapped(k.ntk, 2),
            cov1=mapped(k.cov1, 1),
            cov2=mapped(k.cov2, 1),
            shape1=out_shape(k.shape1),
            shape2=out_shape(k.shape2),
        )

    def mask_fn(mask, input_shape):
        if mask is not None:
            raise ValueError("DotGeneral does not support masks (mask must be None).")
        return None

    def feature_fn(f: Features, key, spec: FeatureSpec) -> Features:
        # Exact: the fixed map acts on the positions of the features as on those of
        # the activations (the feature axis takes the channel axis's place).
        del key, spec
        if f.mask is not None:
            raise ValueError("DotGeneral does not support masks (mask must be None).")
        _, _, _, perm = plan(f.shape)

        def mapped(values):
            if values is None:
                return None
            fixed = array.astype(values.dtype)
            lhs, rhs = (fixed, values) if is_lhs else (values, fixed)
            return jnp.transpose(jax.lax.dot_general(lhs, rhs, dimension_numbers), perm)

        return f.replace(
            nngp=mapped(f.nngp), ntk=mapped(f.ntk), shape=out_shape(f.shape)
        )

    return Layer(
        init,
        apply,
        kernel_fn,
        _needs_full,
        mask_fn,
        name="DotGeneral",
        feature_fn=feature_fn,
    )
