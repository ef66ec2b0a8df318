"""The ``hmc`` driver: bad input, results, failure handling, statistical tests.

Statistical tests use fixed seeds; thresholds are Bonferroni-corrected quantiles for
a stated false-alarm rate (KS tests on independent chains, or t-bounds with the
standard error from the effective sample size).

Most runs here are deliberately short (a few draws that check shapes, counts or
one transition's invariance), which ``hmc`` rightly warns about; its warnings are
tested in ``test_sampler_run.py`` and ignored here.
"""

import math

import arviz as az
import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from _helpers import bonferroni_t_quantile
from jax.flatten_util import ravel_pytree

from widebnn import WideBNN, diagnostics, kernels, samplers

pytestmark = pytest.mark.filterwarnings("ignore::widebnn.samplers.SamplerWarning")
SIGMA = 0.5


def linear_problem(n=12, seed=0):
    """Bayesian linear model on correlated inputs (an ill-conditioned Gaussian
    posterior) with its closed-form readout posterior."""
    model = WideBNN(kernels.Identity(), 2, 1.0, 0.5, SIGMA, 1)
    kx, ke, ky = jax.random.split(jax.random.key(seed), 3)
    x1 = jax.random.normal(kx, (n, 1))
    x = jnp.concatenate([x1, x1 + 0.2 * jax.random.normal(ke, (n, 1))], 1)
    y = x1 - 0.5 + SIGMA * jax.random.normal(ky, (n, 1))
    t = np.concatenate([np.asarray(x) / math.sqrt(2), np.full((n, 1), 0.5)], 1)
    cov = np.linalg.inv(np.eye(3) + t.T @ t / SIGMA**2)
    mean = cov @ t.T @ np.asarray(y)[:, 0] / SIGMA**2
    return model, x, y, mean, cov


def readout_draws(posterior):
    r = posterior.params["readout"]
    return np.concatenate([r["W"][..., 0], r["b"]], axis=-1)  # (chain, draw, 3)


