"""``widebnn.diagnostics``: ArviZ conversion of a real (short) HMC run, ArviZ
functions on it, netCDF round trip, and random projections.

The pointwise log-likelihood and the replicated data are checked against a numpy
forward pass of the network (written here from the documented NTK-parameterised
formulas) and scipy's normal log-density."""

import math
from types import SimpleNamespace

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import scipy.stats

from widebnn import WideBNN, diagnostics, kernels, samplers

# Short runs: hmc rightly warns that they have not converged.
pytestmark = pytest.mark.filterwarnings("ignore::widebnn.samplers.SamplerWarning")
NOISE = 0.3
W_STD, B_STD, READOUT_W_STD, READOUT_B_STD, WIDTH = 1.5, 0.1, 1.0, 0.1, 4


def numpy_forward(params, x):
    """``f(x)`` of Dense(WIDTH, W_STD, B_STD) -> Relu -> readout, NTK
    parameterisation (``z = W_std / sqrt(fan_in) x W + b_std b``), for every draw:
    ``(chain, draw, N, 1)``."""
    x = np.asarray(x)
    w1 = np.asarray(params["body"][0]["W"])  # (chain, draw, 1, WIDTH)
    b1 = np.asarray(params["body"][0]["b"])  # (chain, draw, WIDTH)
    w2 = np.asarray(params["readout"]["W"])  # (chain, draw, WIDTH, 1)
    b2 = np.asarray(params["readout"]["b"])  # (chain, draw, 1)
    pre = W_STD / np.sqrt(x.shape[1]) * np.einsum("nd,csdh->csnh", x, w1)
    hidden = np.maximum(pre + B_STD * b1[:, :, None, :], 0.0)
    out = READOUT_W_STD / np.sqrt(WIDTH) * np.einsum("csnh,csho->csno", hidden, w2)
    return out + READOUT_B_STD * b2[:, :, None, :]


@pytest.fixture(scope="module")
def run():
    body = kernels.serial(kernels.Dense(WIDTH, W_STD, B_STD), kernels.Relu())
    model = WideBNN(body, WIDTH, READOUT_W_STD, READOUT_B_STD, NOISE, 1)
    x = jnp.linspace(-1.0, 1.0, 8)[:, None]
    y = jnp.sin(2.0 * x)
    x_test = jnp.array([[-0.9], [-0.2], [0.3], [0.8], [1.2]])
    post = samplers.hmc(
        model, x, y, algorithm="hmc", num_chains=2, num_warmup=100,
        num_samples=100, num_integration_steps=5, key=jax.random.key(0),
        progress=False, x_pred=x_test, chunk_size=100,
    )  # fmt: skip
    idata = diagnostics.to_inference_data(
        post, model=model, x_test=x_test, x_train=x, observed={"y": y},
        num_projections=3,
    )  # fmt: skip
    return model, post, idata, x_test, x, y


def assert_png(path, min_size=(200, 300)):
    """A PNG of at least ``min_size`` (rows, columns) pixels that is not blank."""
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= min_size[0] and image.shape[1] >= min_size[1], image.shape
    assert image[..., :3].std() > 0.01  # not one flat colour


def test_numpy_forward_pass_is_the_model(run):
    """The test's own forward pass agrees with the sampler's predictions."""
    _, post, _, x_test, _, _ = run
    np.testing.assert_allclose(
        numpy_forward(post.params, x_test), post.predictions, rtol=1e-10, atol=1e-12
    )


