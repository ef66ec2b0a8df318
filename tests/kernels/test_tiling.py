"""Tiled kernels (inputs without spatial axes, > 2**16 pairs): the same values as
the one-piece computation, exactly symmetric, and closed forms still hold."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import TraceCounter

from widebnn import kernels

N = 300  # 90,000 pairs > 2**16: tiled by default
TILE = 4096  # 64 x 64 tiles: 5 row tiles, the last one padded


def _x(n=N, d=5, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, d))


def _net():
    return kernels.serial(
        kernels.Dense(64, 1.4, 0.1),
        kernels.Relu(),
        kernels.Dense(64, 1.2, 0.2),
        kernels.Erf(),
        kernels.Dropout(0.3),
        kernels.Dense(1, 1.1, 0.05),
    )


@pytest.mark.parametrize("cross", [False, True])
def test_tiled_equals_untiled(cross):
    net, x1 = _net(), _x()
    x2 = _x(257, seed=1) if cross else None
    tiled = net.kernel(x1, x2, tile_entries=TILE)
    whole = net.kernel(x1, x2, tile_entries=0)
    for t, w in zip(tiled, whole, strict=True):
        assert t.shape == w.shape == (N, 257 if cross else N)
        np.testing.assert_allclose(t, w, rtol=1e-13, atol=1e-15)
    if not cross:
        for t in tiled:
            np.testing.assert_array_equal(t, t.T)


def test_default_tiling_matches_arc_cosine_closed_form():
    """One ReLU layer: K = s^2/(2 pi) sqrt(q1 q2) (sin t + (pi - t) cos t) + b^2 on
    the default tiles (128 x 128), against numpy."""
    x = np.asarray(_x(N, 3))
    net = kernels.serial(kernels.Dense(8, 1.0, 0.0), kernels.Relu())
    nngp = net.kernel(jnp.asarray(x), get="nngp")
    gram = x @ x.T / 3
    norms = np.sqrt(np.diag(gram))
    cos = np.clip(gram / np.outer(norms, norms), -1, 1)
    theta = np.arccos(cos)
    expected = (
        np.outer(norms, norms) * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi)
    )
    np.testing.assert_allclose(nngp, expected, rtol=1e-12, atol=1e-14)


def test_diagonal_tiles_keep_the_x1_is_x2_diagonal():
    """Dropout scales only the i == j entries of ``kernel(x)``; tiles on the diagonal
    must see ``x2=None`` and off-diagonal tiles must not."""
    net = kernels.serial(kernels.Dense(8, 1.0, 0.0), kernels.Dropout(0.5))
    x = _x()
    nngp = net.kernel(x, get="nngp", tile_entries=TILE)
    gram = np.asarray(x) @ np.asarray(x).T / 5
    expected = gram + np.diag(np.diag(gram))  # 1 / (1 - rate) on the diagonal
    np.testing.assert_allclose(nngp, expected, rtol=1e-13, atol=1e-15)


def test_cross_rows_wider_than_a_tile():
    """``N2 > tile_entries``: one row per tile."""
    net, x1, x2 = _net(), _x(40), _x(1700, seed=2)  # 68,000 pairs
    ntk = net.kernel(x1, x2, "ntk", tile_entries=1000)
    np.testing.assert_allclose(
        ntk, net.kernel(x1, x2, "ntk", tile_entries=0), rtol=1e-13, atol=1e-15
    )


def test_jit_grad_and_no_retrace():
    x = _x()

    def loss(w_std, x):
        net = kernels.serial(kernels.Dense(4, w_std, 0.1), kernels.Relu())
        return jnp.sum(net.kernel(x, get="ntk", tile_entries=TILE))

    counter = TraceCounter(loss)
    grad = jax.jit(jax.grad(counter))
    g = grad(1.3, x)
    grad(1.3, _x(seed=3))
    assert counter.count == 1
    whole = jax.grad(
        lambda w: jnp.sum(
            kernels.serial(kernels.Dense(4, w, 0.1), kernels.Relu()).kernel(
                x, get="ntk", tile_entries=0
            )
        )
    )(1.3)
    assert np.isfinite(g)
    np.testing.assert_allclose(g, whole, rtol=1e-12)


def test_not_tiled_when_masked_or_covariances_requested():
    x = _x()
    cov1 = _net().kernel(x, get=("nngp", "cov1"), tile_entries=TILE)
    assert cov1[1].shape == (N,)


@pytest.mark.parametrize(
    "value, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_bad_tile_entries(value, error):
    with pytest.raises(error, match="tile_entries"):
        _net().kernel(_x(4), tile_entries=value)


def _cnn(pool=True):
    layers = [
        kernels.Conv(8, (3, 3), padding="SAME", W_std=1.3, b_std=0.1),
        kernels.Relu(),
    ]
    if pool:
        layers += [kernels.GlobalAvgPool(), kernels.Dense(1, 1.1, 0.05)]
    return kernels.serial(*layers)


@pytest.mark.parametrize(
    "pool, diagonal_spatial, cross",
    [
        (True, False, False),
        (True, False, True),
        (False, False, False),
        (False, True, False),
    ],
)
def test_spatial_tiles_equal_untiled(pool, diagonal_spatial, cross):
    """4x4 images, 20 x 20 pairs of 256 entries (> 2**16): tiles of 3 x 3 pairs;
    without pooling the output keeps positions, and mirrored tiles must swap them."""
    x1 = jax.random.normal(jax.random.key(4), (20, 4, 4, 2))
    x2 = jax.random.normal(jax.random.key(5), (17, 4, 4, 2)) if cross else None
    net = _cnn(pool)
    options = dict(diagonal_spatial=diagonal_spatial)
    tiled = net.kernel(x1, x2, tile_entries=9 * 256, **options)
    whole = net.kernel(x1, x2, tile_entries=0, **options)
    for t, w in zip(tiled, whole, strict=True):
        assert t.shape == w.shape
        np.testing.assert_allclose(t, w, rtol=1e-13, atol=1e-15)


def test_masked_sequences_tile_like_untiled():
    """Variable-length 1-D inputs: masks are cut into tiles with their inputs."""
    x = jax.random.normal(jax.random.key(6), (40, 8, 3))
    lengths = jnp.arange(40) % 8 + 1
    mask = jnp.arange(8)[None] >= lengths[:, None]
    net = kernels.serial(
        kernels.Conv(8, (3,), W_std=1.3, b_std=0.1),
        kernels.Relu(),
        kernels.GlobalAvgPool(),
    )
    tiled = net.kernel(x, mask1=mask, tile_entries=16 * 64)
    whole = net.kernel(x, mask1=mask, tile_entries=0)
    for t, w in zip(tiled, whole, strict=True):
        np.testing.assert_allclose(t, w, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="mask2"):
        net.kernel(x, mask2=mask)
    with pytest.raises(ValueError, match="mask1"):
        net.kernel(x, mask1=mask[:, :4])
