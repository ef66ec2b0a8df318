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
