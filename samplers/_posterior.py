"""The result of a sampler run."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


@partial(jax.jit, static_argnums=(0, 3))
def _predict_draws(model, params, x, batch_size):
    """``(draws, n_new, out_dim)`` outputs of ``draws`` parameter sets."""
    return jax.lax.map(lambda p: model.predict(p, x), params, batch_size=batch_size)


class Posterior(NamedTuple):
    """Posterior draws and sampler statistics; arrays lead with ``(chain, draw)``.

    Attributes:
        params: the model parameters :math:`\\theta` (for repriorised runs,
            :math:`\\theta = \\mathcal T(\\phi)`), a pytree with leaves
            ``(chain, draw, ...)``, or ``None`` when not stored.
        predictions: ``(chain, draw, N_pred, out_dim)`` network outputs
            :math:`f_\\theta(x_{pred})` (noise-free posterior predictive draws).
        sample_stats: dict of ``(chain, draw)`` arrays with ArviZ names:
            ``lp`` (log density of the sampler's coordinates, log-det included),
            ``acceptance_rate`` (mean over the ``thin`` transitions of a draw),
            ``diverging`` (any divergence among them), ``energy`` (Hamiltonian of the
            last proposal), ``n_steps`` (gradient evaluations, summed over the
            ``thin`` transitions), ``nonfinite`` (rejected non-finite proposals:
            failed factorisations, overflow) and ``step_size``.
        num_grad_evals: gradient evaluations of the sampling phase, all chains.
        num_warmup_grad_evals: gradient evaluations of warm-up and initialisation.
        settings: the sampler settings (a flat dict of Python scalars/strings, with
            the defaults resolved: e.g. ``exact_readout`` and ``integrator``), plus
            ``inverse_mass_matrix`` ``(chain, P)`` as tuned and ``chunk_seconds``
            (wall time of each chunk; the first includes compilation).
        model: the sampled model (used by :meth:`predict`), or ``None``.
    """

    params: Any
    predictions: jax.Array
    sample_stats: dict[str, jax.Array]
    num_grad_evals: int
    num_warmup_grad_evals: int
    settings: dict[str, Any]
    model: Any = None

    @property
    def num_chains(self) -> int:
        """Number of chains."""
        return int(self.predictions.shape[0])

    @property
    def num_draws(self) -> int:
        """Number of kept draws per chain."""
        return int(self.predictions.shape[1])

    def predict(self, x_new, *, batch_size: int = 64) -> np.ndarray:
        """Outputs of every finite-width draw at new inputs.

        :math:`f_{\\theta_{c,s}}(x_{new})` for every chain ``c`` and draw ``s``:
        noise-free posterior predictive draws, as ``predictions`` holds for
        ``x_pred``.

        Args:
            x_new: ``(n_new, *S, C)`` inputs, shaped like the training inputs.
            batch_size: static; draws evaluated at once (memory
                ``O(batch_size * n_new * width)``).

        Returns:
            ``(chain, draw, n_new, out_dim)`` array.

        Raises:
            ValueError: if the run did not store its parameters
                (``store_params=False``) or has no model, or ``x_new`` is not at
                least 2-D.

        """
        if self.params is None:
            raise ValueError(
                "predict needs the parameter draws: run the sampler with "
                "store_params=True."
            )
        if self.model is None:
            raise ValueError("predict needs the model: this Posterior has none.")
        x_new = jnp.asarray(x_new)
        if x_new.ndim < 2:
            raise ValueError(
                f"x_new must have shape (n_new, *S, C), got shape {x_new.shape}."
            )
        chains, draws = self.num_chains, self.num_draws
        flat = jax.tree.map(
            lambda v: jnp.reshape(v, (chains * draws, *np.shape(v)[2:])), self.params
        )
        out = _predict_draws(self.model, flat, x_new, int(batch_size))
        return np.asarray(out).reshape(chains, draws, *out.shape[1:])
