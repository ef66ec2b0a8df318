"""Tiled evaluation of a kernel matrix over pairs of inputs.

Every layer maps the kernel of a pair of inputs ``(i, j)`` (for spatial inputs, the
``(S, S', ...)`` covariances of the pair) using only that pair (its entries, the two
inputs' own covariances and, when ``x2`` is ``None``, whether ``i == j``).

XLA on CPU does not fuse a layer such as the arc-cosine kernel into one loop (an
expensive intermediate with several consumers is materialised), so on a 2000 x 2000
kernel each layer makes several passes over 32 MB arrays, and a CNN's
``(N, N, H, H', W, W')`` covariances are larger still: the call is memory-bound and
its working set is many times the result. Evaluating the network on cache-sized
tiles inside a ``lax.map`` keeps every intermediate in cache; when ``x2`` is
``None`` only the tiles on and above the diagonal are computed and the others are
their transposes (half the work; in the full spatial layout the transpose also swaps
the two positions of every axis).

Exactness: diagonal tiles are evaluated with ``x2=None``, so layers that treat
``x1 is x2`` specially (``Dropout``, the exact diagonal of the arc-cosine kernels) see
the same thing as in the untiled call; off-diagonal tiles are cross kernels of
disjoint inputs. The assembled matrix is exactly symmetric.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

#: ``evaluate(layer, x1, x2, mask1, mask2, names, diagonal_spatial) -> tuple`` of
#: ``(n1, n2, *layout)`` arrays: the untiled evaluation of one tile, on checked
#: inputs (``kernels/_evaluate.py`` passes its own; this module imports none).
TileEvaluator = Callable[..., tuple]

#: kernel entries of one tile without spatial axes (128 x 128 pairs; 128 KiB per
#: float64 array): the fastest of 2**12 ... 2**18 on a 2-core CPU
#: (``benchmarks/kernels_fcn.py``).
DEFAULT_TILE_ENTRIES = 2**14
#: kernel entries of one tile with spatial axes (pairs x entries per pair): 16 pairs
#: of 8x8 images in full layout; the fastest of 2**14 ... 2**20 on the CNN of
#: ``benchmarks/kernels_cnn.py``.
DEFAULT_SPATIAL_TILE_ENTRIES = 2**16
#: by default, kernels with at most this many entries are computed in one piece
#: (without / with spatial axes); tiling costs the compilation of a loop, which
#: pays off only on large kernels. An explicit ``tile_entries`` tiles any kernel
#: larger than one tile.
MIN_TILED_ENTRIES = 2**16
MIN_TILED_ENTRIES_SPATIAL = 2**22


def resolve_tile_entries(tile_entries, spatial: bool) -> int:
    """Checks ``tile_entries`` (``None``: the default, ``0``: no tiling)."""
    if tile_entries is None:
        return DEFAULT_SPATIAL_TILE_ENTRIES if spatial else DEFAULT_TILE_ENTRIES
    if isinstance(tile_entries, bool) or not isinstance(tile_entries, int | np.integer):
        raise TypeError(
            f"tile_entries must be a non-negative int or None, got {tile_entries!r}."
        )
    if tile_entries < 0:
        raise ValueError(f"tile_entries must be >= 0, got {tile_entries}.")
    return int(tile_entries)


def pair_entries(x1, full_layout: bool) -> int:
    """Kernel entries per pair of inputs in the input layout: ``P**2`` for ``P``
    positions kept in full, ``P`` in diagonal layout, 1 without spatial axes."""
    positions = math.prod(x1.shape[1:-1])
    return positions**2 if full_layout else positions


def should_tile(x1, x2, names, tile_entries, *, per_pair: int, kwargs) -> bool:
    """Whether :func:`tiled_kernel` applies: no extra keyword arguments, only
    ``nngp``/``ntk`` requested, and a kernel of more than one tile (with the default
    ``tile_entries=None``: more than ``MIN_TILED_ENTRIES[_SPATIAL]`` entries)."""
    if tile_entries == 0 or kwargs or not set(names) <= {"nngp", "ntk"}:
        return False
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    if x1.shape[0] * n2 <= 1:
        return False
    spatial = x1.ndim > 2
    if tile_entries is None:
        minimum = MIN_TILED_ENTRIES_SPATIAL if spatial else MIN_TILED_ENTRIES
    else:
        minimum = tile_entries
    return x1.shape[0] * n2 * per_pair > minimum


def _pad_rows(x, n_rows):
    """Pads the batch axis to ``n_rows`` with copies of the first input (valid data,
    so padded rows never produce NaN; they are cut off afterwards)."""
    if x is None:
        return None
    extra = n_rows - x.shape[0]
    if extra == 0:
        return x
    return jnp.concatenate([x, jnp.broadcast_to(x[:1], (extra, *x.shape[1:]))], 0)


def _blocks(x, n_tiles, size):
    """``(N, ...)`` -> ``(n_tiles, size, ...)``, padded; ``None`` stays ``None``."""
    if x is None:
        return None
    return _pad_rows(x, n_tiles * size).reshape(n_tiles, size, *x.shape[1:])


@functools.partial(jax.jit, static_argnums=(0, 1, 6, 7, 8))
def tiled_kernel(
    evaluate: TileEvaluator,
    layer,
    x1,
    x2,
    mask1,
    mask2,
    names,
    pairs_per_tile: int,
    diagonal_spatial: bool,
):
    """``evaluate(layer, x1, x2, ...)`` evaluated tile by tile.

    Args:
        evaluate: static; the untiled evaluation of one tile (checked inputs).
        layer: a network whose kernel of a pair of inputs depends only on that pair
            (true of every ``widebnn.kernels`` layer).
        x1: ``(N1, *S, C)`` inputs.
        x2: ``(N2, *S, C)`` inputs or ``None`` (then only tiles on and above the
            diagonal are computed).
        mask1: ``(N1, *S)`` padding mask or ``None``.
        mask2: ``(N2, *S)`` padding mask or ``None``.
        names: static tuple of ``"nngp"``/``"ntk"``.
        pairs_per_tile: static; about how many pairs of inputs one tile holds.
        diagonal_spatial: static; as in :meth:`Layer.kernel`.

    Returns:
        A tuple of ``(N1, N2, *layout)`` arrays in the order of ``names``.

    Jitted with the layer static, so that eager calls on a network reuse the
    compiled loop (under an outer ``jit`` this is inlined).
    """

    def untiled(a, b, mask_a, mask_b):
        return evaluate(layer, a, b, mask_a, mask_b, names, diagonal_spatial)

    if x2 is None:
        return _symmetric(
            untiled, x1, mask1, pairs_per_tile, len(names), diagonal_spatial
        )
    return _rows(untiled, x1, x2, mask1, mask2, pairs_per_tile)


def _rows(untiled, x1, x2, mask1, mask2, pairs_per_tile):
    n1, n2 = x1.shape[0], x2.shape[0]
    rows = max(1, min(n1, pairs_per_tile // n2))
    n_tiles = math.ceil(n1 / rows)
    tiles = jax.lax.map(
        lambda xm: untiled(xm[0], x2, xm[1], mask2),
        (_blocks(x1, n_tiles, rows), _blocks(mask1, n_tiles, rows)),
    )
    return tuple(t.reshape(n_tiles * rows, *t.shape[2:])[:n1] for t in tiles)


def _transpose_pairs(tile, diagonal_spatial):
    """The tile of pairs ``(j, i)`` from that of ``(i, j)``: swap the batch axes and,
    in full layout, the two positions of every spatial axis."""
    rest = tile.ndim - 3  # (tiles, rows, cols, *layout)
    axes = [0, 2, 1]
    if diagonal_spatial:
        axes += list(range(3, 3 + rest))
    else:
        for k in range(rest // 2):
            axes += [4 + 2 * k, 3 + 2 * k]
    return tile.transpose(axes)


def _symmetric(untiled, x, mask, pairs_per_tile, n_outputs, diagonal_spatial):
    n = x.shape[0]
    size = max(1, min(n, math.isqrt(pairs_per_tile)))
    n_tiles = math.ceil(n / size)
    blocks, mask_blocks = _blocks(x, n_tiles, size), _blocks(mask, n_tiles, size)
    diagonal = jax.lax.map(
        lambda xm: untiled(xm[0], None, xm[1], None),
        (blocks, mask_blocks),
    )
    upper = [(a, b) for a in range(n_tiles) for b in range(a + 1, n_tiles)]
    if upper:
        rows_of = np.array([a for a, _ in upper], dtype=np.int32)
        cols_of = np.array([b for _, b in upper], dtype=np.int32)

        def off(ab):
            a, b = ab
            m1 = None if mask is None else mask_blocks[a]
            m2 = None if mask is None else mask_blocks[b]
            return untiled(blocks[a], blocks[b], m1, m2)

        off_diagonal = jax.lax.map(off, (rows_of, cols_of))
    # position of tile (a, b) in concat([diagonal, upper, upper transposed])
    index = np.zeros((n_tiles, n_tiles), dtype=np.int32)
    index[np.arange(n_tiles), np.arange(n_tiles)] = np.arange(n_tiles)
    for p, (a, b) in enumerate(upper):
        index[a, b] = n_tiles + p
        index[b, a] = n_tiles + len(upper) + p
    outs = []
    for k in range(n_outputs):
        parts = [diagonal[k]]
        if upper:
            parts += [
                off_diagonal[k],
                _transpose_pairs(off_diagonal[k], diagonal_spatial),
            ]
        tiles = jnp.concatenate(parts, 0)[index]  # (B, B, size, size, *layout)
        layout = tiles.shape[4:]
        axes = (0, 2, 1, 3, *range(4, tiles.ndim))
        full = tiles.transpose(axes).reshape(n_tiles * size, n_tiles * size, *layout)
        outs.append(full[:n, :n])
    return tuple(outs)
