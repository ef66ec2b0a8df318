"""The two values every layer works with: ``Kernel`` (infinite width) and ``Layer``.

A network description is a :class:`Layer`. Its ``init``/``apply`` are the finite
network; its ``kernel_fn`` maps the :class:`Kernel` of its inputs to the kernel of its
outputs in the infinite-width limit. Combinators compose the three in lock-step.

Spatial layout. Activations are batch-first and channels-last, ``(N, *S, C)`` with
``S`` the spatial (or sequence) axes. Covariances keep the batch pair and, for the
spatial axes, either every pair of positions ("full") or only equal positions
("diagonal"):

* full:     ``nngp`` is ``(N1, N2, S1, S1', S2, S2', ...)``, ``cov1`` is
  ``(N1, S1, S1', S2, S2', ...)``;
* diagonal: ``nngp`` is ``(N1, N2, S1, S2, ...)``, ``cov1`` is ``(N1, S1, S2, ...)``.

Which one a network uses is decided once, before any computation, by folding each
layer's :attr:`Layer.full_spatial_input` rule from the output back to the input (see
:func:`input_layout`); a network that ends in ``Flatten`` runs diagonal (cost
``O(|S|)`` per pair of inputs), one that pools globally runs full (``O(|S|^2)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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


def _same_layout(needs_full_output):
    """Fold rule of a layer that acts on each position separately."""
    return needs_full_output


def _identity_mask(mask, input_shape):
    del input_shape
    return mask


class Layer(NamedTuple):
    """A finite layer and its infinite-width limit, kept in lock-step.

    Attributes:
        init: ``init(key, input_shape) -> (output_shape, params)`` draws finite
            weights from the prior. ``input_shape`` is ``(N, *S, C)`` (or a list of
            shapes for layers with several inputs).
        apply: ``apply(params, x, *, mask=None, key=None, **kwargs) -> y`` runs the
            finite network. ``mask`` is ``(N, *S)`` boolean, ``True`` at padding;
            ``key`` is needed by random layers (``Dropout`` in train mode).
        kernel_fn: ``kernel_fn(k: Kernel, **kwargs) -> Kernel`` is the same layer at
            infinite width. Extra keyword arguments reach every layer (e.g. graph
            patterns); layers ignore those they do not use.
        full_spatial_input: the layout rule: given whether the consumer of this
            layer's output needs every pair of positions (``True``) or only equal
            positions, returns whether this layer needs them of its input. Layers
            with several inputs or outputs take/return a bool (same for all) or a
            tuple of bools.
        mask_fn: ``mask_fn(mask, input_shape) -> mask`` maps the padding mask of the
            input to that of the output.
        name: a short name used in error messages.
        feature_fn: ``feature_fn(f: Features, key, spec: FeatureSpec) -> Features``,
            the layer's random feature map (see ``kernels/_feature_core.py``), or
            ``None`` when the layer has none (:func:`feature_map` then refuses it).
    """

    init: Callable[..., tuple[Any, Any]]
    apply: Callable[..., Any]
    kernel_fn: Callable[..., Any]
    full_spatial_input: Callable[[Any], Any] = _same_layout
    mask_fn: Callable[[Any, Any], Any] = _identity_mask
    name: str = "Layer"
    feature_fn: Callable[..., Any] | None = None

    def kernel(
        self,
        x1,
        x2=None,
        get: str | Sequence[str] = ("nngp", "ntk"),
        *,
        mask1=None,
        mask2=None,
        diagonal_spatial: bool = False,
        tile_entries: int | None = None,
        **kwargs,
    ):
        """Infinite-width kernels of this network between two input batches.

        Kernels of more than ``2**16`` entries (``2**22`` for spatial inputs) are
        evaluated on tiles of pairs of about ``tile_entries`` entries inside a
        ``lax.map`` (only the tiles on and above the diagonal when ``x2`` is
        ``None``): the same values, several times faster on CPU and with a small
        working set (see ``kernels/_tiling.py``).
        Calls with extra keyword arguments or asking for ``cov1``/``cov2`` are
        never tiled.

        Args:
            x1: ``(N1, *S, C)`` inputs.
            x2: ``(N2, *S, C)`` inputs, or ``None`` for ``x1`` itself.
            get: static; one of ``"nngp"``, ``"ntk"``, ``"cov1"``, ``"cov2"``, or a
                tuple of them. The NTK is only computed when asked for.
            mask1: ``(N1, *S)`` boolean, ``True`` at padded positions, or ``None``.
            mask2: likewise for ``x2``.
            diagonal_spatial: static; if the output keeps spatial axes, return only
                equal-position covariances ``(N1, N2, *S)`` instead of every pair
                ``(N1, N2, S1, S1', ...)``.
            tile_entries: static; kernel entries per tile (pairs times entries per
                pair in the input layout); ``None`` for the default (``2**14``
                without spatial axes, ``2**16`` with), ``0`` to never tile.
            **kwargs: passed to every layer's ``kernel_fn``.

        Returns:
            The requested array, or a tuple of arrays in the order of ``get``:
            ``nngp``/``ntk`` are ``(N1, N2, *layout)``, ``cov1`` is ``(N1, *layout)``.

        Raises:
            ValueError: on inputs of the wrong rank or mismatched channel counts,
                or NaN or infinite inputs outside padded positions (checked only
                for concrete inputs: under ``jit`` the values are unknown, and NaN
                inputs give a NaN kernel).
        """
        from ._inputs import (
            as_inputs,
            as_mask,
            check_finite_inputs,
            input_kernel,
            validate_get,
        )
        from ._tiling import (
            pair_entries,
            resolve_tile_entries,
            should_tile,
            tiled_kernel,
        )

        names = validate_get(get)
        full_in = input_layout(self, not diagonal_spatial)
        if tile_entries != 0 and not kwargs:
            x1 = as_inputs(x1, "x1")
            x2 = None if x2 is None else as_inputs(x2, "x2")
            mask1 = as_mask(mask1, x1, "mask1")
            if x2 is None and mask2 is not None:
                raise ValueError("mask2 was given but x2 is None; pass x2 as well.")
            mask2 = None if x2 is None else as_mask(mask2, x2, "mask2")
            tile = resolve_tile_entries(tile_entries, spatial=x1.ndim > 2)
            per_pair = pair_entries(x1, full_in)
            if should_tile(
                x1, x2, names, tile_entries, per_pair=per_pair, kwargs=kwargs
            ):
                check_finite_inputs(x1, mask1, "x1")
                if x2 is not None:
                    check_finite_inputs(x2, mask2, "x2")
                out = tiled_kernel(
                    self,
                    x1,
                    x2,
                    mask1,
                    mask2,
                    names,
                    max(1, tile // per_pair),
                    diagonal_spatial,
                )
                return out[0] if isinstance(get, str) else out
        else:
            resolve_tile_entries(tile_entries, spatial=False)  # checks the type
        k = input_kernel(
            x1,
            x2,
            mask1=mask1,
            mask2=mask2,
            diagonal_spatial=not full_in,
            compute_ntk="ntk" in names,
        )
        out = self.kernel_fn(k, **kwargs)
        if out.n_spatial > 0 and out.diagonal_spatial and not diagonal_spatial:
            raise ValueError(
                f"{self.name}: the output keeps spatial axes but the network was run "
                "in diagonal layout; pass diagonal_spatial=True."
            )
        values = {
            "nngp": out.nngp,
            "ntk": out.ntk,
            "cov1": out.cov1,
            "cov2": out.cov1 if out.cov2 is None else out.cov2,
        }
        if isinstance(get, str):
            return values[get]
        return tuple(values[name] for name in names)


def input_layout(layer: Layer, needs_full_output: bool) -> bool:
    """Whether ``layer`` needs the full position-pair covariance of its input.

    Args:
        layer: the network.
        needs_full_output: whether the caller wants every pair of output positions.

    Returns:
        ``True`` if the input kernel must keep every pair of positions.
    """
    needs = layer.full_spatial_input(needs_full_output)
    if isinstance(needs, tuple):
        return any(needs)
    return bool(needs)


def stateless_init(key, input_shape):
    """``init`` of a layer without parameters: the shape is unchanged."""
    del key
    return input_shape, ()
