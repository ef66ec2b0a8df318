"""Feature maps: the public entry point, the exact oracle and the basic contracts.

Expected values come from the exact kernel (``Layer.kernel``); random features are
checked for unbiasedness by averaging over independent keys, with a tolerance from
the standard error of that average.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_within_stderr, relative_frobenius

from widebnn import kernels


def _inputs(n=6, d=4, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, d))


def _fcn(activation=None, parameterization="ntk"):
    act = kernels.Relu() if activation is None else activation
    dense = dict(parameterization=parameterization)
    return kernels.serial(
        kernels.Dense(7, 1.5, 0.1, **dense), act, kernels.Dense(3, 1.2, 0.05, **dense)
    )


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("b_std", [None, 0.3])
def test_dense_features_are_exact(parameterization, b_std):
    # A linear network needs no randomness: its features reproduce the kernel.
    net = kernels.serial(
        kernels.Dense(5, 1.3, b_std, parameterization=parameterization),
        kernels.Dense(2, 0.7, b_std, parameterization=parameterization),
    )
    x = _inputs()
    nngp, ntk = kernels.feature_map(net, jax.random.key(0), 8)(x)
    k_nngp, k_ntk = net.kernel(x)
    np.testing.assert_allclose(nngp @ nngp.T, k_nngp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ntk @ ntk.T, k_ntk, rtol=1e-12, atol=1e-12)


def test_exact_method_reproduces_the_kernel():
    net = _fcn()
    x = _inputs(n=12)
    nngp, ntk = kernels.feature_map(net, None, 1, method="exact")(x)
    k_nngp, k_ntk = net.kernel(x)
    assert nngp.shape == ntk.shape == (12, 12)
    np.testing.assert_allclose(nngp @ nngp.T, k_nngp, atol=1e-10)
    np.testing.assert_allclose(ntk @ ntk.T, k_ntk, atol=1e-10)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_relu_features_are_unbiased(parameterization):
    # One activation on exact affine features: E[phi phi^T] is exactly the kernel.
    # 64 independent keys; entries compared at a 1e-4 family-wise false-alarm rate.
    net = _fcn(parameterization=parameterization)
    x = _inputs()
    k_nngp, k_ntk = net.kernel(x)

    def gram(key):
        a, b = kernels.feature_map(net, key, 16)(x)
        return a @ a.T, b @ b.T

    keys = jax.random.split(jax.random.key(1), 64)
    grams_nngp, grams_ntk = jax.lax.map(gram, keys)
    for grams, expected, name in (
        (grams_nngp, k_nngp, "nngp"),
        (grams_ntk, k_ntk, "ntk"),
    ):
        grams = np.asarray(grams)
        stderr = grams.std(axis=0, ddof=1) / np.sqrt(len(keys))
        assert_within_stderr(
            grams.mean(axis=0), stderr, expected, dof=len(keys) - 1, name=name
        )


def test_error_falls_with_dim():
    net = _fcn()
    x = _inputs(n=20)
    k_nngp, k_ntk = net.kernel(x)
    errors = []
    for dim in (64, 4096):
        a, b = kernels.feature_map(net, jax.random.key(3), dim)(x)
        errors.append(
            (relative_frobenius(a @ a.T, k_nngp), relative_frobenius(b @ b.T, k_ntk))
        )
    # 64x more columns: the 1/sqrt(m) rate predicts 8x smaller errors; ask for 3x.
    assert errors[1][0] < errors[0][0] / 3
    assert errors[1][1] < errors[0][1] / 3


def test_widths_follow_dim():
    fmap = kernels.feature_map(_fcn(), jax.random.key(0), 32)
    nngp, ntk = fmap(_inputs())
    assert nngp.shape == (6, 33) and ntk.shape == (6, 65)
    assert fmap(_inputs(), get="nngp").shape == (6, 33)


def test_same_key_maps_batches_consistently():
    fmap = kernels.feature_map(_fcn(), jax.random.key(0), 32)
    x = _inputs(n=8)
    whole = fmap(x, get="ntk")
    parts = jnp.concatenate([fmap(x[:3], get="ntk"), fmap(x[3:], get="ntk")])
    np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-12)


def test_float32_features_are_finite():
    x = _inputs().astype(jnp.float32)
    nngp, ntk = kernels.feature_map(_fcn(), jax.random.key(0), 32)(x)
    assert nngp.dtype == ntk.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(nngp))) and bool(jnp.all(jnp.isfinite(ntk)))


def test_jit_and_vmap():
    fmap = kernels.feature_map(_fcn(), jax.random.key(0), 16)
    x = _inputs()
    eager = fmap(x, get="nngp")
    jitted = jax.jit(lambda x: fmap(x, get="nngp"))(x)
    mapped = jax.vmap(lambda row: fmap(row[None], get="nngp")[0])(x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mapped, eager, rtol=1e-12, atol=1e-12)


def test_bad_arguments_are_named():
    net = _fcn()
    with pytest.raises(ValueError, match="dim"):
        kernels.feature_map(net, jax.random.key(0), 0)
    with pytest.raises(TypeError, match="dim"):
        kernels.feature_map(net, jax.random.key(0), 2.5)
    with pytest.raises(ValueError, match="method"):
        kernels.feature_map(net, jax.random.key(0), 4, method="magic")
    with pytest.raises(TypeError, match="key"):
        kernels.feature_map(net, 0, 4)
    with pytest.raises(TypeError, match="layer"):
        kernels.feature_map("relu", jax.random.key(0), 4)
    fmap = kernels.feature_map(net, jax.random.key(0), 4)
    with pytest.raises(ValueError, match="get"):
        fmap(_inputs(), get="cov1")
    with pytest.raises(ValueError, match="x"):
        fmap(jnp.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        fmap(jnp.full((2, 4), jnp.nan))


def test_layer_without_features_is_refused_when_the_map_is_built():
    net = kernels.serial(
        kernels.Dense(4),
        kernels.GlobalSelfAttention(4, 4, 4, 2),
        kernels.GlobalAvgPool(),
    )
    with pytest.raises(NotImplementedError, match="GlobalSelfAttention"):
        kernels.feature_map(net, jax.random.key(0), 8)


def test_activation_needs_an_affine_layer_first():
    with pytest.raises(ValueError, match="Gaussian pre-activations"):
        kernels.feature_map(kernels.Relu(), jax.random.key(0), 8)(_inputs())
