"""Feature rules of the structural layers: pooling, normalisation, combinators and
fixed linear maps.

Deterministic rules are exact: the inner products of the features equal the exact
kernel (``Layer.kernel``) to rounding, position pair by position pair. Rules after
one random layer are unbiased: the average Gram matrix over independent keys is
compared with the exact kernel within its standard error.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_within_stderr
from layer_cases import ACTIVATIONS, MASKED_LAYERS

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


# --- The contract over every layer -------------------------------------------------
#
# Every layer either has a feature map whose Gram matrices are the exact kernels
# (exactly for a deterministic map; in expectation over keys when the network has
# one random layer), or is refused by name when the map is built.

_CONV_NAMES = ("Conv", "ConvLocal", "ConvTranspose")


@dataclasses.dataclass(frozen=True)
class FeatureCase:
    """A network under the feature contract.

    Attributes:
        make: builds the network (inputs ``(3, *spatial, 2)``).
        spatial: spatial shape of the inputs.
        masked: run with the padding mask of :func:`_mask`.
        refused_by: the layer the map must be refused for, or ``None``.
        may_refuse: layers whose feature rule may be missing (another branch adds
            it); a network refused for one of them passes, any other must map.
        diagonal_spatial: evaluate the kernel in diagonal layout (``Flatten``).
    """

    make: Callable[[], kernels.Layer]
    spatial: tuple[int, ...] = (6,)
    masked: bool = False
    refused_by: str | None = None
    may_refuse: tuple[str, ...] = ()
    diagonal_spatial: bool = False


def _on_dense(*layers, std=1.2):
    return lambda: kernels.serial(kernels.Dense(3, std, 0.3), *layers)


def _elementwise_square():
    return kernels.Elementwise(lambda x: x**2, lambda c, q1, q2: 2 * c**2 + q1 * q2)


# One case per public layer constructor (the activations come from ACTIVATIONS).
CONSTRUCTOR_CASES = {
    "Dense": FeatureCase(_on_dense(kernels.Dense(2, 0.8, 0.1)), spatial=()),
    "serial_Relu": FeatureCase(
        _on_dense(kernels.Relu(), kernels.Dense(2, 0.8, 0.1)), spatial=()
    ),
    "Elementwise": FeatureCase(_on_dense(_elementwise_square()), spatial=()),
    "Elementwise_kernel_only": FeatureCase(
        _on_dense(kernels.Elementwise(nngp_fn=lambda c, q1, q2: 2 * c**2 + q1 * q2)),
        refused_by="Elementwise",
    ),
    "AvgPool": FeatureCase(_on_dense(kernels.AvgPool((3,), (1,), "SAME")), masked=True),
    "SumPool": FeatureCase(_on_dense(kernels.SumPool((2,), (2,))), masked=True),
    "GlobalAvgPool": FeatureCase(_on_dense(kernels.GlobalAvgPool()), masked=True),
    "GlobalSumPool": FeatureCase(_on_dense(kernels.GlobalSumPool()), masked=True),
    "Flatten": FeatureCase(
        _on_dense(kernels.Flatten()), masked=True, diagonal_spatial=True
    ),
    "LayerNorm": FeatureCase(_on_dense(kernels.LayerNorm((1, 2))), masked=True),
    "Index": FeatureCase(_on_dense(kernels.Index(slice(1, 5), axis=1)), masked=True),
    "DotGeneral": FeatureCase(
        _on_dense(kernels.DotGeneral(jnp.ones((6, 2)), (((1,), (0,)), ((), ()))))
    ),
    "ImageResize": FeatureCase(_on_dense(kernels.ImageResize((8,))), masked=True),
    "Dropout_test": FeatureCase(_on_dense(kernels.Dropout(0.7, "test"))),
    "Dropout_keep_all": FeatureCase(_on_dense(kernels.Dropout(1.0))),
    "Dropout_train": FeatureCase(_on_dense(kernels.Dropout(0.7)), refused_by="Dropout"),
    "Aggregate": FeatureCase(_on_dense(kernels.Aggregate()), refused_by="Aggregate"),
    "GlobalSelfAttention": FeatureCase(
        _on_dense(kernels.GlobalSelfAttention(4, 4, 4, 2)),
        refused_by="GlobalSelfAttention",
    ),
    "Conv": FeatureCase(
        _on_dense(kernels.Conv(2, (3,), padding="SAME")), may_refuse=_CONV_NAMES
    ),
    "ConvLocal": FeatureCase(
        _on_dense(kernels.ConvLocal(2, (2,), padding="VALID")), may_refuse=_CONV_NAMES
    ),
    "ConvTranspose": FeatureCase(
        _on_dense(kernels.ConvTranspose(2, (2,), (2,))), may_refuse=_CONV_NAMES
    ),
    "residual": FeatureCase(
        _on_dense(
            kernels.FanOut(2),
            kernels.parallel(kernels.Dense(3, 0.9, 0.1), kernels.Identity()),
            kernels.FanInSum(),
        ),
        masked=True,
    ),
    "FanInConcat": FeatureCase(
        _on_dense(
            kernels.FanOut(2),
            kernels.parallel(kernels.Dense(3, 0.9, 0.1), kernels.Identity()),
            kernels.FanInConcat(),
        ),
        masked=True,
    ),
    "FanInProd": FeatureCase(
        _on_dense(
            kernels.FanOut(2),
            kernels.parallel(kernels.Dense(3, 0.9, 0.1), kernels.Identity()),
            kernels.FanInProd(),
        ),
        spatial=(),
    ),
    "repeat": FeatureCase(_on_dense(kernels.repeat(kernels.Dense(3, 0.9, 0.2), 2))),
}


def _masked_layer_cases():
    """The mask-aware networks of ``layer_cases.MASKED_LAYERS``, with masks."""
    cases = {}
    for name, case in MASKED_LAYERS.items():
        refused_by = None
        if "attention" in name.lower():
            refused_by = "GlobalSelfAttention"
        may_refuse = _CONV_NAMES if name.startswith("Conv") else ()
        cases[f"masked_{name}"] = FeatureCase(
            case.make, case.spatial, True, refused_by, may_refuse
        )
    return cases


def _activation_cases():
    """Every activation of ``layer_cases.ACTIVATIONS`` between two ``Dense``."""
    cases = {}
    for name, case in ACTIVATIONS.items():
        make = _on_dense(case.make(), kernels.Dense(2, 0.9, 0.1), std=case.input_std)
        refused_by = None if case.has_finite else case.make().name
        cases[f"activation_{name}"] = FeatureCase(make, (), refused_by=refused_by)
    return cases


ALL_CASES = {**CONSTRUCTOR_CASES, **_masked_layer_cases(), **_activation_cases()}
# Deterministic maps and refusals are fast (but for one 2-D full-layout case); the
# fast tier keeps one Monte Carlo case here (test_cnn_features_are_unbiased and
# test_per_position_features_... add spatial ones).
_FAST_RANDOM = {"serial_Relu"}
_SLOW_DETERMINISTIC = {"masked_SumPool2d"}
_RANDOM = {"serial_Relu", "Elementwise", "FanInProd"} | {
    name
    for name in ALL_CASES
    if name.startswith("activation_")
    or name in {"masked_Dense_Relu", "masked_GlobalAvgPool", "masked_GlobalSumPool"}
    or name == "masked_Index_positions"
    # windows wider than dim=16 are projected back by an SRHT
    or name in {"masked_Conv2d_even_odd", "masked_ConvTranspose2d_strided"}
}


def _case_params():
    params = []
    for name in ALL_CASES:
        slow = name in _SLOW_DETERMINISTIC or (
            name in _RANDOM and name not in _FAST_RANDOM
        )
        marks = [pytest.mark.slow] if slow else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.mark.parametrize("name", _case_params())
def test_feature_contract(name):
    case = ALL_CASES[name]
    net = case.make()
    x = _inputs(case.spatial)
    mask = _mask(case.spatial) if case.masked else None
    try:
        fmap = kernels.feature_map(net, jax.random.key(0), 16)
    except NotImplementedError as error:
        refused = str(error).split(" has no feature map")[0]
        allowed = (case.refused_by, *case.may_refuse)
        assert refused in allowed, f"{name}: refused for {refused}: {error}"
        return
    assert case.refused_by is None, f"{name}: {case.refused_by} was not refused"
    first = fmap(x, mask=mask)
    second = kernels.feature_map(net, jax.random.key(1), 16)(x, mask=mask)
    deterministic = all(
        np.array_equal(a, b) for a, b in zip(first, second, strict=True)
    )
    kwargs = {"diagonal_spatial": case.diagonal_spatial}
    if deterministic:
        expected = net.kernel(x, mask1=mask, **kwargs)
        for features, exact in zip(first, expected, strict=True):
            np.testing.assert_allclose(position_gram(features), exact, **EXACT)
    else:
        assert name in _RANDOM, f"{name}: random features; list it in _RANDOM"
        assert_unbiased(net, x, mask, **kwargs)


# --- Networks ------------------------------------------------------------------------
# ``Dense`` on inputs ``(N, *S, C)`` acts on each position with shared weights (a
# 1x1 convolution), which is the convolutional part of these small networks.


def _cnn(readout):
    return kernels.serial(
        kernels.Dense(4, 1.3, 0.2),
        kernels.Relu(),
        kernels.Dense(4, 1.1, 0.1),
        readout,
        kernels.Dense(1, 0.9, 0.05),
    )


@pytest.mark.parametrize(
    ("readout", "diagonal"),
    [
        pytest.param(kernels.GlobalAvgPool(), False, id="GlobalAvgPool"),
        pytest.param(kernels.Flatten(), True, id="Flatten", marks=pytest.mark.slow),
        pytest.param(
            kernels.GlobalSumPool(), False, id="GlobalSumPool", marks=pytest.mark.slow
        ),
    ],
)
def test_cnn_features_are_unbiased(readout, diagonal):
    net = _cnn(readout)
    x = _inputs((3, 2))
    nngp, ntk = jax.eval_shape(kernels.feature_map(net, jax.random.key(0), 16), x)
    assert nngp.ndim == ntk.ndim == 2  # (N, m): no spatial axes left
    assert_unbiased(net, x, diagonal_spatial=diagonal)


@pytest.mark.slow
def test_residual_network_features_are_unbiased():
    block = kernels.serial(kernels.Relu(), kernels.Dense(3, 1.1, 0.1))
    net = kernels.serial(
        kernels.Dense(3, 1.2, 0.3),
        kernels.FanOut(2),
        kernels.parallel(block, kernels.Identity()),
        kernels.FanInSum(),
        kernels.GlobalAvgPool(),
    )
    assert_unbiased(net, _inputs(), _mask())


@pytest.mark.parametrize(
    "readout",
    [
        pytest.param(kernels.GlobalAvgPool(), id="GlobalAvgPool"),
        pytest.param(
            kernels.GlobalSumPool(), id="GlobalSumPool", marks=pytest.mark.slow
        ),
    ],
)
def test_padding_does_not_change_pooled_features(readout):
    # Appending padded positions (with arbitrary values) leaves the features of a
    # network ending in a masked global pool unchanged, for the same key.
    net = kernels.serial(
        kernels.Dense(4, 1.3, 0.2),
        kernels.Relu(),
        kernels.Dense(4, 1.1, 0.1),
        kernels.LayerNorm(axis=(1, 2)),
        readout,
    )
    x, mask = _inputs(), _mask()
    junk = 5.0 * jax.random.normal(jax.random.key(9), (3, 4, 2))
    padded_x = jnp.concatenate([x, junk], axis=1)
    padded_mask = jnp.concatenate([mask, jnp.ones((3, 4), bool)], axis=1)
    fmap = kernels.feature_map(net, jax.random.key(0), 16)
    for short, long in zip(
        fmap(x, mask=mask), fmap(padded_x, mask=padded_mask), strict=True
    ):
        np.testing.assert_allclose(long, short, rtol=1e-12, atol=1e-12)


def test_per_position_features_estimate_the_full_layout_kernel():
    # Output with spatial axes: features (N, *S, m), one row per position; their
    # inner products over every pair of positions estimate the (N, N, S1, S1', S2,
    # S2') kernel.
    net = kernels.serial(
        kernels.Dense(3, 1.2, 0.3), kernels.Relu(), kernels.Dense(2, 0.9, 0.1)
    )
    x = _inputs((3, 2))
    nngp, ntk = jax.eval_shape(kernels.feature_map(net, jax.random.key(0), 16), x)
    assert nngp.shape == (3, 3, 2, 17) and ntk.shape == (3, 3, 2, 33)
    assert net.kernel(x, get="nngp").shape == (3, 3, 3, 3, 2, 2)
    assert_unbiased(net, x)


def _mixed_network():
    return kernels.serial(
        kernels.Dense(3, 1.2, 0.3),
        kernels.FanOut(2),
        kernels.parallel(
            kernels.AvgPool((3,), (1,), "SAME"), kernels.Dense(2, 0.9, 0.1)
        ),
        kernels.FanInConcat(),
        kernels.Dense(3, 1.1, 0.2),
        kernels.LayerNorm(),
        kernels.ImageResize((8,)),
        kernels.Relu(),
        kernels.Dense(2, 1.0, 0.1),
        kernels.GlobalAvgPool(),
    )


def test_structural_features_keep_float32_and_jit():
    fmap = kernels.feature_map(_mixed_network(), jax.random.key(0), 8)
    x, mask = _inputs().astype(jnp.float32), _mask()
    eager = fmap(x, mask=mask)
    jitted = jax.jit(lambda x, mask: fmap(x, mask=mask))(x, mask)
    for e, j in zip(eager, jitted, strict=True):
        assert e.dtype == j.dtype == jnp.float32 and e.ndim == 2
        assert bool(jnp.all(jnp.isfinite(e)))
        np.testing.assert_allclose(j, e, rtol=1e-5, atol=1e-6)
