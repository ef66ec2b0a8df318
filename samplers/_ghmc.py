"""GHMC warm-up and the per-algorithm transition builders used by ``hmc``.

The transitions are BlackJAX kernels (``blackjax.mcmc.ghmc``/``hmc``/``nuts``
``build_kernel``; for GHMC with another integrator than leapfrog, the same kernel
assembled from BlackJAX's pieces); this module chooses their arguments and tunes
the GHMC step size (dual averaging with full momentum refresh, which avoids the
too-small steps that adaptation under persistent momentum gives).
"""

from __future__ import annotations

import blackjax
import jax
import jax.numpy as jnp
from blackjax.adaptation.base import get_filter_adapt_info_fn
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.mcmc import ghmc, hmc, metrics
from blackjax.mcmc.integrators import IntegratorState
from blackjax.mcmc.proposal import nonreversible_slice_sampling
from jax.flatten_util import ravel_pytree

from ._progress import report_one, report_step


def _ghmc_kernel(integrator, divergence_threshold=1000):
    """``blackjax.mcmc.ghmc``'s kernel with a choice of integrator (BlackJAX's own
    always uses leapfrog): persistent momentum, one integration step, the
    non-reversible slice acceptance, momentum flip; same arguments and state."""

    def kernel(key, state, logdensity_fn, step_size, inverse_scale, alpha, delta):
        metric = metrics.default_metric(ravel_pytree(inverse_scale)[0] ** 2)
        proposal_generator = hmc.hmc_proposal(
            integrator(logdensity_fn, metric.kinetic_energy),
            metric.kinetic_energy,
            step_size,
            divergence_threshold=divergence_threshold,
            sample_proposal=nonreversible_slice_sampling,
        )
        momentum = ghmc.update_momentum(key, state, alpha, metric.sample_momentum)
        slice_value = ((state.slice + 1.0 + delta) % 2) - 1.0
        proposal, info, slice_next = proposal_generator(
            slice_value,
            IntegratorState(
                state.position, momentum, state.logdensity, state.logdensity_grad
            ),
        )
        proposal = hmc.flip_momentum(proposal)
        return ghmc.GHMCState(*proposal, slice_next), info

    return kernel


def build_step(algorithm, logdensity, config, integrator=None):
    """``step(key, state, step_size, inverse_mass, alpha) -> (state, info)``.

    ``integrator``: a BlackJAX integrator factory, or ``None`` for leapfrog.
    """
    extra = {} if integrator is None else {"integrator": integrator}
    if algorithm == "ghmc":
        kernel = (
            blackjax.mcmc.ghmc.build_kernel()
            if integrator is None
            else _ghmc_kernel(integrator)
        )

        def step(key, state, step_size, inverse_mass, alpha):
            return kernel(
                key, state, logdensity, step_size, inverse_mass, alpha, alpha / 2
            )

    elif algorithm == "hmc":
        kernel = blackjax.mcmc.hmc.build_kernel(**extra)

        def step(key, state, step_size, inverse_mass, alpha):
            del alpha
            return kernel(
                key,
                state,
                logdensity,
                step_size,
                inverse_mass,
                config.num_integration_steps,
            )

    else:
        kernel = blackjax.mcmc.nuts.build_kernel(**extra)

        def step(key, state, step_size, inverse_mass, alpha):
            del alpha
            return kernel(
                key,
                state,
                logdensity,
                step_size,
                inverse_mass,
                config.max_num_doublings,
            )

    return step


def init_state(algorithm, position, logdensity, key):
    if algorithm == "ghmc":
        return blackjax.mcmc.ghmc.init(position, logdensity, key)
    return blackjax.mcmc.hmc.init(position, logdensity)


def ghmc_warmup(step, states, key, inverse_mass, config):
    """Dual averaging of one step size shared by the chains, with full momentum
    refresh (``alpha = 1``), in two windows; the second restarts from the first."""
    num_warmup, num_chains = config.num_warmup, config.num_chains
    da_init, da_update, da_final = dual_averaging_adaptation(config.target_acceptance)
    vstep = jax.vmap(step, in_axes=(0, 0, None, 0, None))
    grads = jnp.zeros((), dtype=int)
    step_size = jnp.asarray(config.initial_step_size, dtype=float)
    first = num_warmup // 2
    for window, length in enumerate((first, num_warmup - first)):
        if length == 0:
            continue
        da = da_init(step_size)

        def body(carry, xs):
            states, da = carry
            index, k = xs
            report_step(index, num_warmup)
            keys = jax.random.split(k, num_chains)
            eps = jnp.exp(da.log_step_size)
            states, info = vstep(keys, states, eps, inverse_mass, 1.0)
            acc = jnp.where(jnp.isfinite(info.acceptance_rate), info.acceptance_rate, 0)
            return (states, da_update(da, jnp.mean(acc))), info.num_integration_steps

        keys = jax.random.split(jax.random.fold_in(key, window), length)
        indices = jnp.arange(length) + (0 if window == 0 else first)
        (states, da), n_steps = jax.lax.scan(body, (states, da), (indices, keys))
        step_size = da_final(da)
        grads = grads + jnp.sum(n_steps)
    return states, jnp.full((num_chains,), step_size), grads


def window_warmup(algorithm, logdensity, positions, key, config, integrator=None):
    """BlackJAX window adaptation (step size and diagonal mass), per chain."""
    extra = (
        {"num_integration_steps": config.num_integration_steps}
        if algorithm == "hmc"
        else {"max_num_doublings": config.max_num_doublings}
    )
    if integrator is not None:
        extra["integrator"] = integrator
    keep = get_filter_adapt_info_fn(info_keys={"num_integration_steps"})

    def info_fn(state, info, adaptation_state):
        # Called once per warm-up transition (the callback fires once for all
        # chains): feeds the warm-up progress bar.
        report_one(config.num_warmup)
        return keep(state, info, adaptation_state)

    warmup = blackjax.window_adaptation(
        blackjax.hmc if algorithm == "hmc" else blackjax.nuts,
        logdensity,
        target_acceptance_rate=config.target_acceptance,
        adaptation_info_fn=info_fn,
        **extra,
    )

    def one(k, position):
        (state, params), info = warmup.run(k, position, num_steps=config.num_warmup)
        return (
            state,
            params["step_size"],
            params["inverse_mass_matrix"],
            jnp.sum(info.info.num_integration_steps),
        )

    keys = jax.random.split(key, config.num_chains)
    states, step_size, inverse_mass, grads = jax.vmap(one)(keys, positions)
    return states, step_size, inverse_mass, jnp.sum(grads)
