"""``Kernel``: the infinite-width covariances one layer maps to the next.

Spatial layout. Activations are batch-first and channels-last, ``(N, *S, C)`` with
``S`` the spatial (or sequence) axes. Covariances keep the batch pair and, for the
spatial axes, either every pair of positions ("full") or only equal positions
("diagonal"):

* full:     ``nngp`` is ``(N1, N2, S1, S1', S2, S2', ...)``, ``cov1`` is
  ``(N1, S1, S1', S2, S2', ...)``;
* diagonal: ``nngp`` is ``(N1, N2, S1, S2, ...)``, ``cov1`` is ``(N1, S1, S2, ...)``.

Which one a network uses is decided once, before any computation (see
``kernels/_evaluate.py``). This module imports nothing else of the package, so the
layers, the input kernel and the evaluation can all build on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Shape = tuple[int, ...]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Kernel:
    """Infinite-width covariances of one layer's activations for two input batches.

    Attributes:
        nngp: ``(N1, N2, *layout)`` covariance between the activations of ``x1`` and
            ``x2`` (one channel; all channels are i.i.d. at infinite width).
        ntk: like ``nngp``, the neural tangent kernel accumulated so far, or ``None``
            when only the NNGP was requested (all NTK work is then skipped).
        cov1: ``(N1, *layout)`` covariance of each input of ``x1`` with itself
            (position pairs of the same example). Nonlinearities need these variances.
        cov2: ``(N2, *layout)`` likewise for ``x2``, or ``None`` when ``x2`` is ``x1``.
        mask1: ``(N1, *S)`` boolean, ``True`` at padded positions of ``x1``, or
            ``None``. Entries of the covariances that touch a padded position are 0.
        mask2: ``(N2, *S)`` likewise for ``x2``, or ``None``.
        shape1: static; shape ``(N1, *S, C)`` of the finite activations for ``x1``
            (``C`` is the finite channel count, used by standard parameterisation).
        shape2: static; likewise for ``x2``.
        diagonal_spatial: static; ``True`` if only equal positions are stored.
        is_gaussian: static; ``True`` if the channels are centred Gaussian given the
            inputs (after an affine layer); nonlinearities require it.
        x1_is_x2: static; ``True`` if the second batch is the first one.

    ``layout`` is ``(S1, S1', S2, S2', ...)`` in full layout, ``(S1, S2, ...)`` in
    diagonal layout and empty when the activations have no spatial axes.
    """

    nngp: jax.Array
    ntk: jax.Array | None
    cov1: jax.Array
    cov2: jax.Array | None
    mask1: jax.Array | None = None
    mask2: jax.Array | None = None
    shape1: Shape = dataclasses.field(default=(), metadata={"static": True})
    shape2: Shape = dataclasses.field(default=(), metadata={"static": True})
    diagonal_spatial: bool = dataclasses.field(default=False, metadata={"static": True})
    is_gaussian: bool = dataclasses.field(default=False, metadata={"static": True})
    x1_is_x2: bool = dataclasses.field(default=False, metadata={"static": True})

    def replace(self, **changes: Any) -> Kernel:
        """Returns a copy with the given fields replaced (kernels are immutable)."""
        return dataclasses.replace(self, **changes)

    @property
    def n_spatial(self) -> int:
        """Number of spatial axes of the activations."""
        return len(self.shape1) - 2

    @property
    def var1(self) -> jax.Array:
        """``(N1, *S)`` per-position variances of the activations of ``x1``."""
        return position_variances(self.cov1, self.n_spatial, self.diagonal_spatial)

    @property
    def var2(self) -> jax.Array:
        """``(N2, *S)`` per-position variances for ``x2`` (``var1`` if same batch)."""
        cov2 = self.cov1 if self.cov2 is None else self.cov2
        return position_variances(cov2, self.n_spatial, self.diagonal_spatial)

    def map_covariances(
        self,
        fn: Callable[..., jax.Array],
        *,
        ntk_fn: Callable[..., jax.Array] | None = None,
        ntk: bool = False,
        lead: bool = False,
    ) -> Kernel:
        """Maps the covariances that carry the layout, skipping ``None``.

        Args:
            fn: applied to ``nngp``, ``cov1`` and ``cov2`` (and to ``ntk`` when
                ``ntk=True``).
            ntk_fn: applied to ``ntk`` instead, when given.
            ntk: static; also apply ``fn`` to ``ntk`` (otherwise ``ntk`` is kept
                unless ``ntk_fn`` is given).
            lead: static; call ``fn(cov, lead)`` (and ``ntk_fn``) with the number
                of leading batch axes of ``cov``: 2 for ``nngp``/``ntk``
                ``(N1, N2, *layout)``, 1 for ``cov1``/``cov2`` ``(N, *layout)``.

        Returns:
            The kernel with the mapped fields (masks, shapes and flags unchanged).
        """

        def apply(f, cov, batch_axes):
            if cov is None:
                return None
            return f(cov, batch_axes) if lead else f(cov)

        ntk_map = ntk_fn if ntk_fn is not None else (fn if ntk else None)
        return self.replace(
            nngp=apply(fn, self.nngp, 2),
            ntk=self.ntk if ntk_map is None else apply(ntk_map, self.ntk, 2),
            cov1=apply(fn, self.cov1, 1),
            cov2=apply(fn, self.cov2, 1),
        )

    def zero_masked(self) -> Kernel:
        """Sets every covariance entry that touches a padded position to zero."""
        if self.mask1 is None and self.mask2 is None:
            return self
        m1 = _keep(self.mask1, self.shape1)
        m2 = _keep(self.mask2, self.shape2) if not self.x1_is_x2 else m1
        pair = pair_broadcast(m1, m2, self.diagonal_spatial, batch_pair=True)
        keep_cross = pair[0] * pair[1]
        self_pair = pair_broadcast(m1, m1, self.diagonal_spatial, batch_pair=False)
        keep1 = self_pair[0] * self_pair[1]
        cov2 = self.cov2
        if cov2 is not None:
            s2 = pair_broadcast(m2, m2, self.diagonal_spatial, batch_pair=False)
            cov2 = cov2 * (s2[0] * s2[1]).astype(cov2.dtype)
        ntk = None if self.ntk is None else self.ntk * keep_cross.astype(self.ntk.dtype)
        return self.replace(
            nngp=self.nngp * keep_cross.astype(self.nngp.dtype),
            ntk=ntk,
            cov1=self.cov1 * keep1.astype(self.cov1.dtype),
            cov2=cov2,
        )


def _keep(mask: jax.Array | None, shape: Shape) -> jax.Array:
    """``(N, *S)`` float array, 1 where a position is kept and 0 where padded."""
    if mask is None:
        return jnp.ones(shape[:-1])
    return jnp.logical_not(mask).astype(float)


def position_variances(cov: jax.Array, n_spatial: int, diagonal_spatial: bool):
    """Extracts per-position variances ``(N, *S)`` from a self-covariance.

    Args:
        cov: ``(N, *layout)`` covariance of each example with itself.
        n_spatial: number of spatial axes.
        diagonal_spatial: whether ``cov`` is in diagonal layout.

    Returns:
        ``(N, *S)`` variances at each position.
    """
    if diagonal_spatial or n_spatial == 0:
        return cov
    for _ in range(n_spatial):
        # The pair (S_i, S_i') sits at axes 1, 2; its diagonal moves to the end, so
        # after n_spatial steps the axes are back in order S_1, ..., S_n.
        cov = jnp.diagonal(cov, axis1=1, axis2=2)
    return cov


def pair_broadcast(
    values_a: jax.Array,
    values_b: jax.Array,
    diagonal_spatial: bool,
    *,
    batch_pair: bool,
) -> tuple[jax.Array, jax.Array]:
    """Broadcasts per-position values of two batches to the covariance layout.

    Args:
        values_a: ``(Na, *S)`` values for the first argument of each covariance entry.
        values_b: ``(Nb, *S)`` values for the second argument.
        diagonal_spatial: whether the target layout is diagonal.
        batch_pair: ``True`` for a cross covariance ``(Na, Nb, *layout)``;
            ``False`` for a self covariance ``(N, *layout)`` (then ``Na == Nb``).

    Returns:
        ``(a, b)`` broadcastable against the covariance: ``a`` varies with the first
        position of each pair and ``b`` with the second.
    """
    if batch_pair:
        values_a = values_a[:, None]
        values_b = values_b[None]
    if diagonal_spatial:
        return values_a, values_b
    lead = 2 if batch_pair else 1
    n_spatial = values_a.ndim - lead
    shape_a = list(values_a.shape[:lead])
    shape_b = list(values_b.shape[:lead])
    for i in range(n_spatial):
        shape_a += [values_a.shape[lead + i], 1]
        shape_b += [1, values_b.shape[lead + i]]
    return values_a.reshape(shape_a), values_b.reshape(shape_b)
