"""Combinators: composing layers in sequence, in parallel, and repeating them.

Each combinator composes the faces of its layers (``init``, ``apply``,
``kernel_fn``, ``feature_fn``) and their layout rules in lock-step. Lists of
features flow between ``FanOut``, ``parallel`` and the ``FanIn*`` layers as lists of
kernels do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._checks import check_positive_int
from ._fan_in_features import (
    fan_in_branches,
    fan_in_concat_features,
    fan_in_prod_features,
    fan_in_sum_features,
)
from ._feature_core import composite_rule, feature_rule, split_keys
from ._kernel import Layer, stateless_init


def _check_layers(layers, name: str) -> tuple[Layer, ...]:
    if not layers:
        raise ValueError(f"{name} needs at least one layer.")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"{name}: argument {i} must be a widebnn.kernels Layer, got "
                f"{type(layer).__name__}."
            )
    return tuple(layers)


def _split(key, num: int):
    if key is None:
        return [None] * num
    return list(jax.random.split(key, num))


def output_shape(layer: Layer, input_shape):
    """The output shape of ``layer`` for ``input_shape``, without drawing weights."""
    shapes = []

    def init_params(key):
        shape, params = layer.init(key, input_shape)
        shapes.append(shape)
        return params

    jax.eval_shape(init_params, jax.random.key(0))
    return shapes[0]


def _shape_of(x):
    if isinstance(x, list | tuple):
        return [_shape_of(xi) for xi in x]
    return tuple(x.shape)


def serial(*layers: Layer) -> Layer:
    """Composes layers in sequence; ``params`` is a tuple with one entry per layer.

    Args:
        *layers: the layers, first to last.

    Returns:
        A :class:`Layer`.

    Example:
        >>> from widebnn import kernels
        >>> net = kernels.serial(kernels.Dense(512), kernels.Relu(), kernels.Dense(1))
    """
    layers = _check_layers(layers, "serial")

    def init(key, input_shape):
        params = []
        for layer, layer_key in zip(layers, _split(key, len(layers)), strict=True):
            input_shape, layer_params = layer.init(layer_key, input_shape)
            params.append(layer_params)
        return input_shape, tuple(params)

    def apply(params, x, *, mask=None, key=None, **kwargs):
        keys = _split(key, len(layers))
        for layer, layer_params, layer_key in zip(layers, params, keys, strict=True):
            next_mask = None if mask is None else layer.mask_fn(mask, _shape_of(x))
            x = layer.apply(layer_params, x, mask=mask, key=layer_key, **kwargs)
            mask = next_mask
        return x

    def kernel_fn(k, **kwargs):
        for layer in layers:
            k = layer.kernel_fn(k, **kwargs)
        return k

    def full_spatial_input(needs_full_output):
        for layer in reversed(layers):
            needs_full_output = layer.full_spatial_input(needs_full_output)
        return needs_full_output

    def mask_fn(mask, input_shape):
        for layer in layers:
            next_shape = output_shape(layer, input_shape)
            mask = layer.mask_fn(mask, input_shape)
            input_shape = next_shape
        return mask

    def build_feature_fn():
        rules = [feature_rule(layer) for layer in layers]

        def feature_fn(f, key, spec):
            for rule, layer_key in zip(rules, split_keys(key, len(rules)), strict=True):
                f = rule(f, layer_key, spec)
            return f

        return feature_fn

    return Layer(
        init,
        apply,
        kernel_fn,
        full_spatial_input,
        mask_fn,
        name="serial",
        feature_fn=composite_rule(layers, build_feature_fn),
    )


def _per_branch(value, num: int, name: str):
    if isinstance(value, list | tuple):
        if len(value) != num:
            raise ValueError(f"{name} expects {num} inputs, got {len(value)}.")
        return list(value)
    return [value] * num


def parallel(*layers: Layer) -> Layer:
    """Applies layer ``i`` to input ``i`` of a list; outputs a list.

    Args:
        *layers: one layer per branch.

    Returns:
        A :class:`Layer` taking and returning lists (of shapes, arrays, kernels).
    """
    layers = _check_layers(layers, "parallel")
    num = len(layers)

    def init(key, input_shape):
        shapes = _per_branch(input_shape, num, "parallel")
        out = [
            layer.init(k, s)
            for layer, k, s in zip(layers, _split(key, num), shapes, strict=True)
        ]
        return [o[0] for o in out], tuple(o[1] for o in out)

    def apply(params, x, *, mask=None, key=None, **kwargs):
        xs = _per_branch(x, num, "parallel")
        masks = _per_branch(mask, num, "parallel")
        return [
            layer.apply(p, xi, mask=m, key=k, **kwargs)
            for layer, p, xi, m, k in zip(
                layers, params, xs, masks, _split(key, num), strict=True
            )
        ]

    def kernel_fn(k, **kwargs):
        ks = _per_branch(k, num, "parallel")
        return [
            layer.kernel_fn(ki, **kwargs) for layer, ki in zip(layers, ks, strict=True)
        ]

    def full_spatial_input(needs_full_output):
        needs = _per_branch(needs_full_output, num, "parallel")
        return tuple(
            bool(layer.full_spatial_input(n))
            for layer, n in zip(layers, needs, strict=True)
        )

    def mask_fn(mask, input_shape):
        masks = _per_branch(mask, num, "parallel")
        shapes = _per_branch(input_shape, num, "parallel")
        return [
            layer.mask_fn(m, s)
            for layer, m, s in zip(layers, masks, shapes, strict=True)
        ]

    def build_feature_fn():
        rules = [feature_rule(layer) for layer in layers]

        def feature_fn(f, key, spec):
            fs = _per_branch(f, num, "parallel")
            keys = split_keys(key, num)
            return [
                rule(fi, k, spec) for rule, fi, k in zip(rules, fs, keys, strict=True)
            ]

        return feature_fn

    return Layer(
        init,
        apply,
        kernel_fn,
        full_spatial_input,
        mask_fn,
        name="parallel",
        feature_fn=composite_rule(layers, build_feature_fn),
    )


def FanOut(num: int) -> Layer:
    """Copies its input into a list of ``num`` identical branches.

    Args:
        num: static; number of copies (``>= 1``).
    """
    num = check_positive_int(num, "num")

    def init(key, input_shape):
        del key
        return [input_shape] * num, ()

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, mask, key, kwargs
        return [x] * num

    def kernel_fn(k, **kwargs):
        del kwargs
        return [k] * num

    def full_spatial_input(needs_full_output):
        return any(_per_branch(needs_full_output, num, "FanOut"))

    def mask_fn(mask, input_shape):
        del input_shape
        return [mask] * num

    def feature_fn(f, key, spec):
        del key, spec
        return [f] * num

    return Layer(
        init,
        apply,
        kernel_fn,
        full_spatial_input,
        mask_fn,
        name="FanOut",
        feature_fn=feature_fn,
    )


def _combine_masks(masks):
    masks = [m for m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = jnp.logical_or(out, m)
    return out


def _check_branch_kernels(ks, name: str):
    if not isinstance(ks, list | tuple) or not ks:
        raise ValueError(f"{name} expects a non-empty list of branches.")
    first = ks[0]
    for k in ks[1:]:
        if k.diagonal_spatial != first.diagonal_spatial or k.x1_is_x2 != first.x1_is_x2:
            raise ValueError(f"{name}: branches have different kernel layouts.")
    return first


def _check_same_shapes(shapes, name: str):
    if not isinstance(shapes, list | tuple) or not shapes:
        raise ValueError(f"{name} expects a non-empty list of input shapes.")
    for s in shapes[1:]:
        if tuple(s) != tuple(shapes[0]):
            raise ValueError(f"{name}: branch shapes differ: {list(shapes)}.")
    return tuple(shapes[0])


def _merged_masks(ks):
    mask1 = _combine_masks([k.mask1 for k in ks])
    mask2 = _combine_masks([k.mask2 for k in ks])
    return mask1, mask2


def _fan_in_mask(mask, input_shape):
    del input_shape
    if isinstance(mask, list | tuple):
        return _combine_masks(mask)
    return mask


def FanInSum() -> Layer:
    """Sums a list of branches.

    Infinite width: the branches must be uncorrelated (they are when each contains
    its own random weights, as in a residual block ``x + f(x)``, because the weights
    are centred), and then all covariances and NTKs add. Summing two copies of the
    same branch (e.g. ``parallel(Identity(), Identity())``) breaks that assumption.
    """

    def init(key, input_shape):
        del key
        return _check_same_shapes(input_shape, "FanInSum"), ()

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, mask, key, kwargs
        return sum(x[1:], start=x[0])

    def kernel_fn(ks, **kwargs):
        del kwargs
        first = _check_branch_kernels(ks, "FanInSum")
        _check_same_shapes([k.shape1 for k in ks], "FanInSum")

        def total(field):
            values = [getattr(k, field) for k in ks]
            if any(v is None for v in values):
                return None
            return sum(values[1:], start=values[0])

        mask1, mask2 = _merged_masks(ks)
        return first.replace(
            nngp=total("nngp"),
            ntk=total("ntk"),
            cov1=total("cov1"),
            cov2=total("cov2"),
            mask1=mask1,
            mask2=mask2,
            is_gaussian=all(k.is_gaussian for k in ks),
        ).zero_masked()

    def feature_fn(fs, key, spec):
        del key, spec
        return fan_in_sum_features(fs)

    return Layer(
        init,
        apply,
        kernel_fn,
        mask_fn=_fan_in_mask,
        name="FanInSum",
        feature_fn=feature_fn,
    )


def FanInProd() -> Layer:
    r"""Multiplies a list of branches elementwise.

    Infinite width, for independent branches: :math:`K = \prod_i K_i` and, by the
    product rule, :math:`\Theta = \sum_i \Theta_i \prod_{j\ne i} K_j`. The output is
    not Gaussian (unless there is one branch).

    Feature map: TensorSRHT sketches (Ahle et al. 2020) of the tensor products of
    the branches' features, ``dim`` columns per product; unbiased given the
    branches' features.
    """

    def init(key, input_shape):
        del key
        return _check_same_shapes(input_shape, "FanInProd"), ()

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, mask, key, kwargs
        out = x[0]
        for xi in x[1:]:
            out = out * xi
        return out

    def kernel_fn(ks, **kwargs):
        del kwargs
        first = _check_branch_kernels(ks, "FanInProd")
        _check_same_shapes([k.shape1 for k in ks], "FanInProd")

        def product(values):
            out = values[0]
            for v in values[1:]:
                out = out * v
            return out

        nngp = product([k.nngp for k in ks])
        ntk = None
        if all(k.ntk is not None for k in ks):
            ntk = sum(
                k.ntk * product([kj.nngp for j, kj in enumerate(ks) if j != i] or [1.0])
                for i, k in enumerate(ks)
            )
        cov2 = None if first.cov2 is None else product([k.cov2 for k in ks])
        mask1, mask2 = _merged_masks(ks)
        return first.replace(
            nngp=nngp,
            ntk=ntk,
            cov1=product([k.cov1 for k in ks]),
            cov2=cov2,
            mask1=mask1,
            mask2=mask2,
            is_gaussian=len(ks) == 1 and first.is_gaussian,
        ).zero_masked()

    def feature_fn(fs, key, spec):
        return fan_in_prod_features(fs, key, spec.dim)

    return Layer(
        init,
        apply,
        kernel_fn,
        mask_fn=_fan_in_mask,
        name="FanInProd",
        feature_fn=feature_fn,
    )


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenates a list of branches along ``axis``.

    Infinite width: along the channel axis the kernel is the channel-count-weighted
    average :math:`\\sum_i n_i K_i / \\sum_i n_i` (finite counts ``n_i``) and the
    output is marked non-Gaussian (its channels are not identically distributed);
    along a spatial axis the covariance is block diagonal (distinct branches are
    uncorrelated), which needs Gaussian branches.

    Args:
        axis: static; the axis of the activations ``(N, *S, C)`` to concatenate
            along; the batch axis (0) is not supported.
    """
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"axis must be an integer, got {axis!r}.")

    def _axis(ndim):
        ax = axis % ndim if -ndim <= axis < ndim else None
        if ax is None or ax == 0:
            raise ValueError(
                f"FanInConcat: axis must be a channel or spatial axis of inputs with "
                f"{ndim} axes (not the batch axis), got {axis}."
            )
        return ax

    def init(key, input_shape):
        del key
        if not isinstance(input_shape, list | tuple) or not input_shape:
            raise ValueError("FanInConcat expects a non-empty list of input shapes.")
        ax = _axis(len(input_shape[0]))
        out = list(input_shape[0])
        out[ax] = sum(s[ax] for s in input_shape)
        return tuple(out), ()

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, mask, key, kwargs
        return jnp.concatenate(x, axis=_axis(x[0].ndim))

    def kernel_fn(ks, **kwargs):
        del kwargs
        first = _check_branch_kernels(ks, "FanInConcat")
        ndim = len(first.shape1)
        ax = _axis(ndim)
        if ax == ndim - 1:
            return _concat_channels(ks)
        return _concat_spatial(ks, ax - 1)

    def full_spatial_input(needs_full_output):
        return needs_full_output

    def mask_fn(mask, input_shape):
        if not isinstance(mask, list | tuple):
            return mask
        ax = _axis(len(input_shape[0]))
        if ax == len(input_shape[0]) - 1:
            return _combine_masks(mask)
        filled = [
            jnp.zeros(s[:-1], bool) if m is None else m
            for m, s in zip(mask, input_shape, strict=True)
        ]
        return jnp.concatenate(filled, axis=ax)

    def feature_fn(fs, key, spec):
        del key, spec
        ndim = len(fan_in_branches(fs, "FanInConcat")[0].shape)
        return fan_in_concat_features(fs, _axis(ndim))

    return Layer(
        init,
        apply,
        kernel_fn,
        full_spatial_input,
        mask_fn,
        "FanInConcat",
        feature_fn=feature_fn,
    )