def test_groups_names_dims_and_values(run):
    model, post, idata, x_test, x, y = run
    assert set(idata.groups()) == {
        "posterior", "posterior_predictive", "log_likelihood", "sample_stats",
        "observed_data", "constant_data",
    }  # fmt: skip
    w = idata.posterior["readout_W"]
    assert w.dims == ("chain", "draw", "hidden", "out") and w.shape == (2, 100, 4, 1)
    np.testing.assert_array_equal(w.values, post.params["readout"]["W"])
    assert idata.posterior["readout_b"].dims == ("chain", "draw", "out")
    np.testing.assert_array_equal(
        idata.posterior["body_0_W"].values, post.params["body"][0]["W"]
    )
    assert idata.posterior["f"].dims == ("chain", "draw", "pred", "out")
    np.testing.assert_array_equal(idata.posterior["f"].values, post.predictions)
    assert idata.posterior["f_projection"].shape == (2, 100, 3)
    assert idata.posterior["weight_projection"].shape == (2, 100, 3)
    # posterior predictive y_pred = f + N(0, NOISE^2) at x_test and y = f(x) +
    # N(0, NOISE^2) at the training inputs (the observed variable's name, for
    # az.plot_ppc); each residual's sample variance (1000 and 1600 values) against
    # chi-square bounds (false-alarm rate 1e-4 each)
    predictive = idata.posterior_predictive
    assert predictive["y_pred"].dims == ("chain", "draw", "pred", "out")
    assert predictive["y"].dims == ("chain", "draw", "obs", "out")
    assert predictive["y"].shape == (2, 100, 8, 1)
    f_train = numpy_forward(post.params, x)
    for residual in (
        (predictive["y_pred"] - predictive["f"]).values,
        predictive["y"].values - f_train,
    ):
        n = residual.size
        lo, hi = scipy.stats.chi2.ppf([5e-5, 1 - 5e-5], n)
        assert lo / n < np.mean(residual**2) / NOISE**2 < hi / n
    # pointwise log-likelihood: scipy's normal log-density of each residual
    log_lik = idata.log_likelihood["y"]
    assert log_lik.dims == ("chain", "draw", "obs", "out")
    expected = scipy.stats.norm.logpdf(np.asarray(y), f_train, NOISE)
    np.testing.assert_allclose(log_lik.values, expected, rtol=1e-10)
    total = jax.vmap(jax.vmap(model.log_likelihood, (0, None, None)), (0, None, None))
    np.testing.assert_allclose(
        log_lik.values.sum((2, 3)), total(post.params, x, y), rtol=1e-10
    )
    stats = idata.sample_stats
    for name in (
        "lp",
        "acceptance_rate",
        "diverging",
        "energy",
        "n_steps",
        "step_size",
    ):
        assert stats[name].dims == ("chain", "draw"), name
    assert stats["diverging"].dtype == bool
    np.testing.assert_array_equal(stats["energy"].values, post.sample_stats["energy"])
    assert idata.observed_data["y"].dims == ("obs", "out")
    np.testing.assert_array_equal(idata.observed_data["y"].values, y)
    np.testing.assert_array_equal(idata.constant_data["x_test"].values, x_test)
    np.testing.assert_array_equal(idata.constant_data["x_train"].values, x)
    assert np.all(idata.constant_data["noise_std"].values == NOISE)
    assert idata.attrs["sampler_algorithm"] == "hmc"
    assert idata.attrs["widebnn_method"] == "MCMC (hmc)"


def test_training_predictions_without_params_and_bad_x_train(run):
    """Predictions made at the training inputs are used as they are (no forward
    pass, so no parameters needed); otherwise x_train needs model, y and params."""
    model, post, _, x_test, x, y = run
    at_train = SimpleNamespace(
        predictions=numpy_forward(post.params, x), params=None, sample_stats={}
    )
    idata = diagnostics.to_inference_data(
        at_train, model=model, x_test=x, x_train=x, observed={"y": y}
    )
    expected = scipy.stats.norm.logpdf(np.asarray(y), at_train.predictions, NOISE)
    np.testing.assert_allclose(idata.log_likelihood["y"].values, expected, rtol=1e-12)
    assert idata.attrs["widebnn_method"] == "samples"
    with pytest.raises(ValueError, match="posterior.params"):
        diagnostics.to_inference_data(
            at_train, model=model, x_test=x[::-1], x_train=x, observed={"y": y}
        )
    with pytest.raises(ValueError, match="x_train needs model"):
        diagnostics.to_inference_data(post, x_train=x, observed={"y": y})
    with pytest.raises(ValueError, match="observed"):
        diagnostics.to_inference_data(post, model=model, x_train=x)
    with pytest.raises(ValueError, match=r"observed y must have shape \(N, d\)"):
        diagnostics.to_inference_data(
            post, model=model, x_train=x[:5], observed={"y": y}
        )


