"""``rejection``: exact posterior draws, bounds, evidence, MCMC validation.

Oracles: closed-form Bayesian linear regression; a one-weight network whose
posterior and evidence are 1-D integrals (trapezoid quadrature on a fine grid);
numpy/scipy Gaussian densities for the bounds; the ReLU arc-cosine NNGP written out
in numpy. Statistical tests use fixed seeds and state their false-alarm rates
(Bonferroni-corrected); the acceptance count is tested with its exact negative
binomial law (the sampler stops at the ``num_samples``-th acceptance).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats
from _helpers import bonferroni_t_quantile

from widebnn import WideBNN, kernels, samplers

# Short plumbing runs: convergence warnings are tested in tests/samplers.
pytestmark = pytest.mark.filterwarnings("ignore::widebnn.samplers.SamplerWarning")

SIGMA = 0.5


# --- problems and independent oracles ---------------------------------------------
def linear_problem(n=8, seed=0):
    """Bayesian linear regression (identity body): the hidden part is empty, so
    every proposal has the same likelihood, the evidence Z."""
    model = WideBNN(kernels.Identity(), 2, 1.0, 0.5, SIGMA, 1)
    kx, ke, ky = jax.random.split(jax.random.key(seed), 3)
    x1 = jax.random.normal(kx, (n, 1))
    x = jnp.concatenate([x1, x1 + 0.2 * jax.random.normal(ke, (n, 1))], 1)
    y = x1 - 0.5 + SIGMA * jax.random.normal(ky, (n, 1))
    t = np.concatenate([np.asarray(x) / math.sqrt(2), np.full((n, 1), 0.5)], 1)
    cov = np.linalg.inv(np.eye(3) + t.T @ t / SIGMA**2)
    mean = cov @ t.T @ np.asarray(y)[:, 0] / SIGMA**2
    log_z = scipy.stats.multivariate_normal(
        np.zeros(n), t @ t.T + SIGMA**2 * np.eye(n)
    ).logpdf(np.asarray(y)[:, 0])
    return model, x, y, mean, cov, log_z


def reference_bound(y, noise_std, bias_std):
    """log sup of prod_j N(y_j; 0, S) over S >= A = s^2 I + b^2 11^T, and the
    maximiser, from the whitened eigenproblem (dense Cholesky and eigh)."""
    y = np.asarray(y, dtype=float)
    n, d = y.shape
    a = noise_std**2 * np.eye(n) + bias_std**2 * np.ones((n, n))
    chol = np.linalg.cholesky(a)
    white = scipy.linalg.solve_triangular(chol, y, lower=True)
    mu, u = np.linalg.eigh(white @ white.T / d)
    mu = np.clip(mu, 0, None)
    s = np.maximum(mu, 1.0)
    s_star = chol @ (u * s) @ u.T @ chol.T
    log_m = (
        -0.5 * n * d * math.log(2 * math.pi)
        - 0.5 * d * np.linalg.slogdet(a)[1]
        - 0.5 * d * np.sum(np.log(s) + mu / s)
    )
    return float(log_m), s_star, a


def gaussian_loglik(y, covs):
    """sum_j log N(y_j; 0, S) for a stack of covariances ``(B, N, N)``."""
    n, d = y.shape
    _, log_det = np.linalg.slogdet(covs)
    quad = np.einsum(
        "nd,bnd->b", y, np.linalg.solve(covs, np.broadcast_to(y, (len(covs), n, d)))
    )
    return -0.5 * quad - 0.5 * d * (log_det + n * math.log(2 * math.pi))


def negative_binomial_pvalue(num_proposals, num_accepted, rate):
    """Two-sided p-value of the rejections count of a stop-at-k-th-success run."""
    failures = num_proposals - num_accepted
    law = scipy.stats.nbinom(num_accepted, rate)
    return min(1.0, 2 * min(law.cdf(failures), law.sf(failures - 1)))


SCALAR_NOISE, SCALAR_W_STD, SCALAR_READOUT = 0.4, 1.3, (1.0, 0.3)


def scalar_problem():
    """One hidden weight w: f(x) = s_w W_std w x W_out + s_b b_out. Given w the
    likelihood is N(y; 0, c w^2 xx^T + s_b^2 11^T + s^2 I), c = (s_w W_std)^2."""
    body = kernels.Dense(1, SCALAR_W_STD, None)
    model = WideBNN(body, 1, *SCALAR_READOUT, SCALAR_NOISE, 1)
    x = np.linspace(-1.0, 1.0, 5)[:, None]
    y = 1.2 * x + 0.1 * np.array([[0.3], [-0.5], [0.2], [0.4], [-0.1]])
    return model, jnp.asarray(x), jnp.asarray(y)


def scalar_posterior_oracle(x, y):
    """Evidence and posterior CDF of w by trapezoid quadrature on [-10, 10]."""
    x, y = np.asarray(x)[:, 0], np.asarray(y)
    c = (SCALAR_READOUT[0] * SCALAR_W_STD) ** 2
    grid = np.linspace(-10.0, 10.0, 40001)
    base = SCALAR_READOUT[1] ** 2 + SCALAR_NOISE**2 * np.eye(len(x))
    covs = c * grid[:, None, None] ** 2 * np.outer(x, x) + base
    log_density = gaussian_loglik(y, covs) + scipy.stats.norm.logpdf(grid)
    density = np.exp(log_density)
    z = scipy.integrate.trapezoid(density, grid)
    cdf = scipy.integrate.cumulative_trapezoid(density, grid, initial=0.0) / z
    return math.log(z), lambda w: np.interp(w, grid, cdf)


def relu_net(width, noise=0.3):
    body = kernels.serial(kernels.Dense(width, 1.5, 0.3), kernels.Relu())
    return WideBNN(body, width, 1.0, 0.3, noise, 1)


def relu_nngp(a, b):
    """NNGP of Dense(1.5, 0.3) -> ReLU -> Dense(1.0, 0.3) on 1-D inputs (numpy)."""
    a, b = np.asarray(a)[:, 0], np.asarray(b)[:, 0]
    cross = 1.5**2 * np.outer(a, b) + 0.09
    scale = np.sqrt(np.outer(1.5**2 * a**2 + 0.09, 1.5**2 * b**2 + 0.09))
    cos = np.clip(cross / scale, -1.0, 1.0)
    angle = np.arccos(cos)
    relu = scale / (2 * np.pi) * (np.sin(angle) + (np.pi - angle) * cos)
    return relu + 0.09


# --- bad input ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"y": np.zeros(8)}, ValueError, "y"),
        ({"y": np.zeros((7, 1))}, ValueError, "x"),
        ({"y": np.full((8, 1), np.nan)}, ValueError, "y"),
        ({"bound": "tight"}, ValueError, "bound"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"num_samples": 2.5}, ValueError, "num_samples"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"max_proposals": 0}, ValueError, "max_proposals"),
        ({"max_proposals": 2**33}, ValueError, "max_proposals"),
        ({"max_seconds": 0}, ValueError, "max_seconds"),
        ({"max_seconds": -1.0}, ValueError, "max_seconds"),
        ({"max_seconds": float("inf")}, ValueError, "max_seconds"),
        ({"max_seconds": "60"}, ValueError, "max_seconds"),
        ({"x_pred": np.zeros((3, 5))}, ValueError, "x_pred"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, name):
    model, x, y, *_ = linear_problem()
    args = {"x": x, "y": y, "num_samples": 10} | kwargs
    x, y = args.pop("x"), args.pop("y")
    with pytest.raises(error, match=name):
        samplers.rejection(model, x, y, key=jax.random.key(0), progress=False, **args)


def test_integer_key_is_refused_by_name():
    model, x, y, *_ = linear_problem()
    with pytest.raises(TypeError, match="key"):
        samplers.rejection(model, x, y, key=0, num_samples=10, progress=False)


def test_bound_rejects_bad_arguments():
    with pytest.raises(ValueError, match="noise_std"):
        samplers.log_likelihood_bound(np.zeros((3, 1)), 0.0)
    with pytest.raises(ValueError, match="y must be 2-D"):
        samplers.log_likelihood_bound(np.zeros(3), 0.1)
    with pytest.raises(ValueError, match="readout_b_std"):
        samplers.log_likelihood_bound(np.zeros((3, 1)), 0.1, readout_b_std=-1.0)


# --- bounds (D.10) ------------------------------------------------------------------
def test_bounds_hold_and_are_attained():
    """log l <= log M2 <= log M1 <= log M0 for 20 000 random S >= A (random rank and
    scale, and perturbations of the maximiser) and for 2 000 prior draws of a ReLU
    network; M1 and M2 are attained at the maximiser S* of their derivation."""
    rng = np.random.default_rng(0)
    n, d, noise, bias = 5, 2, 0.3, 0.7
    y = rng.normal(size=(n, d)) + np.array([1.5, -0.5])  # non-zero mean: M2 < M1
    log_m0 = samplers.log_likelihood_bound(y, noise, bound="prior")
    log_m1 = samplers.log_likelihood_bound(y, noise, readout_b_std=0.0)
    log_m2 = samplers.log_likelihood_bound(y, noise, readout_b_std=bias)
    assert log_m2 < log_m1 < log_m0

    for bias_std, log_m in ((0.0, log_m1), (bias, log_m2)):
        ref_m, s_star, a = reference_bound(y, noise, bias_std)
        np.testing.assert_allclose(log_m, ref_m, rtol=0, atol=1e-10)
        assert np.linalg.eigvalsh(s_star - a).min() > -1e-10  # feasible
        np.testing.assert_allclose(
            gaussian_loglik(y, s_star[None])[0], log_m, rtol=0, atol=1e-10
        )  # attained
        # random feasible S = A + B B^T, B of random rank and scale
        rank = rng.integers(1, n + 1, size=10_000)
        scale = 10 ** rng.uniform(-3, 2, size=10_000)
        b = rng.normal(size=(10_000, n, n)) * (np.arange(n) < rank[:, None])[:, None]
        covs = a + scale[:, None, None] * b @ np.swapaxes(b, 1, 2)
        assert gaussian_loglik(y, covs).max() <= log_m + 1e-10
        # feasible perturbations of the maximiser stay below it
        e = rng.normal(size=(2000, n, n))
        near = s_star + 1e-3 * e @ np.swapaxes(e, 1, 2)
        assert gaussian_loglik(y, near).max() <= log_m + 1e-10

    model = relu_net(3, noise=noise)
    model = WideBNN(model.body, 3, 1.0, bias, noise, d)
    x = jnp.asarray(rng.normal(size=(n, 1)))

    def log_ell(key):
        hidden = model.split_readout(model.init(key, x.shape))[0]
        features = model.features(hidden, x)
        return samplers.log_marginal_likelihood(features, jnp.asarray(y), noise**2)

    values = jax.jit(jax.vmap(log_ell))(jax.random.split(jax.random.key(1), 2000))
    assert np.all(np.isfinite(values))
    assert float(values.max()) <= log_m2


# --- Bayesian linear regression (D.13c) ----------------------------------------------
def test_linear_regression_exact_readout_evidence_and_acceptance():
    """Readouts: whitened by the closed-form posterior they pass KS tests against
    N(0, 1) (Bonferroni over 3, false-alarm rate 1e-3). Evidence: every proposal
    has likelihood Z, so log Z is exact. Acceptance: the number of rejections
    before the k-th acceptance is negative binomial with rate Z/M, M from the
    reference bound (two-sided, false-alarm rate 1e-3 per bound)."""
    model, x, y, mean, cov, log_z = linear_problem()
    whiten = np.linalg.inv(np.linalg.cholesky(cov))
    for bound, num_samples in (("data", 1000), ("prior", 200)):
        post = samplers.rejection(
            model, x, y, num_samples=num_samples, bound=bound, key=jax.random.key(3),
            progress=False,
        )  # fmt: skip
        readout = post.params["readout"]
        draws = np.concatenate([readout["W"][0, :, :, 0], readout["b"][0]], axis=1)
        assert draws.shape == (num_samples, 3)
        for i, row in enumerate(((draws - mean) @ whiten.T).T):
            p = scipy.stats.kstest(row, "norm").pvalue
            assert p > 1e-3 / 3, (bound, i, p)
        np.testing.assert_allclose(post.log_evidence, log_z, rtol=0, atol=1e-10)
        assert post.log_evidence_stderr < 1e-6
        if bound == "data":
            log_m = reference_bound(y, SIGMA, 0.5)[0]
        else:
            log_m = -0.5 * len(y) * math.log(2 * math.pi * SIGMA**2)
        np.testing.assert_allclose(post.log_bound, log_m, rtol=0, atol=1e-10)
        rate = math.exp(log_z - log_m)
        p = negative_binomial_pvalue(post.num_proposals, num_samples, rate)
        assert p > 1e-3, (bound, post.num_proposals, rate)
        assert post.acceptance_rate == num_samples / post.num_proposals


# --- a network with one hidden weight: exact hidden-weight posterior ----------------
def test_hidden_weight_posterior_evidence_and_batch_independence():
    """The hidden weight w of accepted draws passes a KS test against its posterior
    CDF by quadrature (false-alarm rate 1e-3); log Z-hat is within a Bonferroni
    t-bound (1e-4 over 2) of the quadrature evidence, with the sampler's
    delta-method standard error; the negative binomial law of the rejections with
    rate Z/M holds (1e-3). A different batch size gives identical draws."""
    model, x, y = scalar_problem()
    log_z, cdf = scalar_posterior_oracle(x, y)
    post = samplers.rejection(
        model, x, y, num_samples=1000, key=jax.random.key(5), progress=False
    )
    w = post.params["body"]["W"][0, :, 0, 0]
    assert post.params["readout"]["W"].shape == (1, 1000, 1, 1)
    assert scipy.stats.kstest(w, cdf).pvalue > 1e-3
    z = bonferroni_t_quantile(1e-4, 2, post.num_proposals - 2)
    assert abs(post.log_evidence - log_z) <= z * post.log_evidence_stderr, (
        post.log_evidence,
        log_z,
        post.log_evidence_stderr,
    )
    assert post.log_evidence_stderr < 0.02  # the check above is not vacuous
    rate = math.exp(log_z - post.log_bound)
    assert negative_binomial_pvalue(post.num_proposals, 1000, rate) > 1e-3
    assert post.settings["max_log_ratio"] <= 1e-12
    # draws and log-likelihoods are consistent with the model
    np.testing.assert_allclose(
        post.sample_stats["log_likelihood"][0],
        jax.vmap(model.log_likelihood, (0, None, None))(
            jax.tree.map(lambda v: v[0], post.params), x, y
        ),
        rtol=1e-12,
    )

    again = samplers.rejection(
        model, x, y, num_samples=1000, key=jax.random.key(5), batch_size=333,
        progress=False,
    )  # fmt: skip
    assert again.num_proposals == post.num_proposals
    np.testing.assert_array_equal(again.predictions, post.predictions)
    np.testing.assert_array_equal(again.params["body"]["W"], post.params["body"]["W"])
    assert again.log_evidence == pytest.approx(post.log_evidence, rel=1e-12)


def nan_relu_body(width):
    """Dense -> ReLU whose output is NaN where a pre-activation exceeds 1.5."""
    dense = kernels.Dense(width, 1.5, 0.3)

    def apply(params, x, **kwargs):
        del kwargs
        return jnp.where(x > 1.5, jnp.nan, jnp.maximum(x, 0.0))

    return kernels.serial(dense, kernels.Layer(lambda k, s: (s, ()), apply, None))


def test_nonfinite_likelihoods_are_rejections_and_budget_error():
    """Proposals whose factorisation gives NaN are rejected and counted; the draws
    stay finite. Too small a budget raises RejectionBudgetError (a RuntimeError)
    with the acceptance rate and the expected number of proposals."""
    model = WideBNN(nan_relu_body(3), 3, 1.0, 0.3, 0.5, 1)
    x = jnp.linspace(-1, 1, 4)[:, None]
    y = jnp.sin(2 * x)
    post = samplers.rejection(
        model, x, y, num_samples=30, key=jax.random.key(6), batch_size=256,
        progress=False,
    )  # fmt: skip
    assert post.settings["num_nonfinite"] > 0
    assert np.all(np.isfinite(post.predictions))
    assert np.all(np.isfinite(post.sample_stats["log_marginal_likelihood"]))
    assert math.isfinite(post.log_evidence)

    budget = post.num_proposals - 1
    with pytest.raises(samplers.RejectionBudgetError) as info:
        samplers.rejection(
            model, x, y, num_samples=30, key=jax.random.key(6), batch_size=256,
            max_proposals=budget, progress=False,
        )  # fmt: skip
    error = info.value
    assert isinstance(error, RuntimeError)
    assert error.num_proposals == budget and error.num_accepted == 29
    assert "max_proposals=" in str(error)
    assert f"about {error.expected_proposals:.2g} proposals" in str(error)
    # the expected count comes from Z-hat / M, a sensible order of magnitude
    assert 0.2 < error.expected_proposals / post.num_proposals < 5


# --- budget: estimates, early stop, advice -----------------------------------------
HOPELESS_N = 80


@functools.cache
def hopeless_problem():
    """Linear regression on 80 points: every proposal has likelihood Z, so the
    acceptance rate is exactly Z/M (about 1e-18 with the prior bound M0). One
    model object for all tests, so that the sampler compiles once."""
    model, x, y, _, _, log_z = linear_problem(n=HOPELESS_N)
    log_m0 = -0.5 * HOPELESS_N * math.log(2 * math.pi * SIGMA**2)
    return model, x, y, math.exp(log_z - log_m0)


def test_budget_error_states_the_closed_form_rate_and_needed_proposals():
    """With every likelihood equal to Z, the estimated rate in the error is Z/M0
    from the closed form; the expected proposals are num_samples / rate; with no
    acceptance, the 95 % bound is the Clopper-Pearson bound 1 - 0.05^(1/n) (the
    rule of three, ~3/n); the advice names bound='data' for the prior bound."""
    model, x, y, rate = hopeless_problem()
    assert 1e-25 < rate < 1e-15  # P(any acceptance in 2048 proposals) < 3e-12
    with pytest.raises(samplers.RejectionBudgetError) as info:
        samplers.rejection(
            model, x, y, num_samples=300, key=jax.random.key(0), bound="prior",
            batch_size=256, max_proposals=2048, progress=False,
        )  # fmt: skip
    error, message = info.value, str(info.value)
    assert error.num_accepted == 0 and error.num_proposals == 2048
    np.testing.assert_allclose(error.expected_rate, rate, rtol=1e-9)
    np.testing.assert_allclose(error.expected_proposals, 300 / rate, rtol=1e-9)
    upper = 1 - 0.05 ** (1 / 2048)
    np.testing.assert_allclose(error.rate_upper, upper, rtol=1e-9)
    assert 2.9 / 2048 < error.rate_upper < 3.1 / 2048
    assert f"Estimated acceptance rate {rate:.2g}" in message
    assert f"below {upper:.2g} at 95 %" in message
    assert f"about {300 / rate:.2g} proposals" in message
    assert "proposals/s" in message and "max_proposals=2048 reached" in message
    assert "bound='data'" in message  # not the default here: worth suggesting
    assert error.expected_seconds > 0


def test_budget_advice_does_not_suggest_the_default_bound():
    model, x, y, _ = hopeless_problem()
    with pytest.raises(samplers.RejectionBudgetError) as info:
        samplers.rejection(
            model, x, y, num_samples=40, key=jax.random.key(0), batch_size=256,
            max_proposals=512, progress=False,
        )  # fmt: skip
    message = str(info.value)
    assert "bound=" not in message
    for advice in ("fewer data points", "larger noise_std", "samplers.hmc"):
        assert advice in message


def test_max_seconds_ends_the_run():
    """A budget shorter than one batch ends the run after its first batch."""
    model, x, y, _ = hopeless_problem()
    with pytest.raises(samplers.RejectionBudgetError, match="max_seconds=0.001"):
        samplers.rejection(
            model, x, y, num_samples=40, key=jax.random.key(0), batch_size=256,
            max_seconds=0.001, progress=False,
        )  # fmt: skip


def test_hopeless_run_stops_early_at_the_default_budget():
    """At the default max_seconds (300 s) a run whose 99.9 % rate bound already
    needs far more stops at the first look, a second after compiling, not after
    300 s (or 2^32 proposals: hours)."""
    model, x, y, _ = hopeless_problem()
    with pytest.raises(samplers.RejectionBudgetError) as info:
        samplers.rejection(
            model, x, y, num_samples=100_000, key=jax.random.key(0),
            batch_size=256, progress=False,
        )  # fmt: skip
    error = info.value
    assert "upper confidence bound" in str(error)
    assert "max_seconds=300" in str(error)
    assert error.seconds < 150 and error.num_accepted == 0


def test_rate_upper_bound_is_clopper_pearson():
    """Against scipy's beta quantile (the Clopper-Pearson upper limit)."""
    from widebnn.samplers._rejection_bounds import rate_upper_bound

    for k, n, level in ((0, 100, 0.05), (3, 1000, 0.05), (7, 50, 1e-3)):
        expected = scipy.stats.beta.ppf(1 - level, k + 1, n - k)
        np.testing.assert_allclose(rate_upper_bound(k, n, level), expected, rtol=1e-9)
    assert rate_upper_bound(5, 5, 0.05) == 1.0