def tiny_relu(width=3, noise=SIGMA):
    body = kernels.serial(kernels.Dense(width, 1.5, 0.3), kernels.Relu())
    return WideBNN(body, width, 1.0, 0.3, noise, 1)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"y": np.zeros(12)}, "y"),
        ({"y": np.zeros((11, 1))}, "x"),
        ({"y": np.full((12, 1), np.nan)}, "y"),
        ({"x": np.full((12, 2), np.nan)}, "x"),
        ({"algorithm": "mala"}, "algorithm"),
        ({"reparam": "nngp"}, "reparam"),
        ({"num_chains": 0}, "num_chains"),
        ({"thin": 0}, "thin"),
        ({"step_size": -0.1}, "step_size"),
        ({"num_warmup": 0}, "num_warmup"),
        ({"momentum_refresh": 0.0}, "momentum_refresh"),
        ({"refresh_time": 0.0}, "refresh_time"),
        ({"refresh_time": math.inf}, "refresh_time"),
        ({"momentum_refresh": 0.1, "refresh_time": 1.0}, "refresh_time"),
        ({"kernel_reg": -1.0}, "kernel_reg"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    model, x, y, _, _ = linear_problem()
    args = {"x": x, "y": y} | kwargs
    x, y = args.pop("x"), args.pop("y")
    with pytest.raises(ValueError, match=name):
        samplers.hmc(model, x, y, key=jax.random.key(0), progress=False, **args)


def test_posterior_layout_counts_and_arviz():
    model, x, y, _, _ = linear_problem()
    post = samplers.hmc(
        model, x, y, num_warmup=20, num_samples=7, thin=3, chunk_size=3,
        key=jax.random.key(1), progress=False, x_pred=x[:5],
    )  # fmt: skip
    assert post.predictions.shape == (4, 7, 5, 1)
    assert post.params["readout"]["W"].shape == (4, 7, 2, 1)
    for name in ("lp", "acceptance_rate", "diverging", "energy", "n_steps"):
        assert post.sample_stats[name].shape == (4, 7), name
    assert post.num_grad_evals == 4 * 7 * 3  # one leapfrog step per transition
    assert post.num_warmup_grad_evals == 4 * 20 + 4
    idata = diagnostics.to_inference_data(post, observed={"y": y})
    assert idata.posterior["f"].shape == (4, 7, 5, 1)
    assert "readout_W" in idata.posterior
    assert idata.sample_stats["diverging"].dtype == bool


@pytest.mark.parametrize(
    "kwargs, beta",
    [
        ({}, 0.3),  # default refresh_time 1: beta = step_size
        ({"refresh_time": 2.0}, 0.15),
        ({"refresh_time": 0.1}, 1.0),  # clipped
        ({"momentum_refresh": 0.2}, 0.2),
    ],
)
def test_ghmc_momentum_refresh_follows_refresh_time(kwargs, beta):
    model, x, y, _, _ = linear_problem()
    post = samplers.hmc(
        model, x, y, num_warmup=1, num_samples=2, step_size=0.3,
        key=jax.random.key(1), progress=False, **kwargs,
    )  # fmt: skip
    np.testing.assert_allclose(post.settings["momentum_refresh"], np.full(4, beta))


def test_ghmc_full_refresh_forgets_the_momentum():
    """beta = 1 (refresh_time below the step) redraws the momentum every
    transition: on a flat-ish target the successive moves are uncorrelated, while
    beta = 0.01 keeps them aligned (the persistent direction)."""
    model, x, y, _, _ = linear_problem()

    def move_correlation(**kwargs):
        # The readout is moved by the chain (not drawn exactly) and by leapfrog.
        post = samplers.hmc(
            model, x, y, num_warmup=1, num_samples=400, step_size=0.05,
            key=jax.random.key(4), progress=False, num_chains=2,
            exact_readout=False, integrator="leapfrog", **kwargs,
        )  # fmt: skip
        draws = readout_draws(post)
        moves = np.diff(draws, axis=1).reshape(-1, draws.shape[-1])
        a, b = moves[:-1].ravel(), moves[1:].ravel()
        return np.corrcoef(a, b)[0, 1]

    # Lag-1 correlation of successive moves: ~0 under full refresh (MALA-like
    # moves, correlation O(step^2)), near 1 under persistent momentum.
    assert abs(move_correlation(refresh_time=0.01)) < 0.2
    assert move_correlation(momentum_refresh=0.01) > 0.8


def nan_relu_body(width):
    """Dense -> ReLU whose output is NaN where a pre-activation exceeds 2."""
    dense = kernels.Dense(width, 1.5, 0.3)

    def apply(params, x, **kwargs):
        del kwargs
        return jnp.where(x > 2.0, jnp.nan, jnp.maximum(x, 0.0))

    nan_layer = kernels.Layer(lambda key, shape: (shape, ()), apply, None)
    return kernels.serial(dense, nan_layer)


@pytest.mark.parametrize(
    "algorithm, reparam",
    [
        ("ghmc", "repriorised"),
        ("hmc", "none"),
        pytest.param("nuts", "none", marks=pytest.mark.slow),
    ],
)
def test_nonfinite_proposals_are_counted_rejections(algorithm, reparam):
    model = WideBNN(nan_relu_body(3), 3, 1.0, 0.3, 0.2, 1)
    x = jnp.linspace(-1, 1, 6)[:, None]
    y = jnp.sin(2 * x)
    post = samplers.hmc(
        model, x, y, algorithm=algorithm, reparam=reparam, num_warmup=10,
        num_samples=20, step_size=0.8, num_integration_steps=3,
        max_num_doublings=4, key=jax.random.key(2), progress=False,
    )  # fmt: skip
    assert np.all(np.isfinite(ravel_pytree(post.params)[0]))
    assert np.all(np.isfinite(post.sample_stats["lp"]))
    stat = "nonfinite" if algorithm != "nuts" else "diverging"
    assert post.sample_stats[stat].sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "algorithm, reparam, integrator",
    [
        ("ghmc", "none", "leapfrog"),
        ("ghmc", "repriorised", "leapfrog"),
        ("nuts", "none", "leapfrog"),
        ("ghmc", "none", "gaussian_split"),
        ("nuts", "none", "gaussian_split"),
    ],
)
def test_correlated_gaussian_moments(algorithm, reparam, integrator):
    """D.12/D.13: readout mean and variance against the closed form.

    Standard errors from the bulk ESS of each statistic; an ESS of at least 100 is
    required first (the split integrator mixes this stiff, likelihood-dominated
    target more slowly: twice the draws). Bonferroni over 6 comparisons,
    false-alarm rate 1e-4.
    """
    model, x, y, mean, cov = linear_problem()
    post = samplers.hmc(
        model, x, y, algorithm=algorithm, reparam=reparam, num_warmup=400,
        num_samples=2000 if integrator == "gaussian_split" else 1000,
        thin=5 if algorithm == "ghmc" else 1, exact_readout=False,
        key=jax.random.key(3), progress=False, chunk_size=500, integrator=integrator,
    )  # fmt: skip
    draws = readout_draws(post)
    z = bonferroni_t_quantile(1e-4, 6, 100)
    for i in range(3):
        values = draws[..., i]
        squares = (values - mean[i]) ** 2
        for stat, expected in ((values, mean[i]), (squares, cov[i, i])):
            ess = float(az.ess(stat, method="mean"))
            assert ess >= 100, f"ESS {ess:.0f} too small for a moment check"
            stderr = stat.std() / math.sqrt(ess)
            assert abs(stat.mean() - expected) <= z * stderr, (i, stat.mean(), expected)


