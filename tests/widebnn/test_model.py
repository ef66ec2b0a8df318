"""WideBNN: log densities against scipy, leaf names, readout split, kernel limit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from _helpers import assert_within_stderr

from widebnn import WideBNN, kernels

W_STD, B_STD = 1.5, 0.2  # hidden layer
OUT_W_STD, OUT_B_STD = 1.3, 0.4  # readout
NOISE = 0.3


def relu_model(width=6, out_dim=2, parameterization="ntk"):
    body = kernels.serial(kernels.Dense(width, W_STD, B_STD), kernels.Relu())
    return WideBNN(body, width, OUT_W_STD, OUT_B_STD, NOISE, out_dim, parameterization)


def data(n=5, d_in=3, out_dim=2, seed=0):
    kx, ky = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (n, d_in)), jax.random.normal(ky, (n, out_dim))


def numpy_forward(params, x, width, parameterization):
    """Independent numpy forward pass of the 1-hidden-layer ReLU model."""
    (dense, _relu) = params["body"]
    w1, b1 = np.asarray(dense["W"]), np.asarray(dense["b"])
    x = np.asarray(x)
    h = np.maximum(W_STD / math.sqrt(x.shape[1]) * x @ w1 + B_STD * b1, 0.0)
    w2, b2 = np.asarray(params["readout"]["W"]), np.asarray(params["readout"]["b"])
    if parameterization == "standard":
        return h @ w2 + b2
    return OUT_W_STD / math.sqrt(width) * h @ w2 + OUT_B_STD * b2


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_leaf_names_and_shapes(parameterization):
    model = relu_model(parameterization=parameterization)
    params = model.init(jax.random.key(1), (5, 3))
    assert set(params) == {"body", "readout"}
    assert set(params["readout"]) == {"W", "b"}
    assert params["readout"]["W"].shape == (6, 2)
    assert params["readout"]["b"].shape == (2,)
    assert params["body"][0]["W"].shape == (3, 6)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_log_prior_and_likelihood_match_scipy(parameterization):
    model = relu_model(parameterization=parameterization)
    x, y = data()
    params = model.init(jax.random.key(2), x.shape)
    body = jax.tree_util.tree_leaves(params["body"])
    expected_prior = sum(scipy.stats.norm.logpdf(np.asarray(v)).sum() for v in body)
    w_sd = OUT_W_STD / math.sqrt(6) if parameterization == "standard" else 1.0
    b_sd = OUT_B_STD if parameterization == "standard" else 1.0
    readout = params["readout"]
    expected_prior += scipy.stats.norm.logpdf(np.asarray(readout["W"]), 0, w_sd).sum()
    expected_prior += scipy.stats.norm.logpdf(np.asarray(readout["b"]), 0, b_sd).sum()
    np.testing.assert_allclose(model.log_prior(params), expected_prior, rtol=1e-12)

    f = numpy_forward(params, x, 6, parameterization)
    np.testing.assert_allclose(model.predict(params, x), f, rtol=1e-12, atol=1e-12)
    expected_lik = scipy.stats.norm.logpdf(np.asarray(y), f, NOISE).sum()
    np.testing.assert_allclose(
        model.log_likelihood(params, x, y), expected_lik, rtol=1e-12
    )


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_features_times_readout_is_forward_pass(parameterization):
    """spec D.6: predict(theta) == T(theta_rest) @ theta_out, and split/merge."""
    model = relu_model(parameterization=parameterization)
    x, _ = data()
    params = model.init(jax.random.key(3), x.shape)
    hidden, theta_out = model.split_readout(params)
    assert theta_out.shape == (7, 2)
    features = model.features(hidden, x)
    assert features.shape == (5, 7)
    np.testing.assert_allclose(features[:, -1], OUT_B_STD, rtol=1e-15)
    np.testing.assert_allclose(
        features @ theta_out, model.predict(params, x), rtol=1e-12, atol=1e-12
    )
    merged = model.merge_readout(hidden, theta_out)
    for a, b in zip(
        jax.tree_util.tree_leaves(merged),
        jax.tree_util.tree_leaves(params),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    if parameterization == "ntk":  # whitened readout = stored values, W then b
        np.testing.assert_array_equal(theta_out[:-1], params["readout"]["W"])
        np.testing.assert_array_equal(theta_out[-1], params["readout"]["b"])


def relu_nngp_numpy(x):
    """Closed-form NNGP of Dense -> Relu -> Dense (arc-cosine kernel, numpy)."""
    x = np.asarray(x)
    k = W_STD**2 * x @ x.T / x.shape[1] + B_STD**2
    q = np.sqrt(np.diag(k))
    cos = np.clip(k / np.outer(q, q), -1, 1)
    angle = np.arccos(cos)
    relu = np.outer(q, q) * (np.sin(angle) + (np.pi - angle) * cos) / (2 * np.pi)
    return OUT_W_STD**2 * relu + OUT_B_STD**2


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_kernel_is_closed_form_relu_nngp(parameterization):
    model = relu_model(parameterization=parameterization)
    x, _ = data(n=6)
    np.testing.assert_allclose(model.kernel(x), relu_nngp_numpy(x), rtol=1e-10)


def test_kernel_matches_prior_covariance_of_finite_model():
    """For one hidden layer the prior covariance of f is the NNGP at any width.

    Monte Carlo over 4000 prior draws at width 8; entries compared with their
    standard errors (Bonferroni, false-alarm rate 1e-4).
    """
    model = relu_model(width=8, out_dim=1)
    x, _ = data(n=4)
    keys = jax.random.split(jax.random.key(4), 4000)
    f = jax.vmap(lambda k: model.predict(model.init(k, x.shape), x)[:, 0])(keys)
    products = np.asarray(f[:, :, None] * f[:, None, :])  # prior mean of f is 0
    estimate = products.mean(0)
    stderr = products.std(0, ddof=1) / math.sqrt(len(keys))
    assert_within_stderr(
        estimate, stderr, model.kernel(x), dof=len(keys) - 1, name="prior cov"
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"width": 0}, "width"),
        ({"width": 2**31}, "width"),  # XLA's int32 axes: used to abort the process
        ({"out_dim": 2**31}, "out_dim"),
        ({"out_dim": 0}, "out_dim"),
        ({"noise_std": 0.0}, "noise_std"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"readout_W_std": 0.0}, "readout_W_std"),
        ({"readout_b_std": float("nan")}, "readout_b_std"),
        ({"parameterization": "mup"}, "parameterization"),
        ({"body": "dense"}, "body"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    args = dict(
        body=kernels.Relu(),
        width=3,
        readout_W_std=1.0,
        readout_b_std=0.1,
        noise_std=0.1,
        out_dim=1,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        WideBNN(**args)


def test_body_output_must_match_width():
    model = relu_model(width=6)
    wrong = WideBNN(model.body, 5, 1.0, 0.1, 0.1)
    with pytest.raises(ValueError, match="width"):
        wrong.init(jax.random.key(0), (4, 3))
    with pytest.raises(ValueError, match="width"):
        WideBNN(kernels.Relu(), 3, 1.0, 0.1, 0.1).init(jax.random.key(0), (4, 2, 3))


def test_log_joint_traces_once_for_new_data():
    model = relu_model()
    params = model.init(jax.random.key(0), (5, 3))
    count = 0

    def fn(p, x, y):
        nonlocal count
        count += 1
        return model.log_joint(p, x, y)

    jitted = jax.jit(fn)
    for seed in range(3):
        x, y = data(seed=seed)
        jitted(params, x, y)
    assert count == 1
    assert jnp.isfinite(jitted(params, x, y))
