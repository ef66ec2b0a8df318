"""Finite-width kernels of one network: empirical NNGP and NTK."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ._checks import check_choice
from ._inputs import _pair_subscripts

NTK_IMPLEMENTATIONS = ("jacobian", "vjp_jvp")


def _outputs(apply_fn, params, x):
    y = apply_fn(params, x)
    if y.ndim < 2:
        raise ValueError(
            "apply_fn must return (N, *spatial, channels) outputs, got shape "
            f"{y.shape}."
        )
    return y


def empirical_nngp(
    apply_fn: Callable, params, x1, x2=None, *, diagonal_spatial: bool = False
) -> jax.Array:
    """Finite-width NNGP: inner products of outputs averaged over output channels.

    :math:`\\hat K(x, x') = f(x)\\cdot f(x') / C`, in the layout of
    :meth:`Layer.kernel` (pairs of positions for outputs with spatial axes).

    Args:
        apply_fn: ``apply_fn(params, x) -> (N, *S, C)``.
        params: the network parameters.
        x1: ``(N1, ...)`` inputs.
        x2: ``(N2, ...)`` inputs or ``None`` for ``x1``.
        diagonal_spatial: static; keep only equal positions.

    Returns:
        ``(N1, N2, *layout)``.
    """
    y1 = _outputs(apply_fn, params, x1)
    y2 = y1 if x2 is None else _outputs(apply_fn, params, x2)
    subscripts = _pair_subscripts(y1.ndim - 2, diagonal_spatial, batch_pair=True)
    return jnp.einsum(subscripts, y1, y2) / y1.shape[-1]


def _ntk_jacobian(apply_fn, params, x1, x2, diagonal_spatial):
    def jac(x):
        return jax.jacrev(lambda p: apply_fn(p, x))(params)

    j1 = jac(x1)
    j2 = j1 if x2 is None else jac(x2)
    y_ndim = jax.eval_shape(lambda: apply_fn(params, x1)).ndim
    subscripts = _pair_subscripts(y_ndim - 2, diagonal_spatial, batch_pair=True)
    lhs, out = subscripts.split("->")
    a, b = lhs.split(",")

    def contract(l1, l2):
        p_axes = "".join(chr(ord("A") + i) for i in range(l1.ndim - y_ndim))
        return jnp.einsum(f"{a}{p_axes},{b}{p_axes}->{out}", l1, l2)

    leaves = jax.tree.leaves(jax.tree.map(contract, j1, j2))
    channels = jax.eval_shape(lambda: apply_fn(params, x1)).shape[-1]
    return sum(leaves[1:], start=leaves[0]) / channels


def _ntk_vjp_jvp(apply_fn, params, x1, x2, diagonal_spatial):
    """Builds the NTK from NTK-vector products: ``J1 (J2^T v)`` for basis vectors v.

    Cost: one VJP through the ``x2`` network and one JVP through the ``x1`` network
    per output entry of ``x2``, vectorised; no Jacobian is stored. Pays off for
    networks with many parameters and few outputs.
    """
    x2_ = x1 if x2 is None else x2
    y2, vjp_fn = jax.vjp(lambda p: apply_fn(p, x2_), params)

    def column(cotangent):
        (tangent,) = vjp_fn(cotangent)
        _, out = jax.jvp(lambda p: apply_fn(p, x1), (params,), (tangent,))
        return out

    basis = jnp.eye(y2.size, dtype=y2.dtype).reshape((y2.size, *y2.shape))
    columns = jax.lax.map(column, basis, batch_size=min(y2.size, 64))
    # columns[j] = Theta[:, j] as an output of x1: (M2, N1, *S, C) with M2 = y2.size.
    y1_shape = columns.shape[1:]
    full = columns.reshape((*y2.shape, *y1_shape))
    n_sp = len(y1_shape) - 2
    channels = y1_shape[-1]
    # full axes: (N2, S2..., C2, N1, S1..., C1); trace the channel pair.
    full = jnp.trace(full, axis1=n_sp + 1, axis2=2 * n_sp + 3) / channels
    # now (N2, S2..., N1, S1...): reorder to (N1, N2, S1, S2', ...).
    order = [n_sp + 1, 0]
    for i in range(n_sp):
        order += [n_sp + 2 + i, 1 + i]
    full = jnp.transpose(full, order)
    if diagonal_spatial and n_sp:
        for _ in range(n_sp):
            full = jnp.diagonal(full, axis1=2, axis2=3)
    return full


def empirical_ntk(
    apply_fn: Callable,
    params,
    x1,
    x2=None,
    *,
    diagonal_spatial: bool = False,
    implementation: str = "jacobian",
) -> jax.Array:
    """Finite-width NTK: :math:`\\sum_p \\partial_p f(x)\\,\\partial_p f(x')`, averaged
    over output channels.

    Args:
        apply_fn: ``apply_fn(params, x) -> (N, *S, C)``.
        params: the network parameters (any pytree).
        x1: ``(N1, ...)`` inputs.
        x2: ``(N2, ...)`` inputs or ``None`` for ``x1``.
        diagonal_spatial: static; keep only equal output positions.
        implementation: static; ``"jacobian"`` (contract the two Jacobians leaf by
            leaf; memory ``N * outputs * params``) or ``"vjp_jvp"`` (NTK-vector
            products, no Jacobian stored; better for many parameters).

    Returns:
        ``(N1, N2, *layout)``.

    Raises:
        ValueError: for an unknown implementation.
    """
    implementation = check_choice(implementation, "implementation", NTK_IMPLEMENTATIONS)
    if implementation == "jacobian":
        return _ntk_jacobian(apply_fn, params, x1, x2, diagonal_spatial)
    return _ntk_vjp_jvp(apply_fn, params, x1, x2, diagonal_spatial)


# --------------------------------------------- Neural Tangents' calling convention

#: Neural Tangents' ``NtkImplementation`` values and the implementation used here.
#: ``0`` (AUTO) and ``3`` (STRUCTURED_DERIVATIVES) give the same values as the
#: Jacobian contraction (Neural Tangents' implementations agree exactly), so they
#: map to it.
NT_IMPLEMENTATIONS = {0: "jacobian", 1: "jacobian", 2: "vjp_jvp", 3: "jacobian"}


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _axes(value, name: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    axes = tuple(value) if isinstance(value, tuple | list) else None
    if axes is None or not all(
        isinstance(a, int) and not isinstance(a, bool) for a in axes
    ):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}.")
    return axes


def _implementation(implementation) -> str:
    if isinstance(implementation, str):
        return check_choice(implementation, "implementation", NTK_IMPLEMENTATIONS)
    try:
        return NT_IMPLEMENTATIONS[int(implementation)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"implementation must be one of {NTK_IMPLEMENTATIONS} or Neural "
            f"Tangents' NtkImplementation 0-3, got {implementation!r}."
        ) from None


def _split_kwargs(kwargs, same: bool):
    """Neural Tangents' rule: a pair ``(for_x1, for_x2)`` is split, other values
    go to both calls (the first of a pair to both when ``x2`` is ``None``)."""
    kwargs1, kwargs2 = {}, {}
    for key, value in kwargs.items():
        if isinstance(value, tuple | list) and len(value) == 2:
            kwargs1[key] = value[0]
            kwargs2[key] = value[0] if same else value[1]
        else:
            kwargs1[key] = kwargs2[key] = value
    return kwargs1, kwargs2


def _pair_einsum(ndim: int, trace: tuple[int, ...], diagonal: tuple[int, ...]):
    """Subscripts ``(out1, out2, result)`` for a kernel of two outputs of
    rank ``ndim``: traced axes are shared and summed, diagonal axes shared and
    kept once, every other axis kept twice, in order (``a1, a2``)."""
    letters = iter(_LETTERS)
    first, second, result = [], [], []
    for axis in range(ndim):
        a = next(letters)
        if axis in trace:
            first.append(a)
            second.append(a)
        elif axis in diagonal:
            first.append(a)
            second.append(a)
            result.append(a)
        else:
            b = next(letters)
            first.append(a)
            second.append(b)
            result += [a, b]
    return "".join(first), "".join(second), "".join(result)


def _canonical(axes, ndim, name):
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{name} {axes} out of range for outputs of rank {ndim}.")
        out.append(a % ndim)
    return tuple(out)


def _output_layout(f, params, x1, x2, kw1, kw2, trace_axes, diagonal_axes):
    """Checks the outputs of ``f`` and returns ``(shape1, trace, diagonal, size)``."""
    shape1 = jax.eval_shape(lambda p: f(p, x1, **kw1), params)
    shape2 = shape1 if x2 is None else jax.eval_shape(lambda p: f(p, x2, **kw2), params)
    if not hasattr(shape1, "shape") or not hasattr(shape2, "shape"):
        raise TypeError("f must return one array (pytree outputs are not supported).")
    ndim = len(shape1.shape)
    trace = _canonical(trace_axes, ndim, "trace_axes")
    diagonal = _canonical(diagonal_axes, ndim, "diagonal_axes")
    if set(trace) & set(diagonal):
        raise ValueError(
            f"trace_axes {trace_axes} and diagonal_axes {diagonal_axes} overlap."
        )
    if len(shape2.shape) != ndim or any(
        shape1.shape[a] != shape2.shape[a] for a in trace + diagonal
    ):
        raise ValueError(
            f"f(x1) and f(x2) must agree on trace_axes and diagonal_axes, got shapes "
            f"{shape1.shape} and {shape2.shape}."
        )
    size = 1
    for a in trace:
        size *= shape1.shape[a]
    return shape1.shape, trace, diagonal, size


def empirical_ntk_fn(
    f: Callable,
    trace_axes=(-1,),
    diagonal_axes=(),
    vmap_axes=None,
    implementation=1,
) -> Callable:
    r"""Finite-width NTK in Neural Tangents' calling convention.

    ``empirical_ntk_fn(f, ...)`` returns ``ntk_fn(x1, x2, params,
    **apply_fn_kwargs)``, as ``neural_tangents.empirical_ntk_fn`` does:
    :math:`\Theta = \sum_p \partial_p f(x_1)\, \partial_p f(x_2)^\top`, traced over
    the pairs of ``trace_axes`` (divided by their size) and diagonal over
    ``diagonal_axes``. The result has the shape "nearly ``zip(f(x1).shape,
    f(x2).shape)``": every other output axis appears twice, in order
    (``(N1, N2, C1, C2)`` with ``trace_axes=()`` for ``(N, C)`` outputs). With the
    default ``trace_axes=(-1,)`` it equals :func:`empirical_ntk` (pairs of
    positions for spatial outputs; ``diagonal_axes`` of the spatial axes is its
    ``diagonal_spatial=True``).

    Args:
        f: ``f(params, x, **kwargs) -> (N, ...)`` (a :class:`Layer`'s ``apply``).
        trace_axes: static; output axes whose pair is traced (an int or tuple).
        diagonal_axes: static; output axes of which only equal indices are kept.
        vmap_axes: static; accepted for compatibility and unused (a speed hint in
            Neural Tangents; the values do not depend on it).
        implementation: static; ``"jacobian"`` or ``"vjp_jvp"`` (see
            :func:`empirical_ntk`), or Neural Tangents' ``NtkImplementation``
            values: ``1`` Jacobian contraction, ``2`` NTK-vector products; ``0``
            (auto) and ``3`` (structured derivatives) use the Jacobian
            contraction (the values are the same).

    Returns:
        ``ntk_fn(x1, x2, params, **apply_fn_kwargs)``: ``x2=None`` for ``x1``;
        a keyword argument given as a pair ``(for_x1, for_x2)`` (e.g.
        ``pattern`` of :func:`Aggregate`) is split between the two calls, other
        keyword arguments go to both.

    Raises:
        TypeError: for non-integer axes; when called, for pytree outputs.
        ValueError: for an unknown implementation; when called, for axes out of
            range, overlapping axes or outputs that differ on them.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from widebnn import kernels
        >>> net = kernels.serial(kernels.Dense(16), kernels.Relu(),
        ...                      kernels.Dense(3))
        >>> x = jnp.ones((4, 2))
        >>> _, params = net.init(jax.random.key(0), x.shape)
        >>> ntk_fn = kernels.empirical_ntk_fn(net.apply)
        >>> ntk_fn(x, None, params).shape
        (4, 4)
        >>> kernels.empirical_ntk_fn(net.apply, trace_axes=())(x, None, params).shape
        (4, 4, 3, 3)

    References:
        Novak et al. (2022), "Fast finite width neural tangent kernel".
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {f!r}.")
    trace_axes = _axes(trace_axes, "trace_axes")
    diagonal_axes = _axes(diagonal_axes, "diagonal_axes")
    implementation = _implementation(implementation)
    del vmap_axes

    def ntk_fn(x1, x2, params, **apply_fn_kwargs):
        kw1, kw2 = _split_kwargs(apply_fn_kwargs, same=x2 is None)
        shape1, trace, diagonal, size = _output_layout(
            f, params, x1, x2, kw1, kw2, trace_axes, diagonal_axes
        )
        sub1, sub2, out = _pair_einsum(len(shape1), trace, diagonal)

        def f1(p):
            return f(p, x1, **kw1)

        def f2(p):
            return f(p, x1 if x2 is None else x2, **kw2)

        if implementation == "jacobian":
            j1 = jax.jacrev(f1)(params)
            j2 = j1 if x2 is None else jax.jacrev(f2)(params)

            def contract(l1, l2):  # leaves (*f(x).shape, *param.shape)
                p = _free_letters(l1.ndim - len(shape1), sub1 + sub2)
                return jnp.einsum(f"{sub1}{p},{sub2}{p}->{out}", l1, l2)

            leaves = jax.tree.leaves(jax.tree.map(contract, j1, j2))
            return sum(leaves[1:], start=leaves[0]) / size
        full = _full_ntk(f1, f2, params)  # (*f(x1).shape, *f(x2).shape)
        return jnp.einsum(f"{sub1}{sub2}->{out}", full) / size

    return ntk_fn


def _free_letters(count: int, used: str) -> str:
    """``count`` einsum letters not in ``used``."""
    free = [c for c in _LETTERS if c not in used]
    if count > len(free):
        raise ValueError(f"too many axes for einsum ({count} more than {used!r}).")
    return "".join(free[:count])


def _full_ntk(f1, f2, params):
    """``J1 J2^T`` with shape ``(*f1.shape, *f2.shape)`` by NTK-vector products."""
    y2, vjp_fn = jax.vjp(f2, params)

    def column(cotangent):
        (tangent,) = vjp_fn(cotangent)
        return jax.jvp(f1, (params,), (tangent,))[1]

    basis = jnp.eye(y2.size, dtype=y2.dtype).reshape((y2.size, *y2.shape))
    columns = jax.lax.map(column, basis, batch_size=min(y2.size, 64))  # (M2, *y1)
    full = columns.reshape((*y2.shape, *columns.shape[1:]))
    n2 = y2.ndim
    return jnp.moveaxis(full, tuple(range(n2)), tuple(range(-n2, 0)))


def empirical_nngp_fn(f: Callable, trace_axes=(-1,), diagonal_axes=()) -> Callable:
    r"""Finite-width NNGP in Neural Tangents' calling convention.

    ``empirical_nngp_fn(f, ...)`` returns ``nngp_fn(x1, x2, params,
    **apply_fn_kwargs)``: :math:`f(x_1) f(x_2)^\top` traced over ``trace_axes``
    (divided by their size) and diagonal over ``diagonal_axes``, with the output
    layout of :func:`empirical_ntk_fn`. With the defaults it equals
    :func:`empirical_nngp`.

    Args:
        f: ``f(params, x, **kwargs) -> (N, ...)``.
        trace_axes: static; output axes whose pair is traced.
        diagonal_axes: static; output axes of which only equal indices are kept.

    Returns:
        ``nngp_fn(x1, x2, params, **apply_fn_kwargs)`` (``x2=None`` for ``x1``;
        keyword pairs split as in :func:`empirical_ntk_fn`).

    Raises:
        TypeError, ValueError: as :func:`empirical_ntk_fn`.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {f!r}.")
    trace_axes = _axes(trace_axes, "trace_axes")
    diagonal_axes = _axes(diagonal_axes, "diagonal_axes")

    def nngp_fn(x1, x2, params, **apply_fn_kwargs):
        kw1, kw2 = _split_kwargs(apply_fn_kwargs, same=x2 is None)
        shape1, trace, diagonal, size = _output_layout(
            f, params, x1, x2, kw1, kw2, trace_axes, diagonal_axes
        )
        sub1, sub2, out = _pair_einsum(len(shape1), trace, diagonal)
        y1 = f(params, x1, **kw1)
        y2 = y1 if x2 is None else f(params, x2, **kw2)
        return jnp.einsum(f"{sub1},{sub2}->{out}", y1, y2) / size

    return nngp_fn
