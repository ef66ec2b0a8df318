"""The ArviZ journey: draws from repriorised HMC (``samplers.hmc``), from exact
rejection sampling (``samplers.rejection``) and from NumPyro's NUTS on the bridge
(``numpyro_model``) each become an ``InferenceData`` on which ``az.summary``,
``az.plot_trace``, ``az.plot_ppc``, ``az.loo`` and ``az.waic`` run, and which
``az.compare`` ranks together.

One small problem for all three: 8 points of ``data.toy_regression`` (noise sd
1.0), a width-8 one-hidden-layer ReLU network. The numbers are checked, not only
computed: the pointwise log-likelihood against scipy's normal log-density of the
residuals (network outputs from ``jax.vmap(model.predict)``), WAIC against its
formula in numpy, PSIS-LOO against WAIC and plain importance-sampling LOO, the
posterior predictive against the observed data's shape, and the log pointwise
predictive density of the three samplers against each other within their Monte
Carlo error.

Fast tier: the rejection journey (the cheapest sampler to compile) and
``az.compare`` of its two halves. Slow tier: the HMC and NumPyro journeys (15-25 s
of compilation each) and ``az.compare`` across the three samplers.

Warnings ignored here: with 8 points each point is influential, so ArviZ's
Pareto-k warning (k above ``1 - 1/log10(S)``, about 0.63 for 500 draws) can fire on
a correct log-likelihood (k is bounded by 1 instead, where the importance weights'
mean stops existing); ArviZ 0.23.4's plots call a matplotlib helper deprecated in
matplotlib 3.11, and its ``compare`` a pandas keyword deprecated in pandas 3.1.
"""

import math

import arviz as az
import jax
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.special
import scipy.stats

from widebnn import WideBNN, data, diagnostics, kernels, numpyro_model, plots, samplers

N, NOISE, WIDTH = 8, 1.0, 8
pytestmark = [
    pytest.mark.filterwarnings("ignore::widebnn.samplers.SamplerWarning"),
    pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto"),
    pytest.mark.filterwarnings(  # ArviZ's WAIC heuristic on 8 points
        "ignore:For one or more samples the posterior variance"
    ),
    pytest.mark.filterwarnings("ignore:Passing a dict or None as alias_mapping"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.sort_values"),
]


@pytest.fixture(scope="module")
def problem():
    x, y, x_test, _ = data.toy_regression(
        N, jax.random.key(1), noise_std=NOISE, n_test=5
    )
    body = kernels.serial(kernels.Dense(WIDTH, W_std=1.5, b_std=1.0), kernels.Relu())
    model = WideBNN(body, WIDTH, readout_W_std=1.0, readout_b_std=0.1, noise_std=NOISE)
    return model, x, y, x_test


def outputs_at(model, params, x):
    """``f(x)`` for every draw, ``(chain, draw, N, d)``, by nested ``vmap``."""
    return np.asarray(
        jax.vmap(jax.vmap(model.predict, (0, None)), (0, None))(params, x)
    )


@pytest.fixture(scope="module")
def hmc_run(problem):
    """The README example's path: repriorised HMC with predictions at x_test."""
    model, x, y, x_test = problem
    posterior = samplers.hmc(
        model, x, y, key=jax.random.key(2), x_pred=x_test, num_chains=2,
        num_warmup=300, num_samples=500, progress=False,
    )  # fmt: skip
    idata = diagnostics.to_inference_data(
        posterior, model=model, x_test=x_test, x_train=x, observed={"y": y},
        num_projections=4,
    )  # fmt: skip
    return idata, outputs_at(model, posterior.params, x)


@pytest.fixture(scope="module")
def rejection_run(problem):
    model, x, y, x_test = problem
    posterior = samplers.rejection(
        model, x, y, num_samples=1000, key=jax.random.key(3), x_pred=x_test,
        progress=False,
    )  # fmt: skip
    idata = diagnostics.to_inference_data(
        posterior, model=model, x_test=x_test, x_train=x, observed={"y": y},
        num_projections=4,
    )  # fmt: skip
    return idata, outputs_at(model, posterior.params, x)


@pytest.fixture(scope="module")
def numpyro_run(problem):
    """NumPyro's NUTS on the bridge, converted by ArviZ itself."""
    from numpyro.infer import MCMC, NUTS, Predictive

    model, x, y, _ = problem
    npm = numpyro_model(model)
    mcmc = MCMC(
        NUTS(npm), num_warmup=300, num_samples=500, num_chains=2,
        chain_method="vectorized", progress_bar=False,
    )  # fmt: skip
    mcmc.run(jax.random.key(4), x, y=y)
    replicated = Predictive(npm, mcmc.get_samples())(jax.random.key(5), x)["y"]
    idata = az.from_numpyro(
        mcmc, posterior_predictive={"y": replicated}, dims={"y": ["obs", "out"]}
    )
    params = npm.to_params(mcmc.get_samples(group_by_chain=True), x.shape)
    return idata, outputs_at(model, params, x)


def assert_png(path, min_size=(150, 300)):
    """A PNG of at least ``min_size`` (rows, columns) pixels that is not blank."""
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1], image.shape
    assert image[..., :3].std() > 0.01  # not one flat colour


