"""The result of a sampler run."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax


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
        settings: the sampler settings (a flat dict of Python scalars/strings), plus
            ``inverse_mass_matrix`` ``(chain, P)`` as tuned and ``chunk_seconds``
            (wall time of each chunk; the first includes compilation).
    """

    params: Any
    predictions: jax.Array
    sample_stats: dict[str, jax.Array]
    num_grad_evals: int
    num_warmup_grad_evals: int
    settings: dict[str, Any]

    @property
    def num_chains(self) -> int:
        """Number of chains."""
        return int(self.predictions.shape[0])

    @property
    def num_draws(self) -> int:
        """Number of kept draws per chain."""
        return int(self.predictions.shape[1])
