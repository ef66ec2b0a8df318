"""Prototype (proposed for ``widebnn.kernels``): tiled evaluation of a kernel matrix.

Not library code: this is the measured prototype of a change proposed for
``Layer.kernel`` (see ``benchmarks/README.md``, "Proposed changes"). It is used by
``kernels_fcn.py`` to show what the change buys; once the library has it, delete this
file and call ``layer.kernel`` directly.

Why. For inputs without spatial axes every layer maps the kernel entry of a pair of
inputs ``(i, j)`` using only that pair (the entry, the two variances, and for
``x1 is x2`` whether ``i == j``). XLA:CPU does not fuse an arc-cosine layer into one
loop (an expensive intermediate with several consumers is materialised), so on a
2000 x 2000 kernel each layer makes ~8 passes over 32 MB arrays and the untiled call
is memory-bound. Evaluating the same network on cache-sized tiles inside a
``lax.map`` keeps every intermediate in cache, and for ``x2 is None`` only the tiles
on and above the diagonal are computed (the others are their transposes): about half
of the work.

Exactness. Diagonal tiles are evaluated with ``x2=None``, so layers that treat
``x1 is x2`` specially (Dropout, the exact ``theta = 0`` diagonal of the arc-cosine
kernels) see the same thing as in the untiled call. Off-diagonal tiles are cross
kernels of disjoint inputs. The result is exactly symmetric.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

#: entries of one tile (rows x columns): 128 x 128, 128 KiB per float64 array;
#: the best of 2**12 ... 2**18 in CPU time on the 2-core benchmark machine.
DEFAULT_TILE_ENTRIES = 2**14


def _pad_rows(x, n_rows):
    """Pads the batch axis to ``n_rows`` with copies of the first input (valid data)."""
    extra = n_rows - x.shape[0]
    if extra == 0:
        return x
    return jnp.concatenate([x, jnp.broadcast_to(x[:1], (extra, *x.shape[1:]))], 0)


def tiled_kernel(layer, x1, x2=None, get=("nngp", "ntk"), *, tile_entries=None):
    """``layer.kernel(x1, x2, get)`` for inputs ``(N, d)``, evaluated tile by tile.

    Args:
        layer: a network whose output has no spatial axes.
        x1: ``(N1, d)`` inputs.
        x2: ``(N2, d)`` inputs or ``None`` (then only tiles on and above the
            diagonal are computed).
        get: ``"nngp"``, ``"ntk"`` or a tuple of them.
        tile_entries: static; about how many kernel entries one tile holds.

    Returns:
        The same arrays as ``layer.kernel(x1, x2, get)``.
    """
    names = (get,) if isinstance(get, str) else tuple(get)
    tile_entries = tile_entries or DEFAULT_TILE_ENTRIES
    x1 = jnp.asarray(x1)
    if x2 is None:
        out = _symmetric(layer, x1, names, tile_entries)
    else:
        out = _rows(layer, x1, jnp.asarray(x2), names, tile_entries)
    return out[0] if isinstance(get, str) else out


def _rows(layer, x1, x2, names, tile_entries):
    n1, n2 = x1.shape[0], x2.shape[0]
    rows = max(1, min(n1, tile_entries // n2))
    n_tiles = math.ceil(n1 / rows)
    xb = _pad_rows(x1, n_tiles * rows).reshape(n_tiles, rows, *x1.shape[1:])
    tiles = jax.lax.map(lambda xi: layer.kernel(xi, x2, names), xb)
    return tuple(t.reshape(n_tiles * rows, n2)[:n1] for t in tiles)


def _symmetric(layer, x, names, tile_entries):
    n = x.shape[0]
    size = max(1, min(n, math.isqrt(tile_entries)))
    n_tiles = math.ceil(n / size)
    xb = _pad_rows(x, n_tiles * size).reshape(n_tiles, size, *x.shape[1:])
    diag = jax.lax.map(lambda xi: layer.kernel(xi, None, names), xb)
    upper = [(a, b) for a in range(n_tiles) for b in range(a + 1, n_tiles)]
    if upper:
        ia = np.array([p[0] for p in upper])
        ib = np.array([p[1] for p in upper])
        off = jax.lax.map(
            lambda ab: layer.kernel(xb[ab[0]], xb[ab[1]], names), (ia, ib)
        )
    # index of tile (a, b) in concat([diag, off, off transposed])
    index = np.zeros((n_tiles, n_tiles), dtype=np.int32)
    for a in range(n_tiles):
        index[a, a] = a
    for p, (a, b) in enumerate(upper):
        index[a, b] = n_tiles + p
        index[b, a] = n_tiles + len(upper) + p
    outs = []
    for k, name in enumerate(names):
        parts = [diag[k]]
        if upper:
            parts += [off[k], jnp.swapaxes(off[k], 1, 2)]
        if name not in ("nngp", "ntk"):
            raise ValueError(f"tiled_kernel supports nngp and ntk, got {name!r}.")
        stacked = jnp.concatenate(parts, 0)[index]  # (B, B, size, size)
        full = stacked.transpose(0, 2, 1, 3).reshape(n_tiles * size, n_tiles * size)
        outs.append(full[:n, :n])
    return tuple(outs)
