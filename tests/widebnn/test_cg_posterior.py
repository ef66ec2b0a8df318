"""``gp.posterior(..., solver="cg")`` against the Cholesky posterior of the same GP.

The oracle is the package's dense path, itself checked against scikit-learn and
numpy in ``test_gp.py``; here the two solvers must agree to 1e-8.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from relu_gp_oracle import relu_network

from widebnn import gp, kernels

NOISE = 1e-2
QUIET = {"progress": False, "tile": 64}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(150, 4))
    y = np.stack([np.sin(x[:, 0]), np.cos(x.sum(1))], axis=1)
    return relu_network(depth=2), x, y, rng.normal(size=(12, 4))


def _assert_same_prediction(dense, iterative, x_test):
    for full_cov in (True, False):
        for noise in (False, True):
            a = dense.predict(x_test, full_cov, observation_noise=noise)
            b = iterative.predict(x_test, full_cov, observation_noise=noise)
            np.testing.assert_allclose(b.mean, a.mean, rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(b.covariance, a.covariance, atol=1e-8)


@pytest.mark.parametrize("get", ["nngp", "ntkgp"])
def test_cg_posterior_equals_the_cholesky_posterior(data, get):
    net, x, y, x_test = data
    kwargs = dict(noise_var=NOISE, get=get, diag_reg=1e-3)
    dense = gp.posterior(net, x, y, solver="cholesky", **kwargs)
    iterative = gp.posterior(net, x, y, solver="cg", cg_options=QUIET, **kwargs)
    assert isinstance(iterative, gp.IterativePosterior) and iterative.converged
    assert iterative.relative_residuals.shape == (2,)
    np.testing.assert_allclose(iterative.added_diagonal, dense.added_diagonal)
    np.testing.assert_allclose(iterative.mean_diagonal, dense.mean_diagonal)
    _assert_same_prediction(dense, iterative, x_test)
    np.testing.assert_allclose(
        iterative.predict_mean(x_test), dense.predict(x_test).mean, rtol=1e-8, atol=1e-8
    )


def test_every_preconditioner_gives_the_same_posterior_and_features_cut_iterations(
    data,
):
    """Random features of the network as the preconditioner: plain CG took 155
    products here, dim-256 features 40-42 over keys 0-3 (3.7x), rank-40 pivoted
    Cholesky 35 (measured); asked: at least 2x."""
    net, x, y, x_test = data
    dense = gp.posterior(net, x, y, noise_var=NOISE)
    fmap = kernels.feature_map(net, jax.random.key(0), dim=256)
    runs = {}
    for name, choice in [
        ("none", None),
        ("pivoted", "pivoted_cholesky"),
        ("features", fmap),
    ]:
        options = {
            **QUIET,
            "preconditioner": choice,
            "rank": 40,
            "cache": name != "none",
        }
        runs[name] = gp.posterior(
            net, x, y, noise_var=NOISE, solver="cg", cg_options=options
        )
        mean = runs[name].predict(x_test, full_cov=False).mean
        np.testing.assert_allclose(
            mean, dense.predict(x_test).mean, rtol=1e-8, atol=1e-8
        )
    assert runs["none"].preconditioner_rank == 0
    assert runs["pivoted"].preconditioner_rank == 40
    assert runs["features"].preconditioner_rank == 257  # dim + the bias column
    assert runs["features"].iterations * 2 <= runs["none"].iterations, {
        k: r.iterations for k, r in runs.items()
    }


def test_auto_is_cholesky_on_small_data_and_inside_jit(data):
    net, x, y, x_test = data
    assert isinstance(gp.posterior(net, x, y, noise_var=NOISE), gp.Posterior)

    @jax.jit
    def mean(noise):
        return gp.posterior(net, x, y, noise_var=noise).predict(x_test).mean

    np.testing.assert_allclose(
        mean(NOISE), gp.posterior(net, x, y, noise_var=NOISE).predict(x_test).mean
    )
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda v: gp.posterior(net, x, y, noise_var=v, solver="cg"))(NOISE)


def test_log_marginal_likelihood_estimate_is_within_its_standard_error(data):
    """|estimate - exact| <= 4 standard errors (false-alarm rate 6e-5). The
    formula's terms are large here (``N out / 2 log 2 pi`` = 276, ``out / 2 log det``
    = -415), so a standard error under 10 (4.5 measured, 16 probes) still detects a
    missing term or factor."""
    net, x, y, _ = data
    dense = gp.posterior(net, x, y, noise_var=NOISE)
    options = {**QUIET, "rank": 40}
    iterative = gp.posterior(
        net, x, y, noise_var=NOISE, solver="cg", cg_options=options
    )
    estimate = iterative.estimate_log_marginal_likelihood(jax.random.key(0), probes=16)
    exact = float(dense.log_marginal_likelihood)
    assert abs(estimate.value - exact) <= 4 * estimate.standard_error, (estimate, exact)
    assert 0 < estimate.standard_error < 10


def test_non_convergence_is_reported_not_hidden(data):
    net, x, y, _ = data
    options = {**QUIET, "max_iters": 3, "preconditioner": None}
    with pytest.warns(RuntimeWarning, match="stopped after 3 products"):
        post = gp.posterior(net, x, y, noise_var=NOISE, solver="cg", cg_options=options)
    assert not post.converged and post.iterations == 3
    assert np.all(post.relative_residuals > 1e-10)


def test_bad_solver_arguments_name_themselves(data):
    net, x, y, _ = data
    call = lambda **kw: gp.posterior(net, x, y, **{"noise_var": NOISE, **kw})  # noqa: E731
    with pytest.raises(ValueError, match="solver must be one of"):
        call(solver="qr")
    with pytest.raises(ValueError, match="get='ntk'"):
        call(solver="cg", get="ntk")
    with pytest.raises(ValueError, match="unknown keys \\['tolerance'\\]"):
        call(solver="cg", cg_options={"tolerance": 1e-6})
    with pytest.raises(ValueError, match="rank"):
        call(solver="cg", cg_options={"rank": 0})
    with pytest.raises(ValueError, match="preconditioner"):
        call(solver="cg", cg_options={"preconditioner": "jacobi"})
    exact = kernels.feature_map(net, jax.random.key(0), dim=16, method="exact")
    with pytest.raises(ValueError, match="method='exact'"):
        call(solver="cg", cg_options={"preconditioner": exact})
    with pytest.raises(ValueError, match="cg_options is for solver='cg'"):
        call(solver="cholesky", cg_options={"tol": 1e-6})
    with pytest.raises(ValueError, match="noise_var \\+ regulariser > 0"):
        call(solver="cg", noise_var=0.0, cg_options=QUIET)
