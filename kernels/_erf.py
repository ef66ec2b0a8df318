"""The erf activation (arcsine kernel) and the sigmoid approximated by it."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._checks import check_finite
from ._elementwise import elementwise_layer, rational_arctan2
from ._kernel import Layer


def erf_nngp(c, q1, q2, a, b, shift):
    r""":math:`a^2\frac{2}{\pi}\arcsin\frac{2b^2c}{\sqrt{(1+2b^2q_1)(1+2b^2q_2)}} +
    \mathrm{shift}^2`."""
    # arcsin(u / sqrt(AB)) = arctan2(u, sqrt(AB - u^2)) with u = 2 b^2 c, and
    # AB - u^2 = 1 + 2 b^2 (q1 + q2) + 4 b^4 (q1 q2 - c^2) >= 1: no cancellation near
    # |u| = sqrt(AB), and a vectorised arctan2 (jnp.arcsin is evaluated elementwise
    # through libm on CPU, ~4x slower).
    u = 2 * b**2 * c
    rest = 1 + 2 * b**2 * (q1 + q2) + 4 * b**4 * (q1 * q2 - c**2)
    return a**2 * (2 / jnp.pi) * rational_arctan2(u, jnp.sqrt(rest)) + shift**2


def erf_d_nngp(c, q1, q2, a, b):
    r""":math:`\frac{4a^2b^2}{\pi}\big[(1+2b^2q_1)(1+2b^2q_2) - 4b^4c^2\big]^{-1/2}`."""
    det = (1 + 2 * b**2 * q1) * (1 + 2 * b**2 * q2) - 4 * b**4 * c**2
    return 4 * a**2 * b**2 / jnp.pi / jnp.sqrt(det)


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    r"""The activation :math:`a\,\mathrm{erf}(b x) + c`.

    Dual (arcsine kernel):
    :math:`\mathcal V = a^2\frac{2}{\pi}
    \arcsin\frac{2b^2k}{\sqrt{(1+2b^2q_1)(1+2b^2q_2)}} + c^2` for covariance ``k``;
    the argument of arcsin stays in ``(-1, 1)`` for any finite variances, so the NTK
    factor :math:`\dot{\mathcal V} = \frac{4a^2b^2}{\pi}
    \big[(1+2b^2q_1)(1+2b^2q_2)-4b^4k^2\big]^{-1/2}` is finite.

    Args:
        a: output scale.
        b: input scale.
        c: output shift.

    Returns:
        A :class:`Layer` without parameters.

    References:
        Williams (1997), "Computing with infinite networks".
    """
    check_finite(a, "a")
    check_finite(b, "b")
    check_finite(c, "c")

    def fn(x):
        return a * jax.scipy.special.erf(b * x) + c

    def nngp_fn(k, q1, q2):
        return erf_nngp(k, q1, q2, a, b, c)

    def d_nngp_fn(k, q1, q2):
        return erf_d_nngp(k, q1, q2, a, b)

    return elementwise_layer(fn, nngp_fn, d_nngp_fn, "Erf")


def Sigmoid_like() -> Layer:
    r"""A sigmoid-shaped ``Erf``: :math:`0.5\,\mathrm{erf}(x/2.4020563531719796)+0.5`.

    The scale makes it close to the logistic sigmoid :math:`1/(1+e^{-x})`; its kernel
    is exact for this erf, not for the logistic function.
    """
    return Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)._replace(name="Sigmoid_like")
