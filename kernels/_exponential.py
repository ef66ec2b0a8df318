"""Exponential activations: ``Exp``, ``Gaussian`` and the kernel-only ``ExpNormalized``.

For a 2-D centred Gaussian ``(u, v)`` with variances ``q1, q2`` and covariance ``c``
the duals are Gaussian moment-generating functions: ``E[exp(b(u + v))]`` and
``E[exp(b(u^2 + v^2))] = det(I - 2 b Sigma)^{-1/2}``.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._checks import check_finite
from ._elementwise import elementwise_layer
from ._kernel import Layer


def exp_nngp(c, q1, q2, a, b):
    r"""Dual of :math:`a e^{bx}`: :math:`a^2\exp\big(b^2(q_1+q_2+2c)/2\big)`."""
    return a**2 * jnp.exp(b**2 * (q1 + q2 + 2 * c) / 2)


def exp_d_nngp(c, q1, q2, a, b):
    r""":math:`a^2b^2\exp\big(b^2(q_1+q_2+2c)/2\big)`."""
    return a**2 * b**2 * jnp.exp(b**2 * (q1 + q2 + 2 * c) / 2)


def Exp(a: float = 1.0, b: float = 1.0) -> Layer:
    r"""The activation :math:`a e^{bx}`.

    Dual: :math:`\mathcal V = a^2 e^{b^2(q_1+q_2+2k)/2}`,
    :math:`\dot{\mathcal V} = b^2\mathcal V`. The kernel grows like
    :math:`e^{2b^2q}`, so keep pre-activation variances moderate.

    Args:
        a: output scale.
        b: input scale.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        ValueError: if an argument is not finite.
    """
    check_finite(a, "a")
    check_finite(b, "b")

    def fn(x):
        return a * jnp.exp(b * x)

    def nngp_fn(k, q1, q2):
        return exp_nngp(k, q1, q2, a, b)

    def d_nngp_fn(k, q1, q2):
        return exp_d_nngp(k, q1, q2, a, b)

    return elementwise_layer(fn, nngp_fn, d_nngp_fn, "Exp")


def _gaussian_det(c, q1, q2, b):
    return (1 - 2 * b * q1) * (1 - 2 * b * q2) - 4 * b**2 * c**2


def gaussian_nngp(c, q1, q2, a, b):
    r"""Dual of :math:`a e^{bx^2}`: :math:`a^2 D^{-1/2}`,
    :math:`D = (1-2bq_1)(1-2bq_2) - 4b^2c^2`."""
    return a**2 / jnp.sqrt(_gaussian_det(c, q1, q2, b))


def gaussian_d_nngp(c, q1, q2, a, b):
    r""":math:`4a^2b^2c\,D^{-3/2}`."""
    return 4 * a**2 * b**2 * c / _gaussian_det(c, q1, q2, b) ** 1.5


def Gaussian(a: float = 1.0, b: float = -1.0) -> Layer:
    r"""The activation :math:`a e^{bx^2}` (a Gaussian bump for ``b < 0``).

    Dual, with :math:`D = \det(I - 2b\Sigma) = (1-2bq_1)(1-2bq_2) - 4b^2k^2`:
    :math:`\mathcal V = a^2 D^{-1/2}` and
    :math:`\dot{\mathcal V} = 4a^2b^2k\,D^{-3/2}`. For ``b <= 0`` we have
    ``D >= 1`` and everything is smooth; for ``b > 0`` the moments exist only while
    ``2 b q < 1`` (otherwise the result is NaN).

    Args:
        a: output scale.
        b: coefficient of :math:`x^2` in the exponent.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        ValueError: if an argument is not finite.
    """
    check_finite(a, "a")
    check_finite(b, "b")

    def fn(x):
        return a * jnp.exp(b * x**2)

    def nngp_fn(k, q1, q2):
        return gaussian_nngp(k, q1, q2, a, b)

    def d_nngp_fn(k, q1, q2):
        return gaussian_d_nngp(k, q1, q2, a, b)

    return elementwise_layer(fn, nngp_fn, d_nngp_fn, "Gaussian")


def _normalized(c, q1, q2, gamma, shift, do_clip):
    """``(sqrt(q1 q2), exp(gamma (rho + shift)), q1 q2 > 0)``, safe at ``q = 0``."""
    prod = q1 * q2
    positive = prod > 0
    root = jnp.sqrt(jnp.where(positive, prod, 1.0))
    rho = jnp.where(positive, c, 0.0) / root
    if do_clip:
        rho = jnp.clip(rho, -1.0, 1.0)
    return root, jnp.exp(gamma * (rho + shift)), positive


def exp_normalized_nngp(c, q1, q2, gamma, shift, do_clip=False):
    r""":math:`\sqrt{q_1q_2}\,e^{\gamma(\rho + \mathrm{shift})}`,
    :math:`\rho = c/\sqrt{q_1q_2}`; 0 where :math:`q_1q_2 = 0`."""
    root, kernel, positive = _normalized(c, q1, q2, gamma, shift, do_clip)
    return jnp.where(positive, root * kernel, 0.0)


def exp_normalized_d_nngp(c, q1, q2, gamma, shift, do_clip=False):
    r""":math:`\partial_c` of the NNGP: :math:`\gamma e^{\gamma(\rho+\mathrm{shift})}`;
    0 where :math:`q_1q_2 = 0`."""
    _, kernel, positive = _normalized(c, q1, q2, gamma, shift, do_clip)
    return jnp.where(positive, gamma * kernel, 0.0)


def ExpNormalized(
    gamma: float = 1.0, shift: float = -1.0, do_clip: bool = False
) -> Layer:
    r"""The "Gaussian normalised" kernel of Shankar et al. (kernel only, no ``apply``).

    With :math:`\rho = k/\sqrt{q_1q_2}` the cosine similarity of the
    pre-activations:
    :math:`\mathcal V = \sqrt{q_1q_2}\,e^{\gamma(\rho + \mathrm{shift})}` and, as in
    Neural Tangents, the NTK factor is its derivative in ``k``:
    :math:`\dot{\mathcal V} = \gamma e^{\gamma(\rho+\mathrm{shift})}`. On the diagonal
    with the default ``shift = -1``, :math:`\mathcal V = q`, so the layer is an
    exponentiated cosine kernel that keeps the norms. Where :math:`q_1q_2 = 0` both
    are 0 (the limit of :math:`\mathcal V`), with finite gradients.

    Args:
        gamma: scale of the exponent.
        shift: added to :math:`\rho` in the exponent.
        do_clip: static; clip :math:`\rho` to ``[-1, 1]`` (guards against rounding).

    Returns:
        A :class:`Layer` without parameters whose ``apply`` raises
        ``NotImplementedError`` (no finite-width network has exactly this kernel).

    Raises:
        ValueError: if ``gamma`` or ``shift`` is not finite.
        TypeError: if ``do_clip`` is not a bool.

    References:
        Shankar et al. (2020), "Neural kernels without tangents", p. 6.
    """
    check_finite(gamma, "gamma")
    check_finite(shift, "shift")
    if not isinstance(do_clip, bool):
        raise TypeError(f"do_clip must be a bool, got {do_clip!r}.")

    def nngp_fn(k, q1, q2):
        return exp_normalized_nngp(k, q1, q2, gamma, shift, do_clip)

    def d_nngp_fn(k, q1, q2):
        return exp_normalized_d_nngp(k, q1, q2, gamma, shift, do_clip)

    return elementwise_layer(None, nngp_fn, d_nngp_fn, "ExpNormalized")
