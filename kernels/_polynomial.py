"""Polynomial activations (``Monomial``, ``Polynomial``, ``Hermite``) and
``RectifiedMonomial`` (the arc-cosine kernels of Cho & Saul).

Polynomials. Write :math:`u = \\sqrt{q}\\,x` with :math:`x \\sim \\mathcal N(0,1)` and
expand :math:`\\phi(\\sqrt q x) = \\sum_l s_l(q)\\,q^{l/2}\\mathrm{He}_l(x)` in
probabilists' Hermite polynomials, using
:math:`x^j = \\sum_m \\frac{j!}{m!(j-2m)!2^m}\\mathrm{He}_{j-2m}(x)`. For
:math:`\\phi(x) = \\sum_j a_j x^j` this gives
:math:`s_l(q) = \\sum_m a_{l+2m}\\frac{(l+2m)!}{m!\\,l!\\,2^m}q^m`, and Mehler's formula
:math:`\\mathbb E[\\mathrm{He}_j(x)\\mathrm{He}_l(y)] = \\delta_{jl}\\,l!\\,\\rho^l`
gives the exact dual for any variances as a polynomial in ``c, q1, q2`` (no square
roots): :math:`\\mathcal V = \\sum_l l!\\,s_l(q_1)s_l(q_2)\\,c^l` and
:math:`\\dot{\\mathcal V} = \\sum_{l\\ge1} l\\,l!\\,s_l(q_1)s_l(q_2)\\,c^{l-1}`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_finite, check_positive_int
from ._elementwise import elementwise_layer, safe_arctan2
from ._kernel import Layer
from ._sign import sine_part


def _is_zero(value) -> bool:
    return isinstance(value, int | float | np.number) and value == 0


def _projection(q, coef, l: int):
    r""":math:`s_l(q) = \sum_m a_{l+2m}\frac{(l+2m)!}{m!\,l!\,2^m}q^m`, or None if 0."""
    total = None
    for m in range((len(coef) - 1 - l) // 2 + 1):
        a = coef[l + 2 * m]
        if _is_zero(a):
            continue
        weight = math.factorial(l + 2 * m) / (
            math.factorial(m) * math.factorial(l) * 2**m
        )
        term = a * weight * q**m if m else a * weight
        total = term if total is None else total + term
    return total


def _zeros(c, q1, q2):
    return jnp.zeros_like(c * q1 * q2)


def polynomial_nngp(c, q1, q2, coef):
    r"""Dual of :math:`\sum_j a_j x^j`: :math:`\sum_l l!\,s_l(q_1)s_l(q_2)\,c^l`."""
    total = _zeros(c, q1, q2)
    for l in range(len(coef)):
        s1, s2 = _projection(q1, coef, l), _projection(q2, coef, l)
        if s1 is not None:
            total = total + float(math.factorial(l)) * s1 * s2 * c**l
    return total


def polynomial_d_nngp(c, q1, q2, coef):
    r""":math:`\sum_{l\ge1} l\,l!\,s_l(q_1)s_l(q_2)\,c^{l-1}`."""
    total = _zeros(c, q1, q2)
    for l in range(1, len(coef)):
        s1, s2 = _projection(q1, coef, l), _projection(q2, coef, l)
        if s1 is not None:
            total = total + float(l * math.factorial(l)) * s1 * s2 * c ** (l - 1)
    return total


def _check_coef(coef) -> tuple:
    if isinstance(coef, str) or not hasattr(coef, "__len__"):
        raise TypeError(f"coef must be a sequence of numbers, got {coef!r}.")
    if getattr(coef, "ndim", 1) != 1:
        raise ValueError(f"coef must be 1-D, got shape {np.shape(coef)}.")
    coef = tuple(coef)
    if not coef:
        raise ValueError("coef must have at least one coefficient.")
    for i, a in enumerate(coef):
        check_finite(a, f"coef[{i}]")
    # Concrete numbers become Python floats (weakly typed: outputs keep the input
    # dtype); traced coefficients stay as they are.
    return tuple(a if isinstance(a, jax.core.Tracer) else float(a) for a in coef)


def _horner(coef, x):
    y = jnp.zeros_like(x) + coef[-1]
    for a in reversed(coef[:-1]):
        y = y * x + a
    return y


def _polynomial_layer(coef: tuple, fn, name: str) -> Layer:
    def nngp_fn(k, q1, q2):
        return polynomial_nngp(k, q1, q2, coef)

    def d_nngp_fn(k, q1, q2):
        return polynomial_d_nngp(k, q1, q2, coef)

    return elementwise_layer(fn, nngp_fn, d_nngp_fn, name)


def Polynomial(coef) -> Layer:
    r"""The activation :math:`\phi(x) = \sum_{j} \mathrm{coef}[j]\,x^j`.

    Exact dual for any variances, via the Hermite expansion in the module
    docstring: :math:`\mathcal V = \sum_l l!\,s_l(q_1)s_l(q_2)\,k^l` and
    :math:`\dot{\mathcal V} = \sum_{l\ge1} l\,l!\,s_l(q_1)s_l(q_2)\,k^{l-1}` with
    :math:`s_l(q) = \sum_m \mathrm{coef}[l+2m]\frac{(l+2m)!}{m!\,l!\,2^m}q^m`.

    Args:
        coef: ``(degree + 1,)`` coefficients, constant term first (the degree is
            static; the values may be traced).

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        TypeError: if ``coef`` is not a sequence.
        ValueError: if ``coef`` is empty, not 1-D or has a non-finite entry.

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import kernels
        >>> net = kernels.serial(kernels.Dense(1), kernels.Polynomial([1.0, 0.0, 1.0]))
        >>> float(net.kernel(jnp.ones((1, 1)), get="nngp")[0, 0])  # E[(1 + u^2)^2]
        6.0
    """
    coef = _check_coef(coef)

    def fn(x):
        return _horner(coef, x)

    return _polynomial_layer(coef, fn, "Polynomial")


def Monomial(degree: int) -> Layer:
    r"""The activation :math:`x^{\mathrm{degree}}`.

    Dual (Gaussian moments): :math:`\mathcal V = \sum_{m}
    \big[\frac{d!}{m!(d-2m)!2^m}\big]^2 (d-2m)!\,(q_1q_2)^m k^{d-2m}`, e.g.
    :math:`2k^2 + q_1q_2` for ``d = 2`` and :math:`6k^3 + 9kq_1q_2` for ``d = 3``;
    :math:`\dot{\mathcal V} = d^2\,\mathbb E[u^{d-1}v^{d-1}]`. Any degree ``>= 0``.

    Args:
        degree: static; the power ``d >= 0``.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        TypeError: if ``degree`` is not an integer.
        ValueError: if ``degree`` is negative.
    """
    degree = check_positive_int(degree, "degree", minimum=0)
    coef = (0.0,) * degree + (1.0,)

    def fn(x):
        return x**degree

    return _polynomial_layer(coef, fn, "Monomial")


def _hermite_coefficients(degree: int) -> tuple[float, ...]:
    """Power-basis coefficients of :math:`\\mathrm{He}_n/\\sqrt{n!}`."""
    previous, current = [1], [0, 1]
    if degree == 0:
        current = previous
    for k in range(1, degree):
        shifted = [0] + current
        lowered = [k * a for a in previous] + [0, 0]
        previous, current = (
            current,
            [s - t for s, t in zip(shifted, lowered, strict=True)],
        )
    norm = math.sqrt(math.factorial(degree))
    return tuple(a / norm for a in current)


def Hermite(degree: int) -> Layer:
    r"""The normalised probabilists' Hermite polynomial :math:`\mathrm{He}_d/\sqrt{d!}`.

    For unit-variance pre-activations (``q1 = q2 = 1``, e.g. after ``LayerNorm``)
    the dual is :math:`\mathcal V = k^d` and :math:`\dot{\mathcal V} = d\,k^{d-1}`:
    this is what Neural Tangents returns for *any* variances (with a warning),
    which is wrong when :math:`q \ne 1`. widebnn instead computes the exact dual for
    all variances (as a :func:`Polynomial`); it equals :math:`k^d` at unit variance,
    so no warning is needed.

    Args:
        degree: static; ``d >= 0``.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        TypeError: if ``degree`` is not an integer.
        ValueError: if ``degree`` is negative.
    """
    degree = check_positive_int(degree, "degree", minimum=0)
    coef = _hermite_coefficients(degree)
    norm = math.sqrt(math.factorial(degree))

    def fn(x):
        previous, current = jnp.ones_like(x), x
        if degree == 0:
            return previous
        for k in range(1, degree):
            previous, current = current, x * current - k * previous
        return current / norm

    return _polynomial_layer(coef, fn, "Hermite")


def _arc_cosine_polynomials(degree: int) -> tuple[list[int], list[int]]:
    r"""Integer coefficients of :math:`P_n, R_n` with
    :math:`J_n(\theta) = P_n(\cos\theta)(\pi-\theta) + R_n(\cos\theta)\sin\theta`.

    From :math:`J_n = (1-t^2)^{n+1/2}\,\partial_t^n\big[\frac{\pi-\arccos t}
    {\sqrt{1-t^2}}\big]`: :math:`P_{n+1} = (1-t^2)P_n' + (2n+1)tP_n`,
    :math:`R_{n+1} = (1-t^2)R_n' + 2ntR_n + P_n`, :math:`P_0 = 1`, :math:`R_0 = 0`.
    """
    p = np.polynomial.Polynomial([1])
    r = np.polynomial.Polynomial([0])
    one_minus_t2 = np.polynomial.Polynomial([1, 0, -1])
    t = np.polynomial.Polynomial([0, 1])
    for n in range(degree):
        p, r = (
            one_minus_t2 * p.deriv() + (2 * n + 1) * t * p,
            one_minus_t2 * r.deriv() + 2 * n * t * r + p,
        )
    return [round(float(a)) for a in p.coef], [round(float(a)) for a in r.coef]


def _homogeneous(coefs, c, prod, total_degree):
    r""":math:`\sum_j a_j c^j (q_1q_2)^{(D-j)/2}` for coefficients of one parity."""
    total = None
    for j, a in enumerate(coefs):
        if a == 0:
            continue
        term = float(a) * c**j * prod ** ((total_degree - j) // 2)
        total = term if total is None else total + term
    return 0.0 if total is None else total


def rectified_monomial_nngp(c, q1, q2, degree):
    r"""Dual of :math:`1_{x\ge0}x^n`: :math:`\frac{(q_1q_2)^{n/2}}{2\pi}J_n(\theta)`.

    Homogenised so that only integer powers of ``c`` and ``q1 q2`` appear:
    :math:`\frac{1}{2\pi}\big[(\pi-\theta)\sum_j p_j c^j(q_1q_2)^{(n-j)/2}
    + \sqrt{q_1q_2-c^2}\sum_j r_j c^j(q_1q_2)^{(n-1-j)/2}\big]`, finite with finite
    gradients on the diagonal (where Neural Tangents returns NaN) and at ``q = 0``.
    """
    p, r = _arc_cosine_polynomials(degree)
    prod = q1 * q2
    sin_part = sine_part(c, q1, q2)
    theta = safe_arctan2(sin_part, c)
    value = (math.pi - theta) * _homogeneous(p, c, prod, degree)
    if degree > 0:
        value = value + sin_part * _homogeneous(r, c, prod, degree - 1)
    value = value / (2 * math.pi)
    if degree == 0:
        # Both pre-activations exactly 0: 1[0 >= 0] = 1 for the finite network.
        value = jnp.where((q1 <= 0) & (q2 <= 0), 1.0, value)
    return value


def rectified_monomial_d_nngp(c, q1, q2, degree):
    r""":math:`\mathbb E[\phi'\phi'] = n^2\,\mathcal V_{n-1}`; 0 for ``n = 0``."""
    if degree == 0:
        return _zeros(c, q1, q2)
    return degree**2 * rectified_monomial_nngp(c, q1, q2, degree - 1)


def RectifiedMonomial(degree: int) -> Layer:
    r"""The activation :math:`1_{x\ge0}\,x^{n}` (``n = 1`` is ReLU, ``n = 0`` a step).

    Dual: the arc-cosine kernel of order ``n`` (Cho & Saul),
    :math:`\mathcal V = \frac{(q_1q_2)^{n/2}}{2\pi}J_n(\theta)` with
    :math:`\theta = \arccos\frac{k}{\sqrt{q_1q_2}}` and
    :math:`J_n = P_n(\cos\theta)(\pi-\theta) + R_n(\cos\theta)\sin\theta` (e.g.
    :math:`J_2 = (1+2\cos^2\theta)(\pi-\theta) + 3\cos\theta\sin\theta`); the
    polynomials come from an exact integer recursion and are evaluated in a
    homogenised form with ``arctan2`` and a safe square root, so the kernel and its
    gradients are finite everywhere, including the diagonal (where Neural Tangents
    0.6.5 returns NaN): there :math:`\mathcal V = \frac{(2n-1)!!}{2}q^n`.
    :math:`\dot{\mathcal V} = n^2\mathcal V_{n-1}`; for ``n = 0`` it is 0, as for
    ``Sign`` (the step has zero derivative almost everywhere; the exact
    :math:`\partial\mathcal V/\partial c` is infinite at ``x1 == x2``).

    Args:
        degree: static; ``n >= 0``.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        TypeError: if ``degree`` is not an integer.
        ValueError: if ``degree`` is negative.

    References:
        Cho & Saul (2009), "Kernel methods for deep learning".
    """
    degree = check_positive_int(degree, "degree", minimum=0)

    def fn(x):
        return jnp.where(x >= 0, x**degree, 0.0)

    def nngp_fn(k, q1, q2):
        return rectified_monomial_nngp(k, q1, q2, degree)

    def d_nngp_fn(k, q1, q2):
        return rectified_monomial_d_nngp(k, q1, q2, degree)

    return elementwise_layer(fn, nngp_fn, d_nngp_fn, "RectifiedMonomial")
