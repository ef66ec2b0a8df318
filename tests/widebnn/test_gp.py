"""Exact GP inference (``widebnn.gp``) against independent implementations.

Oracles:

* scikit-learn's ``GaussianProcessRegressor`` (its own RBF kernel, or a
  precomputed matrix through an index kernel) for posterior means, covariances
  and log marginal likelihoods;
* a numpy re-implementation of the deep ReLU NNGP/NTK recursion
  (``tests/_support/relu_gp_oracle.py``) feeding numpy formulas;
* ``scipy.integrate.solve_ivp`` on the linear ODE of gradient flow for the NTK
  gradient-descent predictive; ``numpy.linalg.solve`` for its ``t = inf`` limit;
* finite networks trained with ``optax.sgd`` (statistical test, ``slow``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.optimize
from _helpers import TraceCounter, bonferroni_t_quantile
from relu_gp_oracle import B_STD, W_STD, data as _data, relu_kernels_numpy, relu_network
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, Kernel as SklearnKernel

from widebnn import gp, kernels

# The library's ReLU NTK diagonal k(x_i, x_i) carries a round-off of order sqrt(eps)
# relative when compiled (the angle arctan2(sqrt(q^2 - c^2), c) at c = q within one
# ulp, ~1e-8), so comparisons that go through the NTK use this tolerance.
NTK_RTOL = 1e-6


class IndexKernel(SklearnKernel):
    """A precomputed matrix as an sklearn kernel: the feature is the row index."""

    def __init__(self, matrix):
        self.matrix = matrix

    def __call__(self, X, Y=None, eval_gradient=False):
        i = X[:, 0].astype(int)
        j = i if Y is None else Y[:, 0].astype(int)
        return self.matrix[np.ix_(i, j)]

    def diag(self, X):
        i = X[:, 0].astype(int)
        return self.matrix[i, i]

    def is_stationary(self):
        return False


def sklearn_gp(matrix, n_train, y, noise_var):
    """Fits sklearn on indices ``0..n_train-1`` of a precomputed matrix."""
    model = GaussianProcessRegressor(
        IndexKernel(matrix), alpha=noise_var, optimizer=None, normalize_y=False
    )
    return model.fit(np.arange(n_train)[:, None], y)


def _sklearn_cov(cov, output=0):
    return cov[..., output] if cov.ndim == 3 else cov


# ----------------------------------------------------------- GP posteriors


def rbf_kernel(x1, x2, get, length_scale=0.7):
    """A user kernel: the RBF kernel in jnp (both 'nngp' and 'ntk' are the RBF)."""
    x2 = x1 if x2 is None else x2
    sq = jnp.sum((x1[:, None, :] - x2[None, :, :]) ** 2, axis=-1)
    k = jnp.exp(-0.5 * sq / length_scale**2)
    return tuple(k for _ in get)


def test_posterior_with_callable_kernel_matches_sklearn_rbf():
    x, x_test, y = _data()
    noise = 0.05
    post = gp.posterior(rbf_kernel, x, y, noise_var=noise)
    mean, cov = post.predict(x_test)
    _, var = post.predict(x_test, full_cov=False)
    model = GaussianProcessRegressor(
        RBF(0.7, "fixed"), alpha=noise, optimizer=None, normalize_y=False
    ).fit(x, y)
    ref_mean, ref_cov = model.predict(x_test, return_cov=True)
    _, ref_std = model.predict(x_test, return_std=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov, _sklearn_cov(ref_cov), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(var, ref_std[:, 0] ** 2, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(
        post.log_marginal_likelihood, model.log_marginal_likelihood_value_, rtol=1e-12
    )
    lml = gp.log_marginal_likelihood(rbf_kernel, x, y, noise_var=noise)
    np.testing.assert_allclose(lml, model.log_marginal_likelihood_value_, rtol=1e-12)


@pytest.mark.parametrize("get", ["nngp", "ntkgp"])
@pytest.mark.parametrize("depth", [1, 3])
def test_relu_network_posterior_matches_sklearn(get, depth):
    x, x_test, y = _data(seed=depth)
    noise = 0.02
    net = relu_network(depth=depth)
    post = gp.posterior(net, x, y, noise_var=noise, get=get)
    mean, cov = post.predict(x_test)
    _, var = post.predict(x_test, full_cov=False, observation_noise=True)

    x_all = np.concatenate([x, x_test])
    nngp, ntk = relu_kernels_numpy(x_all, None, W_STD, B_STD, depth)
    model = sklearn_gp(ntk if get == "ntkgp" else nngp, len(x), y, noise)
    test_idx = np.arange(len(x), len(x_all))[:, None]
    ref_mean, ref_cov = model.predict(test_idx, return_cov=True)
    rtol = NTK_RTOL if get == "ntkgp" else 1e-8
    np.testing.assert_allclose(mean, ref_mean, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(cov, _sklearn_cov(ref_cov), rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(
        var, np.diagonal(_sklearn_cov(ref_cov)) + noise, rtol=rtol, atol=rtol * 1e-2
    )
    np.testing.assert_allclose(
        post.log_marginal_likelihood,
        model.log_marginal_likelihood_value_,
        rtol=rtol * 1e-2,
    )


def test_relative_diag_reg_adds_to_the_noise():
    x, x_test, y = _data(seed=3)
    net = relu_network()
    post = gp.posterior(net, x, y, noise_var=0.01, diag_reg=0.1)
    x_all = np.concatenate([x, x_test])
    nngp, _ = relu_kernels_numpy(x_all, None, W_STD, B_STD, 1)
    # NT convention: diag_reg * trace(K_DD) / N is added
    reg = 0.01 + 0.1 * np.trace(nngp[: len(x), : len(x)]) / len(x)
    model = sklearn_gp(nngp, len(x), y, reg)
    ref_mean = model.predict(np.arange(len(x), len(x_all))[:, None])
    np.testing.assert_allclose(post.predict(x_test).mean, ref_mean, rtol=1e-8)
    np.testing.assert_allclose(post.added_diagonal, reg, rtol=1e-12)
    absolute = gp.posterior(
        net, x, y, noise_var=0.01, diag_reg=0.1, diag_reg_absolute_scale=True
    )
    np.testing.assert_allclose(absolute.added_diagonal, 0.11, rtol=1e-12)


def ntk_ensemble_numpy(nngp, ntk, n, y, ridge=0.0):
    """``t = inf`` NTK ensemble: mean and covariance by numpy solves."""
    theta = ntk[:n, :n] + ridge * np.eye(n)
    weights = np.linalg.solve(theta, ntk[:n, n:]).T  # Θ_*D Θ_DD^{-1}
    mean = weights @ y
    cross = weights @ nngp[:n, n:]
    cov = nngp[n:, n:] + weights @ nngp[:n, :n] @ weights.T - cross - cross.T
    return mean, cov


def test_ntk_posterior_matches_numpy_formula():
    x, x_test, y = _data(seed=4)
    n = len(x)
    post = gp.posterior(relu_network(depth=2), x, y, noise_var=1e-3, get="ntk")
    mean, cov = post.predict(x_test)
    _, var = post.predict(x_test, full_cov=False)
    nngp, ntk = relu_kernels_numpy(np.concatenate([x, x_test]), None, W_STD, B_STD, 2)
    ref_mean, ref_cov = ntk_ensemble_numpy(nngp, ntk, n, y, ridge=1e-3)
    np.testing.assert_allclose(mean, ref_mean, rtol=NTK_RTOL, atol=1e-8)
    np.testing.assert_allclose(cov, ref_cov, rtol=NTK_RTOL, atol=1e-8)
    np.testing.assert_allclose(var, np.diagonal(ref_cov), rtol=NTK_RTOL, atol=1e-8)
    assert post.log_marginal_likelihood is None


# ---------------------------------------------- gradient descent predictive


def ode_predictive(nngp, ntk, n, y, learning_rate, times):
    """Mean and covariance of the linearised ensemble by integrating gradient flow.

    With the loss averaged over ``y.size`` entries, ``f_D' = -c Θ_DD (f_D - Y)`` and
    ``f_*' = -c Θ_*D (f_D - Y)``, ``c = learning_rate / y.size``. Writing
    ``f_D - Y = P(t)(f_0(D) - Y)`` and ``f_* = f_0(*) + R(t)(f_0(D) - Y)``:
    ``P' = -c Θ_DD P``, ``R' = -c Θ_*D P``, ``P(0) = I``, ``R(0) = 0``.
    """
    m = nngp.shape[0] - n
    c = learning_rate / y.size
    theta_dd, theta_td = ntk[:n, :n], ntk[n:, :n]

    def rhs(_, state):
        p = state[: n * n].reshape(n, n)
        return np.concatenate(
            [(-c * theta_dd @ p).ravel(), (-c * theta_td @ p).ravel()]
        )

    state0 = np.concatenate([np.eye(n).ravel(), np.zeros(m * n)])
    sol = scipy.integrate.solve_ivp(
        rhs,
        (0, max(times)),
        state0,
        t_eval=times,
        rtol=1e-11,
        atol=1e-13,
        method="DOP853",
    )
    means, covs = [], []
    for k in range(len(times)):
        r = sol.y[n * n :, k].reshape(m, n)
        means.append(-r @ y)
        k_dt = nngp[:n, n:]
        covs.append(nngp[n:, n:] + r @ nngp[:n, :n] @ r.T + r @ k_dt + k_dt.T @ r.T)
    return np.stack(means), np.stack(covs)


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_gradient_descent_predictive_matches_ode(get):
    x, x_test, y = _data(seed=5)
    n = len(x)
    times = np.array([0.0, 0.3, 1.5, 6.0])
    learning_rate = 0.8
    ensemble = gp.gradient_descent_mse_ensemble(
        relu_network(depth=2), x, y, learning_rate=learning_rate, get=get
    )
    mean, cov = ensemble.predict(x_test, t=times)
    assert mean.shape == (4, 5, 2) and cov.shape == (4, 5, 5)
    nngp, ntk = relu_kernels_numpy(np.concatenate([x, x_test]), None, W_STD, B_STD, 2)
    trained = ntk if get == "ntk" else nngp  # "nngp": only the readout is trained
    ref_mean, ref_cov = ode_predictive(nngp, trained, n, y, learning_rate, times)
    np.testing.assert_allclose(mean, ref_mean, rtol=NTK_RTOL, atol=1e-8)
    np.testing.assert_allclose(cov, ref_cov, rtol=NTK_RTOL, atol=1e-8)
    _, var = ensemble.predict(x_test, t=times, full_cov=False)
    np.testing.assert_allclose(
        var, np.diagonal(ref_cov, axis1=1, axis2=2), rtol=NTK_RTOL, atol=1e-8
    )
    scalar = ensemble.predict(x_test, t=1.5)
    np.testing.assert_allclose(scalar.mean, ref_mean[2], rtol=NTK_RTOL, atol=1e-8)


def test_infinite_time_is_kernel_regression():
    x, x_test, y = _data(seed=6)
    n = len(x)
    net = relu_network(depth=2)
    ensemble = gp.gradient_descent_mse_ensemble(net, x, y, learning_rate=2.0)
    mean, cov = ensemble.predict(x_test, t=np.array([1e9, np.inf]))
    nngp, ntk = relu_kernels_numpy(np.concatenate([x, x_test]), None, W_STD, B_STD, 2)
    ref_mean, ref_cov = ntk_ensemble_numpy(nngp, ntk, n, y)
    for k in range(2):
        np.testing.assert_allclose(mean[k], ref_mean, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(cov[k], ref_cov, rtol=1e-6, atol=1e-8)
    post = gp.posterior(net, x, y, noise_var=0.0, get="ntk")
    np.testing.assert_allclose(post.predict(x_test).mean, ref_mean, rtol=1e-6)


def test_max_learning_rate_is_the_stability_threshold():
    x, _, y = _data(seed=7)
    _, ntk = relu_kernels_numpy(x, None, W_STD, B_STD, 2)
    size = y.size
    rate = gp.max_learning_rate(ntk, y_train_size=size)
    np.testing.assert_allclose(rate, 2 * size / np.linalg.eigvalsh(ntk)[-1], rtol=1e-12)
    ensemble = gp.gradient_descent_mse_ensemble(relu_network(depth=2), x, y)
    np.testing.assert_allclose(ensemble.max_learning_rate, rate, rtol=NTK_RTOL)

    def residual_after(step, n_steps=400):
        # discrete gradient descent on the linearised network, loss averaged
        residual = -y.copy()
        for _ in range(n_steps):
            residual = residual - step / size * ntk @ residual
        return np.linalg.norm(residual)

    assert residual_after(0.98 * rate) < np.linalg.norm(y)
    assert residual_after(1.02 * rate) > 1e3 * np.linalg.norm(y)
    assert gp.max_learning_rate(ntk, size, momentum=0.5) == pytest.approx(1.5 * rate)


@pytest.mark.slow
def test_trained_finite_networks_approach_the_ntk_mean():
    """Finite networks trained with optax SGD: ensemble mean vs NTK predictive mean.

    Antithetic pairs (readout negated) cancel the initial function to first order,
    so the ensemble mean of 32 pairs at width 1024 has a standard error of about
    0.005; the bound is a Bonferroni t-quantile times the estimated standard error
    (false-alarm rate 1e-4) plus the exact gap between discrete and continuous time
    (computed with numpy, about 1e-3) plus 0.01 for the O(1/width) bias. Power: a
    time convention off by the factor |Y| = 6 moves the expected means by > 0.15.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    x_test = rng.normal(size=(3, 3))
    y = np.sin(x.sum(1, keepdims=True))
    layer = relu_network(1.5, 0.2, width=1024)
    ensemble = gp.gradient_descent_mse_ensemble(layer, x, y)
    learning_rate = 0.02 * ensemble.max_learning_rate
    steps = 150
    expected = np.asarray(ensemble.predict(x_test, t=learning_rate * steps).mean[:, 0])

    _, ntk = relu_kernels_numpy(np.concatenate([x, x_test]), None, 1.5, 0.2, 1)
    contraction = np.eye(6) - learning_rate / y.size * ntk[:6, :6]
    discrete = ntk[6:, :6] @ np.linalg.solve(
        ntk[:6, :6], (np.eye(6) - np.linalg.matrix_power(contraction, steps)) @ y
    )
    time_gap = np.abs(discrete[:, 0] - expected)

    optimizer = optax.sgd(learning_rate)

    def train(key, sign):
        _, params = layer.init(key, x.shape)
        params = (*params[:2], jax.tree.map(lambda v: sign * v, params[2]))

        def loss(p):
            return 0.5 * jnp.mean((layer.apply(p, x) - y) ** 2)

        def step(carry, _):
            p, state = carry
            updates, state = optimizer.update(jax.grad(loss)(p), state, p)
            return (optax.apply_updates(p, updates), state), None

        (params, _), _ = jax.lax.scan(
            step, (params, optimizer.init(params)), None, length=steps
        )
        return layer.apply(params, x_test)[:, 0]

    pairs = 32
    keys = jax.random.split(jax.random.key(1), pairs)
    signs = jnp.concatenate([jnp.ones(pairs), -jnp.ones(pairs)])
    outputs = np.asarray(jax.jit(jax.vmap(train))(jnp.concatenate([keys, keys]), signs))
    pair_means = 0.5 * (outputs[:pairs] + outputs[pairs:])
    estimate = pair_means.mean(0)
    stderr = pair_means.std(0, ddof=1) / np.sqrt(pairs)
    z = bonferroni_t_quantile(1e-4, 3, pairs - 1)
    bound = z * stderr + time_gap + 0.01
    assert np.all(np.abs(estimate - expected) <= bound), (estimate, expected, bound)
    wrong = ensemble.predict(x_test, t=learning_rate * steps * y.size).mean[:, 0]
    assert np.max(np.abs(np.asarray(wrong) - expected)) > 10 * np.max(bound)


