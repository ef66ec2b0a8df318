"""``widebnn.kernels.batched``: tiles, padding, symmetry, devices, resuming.

Oracles: an RBF kernel written in numpy (for a jnp user kernel, exact to round-off)
and the unbatched ``Layer.kernel`` for networks. The tests run on the simulated CPU
devices of ``tests/conftest.py`` (4 by default); device-count assertions use
``len(jax.devices())``.

Tolerance for networks: under ``jit`` the ReLU NTK diagonal (``x_i`` with itself)
carries a round-off of order ``sqrt(eps)`` relative (the angle
``arctan2(sqrt(q^2 - c^2), c)`` at ``c = q`` up to one ulp), so tiles computed in
a jitted ``shard_map`` agree with the eager kernel to ~1e-8, not 1e-15.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import empty_file, flip_bit, truncate_file
from widebnn.kernels import _store

from widebnn import kernels

NET_RTOL = 1e-7  # see the module docstring


def rbf_kernel(x1, x2, get):
    x2 = x1 if x2 is None else x2
    sq = jnp.sum((x1[:, None, :] - x2[None, :, :]) ** 2, axis=-1)
    return tuple(jnp.exp(-0.5 * sq) * (1.0 if n == "nngp" else 2.0) for n in get)


def rbf_numpy(x1, x2):
    sq = np.sum((x1[:, None, :] - x2[None, :, :]) ** 2, axis=-1)
    return np.exp(-0.5 * sq)


def relu_net():
    return kernels.serial(
        kernels.Dense(64, 1.3, 0.2), kernels.Relu(), kernels.Dense(1, 1.3, 0.2)
    )


def _x(n, seed, d=3):
    return np.random.default_rng(seed).normal(size=(n, d))


def _device_counts():
    n = len(jax.devices())
    return sorted({1, min(2, n), n})


@pytest.mark.parametrize(
    "n1, n2, batch_size",
    [(11, None, 3), (11, 7, 3), (4, None, 10), (9, 13, 4), (8, None, 2)],
)
def test_matches_numpy_rbf(n1, n2, batch_size):
    x1 = _x(n1, 0)
    x2 = None if n2 is None else _x(n2, 1)
    fn = kernels.batched(rbf_kernel, batch_size, progress=False)
    nngp, ntk = fn(x1, x2)
    expected = rbf_numpy(x1, x1 if x2 is None else x2)
    np.testing.assert_allclose(nngp, expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ntk, 2 * expected, rtol=1e-13, atol=1e-15)
    single = fn(x1, x2, get="ntk")
    assert isinstance(single, jax.Array)
    np.testing.assert_allclose(single, 2 * expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("n_devices", _device_counts())
def test_sharding_over_meshes(n_devices):
    mesh = jax.make_mesh(
        (n_devices,),
        ("d",),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=jax.devices()[:n_devices],
    )
    fn = kernels.batched(rbf_kernel, 3, mesh=mesh, progress=False)
    assert fn.mesh.size == n_devices
    x = _x(10, 2)
    np.testing.assert_allclose(fn(x, get="nngp"), rbf_numpy(x, x), rtol=1e-13)


def test_default_mesh_uses_every_local_device():
    fn = kernels.batched(rbf_kernel, 3, progress=False)
    assert fn.mesh.size == len(jax.local_devices())


def test_explicit_mesh_axes_are_accepted():
    mesh = jax.make_mesh((len(jax.devices()),), ("d",))  # Explicit axis type
    fn = kernels.batched(rbf_kernel, 4, mesh=mesh, progress=False)
    x = _x(9, 3)
    np.testing.assert_allclose(fn(x, get="nngp"), rbf_numpy(x, x), rtol=1e-13)


@pytest.mark.parametrize("symmetric", [True, False])
def test_network_matches_unbatched(symmetric):
    net = relu_net()
    x1 = _x(10, 4)
    x2 = None if symmetric else _x(7, 5)
    batched_out = kernels.batched(net, 4, progress=False)(x1, x2)
    for got, expected in zip(batched_out, net.kernel(x1, x2), strict=True):
        np.testing.assert_allclose(got, expected, rtol=NET_RTOL, atol=1e-12)


@pytest.mark.parametrize("diagonal_spatial", [False, True])
def test_spatial_outputs_and_masks(diagonal_spatial):
    """Sequence outputs: symmetric tiles transpose the position pairs too.

    Full layout ``(N1, N2, L, L')`` (``diagonal_spatial=False``) is where a wrong
    transposition would show; the diagonal layout runs with a padding mask.
    """
    net = kernels.serial(kernels.Dense(16, 1.2, 0.1), kernels.Relu())
    x = np.random.default_rng(6).normal(size=(7, 4, 2))
    mask = None
    if diagonal_spatial:
        mask = np.zeros((7, 4), bool)
        mask[1, 3] = mask[4, 2:] = True
    fn = kernels.batched(net, 3, progress=False)
    options = {"get": "nngp", "mask1": mask, "diagonal_spatial": diagonal_spatial}
    got = fn(x, **options)
    expected = net.kernel(x, **options)
    assert (
        got.shape == expected.shape == ((7, 7, 4) if diagonal_spatial else (7, 7, 4, 4))
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def _tile_files(folder):
    return {f for f in os.listdir(folder) if f.startswith("tile-")}


def test_symmetry_computes_only_upper_tiles(tmp_path):
    fn = kernels.batched(rbf_kernel, 3, checkpoint_dir=tmp_path, progress=False)
    x = _x(11, 7)  # 4 row blocks: 10 tiles on or above the diagonal, not 16
    fn(x, get="nngp")
    assert _tile_files(tmp_path) == {
        f"tile-{i}-{j}.npz" for i in range(4) for j in range(i, 4)
    }


@pytest.mark.parametrize("symmetric", [True, False])
def test_resume_after_interruption(tmp_path, monkeypatch, symmetric):
    x1 = _x(13, 8)
    x2 = None if symmetric else _x(9, 9)
    uninterrupted = kernels.batched(rbf_kernel, 3, progress=False)(x1, x2)

    real_save = _store.Store.save
    written = []

    def interrupt_after_five(self, name, arrays):
        if len(written) == 5:
            raise KeyboardInterrupt("simulated interruption")
        real_save(self, name, arrays)
        written.append(f"{name}.npz")

    monkeypatch.setattr(_store.Store, "save", interrupt_after_five)
    fn = kernels.batched(rbf_kernel, 3, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt):
        fn(x1, x2)
    saved = _tile_files(tmp_path)
    assert saved == set(written) and len(saved) == 5
    stamps = {f: os.stat(tmp_path / f).st_mtime_ns for f in saved}

    recomputed = []

    def recording(self, name, arrays):
        real_save(self, name, arrays)
        recomputed.append(f"{name}.npz")

    monkeypatch.setattr(_store.Store, "save", recording)
    resumed = kernels.batched(
        rbf_kernel, 3, checkpoint_dir=tmp_path, resume=True, progress=False
    )
    result = resumed(x1, x2)
    for got, expected in zip(result, uninterrupted, strict=True):
        np.testing.assert_array_equal(got, expected)
    all_tiles = _tile_files(tmp_path)
    n_tiles = 15  # symmetric: 5 row blocks, 15 upper tiles; else 5 x 3 tiles
    assert len(all_tiles) == n_tiles
    assert sorted(recomputed) == sorted(all_tiles - saved)  # only the missing ones
    assert {f: os.stat(tmp_path / f).st_mtime_ns for f in saved} == stamps
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]

    recomputed.clear()
    again = resumed(x1, x2)  # everything on disk: nothing is recomputed
    assert recomputed == []
    np.testing.assert_array_equal(again[0], uninterrupted[0])


def test_resume_after_kill_mid_write(tmp_path, monkeypatch):
    """A tile write that dies half-way leaves no file; the resumed run is exact."""
    x = _x(10, 12)
    uninterrupted = kernels.batched(rbf_kernel, 3, progress=False)(x, get="nngp")
    calls = {"n": 0}
    real_savez = np.savez

    def dying_savez(handle, **arrays):
        if calls["n"] == 3:
            handle.write(b"PK\x03\x04 half a file")
            raise KeyboardInterrupt("killed")
        calls["n"] += 1
        real_savez(handle, **arrays)

    monkeypatch.setattr(_store.np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        kernels.batched(rbf_kernel, 3, checkpoint_dir=tmp_path, progress=False)(
            x, get="nngp"
        )
    monkeypatch.undo()
    assert len(_tile_files(tmp_path)) == 3
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    resumed = kernels.batched(
        rbf_kernel, 3, checkpoint_dir=tmp_path, resume=True, progress=False
    )(x, get="nngp")
    np.testing.assert_array_equal(resumed, uninterrupted)


def test_checkpoint_refuses_other_inputs(tmp_path):
    fn = kernels.batched(rbf_kernel, 4, checkpoint_dir=tmp_path, progress=False)
    fn(_x(6, 10), get="nngp")
    with pytest.raises(ValueError, match=r"these differ: inputs \(x1\)\."):
        fn(_x(6, 11), get="nngp")  # a later call continues the same folder
    with pytest.raises(ValueError, match=r"settings \(batch_size: 4 -> 3\)"):
        kernels.batched(
            rbf_kernel, 3, checkpoint_dir=tmp_path, resume=True, progress=False
        )(_x(6, 10), get="nngp")
    with pytest.raises(
        ValueError, match=r"settings \(get: \[\"nngp\"\] -> \[\"ntk\"\]"
    ):
        fn(_x(6, 10), get="ntk")
    with pytest.raises(ValueError, match=r"settings \(symmetric: true -> false\)"):
        fn(_x(6, 10), _x(6, 10), get="nngp")
    np.testing.assert_allclose(  # the saved run itself still resumes
        fn(_x(6, 10), get="nngp"), rbf_numpy(_x(6, 10), _x(6, 10)), rtol=1e-13
    )


def masked_rbf(x1, x2, get, mask1=None, mask2=None):
    """RBF kernel of sequences ``(N, L, d)`` over their unpadded positions."""
    x2, mask2 = (x1, mask1) if x2 is None else (x2, mask2)
    w1 = 1.0 if mask1 is None else ~mask1[..., None]
    w2 = 1.0 if mask2 is None else ~mask2[..., None]
    s1, s2 = jnp.sum(x1 * w1, 1), jnp.sum(x2 * w2, 1)
    sq = jnp.sum((s1[:, None, :] - s2[None, :, :]) ** 2, axis=-1)
    return tuple(jnp.exp(-0.5 * sq) for _ in get)


def test_checkpoint_refuses_other_masks(tmp_path):
    """Regression: tiles of other masks must not be reused (issue 17)."""
    rng = np.random.default_rng(13)
    x = rng.normal(size=(7, 4, 2))
    mask_a = np.zeros((7, 4), bool)
    mask_a[1, 3] = True
    mask_b = mask_a.copy()
    mask_b[4, 2:] = True
    kernels.batched(masked_rbf, 3, checkpoint_dir=tmp_path, progress=False)(
        x, get="nngp", mask1=mask_a
    )
    with pytest.raises(ValueError, match=r"these differ: masks \(mask1\)\."):
        kernels.batched(
            masked_rbf, 3, checkpoint_dir=tmp_path, resume=True, progress=False
        )(x, get="nngp", mask1=mask_b)
    with pytest.raises(ValueError, match=r"masks \(mask1\)"):  # no mask at all
        kernels.batched(
            masked_rbf, 3, checkpoint_dir=tmp_path, resume=True, progress=False
        )(x, get="nngp")
    fresh = kernels.batched(masked_rbf, 3, progress=False)
    np.testing.assert_array_equal(
        kernels.batched(
            masked_rbf, 3, checkpoint_dir=tmp_path, resume=True, progress=False
        )(x, get="nngp", mask1=mask_a),
        fresh(x, get="nngp", mask1=mask_a),
    )


def _dense_net(activation, w_std):
    return kernels.serial(kernels.Dense(8, w_std, 0.1), activation())


def _one_device_mesh():
    return jax.make_mesh(
        (1,),
        ("d",),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=jax.devices()[:1],
    )


@pytest.fixture(scope="module")
def relu_tiles(tmp_path_factory):
    """Tiles of a ReLU W_std=1.5 network, saved once for the module."""
    folder = tmp_path_factory.mktemp("relu") / "tiles"
    net, x = _dense_net(kernels.Relu, 1.5), _x(5, 14)
    expected = kernels.batched(
        net, 3, mesh=_one_device_mesh(), checkpoint_dir=folder, progress=False
    )(x)
    return folder, x, expected


@pytest.mark.parametrize(
    "other",
    [
        (kernels.Erf, 3.0),  # the case of issue 16: another activation and W_std
        (kernels.Relu, 3.0),  # W_std alone
        (kernels.Erf, 1.5),  # activation alone
    ],
)
def test_checkpoint_refuses_another_network(relu_tiles, other):
    folder, x, _ = relu_tiles
    with pytest.raises(ValueError, match=r"these differ: network \(nngp; ntk\)\."):
        kernels.batched(
            _dense_net(*other),
            3,
            mesh=_one_device_mesh(),
            checkpoint_dir=folder,
            resume=True,
            progress=False,
        )(x)


def test_same_network_resumes_exactly(relu_tiles, monkeypatch):
    """A new but equal network object passes the fingerprint and reads back."""
    folder, x, expected = relu_tiles

    def no_writes(*args, **kwargs):
        raise AssertionError("every tile is on disk")

    monkeypatch.setattr(_store.Store, "save", no_writes)
    got = kernels.batched(
        _dense_net(kernels.Relu, 1.5),
        3,
        mesh=_one_device_mesh(),
        checkpoint_dir=folder,
        resume=True,
        progress=False,
    )(x)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_start_and_resume_are_explicit(tmp_path):
    x = _x(5, 15)
    with pytest.raises(ValueError, match="checkpoint_dir=.*does not exist"):
        kernels.batched(
            rbf_kernel,
            3,
            checkpoint_dir=tmp_path / "typo",
            resume=True,
            progress=False,
        )(x)
    assert not (tmp_path / "typo").exists()
    kernels.batched(rbf_kernel, 3, checkpoint_dir=tmp_path, progress=False)(x)
    with pytest.raises(ValueError, match="already holds a checkpoint.*resume=True"):
        kernels.batched(rbf_kernel, 3, checkpoint_dir=tmp_path, progress=False)(x)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir=.*is an existing file"):
        kernels.batched(
            rbf_kernel, 3, checkpoint_dir=tmp_path / "file", progress=False
        )(x)
    with pytest.raises(ValueError, match="resume=True needs a checkpoint_dir"):
        kernels.batched(rbf_kernel, 3, resume=True)
    with pytest.raises(TypeError, match="resume"):
        kernels.batched(rbf_kernel, 3, checkpoint_dir=tmp_path, resume=1)
    with pytest.raises(TypeError, match="checkpoint_dir"):
        kernels.batched(rbf_kernel, 3, checkpoint_dir=3)


@pytest.mark.parametrize("damage", [truncate_file, empty_file, flip_bit])
def test_damaged_tile_is_recomputed_with_a_warning(tmp_path, damage):
    x = _x(8, 16)
    expected = kernels.batched(rbf_kernel, 3, progress=False)(x)
    kernels.batched(rbf_kernel, 3, checkpoint_dir=tmp_path, progress=False)(x)
    tile = tmp_path / "tile-0-1.npz"
    damage(tile)
    fn = kernels.batched(
        rbf_kernel, 3, checkpoint_dir=tmp_path, resume=True, progress=False
    )
    with pytest.warns(_store.CheckpointWarning, match=f"{tile}.*recomputed"):
        result = fn(x)
    for got, want in zip(result, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    with np.load(tile, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["nngp"], np.asarray(expected[0])[:3, 3:6])


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        kernels.batched(rbf_kernel, 0)
    with pytest.raises(TypeError, match="batch_size"):
        kernels.batched(rbf_kernel, 2.5)
    with pytest.raises(TypeError, match="kernel"):
        kernels.batched("rbf", 2)
    with pytest.raises(TypeError, match="mesh"):
        kernels.batched(rbf_kernel, 2, mesh="cpu")
    fn = kernels.batched(rbf_kernel, 2, progress=False)
    with pytest.raises(ValueError, match="not 'cov1'"):
        fn(_x(3, 0), get="cov1")
    with pytest.raises(ValueError, match="shape"):
        fn(np.ones(3))
    with pytest.raises(ValueError, match="mask2"):
        fn(_x(3, 0), mask2=np.zeros(3, bool))


_KILLED_CHILD = """
import os, signal, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from widebnn import kernels
from widebnn.kernels import _store

def rbf_kernel(x1, x2, get):
    import jax.numpy as jnp
    x2 = x1 if x2 is None else x2
    sq = jnp.sum((x1[:, None, :] - x2[None, :, :]) ** 2, axis=-1)
    return tuple(jnp.exp(-0.5 * sq) * (1.0 if n == "nngp" else 2.0) for n in get)

real_savez, calls = np.savez, [0]

def dying_savez(handle, **arrays):
    if calls[0] == 4:  # half of the fifth tile is on disk: kill -9
        handle.write(b"PK\\x03\\x04 half a file")
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    calls[0] += 1
    real_savez(handle, **arrays)

np.savez = dying_savez
x = np.random.default_rng(17).normal(size=(10, 3))
kernels.batched(rbf_kernel, 3, checkpoint_dir=sys.argv[1], progress=False)(x)
"""


@pytest.mark.slow  # a fresh Python process that imports JAX: ~10 s when busy
def test_resume_after_kill_minus_nine(tmp_path):
    """A real SIGKILL mid-write: the temporary file of the dead process is removed
    on resume and the result is exact."""
    import signal
    import subprocess
    import sys

    folder = tmp_path / "tiles"
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_CHILD, str(folder)],
        env=dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu"),
        capture_output=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    temps = [f for f in os.listdir(folder) if f.endswith(".tmp")]
    assert len(temps) == 1 and len(_tile_files(folder)) == 4
    x = np.random.default_rng(17).normal(size=(10, 3))
    resumed = kernels.batched(
        rbf_kernel, 3, checkpoint_dir=folder, resume=True, progress=False
    )(x)
    expected = kernels.batched(rbf_kernel, 3, progress=False)(x)
    for got, want in zip(resumed, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]
    assert len(_tile_files(folder)) == 10
