"""Random features of every activation, and of the sketches they are built from.

Oracle: the exact kernel (``Layer.kernel``). One activation on exact affine layers
(``Dense -> activation -> Dense``) makes every random estimate unbiased given its
inputs, so the average of ``Phi Phi^T`` over independent keys must match the kernel
within its standard error (family-wise false-alarm rate 1e-4).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from _helpers import assert_within_stderr, slow_unless
from layer_cases import ACTIVATIONS
from widebnn.kernels import _sketch

from widebnn import kernels

N_KEYS = 64
WITH_FEATURES = [n for n, case in ACTIVATIONS.items() if case.has_finite]


def _inputs(n=5, d=3, std=1.0, seed=0):
    return std * jax.random.normal(jax.random.key(seed), (n, d))


def _net(activation):
    return kernels.serial(
        kernels.Dense(7, 1.1, 0.2), activation, kernels.Dense(3, 0.9, 0.1)
    )


def _assert_unbiased(grams, expected, name):
    grams = np.asarray(grams)
    stderr = grams.std(axis=0, ddof=1) / np.sqrt(len(grams))
    assert_within_stderr(
        grams.mean(axis=0), stderr, expected, dof=len(grams) - 1, name=name
    )


@pytest.mark.parametrize("name", slow_unless(WITH_FEATURES))
def test_activation_features_are_unbiased(name):
    case = ACTIVATIONS[name]
    net = _net(case.make())
    x = _inputs(std=case.input_std)
    k_nngp, k_ntk = net.kernel(x)

    def gram(key):
        a, b = kernels.feature_map(net, key, 16)(x)
        return a @ a.T, b @ b.T

    # Features of fast-growing activations (cubes: degree-6 products in the Gram)
    # are heavy-tailed, and a t-test on 64 keys then fails far more often than its
    # stated rate (Monomial3: 5.4 standard errors with 64 keys; max 2.9 over the 36
    # entries with 1024 keys, two seeds): they get 512.
    heavy = any(word in name for word in ("Monomial", "Polynomial", "Hermite", "Exp"))
    n_keys = 512 if heavy else N_KEYS
    grams_nngp, grams_ntk = jax.lax.map(
        gram, jax.random.split(jax.random.key(1), n_keys)
    )
    _assert_unbiased(grams_nngp, k_nngp, f"{name} nngp")
    _assert_unbiased(grams_ntk, k_ntk, f"{name} ntk")


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_relu_features_are_unbiased_at_tiny_dim(dim):
    # dim 1 has no centred columns; odd dims leave one antithetic column unpaired.
    net = _net(kernels.Relu())
    x = _inputs()
    k_nngp, k_ntk = net.kernel(x)

    def gram(key):
        a, b = kernels.feature_map(net, key, dim)(x)
        return a @ a.T, b @ b.T

    grams_nngp, grams_ntk = jax.lax.map(gram, jax.random.split(jax.random.key(2), 256))
    _assert_unbiased(grams_nngp, k_nngp, "nngp")
    _assert_unbiased(grams_ntk, k_ntk, "ntk")


def test_wide_inputs_use_iid_projections_and_stay_unbiased():
    # Inputs wider than ORTHOGONAL_MAX_WIDTH take the i.i.d. branch.
    from widebnn.kernels import _elementwise

    width = _elementwise.ORTHOGONAL_MAX_WIDTH + 1
    x = _inputs(n=4, d=width)
    net = kernels.serial(kernels.Dense(1), kernels.Relu(), kernels.Dense(1, 1.0, 0.1))
    k_nngp = net.kernel(x, get="nngp")
    # Dense without bias keeps the width: the activation sees `width` columns.
    grams = jax.lax.map(
        lambda key: (lambda a: a @ a.T)(
            kernels.feature_map(net, key, 8)(x, get="nngp")
        ),
        jax.random.split(jax.random.key(3), N_KEYS),
    )
    _assert_unbiased(grams, k_nngp, "nngp")


@pytest.mark.parametrize("name", slow_unless(WITH_FEATURES))
def test_float32_features_are_finite(name):
    case = ACTIVATIONS[name]
    x = _inputs(std=case.input_std).astype(jnp.float32)
    nngp, ntk = kernels.feature_map(_net(case.make()), jax.random.key(0), 16)(x)
    assert nngp.dtype == ntk.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(nngp))) and bool(jnp.all(jnp.isfinite(ntk)))


@pytest.mark.parametrize("name", slow_unless(WITH_FEATURES))
def test_padded_positions_have_zero_features(name):
    case = ACTIVATIONS[name]
    net = kernels.serial(kernels.Dense(4, 1.1, 0.2), case.make())
    x = _inputs(n=6, d=3, std=case.input_std).reshape(2, 3, 3)
    mask = jnp.array([[False, False, True], [False, True, True]])
    nngp, ntk = kernels.feature_map(net, jax.random.key(0), 8)(x, mask=mask)
    assert nngp.shape[:2] == ntk.shape[:2] == (2, 3)
    assert bool(jnp.all(nngp[mask] == 0)) and bool(jnp.all(ntk[mask] == 0))
    assert bool(jnp.any(nngp[~mask] != 0))


def test_expnormalized_has_no_feature_map():
    net = _net(kernels.ExpNormalized())
    with pytest.raises(NotImplementedError, match="ExpNormalized"):
        kernels.feature_map(net, jax.random.key(0), 8)


def test_sign_ntk_features_follow_the_kernels_zero_factor():
    # The kernel's NTK factor of Sign is 0 (as the finite network's gradient), so
    # the features of the NTK through Sign are exactly 0 and the NTK of
    # Dense-Sign-Dense is the readout's NNGP term alone.
    net = _net(kernels.Sign())
    x = _inputs()
    nngp, ntk = kernels.feature_map(net, jax.random.key(0), 16)(x)
    assert bool(jnp.all(ntk[:, :16] == 0))  # [W * (NTK through Sign), NNGP']
    np.testing.assert_allclose(ntk @ ntk.T, nngp @ nngp.T, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------- sketches


@pytest.mark.parametrize("d", [1, 2, 8, 64])
def test_fwht_is_the_sylvester_hadamard_matrix(d):
    x = np.random.default_rng(0).normal(size=(3, d))
    np.testing.assert_allclose(
        _sketch.fwht(jnp.asarray(x)),
        x @ scipy.linalg.hadamard(d),
        rtol=1e-12,
        atol=1e-12,
    )
    with pytest.raises(ValueError, match="power-of-two"):
        _sketch.fwht(jnp.ones((2, 6)))


def _sketch_grams(fn, n_keys=512):
    keys = jax.random.split(jax.random.key(5), n_keys)
    return np.asarray(jax.lax.map(fn, keys))


@pytest.mark.parametrize("d, m_out", [(5, 3), (9, 4), (9, 40), (33, 16)])
def test_srht_is_unbiased(d, m_out):
    # Covers padding (5 -> 8), folding (9 -> 8 with a second chunk) and several
    # blocks of rows (m_out > width).
    x = jax.random.normal(jax.random.key(0), (4, d))

    def gram(key):
        z = _sketch.srht(key, x, m_out)
        assert z.shape == (4, m_out)
        return z @ z.T

    _assert_unbiased(_sketch_grams(gram), x @ x.T, "srht")


def test_srht_folding_separates_aligned_coordinates():
    """24 coordinates fold into one Hadamard size 16 (two chunks), and 16 sampled
    rows are all of them: an exact isometry of the folded vector. ``x = e_0 + e_16``
    has its two spikes at the same offset of the two chunks: folded without a
    permutation they always share a row (``|z|^2`` is 0 or 4, never ``|x|^2 = 2``);
    permuted, they share one with probability 8 / C(24, 2) = 2.9 %, so over 32 keys
    more than 6 collisions has probability < 1e-5 (binomial tail)."""
    x = jnp.zeros((1, 24)).at[0, 0].set(1.0).at[0, 16].set(1.0)
    norms = jax.vmap(lambda k: jnp.sum(_sketch.srht(k, x, 16) ** 2))(
        jax.random.split(jax.random.key(3), 32)
    )
    collisions = int(jnp.sum(jnp.abs(norms - 2.0) > 1e-9))
    assert collisions <= 6, np.asarray(norms)


@pytest.mark.parametrize("d1, d2, m_out", [(5, 3, 4), (9, 17, 8)])
def test_tensor_srht_is_unbiased(d1, d2, m_out):
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (4, d1))
    y = jax.random.normal(ky, (4, d2))

    def gram(key):
        z = _sketch.tensor_srht(key, x, y, m_out)
        return z @ z.T

    _assert_unbiased(_sketch_grams(gram), (x @ x.T) * (y @ y.T), "tensor_srht")


@pytest.mark.parametrize("m_in, m_out", [(4, 10), (6, 6), (1, 3)])
def test_orthogonal_gaussian_matrix(m_in, m_out):
    g = _sketch.gaussian_matrix(
        jax.random.key(0), m_in, m_out, jnp.float64, orthogonal=True
    )
    assert g.shape == (m_in, m_out)
    if m_in > 1:  # columns within a block of m_in are orthogonal
        block = np.asarray(g[:, :m_in])
        gram = block.T @ block
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-10)
    # Marginally N(0, I): squared column norms average m_in (chi-squared, var 2 m_in).
    draws = jax.lax.map(
        lambda key: jnp.sum(
            _sketch.gaussian_matrix(key, m_in, m_out, jnp.float64, orthogonal=True)
            ** 2,
            axis=0,
        ),
        jax.random.split(jax.random.key(1), 400),
    )
    draws = np.asarray(draws)
    _assert_unbiased(draws, np.full(m_out, float(m_in)), "column norms^2")
    # and a fixed direction's projection has variance 1 (not only the norm).
    e = np.zeros(m_in)
    e[0] = 1.0
    proj = jax.lax.map(
        lambda key: (
            (
                e
                @ _sketch.gaussian_matrix(
                    key, m_in, m_out, jnp.float64, orthogonal=True
                )
            )
            ** 2
        ),
        jax.random.split(jax.random.key(2), 400),
    )
    _assert_unbiased(np.asarray(proj), np.ones(m_out), "projection^2")