@pytest.mark.parametrize(
    "algorithm", ["ghmc", "hmc", pytest.param("nuts", marks=pytest.mark.slow)]
)
def test_invariance_from_exact_draws(algorithm):
    """D.14: for a linear model the repriorised prior N(0, I) is the exact
    posterior, so 600 chains started from prior draws are exact posterior draws;
    after 4 transitions with a large step the readout must still pass a KS test
    against the closed-form marginals (Bonferroni over 3, false-alarm rate 1e-3)."""
    model, x, y, mean, cov = linear_problem()
    post = samplers.hmc(
        model, x, y, algorithm=algorithm, num_chains=600, num_warmup=0,
        num_samples=1, thin=4, step_size=0.9, momentum_refresh=0.5,
        num_integration_steps=3, max_num_doublings=3, key=jax.random.key(4),
        progress=False, exact_readout=False, integrator="leapfrog",
    )  # fmt: skip
    draws = readout_draws(post)[:, 0]
    assert post.sample_stats["acceptance_rate"].mean() > 0.5  # the chains move
    for i in range(3):
        sd = math.sqrt(cov[i, i])
        p = scipy.stats.kstest(draws[:, i], "norm", args=(mean[i], sd)).pvalue
        assert p > 1e-3 / 3, (i, p)


@pytest.mark.parametrize("algorithm", ["ghmc", "nuts"])
def test_exact_readout_of_a_linear_model_is_iid_exact(algorithm):
    """A linear model has no hidden weights: with ``exact_readout`` every draw is an
    independent exact posterior draw. KS tests of the 3 readout marginals against
    the closed form (1 000 draws) and lag-1 autocorrelations within chains (under
    independence ~ N(0, 1/996), 996 pairs): Bonferroni over 6 tests, false-alarm rate
    1e-3."""
    model, x, y, mean, cov = linear_problem()
    post = samplers.hmc(
        model, x, y, algorithm=algorithm, exact_readout=True, num_warmup=20,
        num_samples=250, key=jax.random.key(11), progress=False,
    )  # fmt: skip
    draws = readout_draws(post)
    z = scipy.stats.norm.isf(1e-3 / 6 / 2)
    for i in range(3):
        p = scipy.stats.kstest(
            draws[..., i].ravel(), "norm", args=(mean[i], math.sqrt(cov[i, i]))
        ).pvalue
        assert p > 1e-3 / 6, (i, p)
        centred = draws[..., i] - mean[i]
        lag1 = np.sum(centred[:, 1:] * centred[:, :-1]) / np.sum(centred**2)
        assert abs(lag1) < z / math.sqrt(centred[:, 1:].size), (i, lag1)


def test_exact_readout_on_the_dual_path_is_exact():
    """n + 1 = 9 > N = 5: the readout is drawn by Matheron's rule (no QR). A linear
    model's draws are then i.i.d. exact: whitened by the closed-form posterior
    (mean m, covariance C = L L^T), z = L^{-1}(theta - m) must be i.i.d. N(0, 1) in
    each of its 9 coordinates (this tests the covariance, not only the marginals).
    KS tests on 1 000 draws, Bonferroni over 9, false-alarm rate 1e-3."""
    n, d = 5, 8
    model = WideBNN(kernels.Identity(), d, 1.0, 0.5, SIGMA, 1)
    kx, ky = jax.random.split(jax.random.key(12))
    x = jax.random.normal(kx, (n, d))
    y = x[:, :1] + SIGMA * jax.random.normal(ky, (n, 1))
    t = np.concatenate([np.asarray(x) / math.sqrt(d), np.full((n, 1), 0.5)], 1)
    cov = np.linalg.inv(np.eye(d + 1) + t.T @ t / SIGMA**2)
    mean = cov @ t.T @ np.asarray(y)[:, 0] / SIGMA**2
    post = samplers.hmc(
        model, x, y, num_warmup=5, num_samples=250, key=jax.random.key(13),
        progress=False,
    )  # fmt: skip
    assert post.settings["path"] == "dual" and post.settings["exact_readout"]
    r = post.params["readout"]
    draws = np.concatenate([r["W"][..., 0], r["b"]], axis=-1).reshape(-1, d + 1)
    z = np.linalg.solve(np.linalg.cholesky(cov), (draws - mean).T)
    for i in range(d + 1):
        p = scipy.stats.kstest(z[i], "norm").pvalue
        assert p > 1e-3 / (d + 1), (i, p)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"exact_readout": True, "reparam": "none"}, "reparam"),
        ({"exact_readout": True, "kernel_reg": 0.5}, "kernel_reg"),
    ],
)
def test_exact_readout_needs_the_exact_repriorisation(kwargs, message):
    model, x, y, _, _ = linear_problem()
    with pytest.raises(ValueError, match=message):
        samplers.hmc(model, x, y, key=jax.random.key(0), progress=False, **kwargs)


