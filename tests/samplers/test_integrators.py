"""The Gaussian-split integrator (samplers/_integrators.py): exact on the prior's
flow, reversible and volume-preserving on any target, and samplers using it keep
the posterior. Expected values are closed forms (rotations, determinants)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.mcmc.integrators import IntegratorState
from jax.flatten_util import ravel_pytree
from widebnn.samplers._integrators import gaussian_split, prior_precision

from widebnn import WideBNN, kernels, samplers

from .test_reprior import problem

# Short plumbing runs: convergence warnings are tested in tests/samplers.
pytestmark = pytest.mark.filterwarnings("ignore::widebnn.samplers.SamplerWarning")


def _kinetic(inverse_mass):
    def kinetic(momentum, position=None):
        del position
        flat = ravel_pytree(momentum)[0]
        return 0.5 * jnp.sum(inverse_mass * flat**2)

    return kinetic


def _state(logdensity, position, momentum):
    value, grad = jax.value_and_grad(logdensity)(position)
    return IntegratorState(position, momentum, value, grad)


@pytest.mark.parametrize("step_size", [0.3, 1.7])
def test_exact_flow_of_a_gaussian(step_size):
    """log p = -sum w^2 q^2 / 2 has no rest: the step is the exact Hamiltonian flow
    q(t) = q cos(Wt) + (m p / W) sin(Wt), W = w sqrt(m), for any step size; the
    energy is conserved to rounding."""
    w2 = jnp.array([1.0, 4.0, 0.25])
    m_inv = jnp.array([1.0, 0.5, 3.0])

    def logdensity(q):
        return -0.5 * jnp.sum(w2 * q**2)

    q0, p0 = jnp.array([0.3, -1.2, 2.0]), jnp.array([1.1, 0.4, -0.7])
    step = gaussian_split(w2)(logdensity, _kinetic(m_inv))
    state = _state(logdensity, q0, p0)
    for _ in range(5):
        state = step(state, step_size)
    omega, t = np.sqrt(np.asarray(w2 * m_inv)), 5 * step_size
    q0n, p0n, m = np.asarray(q0), np.asarray(p0), np.asarray(m_inv)
    expected_q = q0n * np.cos(omega * t) + m * p0n / omega * np.sin(omega * t)
    expected_p = p0n * np.cos(omega * t) - omega / m * q0n * np.sin(omega * t)
    np.testing.assert_allclose(state.position, expected_q, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.momentum, expected_p, rtol=1e-12, atol=1e-12)
    energy0 = -logdensity(q0) + _kinetic(m_inv)(p0)
    energy = -state.logdensity + _kinetic(m_inv)(state.momentum)
    np.testing.assert_allclose(energy, energy0, rtol=1e-13)


def _repriorised_target():
    model, x, y, phi = problem(6, 9, 1, seed=17)
    fn = samplers.log_density_fn(model)
    theta = model.merge_readout(phi[0], phi[1])
    precision = prior_precision(model, theta, "repriorised", False)
    return (lambda p: fn(p, x, y)), phi, precision


def test_reversible_on_a_repriorised_density():
    """Integrate, negate the momentum, integrate back: the start (1e-12)."""
    logdensity, phi, precision = _repriorised_target()
    n = ravel_pytree(phi)[0].size
    step = gaussian_split(precision)(logdensity, _kinetic(jnp.ones(n)))
    momentum = jax.tree.map(jnp.ones_like, phi)
    state = _state(logdensity, phi, momentum)
    for _ in range(10):
        state = step(state, 0.4)
    state = state._replace(momentum=jax.tree.map(jnp.negative, state.momentum))
    for _ in range(10):
        state = step(state, 0.4)
    np.testing.assert_allclose(
        ravel_pytree(state.position)[0], ravel_pytree(phi)[0], atol=1e-11
    )
    np.testing.assert_allclose(
        ravel_pytree(state.momentum)[0], -ravel_pytree(momentum)[0], atol=1e-11
    )


def test_volume_preserving_on_a_repriorised_density():
    """|det d(q', p') / d(q, p)| = 1 (the Metropolis ratio needs no Jacobian)."""
    logdensity, phi, precision = _repriorised_target()
    flat_q, unravel = ravel_pytree(phi)
    n = flat_q.size
    step = gaussian_split(precision)(logdensity, _kinetic(jnp.full(n, 0.7)))

    def flow(z):
        q, p = unravel(z[:n]), unravel(z[n:])
        out = step(_state(logdensity, q, p), 0.5)
        return jnp.concatenate([ravel_pytree(out.position)[0],
                                ravel_pytree(out.momentum)[0]])  # fmt: skip

    z = jnp.concatenate([flat_q, 0.3 * jnp.ones(n)])
    sign, log_det = jnp.linalg.slogdet(jax.jacfwd(flow)(z))
    assert sign == 1
    assert abs(float(log_det)) < 1e-10


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_prior_precision_of_each_coordinate_system(parameterization):
    width = 5
    body = kernels.serial(kernels.Dense(width, 1.3, 0.2), kernels.Relu())
    model = WideBNN(body, width, 2.0, 0.5, 0.1, 2, parameterization)
    theta = model.init(jax.random.key(0), (3, 4))
    full = prior_precision(model, theta, "none", False)
    w_std, b_std = (
        (2.0 / math.sqrt(width), 0.5) if parameterization == "standard" else (1, 1)
    )
    np.testing.assert_allclose(full["readout"]["W"], np.full((width, 2), w_std**-2))
    np.testing.assert_allclose(full["readout"]["b"], np.full(2, b_std**-2))
    for leaf in jax.tree.leaves(full["body"]):
        np.testing.assert_array_equal(leaf, 1.0)  # body leaves are N(0, 1)
    hidden, phi_out = prior_precision(model, theta, "repriorised", False)
    assert phi_out.shape == (width + 1, 2)
    np.testing.assert_array_equal(phi_out, 1.0)
    assert jax.tree.structure(hidden) == jax.tree.structure(theta["body"])
    exact = prior_precision(model, theta, "repriorised", True)
    assert jax.tree.structure(exact) == jax.tree.structure(theta["body"])


def test_bad_integrator_is_named():
    model, x, y, _ = problem(4, 3, 1)
    with pytest.raises(ValueError, match="integrator"):
        samplers.hmc(model, x, y, integrator="yoshida", key=jax.random.key(0),
                     progress=False)  # fmt: skip
