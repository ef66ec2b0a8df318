"""Convolution, pooling, Flatten and LayerNorm kernels.

Oracles: closed forms (1x1 conv = Dense per position, circular = explicit wrap
padding, pooling of a constant image), layout equivalence, and unbiased Monte Carlo
of finite networks whose only random hidden layer is the first one (so the expected
empirical kernel equals the analytic kernel at any width; tolerance from the
standard error, false alarm rate 1e-4 per test).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_symmetric_psd, assert_within_stderr, slow_except_first

from widebnn import kernels

N_SAMPLES = 48


def _images(n=3, shape=(5, 4), c=2, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, *shape, c))


def test_one_by_one_conv_equals_dense_per_position():
    x = _images()
    for param in ("ntk", "standard"):
        conv = kernels.serial(
            kernels.Conv(
                8, (1, 1), padding="SAME", W_std=1.3, b_std=0.2, parameterization=param
            ),
            kernels.Relu(),
            kernels.Conv(8, (1, 1), W_std=0.9, b_std=0.1, parameterization=param),
        )
        dense = kernels.serial(
            kernels.Dense(8, 1.3, 0.2, parameterization=param),
            kernels.Relu(),
            kernels.Dense(8, 0.9, 0.1, parameterization=param),
        )
        for a, b in zip(conv.kernel(x), dense.kernel(x), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_circular_equals_explicit_wrap_padding():
    x = _images(shape=(6, 5))
    circular = kernels.Conv(4, (3, 2), padding="CIRCULAR", W_std=1.1, b_std=0.3)
    valid = kernels.Conv(4, (3, 2), padding="VALID", W_std=1.1, b_std=0.3)
    # SAME-size wrap padding for filter (3, 2): (1, 1) rows and (0, 1) columns
    wrapped = jnp.pad(x, [(0, 0), (1, 1), (0, 1), (0, 0)], mode="wrap")
    for a, b in zip(circular.kernel(x), valid.kernel(wrapped), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    _, params = circular.init(jax.random.key(0), x.shape)
    np.testing.assert_allclose(
        circular.apply(params, x), valid.apply(params, wrapped), rtol=1e-12
    )


def test_global_average_pool_of_constant_image():
    pixel = jax.random.normal(jax.random.key(0), (3, 2))
    image = jnp.broadcast_to(pixel[:, None, None, :], (3, 4, 4, 2))
    pooled = kernels.serial(kernels.Dense(5, 1.2, 0.3), kernels.GlobalAvgPool())
    single = kernels.Dense(5, 1.2, 0.3)
    for a, b in zip(pooled.kernel(image), single.kernel(pixel), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_flatten_network_runs_diagonal_and_matches_full_layout():
    x = _images()
    net = kernels.serial(
        kernels.Conv(8, (3, 3), padding="SAME", W_std=1.4, b_std=0.1),
        kernels.Relu(),
        kernels.Conv(8, (2, 2), strides=(2, 1), padding="VALID", W_std=1.2, b_std=0.2),
        kernels.Erf(),
        kernels.Flatten(),
        kernels.Dense(1, 1.0, 0.1),
    )
    assert net.full_spatial_input(False) is False
    diagonal = net.kernel_fn(kernels.input_kernel(x, diagonal_spatial=True))
    full = net.kernel_fn(kernels.input_kernel(x, diagonal_spatial=False))
    np.testing.assert_allclose(diagonal.nngp, full.nngp, rtol=1e-12)
    np.testing.assert_allclose(diagonal.ntk, full.ntk, rtol=1e-12)
    np.testing.assert_allclose(net.kernel(x, get="nngp"), full.nngp, rtol=1e-12)


def test_pooled_network_needs_full_layout():
    net = kernels.serial(kernels.Conv(4, (3,)), kernels.Relu(), kernels.GlobalAvgPool())
    assert net.full_spatial_input(False) is True
    with pytest.raises(ValueError, match="every pair"):
        net.kernel_fn(kernels.input_kernel(jnp.ones((2, 5, 3)), diagonal_spatial=True))


def test_spatial_output_diagonal_option():
    x = _images()
    net = kernels.serial(
        kernels.Conv(4, (3, 3), padding="SAME", b_std=0.1), kernels.Relu()
    )
    full = net.kernel(x, get="nngp")
    diag = net.kernel(x, get="nngp", diagonal_spatial=True)
    assert full.shape == (3, 3, 5, 5, 4, 4) and diag.shape == (3, 3, 5, 4)
    np.testing.assert_allclose(diag, np.einsum("nmaabb->nmab", full), rtol=1e-12)


CNN_CASES = {
    "conv_same_gap": lambda p: [
        kernels.Conv(
            512, (3, 3), padding="SAME", W_std=1.3, b_std=0.2, parameterization=p
        ),
        kernels.Relu(),
        kernels.GlobalAvgPool(),
        kernels.Dense(1, 1.1, 0.1, parameterization=p),
    ],
    "conv_valid_strided_flatten": lambda p: [
        kernels.Conv(
            512, (2, 2), strides=(2, 1), W_std=1.2, b_std=0.1, parameterization=p
        ),
        kernels.Erf(),
        kernels.Flatten(),
        kernels.Dense(1, 0.9, 0.2, parameterization=p),
    ],
    "conv_circular_avgpool": lambda p: [
        kernels.Conv(
            512, (3, 2), padding="CIRCULAR", W_std=1.0, b_std=0.3, parameterization=p
        ),
        kernels.Abs(),
        kernels.AvgPool((2, 2), strides=(1, 2), padding="SAME", normalize_edges=True),
        kernels.GlobalSumPool(),
        kernels.Dense(1, 1.0, 0.0, parameterization=p),
    ],
    "conv1d_sumpool": lambda p: [
        kernels.Conv(
            512, (3,), padding="SAME", W_std=1.3, b_std=0.2, parameterization=p
        ),
        kernels.Relu(),
        kernels.SumPool((2,), padding="VALID"),
        kernels.Flatten(),
        kernels.Dense(1, 1.0, 0.1, parameterization=p),
    ],
}


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("name", slow_except_first(sorted(CNN_CASES)))
def test_cnn_ntk_matches_monte_carlo(name, parameterization):
    x = jax.random.normal(jax.random.key(0), (3, 5) if "1d" in name else (3, 4, 4))
    x = jnp.stack([x, jnp.cos(x)], axis=-1)  # two input channels
    net = kernels.serial(*CNN_CASES[name](parameterization))
    expected = net.kernel(x)
    assert_symmetric_psd(expected[1], name=name)
    mc = kernels.monte_carlo_kernel(net, jax.random.key(11), N_SAMPLES, 8)
    (nngp, nngp_err), (ntk, ntk_err) = mc(x, return_stderr=True)
    assert_within_stderr(nngp, nngp_err, expected[0], dof=N_SAMPLES - 1, name="nngp")
    assert_within_stderr(ntk, ntk_err, expected[1], dof=N_SAMPLES - 1, name="ntk")


@pytest.mark.slow
def test_layer_norm_matches_monte_carlo():
    """Finite LayerNorm has an O(1/width) bias; at width 1024 it is about 0.1 of the
    Monte Carlo standard error here (sample correlation bias rho (1 - rho^2) / 2n)."""
    x = _images(shape=(3,), c=3)
    for axis in (-1, (1, 2)):
        net = kernels.serial(
            kernels.Dense(1024, 1.2, 0.3), kernels.LayerNorm(axis=axis)
        )
        mc = kernels.monte_carlo_kernel(net, jax.random.key(3), N_SAMPLES, 16)
        mean, err = mc(x, get="nngp", return_stderr=True)
        expected = net.kernel(x, get="nngp")
        assert_within_stderr(
            mean, err, expected, dof=N_SAMPLES - 1, floor=1e-9, name=str(axis)
        )


def test_layer_norm_closed_form():
    x = _images(shape=(3,), c=3)
    W, b = 1.2, 0.3
    k = W**2 * np.einsum("nic,mjc->nmij", x, x) / 3 + b**2
    diag = np.einsum("nnii->ni", k)
    expected = k / np.sqrt(diag[:, None, :, None] * diag[None, :, None, :])
    net = kernels.serial(kernels.Dense(4, W, b), kernels.LayerNorm(eps=0.0))
    np.testing.assert_allclose(net.kernel(x, get="nngp"), expected, rtol=1e-12)


def _padding_invariance(x, mask, x_pad, mask_pad, net):
    a = net.kernel(x, get=("nngp", "ntk"), mask1=mask)
    b = net.kernel(x_pad, get=("nngp", "ntk"), mask1=mask_pad)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-13)


def test_padding_invariance_1d():
    lengths = [5, 3]
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    mask = jnp.arange(5)[None, :] >= jnp.array(lengths)[:, None]
    x_pad = jnp.concatenate([x, 7.0 * jnp.ones((2, 3, 3))], axis=1)
    mask_pad = jnp.arange(8)[None, :] >= jnp.array(lengths)[:, None]
    net = kernels.serial(
        kernels.Conv(8, (3,), padding="SAME", W_std=1.2, b_std=0.3),
        kernels.Relu(),
        kernels.Dense(8, 1.1, 0.2),
        kernels.LayerNorm(axis=(1, 2)),
        kernels.Conv(8, (3,), padding="SAME", W_std=1.0, b_std=0.1),
        kernels.GlobalAvgPool(),
        kernels.Dense(1, 1.0, 0.1),
    )
    _padding_invariance(x, mask, x_pad, mask_pad, net)


@pytest.mark.slow
def test_padding_invariance_2d():
    x = jax.random.normal(jax.random.key(1), (2, 3, 4, 2))
    mask = jnp.zeros((2, 3, 4), bool).at[1, 2:, :].set(True)
    x_pad = jnp.pad(x, [(0, 0), (0, 2), (0, 1), (0, 0)], constant_values=3.0)
    mask_pad = jnp.pad(mask, [(0, 0), (0, 2), (0, 1)], constant_values=True)
    net = kernels.serial(
        kernels.Conv(8, (3, 3), padding="SAME", W_std=1.2, b_std=0.3),
        kernels.Erf(),
        kernels.Dense(8, 1.0, 0.2),
        kernels.LayerNorm(),
        kernels.GlobalAvgPool(),
        kernels.Dense(1, 1.0, 0.1),
    )
    _padding_invariance(x, mask, x_pad, mask_pad, net)


def test_padding_invariance_of_the_finite_network():
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    lengths = jnp.array([5, 2])
    mask = jnp.arange(5)[None, :] >= lengths[:, None]
    x_pad = jnp.concatenate([x, jnp.ones((2, 2, 3))], axis=1)
    mask_pad = jnp.arange(7)[None, :] >= lengths[:, None]
    net = kernels.serial(
        kernels.Conv(6, (3,), padding="SAME", b_std=0.2),
        kernels.Relu(),
        kernels.LayerNorm(axis=(1, 2)),
        kernels.GlobalAvgPool(),
    )
    _, params = net.init(jax.random.key(1), x.shape)
    np.testing.assert_allclose(
        net.apply(params, x, mask=mask),
        net.apply(params, x_pad, mask=mask_pad),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    "make, shape, error, match",
    [
        (
            lambda: kernels.Conv(4, (5,), padding="VALID"),
            (2, 3, 1),
            ValueError,
            "larger",
        ),
        (lambda: kernels.Conv(4, (3, 3)), (2, 5, 1), ValueError, "2-D filter"),
        (lambda: kernels.Conv(4, (3,), strides=(0,)), None, ValueError, "strides"),
        (lambda: kernels.Conv(4, (3,), padding="REFLECT"), None, ValueError, "padding"),
        (lambda: kernels.Conv(0, (3,)), None, ValueError, "out_chan"),
        (lambda: kernels.AvgPool((0,)), None, ValueError, "window_shape"),
        (lambda: kernels.LayerNorm(axis=1), (2, 5, 3), ValueError, "channel axis"),
        (lambda: kernels.LayerNorm(axis=(0, -1)), (2, 5, 3), ValueError, "batch"),
        (lambda: kernels.GlobalAvgPool(), (2, 3), ValueError, "spatial"),
    ],
)
def test_bad_arguments(make, shape, error, match):
    with pytest.raises(error, match=match):
        layer = make()
        net = kernels.serial(kernels.Dense(3), layer)
        net.kernel(jnp.ones(shape))


def test_mask_of_wrong_shape():
    net = kernels.serial(kernels.Conv(4, (3,), padding="SAME"), kernels.GlobalAvgPool())
    with pytest.raises(ValueError, match="mask1"):
        net.kernel(jnp.ones((2, 5, 3)), mask1=jnp.zeros((2, 4), bool))


@pytest.mark.slow
def test_conv_local_matches_monte_carlo_and_is_diagonal():
    x = jax.random.normal(jax.random.key(0), (3, 5, 2))
    for param in ("ntk", "standard"):
        net = kernels.serial(
            kernels.ConvLocal(
                512, (3,), padding="SAME", W_std=1.3, b_std=0.2, parameterization=param
            ),
            kernels.Relu(),
            kernels.ConvLocal(1, (2,), W_std=1.2, b_std=0.1, parameterization=param),
            kernels.Flatten(),
        )
        expected = net.kernel(x)
        mc = kernels.monte_carlo_kernel(net, jax.random.key(1), N_SAMPLES, 16)
        (nngp, nngp_err), (ntk, ntk_err) = mc(x, return_stderr=True)
        assert_within_stderr(
            nngp, nngp_err, expected[0], dof=N_SAMPLES - 1, name="nngp"
        )
        assert_within_stderr(ntk, ntk_err, expected[1], dof=N_SAMPLES - 1, name="ntk")
    local = kernels.ConvLocal(4, (3,), padding="SAME", b_std=0.5).kernel(x, get="nngp")
    off_diagonal = np.asarray(local) * (1 - np.eye(5))
    assert np.all(off_diagonal == 0)


def _graph(seed, n=3, v=4):
    edges = jax.random.bernoulli(jax.random.key(seed), 0.5, (n, v, v))
    return edges.astype(float) + jnp.eye(v)[None]


def test_aggregate_closed_form_and_monte_carlo():
    x = jax.random.normal(jax.random.key(0), (3, 4, 2))
    p = _graph(1)
    net = kernels.serial(
        kernels.Dense(512, 1.2, 0.2),
        kernels.Relu(),
        kernels.Aggregate(),
        kernels.Dense(1, 1.0, 0.1),
        kernels.GlobalSumPool(),
    )
    expected = net.kernel(x, pattern=(p, None))
    inner = kernels.serial(kernels.Dense(512, 1.2, 0.2), kernels.Relu()).kernel(
        x, get="nngp"
    )
    # Neural Tangents' convention: p[n, tail, head], K' = p1^T K p2
    closed = np.einsum("nth,nmtu,mug->nmhg", p, inner, p).sum(axis=(2, 3)) + 16 * 0.01
    np.testing.assert_allclose(expected[0], np.asarray(closed), rtol=1e-12)

    def apply(params, inputs):
        return net.apply(params, inputs, pattern=p)

    n_samples = N_SAMPLES
    keys = jax.random.split(jax.random.key(2), n_samples)
    samples = []
    for key in keys:
        _, params = net.init(key, x.shape)
        samples.append(kernels.empirical_ntk(apply, params, x))
    samples = np.stack(samples)
    assert_within_stderr(
        samples.mean(0),
        samples.std(0, ddof=1) / np.sqrt(n_samples),
        expected[1],
        dof=n_samples - 1,
        name="ntk",
    )


def test_aggregate_bad_pattern():
    x = jnp.ones((2, 3, 2))
    with pytest.raises(ValueError, match="pattern"):
        kernels.serial(kernels.Dense(2), kernels.Aggregate()).kernel(x)
    with pytest.raises(ValueError, match="pattern"):
        kernels.serial(kernels.Dense(2), kernels.Aggregate()).kernel(
            x, pattern=jnp.ones((2, 3))
        )