def _concat_channels(ks):
    widths = [k.shape1[-1] for k in ks]
    total = sum(widths)

    def average(field):
        values = [getattr(k, field) for k in ks]
        if any(v is None for v in values):
            return None
        return sum(w * v for w, v in zip(widths, values, strict=True)) / total

    mask1, mask2 = _merged_masks(ks)
    first = ks[0]
    return first.replace(
        nngp=average("nngp"),
        ntk=average("ntk"),
        cov1=average("cov1"),
        cov2=average("cov2"),
        mask1=mask1,
        mask2=mask2,
        shape1=first.shape1[:-1] + (total,),
        shape2=first.shape2[:-1] + (total,),
        is_gaussian=False,
    ).zero_masked()


def _block_diagonal(blocks, axes):
    """Concatenates along ``axes[0]`` and ``axes[1]`` with zero off-diagonal blocks."""
    a0, a1 = axes
    sizes = [b.shape[a1] for b in blocks]
    total = sum(sizes)
    rows = []
    offset = 0
    for block, size in zip(blocks, sizes, strict=True):
        pad = [(0, 0)] * block.ndim
        pad[a1] = (offset, total - offset - size)
        rows.append(jnp.pad(block, pad))
        offset += size
    return jnp.concatenate(rows, axis=a0)


