"""``widebnn.compare``: distance formulas against independent closed forms, the
Monte Carlo standard errors against the spread over repeated runs, exact GP draws
consistent with zero, and a tiny width sweep.

Statistical tests use fixed seeds and Bonferroni-corrected normal/t quantiles for a
stated false-alarm rate.
"""

import math
from types import SimpleNamespace

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from _helpers import bonferroni_t_quantile

from widebnn import _distances, compare, gp, kernels, samplers

# Short plumbing runs: convergence warnings are tested in tests/samplers.
pytestmark = pytest.mark.filterwarnings("ignore::widebnn.samplers.SamplerWarning")

MOMENT_METRICS = ("rmse", "max_abs", "cov_rel_frobenius", "kl", "w2")


def random_spd(rng, m, floor=0.1):
    a = rng.normal(size=(m, m))
    return a @ a.T / m + floor * np.eye(m)


# --- closed forms ---------------------------------------------------------------
def test_gaussian_kl_closed_forms():
    rng = np.random.default_rng(0)
    # 1-D: log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2
    m1, s1, m2, s2 = 0.3, 0.7, -0.4, 1.9
    expected = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    kl = _distances.gaussian_kl([m1], [[s1**2]], [m2], [[s2**2]])
    assert kl == pytest.approx(expected, rel=1e-12)
    # diagonal covariances: the sum of 1-D divergences
    v1, v2 = rng.uniform(0.2, 2, 4), rng.uniform(0.2, 2, 4)
    a, b = rng.normal(size=4), rng.normal(size=4)
    one_d = np.log(np.sqrt(v2 / v1)) + (v1 + (a - b) ** 2) / (2 * v2) - 0.5
    kl = _distances.gaussian_kl(a, np.diag(v1), b, np.diag(v2))
    assert kl == pytest.approx(one_d.sum(), rel=1e-12)
    # general: eigenvalues of Sq^{-1/2} Sp Sq^{-1/2} (an independent formula)
    sp, sq = random_spd(rng, 5), random_spd(rng, 5)
    mp, mq = rng.normal(size=5), rng.normal(size=5)
    root_inv = np.linalg.inv(scipy.linalg.sqrtm(sq).real)
    lam = np.linalg.eigvalsh(root_inv @ sp @ root_inv)
    delta = root_inv @ (mq - mp)
    expected = 0.5 * (np.sum(lam - 1 - np.log(lam)) + delta @ delta)
    assert _distances.gaussian_kl(mp, sp, mq, sq) == pytest.approx(expected, rel=1e-10)
    assert _distances.gaussian_kl(mp, sp, mp, sp) == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="positive-definite"):
        _distances.gaussian_kl(mp, np.zeros((5, 5)), mq, sq)
    with pytest.raises(ValueError, match="covariance"):
        _distances.gaussian_kl(mp, sp[:4, :4], mq, sq)


def test_gaussian_w2_closed_forms():
    rng = np.random.default_rng(1)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    w2 = _distances.gaussian_w2([1.0], [[0.25]], [-0.5], [[4.0]])
    assert w2 == pytest.approx(math.sqrt(1.5**2 + 1.5**2), rel=1e-12)
    # commuting covariances (shared eigenvectors): sum (sqrt(l1) - sqrt(l2))^2
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    l1, l2 = rng.uniform(0, 2, 4), rng.uniform(0, 2, 4)
    l1[0] = 0.0  # a singular covariance is allowed
    a, b = rng.normal(size=4), rng.normal(size=4)
    expected = np.sum((a - b) ** 2) + np.sum((np.sqrt(l1) - np.sqrt(l2)) ** 2)
    w2 = _distances.gaussian_w2(a, q @ np.diag(l1) @ q.T, b, q @ np.diag(l2) @ q.T)
    assert w2**2 == pytest.approx(expected, rel=1e-9)
    # general: scipy sqrtm, other ordering: tr(S1 + S2 - 2 (S1^.5 S2 S1^.5)^.5)
    s1, s2 = random_spd(rng, 5), random_spd(rng, 5)
    r1 = scipy.linalg.sqrtm(s1).real
    cross = np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    shift = rng.normal(size=5)
    expected = shift @ shift + np.trace(s1 + s2) - 2 * cross
    w2 = _distances.gaussian_w2(shift, s1, np.zeros(5), s2)
    assert w2**2 == pytest.approx(expected, rel=1e-9)


