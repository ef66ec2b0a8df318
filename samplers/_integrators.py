r"""The Gaussian-split integrator: the prior's flow exactly, the rest by kicks.

Every position the samplers move has a Gaussian prior,
:math:`\log p(q) = -\tfrac12\sum_i \omega_i^2 q_i^2 + r(q)`, and in repriorised
coordinates of a wide network the rest :math:`r` (the marginal likelihood of the
features, the log-determinant) is nearly flat: the posterior tends to the prior as
the width grows. Leapfrog integrates the stiff, known Gaussian part with the same
small step as everything else, and its step size must shrink with the number of
parameters. This integrator (Strang splitting; Beskos, Pinski, Sanz-Serna & Stuart
2011, "Hybrid Monte Carlo on Hilbert spaces"; Shahbaba et al. 2014, "Split HMC")
instead takes one step as

1. half kick with :math:`\nabla r(q) = \nabla\log p(q) + \omega^2 q`;
2. the exact flow of :math:`H_0 = \tfrac12 p^\top M^{-1}p + \tfrac12\sum\omega_i^2q_i^2`
   for time :math:`\varepsilon` (a rotation of each :math:`(q_i, p_i)` pair by the
   angle :math:`\Omega_i\varepsilon`, :math:`\Omega_i = \omega_i\sqrt{M^{-1}_{ii}}`);
3. half kick at the new position.

It is symmetric, reversible and volume-preserving, so HMC, GHMC and NUTS stay exact
with it; the energy error comes from :math:`r` alone and does not grow with the
number of prior-dominated directions. Cost per step: one gradient, as leapfrog.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from blackjax.mcmc.integrators import IntegratorState


def gaussian_split(prior_precision):
    """A BlackJAX integrator factory for the Gaussian-split step.

    Args:
        prior_precision: pytree of the position's structure with the prior
            precisions :math:`\\omega_i^2 > 0` (arrays of the leaves' shapes, or
            scalars per leaf).

    Returns:
        ``factory(logdensity_fn, kinetic_energy_fn) -> one_step(state, step_size)``,
        the signature of ``blackjax.mcmc.integrators.velocity_verlet``. The metric
        must be diagonal (its inverse mass is read off the kinetic energy's
        gradient at a vector of ones).
    """

    def factory(logdensity_fn, kinetic_energy_fn):
        value_and_grad = jax.value_and_grad(logdensity_fn)
        velocity = jax.grad(kinetic_energy_fn)

        def rest_gradient(position, logdensity_grad):
            return jax.tree.map(
                lambda g, q, w2: g + w2 * q, logdensity_grad, position, prior_precision
            )

        def kick(momentum, gradient, step):
            return jax.tree.map(lambda p, g: p + step * g, momentum, gradient)

        def one_step(state: IntegratorState, step_size) -> IntegratorState:
            position, momentum, _, logdensity_grad = state
            inverse_mass = velocity(jax.tree.map(jnp.ones_like, momentum))
            half = 0.5 * step_size
            momentum = kick(momentum, rest_gradient(position, logdensity_grad), half)

            def rotate(q, p, w2, m_inv):
                omega = jnp.sqrt(w2 * m_inv)
                cos, sin = jnp.cos(omega * step_size), jnp.sin(omega * step_size)
                new_q = cos * q + (m_inv / omega) * sin * p
                new_p = cos * p - (omega / m_inv) * sin * q
                return new_q, new_p

            rotated = jax.tree.map(
                rotate, position, momentum, prior_precision, inverse_mass
            )
            position = jax.tree.map(lambda _, qp: qp[0], momentum, rotated)
            momentum = jax.tree.map(lambda _, qp: qp[1], momentum, rotated)
            logdensity, logdensity_grad = value_and_grad(position)
            momentum = kick(momentum, rest_gradient(position, logdensity_grad), half)
            return IntegratorState(position, momentum, logdensity, logdensity_grad)

        return one_step

    return factory


def prior_precision(model, params, reparam: str, exact_readout: bool):
    """Prior precisions of the sampler's coordinates, in the position's structure.

    Args:
        model: a model with ``prior_std(params)`` (e.g. :class:`widebnn.WideBNN`).
        params: model parameters (a template: only shapes and dtypes are used).
        reparam: ``"repriorised"`` or ``"none"``.
        exact_readout: whether the position is the hidden weights alone.

    Returns:
        ``params``-shaped precisions for ``"none"``; ``(hidden, phi_out)``-shaped
        for ``"repriorised"`` (:math:`\\Phi_{out}` has precision 1), the hidden
        part alone with ``exact_readout``.
    """
    full = jax.tree.map(
        lambda leaf, std: jnp.full(leaf.shape, 1.0 / std**2, leaf.dtype),
        params,
        model.prior_std(params),
    )
    if reparam == "none":
        return full
    theta_out = model.split_readout(params)[1]
    # split_readout passes the hidden leaves through: apply it to the precisions.
    hidden_precision = model.split_readout(full)[0]
    if exact_readout:
        return hidden_precision
    return hidden_precision, jnp.ones(theta_out.shape, theta_out.dtype)
