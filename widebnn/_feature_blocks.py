r"""Sufficient statistics of a GP on features, summed over row blocks and devices.

The statistics :math:`\Phi^\top\Phi`, :math:`\Phi^\top Y`, :math:`\sum Y^2` and
``N`` (plus :math:`\Psi^\top\Phi` for the NTK ensemble) are sums over the rows of
the data. They are accumulated block by block (the features of one block of rows
at a time, so ``N x m`` features never sit in memory); each block's rows are split
over the devices of a 1-D mesh with ``shard_map`` and the partial sums added with
``psum``. Only the mesh says which devices take part, so the same code sums over
the devices of several processes once the mesh spans them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from tqdm.auto import tqdm

from widebnn.kernels import FeatureMap

from . import _gp_core, _linalg

#: Rows per block by default: ``block_size * m`` feature entries sit in memory.
DEFAULT_BLOCK_SIZE = 1024

FEATURE_POSTERIOR_KINDS = ("nngp", "ntk", "ntkgp")

#: which features each kind needs; the first is the one the solve is done with.
FEATURE_NAMES = {"nngp": ("nngp",), "ntkgp": ("ntk",), "ntk": ("ntk", "nngp")}

ROWS = "rows"  # the mesh axis the rows of a block are split over


class FeatureStatistics(NamedTuple):
    r"""Sufficient statistics of the training data for a GP on features.

    With :math:`\Phi` ``(N, m)`` the features the solve is done with (NNGP features
    for ``"nngp"``, NTK features for ``"ntkgp"`` and ``"ntk"``):

    Attributes:
        gram: ``(m, m)`` :math:`\Phi^\top\Phi`.
        moment: ``(m, out)`` :math:`\Phi^\top Y`.
        target_sq: scalar :math:`\sum_{i,k} Y_{ik}^2`.
        num_points: scalar ``N`` (a float array, summed like the others).
        cross: ``(m, m_nngp)`` :math:`\Psi^\top\Phi` of the NTK and NNGP features
            for ``"ntk"``, else ``None``.
    """

    gram: jax.Array
    moment: jax.Array
    target_sq: jax.Array
    num_points: jax.Array
    cross: jax.Array | None = None


# --- checks -----------------------------------------------------------------------


def _check_fmap(fmap) -> None:
    if isinstance(fmap, FeatureMap) and fmap.method == "exact":
        raise ValueError(
            "fmap: method='exact' factors the kernel of each batch on its own, so "
            "its features of different row blocks, devices, or of training and test "
            "inputs are in different bases. Build the map with method='random', or "
            "use widebnn.gp.posterior for the exact kernel."
        )
    if not callable(fmap):
        raise TypeError(
            "fmap must be a feature map fmap(x, get=names) (widebnn.kernels."
            f"feature_map), got {type(fmap).__name__}."
        )


class _ByIdentity:
    """An unhashable feature map, hashed by identity so that it can be a static
    argument of the compiled block programs (compiled once per wrapper)."""

    def __init__(self, fmap):
        self.fmap = fmap

    def __call__(self, x, **kwargs):
        return self.fmap(x, **kwargs)


def hashable(fmap):
    """``fmap``, or a wrapper hashed by identity when ``fmap`` is unhashable."""
    try:
        hash(fmap)
    except TypeError:
        return _ByIdentity(fmap)
    return fmap


def check_block_size(block_size) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer):
        raise TypeError(f"block_size must be an integer >= 1, got {block_size!r}.")
    if block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size}.")
    return int(block_size)


def check_devices(devices) -> list:
    """The devices as a list (default ``jax.local_devices()``)."""
    if devices is None:
        return list(jax.local_devices())
    if isinstance(devices, jax.Device):
        devices = [devices]
    devices = list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(
            f"devices must be a non-empty sequence of jax.Device, got {devices!r}."
        )
    return devices


def _check_positive_diagonal(noise_var, diag_reg) -> None:
    """The Woodbury identity divides by ``noise_var + regulariser``: refuse 0."""
    if _linalg.is_traced(noise_var, diag_reg):
        return
    if float(noise_var) == 0 and float(diag_reg) == 0:
        raise ValueError(
            "noise_var must be > 0 (or diag_reg > 0) for a GP on features: the "
            "Woodbury identity divides by the total diagonal noise_var + regulariser "
            "(for an interpolating GP use widebnn.gp.posterior)."
        )


def check_data(fmap, x, y, get, noise_var, diag_reg, jitter_ladder, block_size):
    if get not in FEATURE_POSTERIOR_KINDS:
        raise ValueError(f"get must be one of {FEATURE_POSTERIOR_KINDS}, got {get!r}.")
    _check_fmap(fmap)
    x = _gp_core.check_inputs(x, "x_train")
    if not _linalg.is_traced(x) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("x_train contains NaN or inf.")
    y = _gp_core.check_targets(y, x, "x_train", "y_train")
    _gp_core.check_nonnegative(noise_var, "noise_var")
    _gp_core.check_nonnegative(diag_reg, "diag_reg")
    _check_positive_diagonal(noise_var, diag_reg)
    jitter_ladder = _linalg.check_jitter_ladder(jitter_ladder)
    return x, y, jitter_ladder, check_block_size(block_size)


# --- features of one block ----------------------------------------------------------


def _work_dtype(dtype) -> jnp.dtype:
    """float64 when JAX runs with x64, else the (floating) dtype given."""
    return jnp.promote_types(dtype, jnp.result_type(float))


def call_features(fmap, x, names, dtype, widths=None, what="x_train"):
    """``fmap(x, get=names)`` checked to be ``(n, m)`` arrays, cast to ``dtype``."""
    out = fmap(x, get=names)
    if not isinstance(out, tuple | list) or len(out) != len(names):
        raise ValueError(
            f"fmap(x, get={names}) must return a tuple of {len(names)} feature "
            f"arrays, got {type(out).__name__}."
        )
    for name, value in zip(names, out, strict=True):
        if value.ndim != 2 or value.shape[0] != x.shape[0] or value.shape[1] < 1:
            raise ValueError(
                f"fmap({what}): the {name} features must have shape (n, m) with "
                f"n = {x.shape[0]} and m >= 1, got {value.shape}. A GP needs one "
                "output per input: end the network with pooling or Flatten and a "
                "Dense readout."
            )
    if widths is not None:
        got = tuple(value.shape[1] for value in out)
        if got != widths:
            raise ValueError(
                f"fmap({what}) gave features of widths {got} for {names}, but the "
                f"training features have widths {widths}: train and test features "
                "must come from the same map (same network, key and dim)."
            )
    return tuple(jnp.asarray(value).astype(dtype) for value in out)


def row_mesh(devices) -> Mesh:
    """A 1-D mesh whose axis splits the rows of a block over ``devices``."""
    return Mesh(np.asarray(devices), (ROWS,))


def rows_per_block(block_size: int, num_points: int, num_devices: int) -> int:
    """``min(block_size, N)`` rounded up to a multiple of the device count."""
    rows = min(block_size, num_points)
    return -(-rows // num_devices) * num_devices


def _pad_rows(a: jax.Array, rows: int, fill: jax.Array) -> jax.Array:
    """``a`` with copies of ``fill`` (shape ``(1, ...)``) appended up to ``rows``."""
    missing = rows - a.shape[0]
    if missing == 0:
        return a
    return jnp.concatenate([a, jnp.repeat(fill, missing, axis=0)], axis=0)


def block_rows(x, y, index: int, rows: int):
    """Rows ``[index * rows, (index + 1) * rows)``, padded, and which are real.

    Padding repeats the first input (any valid input works: its features are
    multiplied by 0) and has zero targets.
    """
    start = index * rows
    xb, count = x[start : start + rows], min(rows, x.shape[0] - start)
    xb = _pad_rows(xb, rows, x[:1])
    valid = jnp.arange(rows) < count
    if y is None:
        return xb, valid
    yb = _pad_rows(y[start : start + rows], rows, jnp.zeros_like(y[:1]))
    return xb, yb, valid


def _stacked_blocks(x, y, rows: int, num_blocks: int):
    """``(num_blocks, rows, ...)`` stacks of the padded blocks of :func:`block_rows`
    (for ``lax.scan``)."""
    total = rows * num_blocks
    xs = _pad_rows(x, total, x[:1]).reshape(num_blocks, rows, *x.shape[1:])
    ys = _pad_rows(y, total, jnp.zeros_like(y[:1])).reshape(num_blocks, rows, -1)
    valid = (jnp.arange(total) < x.shape[0]).reshape(num_blocks, rows)
    return xs, ys, valid


def _block_statistics(fmap, names, dtype, x, y, valid):
    """One device's rows of a block: partial statistics, summed over the mesh."""
    features = call_features(fmap, x, names, dtype)
    keep = valid.astype(dtype)[:, None]
    solve = features[0] * keep
    y = y.astype(dtype) * keep
    stats = {
        "gram": solve.T @ solve,
        "moment": solve.T @ y,
        "target_sq": jnp.sum(y**2),
        "num_points": jnp.sum(keep),
    }
    if len(features) == 2:
        stats["cross"] = solve.T @ features[1]
    return jax.lax.psum(stats, ROWS)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _sharded_statistics(fmap, names, dtype, mesh, x, y, valid):
    """:func:`_block_statistics` with the rows of ``x, y, valid`` split over the
    mesh; compiled once per map, dtype, mesh and block shape."""
    return jax.shard_map(
        functools.partial(_block_statistics, fmap, names, dtype),
        mesh=mesh,
        in_specs=(PartitionSpec(ROWS),) * 3,
        out_specs=PartitionSpec(),
    )(x, y, valid)


