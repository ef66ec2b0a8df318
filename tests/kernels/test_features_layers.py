"""Feature rules of the structural layers: pooling, normalisation, combinators and
fixed linear maps.

Deterministic rules are exact: the inner products of the features equal the exact
kernel (``Layer.kernel``) to rounding, position pair by position pair. Rules after
one random layer are unbiased: the average Gram matrix over independent keys is
compared with the exact kernel within its standard error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from widebnn import kernels

EXACT = dict(rtol=1e-11, atol=1e-11)


def position_gram(a, b=None):
    """``(N1, N2, S1, S1', ...)``: inner products of per-position features
    ``(N, *S, m)``, in the kernel's full layout."""
    b = a if b is None else b
    n = a.ndim - 2
    first, second = "stuvw"[:n], "STUVW"[:n]
    out = "ij" + "".join(p + q for p, q in zip(first, second, strict=True))
    return jnp.einsum(f"i{first}a,j{second}a->{out}", a, b)


def assert_exact(net, x, mask=None, **kwargs):
    """The features of ``net`` reproduce its exact kernel (NNGP and NTK)."""
    nngp, ntk = kernels.feature_map(net, jax.random.key(0), 4)(x, mask=mask)
    k_nngp, k_ntk = net.kernel(x, mask1=mask, **kwargs)
    np.testing.assert_allclose(position_gram(nngp), k_nngp, **EXACT)
    np.testing.assert_allclose(position_gram(ntk), k_ntk, **EXACT)
    return nngp, ntk


def _inputs(spatial=(6,), n=3, channels=2, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, *spatial, channels))


def _mask(spatial=(6,)):
    """Padding at the end of example 1 and along the last axis of example 2."""
    mask = jnp.zeros((3, *spatial), bool)
    mask = mask.at[1, spatial[0] - 2 :].set(True)
    return mask.at[(2,) + (slice(None),) * (len(spatial) - 1) + (-1,)].set(True)


def _pool_cases():
    """``(name, layer, spatial)``; the 2-D cases (slower to compile) are ``slow``."""
    one_d = {
        "AvgPool_same_edges": kernels.AvgPool((3,), (2,), "SAME", normalize_edges=True),
        "AvgPool_valid": kernels.AvgPool((2,)),
        "SumPool_circular": kernels.SumPool((3,), (1,), "CIRCULAR"),
        "GlobalAvgPool": kernels.GlobalAvgPool(),
        "GlobalSumPool": kernels.GlobalSumPool(),
        "Flatten": kernels.Flatten(),
    }
    two_d = {
        "AvgPool2d_same_edges": kernels.AvgPool((2, 3), (1, 2), "SAME", True),
        "AvgPool2d_same": kernels.AvgPool((3, 2), (2, 1), "SAME"),
        "SumPool2d_valid_strided": kernels.SumPool((2, 3), (2, 1), "VALID"),
        "SumPool2d_circular": kernels.SumPool((3, 2), (2, 1), "CIRCULAR"),
        "GlobalAvgPool2d": kernels.GlobalAvgPool(),
        "Flatten2d": kernels.Flatten(),
    }
    cases = [pytest.param(layer, (6,), id=name) for name, layer in one_d.items()]
    slow = pytest.mark.slow
    cases += [
        pytest.param(layer, (5, 4), id=name, marks=slow)
        for name, layer in two_d.items()
    ]
    return cases


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(("layer", "spatial"), _pool_cases())
def test_pooling_features_are_exact(layer, spatial, masked):
    net = kernels.serial(kernels.Dense(3, 1.2, 0.3), layer)
    mask = _mask(spatial) if masked else None
    diagonal = layer.name == "Flatten"
    nngp, _ = assert_exact(net, _inputs(spatial), mask, diagonal_spatial=diagonal)
    if layer.name in ("GlobalAvgPool", "GlobalSumPool", "Flatten"):
        assert nngp.ndim == 2  # no spatial axes left: (N, m)


@pytest.mark.parametrize(
    ("axis", "spatial", "masked"),
    [
        (-1, (), False),
        (-1, (6,), True),
        ((1, 2), (6,), True),
        pytest.param((1, 2, 3), (4, 3), True, marks=pytest.mark.slow),
        pytest.param((2, 3), (4, 3), False, marks=pytest.mark.slow),
    ],
)
def test_layer_norm_features_are_exact(axis, spatial, masked):
    net = kernels.serial(kernels.Dense(3, 1.2, 0.3), kernels.LayerNorm(axis, eps=0.1))
    mask = _mask(spatial) if masked else None
    assert_exact(net, _inputs(spatial), mask)


def test_layer_norm_normalises_random_features_by_their_own_norms():
    # After a random layer the rule divides by the features' own norms: the output
    # Gram matrix is the input one with unit diagonal (eps = 0), exactly.
    body = kernels.serial(kernels.Dense(3, 1.2, 0.3), kernels.Relu(), kernels.Dense(2))
    net = kernels.serial(body, kernels.LayerNorm(eps=0.0))
    x, key = _inputs(()), jax.random.key(4)
    nngp, ntk = kernels.feature_map(net, key, 16)(x)
    before_nngp, before_ntk = kernels.feature_map(body, jax.random.split(key)[0], 16)(x)
    norms = jnp.linalg.norm(before_nngp, axis=-1)
    scale = norms[:, None] * norms[None, :]
    np.testing.assert_allclose(nngp @ nngp.T, before_nngp @ before_nngp.T / scale)
    np.testing.assert_allclose(ntk @ ntk.T, before_ntk @ before_ntk.T / scale)


def test_layer_norm_features_need_gaussian_inputs():
    net = kernels.serial(kernels.Dense(3), kernels.Relu(), kernels.LayerNorm())
    with pytest.raises(ValueError, match="LayerNorm needs centred Gaussian"):
        kernels.feature_map(net, jax.random.key(0), 8)(_inputs(()))
