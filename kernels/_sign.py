"""The sign activation: the arcsine kernel with a zero NTK factor."""

from __future__ import annotations

import math

import jax.numpy as jnp

from ._elementwise import elementwise_layer, safe_arctan2, safe_sqrt
from ._kernel import Layer


def sine_part(c, q1, q2):
    r"""The sine part :math:`\sqrt{q_1q_2 - c^2}`, as :math:`\sqrt{(r-c)(r+c)}`.

    With :math:`r = \sqrt{q_1q_2}`, the factored form is exactly 0 on the diagonal
    (``c = q1 = q2``, where ``sqrt(q * q) == q`` in floating point) even when XLA
    fuses ``q1 * q2 - c**2`` into a fused multiply-add under ``jit``, which leaves a
    residue of ~1e-16 q^2 and so an angle of ~1e-8 instead of 0. Both square roots
    have finite derivatives at 0.
    """
    root = safe_sqrt(q1 * q2)
    return safe_sqrt((root - c) * (root + c))


def sign_nngp(c, q1, q2):
    r"""Dual of :math:`\operatorname{sign}(x)`: :math:`1 - 2\theta/\pi
    = \frac2\pi\arcsin\rho`, :math:`\theta = \arctan2(\sqrt{q_1q_2-c^2}, c)`.

    Where :math:`q_1q_2 = 0` one pre-activation is exactly 0, whose sign is 0, so
    the value there is 0 (as for the finite network).
    """
    prod = q1 * q2
    theta = safe_arctan2(sine_part(c, q1, q2), c)
    return jnp.where(prod > 0, 1 - 2 * theta / math.pi, 0.0)


def sign_d_nngp(c, q1, q2):
    """Zero, as in Neural Tangents (the finite network's gradient through sign is 0)."""
    del q1, q2
    return jnp.zeros_like(c)


def Sign() -> Layer:
    r"""The activation :math:`\operatorname{sign}(x)`.

    Dual (arcsine kernel): :math:`\mathcal V = 1 - \frac{2\theta}{\pi}
    = \frac{2}{\pi}\arcsin\frac{k}{\sqrt{q_1q_2}}`, computed with ``arctan2`` and a
    safe square root so that values and gradients are finite on the diagonal
    (:math:`\mathcal V = 1`). The NTK factor is 0, following Neural Tangents and the
    finite network (``sign`` has zero derivative almost everywhere), although
    :math:`\partial_k\mathcal V = \frac{2}{\pi\sqrt{q_1q_2-k^2}}` is not.

    Returns:
        A :class:`Layer` without parameters.
    """
    # Random features follow the kernel: the NTK features through Sign are 0.
    return elementwise_layer(
        jnp.sign, sign_nngp, sign_d_nngp, "Sign", derivative=jnp.zeros_like
    )
