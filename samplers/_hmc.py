"""``hmc``: many-chain HMC/GHMC/NUTS on a Bayesian network, built on BlackJAX.

The sampler runs on the repriorised coordinates :math:`\\phi` (log-det included) or
on the parameters themselves, and reports :math:`\\theta = \\mathcal T(\\phi)` and
predictions. Chains are vectorised with ``vmap`` (and sharded over local devices
when there are several), draws come from ``lax.scan`` in jitted chunks.
"""

from __future__ import annotations

import functools
import inspect
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._convergence import warn_if_unreliable
from ._ghmc import build_step, ghmc_warmup, init_state, window_warmup
from ._hmc_config import build_config, momentum_refresh_of
from ._integrators import gaussian_split, prior_precision
from ._platform import batch_map, blas_single_threaded
from ._posterior import Posterior
from ._progress import report_step, warmup_scope
from ._readout import exact_readout_params
from ._reprior import (
    log_density_fn,
    position_to_params,
)
from ._run import Checkpoint, run_chunks, run_fingerprint


def _initial_positions(model, key, x_shape, config, logdensity):
    """Prior draws of the sampler's coordinates, one per chain; a draw with a
    non-finite log density is redrawn (up to 100 times)."""

    def draw(k):
        theta = model.init(k, x_shape)
        if config.exact_readout:
            return model.split_readout(theta)[0]
        return model.split_readout(theta) if config.reparam == "repriorised" else theta

    def one(k):
        def cond(carry):
            tries, position = carry
            return (tries < 100) & ~jnp.isfinite(logdensity(position))

        def body(carry):
            tries, _ = carry
            return tries + 1, draw(jax.random.fold_in(k, tries))

        return jax.lax.while_loop(cond, body, (1, draw(k)))[1]

    return jax.vmap(one)(jax.random.split(key, config.num_chains))


def _put(tree, config):
    return tree if config.sharding is None else jax.device_put(tree, config.sharding)


def _logdensity(model, config, x, y):
    fn = log_density_fn(
        model, reparam=config.reparam, kernel_reg=config.kernel_reg, path=config.path
    )
    if config.exact_readout:
        # The marginal density of the hidden weights: phi_out ~ N(0, I) is
        # independent of them (samplers/_reprior.py), so any fixed phi_out gives
        # it up to a constant.
        zeros = jnp.zeros((model.width + 1, y.shape[1]), y.dtype)
        return lambda hidden: fn((hidden, zeros), x, y)
    return lambda position: fn(position, x, y)


def _integrator(model, config, x):
    """The integrator factory of ``config`` (``None``: BlackJAX's leapfrog)."""
    if config.integrator == "leapfrog":
        return None
    # Only shapes of the prior draw are used (the draw itself is dead code).
    params = model.init(jax.random.key(0), x.shape)
    return gaussian_split(
        prior_precision(model, params, config.reparam, config.exact_readout)
    )


@partial(jax.jit, static_argnums=(0, 1))
def _warmup(model, config, init_key, warm_key, x, y):
    """Initial prior draws, then warm-up; returns ``(states, eps, imm, grads)``."""
    num_chains = config.num_chains
    logdensity = _logdensity(model, config, x, y)
    positions = _initial_positions(model, init_key, x.shape, config, logdensity)
    positions = _put(positions, config)
    flat_size = ravel_pytree(jax.tree.map(lambda v: v[0], positions))[0].size
    integrator = _integrator(model, config, x)
    step = build_step(config.algorithm, logdensity, config, integrator)
    state_keys = jax.random.split(jax.random.fold_in(init_key, 1), num_chains)
    states = jax.vmap(lambda p, k: init_state(config.algorithm, p, logdensity, k))(
        positions, state_keys
    )
    unit = jnp.ones((num_chains, flat_size))
    if config.step_size is not None:
        eps = jnp.full((num_chains,), config.step_size)
        alpha = momentum_refresh_of(config, eps)
        vstep = jax.vmap(step)

        def body(states, xs):
            index, k = xs
            report_step(index, config.num_warmup)
            keys = jax.random.split(k, num_chains)
            states, info = vstep(keys, states, eps, unit, alpha)
            return states, jnp.sum(info.num_integration_steps)

        keys = jax.random.split(warm_key, config.num_warmup)
        indices = jnp.arange(config.num_warmup)
        states, n_steps = jax.lax.scan(body, states, (indices, keys))
        return states, eps, unit, jnp.sum(n_steps) + num_chains
    if config.algorithm == "ghmc":
        states, eps, grads = ghmc_warmup(step, states, warm_key, unit, config)
        return states, eps, unit, grads + num_chains
    states, eps, imm, grads = window_warmup(
        config.algorithm, logdensity, positions, warm_key, config, integrator
    )
    return states, eps, imm, grads + num_chains