def lppd_and_se(log_lik):
    """Log pointwise predictive density ``sum_i log mean_s p(y_i | theta_s)`` and
    a conservative Monte Carlo standard error (delta method per point with ArviZ's
    ESS of ``p(y_i | theta_s)``, summed over points as if fully correlated)."""
    flat = log_lik.reshape(*log_lik.shape[:2], -1)
    draws = flat.shape[0] * flat.shape[1]
    lppd = scipy.special.logsumexp(flat, axis=(0, 1)) - math.log(draws)
    se = 0.0
    for i in range(flat.shape[2]):
        p = np.exp(flat[..., i] - flat[..., i].max())
        ess = min(float(az.ess(p)), draws)
        se += p.std(ddof=1) / math.sqrt(ess) / p.mean()
    return float(lppd.sum()), se


def check_journey(idata, f_train, y, tmp_path, *, projections=True):
    """Every step of the journey on one InferenceData, with its numbers checked."""
    y = np.asarray(y)
    chains, draws = f_train.shape[:2]
    # az.summary: one row per projection, means those of the draws
    names = ["f_projection", "weight_projection"] if projections else ["readout_b"]
    summary = az.summary(idata, var_names=names, round_to="none")
    for name in names:
        values = idata.posterior[name].values.reshape(chains, draws, -1)
        rows = [r for r in summary.index if r == name or r.startswith(f"{name}[")]
        np.testing.assert_allclose(
            summary.loc[rows, "mean"], values.mean((0, 1)), rtol=1e-10
        )
    # az.plot_trace, directly and through widebnn.plots
    az.plot_trace(idata, var_names=names)
    plt.gcf().savefig(tmp_path / "trace.png", dpi=100)
    plt.close("all")
    assert_png(tmp_path / "trace.png", (150, 1000))  # 12 x 2 inches per row
    if projections:
        assert_png(plots.plot_trace(idata, tmp_path / "trace_widebnn.png"))
    # az.plot_ppc: replicated data at the training inputs, as observed
    observed = idata.observed_data["y"]
    replicated = idata.posterior_predictive["y"]
    assert observed.shape == y.shape
    assert replicated.shape == (chains, draws, *y.shape)
    np.testing.assert_array_equal(observed.values, y)
    residual = replicated.values - f_train  # the noise: N(0, NOISE^2)
    n = residual.size
    lo, hi = scipy.stats.chi2.ppf([5e-5, 1 - 5e-5], n)
    assert lo / n < np.mean(residual**2) / NOISE**2 < hi / n
    axes = az.plot_ppc(idata, num_pp_samples=20, random_seed=0)
    labels = [t.get_text() for t in np.ravel(axes)[0].get_legend().get_texts()]
    assert "Observed" in labels and "Posterior predictive" in labels, labels
    plt.gcf().savefig(tmp_path / "ppc.png", dpi=100)
    plt.close("all")
    assert_png(tmp_path / "ppc.png")
    # pointwise log-likelihood: scipy's normal log-density of the residuals
    log_lik = idata.log_likelihood["y"].values
    np.testing.assert_allclose(
        log_lik, scipy.stats.norm.logpdf(y, f_train, NOISE), rtol=1e-10
    )
    # az.waic: the formula in numpy (lppd - sum of the pointwise variances; ArviZ
    # takes the variance over draws with ddof=0)
    waic = az.waic(idata, pointwise=True)
    flat = log_lik.reshape(chains * draws, -1)
    lppd = scipy.special.logsumexp(flat, axis=0) - math.log(chains * draws)
    p_waic = flat.var(axis=0)
    assert waic.n_data_points == N
    assert waic.elpd_waic == pytest.approx(np.sum(lppd - p_waic), rel=1e-10)
    assert waic.p_waic == pytest.approx(np.sum(p_waic), rel=1e-10)
    # az.loo: finite, within 0.5 of WAIC and of plain importance-sampling LOO
    # (-log mean_s 1/p(y_i | theta_s)), below the in-sample lppd
    loo = az.loo(idata, pointwise=True)
    plain = -(scipy.special.logsumexp(-flat, axis=0) - math.log(chains * draws))
    assert loo.n_data_points == N and np.isfinite(loo.elpd_loo)
    assert abs(loo.elpd_loo - waic.elpd_waic) < 0.5, (loo.elpd_loo, waic.elpd_waic)
    assert abs(loo.elpd_loo - plain.sum()) < 0.5, (loo.elpd_loo, plain.sum())
    assert loo.elpd_loo < lppd.sum()
    assert float(loo.pareto_k.max()) < 1.0, loo.pareto_k.values
    return loo