def test_mmd2_matches_a_double_loop():
    rng = np.random.default_rng(2)
    x, y, ell = rng.normal(size=(7, 2)), rng.normal(0.5, 1.0, size=(7, 2)), 1.3

    def k(a, b):
        return math.exp(-np.sum((a - b) ** 2) / (2 * ell**2))

    def u_statistic(x, y):
        m = len(x)
        h = np.zeros((m, m))
        for i in range(m):
            for j in range(m):
                if i != j:
                    h[i, j] = (k(x[i], x[j]) + k(y[i], y[j]) - k(x[i], y[j])
                               - k(x[j], y[i]))  # fmt: skip
        return h

    m = len(x)
    h = u_statistic(x, y)
    pairs = m * (m - 1)
    estimate = h.sum() / pairs
    result = _distances.mmd2(x, y, ell, num_permutations=20, seed=4)
    assert result.mmd2 == pytest.approx(estimate, rel=1e-12)
    # the documented Hoeffding variance, 4(m-2)/(m(m-1)) zeta1 + 2/(m(m-1)) zeta2,
    # zeta2 from the h_ij, zeta1 from the row means less the share of zeta2 in them
    zeta2 = sum(h[i, j] ** 2 for i in range(m) for j in range(m) if i != j) / pairs
    zeta2 -= estimate**2
    rows = [sum(h[i, j] for j in range(m) if j != i) / (m - 1) for i in range(m)]
    zeta1 = (np.var(rows, ddof=1) - zeta2 / (m - 1)) / (1 - 1 / (m - 1))
    variance = 4 * (m - 2) / pairs * zeta1 + 2 / pairs * zeta2
    assert result.se == pytest.approx(math.sqrt(variance), rel=1e-10)
    # permutation p-value (1 + #{permuted >= observed}) / 21, permutations of the
    # pooled sample from numpy.random.default_rng(seed)
    pooled, rng, count = np.concatenate([x, y]), np.random.default_rng(4), 0
    for _ in range(20):
        order = rng.permutation(2 * m)
        permuted = u_statistic(pooled[order[:m]], pooled[order[m:]]).sum() / pairs
        count += permuted >= estimate
    assert result.p_value == pytest.approx((1 + count) / 21, rel=1e-12)
    assert np.isnan(_distances.mmd2(x, y, ell).p_value)  # no permutations
    with pytest.raises(ValueError, match="bandwidth"):
        _distances.mmd2(x, y, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        _distances.mmd2(x, y[:5], 1.0)


def test_mmd2_is_unbiased_and_its_standard_error_matches_the_spread():
    """Over 300 repeats (m = 40): under P = Q the mean of the estimates is 0 within
    its standard error; under P != Q the mean reported se matches the standard
    deviation of the estimates (relative error of a sd from 300 values ~ 4 %;
    band: 4 sd, i.e. +-17 %)."""
    rng = np.random.default_rng(3)
    repeats, m = 300, 40
    z = bonferroni_t_quantile(1e-4, 3, repeats - 1)
    for shift in (0.0, 0.7):
        est, ses = [], []
        for _ in range(repeats):
            x = rng.normal(size=(m, 2))
            y = rng.normal(size=(m, 2)) + np.array([shift, 0.0])
            result = _distances.mmd2(x, y, 1.5)
            est.append(result.mmd2)
            ses.append(result.se)
        est, ses = np.array(est), np.array(ses)
        if shift == 0.0:
            assert abs(est.mean()) <= z * est.std(ddof=1) / math.sqrt(repeats)
        else:
            ratio = ses.mean() / est.std(ddof=1)
            assert abs(math.log(ratio)) <= z / math.sqrt(2 * (repeats - 1)), ratio


# --- predictive --------------------------------------------------------------------
@pytest.fixture(scope="module")
def gp_problem():
    net = kernels.serial(
        kernels.Dense(64, 1.5, 0.1), kernels.Relu(), kernels.Dense(1, 1.0, 0.1)
    )
    x = jnp.linspace(-1.0, 1.0, 6)[:, None]
    y = jnp.sin(2.0 * x)
    x_test = jnp.array([[-1.2], [-0.3], [0.4], [1.3]])
    post = gp.posterior(net, x, y, noise_var=0.05)
    mean, cov = (np.asarray(a) for a in post.predict(x_test))
    return post, x_test, mean, cov


def gp_draws(rng, mean, cov, chains, draws, *, rho=0.0, shift=0.0, scale=1.0):
    """(chains, draws, N, 1) AR(1) chains whose marginal is N(mean + shift,
    scale * cov) (rho = 0: independent draws)."""
    root = np.real(scipy.linalg.sqrtm(cov))
    z = rng.standard_normal((chains, draws, mean.size))
    x = np.empty_like(z)
    x[:, 0] = z[:, 0]
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho**2) * z[:, t]
    return (mean[:, 0] + shift + math.sqrt(scale) * x @ root)[..., None]