def accumulate_statistics(
    fmap,
    x: jax.Array,
    y: jax.Array,
    get: str,
    *,
    block_size: int,
    devices: Sequence | None = None,
    progress: bool = False,
) -> FeatureStatistics:
    """Sums the statistics over row blocks, each block split over ``devices``.

    Concrete inputs run a Python loop over blocks (one compiled block program, a
    ``tqdm`` bar when ``progress`` and there is more than one block); traced
    inputs (inside ``jit``/``grad``) run ``lax.scan`` with each block's features
    rematerialised in the backward pass (``jax.checkpoint``), so gradients do not
    keep ``N x m`` features either. Both add the blocks in the same order.

    Args:
        fmap: ``fmap(x, get=names) -> tuple of (n, m)`` features.
        x: ``(N, ...)`` inputs.
        y: ``(N, out)`` targets.
        get: static; ``"nngp"``, ``"ntkgp"`` or ``"ntk"``.
        block_size: static; rows per block (rounded up to a multiple of the number
            of devices).
        devices: the devices the rows of a block are split over (default
            ``jax.local_devices()``).
        progress: show a progress bar (concrete inputs only).

    Returns:
        A :class:`FeatureStatistics` in float64 when x64 is on.
    """
    names = FEATURE_NAMES[get]
    mesh = row_mesh(check_devices(devices))
    dtype = _work_dtype(y.dtype)
    rows = rows_per_block(block_size, x.shape[0], mesh.size)
    num_blocks = -(-x.shape[0] // rows)
    block_fn = functools.partial(
        _sharded_statistics, hashable(fmap), names, dtype, mesh
    )
    if _linalg.is_traced(x, y):
        stacked = _stacked_blocks(x, y, rows, num_blocks)
        shapes = jax.eval_shape(block_fn, *(part[0] for part in stacked))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        remat = jax.checkpoint(block_fn)

        def add_block(total, block):
            return jax.tree.map(jnp.add, total, remat(*block)), None

        total, _ = jax.lax.scan(add_block, zeros, stacked)
    else:
        total = None
        bar = tqdm(
            range(num_blocks),
            desc="feature statistics",
            disable=not progress or num_blocks == 1,
        )
        for i in bar:
            part = block_fn(*block_rows(x, y, i, rows))
            total = part if total is None else jax.tree.map(jnp.add, total, part)
    return FeatureStatistics(**total)
