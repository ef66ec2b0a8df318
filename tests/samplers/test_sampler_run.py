"""What ``hmc`` does around the chains: resolved defaults, convergence warnings, the
warm-up progress bar, one BLAS thread, key checks, ``Posterior.predict``."""

import math
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import threadpoolctl
import xarray as xr
from widebnn.samplers import _checks, _convergence, _hmc_config, _platform

from widebnn import WideBNN, kernels, samplers

SIGMA = 0.5


def linear_problem(n=12):
    """Bayesian linear regression (no hidden weights: with the exact readout every
    draw is an independent exact posterior draw)."""
    model = WideBNN(kernels.Identity(), 2, 1.0, 0.5, SIGMA, 1)
    x = jax.random.normal(jax.random.key(0), (n, 2))
    y = x[:, :1] - 0.5 + SIGMA * jax.random.normal(jax.random.key(1), (n, 1))
    return model, x, y


def relu_problem(width=3):
    body = kernels.serial(kernels.Dense(width, 1.5, 0.3), kernels.Relu())
    model = WideBNN(body, width, 1.0, 0.3, 0.3, 1)
    x = jnp.linspace(-1.0, 1.0, 6)[:, None]
    return model, x, jnp.sin(2.0 * x)


@pytest.fixture(scope="module")
def stuck_run():
    """Repriorised defaults, 2 warm-up steps and a tiny fixed step: the chains stay
    near their prior draws. Returns the posterior and its SamplerWarnings (one run,
    shared by the tests below: compilation is most of its cost)."""
    model, x, y = relu_problem()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = samplers.hmc(
            model, x, y, num_warmup=2, num_samples=50, step_size=1e-4,
            key=jax.random.key(0), progress=False, x_pred=x[:2],
        )  # fmt: skip
    return post, caught