def test_exact_gp_draws_are_consistent_with_zero_and_a_shift_is_detected(gp_problem):
    """Exact GP draws: every moment metric exceeds its Monte Carlo floor by less
    than z standard errors (one-sided), and |mmd2| < z se; z is the Bonferroni
    normal quantile for a total false-alarm rate 1e-3. Draws with the mean shifted
    by 0.5 (about 2 GP standard deviations) exceed it by far."""
    post, x_test, mean, cov = gp_problem
    rng = np.random.default_rng(4)
    z = scipy.stats.norm.ppf(1 - 1e-3 / 6)
    exact = compare.predictive(gp_draws(rng, mean, cov, 2, 300), post, x_test)
    for name in MOMENT_METRICS:
        metric = exact[name]
        assert metric.value - metric.floor <= z * metric.se, (name, metric)
    assert abs(exact["mmd2"].value) <= z * exact["mmd2"].se, exact["mmd2"]
    shifted = gp_draws(rng, mean, cov, 2, 300, shift=0.5)
    wrong = compare.predictive(shifted, post, x_test)
    for name in ("rmse", "kl", "w2", "mmd2"):
        metric = wrong[name]
        assert metric.value - metric.floor > z * metric.se, (name, metric)
        assert metric.p_value < 0.02, (name, metric)


@pytest.mark.parametrize("rho", [0.0, 0.6])
def test_standard_errors_match_the_spread_over_repeats(gp_problem, rho):
    """The reported se (bootstrap of n_eff = ESS draws) against the standard
    deviation of the metric over 30 independent runs, for i.i.d. draws and for
    AR(1) chains (rho = 0.6: ESS = draws / 4, so ignoring the ESS would halve the
    se). Draws from a distorted GP (metrics away from 0). The log ratio of a sd from
    30 values has sd 1/sqrt(58); band: Bonferroni normal quantile for 1e-3 over 6
    metrics (3.8 sd). Calibration (seeds 0-39): ratios 0.91-1.13 (i.i.d.) and
    1.0-1.3 (AR(1): quadratic statistics mix faster than the mean, so their se is
    conservative)."""
    _, _, mean, cov = gp_problem
    rng = np.random.default_rng(5)
    repeats = 30
    values, ses = [], []
    for seed in range(repeats):
        draws = gp_draws(rng, mean, cov, 2, 200, rho=rho, shift=0.3, scale=1.5)
        result = compare.predictive(
            draws, (mean, cov), num_bootstrap=40, num_permutations=0, seed=seed
        )
        values.append([m.value for m in result.metrics.values()])
        ses.append([m.se for m in result.metrics.values()])
    ratio = np.mean(ses, 0) / np.std(values, 0, ddof=1)
    bound = scipy.stats.norm.ppf(1 - 1e-3 / 12) / math.sqrt(2 * (repeats - 1))
    assert np.all(np.abs(np.log(ratio)) <= bound), dict(
        zip(compare.METRICS, ratio, strict=True)
    )


