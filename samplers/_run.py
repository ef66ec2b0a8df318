"""Chunked execution with a progress bar and atomic checkpoints (no pickle).

A run is a warm-up stage followed by ``num_chunks`` calls of one jitted chunk
function. With a checkpoint directory (a :class:`widebnn.kernels._store.Store`),
the result of every stage is written to its own ``.npz`` entry (the leaves of a
pytree whose structure the restarted run rebuilds from the same arguments), with
checksums, atomically; a run restarted with ``resume=True`` and the same arguments
reads the finished stages back and continues, and gives exactly the draws of an
uninterrupted run (the chunk keys are ``fold_in(key, chunk_index)``).

The fingerprint of a sampler run (:func:`run_fingerprint`) has five parts:

* ``network``: the model's class, its scalar attributes (``width``, ``noise_std``,
  ...), and digests (rounded, see the store) of its behaviour on fixed probe
  inputs of the data's trailing shape and dtype: a prior draw ``model.init`` with a
  fixed key, ``features``, ``predict``, ``log_prior``, ``log_likelihood`` and
  ``prior_std`` at that draw. Two networks that agree on all of these (for example
  layers whose difference the probe inputs never reach) are not told apart;
* ``inputs``: exact digests of ``x``, ``y`` and ``x_pred``;
* ``key``: the PRNG key (implementation and key data);
* ``settings``: every sampler setting (algorithm, reparameterisation, chains,
  warm-up, thinning, step size, ..., draws, chunk size) and the widebnn version.

Not fingerprinted: the machine, the JAX/XLA versions and ``progress``. A resume
on another machine or software stack is accepted but need not be bit-exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm
from widebnn.kernels._store import (
    Store,
    hash_exact,
    hash_key,
    hash_rounded,
    package_version,
)

_PROBE_ROWS = 4
_PROBE_SEED = 20240611


def model_fingerprint(model, x_shape, x_dtype, y_shape, y_dtype) -> dict[str, Any]:
    """Fingerprint of a sampler model: its class, scalars and probed behaviour.

    Args:
        model: a model with the sampler protocol.
        x_shape: shape of the training inputs ``(N, *S, C)``.
        x_dtype: their dtype.
        y_shape: shape of the targets ``(N, d)``.
        y_dtype: their dtype.

    Returns:
        A JSON-able dict (see the module docstring).
    """
    rng = np.random.default_rng(_PROBE_SEED)
    shape = (_PROBE_ROWS, *x_shape[1:])
    scales = np.array([1.0, 3.0] * (_PROBE_ROWS // 2)).reshape(
        -1, *[1] * len(shape[1:])
    )
    x = (rng.standard_normal(shape) * scales).astype(x_dtype)
    y = rng.standard_normal((_PROBE_ROWS, *y_shape[1:])).astype(y_dtype)
    params = model.init(jax.random.key(_PROBE_SEED), shape)
    hidden = model.split_readout(params)[0]
    behaviour = {
        "init": hash_rounded(params),
        "features": hash_rounded(model.features(hidden, x)),
        "predict": hash_rounded(model.predict(params, x)),
        "log_prior": hash_rounded(model.log_prior(params)),
        "log_likelihood": hash_rounded(model.log_likelihood(params, x, y)),
    }
    if hasattr(model, "prior_std"):
        behaviour["prior_std"] = hash_rounded(model.prior_std(params))
    scalars = {
        name: value
        for name, value in sorted(getattr(model, "__dict__", {}).items())
        if value is None or isinstance(value, bool | int | float | str)
    }
    kind = type(model)
    return {
        "class": f"{kind.__module__}.{kind.__qualname__}",
        "hyperparameters": scalars,
        "behaviour": behaviour,
    }


def run_fingerprint(model, x, y, x_pred, key, settings) -> dict[str, Any]:
    """The fingerprint of a sampler run (see the module docstring)."""
    return {
        "network": model_fingerprint(model, x.shape, x.dtype, y.shape, y.dtype),
        "inputs": {
            "x": hash_exact(x),
            "y": hash_exact(y),
            "x_pred": hash_exact(x_pred),
        },
        "key": hash_key(key),
        "settings": dict(settings, widebnn_version=package_version()),
    }


def _tree_arrays(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves(tree)
    return {f"leaf_{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}


class Checkpoint:
    """A run directory, or a no-op when ``directory`` is ``None``.

    Args:
        directory: path of the run directory, or ``None``.
        fingerprint: ``() -> dict``, the run's :func:`run_fingerprint` (only
            called with a directory).
        resume: ``False`` to start a new run (the directory must be missing or
            empty), ``True`` to continue the run saved there.

    Raises:
        ValueError: naming ``checkpoint``, see :class:`Store`; also if ``resume``
            is True without a directory.
    """

    def __init__(self, directory, fingerprint: Callable[[], dict], *, resume=False):
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be True or False, got {resume!r}.")
        if directory is None:
            if resume:
                raise ValueError("resume=True needs a checkpoint directory.")
            self.store = None
            return
        self.store = Store(
            directory,
            fingerprint,
            resume=resume,
            argument="checkpoint",
            kind="widebnn.samplers.hmc",
        )

    def stage(self, name: str, compute: Callable[[], Any], template_fn: Callable):
        """Returns the saved result of stage ``name`` or computes and saves it.

        A damaged file is recomputed (with a warning naming it); an intact file
        whose arrays do not match ``template_fn()`` is refused (``ValueError``).
        """
        if self.store is None:
            return compute()
        if self.store.path(name).exists():
            template = template_fn()
            leaves, treedef = jax.tree_util.tree_flatten(template)
            names = [f"leaf_{i:04d}" for i in range(len(leaves))]
            expected = {
                n: (leaf.shape, leaf.dtype)
                for n, leaf in zip(names, leaves, strict=True)
            }
            arrays = self.store.load(name, expected)
            if arrays is not None:
                values = [jax.numpy.asarray(arrays[n]) for n in names]
                return jax.tree_util.tree_unflatten(treedef, values)
        result = jax.block_until_ready(compute())
        self.store.save(name, _tree_arrays(result))
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
