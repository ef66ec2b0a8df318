"""Checkpoint/resume of ``samplers.hmc``.

A run killed mid-way (also in the middle of a write) and continued with
``resume=True`` and the same arguments gives exactly the draws of an uninterrupted
run; a run with anything else changed (network, data, key, settings) is refused
with a message naming what differs; start and resume are explicit; damaged files
are recomputed with a warning naming them.

All runs share one model object and one configuration, so the sampler is compiled
once for the module (in the ``reference`` fixture); refused runs stop before
anything is compiled.
"""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import empty_file, flip_bit, truncate_file
from widebnn.kernels import _store
from widebnn.samplers import _run

from widebnn import WideBNN, kernels, samplers

# Short runs: hmc rightly warns that they have not converged.
pytestmark = pytest.mark.filterwarnings("ignore::widebnn.samplers.SamplerWarning")


class Killed(Exception):
    """Stands for the process being killed."""


def make_model(activation=kernels.Relu, W_std=1.5, noise_std=0.3):
    body = kernels.serial(kernels.Dense(3, W_std, 0.2), activation())
    return WideBNN(body, 3, 1.0, 0.2, noise_std, 1)


def make_problem():
    x = jnp.linspace(-1, 1, 5)[:, None]
    return make_model(), x, jnp.sin(2 * x)


PROBLEM = make_problem()  # one model object: compiled samplers are reused
ARGS = dict(num_warmup=20, num_samples=10, chunk_size=3, thin=2, progress=False)
ENTRIES = ["chunk_00000.npz", "chunk_00001.npz", "chunk_00002.npz"]
ENTRIES += ["chunk_00003.npz", "fingerprint.json", "warmup.npz"]


def run(checkpoint, *, model=None, x=None, y=None, key=None, **kwargs):
    m, x0, y0 = PROBLEM
    return samplers.hmc(
        m if model is None else model,
        x0 if x is None else x,
        y0 if y is None else y,
        key=jax.random.key(9) if key is None else key,
        checkpoint=checkpoint,
        **(ARGS | kwargs),
    )


def assert_same(a, b):
    np.testing.assert_array_equal(a.predictions, b.predictions)
    for name in a.sample_stats:
        np.testing.assert_array_equal(a.sample_stats[name], b.sample_stats[name])
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(u, v)
    assert a.num_grad_evals == b.num_grad_evals
    assert a.num_warmup_grad_evals == b.num_warmup_grad_evals


@pytest.fixture(scope="module")
def reference():
    """An uninterrupted run without checkpoint (compiles the sampler)."""
    return run(None)


@pytest.fixture(scope="module")
def saved(reference, tmp_path_factory):
    """A directory holding the whole checkpointed run (read-only for tests)."""
    directory = tmp_path_factory.mktemp("saved") / "run"
    assert_same(run(directory), reference)
    assert sorted(p.name for p in directory.iterdir()) == ENTRIES
    return directory


@pytest.fixture
def copy(saved, tmp_path):
    """A private copy of ``saved`` that a test may damage."""
    return shutil.copytree(saved, tmp_path / "run")


def test_resume_after_kill_mid_write(tmp_path, monkeypatch, reference):
    """The fourth array file write (0 = warm-up) dies half-way, after two sampling
    chunks were saved (a kill between chunks is the next test)."""
    calls = {"n": 0}
    real_savez = np.savez

    def dying_savez(handle, **arrays):
        if calls["n"] == 3:
            handle.write(b"PK\x03\x04 half a file")
            raise Killed
        calls["n"] += 1
        real_savez(handle, **arrays)

    monkeypatch.setattr(_store.np, "savez", dying_savez)
    with pytest.raises(Killed):
        run(tmp_path)
    monkeypatch.setattr(_store.np, "savez", real_savez)
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert not any("tmp" in name for name in saved), saved  # temp file cleaned
    assert len([n for n in saved if n.endswith(".npz")]) == 3
    assert_same(run(tmp_path, resume=True), reference)
    assert_same(run(tmp_path, resume=True), reference)  # a finished run reads back


def test_resume_after_kill_between_chunks(tmp_path, monkeypatch, reference):
    original = _run.Checkpoint.stage
    calls = {"n": 0}

    def stage(self, name, compute, template_fn):
        if calls["n"] == 2:
            raise Killed
        calls["n"] += 1
        return original(self, name, compute, template_fn)

    monkeypatch.setattr(_run.Checkpoint, "stage", stage)
    with pytest.raises(Killed):
        run(tmp_path)
    monkeypatch.undo()
    assert_same(run(tmp_path, resume=True), reference)


