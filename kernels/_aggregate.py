"""Graph neighbourhood aggregation with a pattern given at call time.

The pattern convention and the signature are Neural Tangents' ``stax.Aggregate``
(dense implementation), so that a graph model ports by changing the import:
``pattern[n, tail, head]`` is the weight of the edge ``tail -> head`` and each
vertex is replaced by the weighted sum of its predecessors,
:math:`y_{n,h} = \\sum_t P_{n,t,h}\\, x_{n,t}` (``x @ P`` over the vertex axis).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp

from ._feature_core import Unsupported
from ._kernel import Kernel, Layer, stateless_init

IMPLEMENTATIONS = ("DENSE",)


def _needs_full(needs_full_output):
    del needs_full_output
    return True


def _check_axes(aggregate_axis, batch_axis, channel_axis, implementation):
    """Checks the Neural Tangents arguments; returns the normalised axis spec."""
    if batch_axis != 0 or channel_axis != -1:
        raise ValueError(
            "Aggregate: only batch_axis=0 and channel_axis=-1 are supported (inputs "
            f"are (N, *S, C)), got batch_axis={batch_axis}, "
            f"channel_axis={channel_axis}."
        )
    if not isinstance(implementation, str) or implementation.upper() != "DENSE":
        raise NotImplementedError(
            f"Aggregate: implementation={implementation!r} is not supported; only "
            "'DENSE' (an edge list can be turned into a dense pattern on the fly "
            "with to_dense=...)."
        )
    if aggregate_axis is None:
        return None
    axes = (aggregate_axis,) if isinstance(aggregate_axis, int) else aggregate_axis
    try:
        if isinstance(axes, str) or not all(isinstance(a, int) for a in axes):
            raise TypeError
        axes = tuple(int(a) for a in axes)
    except TypeError:
        raise TypeError(
            "aggregate_axis must be None, an int or a tuple of ints, got "
            f"{aggregate_axis!r}."
        ) from None
    if not axes:
        raise ValueError("aggregate_axis must name at least one spatial axis.")
    return axes


def _resolve_axes(axes, ndim: int) -> None:
    """Checks that ``axes`` (or ``None``) are all the spatial axes, in order."""
    spatial = tuple(range(1, ndim - 1))
    if not spatial:
        raise ValueError(
            f"Aggregate needs inputs (N, *S, C) with at least one spatial (vertex) "
            f"axis, got {ndim} axes."
        )
    if axes is None:
        return
    normalised = tuple(a % ndim for a in axes)
    if normalised != spatial:
        raise NotImplementedError(
            f"Aggregate: aggregate_axis={axes} for inputs with {ndim} axes; only "
            f"aggregating over every spatial axis in order ({spatial}, or None) "
            "is supported."
        )


def _check_pattern(pattern, x_shape, name: str, to_dense):
    """The dense ``(N, V, V)`` pattern for inputs ``(N, *S, C)``."""
    if pattern is None:
        raise ValueError(
            f"Aggregate needs {name}: an array of shape (N, *S, *S) with "
            f"{name}[n, tail, head] the weight of the edge tail -> head."
        )
    pattern = jnp.asarray(to_dense(pattern))
    n, spatial = x_shape[0], tuple(x_shape[1:-1])
    expected = (n, *spatial, *spatial)
    if pattern.shape != expected:
        raise ValueError(
            f"{name} must have shape {expected} for inputs of shape "
            f"{tuple(x_shape)}, got {pattern.shape}."
        )
    v = math.prod(spatial)
    return pattern.reshape(n, v, v)


def _pairs_to_vertices(cov, n_lead: int, k: int):
    """``(*lead, S1, S1', ..., Sk, Sk')`` -> ``(*lead, V, V')``."""
    order = (
        list(range(n_lead))
        + [n_lead + 2 * i for i in range(k)]
        + [n_lead + 2 * i + 1 for i in range(k)]
    )
    moved = jnp.transpose(cov, order)
    lead = moved.shape[:n_lead]
    v = math.prod(moved.shape[n_lead : n_lead + k])
    return moved.reshape(*lead, v, v)


def _vertices_to_pairs(cov, lead: tuple[int, ...], spatial: tuple[int, ...]):
    """Inverse of :func:`_pairs_to_vertices`."""
    k, n_lead = len(spatial), len(lead)
    unpacked = cov.reshape(*lead, *spatial, *spatial)
    order = list(range(n_lead))
    for i in range(k):
        order += [n_lead + i, n_lead + k + i]
    return jnp.transpose(unpacked, order)


def Aggregate(
    aggregate_axis: int | tuple[int, ...] | None = None,
    batch_axis: int = 0,
    channel_axis: int = -1,
    to_dense: Callable | None = None,
    implementation: str = "DENSE",
) -> Layer:
    r"""Graph aggregation: each vertex becomes the weighted sum of its predecessors.

    Inputs are ``(N, *S, C)``: ``N`` graphs whose vertices are indexed by the
    spatial axes ``S`` (``(N, V, C)`` for a plain vertex list). The pattern ``P``
    ``(N, *S, *S)`` is passed at call time: ``P[n, tail, head]`` is the weight of
    the edge ``tail -> head`` (an adjacency matrix), and
    :math:`y_{n,h} = \sum_t P_{n,t,h}\, x_{n,t}`, i.e. ``x @ P`` over the vertex
    axis: ``apply(params, x, pattern=P)`` and ``layer.kernel(x1, x2,
    pattern=(P1, P2))`` (``P2`` may be ``None`` when ``x2`` is ``None``).

    Infinite width: :math:`K'(x, x')_{hh'} = \sum_{tt'} P_{th} K_{tt'}(x, x')
    P'_{t'h'}` (``P1^T K P2``; needs every pair of vertices); the output stays
    Gaussian.

    The signature, the pattern convention and the results are those of Neural
    Tangents' ``stax.Aggregate`` with the dense implementation, so a graph model
    ports by changing the import. (Development versions of widebnn before
    this one read the pattern transposed, ``P[n, head, tail]``; a symmetric
    adjacency gives the same result either way.)

    Args:
        aggregate_axis: static; the vertex axes of the inputs: ``None`` (every
            spatial axis) or all the spatial axes in order (``1`` or ``(1,)`` for
            ``(N, V, C)`` inputs; negative values count from the end).
        batch_axis: static; must be 0.
        channel_axis: static; must be -1.
        to_dense: static; ``to_dense(pattern)`` turns whatever is passed as
            ``pattern`` (e.g. an edge list) into the dense array above, each call.
        implementation: static; ``"DENSE"`` (Neural Tangents' ``"SPARSE"`` is
            not implemented: use ``to_dense``).

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        ValueError: for other batch/channel axes; when called, for a missing or
            badly shaped pattern.
        NotImplementedError: for ``implementation="SPARSE"`` or a subset of the
            spatial axes.

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import kernels
        >>> x = jnp.arange(6.0).reshape(1, 3, 2)  # one graph, 3 vertices
        >>> edges = jnp.zeros((1, 3, 3)).at[0, 0, 2].set(1.0)  # vertex 0 -> 2
        >>> y = kernels.Aggregate(aggregate_axis=1).apply((), x, pattern=edges)
        >>> y[0].tolist()  # vertex 2 receives vertex 0; the others nothing
        [[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]

    References:
        Du et al. (2019), "Graph neural tangent kernel: fusing graph neural
        networks with graph kernels".
    """
    axes = _check_axes(aggregate_axis, batch_axis, channel_axis, implementation)
    if to_dense is None:

        def to_dense(pattern):
            return pattern

    elif not callable(to_dense):
        raise TypeError(f"to_dense must be callable or None, got {to_dense!r}.")

    def apply(params, x, *, mask=None, key=None, pattern=None, **kwargs):
        del params, key, kwargs
        _resolve_axes(axes, x.ndim)
        pattern = _check_pattern(pattern, x.shape, "pattern", to_dense)
        if mask is not None:
            x = jnp.where(mask[..., None], 0.0, x)
        n, channels = x.shape[0], x.shape[-1]
        flat = x.reshape(n, -1, channels)
        y = jnp.einsum("nth,ntc->nhc", pattern, flat).reshape(x.shape)
        if mask is not None:
            y = jnp.where(mask[..., None], 0.0, y)
        return y

    def kernel_fn(k: Kernel, pattern=None, **kwargs) -> Kernel:
        del kwargs
        _resolve_axes(axes, len(k.shape1))
        if k.diagonal_spatial:
            raise ValueError(
                "Aggregate needs the covariance of every pair of vertices; it got a "
                "diagonal-layout kernel."
            )
        if not isinstance(pattern, tuple | list) or len(pattern) != 2:
            pattern = (pattern, None)
        p1 = _check_pattern(pattern[0], k.shape1, "pattern[0]", to_dense)
        if k.x1_is_x2 and pattern[1] is None:
            p2 = p1
        else:
            p2 = _check_pattern(pattern[1], k.shape2, "pattern[1]", to_dense)
        spatial = tuple(k.shape1[1:-1])
        n_sp = len(spatial)

        def cross(cov):
            nodes = _pairs_to_vertices(cov, 2, n_sp)
            out = jnp.einsum("nth,nmtu,mug->nmhg", p1, nodes, p2)
            return _vertices_to_pairs(out, cov.shape[:2], spatial)

        def own(cov, p):
            nodes = _pairs_to_vertices(cov, 1, n_sp)
            out = jnp.einsum("nth,ntu,nug->nhg", p, nodes, p)
            return _vertices_to_pairs(out, cov.shape[:1], spatial)

        return k.replace(
            nngp=cross(k.nngp),
            ntk=None if k.ntk is None else cross(k.ntk),
            cov1=own(k.cov1, p1),
            cov2=None if k.cov2 is None else own(k.cov2, p2),
        ).zero_masked()

    no_features = Unsupported(
        "Aggregate",
        "its graph pattern is given at call time, and feature maps take none",
    )
    return Layer(
        stateless_init,
        apply,
        kernel_fn,
        _needs_full,
        name="Aggregate",
        feature_fn=no_features,
    )