@partial(jax.jit, static_argnums=(0, 1, 2))
def _chunk(model, config, size, states, key, x, y, x_pred, eps, imm):
    """``size`` kept draws of ``thin`` transitions each, for all chains."""
    num_chains = config.num_chains
    logdensity = _logdensity(model, config, x, y)
    step = build_step(
        config.algorithm, logdensity, config, _integrator(model, config, x)
    )
    vstep = jax.vmap(step)
    alpha = momentum_refresh_of(config, eps)

    def transition(states, k):
        keys = jax.random.split(k, num_chains)
        states, info = vstep(keys, states, eps, imm, alpha)
        stats = {
            "acceptance_rate": info.acceptance_rate,
            "diverging": info.is_divergent,
            "energy": info.energy,
            "n_steps": info.num_integration_steps,
            "nonfinite": ~jnp.isfinite(info.energy),
        }
        return states, stats

    def to_params(position, key):
        if config.exact_readout:
            noise_var = config.kernel_reg  # = noise_std**2 with the exact readout
            return exact_readout_params(
                model, position, key, x, y, noise_var=noise_var, path=config.path
            )
        return position_to_params(
            model,
            position,
            x,
            y,
            reparam=config.reparam,
            kernel_reg=config.kernel_reg,
            path=config.path,
        )

    def draw(states, k):
        keys = jax.random.split(k, config.thin)
        states, stats = jax.lax.scan(transition, states, keys)
        readout_keys = jax.random.split(jax.random.fold_in(k, 2**31 - 1), num_chains)
        stats = {
            "acceptance_rate": jnp.mean(stats["acceptance_rate"], 0),
            "diverging": jnp.any(stats["diverging"], 0),
            "energy": stats["energy"][-1],
            "n_steps": jnp.sum(stats["n_steps"], 0),
            "nonfinite": jnp.sum(stats["nonfinite"], 0),
            "lp": states.logdensity,
        }
        # One chain at a time on CPU: batched factorisations can deadlock there.
        theta = batch_map(lambda a: to_params(*a), (states.position, readout_keys))
        predictions = jax.vmap(model.predict, (0, None))(theta, x_pred)
        out = {"stats": stats, "predictions": predictions}
        if config.store_params:
            out["params"] = theta
        return states, out

    return jax.lax.scan(draw, _put(states, config), jax.random.split(key, size))


def _sampler_run(fn):
    """``fn`` run with one BLAS thread (on CPU), the warm-up progress bar, and the
    convergence checks of its result (:class:`SamplerWarning`)."""
    progress_default = inspect.signature(fn).parameters["progress"].default

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with (
            blas_single_threaded(),
            warmup_scope(kwargs.get("progress", progress_default)),
        ):
            posterior = fn(*args, **kwargs)
        warn_if_unreliable(posterior, stacklevel=2)
        return posterior

    return run


