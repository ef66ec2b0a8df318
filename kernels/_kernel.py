"""The two values every layer works with: ``Kernel`` (infinite width) and ``Layer``.

A network description is a :class:`Layer`. Its ``init``/``apply`` are the finite
network; its ``kernel_fn`` maps the :class:`Kernel` of its inputs to the kernel of its
outputs in the infinite-width limit. Combinators compose the three in lock-step.
``Kernel`` and its layout helpers are defined in ``kernels/_covariance.py`` (the
spatial layouts are described there) and re-exported here; evaluating a network on
inputs (:meth:`Layer.kernel`) is ``kernels/_evaluate.py``.

Which layout a network uses is decided once, before any computation, by folding each
layer's :attr:`Layer.full_spatial_input` rule from the output back to the input (see
:func:`~widebnn.kernels._evaluate.input_layout`); a network that ends in ``Flatten``
runs diagonal (cost ``O(|S|)`` per pair of inputs), one that pools globally runs
full (``O(|S|^2)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ._covariance import (
    Kernel as Kernel,
    Shape as Shape,
    _keep as _keep,
    pair_broadcast as pair_broadcast,
    position_variances as position_variances,
)
from ._evaluate import evaluate_kernel, input_layout as input_layout


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
        return evaluate_kernel(
            self,
            x1,
            x2,
            get,
            mask1=mask1,
            mask2=mask2,
            diagonal_spatial=diagonal_spatial,
            tile_entries=tile_entries,
            **kwargs,
        )


def stateless_init(key, input_shape):
    """``init`` of a layer without parameters: the shape is unchanged."""
    del key
    return input_shape, ()
