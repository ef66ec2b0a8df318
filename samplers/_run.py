"""Chunked execution with a progress bar and atomic checkpoints (no pickle).

A run is a warm-up stage followed by ``num_chunks`` calls of one jitted chunk
function. With a checkpoint directory, the result of every stage is written to its
own ``.npz`` file (leaves of a pytree whose structure the restarted run rebuilds
from the same arguments), through a temporary file and an atomic ``os.replace``; a
restarted run with the same arguments reads the finished stages back and continues,
and gives exactly the draws of an uninterrupted run (the chunk keys are
``fold_in(key, chunk_index)``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

META = "meta.json"


def fingerprint(settings: dict[str, Any], arrays: dict[str, Any]) -> dict[str, Any]:
    """JSON-able description of a run: its settings and hashes of its data/keys."""
    hashes = {}
    for name, value in arrays.items():
        if value is None:
            hashes[name] = None
            continue
        value = np.asarray(value)
        digest = hashlib.sha256(value.tobytes()).hexdigest()
        hashes[name] = f"{value.dtype}{list(value.shape)}:{digest[:32]}"
    return {"settings": settings, "arrays": hashes}


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_tree(path: Path, tree) -> None:
    """Writes the leaves of ``tree`` to ``path`` (``.npz``) atomically."""
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    _atomic_write_bytes(path, lambda handle: np.savez(handle, **arrays))


def load_tree(path: Path, template):
    """Reads leaves written by :func:`save_tree` into the structure of ``template``.

    Raises:
        ValueError: if the file does not match the template's leaves.
    """
    leaves, treedef = jax.tree_util.tree_flatten(template)
    with np.load(path, allow_pickle=False) as data:
        if len(data.files) != len(leaves):
            raise ValueError(f"checkpoint file {path} does not match this run.")
        loaded = [data[f"leaf_{i:04d}"] for i in range(len(leaves))]
    for value, leaf in zip(loaded, leaves, strict=True):
        if value.shape != tuple(leaf.shape) or value.dtype != leaf.dtype:
            raise ValueError(f"checkpoint file {path} does not match this run.")
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(v) for v in loaded])


class Checkpoint:
    """A run directory, or a no-op when ``directory`` is ``None``.

    Args:
        directory: path of the run directory (created if missing), or ``None``.
        meta: the run's :func:`fingerprint`; a directory written by a run with a
            different fingerprint is refused.

    Raises:
        ValueError: if the directory holds a run with different arguments.
    """

    def __init__(self, directory, meta: dict[str, Any]):
        self.directory = None if directory is None else Path(directory)
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        meta_path = self.directory / META
        text = json.dumps(meta, sort_keys=True, indent=1)
        if meta_path.exists():
            if json.loads(meta_path.read_text()) != json.loads(text):
                raise ValueError(
                    f"checkpoint {self.directory} was written by a run with different "
                    "arguments; use a new directory."
                )
        else:
            _atomic_write_bytes(meta_path, lambda handle: handle.write(text.encode()))

    def stage(self, name: str, compute: Callable[[], Any], template_fn: Callable):
        """Returns the saved result of stage ``name`` or computes and saves it."""
        if self.directory is None:
            return compute()
        path = self.directory / f"{name}.npz"
        if path.exists():
            return load_tree(path, template_fn())
        result = jax.block_until_ready(compute())
        save_tree(path, result)
        return result


def run_chunks(
    chunk_fn: Callable,
    state,
    key,
    sizes: list[int],
    checkpoint: Checkpoint,
    *,
    progress: bool,
    desc: str = "sampling",
):
    """Runs ``state, out = chunk_fn(state, fold_in(key, c), sizes[c])`` per chunk.

    Args:
        chunk_fn: the chunk, ``(state, key, size) -> (state, outputs)`` with outputs
            stacked on a leading draw axis of length ``size`` (static).
        state: the state before the first chunk.
        key: the sampling key.
        sizes: number of draws of each chunk.
        checkpoint: where finished chunks are saved and found.
        progress: show a tqdm bar over chunks.
        desc: the bar's label.

    Returns:
        ``(state, outputs, seconds)``: the chunks' outputs concatenated on axis 0
        (numpy) and the wall time of each chunk (the first includes compilation).
    """
    import time

    from tqdm.auto import tqdm

    outputs, seconds = [], []
    templates: dict[int, Any] = {}
    bar = tqdm(total=sum(sizes), desc=desc, unit="draw", disable=not progress)
    with bar:
        for c, size in enumerate(sizes):
            chunk_key = jax.random.fold_in(key, c)

            def compute(state=state, chunk_key=chunk_key, size=size):
                return chunk_fn(state, chunk_key, size)

            def template(size=size, compute=compute):
                if size not in templates:
                    templates[size] = jax.eval_shape(compute)
                return templates[size]

            start = time.perf_counter()
            state, out = checkpoint.stage(f"chunk_{c:05d}", compute, template)
            state = jax.block_until_ready(state)
            seconds.append(time.perf_counter() - start)
            outputs.append(jax.tree.map(np.asarray, out))
            bar.update(size)
    joined = jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *outputs)
    return state, joined, seconds