def test_progress_bar_shows_rate_bound_and_eta(capsys):
    """The bar's text: proposals, the estimated rate Z-hat/M (closed form here),
    the 95 % bound while nothing is accepted, and an ETA."""
    model, x, y, rate = hopeless_problem()
    with pytest.raises(samplers.RejectionBudgetError):
        samplers.rejection(
            model, x, y, num_samples=40, key=jax.random.key(0), bound="prior",
            batch_size=256, max_proposals=1024, progress=True,
        )  # fmt: skip
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "proposals=1.02e+03" in bar, bar
    assert f"rate~{rate:.2g}" in bar, bar
    assert f"(<{1 - 0.05 ** (1 / 1024):.2g} at 95%)" in bar, bar
    assert "ETA~" in bar and "0/40 draws" in bar, bar


# --- MCMC vs exact (D.16) -----------------------------------------------------------
def mmd_pvalue(a, b, num_permutations=400, seed=0):
    """Permutation p-value of the (biased) Gaussian-kernel MMD^2 between samples
    ``a (n, D)`` and ``b (m, D)``, median-heuristic bandwidth."""
    pooled = np.concatenate([a, b])
    sq = np.sum((pooled[:, None] - pooled[None]) ** 2, axis=-1)
    gram = np.exp(-sq / np.median(sq[sq > 0]))
    signs = np.concatenate([np.full(len(a), 1 / len(a)), np.full(len(b), -1 / len(b))])
    rng = np.random.default_rng(seed)
    columns = np.stack(
        [signs] + [rng.permutation(signs) for _ in range(num_permutations)], axis=1
    )
    stats = np.sum(columns * (gram @ columns), axis=0)  # w^T G w per column
    return (1 + np.sum(stats[1:] >= stats[0])) / (1 + num_permutations)


