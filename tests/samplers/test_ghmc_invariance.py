"""GHMC with the Gaussian-split integrator (``samplers._ghmc._ghmc_kernel``), fast.

Two properties of one transition kernel, on Gaussian targets where everything has
a closed form:

* **Persistent momentum**: with no momentum refresh (``alpha = 0``) on a Gaussian
  target whose precision the split integrator knows, every step is the exact
  Hamiltonian flow (energy error 0, always accepted), and GHMC's final momentum
  flip undoes the flip inside the proposal, so ``n`` transitions are the flow over
  time ``n * step`` (a rotation of each ``(q, p)`` pair). This is the property the
  flip exists for: removing it does *not* break invariance (the flip and the
  accept/reject step each keep the joint distribution), it makes every accepted
  move reverse the next one, so the chain oscillates instead of travelling, and
  only long statistical runs notice. Here it is a deterministic check.
* **Invariance**: exact draws of ``(q, p, slice)`` from the joint target (``q`` from a
  Gaussian whose precision differs from the integrator's, so the kicks do work and
  about 1 in 5 proposals is rejected; ``p`` standard normal; the slice variable
  uniform on ``(-1, 1)``), moved by a few transitions with partial refresh, keep
  their first and second moments. 200,000 independent chains, one ``vmap``; each
  moment is compared with its closed form in units of its standard error, with a
  Bonferroni-corrected bound for a false-alarm rate of 1e-3 over all moments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from widebnn.samplers._ghmc import build_step, init_state
from widebnn.samplers._integrators import gaussian_split


def _gaussian(precision):
    def logdensity(q):
        return -0.5 * jnp.sum(precision * q**2)

    return logdensity


def test_persistent_momentum_follows_the_exact_flow():
    precision = jnp.array([1.0, 4.0, 0.25])
    logdensity = _gaussian(precision)
    step = jax.jit(build_step("ghmc", logdensity, None, gaussian_split(precision)))
    q0, p0 = jnp.array([0.3, -1.2, 2.0]), jnp.array([1.1, 0.4, -0.7])
    state = init_state("ghmc", q0, logdensity, jax.random.key(0))
    state = state._replace(momentum=p0, slice=jnp.asarray(0.5))
    step_size, n_steps = 0.4, 6
    for key in jax.random.split(jax.random.key(1), n_steps):
        state, info = step(key, state, step_size, jnp.ones(3), 0.0)
        assert bool(info.is_accepted)
    # unit mass: q(t) = q cos(w t) + p / w sin(w t), p(t) = p cos(w t) - w q sin(w t)
    omega, t = np.sqrt(np.asarray(precision)), n_steps * step_size
    q0n, p0n = np.asarray(q0), np.asarray(p0)
    expected_q = q0n * np.cos(omega * t) + p0n / omega * np.sin(omega * t)
    expected_p = p0n * np.cos(omega * t) - omega * q0n * np.sin(omega * t)
    np.testing.assert_allclose(state.position, expected_q, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.momentum, expected_p, rtol=1e-12, atol=1e-12)


def test_transitions_keep_exact_draws_exact():
    target = jnp.array([1.0, 2.5])
    split = jnp.array([0.6, 4.0])  # not the target's: the kicks carry the rest
    logdensity = _gaussian(target)
    step = build_step("ghmc", logdensity, None, gaussian_split(split))
    n_chains, n_transitions, step_size, alpha = 200_000, 3, 0.9, 0.3
    kq, kp, ku, kt = jax.random.split(jax.random.key(2), 4)
    q = jax.random.normal(kq, (n_chains, 2)) / jnp.sqrt(target)[None]
    p = jax.random.normal(kp, (n_chains, 2))
    u = jax.random.uniform(ku, (n_chains,), minval=-1.0, maxval=1.0)

    def run(q, p, u, key):
        state = init_state("ghmc", q, logdensity, key)
        state = state._replace(momentum=p, slice=u)
        accepted = 0.0
        for k in jax.random.split(key, n_transitions):
            state, info = step(k, state, step_size, jnp.ones(2), alpha)
            accepted = accepted + info.is_accepted
        return state.position, state.momentum, state.slice, accepted / n_transitions

    keys = jax.random.split(kt, n_chains)
    q, p, u, accepted = map(np.asarray, jax.jit(jax.vmap(run))(q, p, u, keys))
    acceptance = accepted.mean()
    assert 0.5 < acceptance < 0.95, acceptance  # the accept/reject step is exercised
    # statistics with their exact expectations under the joint target
    variance = 1 / np.asarray(target)
    stats = {
        "E q": (q, np.zeros(2)),
        "E q^2": (q**2, variance),
        "E p": (p, np.zeros(2)),
        "E p^2": (p**2, np.ones(2)),
        "E q p": (q * p, np.zeros(2)),
        "E u": (u[:, None], np.zeros(1)),
        "E u^2": (u[:, None] ** 2, np.full(1, 1 / 3)),
    }
    n_tests = sum(expected.size for _, expected in stats.values())
    bound = scipy.stats.norm.ppf(1 - 1e-3 / (2 * n_tests))
    for name, (values, expected) in stats.items():
        mean = values.mean(axis=0)
        stderr = values.std(axis=0, ddof=1) / np.sqrt(n_chains)
        z = (mean - expected) / stderr
        assert np.all(np.abs(z) < bound), (name, mean, expected, z)
