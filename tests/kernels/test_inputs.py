"""The input kernel, the `kernel` entry point and its argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import TraceCounter

from widebnn import kernels


def _net():
    return kernels.serial(kernels.Dense(8, 1.5, 0.1), kernels.Relu(), kernels.Dense(1))


def test_input_kernel_inner_products():
    x1 = jax.random.normal(jax.random.key(0), (3, 4))
    x2 = jax.random.normal(jax.random.key(1), (2, 4))
    k = kernels.input_kernel(x1, x2)
    np.testing.assert_allclose(
        k.nngp, np.asarray(x1) @ np.asarray(x2).T / 4, rtol=1e-14
    )
    np.testing.assert_allclose(k.cov1, np.sum(np.asarray(x1) ** 2, 1) / 4, rtol=1e-14)
    np.testing.assert_allclose(k.cov2, np.sum(np.asarray(x2) ** 2, 1) / 4, rtol=1e-14)
    assert not k.is_gaussian and k.shape1 == (3, 4) and k.shape2 == (2, 4)
    same = kernels.input_kernel(x1)
    assert same.cov2 is None and same.x1_is_x2


def test_masked_positions_are_zeroed():
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    mask = jnp.array([[False] * 5, [False, False, False, True, True]])
    nngp = kernels.Dense(4, 1.0, 0.5).kernel(x, get="nngp", mask1=mask)
    assert np.all(np.asarray(nngp)[1, :, 3:, :] == 0)
    assert np.all(np.asarray(nngp)[:, 1, :, 3:] == 0)
    # entries between unpadded positions do not depend on the padded values
    x_other = x.at[1, 3:].set(100.0)
    nngp_other = kernels.Dense(4, 1.0, 0.5).kernel(x_other, get="nngp", mask1=mask)
    np.testing.assert_allclose(nngp, nngp_other, rtol=1e-14)


def test_get_variants():
    x = jax.random.normal(jax.random.key(0), (3, 2))
    net = _net()
    nngp = net.kernel(x, get="nngp")
    both = net.kernel(x, get=("ntk", "nngp"))
    np.testing.assert_allclose(both[1], nngp)
    cov1, cov2 = net.kernel(x, get=("cov1", "cov2"))
    np.testing.assert_allclose(cov1, np.diag(np.asarray(nngp)), rtol=1e-13)
    np.testing.assert_allclose(cov2, cov1)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda n: n.kernel(jnp.ones(3)), ValueError, "x1"),
        (
            lambda n: n.kernel(jnp.ones((2, 3)), jnp.ones((2, 4))),
            ValueError,
            "x1 and x2",
        ),
        (lambda n: n.kernel(jnp.ones((2, 3)), get="variance"), ValueError, "get"),
        (lambda n: n.kernel(jnp.ones((2, 3)), get=()), ValueError, "get"),
        (lambda n: n.kernel(None), TypeError, "x1"),
        (
            lambda n: n.kernel(jnp.ones((2, 4, 3)), mask1=jnp.zeros((2, 5), bool)),
            ValueError,
            "mask1",
        ),
        (
            lambda n: n.kernel(jnp.ones((2, 4, 3)), mask2=jnp.zeros((2, 4), bool)),
            ValueError,
            "mask2",
        ),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call(_net())


def test_jitted_kernel_does_not_retrace_for_new_data():
    net = _net()
    counted = TraceCounter(lambda a, b: net.kernel(a, b))
    fn = jax.jit(counted)
    for seed in range(4):
        x1 = jax.random.normal(jax.random.key(seed), (5, 3))
        x2 = jax.random.normal(jax.random.key(seed + 10), (2, 3))
        nngp, _ = fn(x1, x2)
        np.testing.assert_allclose(nngp, net.kernel(x1, x2, get="nngp"), rtol=1e-13)
    assert counted.count == 1


def test_vmap_over_batches_of_inputs():
    net = _net()
    xs = jax.random.normal(jax.random.key(0), (3, 4, 2))
    batched = jax.vmap(lambda x: net.kernel(x, get="nngp"))(xs)
    for i in range(3):
        np.testing.assert_allclose(
            batched[i], net.kernel(xs[i], get="nngp"), rtol=1e-13
        )


def test_masked_input_kernel_is_symmetric_when_x2_is_none():
    x = jax.random.normal(jax.random.key(0), (2, 4, 3))
    mask = jnp.array([[False] * 4, [False, False, True, True]])
    k = kernels.input_kernel(x, mask1=mask)
    nngp = np.asarray(k.nngp)
    np.testing.assert_allclose(nngp, np.transpose(nngp, (1, 0, 3, 2)), rtol=1e-15)
    joint = kernels.input_kernel(x, x, mask1=mask, mask2=mask)
    np.testing.assert_allclose(nngp, joint.nngp, rtol=1e-15)


def test_jitted_relu_ntk_diagonal_is_exact():
    """c == q on the diagonal must survive jit fusion: an ulp of difference would
    become a sqrt(eps) ~ 1e-8 error in the arc-cosine angle."""
    net = kernels.serial(
        kernels.Dense(8, 1.5, 0.1),
        kernels.Relu(),
        kernels.Dense(8, 1.5, 0.1),
        kernels.Relu(),
        kernels.Dense(1, 1.5, 0.1),
    )
    x = jax.random.normal(jax.random.key(3), (6, 5))
    eager = net.kernel(x, get="ntk")
    jitted = jax.jit(lambda a: net.kernel(a, get="ntk"))(x)
    np.testing.assert_allclose(np.diag(jitted), np.diag(eager), rtol=1e-13)
    # the diagonal equals the one-example kernel, computed with no cross terms
    for i in range(3):
        single = net.kernel(x[i : i + 1], get="ntk")[0, 0]
        np.testing.assert_allclose(jitted[i, i], single, rtol=1e-13)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_are_refused_naming_the_argument(bad):
    net = _net()
    x = np.ones((4, 3))
    x[2, 1] = bad
    with pytest.raises(ValueError, match="x1 contains NaN or infinite"):
        net.kernel(x)
    with pytest.raises(ValueError, match="x2 contains NaN or infinite"):
        net.kernel(np.ones((2, 3)), x)
    with pytest.raises(ValueError, match="x1 contains NaN or infinite"):
        kernels.input_kernel(x)
    # a kernel large enough to be tiled checks too (2**16 entries and more)
    big = np.ones((300, 3))
    big[-1, 0] = bad
    with pytest.raises(ValueError, match="x1 contains NaN or infinite"):
        net.kernel(big, get="nngp")


def test_non_finite_values_at_padded_positions_are_allowed():
    x = np.ones((2, 4, 3))
    x[1, 3] = np.nan
    mask = np.zeros((2, 4), bool)
    mask[1, 3] = True
    nngp = kernels.Dense(2, 1.0, 0.1).kernel(x, get="nngp", mask1=mask)
    assert np.all(np.isfinite(nngp))


def _relu_nngp_ntk_numpy(x, w_std, b_std, depth):
    """Deep ReLU NNGP and NTK in float64 numpy (arccos form, NTK parameterisation)."""
    d = x.shape[1]
    k = w_std**2 * x @ x.T / d + b_std**2
    theta_ntk = k
    for _ in range(depth):
        q = np.sqrt(np.diag(k))
        cos = np.clip(k / np.outer(q, q), -1.0, 1.0)
        angle = np.arccos(cos)
        v = np.outer(q, q) * (np.sin(angle) + (np.pi - angle) * cos) / (2 * np.pi)
        k_next = w_std**2 * v + b_std**2
        theta_ntk = k_next + w_std**2 * (np.pi - angle) / (2 * np.pi) * theta_ntk
        k = k_next
    return k, theta_ntk


def test_float32_relu_kernel_stays_finite_beyond_the_square_overflow():
    """W_std = 2 doubles the variance per ReLU layer; at depth 80 it is ~1e24,
    whose square overflows float32 (3.4e38). The kernel itself is representable
    and must be finite and right, not NaN."""
    depth, w_std, b_std = 80, 2.0, 0.1
    hidden = kernels.serial(kernels.Dense(8, w_std, b_std), kernels.Relu())
    net = kernels.serial(kernels.repeat(hidden, depth), kernels.Dense(1, w_std, b_std))
    x = np.random.default_rng(0).normal(size=(4, 3))
    nngp, ntk = net.kernel(x.astype(np.float32), get=("nngp", "ntk"))
    assert nngp.dtype == np.float32 and ntk.dtype == np.float32
    nngp_64, ntk_64 = _relu_nngp_ntk_numpy(x, w_std, b_std, depth)
    assert np.max(np.diag(nngp_64)) ** 2 > np.finfo(np.float32).max  # overflow zone
    # float32 round-off (eps 1.2e-7) accumulated over 80 layers, plus the
    # sqrt(eps) ~ 3e-4 round-off of the arc-cosine angle near the diagonal, which
    # enters the NTK through (pi - angle) / (2 pi) with weight ~1/pi: rtol 2e-3.
    np.testing.assert_allclose(nngp, nngp_64, rtol=2e-3)
    np.testing.assert_allclose(ntk, ntk_64, rtol=2e-3)


def test_kernel_of_closed_over_inputs_under_jit():
    """Concrete inputs inside a trace: the finiteness check cannot run (its
    result is traced) and must not fail."""
    net = _net()
    x = jnp.array([[1.0, 2.0], [0.5, -1.0]])
    out = jax.jit(lambda scale: scale * net.kernel(x, get="nngp"))(2.0)
    np.testing.assert_allclose(out, 2.0 * net.kernel(x, get="nngp"), rtol=1e-14)
