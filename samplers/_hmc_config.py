"""The static settings of an ``hmc`` run: argument checks and package defaults.

:func:`build_config` checks every argument of :func:`widebnn.samplers.hmc` (naming
the argument in its error), resolves the ``None`` defaults
(:func:`resolve_defaults`) and returns the hashable :class:`Config` that the
compiled warm-up and sampling functions take as a static argument.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_key
from ._reprior import REPARAMS, check_data, choose_path, resolve_kernel_reg

ALGORITHMS = ("ghmc", "hmc", "nuts")
INTEGRATORS = ("leapfrog", "gaussian_split")


class Config(NamedTuple):
    """Static settings of a run (hashable: a ``jit`` static argument)."""

    algorithm: str
    reparam: str
    num_chains: int
    num_warmup: int
    thin: int
    step_size: float | None
    target_acceptance: float
    momentum_refresh: float | None
    refresh_time: float
    num_integration_steps: int
    max_num_doublings: int
    initial_step_size: float
    kernel_reg: float | None
    path: str
    store_params: bool
    exact_readout: bool
    integrator: str
    sharding: Any


DEFAULT_TARGET = {"ghmc": 0.9, "hmc": 0.8, "nuts": 0.8}
# GHMC on the hidden weights with the exact readout: larger steps pay (mixing
# benchmark, width 512: 15-18 % more ESS per gradient at 0.8 than at 0.9).
DEFAULT_TARGET_EXACT_GHMC = 0.8


def check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return int(value)


def _check_unit(value, name, *, open_low=True):
    value = float(value)
    if not (0 < value <= 1 if open_low else 0 <= value <= 1):
        raise ValueError(f"{name} must be in (0, 1], got {value}.")
    return value


def momentum_refresh_of(config, eps):
    """GHMC's per-chain beta: fixed, or ``min(1, step_size / refresh_time)``."""
    if config.momentum_refresh is not None:
        return jnp.full(jnp.shape(eps), config.momentum_refresh)
    return jnp.minimum(1.0, eps / config.refresh_time)


def _check_positive(value, name):
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}.")
    return value


