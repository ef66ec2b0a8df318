"""Batched CPU factorisations without the deadlock of JAX's CPU LAPACK calls.

On CPU, a LAPACK call on a batch (a Cholesky or QR of every chain at once, as
``vmap`` makes it) splits the batch over XLA's intra-op thread pool and waits for
the pieces. When as many such calls run at once as the pool has threads (two on a
2-core machine), every pool thread waits and nothing runs: the program hangs in
``block_until_ready`` without using CPU (jaxlib 0.10; seen in the mixing benchmark,
and reproduced by ``tests/samplers/test_platform.py``;
``--xla_cpu_multi_thread_eigen=false`` does not prevent it). The samplers therefore
run their factorisations one batch member at a time on CPU: a factorisation of
one matrix is done in the calling thread. On accelerators nothing changes.

Those factorisations are LAPACK calls of scipy's OpenBLAS (jaxlib takes its CPU
LAPACK from ``scipy.linalg.cython_lapack``), whose own thread pool turns a small
factorisation into a fight for the cores when other processes use them: on a busy
2-core machine a 128x128 Cholesky took 127 ms instead of 0.6 ms, and a sampling
run ten times as long. :func:`blas_single_threaded` therefore limits BLAS to one
thread for the duration of a sampler run (the chains are already parallel).
"""

from __future__ import annotations

import contextlib
import functools

import jax


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def sequential_on_cpu(fn):
    """``fn``, whose ``vmap`` is a loop over the batch on CPU.

    For functions that are not differentiated in reverse mode (a ``custom_vmap``
    rule has none), e.g. the forward pass of a ``custom_vjp``. Unbatched arguments
    are closed over; nested ``vmap`` loops again.
    """
    sequential = jax.custom_batching.custom_vmap(fn)

    @sequential.def_vmap
    def rule(axis_size, in_batched, *args):
        del axis_size
        leaves, treedef = jax.tree.flatten(args)
        flags = jax.tree.leaves(in_batched)
        if not any(flags):
            out = fn(*args)
            return out, jax.tree.map(lambda _: False, out)

        def one(mapped):
            values = iter(mapped)
            full = [
                next(values) if b else leaf
                for leaf, b in zip(leaves, flags, strict=True)
            ]
            return sequential(*jax.tree.unflatten(treedef, full))

        out = jax.lax.map(
            one, [leaf for leaf, b in zip(leaves, flags, strict=True) if b]
        )
        return out, jax.tree.map(lambda _: True, out)

    @functools.wraps(fn)
    def wrapped(*args):
        return sequential(*args) if _on_cpu() else fn(*args)

    return wrapped


def batch_map(fn, xs):
    """``jax.vmap(fn)(xs)`` on accelerators, ``jax.lax.map(fn, xs)`` on CPU."""
    return jax.lax.map(fn, xs) if _on_cpu() else jax.vmap(fn)(xs)


@contextlib.contextmanager
def blas_single_threaded():
    """One BLAS thread inside the block, on CPU (``threadpoolctl``); restored after.

    scipy's OpenBLAS is loaded first (it is otherwise loaded by the first LAPACK
    call, too late for the limit to reach it).
    """
    if not _on_cpu():
        yield
        return
    import scipy.linalg.cython_lapack  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