@pytest.mark.slow
def test_mcmc_agrees_with_exact_draws_on_a_tiny_network():
    """N=3, width 4, d=1: 2 000 rejection draws vs 400 chains each of standard HMC,
    repriorised GHMC and repriorised GHMC with the exact readout and the
    Gaussian-split integrator, started from prior draws. Draws of different chains
    are independent, so for each kept draw index the 400 predictions are i.i.d.
    and two-sample KS tests per test point
    (2 indices x 4 points x 3 samplers, Bonferroni, false-alarm rate 1e-3) and
    permutation MMD tests on the joint predictions (last index; level 0.005 each,
    400 permutations) are exact level tests: overall false-alarm rate 0.016.
    Power: prior predictive draws are rejected by the same KS test."""
    model = relu_net(4)
    x = jnp.array([[-1.0], [0.0], [1.0]])
    y = jnp.array([[-0.8], [0.3], [0.9]])
    x_pred = jnp.array([[-1.5], [-0.5], [0.5], [2.0]])
    exact = samplers.rejection(
        model, x, y, num_samples=2000, key=jax.random.key(7), x_pred=x_pred,
        progress=False,
    )  # fmt: skip
    reference = exact.predictions[0, :, :, 0]
    level = 1e-3 / 24
    runs = {
        "hmc": dict(algorithm="hmc", reparam="none", step_size=0.1,
                    num_integration_steps=10, num_warmup=600, thin=150),
        "ghmc": dict(algorithm="ghmc", reparam="repriorised", step_size=0.3,
                     momentum_refresh=0.2, num_warmup=1500, thin=400,
                     exact_readout=False, integrator="leapfrog"),
        "ghmc-exact-readout-split": dict(algorithm="ghmc", reparam="repriorised",
                                         exact_readout=True, step_size=0.3,
                                         integrator="gaussian_split",
                                         momentum_refresh=0.2, num_warmup=1000,
                                         thin=200),
    }  # fmt: skip
    for name, settings in runs.items():
        post = samplers.hmc(
            model, x, y, num_chains=400, num_samples=2, x_pred=x_pred,
            key=jax.random.key(8), progress=False, **settings,
        )  # fmt: skip
        assert post.sample_stats["acceptance_rate"].mean() > 0.7, name
        draws = post.predictions[..., 0]  # (chain, draw, point)
        for index in range(2):
            for point in range(4):
                p = scipy.stats.ks_2samp(reference[:, point], draws[:, index, point])
                assert p.pvalue > level, (name, index, point, p.pvalue)
        p = mmd_pvalue(reference[:1000], draws[:, -1])
        assert p > 0.005, (name, p)

    prior = jax.vmap(lambda k: model.predict(model.init(k, x.shape), x_pred))(
        jax.random.split(jax.random.key(9), 400)
    )[..., 0]
    p = min(scipy.stats.ks_2samp(reference[:, i], prior[:, i]).pvalue for i in range(4))
    assert p < level