def chain_sharding(num_chains):
    devices = jax.local_devices()
    if len(devices) < 2 or num_chains % len(devices):
        return None
    mesh = jax.sharding.Mesh(np.array(devices), ("chain",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("chain"))


def resolve_defaults(
    model, algorithm, reparam, kernel_reg, exact_readout, integrator, target
):
    """``(exact_readout, integrator, target_acceptance)`` with ``None`` resolved.

    The defaults are the fastest-mixing choices of the mixing benchmark
    (``benchmarks/README.md``, "Mixing"): for the repriorised Gaussian model with
    the exact repriorisation (``kernel_reg = noise_std**2``), the exact readout,
    the Gaussian-split integrator and (GHMC) target acceptance 0.8; otherwise
    (``reparam="none"``, another ``kernel_reg``) no exact readout, leapfrog and
    the algorithm's usual target.
    """
    if exact_readout is not None and not isinstance(exact_readout, bool | np.bool_):
        raise ValueError(
            f"exact_readout must be True, False or None, got {exact_readout!r}."
        )
    if integrator is not None and integrator not in INTEGRATORS:
        raise ValueError(
            f"integrator must be one of {INTEGRATORS} or None, got {integrator!r}."
        )
    if exact_readout is None:
        exact_readout = (
            reparam == "repriorised" and kernel_reg == float(model.noise_std) ** 2
        )
    if integrator is None:
        split = exact_readout and hasattr(model, "prior_std")
        integrator = "gaussian_split" if split else "leapfrog"
    if target is None:
        exact_ghmc = algorithm == "ghmc" and exact_readout
        target = DEFAULT_TARGET_EXACT_GHMC if exact_ghmc else DEFAULT_TARGET[algorithm]
    return bool(exact_readout), integrator, target


def build_config(
    model,
    x,
    y,
    x_pred,
    key,
    *,
    algorithm,
    reparam,
    num_chains,
    num_warmup,
    num_samples,
    thin,
    step_size,
    kernel_reg,
    path,
    target_acceptance,
    momentum_refresh,
    refresh_time,
    num_integration_steps,
    max_num_doublings,
    initial_step_size,
    chunk_size,
    store_params,
    exact_readout,
    integrator,
):
    """Checks the arguments of :func:`widebnn.samplers.hmc` and resolves defaults.

    Returns:
        ``(x, y, x_pred, config, num_samples, chunk_size)``: the checked data
        (``x_pred`` defaults to ``x``), the :class:`Config` and the checked counts.

    Raises:
        ValueError: naming the argument that is out of range or inconsistent.
        TypeError: for a key that is not a single PRNG key.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}.")
    if reparam not in REPARAMS:
        raise ValueError(f"reparam must be one of {REPARAMS}, got {reparam!r}.")
    x, y = check_data(model, x, y)
    x_pred = x if x_pred is None else jnp.asarray(x_pred)
    if x_pred.ndim != x.ndim or x_pred.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"x_pred must have shape (M, *{x.shape[1:]}), got {x_pred.shape}."
        )
    check_key(key)
    exact_readout, integrator, target_acceptance = resolve_defaults(
        model,
        algorithm,
        reparam,
        resolve_kernel_reg(model, kernel_reg) if reparam == "repriorised" else None,
        exact_readout,
        integrator,
        target_acceptance,
    )
    if integrator == "gaussian_split" and not hasattr(model, "prior_std"):
        raise ValueError(
            "integrator='gaussian_split' needs a model with prior_std(params)."
        )
    if exact_readout and reparam != "repriorised":
        raise ValueError("exact_readout=True needs reparam='repriorised'.")
    if (
        exact_readout
        and kernel_reg is not None
        and float(kernel_reg) != float(model.noise_std) ** 2
    ):
        raise ValueError(
            f"exact_readout=True needs kernel_reg = noise_std**2 "
            f"({float(model.noise_std) ** 2}), got {kernel_reg}."
        )
    if step_size is not None:
        step_size = _check_positive(step_size, "step_size")
    num_chains = check_int(num_chains, "num_chains", 1)
    num_samples = check_int(num_samples, "num_samples", 1)
    chunk_size = min(check_int(chunk_size, "chunk_size", 1), num_samples)
    if momentum_refresh is not None and refresh_time is not None:
        raise ValueError(
            "momentum_refresh and refresh_time both given: momentum_refresh fixes "
            "beta, refresh_time sets beta = min(1, step_size / refresh_time)."
        )
    config = Config(
        algorithm=algorithm,
        reparam=reparam,
        num_chains=num_chains,
        num_warmup=check_int(num_warmup, "num_warmup", 0),
        thin=check_int(thin, "thin", 1),
        step_size=step_size,
        target_acceptance=_check_unit(target_acceptance, "target_acceptance"),
        momentum_refresh=(
            None
            if momentum_refresh is None
            else _check_unit(momentum_refresh, "momentum_refresh")
        ),
        refresh_time=_check_positive(
            1.0 if refresh_time is None else refresh_time, "refresh_time"
        ),
        num_integration_steps=check_int(
            num_integration_steps, "num_integration_steps", 1
        ),
        max_num_doublings=check_int(max_num_doublings, "max_num_doublings", 1),
        initial_step_size=float(initial_step_size),
        kernel_reg=(
            resolve_kernel_reg(model, kernel_reg) if reparam == "repriorised" else None
        ),
        path=choose_path(model.width + 1, x.shape[0], path),
        store_params=bool(store_params),
        exact_readout=bool(exact_readout),
        integrator=integrator,
        sharding=chain_sharding(num_chains),
    )
    if step_size is None and config.num_warmup == 0:
        raise ValueError("num_warmup must be >= 1 when step_size is None.")
    if step_size is None and config.num_warmup == 0:
        raise ValueError("num_warmup must be >= 1 when step_size is None.")
    return x, y, x_pred, config, num_samples, chunk_size
