"""Dense layers: closed forms, both parameterisations, finite networks, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_within_stderr

from widebnn import kernels


def _x(n=4, d=3, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, d))


def test_one_dense_layer_closed_form():
    x1, x2 = _x(), _x(3, seed=1)
    W_std, b_std = 1.7, 0.3
    nngp, ntk = kernels.Dense(5, W_std, b_std).kernel(x1, x2)
    expected = W_std**2 * np.asarray(x1) @ np.asarray(x2).T / 3 + b_std**2
    np.testing.assert_allclose(nngp, expected, rtol=1e-13)
    np.testing.assert_allclose(ntk, expected, rtol=1e-13)  # Theta = K' + W^2 * 0


def test_hand_computed_2x2():
    x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
    nngp = kernels.Dense(1, W_std=2.0, b_std=0.5).kernel(x, get="nngp")
    # 4 * [[1, .6], [.6, 1]] / 2 + 0.25
    np.testing.assert_allclose(nngp, [[2.25, 1.45], [1.45, 2.25]], rtol=1e-14)


def test_no_bias_means_no_bias_term():
    x = _x()
    nngp = kernels.Dense(2, 1.0, None).kernel(x, get="nngp")
    np.testing.assert_allclose(nngp, np.asarray(x) @ np.asarray(x).T / 3, rtol=1e-13)


def test_linear_network_closed_form_both_parameterizations():
    """Two linear layers: K2 = s2^2 (s1^2 K0 + b1^2) + b2^2, closed forms of the NTK."""
    x1, x2 = _x(), _x(2, seed=5)
    s1, b1, s2, b2 = 1.3, 0.2, 0.7, 0.4
    n_hidden, d = 6, 3
    k0 = np.asarray(x1) @ np.asarray(x2).T / d
    k1 = s1**2 * k0 + b1**2
    k2 = s2**2 * k1 + b2**2
    for param, ntk_expected in (
        ("ntk", k2 + s2**2 * k1),
        # standard: d*K0 + 1 from the first layer, n_hidden*K1 + s2^2*Theta1 + 1 next
        ("standard", n_hidden * k1 + s2**2 * (d * k0 + 1) + 1),
    ):
        net = kernels.serial(
            kernels.Dense(n_hidden, s1, b1, parameterization=param),
            kernels.Dense(1, s2, b2, parameterization=param),
        )
        nngp, ntk = net.kernel(x1, x2)
        np.testing.assert_allclose(nngp, k2, rtol=1e-13)
        np.testing.assert_allclose(ntk, ntk_expected, rtol=1e-13)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_finite_linear_network_is_unbiased(parameterization):
    """A linear network's empirical NNGP/NTK average to the analytic ones exactly."""
    net = kernels.serial(
        kernels.Dense(64, 1.3, 0.2, parameterization=parameterization),
        kernels.Dense(8, 0.7, 0.4, parameterization=parameterization),
    )
    x = _x()
    n_samples = 200
    mc = kernels.monte_carlo_kernel(net, jax.random.key(3), n_samples, 50)
    for name, (mean, stderr) in zip(
        ("nngp", "ntk"), mc(x, return_stderr=True), strict=True
    ):
        expected = net.kernel(x, get=name)
        assert_within_stderr(mean, stderr, expected, dof=n_samples - 1, name=name)


def test_apply_shapes_and_spatial_inputs():
    layer = kernels.Dense(7, 1.0, 0.1)
    out_shape, params = layer.init(jax.random.key(0), (2, 5, 3))
    assert out_shape == (2, 5, 7)
    assert set(params) == {"W", "b"}
    y = layer.apply(params, jnp.ones((2, 5, 3)))
    assert y.shape == (2, 5, 7)
    _, params = kernels.Dense(7, 1.0, None).init(jax.random.key(0), (2, 3))
    assert set(params) == {"W"}


def test_spatial_inputs_per_position():
    """On (N, L, C) inputs the full layout holds every position pair."""
    x = jax.random.normal(jax.random.key(0), (2, 4, 3))
    W_std, b_std = 1.2, 0.3
    nngp = kernels.Dense(5, W_std, b_std).kernel(x, get="nngp")
    expected = W_std**2 * np.einsum("nac,mbc->nmab", x, x) / 3 + b_std**2
    np.testing.assert_allclose(nngp, expected, rtol=1e-13)
    diag = kernels.Dense(5, W_std, b_std).kernel(x, get="nngp", diagonal_spatial=True)
    np.testing.assert_allclose(diag, np.einsum("nmaa->nma", expected), rtol=1e-13)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(out_dim=0), "out_dim"),
        (dict(out_dim=2.5), "out_dim"),
        (dict(out_dim=3, W_std=-1.0), "W_std"),
        (dict(out_dim=3, b_std=-0.1), "b_std"),
        (dict(out_dim=3, W_std=float("nan")), "W_std"),
        (dict(out_dim=3, parameterization="mup"), "parameterization"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        kernels.Dense(**kwargs)


def test_apply_checks_channels():
    layer = kernels.Dense(4)
    _, params = layer.init(jax.random.key(0), (2, 3))
    with pytest.raises(ValueError, match="channels"):
        layer.apply(params, jnp.ones((2, 5)))
