"""Closed-form tests of the repriorisation map (samplers/_reprior.py). Expected
values come from numpy/scipy, never from the code under test."""

import math

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.flatten_util import ravel_pytree

from widebnn import WideBNN, kernels, samplers

SIGMA = 0.3
W_STD, B_STD, OUT_W, OUT_B = 1.4, 0.2, 1.1, 0.3


def relu_model(width, out_dim=1, parameterization="ntk"):
    body = kernels.serial(kernels.Dense(width, W_STD, B_STD), kernels.Relu())
    return WideBNN(body, width, OUT_W, OUT_B, SIGMA, out_dim, parameterization)


def problem(n, width, out_dim, seed=0, parameterization="ntk", d_in=2):
    model = relu_model(width, out_dim, parameterization)
    kx, ky, kp, kf = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(kx, (n, d_in))
    y = jax.random.normal(ky, (n, out_dim))
    hidden, _ = model.split_readout(model.init(kp, x.shape))
    phi = (hidden, jax.random.normal(kf, (width + 1, out_dim)))
    return model, x, y, phi


def numpy_features(hidden, x, width):
    """Independent numpy T = [OUT_W/sqrt(n) relu(...) | OUT_B]."""
    dense = hidden[0]
    w, b = np.asarray(dense["W"]), np.asarray(dense["b"])
    x = np.asarray(x)
    h = np.maximum(W_STD / math.sqrt(x.shape[1]) * x @ w + B_STD * b, 0.0)
    return np.concatenate(
        [OUT_W / math.sqrt(width) * h, np.full((len(x), 1), OUT_B)], 1
    )


# (N, width, path): primal n + 1 <= N, dual n + 1 > N.
CASES = [(8, 5, "primal"), (6, 9, "dual"), (4, 4, "dual")]


@pytest.mark.parametrize("out_dim", [1, 3])
def test_linear_model_exactness(out_dim):
    """D.1: fixed features; the map's offset and matrix are the closed-form posterior
    mean and a square root of its covariance; U - |phi|^2/2 is constant."""
    n, d_in = 7, 3
    model = WideBNN(kernels.Identity(), d_in, OUT_W, OUT_B, SIGMA, out_dim)
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (n, d_in))
    y = jax.random.normal(ky, (n, out_dim))
    t = np.concatenate(
        [OUT_W / math.sqrt(d_in) * np.asarray(x), np.full((n, 1), OUT_B)], 1
    )
    cov = np.linalg.inv(np.eye(d_in + 1) + t.T @ t / SIGMA**2)
    mean = cov @ t.T @ np.asarray(y) / SIGMA**2

    def readout(phi_out):
        theta, _ = samplers.repriorise(model, ((), phi_out), x, y)
        return model.split_readout(theta)[1]

    zero = jnp.zeros((d_in + 1, out_dim))
    np.testing.assert_allclose(readout(zero), mean, rtol=1e-10, atol=1e-12)
    jac = jax.jacfwd(lambda v: readout(v[:, None])[:, 0])(zero[:, 0])
    np.testing.assert_allclose(jac @ jac.T, cov, rtol=1e-10, atol=1e-13)
    values = [
        samplers.repriorised_log_density(model, ((), phi_out), x, y)
        + 0.5 * jnp.sum(phi_out**2)
        for phi_out in jax.random.normal(jax.random.key(2), (4, d_in + 1, out_dim))
    ]
    np.testing.assert_allclose(values, values[0], rtol=1e-12)


@pytest.mark.parametrize("n, width, path", CASES)
@pytest.mark.parametrize("out_dim", [1, 3])
@pytest.mark.parametrize("closed_form", [False, True])
def test_energy_identity(n, width, path, out_dim, closed_form):
    """D.2: log p(phi) = log N(phi; 0, I) + sum_j log N(y_j; 0, TT^T + s^2 I) and
    the gradient in phi_out is -phi_out exactly, for the reference (Cholesky map +
    log-det) form and the closed form."""
    model, x, y, phi = problem(n, width, out_dim, seed=out_dim)
    t = numpy_features(phi[0], x, width)
    k_sigma = t @ t.T + SIGMA**2 * np.eye(n)
    flat_phi = np.asarray(ravel_pytree(phi)[0])
    expected = scipy.stats.norm.logpdf(flat_phi).sum() + sum(
        scipy.stats.multivariate_normal.logpdf(np.asarray(y[:, j]), cov=k_sigma)
        for j in range(out_dim)
    )

    @jax.jit
    def log_density(phi):
        return samplers.repriorised_log_density(
            model, phi, x, y, path=path, closed_form=closed_form
        )

    np.testing.assert_allclose(log_density(phi), expected, rtol=1e-11)
    grad_out = jax.grad(log_density)(phi)[1]
    np.testing.assert_allclose(grad_out, -phi[1], rtol=1e-9, atol=1e-10)