def test_result_views_inputs_and_errors(gp_problem):
    post, x_test, mean, cov = gp_problem
    draws = gp_draws(np.random.default_rng(6), mean, cov, 2, 100)
    kwargs = dict(num_bootstrap=20, num_permutations=10)
    from_array = compare.predictive(draws, post, x_test, **kwargs)
    holder = SimpleNamespace(predictions=draws, params=None, sample_stats={})
    from_object = compare.predictive(holder, (mean, cov), noise_var=0.05, **kwargs)
    assert from_array.to_dict() == from_object.to_dict()
    flat = from_array.to_dict()
    for name in compare.METRICS:
        assert {name, f"{name}_se", f"{name}_floor", f"{name}_p"} <= set(flat)
    assert flat["num_draws"] == 200 and flat["num_outputs"] == 4
    # moment metrics and ESS from numpy / ArviZ on the same draws
    samples = draws.reshape(200, 4)
    error = samples.mean(0) - mean[:, 0]
    assert flat["rmse"] == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-12)
    assert flat["max_abs"] == pytest.approx(np.abs(error).max(), rel=1e-12)
    frobenius = np.linalg.norm(np.cov(samples.T) - cov) / np.linalg.norm(cov)
    assert flat["cov_rel_frobenius"] == pytest.approx(frobenius, rel=1e-10)
    ess = min(az.ess(draws[:, :, i, 0]) for i in range(4))
    assert flat["ess"] == pytest.approx(min(ess, 200), rel=1e-12)
    assert len(from_array.table().splitlines()) == 2 + len(compare.METRICS)
    assert from_array.table().startswith("samples vs GP predictive: 4 outputs")
    exact = SimpleNamespace(predictions=draws, num_proposals=5000,
                            settings={"bound": "data"})  # fmt: skip
    table = compare.predictive(exact, post, x_test, **kwargs).table()
    assert (
        table.startswith("exact (rejection) vs GP predictive") and "MCMC" not in table
    )
    ghmc = SimpleNamespace(predictions=draws, settings={"algorithm": "ghmc"})
    result = compare.predictive(ghmc, post, x_test, **kwargs)
    assert result.label == "MCMC (ghmc)"
    assert (
        compare.predictive(ghmc, post, x_test, label="mine", **kwargs).label == "mine"
    )
    assert from_array.to_dataframe().shape == (len(compare.METRICS), 4)
    same = compare.gaussian_distances((mean, cov), (mean, cov))
    assert all(abs(v) < 1e-6 for v in same.values()), same
    with pytest.raises(ValueError, match="4-D"):
        compare.predictive(draws[..., 0], post, x_test)
    with pytest.raises(ValueError, match="x_test"):
        compare.predictive(draws, post)
    with pytest.raises(ValueError, match="x_test"):
        compare.predictive(draws[:, :, :3], post, x_test)
    with pytest.raises(ValueError, match="full"):
        compare.predictive(draws, (mean, np.diag(cov)))
    with pytest.raises(ValueError, match="num_bootstrap"):
        compare.predictive(draws, post, x_test, num_bootstrap=1)
    # one draw (ArviZ's ESS is NaN below 4 draws per chain) is refused by name
    for count in (1, 3):
        with pytest.raises(ValueError, match="posterior_or_draws must have at least 4"):
            compare.predictive(draws[:, :count], post, x_test)
    assert compare.predictive(draws[:1, :4], post, x_test, **kwargs).num_draws == 4
    with pytest.raises(TypeError, match="gp_posterior"):
        compare.predictive(draws, 3.0)


