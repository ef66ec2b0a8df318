"""Combinators: finite and infinite forms composed in lock-step."""

import jax
import numpy as np
import pytest
from _helpers import assert_within_stderr

from widebnn import kernels


def _x(n=4, d=3, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, d))


def _block(width=32):
    return kernels.serial(kernels.Dense(width, 1.4, 0.1), kernels.Relu())


def test_serial_composes_kernels():
    x = _x()
    a, b = kernels.Dense(8, 1.2, 0.1), kernels.Relu()
    k_serial = kernels.serial(a, b).kernel_fn(kernels.input_kernel(x))
    k_manual = b.kernel_fn(a.kernel_fn(kernels.input_kernel(x)))
    np.testing.assert_allclose(k_serial.nngp, k_manual.nngp, rtol=1e-15)
    np.testing.assert_allclose(k_serial.ntk, k_manual.ntk, rtol=1e-15)


def test_repeat_equals_unrolled_serial():
    x = _x()
    block = _block()
    unrolled = kernels.serial(block, block, block, block)
    repeated = kernels.repeat(block, 4)
    for a, b in zip(unrolled.kernel(x), repeated.kernel(x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    shape, params = repeated.init(jax.random.key(0), x.shape)
    assert shape == (4, 32)
    assert params[1][0]["W"].shape == (
        3,
        32,
        32,
    )  # three stacked copies after the first
    y = repeated.apply(params, x)
    # the same weights through a Python loop
    h = block.apply(params[0], x)
    for i in range(3):
        h = block.apply(jax.tree.map(lambda leaf, i=i: leaf[i], params[1]), h)
    np.testing.assert_allclose(y, h, rtol=1e-12)


def test_residual_block_matches_monte_carlo():
    """x + f(x) with independent weights: covariances add (FanInSum contract)."""
    x = _x()
    width, n_samples = 512, 48
    net = kernels.serial(
        kernels.Dense(width, 1.0, 0.2),
        kernels.FanOut(2),
        kernels.parallel(
            kernels.Identity(),
            kernels.serial(kernels.Relu(), kernels.Dense(width, 1.3, 0.1)),
        ),
        kernels.FanInSum(),
    )
    mc = kernels.monte_carlo_kernel(net, jax.random.key(1), n_samples, 16)
    mean, stderr = mc(x, get="nngp", return_stderr=True)
    # The second Dense sees ReLU features of a finite layer: bias O(1/width) ~ 2e-3,
    # far below the Monte Carlo band here (stderr ~ 1e-2).
    assert_within_stderr(mean, stderr, net.kernel(x, get="nngp"), dof=n_samples - 1)


@pytest.mark.slow
def test_fan_in_prod_and_concat_against_monte_carlo():
    x = _x()
    width, n_samples = 512, 48
    for fan_in, width_b in ((kernels.FanInProd(), width), (kernels.FanInConcat(), 256)):
        net = kernels.serial(
            kernels.FanOut(2),
            kernels.parallel(
                kernels.serial(kernels.Dense(width, 1.1, 0.3), kernels.Erf()),
                kernels.serial(kernels.Dense(width_b, 0.8, 0.2), kernels.Relu()),
            ),
            fan_in,
        )
        mc = kernels.monte_carlo_kernel(net, jax.random.key(2), n_samples, 16)
        expected = net.kernel(x)
        for name, (mean, stderr), exp in zip(
            ("nngp", "ntk"), mc(x, return_stderr=True), expected, strict=True
        ):
            assert_within_stderr(mean, stderr, exp, dof=n_samples - 1, name=name)


def test_fan_in_concat_channels_weights_by_width():
    x = _x()
    a = kernels.serial(kernels.Dense(30, 1.0, 0.0), kernels.Relu())
    b = kernels.Dense(10, 2.0, 0.5)
    net = kernels.serial(
        kernels.FanOut(2), kernels.parallel(a, b), kernels.FanInConcat()
    )
    expected = (30 * a.kernel(x, get="nngp") + 10 * b.kernel(x, get="nngp")) / 40
    np.testing.assert_allclose(net.kernel(x, get="nngp"), expected, rtol=1e-13)
    shape, _ = net.init(jax.random.key(0), x.shape)
    assert shape == (4, 40)


def test_fan_in_concat_spatial_is_block_diagonal():
    x = jax.random.normal(jax.random.key(0), (2, 3, 4))
    a, b = kernels.Dense(5, 1.0, 0.1), kernels.Dense(5, 2.0, 0.2)
    net = kernels.serial(
        kernels.FanOut(2), kernels.parallel(a, b), kernels.FanInConcat(axis=1)
    )
    nngp = np.asarray(net.kernel(x, get="nngp"))
    assert nngp.shape == (2, 2, 6, 6)
    np.testing.assert_allclose(nngp[:, :, :3, :3], a.kernel(x, get="nngp"), rtol=1e-13)
    np.testing.assert_allclose(nngp[:, :, 3:, 3:], b.kernel(x, get="nngp"), rtol=1e-13)
    assert np.all(nngp[:, :, :3, 3:] == 0)
    diag = net.kernel(x, get="nngp", diagonal_spatial=True)
    np.testing.assert_allclose(diag, np.einsum("nmaa->nma", nngp), rtol=1e-13)
    y = net.apply(net.init(jax.random.key(1), x.shape)[1], x)
    assert y.shape == (2, 6, 5)


def test_bad_combinator_arguments():
    with pytest.raises(ValueError, match="at least one"):
        kernels.serial()
    with pytest.raises(TypeError, match="Layer"):
        kernels.serial(kernels.Relu(), "relu")
    with pytest.raises(ValueError, match="num"):
        kernels.FanOut(0)
    with pytest.raises(ValueError, match="n must"):
        kernels.repeat(kernels.Relu(), 0)
    with pytest.raises(ValueError, match="batch axis"):
        kernels.FanInConcat(axis=0).init(None, [(2, 3), (2, 3)])
    net = kernels.serial(
        kernels.FanOut(3), kernels.parallel(kernels.Relu(), kernels.Relu())
    )
    with pytest.raises(ValueError, match="expects 2 inputs"):
        net.init(jax.random.key(0), (2, 3))
    with pytest.raises(ValueError, match="shapes differ"):
        kernels.FanInSum().init(None, [(2, 3), (2, 4)])


def test_repeat_refuses_shape_changing_layers():
    with pytest.raises(ValueError, match="cannot be repeated"):
        doubling = kernels.serial(kernels.FanOut(2), kernels.FanInConcat())
        kernels.repeat(doubling, 3).init(jax.random.key(0), (2, 3))


def test_identity_passes_through():
    x = _x()
    layer = kernels.Identity()
    np.testing.assert_array_equal(layer.apply((), x), x)
    np.testing.assert_allclose(
        layer.kernel(x, get="nngp"), np.asarray(x) @ np.asarray(x).T / 3
    )


def test_layout_rule_of_serial_is_folded():
    net = kernels.serial(kernels.Dense(3), kernels.Relu())
    assert net.full_spatial_input(True) is True
    assert net.full_spatial_input(False) is False
