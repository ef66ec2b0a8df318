"""``widebnn.numpyro_model``: NumPyro's log joint equals ``log_prior +
log_likelihood`` of the same ``WideBNN`` (closed-form sums, 1e-10), and its
pointwise log-likelihood has one term per observed value (scipy's normal
log-density of each residual)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from numpyro.infer import Predictive, log_likelihood
from numpyro.infer.util import log_density

from widebnn import WideBNN, kernels, numpyro_model


def deep_body(width):
    return kernels.serial(
        kernels.Dense(6, 1.3, 0.2), kernels.Relu(),
        kernels.Dense(5, 1.1, 0.3), kernels.Erf(),
        kernels.Dense(width, 1.2, 0.1), kernels.Relu(),
    )  # fmt: skip


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_log_density_equals_log_prior_plus_log_likelihood(parameterization):
    model = WideBNN(deep_body(7), 7, 1.4, 0.3, 0.2, 2, parameterization)
    npm = numpyro_model(model)
    kx, ky, kp = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (9, 3))
    y = jax.random.normal(ky, (9, 2))
    names = npm.site_names(x.shape)
    assert names[-2:] == ["readout_W", "readout_b"] and names[0] == "body_0_W"

    @jax.jit
    def both(params):
        flat = dict(zip(names, jax.tree.leaves(params), strict=True))
        theirs, trace = log_density(npm, (x,), {"y": y}, flat)
        ours = model.log_prior(params) + model.log_likelihood(params, x, y)
        return theirs, ours, trace["f"]["value"], model.predict(params, x)

    for seed in range(3):  # prior draws scaled by 1.5: not only typical points
        params = model.init(jax.random.fold_in(kp, seed), x.shape)
        params = jax.tree.map(lambda v: 1.5 * v, params)
        theirs, ours, f_theirs, f_ours = both(params)
        assert float(theirs) == pytest.approx(float(ours), rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(f_theirs, f_ours, rtol=1e-12)
    flat = dict(zip(names, jax.tree.leaves(params), strict=True))
    back = npm.to_params(flat, x.shape)
    assert jax.tree.structure(back) == jax.tree.structure(params)


def test_predictive_draws_and_errors():
    model = WideBNN(deep_body(5), 5, 1.0, 0.1, 0.1, 2)
    npm = numpyro_model(model)
    x = jnp.linspace(-1.0, 1.0, 4)[:, None] * jnp.ones((1, 3))
    prior = Predictive(npm, num_samples=4)(jax.random.key(1), x)
    assert prior["f"].shape == (4, 4, 2) and prior["y"].shape == (4, 4, 2)
    params = npm.to_params(prior, x.shape)  # leading sample axis kept
    f = jax.vmap(model.predict, (0, None))(params, x)
    np.testing.assert_allclose(prior["f"], f, rtol=1e-12)
    with pytest.raises(ValueError, match="y must have shape"):
        log_density(npm, (x,), {"y": jnp.zeros(4)}, {k: prior[k][0] for k in prior})
    with pytest.raises(KeyError, match="readout_W"):
        npm.to_params({}, x.shape)
    with pytest.raises(TypeError, match="WideBNN"):
        numpyro_model(kernels.Relu())


def test_log_likelihood_is_pointwise():
    """``numpyro.infer.log_likelihood`` gives ``(draws, N, d)``: one term per
    target value (so LOO sees N points when d = 1), each scipy's normal
    log-density of its residual; their sum is ``WideBNN.log_likelihood``."""
    model = WideBNN(deep_body(5), 5, 1.0, 0.1, 0.3, 2)
    npm = numpyro_model(model)
    kx, ky, kp = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(kx, (6, 3))
    y = jax.random.normal(ky, (6, 2))
    prior = Predictive(npm, num_samples=3)(kp, x)
    samples = {name: prior[name] for name in npm.site_names(x.shape)}
    pointwise = log_likelihood(npm, samples, x, y=y)["y"]
    assert pointwise.shape == (3, 6, 2)
    expected = scipy.stats.norm.logpdf(np.asarray(y), np.asarray(prior["f"]), 0.3)
    np.testing.assert_allclose(pointwise, expected, rtol=1e-10)
    params = npm.to_params(samples, x.shape)
    total = jax.vmap(model.log_likelihood, (0, None, None))(params, x, y)
    np.testing.assert_allclose(pointwise.sum((1, 2)), total, rtol=1e-10)
