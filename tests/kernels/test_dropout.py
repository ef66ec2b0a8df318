"""Dropout: exact kernel rescaling, Monte Carlo against finite networks, arguments.

Monte Carlo oracle: the empirical NNGP/NTK of ``Dense(width) -> Dropout`` averaged
over independent weights *and* masks is an unbiased estimate of the analytic kernel
at any width (the pre-activations are exactly Gaussian and the masks independent of
them), so the only error is Monte Carlo noise: the tolerance is a
Bonferroni-corrected Student-t multiple of the estimated standard error (false alarm
rate 1e-4 per test). With 64 samples at width 512 the standard errors are ~1-2 % of
the entries, while a missing 1/rate factor (rate 0.6) is a 67 % error on the
diagonal, so the test has ample power.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_within_stderr

from widebnn import kernels

RATE = 0.6
WIDTH = 512
N_SAMPLES = 64


def _hidden():
    return kernels.Dense(WIDTH, 1.2, 0.3)


def _x(n, seed, shape=(3,)):
    return jax.random.normal(jax.random.key(seed), (n, *shape))


def test_test_mode_is_identity():
    x = _x(4, 0)
    with_dropout = kernels.serial(_hidden(), kernels.Dropout(RATE, mode="test"))
    without = _hidden()
    for a, b in zip(with_dropout.kernel(x), without.kernel(x), strict=True):
        np.testing.assert_array_equal(a, b)
    y = kernels.Dropout(RATE, mode="test").apply((), x)
    np.testing.assert_array_equal(y, x)


def test_train_scales_only_same_example_entries():
    x1, x2 = _x(4, 0), _x(3, 1)
    net = kernels.serial(_hidden(), kernels.Dropout(RATE))
    base = _hidden()
    nngp, ntk, cov1 = net.kernel(x1, get=("nngp", "ntk", "cov1"))
    base_nngp, base_ntk, base_cov1 = base.kernel(x1, get=("nngp", "ntk", "cov1"))
    factor = jnp.where(jnp.eye(4, dtype=bool), 1 / RATE, 1.0)
    np.testing.assert_allclose(nngp, base_nngp * factor, rtol=1e-14)
    np.testing.assert_allclose(ntk, base_ntk * factor, rtol=1e-14)
    np.testing.assert_allclose(cov1, base_cov1 / RATE, rtol=1e-14)
    # Two batches are two forward passes with independent masks: no cross scaling,
    # also when the same array is passed twice (only x2=None is one pass).
    for other in (x2, x1):
        cross, cov2 = net.kernel(x1, other, get=("nngp", "cov2"))
        base_cross, base_cov2 = base.kernel(x1, other, get=("nngp", "cov2"))
        np.testing.assert_allclose(cross, base_cross, rtol=1e-14)
        np.testing.assert_allclose(cov2, base_cov2 / RATE, rtol=1e-14)


@pytest.mark.parametrize("diagonal_spatial", [False, True])
def test_train_scales_equal_positions_in_both_layouts(diagonal_spatial):
    x = _x(2, 4, shape=(5, 3))
    net = kernels.serial(_hidden(), kernels.Dropout(RATE))
    get = ("nngp", "cov1")
    nngp, cov1 = net.kernel(x, get=get, diagonal_spatial=diagonal_spatial)
    base_nngp, base_cov1 = _hidden().kernel(
        x, get=get, diagonal_spatial=diagonal_spatial
    )
    batch = jnp.eye(2, dtype=bool)
    if diagonal_spatial:  # (N, N, L) and (N, L): every entry is an equal position
        same = batch[:, :, None]
        np.testing.assert_allclose(cov1, base_cov1 / RATE, rtol=1e-14)
    else:  # (N, N, L, L) and (N, L, L)
        position = jnp.eye(5, dtype=bool)
        same = batch[:, :, None, None] & position[None, None]
        np.testing.assert_allclose(
            cov1, jnp.where(position[None], base_cov1 / RATE, base_cov1), rtol=1e-14
        )
    np.testing.assert_allclose(
        nngp, jnp.where(same, base_nngp / RATE, base_nngp), rtol=1e-14
    )


def test_nngp_matches_monte_carlo():
    x1, x2 = _x(4, 0), _x(3, 1)
    net = kernels.serial(_hidden(), kernels.Dropout(RATE))

    def sample(key):
        init_key, key1, key2 = jax.random.split(key, 3)
        _, params = net.init(init_key, x1.shape)
        y1 = net.apply(params, x1, key=key1)
        y2 = net.apply(params, x2, key=key2)  # a second pass: fresh masks
        return y1 @ y1.T / WIDTH, y1 @ y2.T / WIDTH

    same, cross = jax.jit(jax.vmap(sample))(
        jax.random.split(jax.random.key(5), N_SAMPLES)
    )
    for samples, expected in (
        (same, net.kernel(x1, get="nngp")),
        (cross, net.kernel(x1, x2, get="nngp")),
    ):
        stderr = jnp.std(samples, axis=0, ddof=1) / jnp.sqrt(N_SAMPLES)
        assert_within_stderr(
            jnp.mean(samples, axis=0), stderr, expected, dof=N_SAMPLES - 1, name="nngp"
        )


def test_ntk_matches_monte_carlo():
    x = _x(4, 2)
    net = kernels.serial(_hidden(), kernels.Dropout(RATE), kernels.Dense(1, 0.9, 0.2))

    def sample(key):
        init_key, mask_key = jax.random.split(key)
        _, params = net.init(init_key, x.shape)

        def apply_fn(p, inputs):
            return net.apply(p, inputs, key=mask_key)  # one pass, one mask

        return kernels.empirical_ntk(apply_fn, params, x)

    samples = jax.jit(jax.vmap(sample))(jax.random.split(jax.random.key(6), N_SAMPLES))
    stderr = jnp.std(samples, axis=0, ddof=1) / jnp.sqrt(N_SAMPLES)
    expected = net.kernel(x, get="ntk")
    assert_within_stderr(
        jnp.mean(samples, axis=0), stderr, expected, dof=N_SAMPLES - 1, name="ntk"
    )


def test_apply():
    x = _x(200, 3, shape=(50,))
    y = kernels.Dropout(RATE).apply((), x, key=jax.random.key(0))
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / RATE, rtol=1e-15)
    # 10^4 Bernoulli(0.6) draws: sd 0.0049; 5 sd has false alarm rate 6e-7.
    assert abs(float(jnp.mean(kept)) - RATE) < 5 * 0.0049
    assert y.dtype == x.dtype
    with pytest.raises(ValueError, match="key"):
        kernels.Dropout(RATE).apply((), x)
    everything = kernels.Dropout(1.0)
    np.testing.assert_array_equal(everything.apply((), x, key=jax.random.key(1)), x)
    net = kernels.serial(_hidden(), everything)
    np.testing.assert_allclose(net.kernel(x[:3]), _hidden().kernel(x[:3]), rtol=1e-15)
