"""Shared pieces of ``widebnn.gp``: calling a kernel, and checking user data."""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from widebnn.kernels import Layer

from . import _linalg

KernelFn = Callable[..., tuple[jax.Array, ...]]


class Prediction(NamedTuple):
    """A predictive distribution at ``M`` test points.

    Attributes:
        mean: ``(M, out)`` predictive mean.
        covariance: ``(M, M)`` covariance shared by every output (``full_cov=True``)
            or ``(M,)`` variances (``full_cov=False``).

    ``NTKEnsemble.predict`` with an array of ``T`` times adds a leading ``T`` axis
    to both.
    """

    mean: jax.Array
    covariance: jax.Array


#: How many networks keep a compiled kernel (see :func:`compiled_layer_kernel`).
COMPILED_NETWORKS = 8


@functools.lru_cache(maxsize=COMPILED_NETWORKS)
def compiled_layer_kernel(layer: Layer):
    """``fn(x1, x2, names)``: ``layer.kernel`` compiled once per network.

    One compiled program per input shape is much cheaper than dispatching (and
    compiling) every primitive of a deep network eagerly. The jitted function is
    kept for the last :data:`COMPILED_NETWORKS` networks (a ``Layer`` is a tuple
    of closures, equal only to itself or a copy of itself), so that a second
    :func:`widebnn.gp.posterior` of the same network, or a second ``predict``,
    on inputs of the same shape does not trace and compile again. A bounded
    cache is the one exception to "no module-level caches": the compiled
    program of a network is not data the user passes around.
    """
    return jax.jit(
        lambda x1, x2, names: layer.kernel(x1, x2, get=names),
        static_argnames="names",
    )


@functools.lru_cache(maxsize=COMPILED_NETWORKS)
def compiled_layer_diagonal(layer: Layer):
    """``fn(x, names) -> tuple of (M, 1, 1)``: each point's kernel with itself,
    vectorised with ``vmap`` and compiled once per network (see
    :func:`compiled_layer_kernel`)."""

    def diagonal(x, names):
        return jax.vmap(lambda xi: layer.kernel(xi[None], None, get=names))(x)

    return jax.jit(diagonal, static_argnames="names")


def _cached(factory, layer: Layer):
    """``factory(layer)`` from the cache, or uncached for an unhashable layer."""
    try:
        hash(layer)
    except TypeError:  # a layer holding unhashable callables
        return factory.__wrapped__(layer)
    return factory(layer)


def as_kernel_fn(kernel) -> KernelFn:
    """Returns ``fn(x1, x2, names) -> tuple of (N1, N2) arrays`` for a kernel.

    Args:
        kernel: a :class:`widebnn.kernels.Layer`, or a callable with the calling
            convention of :meth:`Layer.kernel`: ``kernel(x1, x2, get)`` where
            ``x2`` may be ``None`` and ``get`` is a tuple of names, returning a
            tuple of arrays in the order of ``get``. A layer's kernel is compiled
            once per network and input shape (:func:`compiled_layer_kernel`).

    Raises:
        TypeError: if ``kernel`` is neither.
    """
    if isinstance(kernel, Layer):
        layer = kernel

        def layer_fn(x1, x2, names):
            if _linalg.is_traced(x1, x2):  # inside the caller's jit/grad: inline
                return layer.kernel(x1, x2, get=tuple(names))
            return _cached(compiled_layer_kernel, layer)(x1, x2, names=tuple(names))

        return layer_fn
    if not callable(kernel):
        raise TypeError(
            "kernel must be a widebnn.kernels Layer or a callable "
            f"kernel(x1, x2, get), got {type(kernel).__name__}."
        )

    def callable_fn(x1, x2, names):
        out = kernel(x1, x2, tuple(names))
        if not isinstance(out, tuple | list):
            out = (out,)
        if len(out) != len(names):
            raise ValueError(
                f"kernel(x1, x2, get={tuple(names)}) must return {len(names)} arrays, "
                f"got {len(out)}."
            )
        return tuple(jnp.asarray(o) for o in out)

    return callable_fn


def evaluate(fn: KernelFn, x1, x2, names: Sequence[str], what: str):
    """Calls ``fn`` and checks each output is ``(N1, N2)``; returns a dict."""
    out = fn(x1, x2, tuple(names))
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    for name, value in zip(names, out, strict=True):
        if value.shape != (n1, n2):
            raise ValueError(
                f"{what}: the {name} kernel must have shape ({n1}, {n2}), got "
                f"{value.shape}. A GP needs one output per input: end the network "
                "with pooling or Flatten and a Dense readout."
            )
    return dict(zip(names, out, strict=True))


