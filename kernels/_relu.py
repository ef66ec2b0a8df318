"""Piecewise-linear activations: the arc-cosine family (ABRelu and special cases)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._checks import check_finite
from ._elementwise import elementwise_layer, safe_arctan2, safe_sqrt
from ._kernel import Layer


def _correlation(c, q1, q2):
    """``(rho, sqrt(q1 q2))`` with ``rho = c / sqrt(q1 q2)`` clipped to [-1, 1].

    Working with the correlation keeps the diagonal exact: there ``rho`` is exactly 1,
    whereas ``q1 q2 - c^2`` is a difference of rounded products whose square root
    would carry a relative error of 1e-8. The norm is computed as
    ``s sqrt((q1/s)(q2/s))`` with ``s = max(q1, q2)``: one of the ratios is exactly
    1, so the norm is exactly ``q`` on the diagonal, and nothing overflows where
    ``q1 q2`` would (variances above ~1.8e19 in float32, e.g. a deep network with
    ``W_std = 2``). The clip passes gradients straight through, and a zero variance
    gives ``rho = 0``.
    """
    positive = jnp.logical_and(q1 > 0, q2 > 0)
    scale = jnp.where(positive, jnp.maximum(q1, q2), 1.0)
    norm = jnp.where(positive, scale * safe_sqrt((q1 / scale) * (q2 / scale)), 0.0)
    rho = jnp.where(positive, c / jnp.where(positive, norm, 1.0), 0.0)
    rho = rho + jax.lax.stop_gradient(jnp.clip(rho, -1.0, 1.0) - rho)
    return rho, norm


def _angle(rho):
    """``(theta, sin(theta))`` for ``cos(theta) = rho``, finite gradients at +-1."""
    sin_theta = safe_sqrt((1 - rho) * (1 + rho))
    return safe_arctan2(sin_theta, rho), sin_theta


def ab_relu_nngp(c, q1, q2, a, b):
    r"""Dual of :math:`a\min(x,0) + b\max(x,0)`.

    :math:`\frac{(a-b)^2}{2\pi}\sqrt{q_1q_2-c^2}
    + \big[\frac{a^2+b^2}{2} - \frac{(a-b)^2\theta}{2\pi}\big] c`.
    """
    rho, norm = _correlation(c, q1, q2)
    theta, sin_theta = _angle(rho)
    slope = (a**2 + b**2) / 2 - (a - b) ** 2 * theta / (2 * jnp.pi)
    return norm * ((a - b) ** 2 / (2 * jnp.pi) * sin_theta + slope * rho)


def ab_relu_d_nngp(c, q1, q2, a, b):
    r"""The derivative dual of :func:`ab_relu_nngp`.

    :math:`\mathbb E[\phi'\phi'] = \frac{a^2+b^2}{2} - \frac{(a-b)^2\theta}{2\pi}`.
    """
    theta, _ = _angle(_correlation(c, q1, q2)[0])
    return (a**2 + b**2) / 2 - (a - b) ** 2 * theta / (2 * jnp.pi)


def _stabilized(dual):
    """Evaluates a 1-homogeneous dual on covariances divided by their largest entry.

    ``V(s c, s q1, s q2) = s V(c, q1, q2)`` for the ABRelu family, so rescaling is
    exact; it keeps deep networks with large ``W_std`` away from overflow.
    """

    def stabilized(c, q1, q2):
        scale = jax.lax.stop_gradient(jnp.maximum(jnp.max(jnp.abs(c)), 1e-300))
        return scale * dual(c / scale, q1 / scale, q2 / scale)

    return stabilized


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> Layer:
    r"""The activation :math:`\phi(x) = a\min(x, 0) + b\max(x, 0)`.

    Dual (arc-cosine kernel of order 1), with :math:`\theta = \arccos(c/\sqrt{q_1q_2})`:
    :math:`\mathcal V = \frac{(a-b)^2}{2\pi}\sqrt{q_1q_2-c^2} +
    \big[\frac{a^2+b^2}{2}-\frac{(a-b)^2\theta}{2\pi}\big]c`, and
    :math:`\dot{\mathcal V} = \frac{a^2+b^2}{2}-\frac{(a-b)^2\theta}{2\pi}`.
    The angle is computed with ``arctan2`` and a square root with a finite
    derivative at 0, so kernels and their gradients are finite at ``x1 == x2``.

    Args:
        a: slope for negative inputs.
        b: slope for positive inputs.
        do_stabilize: static; rescale covariances by their largest entry before the
            formula (exact, since the dual is 1-homogeneous), for deep networks.

    Returns:
        A :class:`Layer` without parameters.

    References:
        Cho & Saul (2009), "Kernel methods for deep learning".
    """
    check_finite(a, "a")
    check_finite(b, "b")

    def nngp_fn(c, q1, q2):
        return ab_relu_nngp(c, q1, q2, a, b)

    def d_nngp_fn(c, q1, q2):
        return ab_relu_d_nngp(c, q1, q2, a, b)

    if do_stabilize:
        nngp_fn = _stabilized(nngp_fn)

    def fn(x):
        return a * jnp.minimum(x, 0.0) + b * jnp.maximum(x, 0.0)

    def derivative(x):
        return jnp.where(x > 0, b, a).astype(x.dtype)

    def mean(q):
        # E[phi(sqrt(q) z)] = (b - a) sqrt(q / (2 pi)); E[phi'] = (a + b) / 2.
        return (b - a) * jnp.sqrt(q / (2 * jnp.pi))

    def slope_mean(q):
        return jnp.full_like(q, (a + b) / 2)

    return elementwise_layer(
        fn,
        nngp_fn,
        d_nngp_fn,
        "ABRelu",
        derivative=derivative,
        mean=mean,
        slope_mean=slope_mean,
    )


def Relu(do_stabilize: bool = False) -> Layer:
    r"""ReLU, :math:`\max(x, 0)`: ``ABRelu(0, 1)``.

    :math:`\mathcal V = \frac{\sqrt{q_1q_2-c^2} + (\pi-\theta)c}{2\pi}`,
    :math:`\dot{\mathcal V} = \frac{\pi-\theta}{2\pi}`; on the diagonal
    :math:`\mathcal V = q/2`.

    Args:
        do_stabilize: static; see :func:`ABRelu`.

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import kernels
        >>> net = kernels.serial(kernels.Dense(8), kernels.Relu())
        >>> float(net.kernel(jnp.ones((1, 3)), get="nngp")[0, 0])
        0.5
    """
    layer = ABRelu(0.0, 1.0, do_stabilize)
    return layer._replace(name="Relu")


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> Layer:
    r"""Leaky ReLU, :math:`\max(x, 0) + \alpha\min(x, 0)`: ``ABRelu(alpha, 1)``.

    Args:
        alpha: slope for negative inputs.
        do_stabilize: static; see :func:`ABRelu`.
    """
    return ABRelu(alpha, 1.0, do_stabilize)._replace(name="LeakyRelu")


def Abs(do_stabilize: bool = False) -> Layer:
    r"""Absolute value :math:`|x|`: ``ABRelu(-1, 1)``.

    Args:
        do_stabilize: static; see :func:`ABRelu`.
    """
    return ABRelu(-1.0, 1.0, do_stabilize)._replace(name="Abs")
