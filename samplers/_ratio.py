r"""Metropolis log-ratio from per-element differences.

:math:`\log p(\phi'\mid D) - \log p(\phi\mid D)` is a difference of two sums over
all parameters and data. Summing first and subtracting after loses the digits the
acceptance decision needs once the totals are large (float32, millions of
parameters); this module subtracts element by element and sums the differences:

.. math::
    \tfrac12\sum_p \frac{(\theta_p-\theta'_p)(\theta_p+\theta'_p)}{s_p^2}
    + \frac{1}{2\sigma^2}\sum_{ij}(F'-F)_{ij}(2Y-F-F')_{ij}
    + \log|\det J(\phi')| - \log|\det J(\phi)|,

with :math:`\theta=\mathcal T(\phi)`, :math:`F` the network outputs on the training
inputs and :math:`s_p` the prior standard deviation of parameter :math:`p`
(``model.prior_std``). It equals the difference of :func:`log_density_fn` values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._reprior import REPARAMS, check_data, repriorise, resolve_kernel_reg


def _params_and_log_det(model, position, x, y, reparam, kernel_reg, path):
    if reparam == "none":
        return position, jnp.zeros((), dtype=y.dtype)
    return repriorise(model, position, x, y, kernel_reg=kernel_reg, path=path)


def log_density_ratio(
    model, position, proposal, x, y, *, reparam="repriorised", kernel_reg=None,
    path="auto",
):  # fmt: skip
    r"""``log p(proposal | D) - log p(position | D)``, accumulated per element.

    Args:
        model: a model with the sampler protocol and ``prior_std(params)`` (the
            prior standard deviation of every leaf, e.g. :class:`widebnn.WideBNN`).
        position: the current sampler position: ``(hidden_params, phi_out)`` for
            ``reparam="repriorised"``, model parameters for ``"none"``.
        proposal: the proposed position, same structure.
        x: ``(N, *S, C)`` training inputs.
        y: ``(N, d)`` training targets.
        reparam: static; ``"repriorised"`` or ``"none"``.
        kernel_reg: :math:`k` of the repriorisation (default ``noise_std**2``).
        path: static; ``"auto"``, ``"primal"`` or ``"dual"``.

    Returns:
        A scalar, equal up to rounding to
        ``log_density_fn(model, reparam=...)(proposal, x, y) - (... position ...)``
        and more accurate than that difference in low precision.

    Raises:
        ValueError: for an unknown ``reparam`` or bad data.
    """
    if reparam not in REPARAMS:
        raise ValueError(f"reparam must be one of {REPARAMS}, got {reparam!r}.")
    x, y = check_data(model, x, y)
    k = resolve_kernel_reg(model, kernel_reg) if reparam == "repriorised" else None
    theta, log_det = _params_and_log_det(model, position, x, y, reparam, k, path)
    theta_new, log_det_new = _params_and_log_det(
        model, proposal, x, y, reparam, k, path
    )

    def prior_term(old, new, std):
        return 0.5 * jnp.sum((old - new) * (old + new)) / std**2

    prior = jax.tree.map(prior_term, theta, theta_new, model.prior_std(theta))
    f_old, f_new = model.predict(theta, x), model.predict(theta_new, x)
    likelihood = jnp.sum((f_new - f_old) * (2 * y - f_old - f_new)) / (
        2 * model.noise_std**2
    )
    return (
        sum(jax.tree_util.tree_leaves(prior), 0.0)
        + likelihood
        + (log_det_new - log_det)
    )
