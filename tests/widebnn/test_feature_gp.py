"""GP inference on features (``gp.feature_posterior``): Woodbury, blocks, devices.

Oracles: an exact factor of the joint train+test kernel (``feature_map(...,
method="exact")`` on all inputs at once, looked up by row index so that every block
and device sees the same basis) turns the feature posterior into ``gp.posterior``
on the exact kernel, to rounding; blocked and sharded accumulation are checked
against statistics computed in one numpy pass; gradients against central finite
differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import relative_frobenius

from widebnn import gp, kernels

N_TRAIN, N_TEST = 20, 7
NOISE_VAR, DIAG_REG = 1e-2, 1e-3
# Woodbury against a dense Cholesky of the same kernel, both float64: measured
# agreement 4e-14 on O(1) means, variances and log likelihoods.
EXACT_ATOL = 1e-8


def _net(w_std=1.5):
    return kernels.serial(
        kernels.Dense(7, w_std, 0.1), kernels.Relu(), kernels.Dense(2, 1.2, 0.05)
    )


@pytest.fixture(scope="module")
def data():
    x = jax.random.normal(jax.random.key(0), (N_TRAIN + N_TEST, 3))
    y = jnp.sin(x[:N_TRAIN, :2]) + 0.3 * x[:N_TRAIN, 2:]
    return x[:N_TRAIN], y, x[N_TRAIN:]


class JointExactFeatures:
    """``fmap(index)``: rows of an exact factor of the kernel of all inputs.

    Inputs are row numbers ``(n, 1)``, so training and test features, in any
    block and on any device, come from one factor ``L`` with ``L L^T = K``
    on the joint set (``m = N_TRAIN + N_TEST > N_TRAIN``).
    """

    def __init__(self, net, x):
        exact = kernels.feature_map(net, None, 1, method="exact")(x)
        self.features = dict(zip(("nngp", "ntk"), exact, strict=True))

    def __call__(self, index, *, mask=None, get=("nngp", "ntk")):
        rows = index[:, 0].astype(jnp.int32)
        return tuple(self.features[name][rows] for name in get)


@pytest.fixture(scope="module")
def exact(data):
    x_train, _, x_test = data
    fmap = JointExactFeatures(_net(), jnp.concatenate([x_train, x_test]))
    index = jnp.arange(N_TRAIN + N_TEST, dtype=jnp.float64)[:, None]
    return fmap, index[:N_TRAIN], index[N_TRAIN:]


@pytest.fixture(scope="module")
def random_fmap():
    return kernels.feature_map(_net(), jax.random.key(1), 16)


@pytest.mark.parametrize("get", ["nngp", "ntkgp", "ntk"])
def test_woodbury_posterior_equals_the_exact_gp(data, exact, get):
    x_train, y, x_test = data
    fmap, i_train, i_test = exact
    reference = gp.posterior(
        _net(), x_train, y, noise_var=NOISE_VAR, get=get, diag_reg=DIAG_REG
    )
    post = gp.feature_posterior(
        fmap,
        i_train,
        y,
        noise_var=NOISE_VAR,
        get=get,
        diag_reg=DIAG_REG,
        block_size=6,
        progress=False,
    )
    expected = reference.predict(x_test, full_cov=True, observation_noise=True)
    full = post.predict(i_test, full_cov=True, observation_noise=True, progress=False)
    variances = post.predict(i_test, progress=False)
    np.testing.assert_allclose(full.mean, expected.mean, atol=EXACT_ATOL)
    np.testing.assert_allclose(full.covariance, expected.covariance, atol=EXACT_ATOL)
    np.testing.assert_allclose(variances.mean, expected.mean, atol=EXACT_ATOL)
    np.testing.assert_allclose(
        variances.covariance + NOISE_VAR,
        jnp.diagonal(expected.covariance),
        atol=EXACT_ATOL,
    )
    np.testing.assert_allclose(
        post.added_diagonal, reference.added_diagonal, rtol=1e-12
    )
    assert float(post.statistics.num_points) == N_TRAIN
    if get == "ntk":
        assert post.log_marginal_likelihood is None
    else:
        np.testing.assert_allclose(
            post.log_marginal_likelihood,
            reference.log_marginal_likelihood,
            atol=EXACT_ATOL,
        )
        np.testing.assert_allclose(post.mean_diagonal, reference.mean_diagonal)


@pytest.mark.parametrize("absolute", [False, True])
def test_feature_log_marginal_likelihood_equals_the_exact_one(data, exact, absolute):
    x_train, y, _ = data
    fmap, i_train, _ = exact
    settings = dict(
        noise_var=0.05, get="ntkgp", diag_reg=0.02, diag_reg_absolute_scale=absolute
    )
    expected = gp.log_marginal_likelihood(_net(), x_train, y, **settings)
    lml = gp.feature_log_marginal_likelihood(fmap, i_train, y, **settings)
    np.testing.assert_allclose(lml, expected, atol=EXACT_ATOL)


def _one_pass_statistics(fmap, x, y):
    phi = np.asarray(fmap(x, get="nngp"))
    y = np.asarray(y)
    return phi.T @ phi, phi.T @ y, np.sum(y**2)


def test_blocked_accumulation_equals_one_pass(data, random_fmap):
    x_train, y, x_test = data
    gram, moment, target_sq = _one_pass_statistics(random_fmap, x_train, y)
    one_device = jax.local_devices()[:1]
    predictions = []
    for block_size in (1, 7, N_TRAIN, 64):  # 7 does not divide N = 20
        post = gp.feature_posterior(
            random_fmap,
            x_train,
            y,
            noise_var=NOISE_VAR,
            block_size=block_size,
            devices=one_device,
            progress=False,
        )
        stats = post.statistics
        np.testing.assert_allclose(stats.gram, gram, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(stats.moment, moment, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(stats.target_sq, target_sq, rtol=1e-12)
        assert float(stats.num_points) == N_TRAIN
        predictions.append(post.predict(x_test, full_cov=True, progress=False))
    for prediction in predictions[1:]:
        np.testing.assert_allclose(prediction.mean, predictions[0].mean, atol=1e-10)
        np.testing.assert_allclose(
            prediction.covariance, predictions[0].covariance, atol=1e-10
        )


def test_rows_sharded_over_devices_equal_one_device(data, random_fmap):
    assert len(jax.local_devices()) == 4  # tests/conftest.py simulates 4 CPUs
    x_train, y, x_test = data
    posts = [
        gp.feature_posterior(
            random_fmap,
            x_train,
            y,
            noise_var=NOISE_VAR,
            get="ntk",
            block_size=6,  # 6 rows per block on one device, 8 on four
            devices=devices,
            progress=False,
        )
        for devices in (jax.local_devices()[:1], None)
    ]
    for a, b in zip(posts[0].statistics, posts[1].statistics, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    one, four = (p.predict(x_test, progress=False) for p in posts)
    np.testing.assert_allclose(one.mean, four.mean, atol=1e-10)
    np.testing.assert_allclose(one.covariance, four.covariance, atol=1e-10)


def test_random_features_give_the_exact_posterior_at_large_dim(data):
    # Relative error of the posterior mean (variances) with dim = 2048 random
    # features against the exact NNGP posterior, measured over keys 100..109:
    # at most 0.050 (0.035); tolerances 0.1 (0.07). Real mistakes stay above:
    # the NTK-GP mean instead of the NNGP one is 0.14 away, an erf network 0.45.
    # (The error falls as 1/sqrt(dim): 0.084 on average at dim 256, 0.029 at 2048.)
    x_train, y, x_test = data
    expected = gp.posterior(_net(), x_train, y, noise_var=0.1).predict(x_test)
    fmap = kernels.feature_map(_net(), jax.random.key(100), 2048)
    post = gp.feature_posterior(fmap, x_train, y, noise_var=0.1, progress=False)
    got = post.predict(x_test, progress=False)
    assert relative_frobenius(got.mean, expected.mean) < 0.1
    assert relative_frobenius(got.covariance, jnp.diagonal(expected.covariance)) < 0.07


def _feature_lml(params, x, y):
    fmap = kernels.feature_map(_net(params["W_std"]), jax.random.key(2), 16)
    return gp.feature_log_marginal_likelihood(
        fmap, x, y, noise_var=params["noise_var"], block_size=8
    )


# compiled once for the module (a new network per eager call would recompile)
_feature_lml_and_grad = jax.jit(jax.value_and_grad(_feature_lml))


def test_feature_lml_gradient_matches_finite_differences(data):
    # Under jit the blocks run through lax.scan; one eager call (the block loop)
    # checks that the two paths agree.
    x_train, y, _ = data
    params = {"W_std": 1.3, "noise_var": 0.05}
    value, grads = _feature_lml_and_grad(params, x_train, y)
    np.testing.assert_allclose(value, _feature_lml(params, x_train, y), rtol=1e-12)
    # Central differences: the gap to the gradient was measured to scale as h^2
    # (1.4e-4 and 1.4e-6 relative at h = 1e-4 and 1e-5: truncation, the feature
    # LML has a large third derivative in W_std), so h = 1e-6 leaves ~1e-8;
    # rounding adds ~eps |L| / h ~ 1e-8.
    step = 1e-6
    for name in params:
        up = dict(params, **{name: params[name] + step})
        down = dict(params, **{name: params[name] - step})
        numeric = (
            _feature_lml_and_grad(up, x_train, y)[0]
            - _feature_lml_and_grad(down, x_train, y)[0]
        ) / (2 * step)
        assert np.isfinite(grads[name])
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6)


def test_fit_hyperparameters_on_features_increases_the_likelihood(data):
    x_train, y, _ = data

    def architecture(p):
        return _net(p["W_std"])

    features = dict(key=jax.random.key(2), dim=16, block_size=8)
    fit = gp.fit_hyperparameters(
        architecture,
        {"W_std": 1.3, "noise_var": 0.05},
        x_train,
        y,
        optimizer=optax.adam(0.05),
        steps=5,
        features=features,
        progress=False,
    )
    history = fit.history["log_marginal_likelihood"]
    assert history[-1] > history[0]
    # the objective is the feature evidence of the map with that key and dim
    expected, _ = _feature_lml_and_grad(fit.params, x_train, y)
    np.testing.assert_allclose(history[-1], expected, rtol=1e-10)


def test_float32_features_are_accumulated_in_float64(data, random_fmap):
    x_train, y, x_test = data
    post = gp.feature_posterior(
        random_fmap,
        x_train.astype(jnp.float32),
        y.astype(jnp.float32),
        noise_var=NOISE_VAR,
        progress=False,
    )
    assert post.statistics.gram.dtype == jnp.float64
    gram, _, _ = _one_pass_statistics(random_fmap, x_train.astype(jnp.float32), y)
    # The float32 features of a block and of one pass may differ by rounding
    # (another fusion): entry (i, j) by up to ~eps32 * sum_n |phi_ni phi_nj| <=
    # eps32 * sqrt(G_ii G_jj) (Cauchy-Schwarz) per unit of relative feature error;
    # allowed: 8x that.
    scale = np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    error = np.abs(np.asarray(post.statistics.gram) - np.asarray(gram))
    assert np.all(error <= 8 * np.finfo(np.float32).eps * scale), error.max()
    mean, var = post.predict(x_test.astype(jnp.float32), progress=False)
    assert mean.dtype == var.dtype == jnp.float64


def test_jitter_is_reported(data):
    # Rank-4 features of scale 1e10 with m = 8 > N = 4: B = Phi^T Phi + d I has
    # eigenvalues 1e-3 next to 1e20, below rounding, so the factorisation needs
    # the jitter ladder; the jitter joins d and a RuntimeWarning says so.
    table = 1e10 * jax.random.normal(jax.random.key(5), (4, 8))

    def fmap(index, *, mask=None, get=("nngp",)):
        return tuple(table[index[:, 0].astype(jnp.int32)] for _ in get)

    index = jnp.arange(4, dtype=jnp.float64)[:, None]
    with pytest.warns(RuntimeWarning, match="jitter"):
        post = gp.feature_posterior(
            fmap, index, jnp.ones((4, 1)), noise_var=1e-3, progress=False
        )
    assert float(post.jitter) > 0
    np.testing.assert_allclose(post.added_diagonal, 1e-3 + post.jitter)


class UnhashableMap:
    """A feature map that defines ``__eq__`` and so is not hashable."""

    def __init__(self, fmap):
        self.fmap = fmap

    def __eq__(self, other):
        return isinstance(other, UnhashableMap) and other.fmap is self.fmap

    def __call__(self, x, **kwargs):
        return self.fmap(x, **kwargs)


def test_unhashable_feature_map_works(data, random_fmap):
    x_train, y, x_test = data
    settings = dict(noise_var=NOISE_VAR, block_size=8, progress=False)
    post = gp.feature_posterior(UnhashableMap(random_fmap), x_train, y, **settings)
    reference = gp.feature_posterior(random_fmap, x_train, y, **settings)
    for a, b in zip(post.statistics[:4], reference.statistics[:4], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        post.predict(x_test, progress=False).mean,
        reference.predict(x_test, progress=False).mean,
        rtol=1e-12,
    )


def test_progress_bar_over_blocks(data, random_fmap, capsys):
    x_train, y, _ = data
    gp.feature_posterior(
        random_fmap, x_train, y, noise_var=NOISE_VAR, block_size=8, progress=True
    )
    assert "feature statistics" in capsys.readouterr().err


def _width_follows_batch(x, *, mask=None, get=("nngp",)):
    """A bad map: its width depends on the batch (like an exact factor)."""
    return tuple(jnp.ones((x.shape[0], x.shape[0])) for _ in get)


def test_bad_arguments_are_named(data, random_fmap):
    x_train, y, x_test = data
    post_args = dict(noise_var=NOISE_VAR, progress=False)
    with pytest.raises(ValueError, match="noise_var"):
        gp.feature_posterior(random_fmap, x_train, y, noise_var=0.0)
    with pytest.raises(ValueError, match="noise_var"):
        gp.feature_log_marginal_likelihood(random_fmap, x_train, y, noise_var=0.0)
    with pytest.raises(ValueError, match="y_train"):
        gp.feature_posterior(random_fmap, x_train, y[:, 0], **post_args)
    with pytest.raises(ValueError, match="y_train"):
        gp.feature_posterior(random_fmap, x_train, y[:-1], **post_args)
    with pytest.raises(ValueError, match="block_size"):
        gp.feature_posterior(random_fmap, x_train, y, block_size=0, **post_args)
    with pytest.raises(TypeError, match="block_size"):
        gp.feature_posterior(random_fmap, x_train, y, block_size=2.5, **post_args)
    with pytest.raises(ValueError, match="get"):
        gp.feature_posterior(random_fmap, x_train, y, get="cov", **post_args)
    with pytest.raises(ValueError, match="get"):
        gp.feature_log_marginal_likelihood(
            random_fmap, x_train, y, noise_var=NOISE_VAR, get="ntk"
        )
    with pytest.raises(TypeError, match="fmap"):
        gp.feature_posterior("relu", x_train, y, **post_args)
    exact_map = kernels.feature_map(_net(), None, 1, method="exact")
    with pytest.raises(ValueError, match="fmap: method='exact'"):
        gp.feature_posterior(exact_map, x_train, y, **post_args)
    with pytest.raises(TypeError, match="devices"):
        gp.feature_posterior(random_fmap, x_train, y, devices=["cpu"], **post_args)
    post = gp.feature_posterior(
        _width_follows_batch, x_train, y, block_size=8, **post_args
    )
    with pytest.raises(ValueError, match="x_test"):
        post.predict(x_test[:3], progress=False)


def test_features_with_spatial_axes_are_refused(data):
    x_train, y, _ = data
    images = jnp.ones((N_TRAIN, 4, 3))
    fmap = kernels.feature_map(_net(), jax.random.key(0), 8)  # keeps the axis
    with pytest.raises(ValueError, match=r"\(n, m\)"):
        gp.feature_posterior(fmap, images, y, noise_var=NOISE_VAR, progress=False)


def test_fit_hyperparameters_bad_features_are_named(data):
    x_train, y, _ = data
    params0 = {"W_std": 1.3, "noise_var": 0.05}

    def fit(features, architecture=lambda p: _net(p["W_std"])):
        gp.fit_hyperparameters(
            architecture, params0, x_train, y, steps=0, features=features
        )

    with pytest.raises(TypeError, match="features"):
        fit([jax.random.key(0), 16])
    with pytest.raises(ValueError, match="features"):
        fit({"key": jax.random.key(0)})
    with pytest.raises(ValueError, match="features"):
        fit({"key": jax.random.key(0), "dim": 16, "width": 3})
    with pytest.raises(ValueError, match="block_size"):
        fit({"key": jax.random.key(0), "dim": 16, "block_size": 0})
    with pytest.raises(TypeError, match="Layer"):
        fit(
            {"key": jax.random.key(0), "dim": 16},
            architecture=lambda p: _net(p["W_std"]).kernel,
        )
