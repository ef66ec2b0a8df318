"""Type-II maximum likelihood: network hyperparameters from the marginal likelihood."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike
from tqdm.auto import tqdm

from widebnn import kernels

from . import _feature_blocks, _feature_gp, _gp_core, _linalg
from ._linalg import DEFAULT_JITTER_LADDER


class FitResult(NamedTuple):
    """The outcome of :func:`fit_hyperparameters`.

    Attributes:
        params: the fitted hyperparameters, ``{name: float}``.
        history: ``{"step": (S+1,), "log_marginal_likelihood": (S+1,), name:
            (S+1,) ...}`` numpy arrays: the values before each of the ``S`` steps
            and after the last, ready to plot (``plt.plot(h["step"],
            h["log_marginal_likelihood"])``).
        log_marginal_likelihood: at ``params``.
    """

    params: dict[str, float]
    history: dict[str, np.ndarray]
    log_marginal_likelihood: float


def _check_params(params0) -> dict[str, float]:
    if not isinstance(params0, Mapping) or not params0:
        raise TypeError(
            "params0 must be a non-empty dict of positive hyperparameters, e.g. "
            f"{{'W_std': 1.5, 'b_std': 0.1, 'noise_var': 0.01}}, got {params0!r}."
        )
    if "noise_var" not in params0:
        raise ValueError("params0 must contain 'noise_var' (the noise variance).")
    out = {}
    for name, value in params0.items():
        if not isinstance(name, str):
            raise TypeError(f"params0 keys must be strings, got {name!r}.")
        try:
            number = float(value)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"params0[{name!r}] must be a number, got {value!r}."
            ) from error
        if not math.isfinite(number) or number <= 0:
            raise ValueError(
                f"params0[{name!r}] must be a finite number > 0 (it is fitted on a "
                f"log scale), got {value!r}."
            )
        out[name] = number
    return out


_FEATURE_SETTINGS = ("key", "dim", "block_size")


def _check_features(features, architecture_fn, params0):
    """``(key, dim, block_size)`` from the ``features`` dict, or ``None``; builds
    the feature map once at ``params0`` so a bad key, dim or network is reported
    before the fit starts."""
    if features is None:
        return None
    if not isinstance(features, Mapping):
        raise TypeError(
            "features must be None or a dict {'key': PRNG key, 'dim': int}, got "
            f"{features!r}."
        )
    unknown = sorted(set(features) - set(_FEATURE_SETTINGS))
    missing = [k for k in ("key", "dim") if k not in features]
    if unknown or missing:
        raise ValueError(
            f"features must have the keys 'key' and 'dim' (and optionally "
            f"'block_size'); unknown {unknown}, missing {missing}."
        )
    block_size = _feature_blocks.check_block_size(
        features.get("block_size", _feature_blocks.DEFAULT_BLOCK_SIZE)
    )
    layer = architecture_fn(dict(params0))
    if not isinstance(layer, kernels.Layer):
        raise TypeError(
            "features= needs architecture_fn to return a widebnn.kernels Layer (its "
            f"feature map is built), got {type(layer).__name__}."
        )
    fmap = kernels.feature_map(layer, features["key"], features["dim"])
    return features["key"], fmap.dim, block_size


def fit_hyperparameters(
    architecture_fn: Callable[[dict[str, jax.Array]], Any],
    params0: Mapping[str, float],
    x: ArrayLike,
    y: ArrayLike,
    *,
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 200,
    get: str = "nngp",
    diag_reg: float = 0.0,
    jitter_ladder: tuple[float, ...] = DEFAULT_JITTER_LADDER,
    features: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> FitResult:
    r"""Maximises the log marginal likelihood over positive hyperparameters.

    Every entry of ``params0`` is optimised on a log scale,
    :math:`p = e^{u}`, by ``optimizer`` on
    :math:`-\log p(Y \mid p)` (see :func:`widebnn.gp.log_marginal_likelihood`),
    one jitted step per iteration with a ``tqdm`` progress bar. The kernels' closed
    forms have finite gradients on the diagonal (the ReLU arc-cosine kernel uses
    ``arctan2`` and a safe square root rather than ``arccos``), so the fit does not
    turn NaN at ``x_i = x_j``. A non-finite value or gradient still stops the fit
    with an error rather than continuing silently.

    Args:
        architecture_fn: ``architecture_fn(params) -> Layer`` (or a kernel callable
            as in :func:`widebnn.gp.posterior`) building the network from the dict
            of (traced) hyperparameters, e.g. ``lambda p: serial(Dense(512,
            p["W_std"], p["b_std"]), Relu(), Dense(1, p["W_std"], p["b_std"]))``.
            It receives every entry, ``noise_var`` included.
        params0: ``{name: value > 0}`` starting values; must contain
            ``"noise_var"``, the observation noise variance.
        x: ``(N, ...)`` training inputs.
        y: ``(N, out)`` targets.
        optimizer: an ``optax`` optimiser (default ``optax.adam(0.05)``), applied to
            the log-parameters.
        steps: number of optimisation steps ``>= 0``.
        get: static; ``"nngp"`` or ``"ntkgp"`` (the prior covariance).
        diag_reg: relative regulariser ``>= 0`` added to the noise.
        jitter_ladder: static; see :func:`widebnn.gp.posterior`.
        features: ``None`` (the exact kernel), or ``{"key": PRNG key, "dim": int}``
            with an optional ``"block_size"``: the objective becomes
            :func:`widebnn.gp.feature_log_marginal_likelihood` of
            ``kernels.feature_map(architecture_fn(params), key, dim)``, the
            ``O(N m^2 + m^3)`` evidence of the random-feature GP. The key stays
            fixed, so the gradient flows through the features to the network
            hyperparameters; ``architecture_fn`` must return a ``Layer`` with a
            feature map, and ``noise_var + diag_reg`` must stay positive.
        progress: show a progress bar.

    Returns:
        A :class:`FitResult` ``(params, history, log_marginal_likelihood)``.

    Raises:
        ValueError, TypeError: on bad ``params0``, data or ``steps``.
        FloatingPointError: if the likelihood or its gradient becomes non-finite
            (for example when the kernel cannot be factorised); the message names
            the step and the hyperparameters.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from widebnn import gp, kernels
        >>> def net(p):
        ...     return kernels.serial(kernels.Dense(512, p["W_std"], p["b_std"]),
        ...                           kernels.Relu(),
        ...                           kernels.Dense(1, p["W_std"], p["b_std"]))
        >>> x = jnp.linspace(-1.0, 1.0, 10)[:, None]
        >>> fit = gp.fit_hyperparameters(
        ...     net, {"W_std": 1.0, "b_std": 0.5, "noise_var": 0.1}, x,
        ...     jnp.sin(3 * x), steps=20, progress=False)
        >>> bool(fit.history["log_marginal_likelihood"][-1]
        ...      > fit.history["log_marginal_likelihood"][0])
        True
    """
    params0 = _check_params(params0)
    if get not in ("nngp", "ntkgp"):
        raise ValueError(f"get must be 'nngp' or 'ntkgp', got {get!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}.")
    _gp_core.check_nonnegative(diag_reg, "diag_reg")
    jitter_ladder = _linalg.check_jitter_ladder(jitter_ladder)
    x = _gp_core.check_inputs(x, "x")
    y = _gp_core.check_targets(y, x, "x", "y")
    if optimizer is None:
        optimizer = optax.adam(0.05)
    name = "ntk" if get == "ntkgp" else "nngp"
    feature_settings = _check_features(features, architecture_fn, params0)

    def log_likelihood(log_params, x, y):
        params = {k: jnp.exp(v) for k, v in log_params.items()}
        if feature_settings is not None:
            key, dim, block_size = feature_settings
            fmap = kernels.feature_map(architecture_fn(params), key, dim)
            return _feature_gp.feature_log_marginal_likelihood(
                fmap,
                x,
                y,
                noise_var=params["noise_var"],
                get=get,
                diag_reg=diag_reg,
                block_size=block_size,
                jitter_ladder=jitter_ladder,
            )
        fn = _gp_core.as_kernel_fn(architecture_fn(params))
        k_train = _gp_core.evaluate(fn, x, None, (name,), "architecture kernel")[name]
        lml, _ = _gp_core.lml_from_kernel(
            k_train, y, params["noise_var"], diag_reg, False, jitter_ladder
        )
        return lml

    @jax.jit
    def step(log_params, opt_state, x, y):
        lml, grads = jax.value_and_grad(log_likelihood)(log_params, x, y)
        neg_grads = jax.tree.map(jnp.negative, grads)
        updates, opt_state = optimizer.update(neg_grads, opt_state, log_params)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in grads.values()]))
        return optax.apply_updates(log_params, updates), opt_state, lml, finite

    dtype = jnp.result_type(float)
    log_params = {k: jnp.asarray(math.log(v), dtype) for k, v in params0.items()}
    opt_state = optimizer.init(log_params)
    history: dict[str, list[float]] = {k: [] for k in params0}
    history["log_marginal_likelihood"] = []

    def record(log_params, lml):
        values = {k: float(jnp.exp(v)) for k, v in log_params.items()}
        for k, v in values.items():
            history[k].append(v)
        history["log_marginal_likelihood"].append(float(lml))
        return values

    bar = tqdm(range(steps), desc="fit_hyperparameters", disable=not progress)
    for i in bar:
        new_params, opt_state, lml, finite = step(log_params, opt_state, x, y)
        values = record(log_params, lml)
        if not (math.isfinite(float(lml)) and bool(finite)):
            raise FloatingPointError(
                f"fit_hyperparameters: the log marginal likelihood or its gradient "
                f"is not finite at step {i} (log marginal likelihood {float(lml)}, "
                f"hyperparameters {values}). The kernel may be singular: increase "
                "noise_var or diag_reg, use float64, or check the architecture."
            )
        log_params = new_params
        if i % 10 == 0 or i == steps - 1:
            bar.set_postfix(log_ml=f"{float(lml):.4g}")
    # the value at the final parameters, from the compiled step (its update unused)
    _, _, final, _ = step(log_params, opt_state, x, y)
    values = record(log_params, final)
    if not math.isfinite(float(final)):
        raise FloatingPointError(
            f"fit_hyperparameters: the final log marginal likelihood is not finite "
            f"(hyperparameters {values})."
        )
    out = {k: np.asarray(v) for k, v in history.items()}
    out["step"] = np.arange(steps + 1)
    return FitResult(values, out, float(final))
