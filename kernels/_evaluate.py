"""Evaluating a network's kernel on inputs: checks, layout, tiling, evaluation.

:meth:`Layer.kernel` is :func:`evaluate_kernel`: the inputs are checked once
(:func:`~widebnn.kernels._inputs.checked_pair`, the same checks the feature maps
use), the input layout is chosen by folding the layers' layout rules
(:func:`input_layout`), and the kernel is evaluated either in one piece
(:func:`untiled_kernel`) or tile by tile (``kernels/_tiling.py``, which calls
:func:`untiled_kernel` on each tile).

Imports go one way: ``_covariance`` <- ``_inputs`` <- ``_evaluate`` <- ``_kernel``,
and ``_tiling`` imports none of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._inputs import checked_pair, kernel_of_inputs, validate_get
from ._tiling import pair_entries, resolve_tile_entries, should_tile, tiled_kernel


def input_layout(layer, needs_full_output: bool) -> bool:
    """Whether ``layer`` needs the full position-pair covariance of its input.

    Args:
        layer: the network (a :class:`~widebnn.kernels.Layer`).
        needs_full_output: whether the caller wants every pair of output positions.

    Returns:
        ``True`` if the input kernel must keep every pair of positions.
    """
    needs = layer.full_spatial_input(needs_full_output)
    if isinstance(needs, tuple):
        return any(needs)
    return bool(needs)


def evaluate_kernel(
    layer,
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
    """:meth:`Layer.kernel` (arguments, returns and errors as documented there)."""
    names = validate_get(get)
    x1, x2, mask1, mask2 = checked_pair(x1, x2, mask1, mask2)
    out = checked_kernel(
        layer,
        x1,
        x2,
        mask1,
        mask2,
        names,
        diagonal_spatial=diagonal_spatial,
        tile_entries=tile_entries,
        **kwargs,
    )
    return out[0] if isinstance(get, str) else out


def checked_kernel(
    layer,
    x1,
    x2,
    mask1,
    mask2,
    names: tuple[str, ...],
    *,
    diagonal_spatial: bool = False,
    tile_entries: int | None = None,
    **kwargs,
) -> tuple:
    """The kernels ``names`` of inputs already checked by ``checked_pair``.

    Tiles the evaluation when :func:`~widebnn.kernels._tiling.should_tile` says
    so (only ``nngp``/``ntk``, no extra keyword arguments, a large kernel).

    Returns:
        A tuple of arrays in the order of ``names``.
    """
    tile = resolve_tile_entries(tile_entries, spatial=x1.ndim > 2)
    per_pair = pair_entries(x1, input_layout(layer, not diagonal_spatial))
    if should_tile(x1, x2, names, tile_entries, per_pair=per_pair, kwargs=kwargs):
        return tiled_kernel(
            untiled_kernel,
            layer,
            x1,
            x2,
            mask1,
            mask2,
            names,
            max(1, tile // per_pair),
            diagonal_spatial,
        )
    return untiled_kernel(
        layer, x1, x2, mask1, mask2, names, diagonal_spatial, **kwargs
    )


def untiled_kernel(
    layer, x1, x2, mask1, mask2, names, diagonal_spatial: bool, **kwargs
) -> tuple:
    """The kernels ``names`` in one piece, on checked inputs (no tiling).

    Args:
        layer: the network.
        x1: ``(N1, *S, C)`` checked inputs.
        x2: ``(N2, *S, C)`` checked inputs, or ``None`` for ``x1`` itself.
        mask1: ``(N1, *S)`` boolean mask or ``None``.
        mask2: ``(N2, *S)`` boolean mask or ``None``.
        names: static tuple of ``"nngp"``, ``"ntk"``, ``"cov1"``, ``"cov2"``.
        diagonal_spatial: static; as in :meth:`Layer.kernel`.
        **kwargs: passed to every layer's ``kernel_fn``.

    Returns:
        A tuple of arrays in the order of ``names``.

    Raises:
        ValueError: if the output keeps spatial axes but the network ran in
            diagonal layout while ``diagonal_spatial`` is ``False``.
    """
    k = kernel_of_inputs(
        x1,
        x2,
        mask1,
        mask2,
        diagonal_spatial=not input_layout(layer, not diagonal_spatial),
        compute_ntk="ntk" in names,
    )
    out = layer.kernel_fn(k, **kwargs)
    if out.n_spatial > 0 and out.diagonal_spatial and not diagonal_spatial:
        raise ValueError(
            f"{layer.name}: the output keeps spatial axes but the network was run "
            "in diagonal layout; pass diagonal_spatial=True."
        )
    values = {
        "nngp": out.nngp,
        "ntk": out.ntk,
        "cov1": out.cov1,
        "cov2": out.cov1 if out.cov2 is None else out.cov2,
    }
    return tuple(values[name] for name in names)
