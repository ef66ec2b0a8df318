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
