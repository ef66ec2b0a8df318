"""The GELU activation :math:`x\\Phi(x)` and its closed-form dual.

Derivation (Stein's lemma). Write :math:`\\Phi(u) = P(g_1 \\le u)` with
:math:`g_1, g_2 \\sim \\mathcal N(0, 1)` independent of the pre-activations, and
:math:`a = u - g_1`, :math:`b = v - g_2`, so that
:math:`\\mathbb E[u\\Phi(u)v\\Phi(v)] = \\mathbb E[uv\\,1_{a\\ge0}1_{b\\ge0}]`, with
:math:`\\operatorname{var} a = A = 1+q_1`, :math:`\\operatorname{var} b = B = 1+q_2`,
:math:`\\operatorname{cov}(a, b) = c`. Integrating ``u`` by parts against the
Gaussian gives three terms: ``c`` times the orthant probability
:math:`\\frac14 + \\frac{1}{2\\pi}\\arcsin\\frac{c}{\\sqrt{AB}}`, and two boundary terms
(``a = 0`` and ``b = 0``) that sum to
:math:`\\big[q_1q_2 + c^2\\frac{1-q_1q_2}{AB}\\big]/(2\\pi\\sqrt S)` with
:math:`S = AB - c^2 \\ge 1 + q_1 + q_2`. Since ``S > 0`` for every valid
covariance, the dual and its derivative are smooth everywhere, including the
diagonal and ``q = 0``; :math:`\\arcsin(c/\\sqrt{AB}) = \\arctan2(c, \\sqrt S)`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ._elementwise import elementwise_layer, rational_arctan2
from ._kernel import Layer


def _gelu_parts(c, q1, q2):
    ab = (1 + q1) * (1 + q2)
    s = ab - c**2
    root = jnp.sqrt(s)
    angle = rational_arctan2(c, root)
    numerator = q1 * q2 + c**2 * (1 - q1 * q2) / ab
    return ab, s, root, angle, numerator


def gelu_nngp(c, q1, q2):
    r"""Dual of :math:`x\Phi(x)`.

    :math:`\frac c4 + \frac{c}{2\pi}\arctan\!2(c, \sqrt S)
    + \frac{q_1q_2 + c^2(1-q_1q_2)/(AB)}{2\pi\sqrt S}`, with :math:`A = 1+q_1`,
    :math:`B = 1+q_2`, :math:`S = AB - c^2`.
    """
    _, _, root, angle, numerator = _gelu_parts(c, q1, q2)
    return c / 4 + c * angle / (2 * math.pi) + numerator / (2 * math.pi * root)


def gelu_d_nngp(c, q1, q2):
    r""":math:`\partial_c` of :func:`gelu_nngp`.

    :math:`\frac14 + \frac{\arctan2(c,\sqrt S)}{2\pi} + \frac{c}{2\pi\sqrt S}
    \big[1 + \frac{2(1-q_1q_2)}{AB} + \frac{N}{S}\big]` with ``N`` the numerator of
    the last NNGP term.
    """
    ab, s, root, angle, numerator = _gelu_parts(c, q1, q2)
    bracket = 1 + 2 * (1 - q1 * q2) / ab + numerator / s
    return 0.25 + angle / (2 * math.pi) + c * bracket / (2 * math.pi * root)


def Gelu(approximate: bool = False) -> Layer:
    r"""The GELU activation :math:`x\Phi(x)`, :math:`\Phi` the standard normal CDF.

    Dual, with :math:`A = 1+q_1`, :math:`B = 1+q_2`, :math:`S = AB-k^2`:
    :math:`\mathcal V = \frac k4 + \frac{k}{2\pi}\arcsin\frac{k}{\sqrt{AB}} +
    \frac{q_1q_2 + k^2(1-q_1q_2)/(AB)}{2\pi\sqrt S}` (derivation in the module
    docstring); :math:`\dot{\mathcal V} = \partial_k\mathcal V` in closed form
    (:func:`gelu_d_nngp`). For large variances this tends to the ReLU dual.

    Args:
        approximate: static; if ``True``, ``apply`` uses the tanh approximation of
            :func:`jax.nn.gelu`. The kernel is always the exact dual of
            :math:`x\Phi(x)` (as in Neural Tangents).

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        TypeError: if ``approximate`` is not a bool.

    References:
        Tsuchida, Pearce, van der Heide, Roosta, Gallagher (2021), "Avoiding kernel
        fixed points: computing with ELU and GELU infinite networks".
    """
    if not isinstance(approximate, bool):
        raise TypeError(f"approximate must be a bool, got {approximate!r}.")

    def fn(x):
        return jax.nn.gelu(x, approximate=approximate)

    return elementwise_layer(fn, gelu_nngp, gelu_d_nngp, "Gelu")
