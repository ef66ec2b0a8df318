"""Graph neighbourhood aggregation with a pattern given at call time."""

from __future__ import annotations

import jax.numpy as jnp

from ._kernel import Kernel, Layer, stateless_init


def _needs_full(needs_full_output):
    del needs_full_output
    return True


def _check_pattern(pattern, x_shape, name: str):
    if pattern is None:
        raise ValueError(
            f"Aggregate needs {name}: an array of shape (N, V, V) with "
            f"{name}[n, i, j] the weight of the edge j -> i."
        )
    pattern = jnp.asarray(pattern)
    n, v = x_shape[0], x_shape[1]
    if pattern.shape != (n, v, v):
        raise ValueError(
            f"{name} must have shape {(n, v, v)} for inputs of shape {tuple(x_shape)}, "
            f"got {pattern.shape}."
        )
    return pattern


def Aggregate() -> Layer:
    r"""Sums each node's neighbours: :math:`y_{n,i} = \sum_j P_{n,i,j}\, x_{n,j}`.

    Inputs are ``(N, V, C)`` (``V`` nodes); the pattern ``P`` ``(N, V, V)`` (edge
    weights ``P[n, i, j]`` for ``j -> i``, e.g. an adjacency matrix) is passed at call
    time: ``apply(params, x, pattern=P)`` and ``layer.kernel(x1, x2,
    pattern=(P1, P2))`` (``P2`` may be ``None`` when ``x2`` is ``None``).

    Infinite width: :math:`K'(x, x')_{ii'} = \sum_{jj'} P_{ij} K_{jj'}(x, x') P'_{i'j'}`
    (needs every pair of nodes); the output stays Gaussian.

    Returns:
        A :class:`Layer` without parameters.
    """

    def apply(params, x, *, mask=None, key=None, pattern=None, **kwargs):
        del params, key, kwargs
        if x.ndim != 3:
            raise ValueError(f"Aggregate needs inputs (N, V, C), got shape {x.shape}.")
        pattern = _check_pattern(pattern, x.shape, "pattern")
        if mask is not None:
            x = jnp.where(mask[..., None], 0.0, x)
        y = jnp.einsum("nij,njc->nic", pattern, x)
        if mask is not None:
            y = jnp.where(mask[..., None], 0.0, y)
        return y

    def kernel_fn(k: Kernel, pattern=None, **kwargs) -> Kernel:
        del kwargs
        if len(k.shape1) != 3:
            raise ValueError(f"Aggregate needs inputs (N, V, C), got shape {k.shape1}.")
        if k.diagonal_spatial:
            raise ValueError(
                "Aggregate needs the covariance of every pair of nodes; it got a "
                "diagonal-layout kernel."
            )
        if not isinstance(pattern, tuple | list) or len(pattern) != 2:
            pattern = (pattern, None)
        p1 = _check_pattern(pattern[0], k.shape1, "pattern[0]")
        p2 = p1 if k.x1_is_x2 and pattern[1] is None else pattern[1]
        p2 = _check_pattern(p2, k.shape2, "pattern[1]")

        def cross(cov):
            return jnp.einsum("nij,nmjk,mlk->nmil", p1, cov, p2)

        def own(cov, p):
            return jnp.einsum("nij,njk,nlk->nil", p, cov, p)

        return k.replace(
            nngp=cross(k.nngp),
            ntk=None if k.ntk is None else cross(k.ntk),
            cov1=own(k.cov1, p1),
            cov2=None if k.cov2 is None else own(k.cov2, p2),
        ).zero_masked()

    return Layer(stateless_init, apply, kernel_fn, _needs_full, name="Aggregate")