# ArviZ 0.23.4's plot_energy calls a matplotlib helper deprecated in 3.11.
@pytest.mark.filterwarnings("ignore:Passing a dict or None as alias_mapping")
def test_arviz_functions_run_on_it(run, tmp_path):
    _, post, idata, _, _, _ = run
    summary = az.summary(idata, var_names=["f", "readout_b"], round_to="none")
    assert {"mean", "sd", "ess_bulk", "ess_tail", "r_hat", "mcse_mean"} <= set(
        summary.columns
    )
    f = np.asarray(post.predictions)
    np.testing.assert_allclose(
        summary.loc["f[2, 0]", "mean"], f[:, :, 2, 0].mean(), rtol=1e-12
    )
    ess = az.ess(idata, var_names=["f"])["f"].values
    rhat = az.rhat(idata, var_names=["f"])["f"].values
    for i in range(f.shape[2]):  # the same numbers as ArviZ on the raw arrays
        assert ess[i, 0] == pytest.approx(az.ess(f[:, :, i, 0]), rel=1e-12)
        assert rhat[i, 0] == pytest.approx(az.rhat(f[:, :, i, 0]), rel=1e-12)
    np.testing.assert_allclose(diagnostics.bulk_ess(f)[:, 0], ess[:, 0], rtol=1e-12)
    az.plot_trace(idata, var_names=["readout_b", "f_projection"])
    plt.gcf().savefig(tmp_path / "trace.png", dpi=50)
    plt.close("all")
    az.plot_energy(idata)
    plt.gcf().savefig(tmp_path / "energy.png", dpi=50)
    plt.close("all")
    # ArviZ's default sizes: trace 12 x 2 inches per variable row (2 rows), energy
    # at least 4 inches square; at 50 dpi
    assert_png(tmp_path / "trace.png", min_size=(200, 600))
    assert_png(tmp_path / "energy.png", min_size=(200, 200))


def test_netcdf_round_trip_and_zarr(run, tmp_path):
    _, _, idata, _, _, _ = run
    path = diagnostics.save_inference_data(idata, tmp_path / "run.nc")
    back = diagnostics.load_inference_data(path)
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        original, loaded = idata[group], back[group]
        assert set(original.data_vars) == set(loaded.data_vars), group
        for name in original.data_vars:
            np.testing.assert_array_equal(loaded[name].values, original[name].values)
            assert loaded[name].dims == original[name].dims
    assert back.attrs["widebnn_model"] == idata.attrs["widebnn_model"]
    try:
        import zarr  # noqa: F401
    except ImportError:  # zarr is optional: saving to .zarr names what is missing
        with pytest.raises(ImportError, match="zarr"):
            diagnostics.save_inference_data(idata, tmp_path / "run.zarr")
    else:  # pragma: no cover - not installed in the test environment
        back = diagnostics.load_inference_data(
            diagnostics.save_inference_data(idata, tmp_path / "run.zarr")
        )
        np.testing.assert_array_equal(back.posterior["f"], idata.posterior["f"])


def test_raw_arrays_blackjax_names_and_bad_input():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(2, 30, 3, 2))
    idata = diagnostics.to_inference_data(draws, observed=rng.normal(size=(3, 2)))
    assert set(idata.posterior.data_vars) == {"f"}
    assert idata.observed_data["y"].dims == ("obs", "out")
    assert set(idata.groups()) == {"posterior", "posterior_predictive",
                                   "observed_data"}  # fmt: skip
    holder = SimpleNamespace(
        predictions=draws,
        params=None,
        sample_stats={
            "is_divergent": np.zeros((2, 30), int),
            "num_integration_steps": np.ones((2, 30)),
            "log_evidence": np.zeros(()),  # not per draw: left out
        },
    )
    stats = diagnostics.to_inference_data(holder).sample_stats
    assert set(stats.data_vars) == {"diverging", "n_steps"}
    assert stats["diverging"].dtype == bool
    with pytest.raises(ValueError, match="4-D"):
        diagnostics.to_inference_data(draws[..., 0])
    with pytest.raises(ValueError, match="x_test"):
        diagnostics.to_inference_data(draws, x_test=np.zeros((4, 1)))
    bad = SimpleNamespace(predictions=draws, params={"w": np.zeros((2, 29, 3))})
    with pytest.raises(ValueError, match="leading axes"):
        diagnostics.to_inference_data(bad)
    with pytest.raises(TypeError, match="posterior"):
        diagnostics.to_inference_data(object())