def test_general_kernel_reg_conditional():
    """D.3: for k != s^2 the phi_out Hessian is -Lambda and the gradient is 0 at mu."""
    n, width, k = 9, 4, 0.5
    model, x, y, phi = problem(n, width, 1, seed=3)
    t = numpy_features(phi[0], x, width)
    g_k = t.T @ t + k * np.eye(width + 1)
    g_s = t.T @ t + SIGMA**2 * np.eye(width + 1)
    chol = np.linalg.cholesky(g_k)
    inv_chol = np.linalg.inv(chol)
    precision = (
        k
        / SIGMA**2
        * inv_chol
        @ (g_k + (SIGMA**2 - k) * np.eye(width + 1))
        @ inv_chol.T
    )
    ty = t.T @ np.asarray(y)
    mu = chol.T @ (np.linalg.solve(g_s, ty) - np.linalg.solve(g_k, ty)) / math.sqrt(k)

    def log_density(phi_out):
        return samplers.repriorised_log_density(
            model, (phi[0], phi_out[:, None]), x, y, kernel_reg=k
        )

    hessian = jax.jit(jax.hessian(log_density))(jnp.asarray(mu[:, 0]))
    np.testing.assert_allclose(-hessian, precision, rtol=1e-8, atol=1e-9)
    grad = jax.grad(log_density)(jnp.asarray(mu[:, 0]))
    np.testing.assert_allclose(grad, 0.0, atol=1e-9)


@pytest.mark.parametrize(
    "n, width, path, kernel_reg", [(*c, k) for c in CASES[:2] for k in (None, 0.7)]
)
def test_log_det_matches_slogdet_of_jacfwd(n, width, path, kernel_reg):
    """D.4: log|det J| of the flat map phi -> theta; J is block-triangular."""
    model, x, y, phi = problem(n, width, 2, seed=5)
    flat, unravel = ravel_pytree(phi)

    def flat_map(v):
        theta, _ = samplers.repriorise(
            model, unravel(v), x, y, kernel_reg=kernel_reg, path=path
        )
        hidden, theta_out = model.split_readout(theta)
        return ravel_pytree((hidden, theta_out))[0]

    jac = jax.jit(jax.jacfwd(flat_map))(flat)
    _, log_det = samplers.repriorise(model, phi, x, y, kernel_reg=kernel_reg, path=path)
    sign, expected = np.linalg.slogdet(np.asarray(jac))
    assert sign > 0
    np.testing.assert_allclose(log_det, expected, rtol=1e-10)
    num_rest = flat.size - phi[1].size
    np.testing.assert_allclose(jac[:num_rest, :num_rest], np.eye(num_rest), atol=0)
    np.testing.assert_allclose(jac[:num_rest, num_rest:], 0.0, atol=0)


