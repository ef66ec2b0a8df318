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
from _helpers import assert_within_stderr

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


def _dense():
    return kernels.Dense(3, 1.2, 0.3)


def _combinator_cases():
    residual = kernels.serial(
        _dense(),
        kernels.FanOut(2),
        kernels.parallel(kernels.Dense(3, 0.9, 0.1), kernels.Identity()),
        kernels.FanInSum(),
        kernels.Dense(2, 0.7, 0.1),
    )
    cases = {
        "residual": residual,
        "FanInSum_3": kernels.serial(
            kernels.FanOut(3),
            kernels.parallel(_dense(), _dense(), kernels.Dense(3, 0.5)),
            kernels.FanInSum(),
        ),
        "FanInConcat_channels": kernels.serial(
            kernels.FanOut(3),
            kernels.parallel(_dense(), kernels.Dense(5, 0.8), kernels.Identity()),
            kernels.FanInConcat(),
            kernels.Dense(2),
        ),
        "FanInConcat_positions": kernels.serial(
            kernels.FanOut(2),
            kernels.parallel(_dense(), kernels.Dense(5, 0.8)),
            kernels.FanInConcat(axis=1),
            kernels.Dense(2),
        ),
        "repeat": kernels.serial(
            _dense(), kernels.repeat(kernels.Dense(3, 0.9, 0.2), 3)
        ),
        "Identity": kernels.serial(_dense(), kernels.Identity()),
        "Dropout_test": kernels.serial(_dense(), kernels.Dropout(0.5, "test")),
        "Index": kernels.serial(_dense(), kernels.Index(kernels.Slice[:, 4:0:-2])),
        "Index_integer": kernels.serial(_dense(), kernels.Index(2, axis=1)),
        "Index_channels": kernels.serial(
            _dense(), kernels.Index(slice(0, 2), axis=-1), kernels.Dense(2, 1.0, 0.1)
        ),
        "ImageResize_linear": kernels.serial(_dense(), kernels.ImageResize((9,))),
        "ImageResize_nearest": kernels.serial(
            _dense(), kernels.ImageResize((4,), "nearest")
        ),
    }
    return [pytest.param(net, id=name) for name, net in cases.items()]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("net", _combinator_cases())
def test_structural_features_are_exact(net, masked):
    assert_exact(net, _inputs(), _mask() if masked else None)


@pytest.mark.parametrize("is_lhs", [False, True])
def test_dot_general_features_are_exact(is_lhs):
    fixed = jax.random.normal(jax.random.key(2), (4, 6))
    if is_lhs:  # (4, 6) x (N, 6, C) contracted over the positions: (N, 4, C)
        layer = kernels.DotGeneral(
            lhs=fixed, dimension_numbers=(((1,), (1,)), ((), ()))
        )
    else:  # (N, 6, C) x (4, 6)^T: the same map written from the right
        layer = kernels.DotGeneral(fixed.T, dimension_numbers=(((1,), (0,)), ((), ())))
    nngp, _ = assert_exact(kernels.serial(_dense(), layer), _inputs())
    assert nngp.shape[:2] == (3, 4)


def test_dot_general_features_refuse_masks():
    layer = kernels.DotGeneral(jnp.ones((6, 2)), (((1,), (0,)), ((), ())))
    fmap = kernels.feature_map(kernels.serial(_dense(), layer), jax.random.key(0), 4)
    with pytest.raises(ValueError, match="DotGeneral does not support masks"):
        fmap(_inputs(), mask=_mask())


def test_concat_positions_needs_gaussian_branches():
    net = kernels.serial(
        _dense(),
        kernels.FanOut(2),
        kernels.parallel(kernels.Relu(), kernels.Relu()),
        kernels.FanInConcat(axis=1),
    )
    with pytest.raises(ValueError, match="needs Gaussian branches"):
        kernels.feature_map(net, jax.random.key(0), 4)(_inputs())


def _gram_moments(net, x, num_keys, dim, mask=None):
    """Means and standard errors of the feature Gram matrices over independent keys."""

    def grams(key):
        nngp, ntk = kernels.feature_map(net, key, dim)(x, mask=mask)
        return position_gram(nngp), position_gram(ntk)

    keys = jax.random.split(jax.random.key(11), num_keys)
    out = []
    for sample in jax.lax.map(grams, keys):
        sample = np.asarray(sample)
        out.append((sample.mean(0), sample.std(0, ddof=1) / np.sqrt(num_keys)))
    return out


def assert_unbiased(net, x, mask=None, num_keys=64, dim=16, **kwargs):
    """The mean feature Gram matrices over ``num_keys`` keys match the exact kernels
    within their standard errors (1e-4 family-wise false-alarm rate)."""
    moments = _gram_moments(net, x, num_keys, dim, mask)
    expected = net.kernel(x, mask1=mask, **kwargs)
    for (mean, stderr), exact, name in zip(
        moments, expected, ("nngp", "ntk"), strict=True
    ):
        assert_within_stderr(mean, stderr, exact, dof=num_keys - 1, name=name)


@pytest.mark.parametrize("n_branches", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_fan_in_prod_features_are_unbiased(n_branches):
    # Exact branch features, one sketch: E[Gram] is exactly the product kernel.
    branches = [kernels.Dense(3, 1.0 + 0.2 * i, 0.4) for i in range(n_branches)]
    net = kernels.serial(
        kernels.FanOut(n_branches), kernels.parallel(*branches), kernels.FanInProd()
    )
    x, dim = _inputs(()), 4  # dim = the branches' widths: one Hadamard block
    fmap = kernels.feature_map(net, jax.random.key(0), dim)
    nngp, ntk = jax.eval_shape(fmap, x)
    assert nngp.shape == (3, dim) and ntk.shape == (3, dim * n_branches)
    assert_unbiased(net, x, dim=dim)


@pytest.mark.parametrize(
    ("layer", "name"),
    [
        (kernels.Dropout(0.5), "Dropout"),
        (kernels.Aggregate(), "Aggregate"),
        (kernels.GlobalSelfAttention(4, 4, 4, 2), "GlobalSelfAttention"),
    ],
)
def test_layers_without_features_are_refused_inside_combinators(layer, name):
    # The refusal comes when the map is built, from deep inside the network.
    net = kernels.serial(
        _dense(),
        kernels.FanOut(2),
        kernels.parallel(kernels.Identity(), kernels.repeat(layer, 2)),
        kernels.FanInSum(),
    )
    with pytest.raises(NotImplementedError, match=f"{name} has no feature map"):
        kernels.feature_map(net, jax.random.key(0), 4)
