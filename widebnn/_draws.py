"""Shared helpers: named parameter leaves, and reading draws from sampler results."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def leaf_name(path) -> str:
    """``"body_0_W"`` for the pytree path ``["body"][0]["W"]``."""
    parts = []
    for entry in path:
        for attribute in ("key", "idx", "name"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
        else:
            parts.append(str(entry))
    return "_".join(parts)


def named_leaves(params) -> dict[str, Any]:
    """The leaves of a parameter pytree keyed by :func:`leaf_name`, in tree order."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    named = {leaf_name(path): leaf for path, leaf in leaves}
    if len(named) != len(leaves):
        raise ValueError("parameter names collide after joining the pytree paths.")
    return named


def predictions_of(posterior_or_draws, name: str = "posterior_or_draws"):
    """``(chain, draw, N, d)`` float array of network outputs.

    Args:
        posterior_or_draws: an object with ``.predictions`` (a ``Posterior``, a
            ``RejectionPosterior``, ...) or an array ``(chain, draw, N, d)``.
        name: the argument name used in error messages.

    Raises:
        TypeError: for an object without predictions that is not an array.
        ValueError: for an array that is not 4-D, empty, or not finite.
    """
    draws = getattr(posterior_or_draws, "predictions", posterior_or_draws)
    try:
        draws = np.asarray(draws, dtype=float)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be a sampler result with .predictions or an array "
            f"(chain, draw, N, d), got {type(posterior_or_draws).__name__}."
        ) from error
    if draws.ndim != 4:
        raise ValueError(
            f"{name} predictions must be 4-D (chain, draw, N, d), got shape "
            f"{draws.shape}."
        )
    if min(draws.shape) == 0:
        raise ValueError(f"{name} predictions are empty: shape {draws.shape}.")
    if not np.all(np.isfinite(draws)):
        raise ValueError(f"{name} predictions contain NaN or inf.")
    return draws


def params_of(posterior_or_draws):
    """The parameter pytree of a sampler result (leaves ``(chain, draw, ...)``)."""
    return getattr(posterior_or_draws, "params", None)


def sample_stats_of(posterior_or_draws) -> dict[str, Any]:
    """The ``sample_stats`` dict of a sampler result (empty for raw arrays)."""
    stats = getattr(posterior_or_draws, "sample_stats", None)
    return dict(stats) if stats else {}


def method_label(posterior_or_draws) -> str:
    """How draws were made, for legends and tables.

    ``"exact (rejection)"`` for :func:`widebnn.samplers.rejection` results,
    ``"MCMC (<algorithm>)"`` for :func:`widebnn.samplers.hmc` results (e.g.
    ``"MCMC (ghmc)"``), the ``widebnn_method`` attribute of an ``InferenceData``
    written by :func:`widebnn.diagnostics.to_inference_data`, and ``"samples"``
    for anything else (e.g. a raw array, whose origin is unknown).

    Args:
        posterior_or_draws: a sampler result, an ``InferenceData`` or an array.

    Returns:
        The label, a short string.
    """
    attrs = getattr(posterior_or_draws, "attrs", None)
    if isinstance(attrs, dict) and isinstance(attrs.get("widebnn_method"), str):
        return attrs["widebnn_method"]
    settings = getattr(posterior_or_draws, "settings", None)
    settings = settings if isinstance(settings, dict) else {}
    if hasattr(posterior_or_draws, "num_proposals") or "bound" in settings:
        return "exact (rejection)"
    algorithm = settings.get("algorithm")
    if isinstance(algorithm, str):
        return f"MCMC ({algorithm})"
    return "samples"
