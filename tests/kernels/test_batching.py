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
from widebnn.kernels import _batching

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

    real_write = _batching._write_tile
    written = []

    def interrupt_after_five(path, arrays):
        if len(written) == 5:
            raise KeyboardInterrupt("simulated interruption")
        real_write(path, arrays)
        written.append(path.name)

    monkeypatch.setattr(_batching, "_write_tile", interrupt_after_five)
    fn = kernels.batched(rbf_kernel, 3, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt):
        fn(x1, x2)
    saved = _tile_files(tmp_path)
    assert saved == set(written) and len(saved) == 5
    stamps = {f: os.stat(tmp_path / f).st_mtime_ns for f in saved}

    recomputed = []

    def recording(path, arrays):
        real_write(path, arrays)
        recomputed.append(path.name)

    monkeypatch.setattr(_batching, "_write_tile", recording)
    resumed = kernels.batched(rbf_kernel, 3, checkpoint_dir=tmp_path, progress=False)
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


def test_checkpoint_refuses_other_inputs(tmp_path):
    fn = kernels.batched(rbf_kernel, 4, checkpoint_dir=tmp_path, progress=False)
    fn(_x(6, 10), get="nngp")
    with pytest.raises(ValueError, match="different computation"):
        fn(_x(6, 11), get="nngp")
    with pytest.raises(ValueError, match="different computation"):
        kernels.batched(rbf_kernel, 3, checkpoint_dir=tmp_path, progress=False)(
            _x(6, 10), get="nngp"
        )


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
