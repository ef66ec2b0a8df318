"""Feature maps of convolutions: exact window concatenations, per-offset SRHTs.

Without projection (``dim`` at least the concatenated width) a linear convolutional
network's features reproduce its kernel exactly, at every pair of positions; with
projection the inner products are unbiased, checked by averaging over independent
keys with a tolerance from the standard error of that average.
"""

import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_within_stderr, slow_except_first
from jax.sharding import Mesh, PartitionSpec
from widebnn.kernels._conv import projected_window_features, window_features

from widebnn import kernels

#: wide enough that no convolution here projects its windows (exact features)
NO_PROJECTION = 10**5


def _full_gram(features):
    """``(N, *S, m) -> (N, N, S1, S1', S2, S2', ...)``: inner products at every
    pair of positions (the kernel's full layout)."""
    n_spatial = features.ndim - 2
    letters = iter(string.ascii_lowercase[2:])
    first = [next(letters) for _ in range(n_spatial)]
    second = [next(letters) for _ in range(n_spatial)]
    pairs = "".join(a + b for a, b in zip(first, second, strict=True))
    subscripts = f"a{''.join(first)}z,b{''.join(second)}z->ab{pairs}"
    return jnp.einsum(subscripts, features, features)


def _inputs(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


def _assert_exact(net, x, *, mask=None, dim=NO_PROJECTION):
    nngp, ntk = kernels.feature_map(net, jax.random.key(0), dim)(x, mask=mask)
    k_nngp, k_ntk = net.kernel(x, mask1=mask)
    np.testing.assert_allclose(_full_gram(nngp), k_nngp, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(_full_gram(ntk), k_ntk, rtol=1e-10, atol=1e-10)
    return nngp, ntk


# (input shape, filter, strides, padding, parameterization, b_std)
EXACT_CASES = [
    ((3, 7, 2), (3,), 1, "SAME", "ntk", 0.2),
    ((3, 7, 2), (2,), 2, "VALID", "standard", None),
    ((3, 6, 2), (4,), 2, "CIRCULAR", "ntk", None),
    ((3, 5, 2), (3,), 1, "CIRCULAR", "standard", 0.3),
    ((2, 5, 4, 2), (3, 2), (2, 1), "SAME", "standard", 0.3),
    ((2, 5, 4, 2), (2, 3), (1, 2), "CIRCULAR", "ntk", 0.1),
    ((2, 5, 4, 2), (3, 3), 1, "VALID", "ntk", None),
]


@pytest.mark.parametrize("case", slow_except_first(EXACT_CASES))
def test_linear_conv_features_are_exact(case):
    shape, filt, strides, padding, param, b_std = case
    conv = dict(padding=padding, parameterization=param)
    net = kernels.serial(
        kernels.Conv(3, filt, strides, W_std=1.3, b_std=b_std, **conv),
        kernels.Conv(2, (2,) * len(filt), 1, W_std=0.8, b_std=b_std, **conv),
    )
    _assert_exact(net, _inputs(shape))


def test_widths_grow_with_the_filter_until_dim():
    # C = 2 channels, |f| = 3: 6 window columns (+1 bias); dim=4 projects to 4.
    x = _inputs((2, 5, 2))
    net = kernels.Conv(1, (3,), padding="SAME", b_std=0.1)
    nngp, ntk = kernels.feature_map(net, jax.random.key(0), NO_PROJECTION)(x)
    assert nngp.shape == (2, 5, 7) and ntk.shape == (2, 5, 7)  # ntk: [0 cols, nngp]
    nngp, ntk = kernels.feature_map(net, jax.random.key(0), 4)(x)
    assert nngp.shape == (2, 5, 5) and ntk.shape == (2, 5, 5)
    std = kernels.Conv(1, (3,), padding="SAME", parameterization="standard")
    nngp, ntk = kernels.feature_map(std, jax.random.key(0), 4)(x)
    assert nngp.shape == (2, 5, 4) and ntk.shape == (2, 5, 4)  # [sqrt(n) A, 0 cols]


def _assert_unbiased(net, x, dim, *, n_keys=64, mask=None):
    # E[phi phi^T] equals the kernel at every pair of positions; 64 independent
    # keys, every entry compared at a 1e-4 family-wise false-alarm rate.
    k_nngp, k_ntk = net.kernel(x, mask1=mask)

    def gram(key):
        a, b = kernels.feature_map(net, key, dim)(x, mask=mask)
        return _full_gram(a), _full_gram(b)

    keys = jax.random.split(jax.random.key(1), n_keys)
    grams_nngp, grams_ntk = jax.lax.map(gram, keys)
    for grams, expected, name in (
        (grams_nngp, k_nngp, "nngp"),
        (grams_ntk, k_ntk, "ntk"),
    ):
        grams = np.asarray(grams)
        stderr = grams.std(axis=0, ddof=1) / np.sqrt(n_keys)
        assert_within_stderr(
            grams.mean(axis=0), stderr, expected, dof=n_keys - 1, name=name
        )


@pytest.mark.parametrize("param", slow_except_first(["ntk", "standard"]))
def test_projected_conv_features_are_unbiased(param):
    # 4 channels x 3 taps = 12 window columns, projected to 8 (then 8 x 2 = 16 -> 8).
    conv = dict(padding="SAME", parameterization=param)
    net = kernels.serial(
        kernels.Conv(3, (3,), W_std=1.3, b_std=0.2, **conv),
        kernels.Conv(2, (2,), 2, W_std=0.8, b_std=0.1, **conv),
    )
    _assert_unbiased(net, _inputs((3, 6, 4)), dim=8)


# (padding, strides): 2-D windows of 3x3 offsets x 4 channels = 36 columns,
# projected to dim 8 one offset at a time (m = 4 <= dim: stacked Hadamard
# blocks); the second Conv's 9 input columns exceed dim (m > dim: folded).
WINDOW_BY_WINDOW_CASES = [("SAME", (2, 2)), ("VALID", (2, 1)), ("SAME", 1)]


@pytest.mark.slow  # the fast case: test_projected_conv_features_are_unbiased[ntk]
@pytest.mark.parametrize("case", WINDOW_BY_WINDOW_CASES)
def test_window_by_window_projection_is_unbiased(case):
    padding, strides = case
    net = kernels.serial(
        kernels.Conv(3, (3, 3), strides, padding, W_std=1.3, b_std=0.2),
        kernels.Conv(2, (2, 2), 1, padding, W_std=0.8, b_std=0.1),
    )
    _assert_unbiased(net, _inputs((3, 5, 5, 4)), dim=8)


def test_projected_features_do_not_depend_on_the_batch():
    # the sketches are drawn from the key and the widths only
    net = kernels.Conv(2, (3,), 2, "SAME", W_std=1.3, b_std=0.2)
    fmap = kernels.feature_map(net, jax.random.key(3), 8)  # 12 columns > 8
    nngp = jax.jit(lambda x: fmap(x, get="nngp"))
    x = _inputs((4, 5, 4))
    np.testing.assert_allclose(nngp(x[1:3]), nngp(x)[1:3], rtol=1e-12, atol=1e-12)
    assert nngp(x.astype(jnp.float32)).dtype == jnp.float32


def test_projected_conv_features_under_sharded_rows():
    # gp.feature_posterior splits each block's rows over the devices with
    # shard_map: the offset-by-offset sum must trace there (its carry varies over
    # the rows) and give each row the features it has on one device.
    net = kernels.Conv(2, (3,), padding="SAME", W_std=1.5, b_std=0.1)
    fmap = kernels.feature_map(net, jax.random.key(2), 4)  # 6 columns > 4
    x = _inputs((8, 5, 2))
    mesh = Mesh(np.asarray(jax.local_devices()), ("rows",))
    sharded = jax.shard_map(
        lambda x: fmap(x, get="nngp"),
        mesh=mesh,
        in_specs=PartitionSpec("rows"),
        out_specs=PartitionSpec("rows"),
    )
    np.testing.assert_allclose(sharded(x), fmap(x, get="nngp"), rtol=1e-12, atol=1e-12)


def _temp_bytes(filter_shape, *, n=16, side=8, m=64, dim=64):
    net = kernels.Conv(4, filter_shape, padding="SAME", b_std=0.1)
    fmap = kernels.feature_map(net, jax.random.key(0), dim)
    x = jnp.ones((n, side, side, m))
    compiled = jax.jit(lambda x: fmap(x, get="nngp")).lower(x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_projected_window_memory_does_not_grow_with_the_filter():
    """The window of ``|f| m`` columns per position is never formed: 3x3 and 5x5
    filters at dim 64 need about the same scratch memory (only the padded input
    grows, 12^2 vs 10^2 positions), far below the 5x5 concatenation. Forming the
    concatenation before projecting took 16.8 MB (3x3) and 33.6 MB (5x5) here."""
    small, large = _temp_bytes((3, 3)), _temp_bytes((5, 5))
    concatenation_5x5 = 16 * 8 * 8 * 25 * 64 * 8  # bytes, float64
    assert large < 1.5 * small, (small, large)
    assert large < concatenation_5x5 / 4, (large, concatenation_5x5)


@pytest.mark.slow
def test_projected_2d_circular_conv_features_are_unbiased():
    net = kernels.serial(
        kernels.Conv(3, (2, 3), (1, 2), "CIRCULAR", W_std=1.3, b_std=0.2),
        kernels.Conv(2, (2, 2), 1, "VALID", W_std=0.8),
    )
    _assert_unbiased(net, _inputs((2, 4, 5, 3)), dim=8)


@pytest.mark.parametrize("padding", slow_except_first(["SAME", "VALID"]))
def test_masked_conv_features_match_the_masked_kernel(padding):
    x = _inputs((3, 7, 2))
    mask = jnp.zeros((3, 7), bool).at[0, 5:].set(True).at[2, 3:].set(True)
    net = kernels.serial(
        kernels.Conv(3, (3,), 1, padding, W_std=1.3, b_std=0.2),
        kernels.Conv(2, (2,), 2, padding, W_std=0.8, b_std=0.1),
    )
    nngp, ntk = _assert_exact(net, x, mask=mask)
    out_mask = net.mask_fn(mask, x.shape)
    assert out_mask is not None and bool(out_mask.any())
    assert not bool(jnp.any(jnp.where(out_mask[..., None], nngp, 0.0)))
    assert not bool(jnp.any(jnp.where(out_mask[..., None], ntk, 0.0)))


@pytest.mark.parametrize("param", slow_except_first(["ntk", "standard"]))
def test_conv_relu_conv_features_are_unbiased_per_position(param):
    conv = dict(padding="SAME", parameterization=param)
    net = kernels.serial(
        kernels.Conv(3, (3,), W_std=1.3, b_std=0.2, **conv),
        kernels.Relu(),
        kernels.Conv(2, (3,), W_std=0.8, b_std=0.1, **conv),
    )
    # dim = 8 random ReLU features per position; the last Conv's 24 window
    # columns are projected back to 8.
    _assert_unbiased(net, _inputs((3, 5, 2)), dim=8)


TRANSPOSE_CASES = [
    ((3, 5, 2), (3,), 2, "SAME", "ntk", 0.2),
    ((3, 4, 2), (2,), 3, "VALID", "standard", 0.1),
    ((2, 3, 4, 2), (2, 3), (2, 1), "VALID", "ntk", None),
    ((2, 3, 3, 2), (3, 2), (1, 2), "SAME", "standard", None),
]


@pytest.mark.parametrize("case", slow_except_first(TRANSPOSE_CASES))
def test_conv_transpose_features_are_exact(case):
    shape, filt, strides, padding, param, b_std = case
    conv = dict(padding=padding, parameterization=param)
    net = kernels.serial(
        kernels.ConvTranspose(3, filt, strides, W_std=1.3, b_std=b_std, **conv),
        kernels.Conv(2, (2,) * len(filt), 1, "SAME", W_std=0.8, b_std=b_std),
    )
    _assert_exact(net, _inputs(shape))


def test_masked_conv_transpose_features_match_the_masked_kernel():
    x = _inputs((3, 5, 2))
    mask = jnp.zeros((3, 5), bool).at[1, 3:].set(True)
    net = kernels.ConvTranspose(2, (3,), 2, "SAME", W_std=1.3, b_std=0.2)
    _assert_exact(net, x, mask=mask)


def test_conv_local_is_refused_naming_it():
    net = kernels.serial(kernels.Conv(2, (2,)), kernels.ConvLocal(2, (2,)))
    with pytest.raises(NotImplementedError, match="ConvLocal"):
        kernels.feature_map(net, jax.random.key(0), 8)


def test_aligned_columns_of_the_offsets_do_not_collide():
    """Every position's features are one large column at the same index (as the
    exact mean column of ReLU features is): the window sketches' cross terms of
    different offsets must be O(1/sqrt(dim)). With one SRHT per offset and no
    permutation of each offset's columns, that column met the all-ones Hadamard
    column in every offset: a relative error of 76 % at dim 64, 256 and 1024.
    With it, RMS over 64 keys 17 %, 6.3 % and 3.9 %; asked for: < 25 % at dim 256
    (RMS over 16 keys)."""
    dim, geometry = 256, [(3, 1, 6, (1, 1))]  # |f| = 3, stride 1, 6 outputs, SAME
    x = jnp.zeros((2, 6, dim)).at[..., 0].set(1 + 0.5 * _inputs((2, 6)))
    exact = window_features(x, geometry, "same").reshape(12, -1)
    exact = exact @ exact.T

    def error(key):
        z = projected_window_features(key, x, geometry, "same", dim).reshape(12, -1)
        return jnp.linalg.norm(z @ z.T - exact) / jnp.linalg.norm(exact)

    errors = jax.jit(jax.vmap(error))(jax.random.split(jax.random.key(0), 16))
    rms = float(jnp.sqrt(jnp.mean(errors**2)))
    assert rms < 0.25, rms


@pytest.mark.slow
def test_projected_window_error_falls_with_dim():
    """A second convolution projects a window of |f| copies of the ReLU features
    (each with its mean and bias columns at the same offsets) back to ``dim``
    columns. Folding those copies into one Hadamard size without permuting the
    coordinates made aligned columns collide: the error stalled near 10-20 % at
    every ``dim``; sketching offset by offset without permuting each offset's
    columns, at 30 %. 16x more columns should cut the error ~4x (1/sqrt(m));
    asked for: 2x, on the median of 8 keys (single keys' errors are heavy-tailed:
    0.9-10 % at dim 1024, so 3 keys gave false alarms; medians of 8 measured
    15.5 % and 2.6 %)."""
    net = kernels.serial(
        kernels.Conv(4, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
        kernels.Relu(),
        kernels.Conv(4, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
        kernels.GlobalAvgPool(),
        kernels.Dense(1, 1.0, 0.05),
    )
    x = _inputs((24, 6, 6, 1))
    exact = net.kernel(x, get="nngp")

    def error(dim):
        values = []
        for seed in range(8):
            f = kernels.feature_map(net, jax.random.key(seed), dim)(x, get="nngp")
            values.append(np.linalg.norm(f @ f.T - exact) / np.linalg.norm(exact))
        return float(np.median(values))

    small, large = error(64), error(1024)
    assert large < small / 2, (small, large)