def _concat_spatial(ks, spatial_index: int):
    first = ks[0]
    if not all(k.is_gaussian for k in ks):
        raise ValueError(
            "FanInConcat along a spatial axis needs Gaussian branches (outputs of an "
            "affine layer), because the blocks between branches are set to zero."
        )
    diagonal = first.diagonal_spatial

    def join(field, lead: int):
        values = [getattr(k, field) for k in ks]
        if any(v is None for v in values):
            return None
        if diagonal:
            return jnp.concatenate(values, axis=lead + spatial_index)
        axis = lead + 2 * spatial_index
        return _block_diagonal(values, (axis, axis + 1))

    def concat_masks(attr, shape_attr):
        masks = [getattr(k, attr) for k in ks]
        if all(m is None for m in masks):
            return None
        filled = [
            jnp.zeros(getattr(k, shape_attr)[:-1], bool) if m is None else m
            for k, m in zip(ks, masks, strict=True)
        ]
        return jnp.concatenate(filled, axis=1 + spatial_index)

    def shape(attr):
        out = list(getattr(first, attr))
        out[1 + spatial_index] = sum(getattr(k, attr)[1 + spatial_index] for k in ks)
        return tuple(out)

    return first.replace(
        nngp=join("nngp", 2),
        ntk=join("ntk", 2),
        cov1=join("cov1", 1),
        cov2=join("cov2", 1),
        mask1=concat_masks("mask1", "shape1"),
        mask2=None if first.x1_is_x2 else concat_masks("mask2", "shape2"),
        shape1=shape("shape1"),
        shape2=shape("shape2"),
    ).zero_masked()