@pytest.mark.parametrize("n, width, path", CASES)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_round_trip_and_forward_consistency(n, width, path, parameterization):
    """D.5 round trips on both paths; D.6 predict(T(phi)) == T theta_out."""
    model, x, y, phi = problem(n, width, 2, seed=7, parameterization=parameterization)
    theta, _ = samplers.repriorise(model, phi, x, y, path=path)
    back = samplers.unrepriorise(model, theta, x, y, path=path)
    np.testing.assert_allclose(
        ravel_pytree(back)[0], ravel_pytree(phi)[0], rtol=1e-10, atol=1e-11
    )
    hidden, theta_out = model.split_readout(theta)
    t = numpy_features(hidden, x, width)
    np.testing.assert_allclose(
        model.predict(theta, x), t @ np.asarray(theta_out), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("n, width", [(8, 5), (6, 9)])
def test_closed_form_gradient_matches_autodiff_of_reference_form(n, width):
    """The analytic VJP of the closed form equals autodiff through the Cholesky
    map + log-det, on the primal and the dual side."""
    model, x, y, phi = problem(n, width, 2, seed=19)

    def grad(closed_form):
        fn = jax.grad(
            lambda p: samplers.repriorised_log_density(
                model, p, x, y, closed_form=closed_form
            )
        )
        return ravel_pytree(jax.jit(fn)(phi))[0]

    np.testing.assert_allclose(grad(True), grad(False), rtol=1e-9, atol=1e-10)


def test_dual_and_primal_log_densities_coincide():
    """D.5: for k = s^2 both square roots give the same density of phi."""
    model, x, y, phi = problem(6, 9, 2, seed=11)
    primal = samplers.repriorised_log_density(
        model, phi, x, y, path="primal", closed_form=False
    )
    dual = samplers.repriorised_log_density(
        model, phi, x, y, path="dual", closed_form=False
    )
    np.testing.assert_allclose(primal, dual, rtol=1e-12)


def test_path_choice_and_errors():
    model, x, y, phi = problem(4, 6, 1)
    with pytest.raises(ValueError, match="path"):
        samplers.repriorise(model, phi, x, y, path="qr")
    model, x, y, phi = problem(8, 3, 1)
    with pytest.raises(ValueError, match="dual"):
        samplers.repriorise(model, phi, x, y, path="dual")
    with pytest.raises(ValueError, match="kernel_reg"):
        samplers.repriorise(model, phi, x, y, kernel_reg=0.0)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_standard_energy_and_finite_difference_gradient(parameterization):
    """D.9: identity energy vs numpy; gradient vs central finite differences."""
    model, x, y, _ = problem(6, 4, 2, parameterization=parameterization)
    theta = model.init(jax.random.key(3), x.shape)
    flat, unravel = ravel_pytree(theta)
    t = numpy_features(theta["body"], x, 4)
    _, theta_out = model.split_readout(theta)
    w_sd = OUT_W / 2.0 if parameterization == "standard" else 1.0
    b_sd = OUT_B if parameterization == "standard" else 1.0
    r = theta["readout"]
    expected = (
        scipy.stats.norm.logpdf(np.asarray(flat[: -r["W"].size - r["b"].size])).sum()
        + scipy.stats.norm.logpdf(np.asarray(r["W"]), 0, w_sd).sum()
        + scipy.stats.norm.logpdf(np.asarray(r["b"]), 0, b_sd).sum()
        + scipy.stats.norm.logpdf(np.asarray(y), t @ np.asarray(theta_out), SIGMA).sum()
    )
    fn = samplers.log_density_fn(model, reparam="none")
    flat_fn = jax.jit(lambda v: fn(unravel(v), x, y))
    np.testing.assert_allclose(flat_fn(flat), expected, rtol=1e-12)
    grad = jax.grad(flat_fn)(flat)
    eps = 1e-6
    basis = np.eye(flat.size)
    flat_fn = jax.jit(lambda v: fn(unravel(v), x, y))
    fd = np.array(
        [(flat_fn(flat + eps * e) - flat_fn(flat - eps * e)) / (2 * eps) for e in basis]
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("num_devices", [2, 4])
@pytest.mark.parametrize("reparam", ["repriorised", "none"])
def test_sharded_energy_and_gradient(num_devices, reparam):
    """D.8: data-sharded Gram/energy/gradient equal the unsharded ones."""
    assert jax.device_count() >= num_devices
    model, x, y, phi = problem(8, 3, 2, seed=13)
    position = (
        phi if reparam == "repriorised" else model.init(jax.random.key(1), x.shape)
    )
    mesh = jax.make_mesh(
        (num_devices,),
        ("data",),
        axis_types=(jax.sharding.AxisType.Explicit,),
        devices=jax.devices()[:num_devices],
    )
    sharded = samplers.sharded_log_density_fn(model, mesh, reparam=reparam)
    plain = samplers.log_density_fn(model, reparam=reparam)
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    xs, ys = jax.device_put(x, spec), jax.device_put(y, spec)
    value, grad = jax.jit(jax.value_and_grad(sharded))(position, xs, ys)
    value0, grad0 = jax.value_and_grad(plain)(position, x, y)
    np.testing.assert_allclose(value, value0, rtol=1e-10)
    np.testing.assert_allclose(
        ravel_pytree(grad)[0], ravel_pytree(grad0)[0], rtol=1e-10, atol=1e-12
    )


def test_leapfrog_reversibility_on_repriorised_density():
    """D.11: integrate, negate momentum, integrate back -> start (1e-12)."""
    model, x, y, phi = problem(6, 9, 1, seed=17)
    fn = samplers.log_density_fn(model)
    integrator = blackjax.mcmc.integrators.velocity_verlet(
        lambda p: fn(p, x, y),
        lambda m: 0.5 * sum(jnp.sum(v**2) for v in jax.tree.leaves(m)),
    )
    momentum = jax.tree.map(jnp.ones_like, phi)
    value, grad = jax.value_and_grad(lambda p: fn(p, x, y))(phi)
    state = blackjax.mcmc.integrators.IntegratorState(phi, momentum, value, grad)
    for _ in range(10):
        state = integrator(state, 0.01)
    state = state._replace(momentum=jax.tree.map(jnp.negative, state.momentum))
    for _ in range(10):
        state = integrator(state, 0.01)
    np.testing.assert_allclose(
        ravel_pytree(state.position)[0], ravel_pytree(phi)[0], atol=1e-12
    )


def test_leapfrog_energy_error_is_third_order():
    """D.11: one-step energy error on a Gaussian scales like eps^3 (ratio 8)."""
    precision = jnp.diag(jnp.array([1.0, 4.0, 9.0]))

    def log_density(q):
        return -0.5 * q @ precision @ q

    def kinetic(p):
        return 0.5 * p @ p

    integrator = blackjax.mcmc.integrators.velocity_verlet(log_density, kinetic)
    q0, p0 = jnp.array([1.0, -0.5, 0.3]), jnp.array([0.2, 0.7, -1.0])

    def error(eps):
        s = blackjax.mcmc.integrators.IntegratorState(
            q0, p0, log_density(q0), jax.grad(log_density)(q0)
        )
        s = integrator(s, eps)
        return abs(
            (-s.logdensity + kinetic(s.momentum)) - (-log_density(q0) + kinetic(p0))
        )

    ratio = error(1e-3) / error(5e-4)
    assert 7.9 < ratio < 8.1
