"""Tiled evaluation of a kernel matrix for inputs without spatial axes.

For inputs ``(N, C)`` every layer maps the kernel entry of a pair ``(i, j)`` using
only that pair (the entry, the two variances and, when ``x2`` is ``None``, whether
``i == j``). XLA on CPU does not fuse a layer such as the arc-cosine kernel into one
loop (an expensive intermediate with several consumers is materialised), so on a
2000 x 2000 kernel each layer makes several passes over 32 MB arrays and the call is
memory-bound. Evaluating the network on cache-sized tiles inside a ``lax.map`` keeps
every intermediate in cache; when ``x2`` is ``None`` only the tiles on and above the
diagonal are computed and the others are their transposes (half the work).

Exactness: diagonal tiles are evaluated with ``x2=None``, so layers that treat
``x1 is x2`` specially (``Dropout``, the exact diagonal of the arc-cosine kernels) see
the same thing as in the untiled call; off-diagonal tiles are cross kernels of
disjoint inputs. The assembled matrix is exactly symmetric.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ._kernel import Layer

#: entries of one tile (128 x 128; 128 KiB per float64 array): the fastest of
#: 2**12 ... 2**18 on a 2-core CPU (``benchmarks/kernels_fcn.py``).
DEFAULT_TILE_ENTRIES = 2**14
#: kernels with at most this many entries are computed in one piece.
MIN_TILED_ENTRIES = 2**16


def resolve_tile_entries(tile_entries) -> int:
    """Checks ``tile_entries`` (``None``: the default, ``0``: no tiling)."""
    if tile_entries is None:
        return DEFAULT_TILE_ENTRIES
    if isinstance(tile_entries, bool) or not isinstance(tile_entries, int | np.integer):
        raise TypeError(
            f"tile_entries must be a non-negative int or None, got {tile_entries!r}."
        )
    if tile_entries < 0:
        raise ValueError(f"tile_entries must be >= 0, got {tile_entries}.")
    return int(tile_entries)


def should_tile(x1, x2, names, tile_entries: int, *, masked: bool, kwargs) -> bool:
    """Whether :func:`tiled_kernel` applies: no spatial axes, no masks or extra
    keyword arguments, only ``nngp``/``ntk`` requested, and a large enough kernel."""
    if tile_entries == 0 or masked or kwargs or not set(names) <= {"nngp", "ntk"}:
        return False
    if x1.ndim != 2 or (x2 is not None and x2.ndim != 2):
        return False
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    return x1.shape[0] * n2 > max(MIN_TILED_ENTRIES, tile_entries)


def _pad_rows(x, n_rows):
    """Pads the batch axis to ``n_rows`` with copies of the first input (valid data,
    so padded rows never produce NaN; they are cut off afterwards)."""
    extra = n_rows - x.shape[0]
    if extra == 0:
        return x
    return jnp.concatenate([x, jnp.broadcast_to(x[:1], (extra, *x.shape[1:]))], 0)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def tiled_kernel(layer: Layer, x1, x2, names, tile_entries: int):
    """``layer.kernel(x1, x2, names)`` for inputs ``(N, C)``, tile by tile.

    Args:
        layer: a network whose kernel of a pair depends only on that pair.
        x1: ``(N1, C)`` inputs.
        x2: ``(N2, C)`` inputs or ``None`` (then only tiles on and above the
            diagonal are computed).
        names: tuple of ``"nngp"``/``"ntk"``.
        tile_entries: about how many kernel entries one tile holds (> 0).

    Returns:
        A tuple of ``(N1, N2)`` arrays in the order of ``names``.

    Jitted with the layer static, so that eager calls on a network reuse the
    compiled loop (under an outer ``jit`` this is inlined).
    """
    if x2 is None:
        return _symmetric(layer, x1, names, tile_entries)
    return _rows(layer, x1, x2, names, tile_entries)


def _untiled(layer, x1, x2, names):
    return layer.kernel(x1, x2, names, tile_entries=0)


def _rows(layer, x1, x2, names, tile_entries):
    n1, n2 = x1.shape[0], x2.shape[0]
    rows = max(1, min(n1, tile_entries // n2))
    n_tiles = math.ceil(n1 / rows)
    blocks = _pad_rows(x1, n_tiles * rows).reshape(n_tiles, rows, *x1.shape[1:])
    tiles = jax.lax.map(lambda xi: _untiled(layer, xi, x2, names), blocks)
    return tuple(t.reshape(n_tiles * rows, n2)[:n1] for t in tiles)


def _symmetric(layer, x, names, tile_entries):
    n = x.shape[0]
    size = max(1, min(n, math.isqrt(tile_entries)))
    n_tiles = math.ceil(n / size)
    blocks = _pad_rows(x, n_tiles * size).reshape(n_tiles, size, *x.shape[1:])
    diagonal = jax.lax.map(lambda xi: _untiled(layer, xi, None, names), blocks)
    upper = [(a, b) for a in range(n_tiles) for b in range(a + 1, n_tiles)]
    if upper:
        rows_of = np.array([a for a, _ in upper], dtype=np.int32)
        cols_of = np.array([b for _, b in upper], dtype=np.int32)
        off_diagonal = jax.lax.map(
            lambda ab: _untiled(layer, blocks[ab[0]], blocks[ab[1]], names),
            (rows_of, cols_of),
        )
    # position of tile (a, b) in concat([diagonal, upper, upper transposed])
    index = np.zeros((n_tiles, n_tiles), dtype=np.int32)
    index[np.arange(n_tiles), np.arange(n_tiles)] = np.arange(n_tiles)
    for p, (a, b) in enumerate(upper):
        index[a, b] = n_tiles + p
        index[b, a] = n_tiles + len(upper) + p
    outs = []
    for k in range(len(names)):
        parts = [diagonal[k]]
        if upper:
            parts += [off_diagonal[k], jnp.swapaxes(off_diagonal[k], 1, 2)]
        tiles = jnp.concatenate(parts, 0)[index]  # (B, B, size, size)
        full = tiles.transpose(0, 2, 1, 3).reshape(n_tiles * size, n_tiles * size)
        outs.append(full[:n, :n])
    return tuple(outs)