@_sampler_run
def hmc(
    model,
    x,
    y,
    *,
    algorithm: str = "ghmc",
    reparam: str = "repriorised",
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    thin: int = 1,
    step_size: float | None = None,
    key,
    progress: bool = True,
    checkpoint=None,
    resume: bool = False,
    x_pred=None,
    kernel_reg: float | None = None,
    path: str = "auto",
    target_acceptance: float | None = None,
    momentum_refresh: float | None = None,
    refresh_time: float | None = None,
    num_integration_steps: int = 10,
    max_num_doublings: int = 10,
    initial_step_size: float = 0.01,
    chunk_size: int = 100,
    store_params: bool = True,
    exact_readout: bool | None = None,
    integrator: str | None = None,
) -> Posterior:
    r"""Samples the posterior of ``model`` given ``(x, y)`` with HMC, GHMC or NUTS.

    With ``reparam="repriorised"`` the chain runs on
    :math:`\phi = (\theta_{rest}, \Phi_{out})` with log density
    :math:`\log p(\mathcal T(\phi)\mid D) + \log|\det J(\phi)|` (see
    :func:`repriorise`); with ``"none"`` on :math:`\theta` itself.

    Defaults: with ``reparam="repriorised"`` (and ``kernel_reg`` left at
    ``noise_std**2``) the chain moves the hidden weights only, under their
    marginal density, every kept draw gets an exact readout
    (``exact_readout=True``), the Gaussian prior's flow is integrated exactly
    (``integrator="gaussian_split"``) and GHMC's step size targets an acceptance
    rate of 0.8: in the mixing benchmark (``benchmarks/README.md``, "Mixing";
    one hidden layer of width 512) this gave 20-25x the effective draws per
    gradient of standard GHMC, where plain repriorised GHMC gave 8x. With
    ``reparam="none"`` the defaults are no exact readout, leapfrog and target
    0.9. Explicit values are always honoured; the values used are in
    ``settings``.

    * ``"ghmc"``: ``blackjax.ghmc`` (one leapfrog step per transition, persistent
      momentum :math:`p \leftarrow \sqrt{1-\beta}\,p + \sqrt\beta\,\xi`,
      non-reversible slice :math:`\delta=\beta/2`, unit mass). Warm-up: dual
      averaging of one step size shared by the chains towards
      ``target_acceptance`` (default 0.8 with the exact readout, else 0.9) with
      full momentum refresh, in two
      windows. Then :math:`\beta = \min(1, \varepsilon/\tau)` with
      :math:`\tau` = ``refresh_time`` (default 1): the same momentum noise per
      unit of simulated time whatever the tuned step :math:`\varepsilon`, so a
      chain that takes larger steps also refreshes more per step. (Under
      near-Gaussian dynamics each coordinate's energy :math:`(q^2+p^2)/2` is
      nearly conserved and changes only through the refresh, so functions of
      the weights' magnitudes, like predictions, mix at the rate
      :math:`1/\tau` per unit time; see ``benchmarks/README.md``.) A fixed
      ``momentum_refresh`` overrides this.
    * ``"hmc"`` (``num_integration_steps`` leapfrog steps) and ``"nuts"``:
      ``blackjax.window_adaptation`` per chain (step size and diagonal mass,
      target acceptance default 0.8).

    With ``step_size`` given nothing is adapted (unit mass); warm-up transitions are
    then plain burn-in. Non-finite log densities (failed Cholesky factorisations,
    overflow) are ``-inf``: the proposal is rejected and counted in
    ``sample_stats["nonfinite"]``; the state never becomes NaN.

    After sampling, the run is checked and a :class:`SamplerWarning` raised
    (Python ``warnings``) for each problem found, saying what to change: rank
    :math:`\hat R` above 1.05 or bulk ESS below ``max(100, 10 * num_chains)`` on
    any of 100 fixed random projections of the predictions (the directions of
    ``widebnn.diagnostics.projection_summary``; these two need at least 4 draws
    per chain), any divergent transition, or a mean acceptance rate below 0.2.

    On CPU, BLAS (scipy's OpenBLAS, which JAX's CPU LAPACK calls) is limited to
    one thread for the run (``threadpoolctl``; restored afterwards): its thread
    pool made the small factorisations of a step about ten times slower on a
    machine whose cores other processes were using. No environment variable is
    needed.

    Args:
        model: a model with the sampler protocol (e.g. :class:`widebnn.WideBNN`).
        x: ``(N, *S, C)`` training inputs.
        y: ``(N, out_dim)`` training targets (always 2-D).
        algorithm: static; ``"ghmc"``, ``"hmc"`` or ``"nuts"``.
        reparam: static; ``"repriorised"`` or ``"none"``.
        num_chains: static; number of chains (sharded over local devices when it is
            a multiple of their number).
        num_warmup: static; warm-up transitions.
        num_samples: static; kept draws per chain.
        thin: static; transitions per kept draw.
        step_size: a fixed step size, or ``None`` to adapt it.
        key: a PRNG key (required), e.g. ``jax.random.key(0)``.
        progress: show tqdm bars: warm-up (updated about every 1 % of its
            transitions, from inside the compiled warm-up) and sampling (updated
            after every chunk).
        checkpoint: a run directory or ``None``. After warm-up and after every
            chunk the state, tuned parameters and draws are written there
            (atomically, ``.npz`` with checksums, no pickle), next to a
            fingerprint of the run (network, data, key, settings; see
            ``docs/architecture.md``). A run continued with ``resume=True`` and
            the same arguments returns exactly the draws of an uninterrupted
            run; a damaged file is recomputed with a warning naming it.
        resume: ``False`` (default) starts a run: ``checkpoint`` must be missing
            or empty. ``True`` continues the run saved in ``checkpoint``: it must
            exist and its fingerprint must match this call (the error names the
            parts that differ).
        x_pred: ``(M, *S, C)`` inputs of the predictions (default ``x``).
        kernel_reg: :math:`k` of the repriorisation (default ``noise_std**2``).
        path: static; ``"auto"``, ``"primal"`` or ``"dual"`` (see :func:`repriorise`).
        target_acceptance: target of the step-size adaptation (``None``: 0.8 for
            ``"hmc"``, ``"nuts"`` and GHMC with the exact readout; 0.9 for other
            GHMC runs).
        momentum_refresh: a fixed GHMC momentum refresh :math:`\beta \in (0, 1]`
            per transition (``None``: from ``refresh_time``).
        refresh_time: GHMC momentum decay time :math:`\tau > 0` in units of
            simulated time, :math:`\beta = \min(1, \varepsilon/\tau)` (default
            1; not together with ``momentum_refresh``). The :math:`\beta` used is
            in ``settings["momentum_refresh"]`` (one per chain).
        num_integration_steps: static; leapfrog steps of ``"hmc"``.
        max_num_doublings: static; maximum tree depth of ``"nuts"``.
        initial_step_size: starting point of the GHMC step-size adaptation.
        chunk_size: static; kept draws per jitted chunk (the last chunk is run at
            full size and truncated, so that one compilation serves all chunks).
        store_params: keep the parameter draws (they can be large).
        exact_readout: static; ``None`` (default): ``True`` for
            ``reparam="repriorised"`` with ``kernel_reg = noise_std**2``, else
            ``False``. ``True`` (with ``reparam="repriorised"`` and
            ``kernel_reg = noise_std**2`` only): the chain runs on the hidden weights
            with their marginal density (prior times the Gaussian marginal
            likelihood of their features) and every kept draw gets a fresh
            :math:`\Phi_{out}\sim\mathcal N(0, I)`, its exact conditional (a Gibbs
            step, no gradient). Draws of the readout are then independent given the
            hidden weights.
        integrator: static; ``None`` (default): ``"gaussian_split"`` when the
            exact readout is used (and the model has ``prior_std``), else
            ``"leapfrog"``. ``"gaussian_split"``: the Gaussian
            prior's flow integrated exactly (a rotation) and only the rest of the
            log density by gradient kicks (see ``samplers/_integrators.py``). In
            repriorised coordinates of a wide network the rest is nearly flat,
            so much larger steps are accepted; needs ``model.prior_std`` and a
            diagonal mass.

    Returns:
        A :class:`Posterior`.

    Raises:
        ValueError: naming the argument, for bad data (``y`` not 2-D, lengths that
            differ, NaN), an unknown ``algorithm``/``reparam`` or bad settings;
            naming ``checkpoint``, for a path that is a file, ``resume=False``
            on a directory holding files, ``resume=True`` on a missing directory
            or one without a checkpoint, or a fingerprint that differs.
        TypeError: if ``key`` is not a JAX PRNG key (e.g. an integer seed).

    Warns:
        SamplerWarning: for a run that has not converged or mixed (see above).

    References:
        Hron et al., ICML 2022 (arXiv:2206.07673); Hoffman & Gelman, JMLR 2014
        (NUTS); Neal 2020, "Non-reversibly updating a uniform [0,1] value for
        Metropolis accept/reject decisions" (GHMC slice).
    """
    x, y, x_pred, config, num_samples, chunk_size = build_config(
        model,
        x,
        y,
        x_pred,
        key,
        algorithm=algorithm,
        reparam=reparam,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        thin=thin,
        step_size=step_size,
        kernel_reg=kernel_reg,
        path=path,
        target_acceptance=target_acceptance,
        momentum_refresh=momentum_refresh,
        refresh_time=refresh_time,
        num_integration_steps=num_integration_steps,
        max_num_doublings=max_num_doublings,
        initial_step_size=initial_step_size,
        chunk_size=chunk_size,
        store_params=store_params,
        exact_readout=exact_readout,
        integrator=integrator,
    )
    settings = config._asdict()
    settings.pop("sharding")
    settings.update(num_samples=num_samples, chunk_size=chunk_size)

    run_dir = Checkpoint(
        checkpoint,
        lambda: run_fingerprint(model, x, y, x_pred, key, settings),
        resume=resume,
    )
    init_key, warm_key, sample_key = jax.random.split(key, 3)
    warm_args = (model, config, init_key, warm_key, x, y)
    states, eps, imm, warm_grads = run_dir.stage(
        "warmup",
        lambda: _warmup(*warm_args),
        lambda: jax.eval_shape(_warmup, *warm_args),
    )
    num_chunks = -(-num_samples // chunk_size)
    states, out, seconds = run_chunks(
        lambda s, k, size: _chunk(model, config, size, s, k, x, y, x_pred, eps, imm),
        states,
        sample_key,
        [chunk_size] * num_chunks,
        run_dir,
        progress=progress,
    )

    def swap(v):
        return np.swapaxes(v[:num_samples], 0, 1)

    stats = {k: swap(v) for k, v in out["stats"].items()}
    stats["step_size"] = np.broadcast_to(np.asarray(eps)[:, None], stats["lp"].shape)
    if algorithm == "ghmc":
        settings["momentum_refresh"] = np.asarray(momentum_refresh_of(config, eps))
    settings["inverse_mass_matrix"] = np.asarray(imm)
    settings["chunk_seconds"] = seconds
    return Posterior(
        params=jax.tree.map(swap, out["params"]) if store_params else None,
        predictions=swap(out["predictions"]),
        sample_stats=stats,
        num_grad_evals=int(np.sum(stats["n_steps"])),
        num_warmup_grad_evals=int(warm_grads),
        settings=settings,
        model=model,
    )