# --- wide limit (D.17) --------------------------------------------------------------
WIDE_X = jnp.array([[-1.0], [-0.3], [0.4], [1.0]])
WIDE_Y = jnp.array([[-0.6], [0.2], [0.5], [0.3]])


def test_log_likelihood_variance_falls_like_one_over_width():
    """D.17: Var over prior draws of log l at widths 32, 128, 512 (2 000 draws
    each, one jit): the weighted least-squares log-log slope is -1 within a
    two-sided 1e-4 t-bound from the standard errors of the log variances
    (delta method with the sample kurtosis), plus 0.05 for the O(1/width^2) terms
    of the variance (an exploratory run gave width * Var = 1.30 at width 8 and
    1.12-1.18 at widths 32-2048, i.e. a slope shift of about 0.01). A
    1/sqrt(width) law would give -0.5."""
    widths = (32, 128, 512)
    models = [relu_net(w) for w in widths]

    def log_ells(key):
        out = []
        for model in models:

            def one(k, model=model):
                hidden = model.split_readout(model.init(k, WIDE_X.shape))[0]
                return samplers.log_marginal_likelihood(
                    model.features(hidden, WIDE_X), WIDE_Y, model.noise_std**2
                )

            out.append(jax.vmap(one)(jax.random.split(key, 2000)))
        return out

    samples = [np.asarray(v) for v in jax.jit(log_ells)(jax.random.key(10))]
    log_var, se = [], []
    for values in samples:
        c = values - values.mean()
        var = np.mean(c**2)
        log_var.append(math.log(var))
        se.append(math.sqrt((np.mean(c**4) / var**2 - 1) / len(c)))
    log_w = np.log(widths)
    weights = 1 / np.square(se)
    centre = np.sum(weights * log_w) / np.sum(weights)
    slope = np.sum(weights * (log_w - centre) * log_var) / np.sum(
        weights * (log_w - centre) ** 2
    )
    slope_se = math.sqrt(1 / np.sum(weights * (log_w - centre) ** 2))
    bound = bonferroni_t_quantile(1e-4, 1, 1999) * slope_se + 0.05
    assert abs(slope + 1) <= bound, (slope, slope_se)