def test_finished_run_reads_back_without_computing(saved, reference, monkeypatch):
    def no_writes(*args, **kwargs):
        raise AssertionError("a finished run must not write")

    monkeypatch.setattr(_store.np, "savez", no_writes)
    assert_same(run(saved, resume=True), reference)


@pytest.mark.parametrize(
    "change, differs",
    [
        # issue 16: a ReLU W_std=1.5 run resumed with an Erf W_std=3 model
        (dict(model=make_model(kernels.Erf, 3.0)), r"network \(behaviour\."),
        (dict(model=make_model(W_std=3.0)), r"network \(behaviour\."),
        (dict(model=make_model(kernels.Erf)), r"network \(behaviour\."),
        (dict(model=make_model(noise_std=0.4)), r"noise_std: 0\.3 -> 0\.4"),
        # issue 17: another key would silently mix two runs
        (dict(key=jax.random.key(10)), r"these differ: key\."),
        (dict(y=jnp.cos(2 * PROBLEM[1])), r"these differ: inputs \(y\)\."),
        (dict(x=PROBLEM[1] * 1.01, x_pred=PROBLEM[1]), r"differ: inputs \(x\)\."),
        (dict(x_pred=PROBLEM[1][:3]), r"these differ: inputs \(x_pred\)\."),
        (dict(thin=3), r"these differ: settings \(thin: 2 -> 3\)\."),
        (dict(num_samples=12), r"settings \(num_samples: 10 -> 12\)\."),
        (dict(num_warmup=21), r"settings \(num_warmup: 20 -> 21\)\."),
    ],
)
def test_resume_refuses_a_different_run(saved, change, differs):
    with pytest.raises(ValueError, match=differs) as error:
        run(saved, resume=True, **change)
    assert f"checkpoint='{saved}'" in str(error.value)


def test_network_fingerprint_sees_the_hidden_layers():
    """``repr(model)`` was the fingerprint: it is the same for these models."""
    x, y = PROBLEM[1], PROBLEM[2]
    relu, erf = make_model(), make_model(kernels.Erf, 3.0)
    assert repr(relu) == repr(erf)
    shapes = (x.shape, x.dtype, y.shape, y.dtype)
    assert _run.model_fingerprint(relu, *shapes) != _run.model_fingerprint(erf, *shapes)
    assert _run.model_fingerprint(relu, *shapes) == _run.model_fingerprint(
        make_model(), *shapes
    )


def test_start_and_resume_are_explicit(saved, tmp_path):
    with pytest.raises(ValueError, match="checkpoint=.*does not exist.*mistyped"):
        run(tmp_path / "typo", resume=True)
    assert not (tmp_path / "typo").exists()
    with pytest.raises(ValueError, match="holds no checkpoint"):
        run(tmp_path, resume=True)
    with pytest.raises(ValueError, match="already holds a checkpoint.*resume=True"):
        run(saved)
    with pytest.raises(ValueError, match="resume=True needs a checkpoint"):
        run(None, resume=True)
    with pytest.raises(TypeError, match="resume must be True or False"):
        run(tmp_path, resume="yes")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="checkpoint=.*is an existing file"):
        run(tmp_path / "file")
    assert sorted(p.name for p in saved.iterdir()) == ENTRIES  # nothing touched


@pytest.mark.parametrize("entry", ["warmup.npz", "chunk_00001.npz"])
@pytest.mark.parametrize("damage", [truncate_file, empty_file, flip_bit])
def test_damaged_file_is_recomputed_with_a_warning(copy, reference, entry, damage):
    damage(copy / entry)
    with pytest.warns(_store.CheckpointWarning, match=f"{copy / entry}.*recomputed"):
        result = run(copy, resume=True)
    assert_same(result, reference)
    assert_same(run(copy, resume=True), reference)  # the rewritten file is whole


def test_damaged_fingerprint_is_refused_naming_the_file(copy):
    flip_bit(copy / "fingerprint.json")
    with pytest.raises(ValueError, match="fingerprint.json .* is damaged"):
        run(copy, resume=True)


def test_stale_temporary_files_are_removed(copy, reference):
    stale = copy / ".chunk_00002.npz.4194999.0a1b2c3d.tmp"  # pid above pid_max
    stale.write_bytes(b"PK\x03\x04 half")
    assert_same(run(copy, resume=True), reference)
    assert not stale.exists()
