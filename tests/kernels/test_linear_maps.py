"""ImageResize, Index and DotGeneral: closed forms, Monte Carlo, masks, bad input.

Oracles: ``jax.image.resize`` for the finite resize, repeating entries for a nearest
resize by an integer factor, slicing the full kernel for ``Index``, numpy ``einsum``
of the fixed map on both sides of the kernel for ``DotGeneral`` (and the identity),
and unbiased Monte Carlo of finite networks whose only random hidden layer is the
first (tolerance from the standard error, false alarm rate 1e-4 per comparison).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_within_stderr, slow_except_first

from widebnn import kernels

N_SAMPLES = 48
X = jax.random.normal(jax.random.key(0), (3, 4, 3, 2))
BASE = kernels.serial(kernels.Conv(4, (3, 3), padding="SAME", b_std=0.2), kernels.Erf())


def test_image_resize_finite_equals_jax_image_resize():
    for method, shape in (("linear", (7, 2)), ("nearest", (8, -1))):
        layer = kernels.ImageResize(shape, method)
        out_shape, _ = layer.init(None, X.shape)
        expected = jax.image.resize(X, out_shape, method)
        np.testing.assert_allclose(layer.apply((), X), expected, atol=1e-14)


def test_nearest_resize_by_integer_factor_repeats_entries():
    k = BASE.kernel(X)
    net = kernels.serial(BASE, kernels.ImageResize((8, 6), "nearest"))
    for base, resized in zip(k, net.kernel(X), strict=True):
        expected = np.asarray(base)
        for axis in (2, 3, 4, 5):
            expected = np.repeat(expected, 2, axis=axis)
        np.testing.assert_array_equal(resized, expected)
    # nearest copies positions, so the diagonal layout is enough (``expected`` is
    # the repeated NTK, the last item of the loop)
    diag = net.kernel(X, get="ntk", diagonal_spatial=True)
    np.testing.assert_allclose(diag, np.einsum("nmaabb->nmab", expected), rtol=1e-13)


def test_linear_resize_is_the_resize_matrix_on_both_sides():
    k = np.asarray(BASE.kernel(X, get="nngp"))
    net = kernels.serial(BASE, kernels.ImageResize((6, -1), "linear"))
    r = np.asarray(jax.image.resize(jnp.eye(4), (6, 4), "linear"))
    expected = np.einsum("oa,pb,nmabvw->nmopvw", r, r, k)
    np.testing.assert_allclose(net.kernel(X, get="nngp"), expected, rtol=1e-12)
    assert net.full_spatial_input(False) is True


def test_index_equals_slicing_the_full_kernel():
    k = [np.asarray(a) for a in BASE.kernel(X)]
    sliced = kernels.serial(BASE, kernels.Index(axis=1, idx=slice(1, 4, 2))).kernel(X)
    picked = kernels.serial(BASE, kernels.Index(axis=-2, idx=1)).kernel(X)
    channels = kernels.serial(BASE, kernels.Index(axis=-1, idx=[0, 2])).kernel(X)
    for full, a, b, c in zip(k, sliced, picked, channels, strict=True):
        np.testing.assert_array_equal(a, full[:, :, 1:4:2, 1:4:2])
        np.testing.assert_array_equal(b, full[:, :, :, :, 1, 1])
        np.testing.assert_array_equal(c, full)
    layer = kernels.Index(axis=2, idx=[2, 0])
    np.testing.assert_array_equal(layer.apply((), X), X[:, :, [2, 0]])


def test_dot_general_identity_and_closed_form():
    k = np.asarray(BASE.kernel(X, get="nngp"))
    identity = kernels.DotGeneral(jnp.eye(3), (((2,), (0,)), ((), ())))
    np.testing.assert_array_equal(identity.apply((), X), X)
    same = kernels.serial(BASE, identity).kernel(X, get="nngp")
    np.testing.assert_allclose(same, k, rtol=1e-13, atol=1e-15)
    r = jax.random.normal(jax.random.key(1), (5, 4))
    lhs = kernels.DotGeneral(r, (((1,), (1,)), ((), ())), is_lhs=True)
    np.testing.assert_allclose(
        lhs.apply((), X), np.einsum("oa,nawc->nowc", r, X), rtol=1e-12
    )
    mapped = kernels.serial(BASE, lhs).kernel(X, get="nngp")
    expected = np.einsum("oa,pb,nmabvw->nmopvw", r, r, k)
    np.testing.assert_allclose(mapped, expected, rtol=1e-12)


MC_CASES = {
    "resize_index": lambda p: [
        kernels.Conv(
            512, (2, 2), padding="SAME", W_std=1.3, b_std=0.2, parameterization=p
        ),
        kernels.Relu(),
        kernels.ImageResize((5, 2), "linear"),
        kernels.Index(axis=1, idx=slice(0, 4)),
        kernels.Conv(1, (2, 2), W_std=1.1, b_std=0.1, parameterization=p),
        kernels.GlobalSumPool(),
    ],
    "dot_general_nearest": lambda p: [
        kernels.Conv(
            512, (2, 2), padding="SAME", W_std=1.2, b_std=0.1, parameterization=p
        ),
        kernels.Abs(),
        kernels.DotGeneral(
            jnp.linspace(-1.0, 1.0, 6).reshape(3, 2), (((1,), (0,)), ((), ()))
        ),
        kernels.ImageResize((6, -1), "nearest"),
        kernels.Dense(1, 1.0, 0.2, parameterization=p),
        kernels.GlobalAvgPool(),
    ],
}


@pytest.mark.parametrize("name", slow_except_first(sorted(MC_CASES)))
def test_matches_monte_carlo(name):
    x = jax.random.normal(jax.random.key(2), (3, 3, 2, 2))
    net = kernels.serial(*MC_CASES[name]("standard" if "dot" in name else "ntk"))
    expected = net.kernel(x)
    mc = kernels.monte_carlo_kernel(net, jax.random.key(7), N_SAMPLES, 16)
    (nngp, nngp_err), (ntk, ntk_err) = mc(x, return_stderr=True)
    assert_within_stderr(nngp, nngp_err, expected[0], dof=N_SAMPLES - 1, name="nngp")
    assert_within_stderr(ntk, ntk_err, expected[1], dof=N_SAMPLES - 1, name="ntk")


def test_masks_travel_through_index_and_nearest_resize():
    lengths = jnp.array([4, 2])
    x = jax.random.normal(jax.random.key(0), (2, 4, 3))
    mask = jnp.arange(4)[None, :] >= lengths[:, None]
    x_pad = jnp.concatenate([x, 4.0 * jnp.ones((2, 2, 3))], axis=1)
    mask_pad = jnp.arange(6)[None, :] >= lengths[:, None]
    net = kernels.serial(
        kernels.Conv(8, (3,), padding="SAME", W_std=1.2, b_std=0.3),
        kernels.Relu(),
        kernels.Index(axis=-1, idx=slice(0, 4)),
        kernels.ImageResize((-1,), "nearest"),
        kernels.GlobalAvgPool(),
    )
    for u, v in zip(
        net.kernel(x, mask1=mask), net.kernel(x_pad, mask1=mask_pad), strict=True
    ):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-13)
    masked = kernels.ImageResize((8,), "nearest").mask_fn(mask, x.shape)
    np.testing.assert_array_equal(masked, np.repeat(mask, 2, axis=1))


@pytest.mark.parametrize(
    "make, shape, error, match",
    [
        (
            lambda: kernels.ImageResize((4, 4), "cubic"),
            (2, 3, 3, 1),
            ValueError,
            "method",
        ),
        (lambda: kernels.ImageResize((4,)), (2, 3, 3, 1), ValueError, "shape"),
        (lambda: kernels.ImageResize((0,)), (2, 3, 1), ValueError, "shape"),
        (lambda: kernels.Index(axis=0, idx=1), (2, 3, 1), ValueError, "batch axis"),
        (lambda: kernels.Index(axis=-1, idx=0), (2, 3, 1), ValueError, "channel axis"),
        (lambda: kernels.Index(axis=1, idx=7), (2, 3, 1), ValueError, "out of range"),
        (
            lambda: kernels.DotGeneral(jnp.ones(3), (((2,), (0,)), ((), ()))),
            (2, 3, 3),
            ValueError,
            "dimension_numbers",
        ),
        (
            lambda: kernels.DotGeneral(jnp.ones(4), (((1,), (0,)), ((), ()))),
            (2, 3, 3),
            ValueError,
            "dimension_numbers",
        ),
        (
            lambda: kernels.DotGeneral(jnp.ones(3), ((1,), (0,))),
            None,
            ValueError,
            "dimension_numbers",
        ),
    ],
)
def test_bad_arguments(make, shape, error, match):
    with pytest.raises(error, match=match):
        kernels.serial(kernels.Dense(3), make()).kernel(jnp.ones(shape))


def test_dot_general_refuses_masks():
    layer = kernels.DotGeneral(jnp.eye(3), (((1,), (0,)), ((), ())))
    with pytest.raises(ValueError, match="mask"):
        layer.kernel(jnp.ones((2, 3, 2)), mask1=jnp.zeros((2, 3), bool))


def test_neural_tangents_argument_forms():
    """``Index(Slice[...])``, ``ImageResize`` with every axis and
    ``DotGeneral(lhs=...)`` (Neural Tangents' forms) against slicing the kernel and
    the single-axis / spatial-only forms."""
    k = np.asarray(BASE.kernel(X, get="nngp"))
    two_axes = kernels.serial(BASE, kernels.Index(kernels.Slice[:, 1:4:2, 0]))
    np.testing.assert_array_equal(
        two_axes.kernel(X, get="nngp"), k[:, :, 1:4:2, 1:4:2, 0, 0]
    )
    tail = kernels.serial(BASE, kernels.Index(kernels.Slice[..., 1, :]))
    np.testing.assert_array_equal(tail.kernel(X, get="nngp"), k[:, :, :, :, 1, 1])
    assert kernels.Index(kernels.Slice[:, :]).apply((), X) is X
    every_axis = kernels.ImageResize((-1, 8, -1, -1), "nearest")
    spatial = kernels.ImageResize((8, -1), "nearest")
    np.testing.assert_array_equal(every_axis.apply((), X), spatial.apply((), X))
    r = jax.random.normal(jax.random.key(1), (5, 4))
    numbers = (((1,), (1,)), ((), ()))
    np.testing.assert_array_equal(
        kernels.DotGeneral(lhs=r, dimension_numbers=numbers).apply((), X),
        kernels.DotGeneral(r, numbers, is_lhs=True).apply((), X),
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kernels.Index(kernels.Slice[0, 1]), "batch axis"),
        (lambda: kernels.Index(kernels.Slice[..., 0, ...]), "Ellipsis"),
        (lambda: kernels.Index(kernels.Slice[:, 1], channel_axis=1), "channel_axis"),
        (lambda: kernels.DotGeneral(jnp.eye(2), lhs=jnp.eye(2)), "not both"),
        (lambda: kernels.DotGeneral(), "rhs"),
        (lambda: kernels.ImageResize((4,), batch_axis=1), "batch_axis"),
    ],
)
def test_neural_tangents_forms_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_image_resize_every_axis_form_refuses_batch_or_channel_change():
    with pytest.raises(ValueError, match="channel axis"):
        kernels.ImageResize((-1, 8, 3, 5), "nearest").init(None, X.shape)