def sampler_warnings(fn):
    """Runs ``fn`` and returns the messages of the SamplerWarnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught if w.category is samplers.SamplerWarning]


# --- R-hat and ESS (against ArviZ) ----------------------------------------------------
def ar1(rng, rho, chains, draws, k, offsets=None):
    noise = rng.standard_normal((chains, draws, k))
    out = np.zeros_like(noise)
    out[:, 0] = noise[:, 0]
    for t in range(1, draws):
        out[:, t] = rho * out[:, t - 1] + noise[:, t]
    return out if offsets is None else out + np.asarray(offsets)[:, None, None]


@pytest.mark.parametrize(
    "rho, chains, draws, offsets",
    [
        (0.9, 4, 1000, None),
        (-0.5, 4, 501, None),  # antithetic, odd length (middle draw dropped)
        (0.99, 4, 200, [0.0, 0.0, 3.0, 0.0]),  # one chain elsewhere
        (0.3, 3, 7, None),
        (0.5, 2, 4, None),  # the shortest chains checked
    ],
)
def test_rank_rhat_and_bulk_ess_match_arviz(rho, chains, draws, offsets):
    """The numpy estimators equal ArviZ's (an independent implementation of
    Vehtari et al. 2021) to rounding."""
    values = ar1(np.random.default_rng(1), rho, chains, draws, 5, offsets)
    data = xr.Dataset({"v": (("chain", "draw", "k"), values)})
    expected_ess = np.asarray(az.ess(data, method="bulk")["v"])
    expected_rhat = np.asarray(az.rhat(data)["v"])
    np.testing.assert_allclose(_convergence.bulk_ess(values), expected_ess, rtol=1e-10)
    np.testing.assert_allclose(
        _convergence.rank_rhat(values), expected_rhat, rtol=1e-12
    )


def test_projections_are_those_of_diagnostics():
    from widebnn import diagnostics

    draws = np.random.default_rng(2).normal(size=(3, 20, 5, 2))
    np.testing.assert_allclose(
        _convergence.projections(draws, 7, seed=3),
        diagnostics.random_projections(draws, 7, seed=3),
        rtol=1e-12,
    )


def stats(chains, draws, acceptance=0.9, diverging=0):
    div = np.zeros((chains, draws), bool)
    div.flat[:diverging] = True
    return {"acceptance_rate": np.full((chains, draws), acceptance), "diverging": div}


def test_problems_of_synthetic_runs():
    """Each check fires on a run built to fail it, and only then."""
    rng = np.random.default_rng(3)
    good = rng.normal(size=(4, 500, 3, 1))
    assert _convergence.problems(good, stats(4, 500)) == []
    apart = good + np.array([0.0, 0.0, 0.0, 2.0])[:, None, None, None]
    messages = _convergence.problems(apart, stats(4, 500))
    assert any("R-hat" in m and "num_warmup" in m for m in messages), messages
    sticky = ar1(rng, 0.995, 4, 500, 3)[..., None]  # ESS ~ 10
    messages = _convergence.problems(sticky, stats(4, 500))
    assert any("bulk ESS" in m and "num_samples" in m for m in messages), messages
    (message,) = _convergence.problems(good, stats(4, 500, diverging=3))
    assert "3 of 2000" in message and "diverg" in message
    (message,) = _convergence.problems(good, stats(4, 500, acceptance=0.1))
    assert "acceptance" in message and "step_size" in message
    # Advice on faster options only for runs that did not use them.
    plain = {"reparam": "none", "exact_readout": False}
    messages = _convergence.problems(sticky, stats(4, 500), plain)
    assert messages and all("reparam='repriorised'" in m for m in messages)
    best = {"reparam": "repriorised", "exact_readout": True}
    assert not any(
        "exact_readout" in m for m in _convergence.problems(sticky, stats(4, 500), best)
    )
    # Too few draws per chain for R-hat/ESS: only the other checks run.
    assert _convergence.problems(apart[:, :3], stats(4, 3)) == []
    # 40 chains: 10 effective draws per chain are asked for (400 in all).
    many = ar1(rng, 0.9, 40, 20, 3)[..., None]  # ESS ~ 40 * 20 / 19 ~ 42 < 400
    assert any("< 400" in m for m in _convergence.problems(many, stats(40, 20)))


# --- warnings of real runs ------------------------------------------------------------
def test_a_stuck_run_warns(stuck_run):
    _, caught = stuck_run
    assert {w.category for w in caught} == {samplers.SamplerWarning}
    messages = " ".join(str(w.message) for w in caught)
    assert "R-hat" in messages and "bulk ESS" in messages
    # The warning points at the caller's line, not into the package.
    assert all(w.filename == __file__ for w in caught)


def test_divergent_run_warns():
    """A step far too large for the standard parameterisation: every proposal
    diverges and is rejected."""
    model, x, y = relu_problem()
    with pytest.warns(samplers.SamplerWarning) as record:
        samplers.hmc(
            model, x, y, reparam="none", num_warmup=1, num_samples=5,
            step_size=50.0, key=jax.random.key(0), progress=False,
        )  # fmt: skip
    messages = " ".join(str(w.message) for w in record)
    assert "divergent" in messages and "acceptance rate" in messages


def test_a_good_run_does_not_warn():
    """Exact i.i.d. posterior draws (linear model, exact readout): no warning."""
    model, x, y = linear_problem()
    found = sampler_warnings(
        lambda: samplers.hmc(
            model,
            x,
            y,
            num_warmup=10,
            num_samples=250,
            key=jax.random.key(2),
            progress=False,
        )  # fmt: skip
    )
    assert found == []


# --- defaults -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "algorithm, reparam, kernel_reg, given, expected",
    [
        ("ghmc", "repriorised", 0.25, {}, (True, "gaussian_split", 0.8)),
        ("ghmc", "repriorised", 0.5, {}, (False, "leapfrog", 0.9)),
        ("ghmc", "none", None, {}, (False, "leapfrog", 0.9)),
        ("nuts", "repriorised", 0.25, {}, (True, "gaussian_split", 0.8)),
        ("hmc", "none", None, {}, (False, "leapfrog", 0.8)),
        ("ghmc", "repriorised", 0.25, {"exact_readout": False},
         (False, "leapfrog", 0.9)),
        ("ghmc", "repriorised", 0.25, {"integrator": "leapfrog"},
         (True, "leapfrog", 0.8)),
        ("ghmc", "repriorised", 0.25, {"target": 0.95},
         (True, "gaussian_split", 0.95)),
        ("ghmc", "none", None, {"integrator": "gaussian_split"},
         (False, "gaussian_split", 0.9)),
    ],
)  # fmt: skip
def test_defaults_resolve_by_reparameterisation(
    algorithm, reparam, kernel_reg, given, expected
):
    """noise_std = 0.5: kernel_reg 0.25 is the exact repriorisation; explicit
    choices are kept."""
    model, _, _ = linear_problem()
    args = {"exact_readout": None, "integrator": None, "target": None} | given
    resolved = _hmc_config.resolve_defaults(
        model, algorithm, reparam, kernel_reg, *args.values()
    )
    assert resolved == expected


@pytest.mark.parametrize(
    "kwargs, name", [({"exact_readout": "yes"}, "exact_readout"),
                     ({"integrator": "yoshida"}, "integrator")],
)  # fmt: skip
def test_bad_defaults_are_named(kwargs, name):
    model, x, y = linear_problem()
    with pytest.raises(ValueError, match=name):
        samplers.hmc(model, x, y, key=jax.random.key(0), progress=False, **kwargs)


def test_resolved_defaults_are_recorded(stuck_run):
    post, _ = stuck_run
    assert post.settings["exact_readout"] is True
    assert post.settings["integrator"] == "gaussian_split"
    assert post.settings["target_acceptance"] == 0.8


# --- keys -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [0, 1.5, "seed", np.arange(3.0), jax.random.split(jax.random.key(0), 2)],
    ids=["int", "float", "str", "float-array", "two-keys"],
)
def test_a_key_that_is_not_one_is_a_type_error(key):
    model, x, y = linear_problem()
    with pytest.raises(
        TypeError, match=r"key must be a JAX PRNG key.*jax\.random\.key"
    ):
        samplers.hmc(model, x, y, key=key, progress=False)


def test_legacy_raw_keys_are_accepted():
    key = _checks.check_key(jax.random.PRNGKey(3))
    assert key.shape == (2,) and key.dtype == np.uint32


# --- warm-up progress bar -------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"step_size": 0.1}, {"algorithm": "hmc", "num_integration_steps": 2}],
    ids=["ghmc-adapted", "fixed-step", "hmc-window"],
)
def test_warmup_progress_bar(kwargs, capfd):
    """The bar reaches 30/30 steps when progress is on; nothing when it is off."""
    model, x, y = linear_problem()
    args = dict(num_warmup=30, num_samples=4, key=jax.random.key(1)) | kwargs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", samplers.SamplerWarning)
        samplers.hmc(model, x, y, progress=True, **args)
        shown = capfd.readouterr().err
        samplers.hmc(model, x, y, progress=False, **args)
        hidden = capfd.readouterr().err
    assert "warm-up" in shown and "30/30" in shown, shown
    assert "sampling" in shown
    assert "warm-up" not in hidden and "sampling" not in hidden


# --- BLAS threads ---------------------------------------------------------------------
def blas_threads():
    return {
        info["filepath"]: info["num_threads"]
        for info in threadpoolctl.threadpool_info()
        if info["user_api"] == "blas"
    }


def test_blas_single_threaded_limits_and_restores():
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        with _platform.blas_single_threaded():
            inside = blas_threads()
        after = blas_threads()
    # scipy's OpenBLAS (JAX's CPU LAPACK) is among the limited libraries.
    assert any("scipy" in path for path in inside)
    assert set(inside.values()) == {1}
    assert set(after.values()) == {2}


class ThreadRecordingBNN(WideBNN):
    """A WideBNN whose log prior records the BLAS thread counts while the compiled
    sampler runs (a host callback)."""

    seen: list = []

    def _key(self):
        return (*super()._key(), "records BLAS threads")

    def log_prior(self, params):
        jax.debug.callback(lambda: self.seen.append(set(blas_threads().values())))
        return super().log_prior(params)


def test_hmc_runs_with_one_blas_thread():
    model = ThreadRecordingBNN(kernels.Identity(), 2, 1.0, 0.5, SIGMA, 1)
    _, x, y = linear_problem()
    with threadpoolctl.threadpool_limits(2, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", samplers.SamplerWarning)
        samplers.hmc(
            model, x, y, num_warmup=3, num_samples=4, step_size=0.1,
            exact_readout=False, key=jax.random.key(0), progress=False,
        )  # fmt: skip
        assert set(blas_threads().values()) == {2}
    assert model.seen and all(seen == {1} for seen in model.seen)


# --- Posterior.predict ----------------------------------------------------------------
def by_hand(params, x, width):
    """f(x) of a Dense(width, 1.5, 0.3) -> ReLU -> readout(1.0, 0.3) network,
    NTK parameterisation, in numpy."""
    dense, _ = params["body"]
    w, b = np.asarray(dense["W"]), np.asarray(dense["b"])
    h = np.maximum(1.5 / math.sqrt(x.shape[1]) * x @ w + 0.3 * b, 0.0)
    readout = params["readout"]
    return 1.0 / math.sqrt(width) * h @ np.asarray(readout["W"]) + 0.3 * np.asarray(
        readout["b"]
    )


def test_posterior_predict_applies_every_draw(stuck_run):
    post, _ = stuck_run
    _, x, _ = relu_problem()
    x_new = np.array([[-2.0], [0.3], [1.7], [5.0]])
    out = post.predict(x_new, batch_size=16)
    assert out.shape == (4, 50, 4, 1)
    for c in range(4):
        for s in (0, 17, 49):
            draw = jax.tree.map(lambda v, c=c, s=s: v[c, s], post.params)
            np.testing.assert_allclose(out[c, s], by_hand(draw, x_new, 3), rtol=1e-12)
    np.testing.assert_allclose(post.predict(x[:2]), post.predictions, rtol=1e-12)


def test_posterior_predict_needs_params(stuck_run):
    post, _ = stuck_run
    with pytest.raises(ValueError, match="store_params"):
        post._replace(params=None).predict(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="model"):
        post._replace(model=None).predict(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="x_new"):
        post.predict(np.zeros(3))