@pytest.mark.slow
def test_hmc_journey(problem, hmc_run, tmp_path):
    _, _, y, _ = problem
    idata, f_train = hmc_run
    assert idata.attrs["widebnn_method"].startswith("MCMC (")
    check_journey(idata, f_train, y, tmp_path)


def test_rejection_journey(problem, rejection_run, tmp_path):
    _, _, y, _ = problem
    idata, f_train = rejection_run
    assert idata.attrs["widebnn_method"] == "exact (rejection)"
    assert idata.posterior.sizes["chain"] == 1
    check_journey(idata, f_train, y, tmp_path)


@pytest.mark.slow
def test_numpyro_journey(problem, numpyro_run, tmp_path):
    _, _, y, _ = problem
    idata, f_train = numpyro_run
    check_journey(idata, f_train, y, tmp_path, projections=False)


def check_compare(runs):
    """``az.compare`` ranks the runs by the same elpd_loo as ``az.loo``; since all
    sample the same posterior, their lppd agree within 4.5 Monte Carlo standard
    errors (conservative ones; a false alarm has probability < 1e-5)."""
    table = az.compare({name: idata for name, (idata, _) in runs.items()})
    loo = {name: az.loo(idata).elpd_loo for name, (idata, _) in runs.items()}
    assert set(table.index) == set(runs)
    assert list(table["rank"]) == list(range(len(runs)))
    for name, value in loo.items():
        assert table.loc[name, "elpd_loo"] == pytest.approx(value, rel=1e-12)
    best = max(loo.values())
    for name, value in loo.items():
        assert table.loc[name, "elpd_diff"] == pytest.approx(best - value, abs=1e-12)
    assert table["weight"].sum() == pytest.approx(1.0, abs=1e-9)
    lppd = {
        name: lppd_and_se(idata.log_likelihood["y"].values)
        for name, (idata, _) in runs.items()
    }
    names = list(lppd)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (va, sa), (vb, sb) = lppd[a], lppd[b]
            assert abs(va - vb) <= 4.5 * math.hypot(sa, sb), (a, b, lppd)


def test_compare_halves_of_the_exact_draws(rejection_run):
    idata, f_train = rejection_run
    halves = {
        name: (idata.isel(draw=part), f_train[:, part])
        for name, part in (("first", slice(0, 500)), ("second", slice(500, 1000)))
    }
    check_compare(halves)


@pytest.mark.slow
def test_compare_all_three(hmc_run, rejection_run, numpyro_run):
    check_compare({"hmc": hmc_run, "rejection": rejection_run, "nuts": numpyro_run})
