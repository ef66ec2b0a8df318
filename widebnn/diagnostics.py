"""Diagnostics: ArviZ conversion and ESS of random projections of predictions."""

from __future__ import annotations

import numpy as np


def _arviz_major() -> int:
    import arviz as az

    return int(az.__version__.split(".")[0])


def to_inference_data(posterior, *, observed=None):
    """Converts a :class:`widebnn.samplers.Posterior` to ``arviz.InferenceData``.

    Groups: ``posterior`` (the parameter leaves, named by their pytree path, and
    ``f`` = predictions), ``sample_stats`` (ArviZ names: ``lp``,
    ``acceptance_rate``, ``diverging``, ``energy``, ``n_steps``, ``step_size``,
    ``nonfinite``) and, when given, ``observed_data``.

    Args:
        posterior: a ``Posterior`` (arrays with leading ``(chain, draw)`` axes).
        observed: optional dict of observed arrays, e.g. ``{"y": y}``.

    Returns:
        ``arviz.InferenceData`` (ArviZ 0.x) or the ArviZ 1.x ``DataTree``.
    """
    import arviz as az
    import jax

    variables = {"f": np.asarray(posterior.predictions)}
    if posterior.params is not None:
        for path, leaf in jax.tree_util.tree_flatten_with_path(posterior.params)[0]:
            name = "theta" + "".join(
                f"_{getattr(p, 'key', getattr(p, 'idx', p))}" for p in path
            )
            variables[name] = np.asarray(leaf)
    groups = {
        "posterior": variables,
        "sample_stats": {k: np.asarray(v) for k, v in posterior.sample_stats.items()},
    }
    if observed:
        groups["observed_data"] = {k: np.asarray(v) for k, v in observed.items()}
    if _arviz_major() >= 1:
        return az.from_dict(groups)
    return az.from_dict(**groups)


def random_projections(predictions, num_projections: int = 100, seed: int = 0):
    """Fixed Gaussian projections of predictions, scaled by ``1/sqrt(dim)``.

    Args:
        predictions: ``(chain, draw, ...)`` array.
        num_projections: number of directions.
        seed: seed of the directions (numpy), fixed so runs are comparable.

    Returns:
        ``(chain, draw, num_projections)`` array.
    """
    values = np.asarray(predictions)
    flat = values.reshape(values.shape[0], values.shape[1], -1)
    directions = np.random.default_rng(seed).standard_normal(
        (flat.shape[-1], num_projections)
    )
    return flat @ directions / np.sqrt(flat.shape[-1])


def projection_ess(predictions, num_projections: int = 100, seed: int = 0):
    """Bulk ESS and rank R-hat (ArviZ) of each random projection of predictions.

    Args:
        predictions: ``(chain, draw, ...)`` array.
        num_projections: number of random directions.
        seed: seed of the directions.

    Returns:
        ``(ess_bulk, r_hat)``, each ``(num_projections,)``.
    """
    import arviz as az

    projected = random_projections(predictions, num_projections, seed)
    ess = np.array(
        [az.ess(projected[..., i], method="bulk") for i in range(num_projections)]
    )
    rhat = np.array([az.rhat(projected[..., i]) for i in range(num_projections)])
    return ess.astype(float), rhat.astype(float)
