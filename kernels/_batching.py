"""Large kernel matrices in tiles, sharded over devices, resumable from disk.

``batched(kernel, batch_size)`` cuts the ``(N1, N2)`` pairs of inputs into square
tiles of ``batch_size x batch_size`` pairs (ragged edges are padded, so no
divisibility rule), computes ``mesh.size`` tiles at a time, one per device, with
``jax.shard_map``, and assembles the result in host memory. For ``x2=None`` only
the tiles on and above the diagonal are computed; the others are their transposes.
With ``checkpoint_dir``, every finished tile is an entry ``tile-<i>-<j>.npz`` of a
checkpoint store (``kernels/_store.py``: atomic writes, checksums, no pickle) whose
fingerprint has four parts:

* ``network``: rounded digests of the requested kernels on fixed pseudo-random
  probe inputs of the inputs' trailing shape and dtype (unmasked), computed by the
  same compiled tile function (one tile group of extra work per call);
* ``inputs``: exact digests of ``x1`` and ``x2``;
* ``masks``: exact digests of ``mask1`` and ``mask2``;
* ``settings``: ``batch_size``, ``get``, symmetry, the keyword arguments and the
  widebnn version.

A later call with ``resume=True`` and the same fingerprint loads the saved tiles
and computes only the missing ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from ._checks import check_positive_int
from ._inputs import validate_get
from ._kernel import Layer
from ._store import Store, hash_exact, hash_rounded, jsonable, package_version

_PROBE_SEED = 20240611
_PROBE_ENTRIES = 8  # probe digests cover the first 8 x 8 pairs of a tile


def _pad_rows(array, size):
    """Pads axis 0 to ``size`` with copies of the first row (valid inputs)."""
    if array is None or array.shape[0] == size:
        return array
    filler = np.repeat(array[:1], size - array.shape[0], axis=0)
    return np.concatenate([array, filler], axis=0)


def _transpose_axes(rest_ndim: int, diagonal_spatial: bool) -> tuple[int, ...]:
    """Axes that turn a tile ``k(a, b)`` into ``k(b, a)``.

    Swaps the batch pair and, in full spatial layout ``(S1, S1', S2, S2', ...)``,
    each position pair.
    """
    axes = [1, 0]
    if diagonal_spatial:
        return tuple(axes + list(range(2, 2 + rest_ndim)))
    for pair in range(rest_ndim // 2):
        axes += [3 + 2 * pair, 2 + 2 * pair]
    return tuple(axes)


class BatchedKernel:
    """A kernel computed in sharded tiles; build it with :func:`batched`.

    Attributes:
        batch_size: side of a square tile.
        mesh: the :class:`jax.sharding.Mesh` whose devices compute tiles together.
        checkpoint_dir: folder of saved tiles, or ``None``.
        resume: whether the first call continues the tiles saved in
            ``checkpoint_dir`` (later calls always continue the folder the first
            call opened).
        progress: whether a progress bar is shown.
    """

    def __init__(self, kernel, batch_size, mesh, checkpoint_dir, resume, progress):
        self._kernel = kernel
        self.batch_size = batch_size
        self.mesh = mesh
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.progress = progress
        self._spec = PartitionSpec(tuple(mesh.axis_names))
        self._compiled = {}

    def _tile_fn(self, names, symmetric, has_masks, kwargs):
        """The jitted ``shard_map`` that computes one tile per device."""
        try:
            key = (names, symmetric, has_masks, tuple(sorted(kwargs.items())))
            hash(key)
        except TypeError:
            key = None
        if key is not None and key in self._compiled:
            return self._compiled[key]
        kernel = self._kernel

        def tile(*args):
            if symmetric:
                a, b = args[0], None
                mask_a, mask_b = (args[1] if has_masks else None), None
            else:
                a, b = args[0], args[1]
                mask_a, mask_b = args[2:] if has_masks else (None, None)
            if isinstance(kernel, Layer):
                return kernel.kernel(
                    a, b, get=names, mask1=mask_a, mask2=mask_b, **kwargs
                )
            extra = dict(kwargs)
            if has_masks:
                extra.update(mask1=mask_a, mask2=mask_b)
            out = kernel(a, b, names, **extra)
            return tuple(out) if isinstance(out, tuple | list) else (out,)

        n_args = (1 if symmetric else 2) * (2 if has_masks else 1)
        fn = jax.jit(
            jax.shard_map(
                tile,
                mesh=self.mesh,
                in_specs=(self._spec,) * n_args,
                out_specs=self._spec,
            )
        )
        if key is not None:
            self._compiled[key] = fn
        return fn

    def __call__(
        self,
        x1,
        x2=None,
        get: str | Sequence[str] = ("nngp", "ntk"),
        *,
        mask1=None,
        mask2=None,
        **kwargs,
    ):
        """Computes ``kernel(x1, x2, get)`` tile by tile.

        Args:
            x1: ``(N1, ...)`` inputs.
            x2: ``(N2, ...)`` inputs, or ``None`` for ``x1`` (only tiles on and
                above the diagonal are computed).
            get: ``"nngp"``, ``"ntk"`` or a tuple of them.
            mask1: ``(N1, *S)`` boolean padding mask or ``None``; tiled with ``x1``.
            mask2: likewise for ``x2``.
            **kwargs: static keyword arguments for the kernel (e.g.
                ``diagonal_spatial=True``), the same for every tile.

        Returns:
            The array(s) of the unbatched call, ``(N1, N2, *layout)`` each.

        Raises:
            ValueError: on bad inputs, or a ``checkpoint_dir`` holding tiles of a
                different computation.
        """
        names = validate_get(get)
        for name in names:
            if name not in ("nngp", "ntk"):
                raise ValueError(f"batched computes 'nngp' and 'ntk', not {name!r}.")
        x1 = np.asarray(x1)
        symmetric = x2 is None
        if symmetric and mask2 is not None:
            raise ValueError("mask2 was given but x2 is None; pass x2 as well.")
        x2 = x1 if symmetric else np.asarray(x2)
        if x1.ndim < 2 or x2.ndim < 2:
            raise ValueError(
                f"x1 and x2 must have shape (N, ..., channels), got {x1.shape} and "
                f"{x2.shape}."
            )
        if x1.dtype != x2.dtype:
            dtype = np.result_type(x1.dtype, x2.dtype)
            x1, x2 = x1.astype(dtype), x2.astype(dtype)
        has_masks = mask1 is not None or mask2 is not None
        m1 = None if mask1 is None else np.asarray(mask1, bool)
        m2 = m1 if symmetric else (None if mask2 is None else np.asarray(mask2, bool))
        if has_masks:
            m1 = np.zeros(x1.shape[:-1], bool) if m1 is None else m1
            m2 = np.zeros(x2.shape[:-1], bool) if m2 is None else m2
        n1, n2 = x1.shape[0], x2.shape[0]
        size = min(self.batch_size, max(n1, n2))
        rows, cols = -(-n1 // size), -(-n2 // size)
        if symmetric:
            tiles = [(i, j) for i in range(rows) for j in range(i, rows)]
        else:
            tiles = [(i, j) for i in range(rows) for j in range(cols)]
        x1p, x2p = _pad_rows(x1, rows * size), _pad_rows(x2, cols * size)
        m1p, m2p = _pad_rows(m1, rows * size), _pad_rows(m2, cols * size)

        diag_fn = self._tile_fn(names, True, has_masks, kwargs) if symmetric else None
        cross_fn = self._tile_fn(names, False, has_masks, kwargs)
        sharding = NamedSharding(self.mesh, self._spec)
        probe = jax.eval_shape(
            cross_fn,
            *[
                jax.ShapeDtypeStruct(
                    (self.mesh.size * size, *a.shape[1:]), a.dtype, sharding=sharding
                )
                for a in ([x1p, x2p] + ([m1p, m2p] if has_masks else []))
            ],
        )
        rest = {n: p.shape[2:] for n, p in zip(names, probe, strict=True)}
        dtypes = {n: p.dtype for n, p in zip(names, probe, strict=True)}
        outputs = {n: np.empty((n1, n2, *rest[n]), dtypes[n]) for n in names}
        axes = {
            n: _transpose_axes(len(rest[n]), bool(kwargs.get("diagonal_spatial")))
            for n in names
        }

        def place(i, j, arrays):
            r0, c0 = i * size, j * size
            r1, c1 = min(r0 + size, n1), min(c0 + size, n2)
            for n in names:
                block = arrays[n]
                outputs[n][r0:r1, c0:c1] = block[: r1 - r0, : c1 - c0]
                if symmetric and i != j:
                    outputs[n][c0:c1, r0:r1] = np.transpose(block, axes[n])[
                        : c1 - c0, : r1 - r0
                    ]

        store = self._open_store(
            (cross_fn, diag_fn),
            sharding,
            (x1, None if symmetric else x2),
            (m1, None if symmetric else m2),
            names,
            size,
            kwargs,
        )
        todo = []
        for i, j in tiles:
            name = f"tile-{i}-{j}"
            if store is not None:
                expected = {n: ((size, size, *rest[n]), dtypes[n]) for n in names}
                arrays = store.load(name, expected)
                if arrays is not None:
                    place(i, j, arrays)
                    continue
            todo.append((i, j, name))

        bar = tqdm(
            total=len(tiles),
            initial=len(tiles) - len(todo),
            desc="kernel tiles",
            disable=not self.progress,
        )
        pending = None
        diagonal = [t for t in todo if t[0] == t[1]] if symmetric else []
        off_diagonal = [t for t in todo if not (symmetric and t[0] == t[1])]
        groups = [(diag_fn, g) for g in _groups(diagonal, self.mesh.size)]
        groups += [(cross_fn, g) for g in _groups(off_diagonal, self.mesh.size)]
        try:
            for fn, group in groups:
                padded = group + [group[-1]] * (self.mesh.size - len(group))
                args = [x1p[_tile_rows(padded, 0, size)]]
                if fn is cross_fn:
                    args.append(x2p[_tile_rows(padded, 1, size)])
                if has_masks:
                    args.append(m1p[_tile_rows(padded, 0, size)])
                    if fn is cross_fn:
                        args.append(m2p[_tile_rows(padded, 1, size)])
                assert fn is not None  # diag_fn is None only when x2 is given
                result = fn(*[jax.device_put(a, sharding) for a in args])
                if pending is not None:
                    self._finish(*pending, store, names, size, place, bar)
                pending = (group, result)
            if pending is not None:
                self._finish(*pending, store, names, size, place, bar)
        finally:
            bar.close()
        values = tuple(jnp.asarray(outputs[n]) for n in names)
        return values[0] if isinstance(get, str) else values

    @staticmethod
    def _finish(group, result, store, names, size, place, bar):
        host = [np.asarray(r) for r in result]
        for k, (i, j, name) in enumerate(group):
            arrays = {
                n: h[k * size : (k + 1) * size]
                for n, h in zip(names, host, strict=True)
            }
            if store is not None:
                store.save(name, arrays)
            place(i, j, arrays)
            bar.update(1)

    def _open_store(self, fns, sharding, inputs, masks, names, size, kwargs):
        """The checkpoint store of this call, or ``None`` without a folder."""
        if self.checkpoint_dir is None:
            return None
        (x1, x2), (m1, m2) = inputs, masks

        def fingerprint():
            settings = {
                "batch_size": size,
                "get": list(names),
                "symmetric": x2 is None,
                "kwargs": {k: jsonable(v) for k, v in sorted(kwargs.items())},
                "widebnn_version": package_version(),
            }
            return {
                "network": self._probe(fns, sharding, inputs, masks, names, size),
                "inputs": {"x1": hash_exact(x1), "x2": hash_exact(x2)},
                "masks": {"mask1": hash_exact(m1), "mask2": hash_exact(m2)},
                "settings": settings,
            }

        store = Store(
            self.checkpoint_dir,
            fingerprint,
            resume=self.resume,
            argument="checkpoint_dir",
            kind="widebnn.kernels.batched",
        )
        self.resume = True  # later calls continue the folder this call opened
        return store

    def _probe(self, fns, sharding, inputs, masks, names, size):
        """Digests of the kernel on fixed pseudo-random inputs (no padding).

        One group of tiles of the same compiled function as the real tiles, on
        rows alternately of scale 1 and 3; the first ``8 x 8`` pairs are hashed.
        """
        (cross_fn, diag_fn), (x1, x2) = fns, inputs
        rows = self.mesh.size * size
        rng = np.random.default_rng(_PROBE_SEED)

        def like(a):
            scale = np.where(np.arange(rows) % 2, 3.0, 1.0)
            scale = scale.reshape(-1, *[1] * (a.ndim - 1))
            return (rng.standard_normal((rows, *a.shape[1:])) * scale).astype(a.dtype)

        symmetric = x2 is None
        args = [like(x1)] if symmetric else [like(x1), like(x2)]
        if masks[0] is not None:
            args += [np.zeros((rows, *masks[0].shape[1:]), bool)]
            if not symmetric:
                args += [np.zeros((rows, *masks[1].shape[1:]), bool)]
        fn = diag_fn if symmetric else cross_fn
        result = fn(*[jax.device_put(a, sharding) for a in args])
        m = min(size, _PROBE_ENTRIES)
        return {
            n: hash_rounded(np.asarray(r)[:m, :m])
            for n, r in zip(names, result, strict=True)
        }


def _groups(items, n):
    return [items[k : k + n] for k in range(0, len(items), n)]


def _tile_rows(group, which, size):
    return np.concatenate(
        [np.arange(t[which] * size, (t[which] + 1) * size) for t in group]
    )


def batched(
    kernel,
    batch_size: int,
    *,
    mesh: jax.sharding.Mesh | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> BatchedKernel:
    """Computes a large kernel matrix in tiles, over every local device.

    Tiles are ``batch_size x batch_size`` pairs of inputs; the inputs are padded
    (with copies of a real input) to whole tiles and the padding is cut off, so
    ``N1`` and ``N2`` need not divide anything. ``mesh.size`` tiles run at once,
    one per device (``jax.shard_map`` over all mesh axes), while the previous group
    is copied to host memory, where the result is assembled. For ``x2=None``
    only tiles on and above the diagonal are computed (diagonal tiles with
    ``x2=None``, as the unbatched kernel does).

    With ``checkpoint_dir``, each tile is saved once finished (``.npz`` with a
    SHA-256 checksum per array, written to a temporary file and renamed, read back
    without pickle) next to a fingerprint of the computation: the network (its
    kernels on fixed probe inputs), the inputs, the masks, ``batch_size``, ``get``
    and the keyword arguments. ``resume=False`` starts: the folder must be missing
    or empty. ``resume=True`` continues: the folder must hold a fingerprint equal
    to this call's (the error names the parts that differ), saved tiles are
    loaded and only missing ones are computed; a damaged tile (truncated, empty,
    bit-flipped) is deleted and recomputed with a warning naming its file. Later
    calls of the same wrapper continue the folder its first call opened. The
    fingerprint costs one group of tiles on probe inputs per call.

    The wrapper is not jittable (it loops in Python and writes files); do not wrap
    it in ``jax.jit``.

    Args:
        kernel: a :class:`Layer`, or a callable ``kernel(x1, x2, get, **kwargs)``
            with the convention of :meth:`Layer.kernel` (``x2`` may be ``None``;
            returns a tuple in the order of the tuple ``get``), traceable by JAX.
        batch_size: static; side of a tile (``>= 1``).
        mesh: devices to use; default a 1-D mesh of ``jax.local_devices()``.
        checkpoint_dir: folder for saved tiles, or ``None``.
        resume: ``False`` to start in a missing or empty ``checkpoint_dir``,
            ``True`` to continue the tiles saved there.
        progress: show a ``tqdm`` progress bar over tiles.

    Returns:
        A :class:`BatchedKernel`: ``fn(x1, x2=None, get=("nngp", "ntk"), *,
        mask1=None, mask2=None, **kwargs)`` returning what ``kernel`` returns.

    Raises:
        ValueError: if ``batch_size`` is not a positive integer, or ``resume=True``
            without a ``checkpoint_dir``; when called, naming ``checkpoint_dir``,
            for a path that is a file, ``resume=False`` on a folder holding files,
            ``resume=True`` on a missing folder or one without a fingerprint, or a
            fingerprint that differs.
        TypeError: if ``kernel`` is not callable, ``mesh`` not a ``Mesh`` or
            ``resume`` not a bool.

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import kernels
        >>> net = kernels.serial(kernels.Dense(1, 1.0, 0.1), kernels.Relu())
        >>> fn = kernels.batched(net, 3, progress=False)
        >>> x = jnp.arange(14.0).reshape(7, 2)
        >>> bool(jnp.allclose(fn(x, get="nngp"), net.kernel(x, get="nngp")))
        True
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(kernel, Layer) and not callable(kernel):
        raise TypeError(f"kernel must be a Layer or a callable, got {type(kernel)}.")
    if mesh is None:
        devices = jax.local_devices()
        mesh = jax.make_mesh(
            (len(devices),), ("tiles",), axis_types=(AxisType.Auto,), devices=devices
        )
    elif not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh)}.")
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be True or False, got {resume!r}.")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir.")
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, str | os.PathLike):
        raise TypeError(
            f"checkpoint_dir must be a path or None, got {type(checkpoint_dir)}."
        )
    return BatchedKernel(kernel, batch_size, mesh, checkpoint_dir, resume, progress)