def _geweke(model, reparam, key, num_chains=800, num_iterations=25):
    """Successive-conditional Geweke simulator: theta <- 2 HMC transitions given y
    (in the sampler's coordinates), then y <- p(y | theta). Started from the joint
    prior, every iterate of every chain is an exact prior draw of theta."""
    x = jnp.array([[-1.0], [0.2], [1.1]])
    logdensity = samplers.log_density_fn(model, reparam=reparam)
    kernel = blackjax.mcmc.hmc.build_kernel()
    step_size = 0.25 if reparam == "repriorised" else 0.1

    def to_position(theta, y):
        if reparam == "repriorised":
            return samplers.unrepriorise(model, theta, x, y)
        return theta

    def to_theta(position, y):
        if reparam == "repriorised":
            return samplers.repriorise(model, position, x, y)[0]
        return position

    def simulate_y(k, theta):
        noise = model.noise_std * jax.random.normal(k, (3, 1))
        return model.predict(theta, x) + noise

    def iteration(carry, k):
        theta, y = carry
        k1, k2, k3 = jax.random.split(k, 3)

        def target(position):
            return logdensity(position, x, y)

        state = blackjax.mcmc.hmc.init(to_position(theta, y), target)
        unit = jnp.ones(ravel_pytree(state.position)[0].size)
        for kk in (k1, k2):
            state, _ = kernel(kk, state, target, step_size, unit, 3)
        theta = to_theta(state.position, y)
        return (theta, simulate_y(k3, theta)), None

    def chain(k):
        k0, k1, k2 = jax.random.split(k, 3)
        theta = model.init(k0, x.shape)
        carry = (theta, simulate_y(k1, theta))
        (theta, _), _ = jax.lax.scan(
            iteration, carry, jax.random.split(k2, num_iterations)
        )
        return theta

    thetas = jax.jit(jax.vmap(chain))(jax.random.split(key, num_chains))
    return np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(thetas))


@pytest.mark.slow
@pytest.mark.parametrize("reparam", ["repriorised", "none"])
def test_geweke_joint_distribution(reparam):
    """D.15: after 25 Geweke iterations every parameter is still N(0, 1) (NTK
    coordinates). KS tests over 800 independent chains, Bonferroni over the 10
    parameters, false-alarm rate 1e-3. Power: with the log-det term dropped from the
    repriorised density this test fails (smallest p-value 1.2e-5 < 1e-4)."""
    model = tiny_relu()
    flat = _geweke(model, reparam, jax.random.key(5))
    assert flat.shape == (800, 10)
    for i in range(flat.shape[1]):
        p = scipy.stats.kstest(flat[:, i], "norm").pvalue
        assert p > 1e-3 / flat.shape[1], (i, p)


def test_ess_estimator_on_ar1():
    """D.18: bulk ESS of AR(1) chains is n (1 - rho) / (1 + rho).

    Calibration: over 20 seeds the ratio estimate/truth had mean 0.98, sd 0.055,
    range 0.87-1.05; the bound 0.25 is 4.5 sd."""
    rho, n = 0.8, 5000
    rng = np.random.default_rng(7)
    noise = rng.standard_normal((4, n))
    chain = np.zeros((4, n))
    chain[:, 0] = noise[:, 0] / math.sqrt(1 - rho**2)
    for t in range(1, n):
        chain[:, t] = rho * chain[:, t - 1] + noise[:, t]
    ess, rhat = diagnostics.projection_ess(chain[..., None], num_projections=2)
    ratio = ess / (4 * n * (1 - rho) / (1 + rho))
    assert np.all(np.abs(ratio - 1) < 0.25), ratio
    assert np.all(rhat < 1.01)


def test_no_retrace_for_new_data_of_the_same_shape():
    model, x, y, _, _ = linear_problem()
    args = dict(num_warmup=10, num_samples=4, progress=False, key=jax.random.key(0))
    samplers.hmc(model, x, y, **args)
    from widebnn.samplers import _hmc

    sizes = _hmc._warmup._cache_size(), _hmc._chunk._cache_size()
    samplers.hmc(model, x + 1.0, y - 1.0, **args)
    assert (_hmc._warmup._cache_size(), _hmc._chunk._cache_size()) == sizes