def Identity() -> Layer:
    """Passes its input through unchanged (finite and infinite)."""

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, mask, key, kwargs
        return x

    def kernel_fn(k, **kwargs):
        del kwargs
        return k

    def feature_fn(f, key, spec):
        del key, spec
        return f

    return Layer(
        stateless_init, apply, kernel_fn, name="Identity", feature_fn=feature_fn
    )


def repeat(layer: Layer, n: int) -> Layer:
    """``serial(layer, ..., layer)`` with ``n`` copies (independent weights).

    The first copy runs on its own; the remaining ``n - 1`` run in one
    ``jax.lax.scan`` (fast to compile for deep networks) when the layer keeps the
    shape of its input, and in a Python loop otherwise.

    Args:
        layer: the layer to repeat.
        n: static; number of copies (``>= 1``).

    Returns:
        A :class:`Layer`; ``params`` is ``(first_params, rest_params)`` where each
        leaf of ``rest_params`` has a leading axis of size ``n - 1``.
    """
    (layer,) = _check_layers((layer,), "repeat")
    n = check_positive_int(n, "n")

    def init(key, input_shape):
        first_key, rest_key = jax.random.split(key)
        shape, first = layer.init(first_key, input_shape)
        if n == 1:
            return shape, (first, None)
        keys = jax.random.split(rest_key, n - 1)
        outs = [layer.init(k, shape) for k in keys]
        if any(tuple(o[0]) != tuple(shape) for o in outs):
            raise ValueError(
                f"repeat: {layer.name} changes the shape {shape} of its own output; "
                "it cannot be repeated."
            )
        rest = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[o[1] for o in outs])
        return shape, (first, rest)

    def apply(params, x, *, mask=None, key=None, **kwargs):
        first, rest = params
        first_key, rest_key = (None, None) if key is None else jax.random.split(key)
        x = layer.apply(first, x, mask=mask, key=first_key, **kwargs)
        if n == 1:
            return x
        keys = None if rest_key is None else jax.random.split(rest_key, n - 1)

        def step(h, inputs):
            p, k = inputs
            return layer.apply(p, h, mask=mask, key=k, **kwargs), None

        x, _ = jax.lax.scan(step, x, (rest, keys))
        return x

    def kernel_fn(k, **kwargs):
        k = layer.kernel_fn(k, **kwargs)
        if n == 1:
            return k
        nxt = layer.kernel_fn(k, **kwargs)
        # PyTreeDef comes from jaxlib without type information: mypy sees no `!=`
        if jax.tree.structure(nxt) != jax.tree.structure(k):  # type: ignore[operator]
            for _ in range(n - 2):
                nxt = layer.kernel_fn(nxt, **kwargs)
            return nxt

        def step(carry, _):
            return layer.kernel_fn(carry, **kwargs), None

        k, _ = jax.lax.scan(step, nxt, None, length=n - 2)
        return k

    def full_spatial_input(needs_full_output):
        needs = needs_full_output
        for _ in range(n):
            needs = layer.full_spatial_input(needs)
        return needs

    def mask_fn(mask, input_shape):
        for _ in range(n):
            next_shape = output_shape(layer, input_shape)
            mask = layer.mask_fn(mask, input_shape)
            input_shape = next_shape
        return mask

    def build_feature_fn():
        rule = feature_rule(layer)

        def feature_fn(f, key, spec):
            # As serial(layer, ..., layer): one independent key per copy.
            for copy_key in split_keys(key, n):
                f = rule(f, copy_key, spec)
            return f

        return feature_fn

    return Layer(
        init,
        apply,
        kernel_fn,
        full_spatial_input,
        mask_fn,
        "repeat",
        feature_fn=composite_rule((layer,), build_feature_fn),
    )