@pytest.mark.slow
def test_rejection_moments_approach_the_nngp_posterior():
    """Predictive means and variances of 2 000 rejection draws at 4 test points vs
    the NNGP posterior (C.4): at width 512 within Bonferroni t-bounds (1e-3 over 8
    statistics; standard errors of i.i.d. draws, the variance's from the fourth
    moment; the O(1/width) bias is below 1% of the standard errors here); at
    width 2 the same statistics are far outside (power)."""
    x_pred = jnp.array([[-2.0], [0.0], [0.7], [2.5]])
    k_train = relu_nngp(WIDE_X, WIDE_X) + 0.09 * np.eye(4)
    k_cross = relu_nngp(x_pred, WIDE_X)
    mean = k_cross @ np.linalg.solve(k_train, np.asarray(WIDE_Y))[:, 0]
    var = np.diag(relu_nngp(x_pred, x_pred)) - np.sum(
        k_cross * np.linalg.solve(k_train, k_cross.T).T, axis=1
    )
    np.testing.assert_allclose(
        relu_net(3).kernel(x_pred, WIDE_X), k_cross, rtol=1e-12
    )  # the numpy NNGP is the network's
    z_bound = bonferroni_t_quantile(1e-3, 8, 1999)
    worst = {}
    for width in (512, 2):
        post = samplers.rejection(
            relu_net(width), WIDE_X, WIDE_Y, num_samples=2000, x_pred=x_pred,
            key=jax.random.key(11), progress=False,
        )  # fmt: skip
        f = post.predictions[0, :, :, 0]
        c = f - f.mean(0)
        z_mean = (f.mean(0) - mean) / (f.std(0, ddof=1) / math.sqrt(len(f)))
        v = np.mean(c**2, 0)
        z_var = (v - var) / np.sqrt((np.mean(c**4, 0) - v**2) / len(f))
        worst[width] = float(np.max(np.abs(np.concatenate([z_mean, z_var]))))
    assert worst[512] <= z_bound, worst
    assert worst[2] > 2 * z_bound, worst