def test_random_projections_of_a_pytree_match_one_direct_product():
    """Blocks and leaves draw the directions from one numpy stream, so projecting a
    pytree equals projecting the concatenated weights with U = one (P, K) draw."""
    rng = np.random.default_rng(1)
    tree = {"a": rng.normal(size=(2, 5, 3, 4)), "b": rng.normal(size=(2, 5, 7))}
    flat = np.concatenate([tree["a"].reshape(2, 5, -1), tree["b"]], axis=-1)
    directions = np.random.default_rng(9).standard_normal((19, 6))
    expected = flat @ directions / math.sqrt(19)
    got = diagnostics.random_projections(tree, 6, seed=9, block_size=5)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="num_projections"):
        diagnostics.random_projections(tree, 0)
    with pytest.raises(ValueError, match="leading"):
        diagnostics.random_projections(
            {"a": np.zeros((2, 5, 1)), "b": np.zeros((3, 5))}
        )


def test_projection_ess_and_rhat_detect_mixing():
    """i.i.d. chains: bulk ESS near the number of draws (per-projection relative sd
    ~ 3 %; band 25 %) and R-hat < 1.01; chains stuck apart (one shifted by 3 in every
    weight): R-hat far above 1.1 for some projection."""
    rng = np.random.default_rng(2)
    weights = {"w": rng.normal(size=(4, 500, 50)), "b": rng.normal(size=(4, 500))}
    ess, rhat = diagnostics.projection_ess(weights, num_projections=20)
    assert np.all(np.abs(ess / 2000 - 1) < 0.25), ess
    assert rhat.max() < 1.01
    stuck = {"w": weights["w"] + 3.0 * (np.arange(4) == 0)[:, None, None]}
    _, rhat_stuck = diagnostics.projection_ess(stuck, num_projections=20)
    assert rhat_stuck.max() > 1.1


def test_projection_summary_of_the_run(run):
    """The summary is ArviZ's ESS and R-hat of the random projections, which equal
    the projections formed here with numpy from the documented directions
    (default_rng(seed) normals scaled by 1/sqrt(P), leaves in tree order). ArviZ
    runs on the library's projections: HMC repeats a state when it rejects, and
    rank statistics break those ties by the last bit."""
    _, post, _, _, _, _ = run
    summary = diagnostics.projection_summary(post, num_projections=5, seed=3)
    assert set(summary) == {"predictions", "weights"}
    groups = {
        "predictions": (post.predictions, 3),
        "weights": (post.params, 4),
    }
    for name, (draws, seed) in groups.items():
        leaves = [
            np.asarray(leaf).reshape(2, 100, -1) for leaf in jax.tree.leaves(draws)
        ]
        flat = np.concatenate(leaves, -1)
        directions = np.random.default_rng(seed).standard_normal((flat.shape[2], 5))
        projected = diagnostics.random_projections(draws, 5, seed)
        np.testing.assert_allclose(
            projected, flat @ directions / math.sqrt(flat.shape[2]), atol=1e-12
        )
        ess = [az.ess(projected[..., k]) for k in range(5)]
        tail = [az.ess(projected[..., k], method="tail") for k in range(5)]
        rhat = [az.rhat(projected[..., k]) for k in range(5)]
        stats = summary[name]
        assert stats["num_draws"] == 200
        assert stats["ess_bulk_min"] == pytest.approx(min(ess), rel=1e-12)
        assert stats["ess_bulk_median"] == pytest.approx(np.median(ess), rel=1e-12)
        assert stats["ess_tail_min"] == pytest.approx(min(tail), rel=1e-12)
        assert stats["r_hat_max"] == pytest.approx(max(rhat), rel=1e-12)