@pytest.mark.slow
def test_width_sweep_tiny_run(tmp_path, monkeypatch):
    """A tiny sweep on 1-D data with few draws: the table has the promised columns,
    the row values are those of the sampler's draws (numpy on the recorded draws
    against the GP mean), and the plot is written. No trend is asserted: with this
    few draws the Monte Carlo error bars of neighbouring widths overlap."""
    runs = []
    rejection = samplers.rejection

    def recorded(model, *args, **kwargs):
        runs.append((model, rejection(model, *args, **kwargs)))
        return runs[-1][1]

    monkeypatch.setattr(samplers, "rejection", recorded)
    x = jnp.linspace(-1.0, 1.0, 5)[:, None]
    y = jnp.sin(2.0 * x)
    x_test = jnp.array([[-0.5], [0.2], [0.9]])
    widths, sampler = [4, 16, 64], "rejection"
    sweep = compare.width_sweep(
        lambda n: kernels.serial(kernels.Dense(n, 1.5, 0.1), kernels.Relu()),
        widths, x, y, x_test, key=jax.random.key(0), sampler=sampler,
        noise_std=0.3, num_samples=60, sampler_kwargs={"batch_size": 256},
        compare_kwargs={"num_bootstrap": 20, "num_permutations": 0},
        plot_path=tmp_path / "sweep.png", progress=False,
    )  # fmt: skip
    assert [row["width"] for row in sweep.rows] == widths
    expected = {"width", "sampler", "seconds", "acceptance_rate", "num_draws", "ess"}
    for name in compare.METRICS:
        expected |= {name, f"{name}_se", f"{name}_floor", f"{name}_p"}
    assert [model.width for model, _ in runs] == widths
    for row, (model, run) in zip(sweep.rows, runs, strict=True):
        assert expected <= set(row)
        assert row["sampler"] == sampler and row["num_outputs"] == 3
        assert row["num_draws"] == 60
        assert row["acceptance_rate"] == run.num_accepted / run.num_proposals
        nngp_mean = gp.posterior(model.kernel, x, y, noise_var=0.09).predict(x_test)[0]
        error = np.asarray(run.predictions).reshape(60, 3).mean(0) - nngp_mean[:, 0]
        assert row["rmse"] == pytest.approx(np.sqrt(np.mean(error**2)), rel=1e-9)
        assert all(np.isfinite(row[f"{m}_se"]) for m in MOMENT_METRICS)
        assert sweep.comparisons[row["width"]].label == "exact (rejection)"
    assert set(sweep.reference) == set(MOMENT_METRICS)
    # the NTK-GD ensemble's mean against the NNGP's, from the GP predictions
    kernel = runs[-1][0].kernel
    means = [
        np.asarray(
            gp.posterior(kernel, x, y, noise_var=0.09, get=get).predict(x_test)[0]
        )
        for get in ("ntk", "nngp")
    ]
    expected_rmse = np.sqrt(np.mean((means[0] - means[1]) ** 2))
    assert sweep.reference["rmse"] == pytest.approx(expected_rmse, rel=1e-9)
    assert len(sweep.table().splitlines()) == 1 + len(widths) + 1
    assert sweep.plot_path == str(tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sweep.to_dict()["rows"][0]["width"] == widths[0]


def test_width_sweep_hmc_branch_passes_its_settings(monkeypatch):
    """The HMC branch, with ``samplers.hmc`` replaced by a recorder that returns
    exact GP draws (the real sampler is tested in tests/samplers; compiling it per
    width would cost most of this module's time budget)."""
    x = jnp.linspace(-1.0, 1.0, 5)[:, None]
    y = jnp.sin(2.0 * x)
    x_test = jnp.array([[-0.5], [0.2]])
    calls = []

    def fake_hmc(model, x_, y_, **kwargs):
        calls.append((model.width, kwargs))
        draws = np.random.default_rng(model.width).normal(size=(3, 40, 2, 1))
        return SimpleNamespace(predictions=draws, sample_stats={})

    monkeypatch.setattr(samplers, "hmc", fake_hmc)
    sweep = compare.width_sweep(
        lambda n: kernels.serial(kernels.Dense(n, 1.5, 0.1), kernels.Relu()),
        [2, 8], x, y, x_test, key=jax.random.key(0), sampler="hmc",
        num_chains=3, num_warmup=7, num_samples=40, noise_std=0.3,
        sampler_kwargs={"algorithm": "nuts"}, progress=False,
        compare_kwargs={"num_bootstrap": 10, "num_permutations": 0},
    )  # fmt: skip
    assert [w for w, _ in calls] == [2, 8]
    kwargs = calls[0][1]
    assert kwargs["num_chains"] == 3 and kwargs["num_warmup"] == 7
    assert kwargs["num_samples"] == 40 and kwargs["algorithm"] == "nuts"
    assert kwargs["store_params"] is False
    np.testing.assert_array_equal(kwargs["x_pred"], x_test)
    assert [row["num_draws"] for row in sweep.rows] == [120, 120]
    assert np.isnan(sweep.rows[0]["acceptance_rate"])
    assert sweep.plot_path is None


def test_width_sweep_bad_arguments():
    x, y = jnp.zeros((3, 1)), jnp.zeros((3, 1))
    with pytest.raises(ValueError, match="sampler"):
        compare.width_sweep(None, [4], x, y, x, key=jax.random.key(0), sampler="mala")
    with pytest.raises(ValueError, match="widths"):
        compare.width_sweep(None, [0], x, y, x, key=jax.random.key(0))
    with pytest.raises(ValueError, match="y must be 2-D"):
        compare.width_sweep(None, [4], x, y[:, 0], x, key=jax.random.key(0))