# --------------------------------------------- compilation


def test_posterior_and_predict_compile_once_per_network():
    """A second ``posterior`` of the same network on new data of the same shape,
    and a second ``predict``, reuse the compiled kernel (no new trace)."""
    base = relu_network()
    counted = TraceCounter(base.kernel_fn)
    net = base._replace(kernel_fn=counted)

    def run(seed):
        x, x_test, y = _data(seed=seed)
        post = gp.posterior(net, x, y, noise_var=0.1, get="ntk")
        full = post.predict(x_test)
        diagonal = post.predict(x_test, full_cov=False)
        np.testing.assert_allclose(diagonal.covariance, np.diag(full.covariance))
        return post, x_test

    post, x_test = run(seed=20)
    traces = counted.count
    assert traces > 0
    run(seed=21)
    post.predict(x_test + 1.0)
    post.predict(x_test - 1.0, full_cov=False)
    assert counted.count == traces


# ----------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small():
    x, x_test, y = _data(seed=10)
    return relu_network(), x, x_test, y


def test_bad_data_raise_clear_errors(small):
    net, x, _, y = small
    with pytest.raises(ValueError, match="same number of examples"):
        gp.posterior(net, x[:5], y, noise_var=0.1)
    with pytest.raises(ValueError, match="y_train must be 2-D"):
        gp.posterior(net, x, y[:, 0], noise_var=0.1)
    bad = y.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="y_train contains NaN"):
        gp.posterior(net, x, bad, noise_var=0.1)
    with pytest.raises(ValueError, match="noise_var"):
        gp.posterior(net, x, y, noise_var=-0.1)
    with pytest.raises(ValueError, match="diag_reg"):
        gp.posterior(net, x, y, noise_var=0.1, diag_reg=-1.0)
    for bad_type in ("0.1", True, None, [0.1]):
        with pytest.raises(TypeError, match="noise_var must be a real number"):
            gp.posterior(net, x, y, noise_var=bad_type)
    with pytest.raises(TypeError, match="diag_reg must be a real number"):
        gp.log_marginal_likelihood(net, x, y, noise_var=0.1, diag_reg="1e-3")
    for ladder in ((), (1e-4, 1e-6), (0.0,), (np.inf,)):
        with pytest.raises(ValueError, match="jitter_ladder must be a non-empty"):
            gp.posterior(net, x, y, noise_var=0.1, jitter_ladder=ladder)
    with pytest.raises(ValueError, match="jitter_ladder"):
        gp.log_marginal_likelihood(net, x, y, noise_var=0.1, jitter_ladder=())
    with pytest.raises(TypeError, match="jitter_ladder"):
        gp.posterior(net, x, y, noise_var=0.1, jitter_ladder="1e-6")
    with pytest.raises(ValueError, match="jitter_ladder"):
        gp.fit_hyperparameters(
            lambda p: net, {"noise_var": 0.1}, x, y, jitter_ladder=(), progress=False
        )
    with pytest.raises(ValueError, match="get must be one of"):
        gp.posterior(net, x, y, noise_var=0.1, get="cov1")
    with pytest.raises(ValueError, match="x_train must have shape"):
        gp.posterior(net, x[:, 0], y, noise_var=0.1)
    with pytest.raises(TypeError, match="kernel must be"):
        gp.posterior("relu", x, y, noise_var=0.1)
    with pytest.raises(ValueError, match="y_train must be 2-D"):
        gp.log_marginal_likelihood(net, x, y[:, 0], noise_var=0.1)
    with pytest.raises(ValueError, match="same number of examples"):
        gp.gradient_descent_mse_ensemble(net, x, y[:4])


