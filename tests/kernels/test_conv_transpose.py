"""ConvTranspose: closed forms, Monte Carlo of finite networks, masks, bad input.

Oracles: a transposed convolution is a stride-1 ``VALID`` convolution of the input
dilated by the stride and zero-padded by ``lax.conv_transpose``'s padding (built here
with numpy), so its kernel equals ``Conv``'s kernel of that input; the finite layer is
compared with ``Conv`` on that dilated, padded input; unbiased Monte Carlo
of finite networks whose only random hidden layer is the first (tolerance from the
standard error, false alarm rate 1e-4 per comparison).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_symmetric_psd, assert_within_stderr

from widebnn import kernels

N_SAMPLES = 48


def _dilate_and_pad(x, strides, pads):
    """numpy: ``s - 1`` zeros between positions, then zero padding ``(low, high)``."""
    x = np.asarray(x)
    for axis, s in enumerate(strides, start=1):
        shape = list(x.shape)
        shape[axis] = (shape[axis] - 1) * s + 1
        out = np.zeros(shape)
        index = [slice(None)] * x.ndim
        index[axis] = slice(None, None, s)
        out[tuple(index)] = x
        x = out
    return np.pad(x, [(0, 0), *pads, (0, 0)])


# per-axis (low, high) padding of lax.conv_transpose, worked out by hand: VALID pads
# f - 1 on both sides when f >= s; SAME with f = 3, s = 2 pads (2, 1) and with
# f = 2, s = 1 pads (1, 0).
CASES = [
    ("VALID", (1, 1), (3, 2), [(2, 2), (1, 1)]),
    ("VALID", (2, 1), (3, 2), [(2, 2), (1, 1)]),
    ("SAME", (2, 1), (3, 2), [(2, 1), (1, 0)]),
]


@pytest.mark.parametrize("padding, strides, filter_shape, pads", CASES)
def test_equals_conv_of_dilated_padded_input(padding, strides, filter_shape, pads):
    x = jax.random.normal(jax.random.key(0), (3, 4, 3, 2))
    wide = jnp.asarray(_dilate_and_pad(x, strides, pads))
    for param in ("ntk", "standard"):
        kw = dict(W_std=1.3, b_std=0.2, parameterization=param)
        tconv = kernels.ConvTranspose(5, filter_shape, strides, padding, **kw)
        conv = kernels.Conv(5, filter_shape, padding="VALID", **kw)
        for a, b in zip(tconv.kernel(x), conv.kernel(wide), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # finite layer: the same (unflipped) filter slid over the dilated, padded input
    # (lax.conv_transpose with transpose_kernel=False)
    _, params = tconv.init(jax.random.key(1), x.shape)
    np.testing.assert_allclose(
        tconv.apply(params, x), conv.apply(params, wide), rtol=1e-12, atol=1e-14
    )


def test_stride_one_same_equals_conv_same():
    x = jax.random.normal(jax.random.key(2), (3, 5, 2))
    kw = dict(W_std=1.1, b_std=0.4)
    a = kernels.ConvTranspose(4, (3,), padding="SAME", **kw).kernel(x)
    b = kernels.Conv(4, (3,), padding="SAME", **kw).kernel(x)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_matches_monte_carlo(parameterization):
    x = jax.random.normal(jax.random.key(0), (3, 3, 2, 2))
    kw = dict(parameterization=parameterization)
    net = kernels.serial(
        kernels.ConvTranspose(512, (2, 2), (2, 1), "SAME", 1.3, 0.2, **kw),
        kernels.Relu(),
        kernels.ConvTranspose(1, (3, 2), (1, 2), "VALID", 1.1, 0.1, **kw),
        kernels.GlobalSumPool(),
    )
    expected = net.kernel(x)
    assert_symmetric_psd(expected[1], name="ntk")
    mc = kernels.monte_carlo_kernel(net, jax.random.key(5), N_SAMPLES, 16)
    (nngp, nngp_err), (ntk, ntk_err) = mc(x, return_stderr=True)
    assert_within_stderr(nngp, nngp_err, expected[0], dof=N_SAMPLES - 1, name="nngp")
    assert_within_stderr(ntk, ntk_err, expected[1], dof=N_SAMPLES - 1, name="ntk")


def test_diagonal_layout_matches_full():
    x = jax.random.normal(jax.random.key(3), (2, 3, 3, 2))
    net = kernels.serial(
        kernels.ConvTranspose(4, (3, 2), (2, 2), "SAME", 1.2, 0.1),
        kernels.Erf(),
        kernels.ConvTranspose(4, (2, 2), (1, 2), "VALID", 1.0, 0.3),
        kernels.Flatten(),
    )
    assert net.full_spatial_input(False) is False
    full = net.kernel_fn(kernels.input_kernel(x, diagonal_spatial=False))
    diag = net.kernel_fn(kernels.input_kernel(x, diagonal_spatial=True))
    np.testing.assert_allclose(diag.nngp, full.nngp, rtol=1e-12)
    np.testing.assert_allclose(diag.ntk, full.ntk, rtol=1e-12)


def test_padding_invariance():
    lengths = jnp.array([5, 3])
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    mask = jnp.arange(5)[None, :] >= lengths[:, None]
    x_pad = jnp.concatenate([x, 5.0 * jnp.ones((2, 3, 3))], axis=1)
    mask_pad = jnp.arange(8)[None, :] >= lengths[:, None]
    net = kernels.serial(
        kernels.ConvTranspose(8, (3,), padding="SAME", W_std=1.2, b_std=0.3),
        kernels.Relu(),
        kernels.ConvTranspose(8, (3,), padding="SAME", W_std=1.0, b_std=0.1),
        kernels.GlobalAvgPool(),
    )
    a = net.kernel(x, mask1=mask)
    b = net.kernel(x_pad, mask1=mask_pad)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-13)
    _, params = net.init(jax.random.key(1), x.shape)
    np.testing.assert_allclose(
        net.apply(params, x, mask=mask), net.apply(params, x_pad, mask=mask_pad)
    )


@pytest.mark.parametrize(
    "make, shape, match",
    [
        (lambda: kernels.ConvTranspose(4, (3,), padding="CIRCULAR"), None, "padding"),
        (lambda: kernels.ConvTranspose(4, (3,), strides=(0,)), None, "strides"),
        (lambda: kernels.ConvTranspose(4, (0,)), None, "filter_shape"),
        (lambda: kernels.ConvTranspose(4, (3, 3)), (2, 5, 1), "2-D filter"),
    ],
)
def test_bad_arguments(make, shape, match):
    with pytest.raises(ValueError, match=match):
        kernels.serial(kernels.Dense(3), make()).kernel(jnp.ones(shape))