def kernel_diagonal(kernel, fn: KernelFn, x, names: Sequence[str]):
    """``{name: (M,)}`` diagonals ``k(x_i, x_i)`` without the ``(M, M)`` matrix.

    For a :class:`Layer` each point is evaluated on its own (vectorised with
    ``vmap``, compiled); other callables are evaluated on the full matrix.
    """
    names = tuple(names)
    if isinstance(kernel, Layer):
        if _linalg.is_traced(x):
            values = compiled_layer_diagonal.__wrapped__(kernel)(x, names=names)
        else:
            values = _cached(compiled_layer_diagonal, kernel)(x, names=names)
        return {n: v[:, 0, 0] for n, v in zip(names, values, strict=True)}
    full = evaluate(fn, x, None, names, "kernel(x_test, None)")
    return {n: jnp.diagonal(v) for n, v in full.items()}


def check_inputs(x, name: str) -> jax.Array:
    """Checks an input batch ``(N, ...)`` with at least 2 axes."""
    if x is None:
        raise TypeError(f"{name} must be an array, got None.")
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, *spatial, channels) with at least 2 axes, "
            f"got shape {x.shape}."
        )
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one example, got shape {x.shape}.")
    return x


def check_targets(y, x: jax.Array, x_name: str, y_name: str) -> jax.Array:
    """Checks ``y`` is ``(N, out)``, finite, and as long as ``x``."""
    if y is None:
        raise TypeError(f"{y_name} must be an array, got None.")
    y = jnp.asarray(y)
    if y.ndim != 2:
        raise ValueError(
            f"{y_name} must be 2-D with shape (N, out), got shape {y.shape}; for one "
            f"output use {y_name}[:, None]."
        )
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{x_name} and {y_name} must have the same number of examples, got "
            f"{x.shape[0]} and {y.shape[0]}."
        )
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.result_type(float))
    if not _linalg.is_traced(y) and not bool(jnp.all(jnp.isfinite(y))):
        raise ValueError(f"{y_name} contains NaN or inf.")
    return y


def check_nonnegative(value, name: str):
    """Checks a real scalar ``>= 0`` (its value only when concrete).

    Raises:
        TypeError: for ``None``, a string, a bool or another non-real type.
        ValueError: for an array that is not a scalar, or a negative, NaN or
            infinite value.
    """
    if not _is_real(value):
        raise TypeError(
            f"{name} must be a real number >= 0, got {value!r} "
            f"({type(value).__name__})."
        )
    if _linalg.is_traced(value):
        return value
    concrete = np.asarray(value, dtype=float)
    if concrete.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {concrete.shape}.")
    if not np.isfinite(concrete) or concrete < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    return value


def _is_real(value) -> bool:
    """Whether ``value`` is a real number or an array of a real (not bool) dtype."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, numbers.Real):
        return True
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return False
    return jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)


@jax.jit
def _symmetry_stats(matrix):
    """``(max |K - K^T|, max |K|, all finite)`` in one fused pass, no temporaries."""
    return (
        jnp.max(jnp.abs(matrix - matrix.T)),
        jnp.max(jnp.abs(matrix)),
        jnp.all(jnp.isfinite(matrix)),
    )


def check_symmetric(matrix: jax.Array, what: str, *, rtol: float = 1e-6):
    """Eagerly checks that a train-train kernel is symmetric and finite."""
    if _linalg.is_traced(matrix):
        return
    asymmetry, scale, finite = (float(v) for v in _symmetry_stats(jnp.asarray(matrix)))
    if not finite:
        raise ValueError(f"{what} contains NaN or inf entries.")
    scale = max(scale, float(jnp.finfo(jnp.asarray(matrix).dtype).tiny))
    if asymmetry > rtol * scale:
        raise ValueError(
            f"{what} is not symmetric (max |K - K^T| = {asymmetry:.3g}, max |K| = "
            f"{scale:.3g}); a kernel must satisfy k(x, x') = k(x', x)."
        )


def lml_from_kernel(
    k_train: ArrayLike,
    y_train: jax.Array,
    noise_var,
    diag_reg,
    absolute: bool,
    jitter_ladder: tuple[float, ...],
):
    """Log marginal likelihood of ``y_train`` under ``N(0, K + noise + reg)``.

    Returns ``(lml, CholeskyFactor)``. The relative part ``diag_reg * tr(K)/N`` is
    added to ``noise_var``.
    """
    k_train = jnp.asarray(k_train)
    reg = _linalg.regularizer(k_train, diag_reg, absolute=absolute)
    chol = _linalg.cholesky(
        k_train,
        diag_reg=noise_var + reg,
        absolute=True,
        jitter_ladder=jitter_ladder,
    )
    return _linalg.gaussian_log_likelihood(chol, y_train), chol