def test_bad_kernels_raise_clear_errors(small):
    _, x, _, y = small

    def not_psd(x1, x2, get):
        return tuple(-rbf_kernel(x1, x2, ("nngp",))[0] for _ in get)

    with pytest.raises(gp.LinAlgError, match="not positive semi-definite"):
        gp.posterior(not_psd, x, y, noise_var=0.0)
    with pytest.raises(gp.LinAlgError, match="condition estimate"):
        gp.log_marginal_likelihood(not_psd, x, y, noise_var=0.0)

    def asymmetric(x1, x2, get):
        k = rbf_kernel(x1, x2, ("nngp",))[0]
        return tuple(k + jnp.triu(jnp.ones_like(k), 1) for _ in get)

    with pytest.raises(ValueError, match="not symmetric"):
        gp.posterior(asymmetric, x, y, noise_var=0.1)

    sequence_net = kernels.serial(kernels.Dense(8, 1.0, 0.1), kernels.Relu())
    with pytest.raises(ValueError, match="must have shape"):
        gp.posterior(sequence_net, x[:, :, None], y, noise_var=0.1)


def test_bad_prediction_arguments(small):
    net, x, x_test, y = small
    ensemble = gp.gradient_descent_mse_ensemble(net, x, y)
    with pytest.raises(ValueError, match="t must be >= 0"):
        ensemble.predict(x_test, t=-1.0)
    with pytest.raises(ValueError, match="t must be a scalar or 1-D"):
        ensemble.predict(x_test, t=np.ones((2, 2)))
    with pytest.raises(ValueError, match="learning_rate"):
        gp.gradient_descent_mse_ensemble(net, x, y, learning_rate=0.0)
    with pytest.raises(TypeError, match="x_test must be an array"):
        gp.posterior(net, x, y, noise_var=0.1).predict(None)
    with pytest.raises(ValueError, match="momentum"):
        gp.max_learning_rate(np.eye(3), momentum=1.0)


def test_bad_fit_arguments(small):
    net, x, _, y = small

    def build(p):
        return net

    fit = functools.partial(gp.fit_hyperparameters, build, x=x, y=y, progress=False)
    with pytest.raises(ValueError, match="noise_var"):
        fit({"W_std": 1.0})
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        fit({"W_std": -1.0, "noise_var": 0.1})
    with pytest.raises(TypeError, match="params0 must be"):
        fit([1.0, 0.1])
    with pytest.raises(ValueError, match="steps"):
        fit({"noise_var": 0.1}, steps=-1)
    with pytest.raises(ValueError, match="y must be 2-D"):
        gp.fit_hyperparameters(build, {"noise_var": 0.1}, x, y[:, 0], progress=False)


def test_jitter_is_reported_for_duplicated_training_points():
    x, x_test, y = _data(n=6, seed=11)
    x = np.concatenate([x, x])
    y = np.concatenate([y, y])
    with pytest.warns(RuntimeWarning, match="added jitter"):
        post = gp.posterior(relu_network(), x, y, noise_var=0.0)
    assert float(post.jitter) > 0
    mean, cov = post.predict(x_test)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))
