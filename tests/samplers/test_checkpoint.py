"""Checkpoint/resume: a run killed mid-way (also in the middle of a write) and
restarted with the same arguments gives exactly the draws of an uninterrupted run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from widebnn.samplers import _run

from widebnn import WideBNN, kernels, samplers

# Short runs: hmc rightly warns that they have not converged.
pytestmark = pytest.mark.filterwarnings("ignore::widebnn.samplers.SamplerWarning")


class Killed(Exception):
    """Stands for the process being killed."""


def make_problem():
    body = kernels.serial(kernels.Dense(3, 1.5, 0.2), kernels.Relu())
    model = WideBNN(body, 3, 1.0, 0.2, 0.3, 1)
    x = jnp.linspace(-1, 1, 5)[:, None]
    return model, x, jnp.sin(2 * x)


PROBLEM = make_problem()  # one model object: compiled samplers are reused


ARGS = dict(num_warmup=20, num_samples=10, chunk_size=3, thin=2, progress=False)


def run(checkpoint, **kwargs):
    model, x, y = PROBLEM
    return samplers.hmc(
        model, x, y, key=jax.random.key(9), checkpoint=checkpoint, **(ARGS | kwargs)
    )


def assert_same(a, b):
    np.testing.assert_array_equal(a.predictions, b.predictions)
    for name in a.sample_stats:
        np.testing.assert_array_equal(a.sample_stats[name], b.sample_stats[name])
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(u, v)
    assert a.num_grad_evals == b.num_grad_evals
    assert a.num_warmup_grad_evals == b.num_warmup_grad_evals


@pytest.mark.parametrize("kill_at", [3])
def test_resume_after_kill_mid_write(tmp_path, monkeypatch, kill_at):
    """The ``kill_at``-th array file write (0 = warm-up) dies half-way (after two
    sampling chunks were saved; a kill between chunks is the next test)."""
    reference = run(None)
    calls = {"n": 0}
    real_savez = np.savez

    def dying_savez(handle, **arrays):
        if calls["n"] == kill_at:
            handle.write(b"PK\x03\x04 half a file")
            raise Killed
        calls["n"] += 1
        real_savez(handle, **arrays)

    monkeypatch.setattr(_run.np, "savez", dying_savez)
    with pytest.raises(Killed):
        run(tmp_path)
    monkeypatch.setattr(_run.np, "savez", real_savez)
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert not any("tmp" in name for name in saved), saved  # temp file cleaned
    assert len([n for n in saved if n.endswith(".npz")]) == kill_at
    assert_same(run(tmp_path), reference)
    assert_same(run(tmp_path), reference)  # a finished run reads everything back


def test_resume_after_kill_between_chunks(tmp_path):
    reference = run(None)
    original = _run.Checkpoint.stage
    calls = {"n": 0}

    def stage(self, name, compute, template_fn):
        if calls["n"] == 2:
            raise Killed
        calls["n"] += 1
        return original(self, name, compute, template_fn)

    _run.Checkpoint.stage = stage
    try:
        with pytest.raises(Killed):
            run(tmp_path)
    finally:
        _run.Checkpoint.stage = original
    assert_same(run(tmp_path), reference)


def test_checkpoint_refuses_other_arguments(tmp_path):
    run(tmp_path)
    with pytest.raises(ValueError, match="different arguments"):
        run(tmp_path, thin=3)
