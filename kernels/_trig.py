"""Oscillating activations: sine, cosine, the random-Fourier-feature ``Rbf``, Gabor.

Their duals follow from the characteristic function of a 2-D centred Gaussian
``(u, v)`` with variances ``q1, q2`` and covariance ``c``:
:math:`\\mathbb E[\\cos(s u + t v)] = e^{-(s^2 q_1 + 2 s t c + t^2 q_2)/2}`.
Every exponent is ``<= 0`` because ``|c| <= sqrt(q1 q2)``, so the kernels are finite
with finite gradients everywhere, including ``c = q1 = q2`` and ``q = 0``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from ._checks import check_finite, check_std
from ._elementwise import elementwise_layer
from ._kernel import Layer


def sin_nngp(c, q1, q2, a, b, shift):
    r"""Dual of :math:`a\sin(bx + \mathrm{shift})`.

    :math:`\frac{a^2}{2}\big[e^{-b^2(q_1+q_2)/2 + b^2c}
    - \cos(2\,\mathrm{shift})\,e^{-b^2(q_1+q_2)/2 - b^2c}\big]`.
    """
    mean = -(b**2) * (q1 + q2) / 2
    return (
        a**2
        / 2
        * (jnp.exp(mean + b**2 * c) - jnp.cos(2 * shift) * jnp.exp(mean - b**2 * c))
    )


def sin_d_nngp(c, q1, q2, a, b, shift):
    r""":math:`\mathbb E[\phi'\phi'] = \frac{a^2b^2}{2}\big[e^{-b^2(q_1+q_2)/2 + b^2c}
    + \cos(2\,\mathrm{shift})\,e^{-b^2(q_1+q_2)/2 - b^2c}\big]`."""
    mean = -(b**2) * (q1 + q2) / 2
    return (
        a**2
        * b**2
        / 2
        * (jnp.exp(mean + b**2 * c) + jnp.cos(2 * shift) * jnp.exp(mean - b**2 * c))
    )


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    r"""The activation :math:`a\sin(bx + c)`.

    Dual, for covariance ``k`` and variances ``q1, q2``:
    :math:`\mathcal V = \frac{a^2}{2}\big[e^{-b^2(q_1+q_2-2k)/2}
    - \cos(2c)\,e^{-b^2(q_1+q_2+2k)/2}\big]`, and
    :math:`\dot{\mathcal V} = \frac{a^2b^2}{2}\big[e^{-b^2(q_1+q_2-2k)/2}
    + \cos(2c)\,e^{-b^2(q_1+q_2+2k)/2}\big]`.

    Args:
        a: output scale.
        b: input scale (frequency).
        c: phase.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        ValueError: if an argument is not finite.

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import kernels
        >>> net = kernels.serial(kernels.Dense(8), kernels.Sin())
        >>> round(float(net.kernel(jnp.zeros((1, 2)), get="nngp")[0, 0]), 6)
        0.0
    """
    check_finite(a, "a")
    check_finite(b, "b")
    check_finite(c, "c")

    def fn(x):
        return a * jnp.sin(b * x + c)

    def nngp_fn(k, q1, q2):
        return sin_nngp(k, q1, q2, a, b, c)

    def d_nngp_fn(k, q1, q2):
        return sin_d_nngp(k, q1, q2, a, b, c)

    return elementwise_layer(fn, nngp_fn, d_nngp_fn, "Sin")


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    r"""The activation :math:`a\cos(bx + c)`, i.e. ``Sin(a, b, c + pi/2)``.

    Dual: :math:`\frac{a^2}{2}\big[e^{-b^2(q_1+q_2-2k)/2}
    + \cos(2c)\,e^{-b^2(q_1+q_2+2k)/2}\big]` (see :func:`Sin`).

    Args:
        a: output scale.
        b: input scale (frequency).
        c: phase.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        ValueError: if an argument is not finite.
    """
    check_finite(c, "c")
    return Sin(a, b, c + math.pi / 2)._replace(name="Cos")


def rbf_nngp(c, q1, q2, gamma):
    r""":math:`e^{-\gamma(q_1+q_2-2c)}`."""
    return jnp.exp(-gamma * (q1 + q2 - 2 * c))


def rbf_d_nngp(c, q1, q2, gamma):
    r""":math:`2\gamma\,e^{-\gamma(q_1+q_2-2c)}`."""
    return 2 * gamma * jnp.exp(-gamma * (q1 + q2 - 2 * c))


def Rbf(gamma: float = 1.0) -> Layer:
    r"""Random features of the RBF kernel: :math:`\sqrt2\sin(\sqrt{2\gamma}x+\pi/4)`.

    ``Sin(sqrt(2), sqrt(2 gamma), pi/4)``, whose dual is the Gaussian (RBF) kernel of
    the pre-activations: :math:`\mathcal V = e^{-\gamma(q_1+q_2-2k)}
    = e^{-\gamma\,\mathbb E(u-v)^2}`, :math:`\dot{\mathcal V} = 2\gamma\mathcal V`.
    After a ``Dense`` layer with ``W_std**2 = 1, b_std = 0`` on ``d`` input channels
    this is :math:`\exp(-\gamma\|x-x'\|^2/d)`.

    Args:
        gamma: inverse length scale :math:`\gamma \ge 0`.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        ValueError: if ``gamma`` is negative or not finite.
    """
    check_std(gamma, "gamma")

    def fn(x):
        return math.sqrt(2) * jnp.sin((2 * gamma) ** 0.5 * x + math.pi / 4)

    def nngp_fn(k, q1, q2):
        return rbf_nngp(k, q1, q2, gamma)

    def d_nngp_fn(k, q1, q2):
        return rbf_d_nngp(k, q1, q2, gamma)

    return elementwise_layer(fn, nngp_fn, d_nngp_fn, "Rbf")


def _gabor_parts(c, q1, q2):
    """``D = det(I + 2 Sigma)``, ``1 + q1 + q2`` and ``exp(-E)`` of the Gabor dual."""
    det = (1 + 2 * q1) * (1 + 2 * q2) - 4 * c**2
    total = 1 + q1 + q2
    # E = (q1 + q2 + 4 (q1 q2 - c^2)) / (2 D) = 1/2 - (1 + q1 + q2) / (2 D)
    decay = jnp.exp(total / (2 * det) - 0.5)
    return det, total, decay


def gabor_nngp(c, q1, q2):
    r"""Dual of :math:`e^{-x^2}\sin x`.

    With :math:`D = (1+2q_1)(1+2q_2) - 4c^2 \ge 1`:
    :math:`D^{-1/2}\exp\!\big(\frac{1+q_1+q_2}{2D} - \frac12\big)\sinh(c/D)`.
    """
    det, _, decay = _gabor_parts(c, q1, q2)
    return decay * jnp.sinh(c / det) / jnp.sqrt(det)


def gabor_d_nngp(c, q1, q2):
    r""":math:`\partial_c` of :func:`gabor_nngp`:
    :math:`D^{-5/2}e^{-E}\big[4c(D+1+q_1+q_2)\sinh(c/D) + (D+8c^2)\cosh(c/D)\big]`."""
    det, total, decay = _gabor_parts(c, q1, q2)
    ratio = c / det
    bracket = 4 * c * (det + total) * jnp.sinh(ratio) + (det + 8 * c**2) * jnp.cosh(
        ratio
    )
    return decay * bracket / det**2.5


def Gabor() -> Layer:
    r"""The Gabor activation :math:`e^{-x^2}\sin x`.

    Dual, with :math:`D = \det(I + 2\Sigma) = (1+2q_1)(1+2q_2) - 4k^2 \ge 1`:
    :math:`\mathcal V = D^{-1/2}\exp\!\big(\frac{1+q_1+q_2}{2D}-\frac12\big)
    \sinh(k/D)`; :math:`\dot{\mathcal V} = \partial_k\mathcal V` in closed form (see
    :func:`gabor_d_nngp`). Both are smooth for all covariances.

    Returns:
        A :class:`Layer` without parameters.
    """

    def fn(x):
        return jnp.exp(-(x**2)) * jnp.sin(x)

    return elementwise_layer(fn, gabor_nngp, gabor_d_nngp, "Gabor")
