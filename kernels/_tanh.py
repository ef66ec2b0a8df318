"""The hyperbolic tangent, whose dual has no closed form: fixed accurate quadrature."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._elementwise import elementwise_layer
from ._kernel import Layer
from ._numerical import gaussian_expectation

#: Quadrature nodes per axis of :func:`Tanh` (see its accuracy table).
TANH_DEGREE = 64


def _tanh_derivative(x: jax.Array) -> jax.Array:
    """:math:`\\tanh'(x) = 1 - \\tanh^2(x)` (a module-level function, so that
    every ``Tanh()`` shares one compiled quadrature)."""
    return 1.0 - jnp.tanh(x) ** 2


def _tanh_nngp(c, q1, q2):
    return gaussian_expectation(jnp.tanh, jnp.tanh, c, q1, q2, TANH_DEGREE)


def _tanh_d_nngp(c, q1, q2):
    return gaussian_expectation(
        _tanh_derivative, _tanh_derivative, c, q1, q2, TANH_DEGREE
    )


def Tanh() -> Layer:
    r"""The hyperbolic tangent, :math:`\tanh(x)`.

    Its dual :math:`\mathcal V = \mathbb E[\tanh(u)\tanh(v)]` and
    :math:`\dot{\mathcal V} = \mathbb E[\tanh'(u)\tanh'(v)]` have no closed form;
    both are computed by the quadrature of :func:`ElementwiseNumerical` with
    ``deg = 64`` nodes per axis (about 4100 evaluations of ``tanh`` per kernel
    entry, for each of the two), the derivative in closed form.

    Accuracy (float64): the largest error relative to the diagonal scale (as in
    :func:`ElementwiseNumerical`) against nested adaptive ``scipy.integrate.quad``,
    over correlations in ``[-1, 1]``, measured with
    ``tests/kernels/test_tanh.py``'s reference:

    ===========================  ==========  ==========
    variances ``q1, q2``         NNGP        NTK factor
    ===========================  ==========  ==========
    0.01 to 30                   5e-9        5e-8
    100                          1.3e-7      6e-6
    ===========================  ==========  ==========

    For another speed/accuracy trade-off use
    ``ElementwiseNumerical(jnp.tanh, deg)``; for a sigmoid with a closed-form
    dual, :func:`Erf`.

    Returns:
        A :class:`Layer` without parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import kernels
        >>> net = kernels.serial(kernels.Dense(512), kernels.Tanh(),
        ...                      kernels.Dense(1))
        >>> nngp = net.kernel(jnp.ones((2, 3)), get="nngp")
        >>> nngp.shape
        (2, 2)
    """
    return elementwise_layer(jnp.tanh, _tanh_nngp, _tanh_d_nngp, "Tanh")
