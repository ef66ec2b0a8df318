"""Diagnostics: ArviZ conversion, and ESS/R-hat of random projections.

* :func:`to_inference_data`: a sampler result as ``arviz.InferenceData`` (groups
  posterior, posterior_predictive, log_likelihood, sample_stats, observed_data,
  constant_data), so that ``az.summary``, ``az.plot_trace``, ``az.plot_energy``,
  ``az.ess`` and ``az.rhat`` work on it directly, and, given the training inputs
  (``x_train=``), ``az.loo``, ``az.waic``, ``az.compare`` and ``az.plot_ppc``;
  :func:`save_inference_data` / :func:`load_inference_data` write and read it
  (netCDF; zarr when installed).
* :func:`random_projections`, :func:`projection_ess`, :func:`projection_summary`:
  the mixing metric of wide networks. Per-weight summaries of 10^5 weights are
  useless (and slow); instead fixed Gaussian directions project the predictions and
  the weights to a few scalars whose bulk/tail ESS and rank R-hat are reported.

ArviZ 0.x and 1.x are both supported (``az.from_dict`` changed its signature).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._draws import (
    method_label,
    named_leaves,
    params_of,
    predictions_of,
    sample_stats_of,
)

# BlackJAX / NumPyro field names -> ArviZ sample_stats names.
_STAT_NAMES = {
    "is_divergent": "diverging",
    "num_integration_steps": "n_steps",
    "logdensity": "lp",
    "accept_prob": "acceptance_rate",
    "num_trajectory_expansions": "tree_depth",
    # ArviZ reserves "log_likelihood" for the pointwise group (and warns when a
    # sample_stats variable has that name); the rejection sampler's per-draw total
    # log p(Y | theta) is kept under this name instead.
    "log_likelihood": "log_likelihood_total",
}
_READOUT_DIMS = {"readout_W": ["hidden", "out"], "readout_b": ["out"]}


def _arviz():
    import arviz as az

    return az


def _arviz_major() -> int:
    return int(_arviz().__version__.split(".")[0])


def _from_dict(groups, coords, dims, attrs):
    az = _arviz()
    groups = {name: values for name, values in groups.items() if values}
    if _arviz_major() >= 1:  # pragma: no cover - ArviZ 1.x needs Python >= 3.12
        return az.from_dict(groups, coords=coords, dims=dims, attrs=attrs)
    return az.from_dict(**groups, coords=coords, dims=dims, attrs=attrs)


def _sample_stats(stats, chains, draws):
    out = {}
    for name, value in stats.items():
        value = np.asarray(value)
        if value.shape[:2] != (chains, draws):
            continue  # per-run scalars (e.g. a log evidence) are not per draw
        name = _STAT_NAMES.get(name, name)
        out[name] = value.astype(bool) if name == "diverging" else value
    return out


def _settings_attrs(posterior) -> dict[str, Any]:
    settings = getattr(posterior, "settings", None) or {}
    attrs: dict[str, int | float | str] = {}
    for key, value in settings.items():
        if isinstance(value, bool):
            attrs[f"sampler_{key}"] = int(value)
        elif isinstance(value, int | float | str):
            attrs[f"sampler_{key}"] = value
    return attrs


def _predict_at(model, params, x, chains: int, draws: int) -> np.ndarray:
    """``f(x)`` for every draw: ``(chain, draw, N, d)`` (``lax.map`` in batches)."""
    import jax
    import jax.numpy as jnp

    flat = jax.tree.map(
        lambda leaf: jnp.reshape(jnp.asarray(leaf), (chains * draws, *leaf.shape[2:])),
        params,
    )
    x = jnp.asarray(x)
    f = jax.lax.map(lambda p: model.predict(p, x), flat, batch_size=256)
    return np.asarray(f, dtype=float).reshape(chains, draws, *f.shape[1:])


def _at_training_inputs(posterior, predictions, model, x_train, x_test, y_obs):
    """The network outputs at ``x_train``, ``(chain, draw, N, d)``."""
    if model is None:
        raise ValueError(
            "x_train needs model= (the WideBNN the draws came from) for the noise "
            "scale and the forward pass."
        )
    if y_obs is None:
        raise ValueError(
            "x_train needs the observed targets: observed={'y': y_train} with y_train "
            "of shape (N, d)."
        )
    x_train = np.asarray(x_train)
    chains, draws, _, out_dim = predictions.shape
    if x_train.ndim < 1 or y_obs.shape != (x_train.shape[0], out_dim):
        raise ValueError(
            f"observed y must have shape (N, d) = ({len(x_train)}, {out_dim}) for "
            f"x_train of shape {x_train.shape} and predictions with d = {out_dim}, "
            f"got {y_obs.shape}."
        )
    if x_test is not None and np.array_equal(np.asarray(x_test), x_train):
        return predictions
    params = params_of(posterior)
    if params is None:
        raise ValueError(
            "x_train needs posterior.params (run the sampler with store_params=True) "
            "or predictions made at x_train (then pass x_test=x_train)."
        )
    f_train = _predict_at(model, params, x_train, chains, draws)
    if not np.all(np.isfinite(f_train)):
        raise ValueError("the network outputs at x_train contain NaN or inf.")
    return f_train


def normal_log_likelihood(y, f, noise_std) -> np.ndarray:
    r"""Pointwise :math:`\log\mathcal N(y; f, \sigma^2)`, broadcast over draws.

    Args:
        y: ``(N, d)`` observed targets.
        f: ``(..., N, d)`` network outputs.
        noise_std: :math:`\sigma > 0`.

    Returns:
        ``(..., N, d)`` float64 array.
    """
    z = (np.asarray(y, float) - np.asarray(f, float)) / noise_std
    return -0.5 * z**2 - np.log(noise_std) - 0.5 * np.log(2 * np.pi)


def to_inference_data(
    posterior,
    *,
    model=None,
    x_test=None,
    x_train=None,
    observed=None,
    include_params: bool = True,
    num_projections: int = 0,
    seed: int = 0,
):
    r"""Converts sampler draws to ``arviz.InferenceData``.

    With ``model``, ``x_train`` and ``observed={"y": y_train}`` the result has
    everything ``az.loo``, ``az.waic``, ``az.compare`` and ``az.plot_ppc`` need:
    the pointwise log-likelihood and replicated data at the training inputs, under
    the observed variable's name ``y``.

    Groups:

    * ``posterior``: every parameter leaf named by its pytree path
      (``readout_W[chain, draw, hidden, out]``, ``readout_b[chain, draw, out]``,
      ``body_0_W[chain, draw, ...]``), and ``f[chain, draw, pred, out]``, the
      noise-free network outputs at ``x_test`` (a deterministic function of the
      parameters, as NumPyro's ``deterministic`` sites). With
      ``num_projections > 0`` also ``f_projection`` and ``weight_projection``
      ``[chain, draw, projection]`` (:func:`random_projections`), which is what to
      summarise and trace for wide networks.
    * ``posterior_predictive``: ``f`` (as above); with ``model`` also
      ``y_pred[chain, draw, pred, out] = f + noise`` at ``x_test``; with
      ``x_train`` also ``y[chain, draw, obs, out] = f(x_train) + noise``, the
      replicated training data for ``az.plot_ppc`` (one Gaussian noise draw of
      ``model.noise_std`` per draw and output; numpy ``seed``).
    * ``log_likelihood`` (with ``x_train``): ``y[chain, draw, obs, out]`` =
      :math:`\log\mathcal N(y_{i,k}; f(x_i)_k, \sigma^2)`, one term per observed
      value (with ``d = 1``: one per data point), so that the sum over ``obs`` and
      ``out`` is ``model.log_likelihood``. ArviZ's LOO leaves out one value at a
      time; sum over ``out`` first to leave out whole points when ``d > 1``.
    * ``sample_stats``: the sampler statistics of shape ``(chain, draw)`` in ArviZ
      names (``lp``, ``acceptance_rate``, ``diverging`` (bool), ``energy``,
      ``n_steps``, ``step_size``, ...); BlackJAX names are translated; a rejection
      run's total :math:`\log p(Y\mid\theta)` is ``log_likelihood_total``.
    * ``observed_data``: ``observed`` (``y[obs, out]``).
    * ``constant_data``: ``x_test``, ``x_train`` and, with ``model``, its scalar
      settings (``width``, ``noise_std``, ``readout_W_std``, ``readout_b_std``).

    Attributes of the whole object (``idata.attrs``): ``widebnn_method`` (how the
    draws were made: ``"exact (rejection)"``, ``"MCMC (ghmc)"``, ...),
    ``widebnn_model`` (the model's repr) and ``sampler_<name>`` for the scalar
    sampler settings.

    Args:
        posterior: a sampler result (``.predictions (chain, draw, N_pred, d)``,
            optionally ``.params`` with leaves ``(chain, draw, ...)``,
            ``.sample_stats``, ``.settings``) or an array ``(chain, draw,
            N_pred, d)`` of predictions.
        model: optional :class:`widebnn.WideBNN` the draws came from.
        x_test: optional ``(N_pred, ...)`` inputs of the predictions.
        x_train: optional ``(N, ...)`` training inputs (needs ``model``,
            ``observed["y"]`` and either ``posterior.params`` or ``x_test`` equal
            to ``x_train``): adds the ``log_likelihood`` group and ``y`` to
            ``posterior_predictive``.
        observed: optional dict of observed arrays (``{"y": y_train}``, ``y_train``
            of shape ``(N, d)``) or one array, taken as ``y``.
        include_params: keep the parameter draws (set ``False`` for very wide
            networks: only ``f`` and the projections are kept).
        num_projections: number of random projections to add (0 for none).
        seed: numpy seed of the noise draws and of the projections.

    Returns:
        ``arviz.InferenceData`` (ArviZ 0.x) or an ``xarray.DataTree`` (1.x).

    Raises:
        TypeError, ValueError: for predictions that are not a 4-D finite array,
            ``x_test`` whose length differs from ``N_pred``, parameters whose
            leading axes are not ``(chain, draw)``, or ``x_train`` without
            ``model``, observed ``y`` of shape ``(N, d)``, or parameters.

    Example:
        >>> import numpy as np
        >>> draws = np.random.default_rng(0).normal(size=(2, 50, 3, 1))
        >>> idata = to_inference_data(draws)
        >>> idata.posterior["f"].dims
        ('chain', 'draw', 'pred', 'out')
    """
    predictions = predictions_of(posterior, "posterior")
    chains, draws, n_pred, out_dim = predictions.shape
    variables = {}
    params = params_of(posterior)
    if include_params and params is not None:
        for name, leaf in named_leaves(params).items():
            leaf = np.asarray(leaf)
            if leaf.shape[:2] != (chains, draws):
                raise ValueError(
                    f"posterior.params leaf {name} has shape {leaf.shape}; expected "
                    f"leading axes (chain, draw) = {(chains, draws)}."
                )
            variables[name] = leaf
    variables["f"] = predictions
    if num_projections:
        variables["f_projection"] = random_projections(
            predictions, num_projections, seed
        )
        if params is not None:
            variables["weight_projection"] = random_projections(
                params, num_projections, seed + 1
            )
    if x_test is not None:
        x_test = np.asarray(x_test)
        if x_test.ndim < 1 or x_test.shape[0] != n_pred:
            raise ValueError(
                f"x_test must have N_pred = {n_pred} rows (one per prediction), "
                f"got shape {x_test.shape}."
            )
    if observed is not None and not isinstance(observed, dict):
        observed = {"y": observed}
    observed = {k: np.asarray(v) for k, v in (observed or {}).items()}
    y_obs = observed.get("y")
    rng = np.random.default_rng(seed)
    predictive = {"f": predictions}
    pointwise = {}
    if model is not None:
        noise = rng.standard_normal(predictions.shape)
        predictive["y_pred"] = predictions + model.noise_std * noise
    if x_train is not None:
        f_train = _at_training_inputs(
            posterior, predictions, model, x_train, x_test, y_obs
        )
        noise = rng.standard_normal(f_train.shape)
        predictive["y"] = f_train + model.noise_std * noise
        pointwise["y"] = normal_log_likelihood(y_obs, f_train, model.noise_std)
    constant = {}
    if x_test is not None:
        constant["x_test"] = x_test
    if x_train is not None:
        constant["x_train"] = np.asarray(x_train)
    if model is not None:
        for name in ("width", "noise_std", "readout_W_std", "readout_b_std"):
            constant[name] = np.asarray(getattr(model, name))
    dims = {name: d for name, d in _READOUT_DIMS.items() if name in variables}
    dims |= {"f": ["pred", "out"], "y_pred": ["pred", "out"]}
    for name in ("f_projection", "weight_projection"):
        dims[name] = ["projection"]
    if y_obs is not None:
        if y_obs.ndim == 2 and y_obs.shape[1] == out_dim:
            dims["y"] = ["obs", "out"]
        else:
            dims["y"] = [f"y_obs_dim_{i}" for i in range(y_obs.ndim)]
    for name, x in (("x_test", "pred"), ("x_train", "obs")):
        if name in constant:
            rank = constant[name].ndim
            dims[name] = [x] + [f"x_dim_{i}" for i in range(rank - 1)]
    coords = {"pred": np.arange(n_pred), "out": np.arange(out_dim)}
    if y_obs is not None and y_obs.ndim >= 1:
        coords["obs"] = np.arange(y_obs.shape[0])
    if "readout_W" in variables:
        coords["hidden"] = np.arange(variables["readout_W"].shape[2])
    attrs = {"widebnn_method": method_label(posterior)} | _settings_attrs(posterior)
    if model is not None:
        attrs["widebnn_model"] = repr(model)
    groups = {
        "posterior": variables,
        "posterior_predictive": predictive,
        "log_likelihood": pointwise,
        "sample_stats": _sample_stats(sample_stats_of(posterior), chains, draws),
        "observed_data": observed,
        "constant_data": constant,
    }
    return _from_dict(groups, coords, dims, attrs)


def save_inference_data(idata, path) -> str:
    """Writes an ``InferenceData`` to ``path`` (``.zarr``: zarr, else netCDF).

    Args:
        idata: the result of :func:`to_inference_data`.
        path: output file; a name ending in ``.zarr`` is written with zarr (needs
            ``zarr<3`` with ArviZ 0.x), anything else as netCDF (h5netcdf).

    Returns:
        ``path`` as a string.

    Raises:
        ImportError: for ``.zarr`` when zarr is not installed.
    """
    path = os.fspath(path)
    if path.endswith(".zarr"):
        try:
            import zarr  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "saving to .zarr needs the zarr package (zarr<3 with ArviZ 0.x); "
                "use a .nc path for netCDF instead."
            ) from error
        idata.to_zarr(path)
    else:
        idata.to_netcdf(path)
    return path


def load_inference_data(path):
    """Reads what :func:`save_inference_data` wrote.

    Args:
        path: a ``.nc`` file or a ``.zarr`` directory.

    Returns:
        ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (1.x).
    """
    az = _arviz()
    path = os.fspath(path)
    if path.endswith(".zarr"):
        return az.from_zarr(path)
    return az.from_netcdf(path)


def random_projections(
    draws, num_projections: int = 100, seed: int = 0, *, block_size: int = 8192
) -> np.ndarray:
    r"""Fixed Gaussian projections of draws, scaled by ``1/sqrt(dim)``.

    For draws :math:`\theta_{c,s}\in\mathbb R^P` (all leaves flattened and
    concatenated in tree order) returns :math:`\theta_{c,s}^\top U/\sqrt P` with
    :math:`U_{pk}\sim\mathcal N(0,1)` from ``numpy.random.default_rng(seed)``,
    generated in blocks of ``block_size`` rows so that memory stays
    ``O(chain*draw*block_size)`` for any ``P``. The same ``seed`` gives the same
    directions for draws of the same shapes, so runs are comparable.

    Measured (2-core VM, shared with other jobs, OpenBLAS 1 thread): 4 chains x
    1000 draws x 10^5 float32 weights, 100 projections, takes about 4 s.

    Args:
        draws: an array ``(chain, draw, ...)`` or a pytree of such leaves (e.g.
            ``posterior.params``).
        num_projections: number of directions ``K >= 1``.
        seed: seed of the directions.
        block_size: rows of ``U`` generated at a time.

    Returns:
        ``(chain, draw, num_projections)`` float64 array.

    Raises:
        ValueError: if ``num_projections < 1`` or leaves disagree on
            ``(chain, draw)``.
    """
    import jax

    if isinstance(num_projections, bool) or int(num_projections) < 1:
        raise ValueError(f"num_projections must be >= 1, got {num_projections!r}.")
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(draws)]
    leaves = [leaf for leaf in leaves if leaf.ndim >= 2]
    if not leaves:
        raise ValueError("draws has no array with leading (chain, draw) axes.")
    lead = leaves[0].shape[:2]
    if any(leaf.shape[:2] != lead for leaf in leaves):
        raise ValueError(
            "every leaf of draws must share the leading (chain, draw) axes, got "
            f"{sorted({leaf.shape[:2] for leaf in leaves})}."
        )
    rng = np.random.default_rng(seed)
    total = np.zeros((lead[0] * lead[1], int(num_projections)))
    size = 0
    for leaf in leaves:
        flat = leaf.reshape(lead[0] * lead[1], -1)
        dtype = np.float32 if flat.dtype == np.float32 else np.float64
        for start in range(0, flat.shape[1], block_size):
            block = flat[:, start : start + block_size]
            directions = rng.standard_normal((block.shape[1], int(num_projections)))
            total += block @ directions.astype(dtype)
            size += block.shape[1]
    return (total / np.sqrt(max(size, 1))).reshape(*lead, int(num_projections))


def bulk_ess(draws) -> np.ndarray:
    """Bulk ESS (ArviZ, rank-normalised) of every scalar of ``(chain, draw, ...)``.

    Args:
        draws: ``(chain, draw, ...)`` array.

    Returns:
        ``draws.shape[2:]`` array of effective sample sizes.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(1).normal(size=(2, 500, 3))
        >>> bulk_ess(x).shape
        (3,)
    """
    import xarray as xr

    draws = np.asarray(draws, dtype=float)
    flat = draws.reshape(draws.shape[0], draws.shape[1], -1)
    data = xr.Dataset({"v": (("chain", "draw", "k"), flat)})
    ess = np.asarray(_arviz().ess(data, method="bulk")["v"], dtype=float)
    return ess.reshape(draws.shape[2:])


def _ess_rhat(projected: np.ndarray):
    """Bulk ESS, tail ESS and rank R-hat of each ``(chain, draw, k)`` column."""
    import xarray as xr

    az = _arviz()
    data = xr.Dataset({"v": (("chain", "draw", "k"), np.asarray(projected, float))})
    ess = np.asarray(az.ess(data, method="bulk")["v"], dtype=float)
    tail = np.asarray(az.ess(data, method="tail")["v"], dtype=float)
    rhat = np.asarray(az.rhat(data)["v"], dtype=float)
    return ess, tail, rhat


def projection_ess(draws, num_projections: int = 100, seed: int = 0):
    """Bulk ESS and rank R-hat (ArviZ) of each random projection of draws.

    Args:
        draws: ``(chain, draw, ...)`` array (e.g. predictions) or a pytree of
            such leaves (e.g. ``posterior.params``).
        num_projections: number of random directions.
        seed: seed of the directions.

    Returns:
        ``(ess_bulk, r_hat)``, each ``(num_projections,)``.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(4, 500, 10))
        >>> ess, rhat = projection_ess(x, num_projections=3)
        >>> bool(ess.min() > 1000), bool(rhat.max() < 1.02)
        (True, True)
    """
    ess, _, rhat = _ess_rhat(random_projections(draws, num_projections, seed))
    return ess, rhat


def projection_summary(
    posterior, num_projections: int = 100, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Mixing summary of predictions and weights by random projections.

    Args:
        posterior: a sampler result (``.predictions`` and, if present,
            ``.params``) or a predictions array ``(chain, draw, N, d)``.
        num_projections: number of random directions per group.
        seed: seed of the directions (weights use ``seed + 1``).

    Returns:
        ``{"predictions": stats, "weights": stats}`` (``weights`` only when
        parameters are stored) with ``stats`` = ``{"ess_bulk_median",
        "ess_bulk_min", "ess_tail_min", "r_hat_max", "num_draws"}`` (floats).
    """
    predictions = predictions_of(posterior, "posterior")
    groups = {"predictions": (predictions, seed)}
    params = params_of(posterior)
    if params is not None:
        groups["weights"] = (params, seed + 1)
    summary = {}
    for name, (draws, group_seed) in groups.items():
        ess, tail, rhat = _ess_rhat(
            random_projections(draws, num_projections, group_seed)
        )
        summary[name] = {
            "ess_bulk_median": float(np.median(ess)),
            "ess_bulk_min": float(ess.min()),
            "ess_tail_min": float(tail.min()),
            "r_hat_max": float(rhat.max()),
            "num_draws": float(predictions.shape[0] * predictions.shape[1]),
        }
    return summary
