"""Closed-form duals of the activations against independent oracles.

Oracle: adaptive 2-D quadrature (scipy's QUADPACK ``dblquad``) of
:math:`\\mathbb E[\\phi(u)\\phi(v)]` and :math:`\\mathbb E[\\phi'(u)\\phi'(v)]` with the
activation and its derivative written here in plain ``math``/``scipy`` (independent
of the library). The Gaussian density is written in conditional form and the plane is
split into its four quadrants, so that kinks and jumps at 0 (ReLU-like, step, sign)
lie on the integration boundaries and QUADPACK converges. The range is
16 standard deviations (12 was too short for ``Gaussian(b > 0)``, whose integrand
decays more slowly than the density). Diagonal entries (``c = q1 = q2``, where the
2-D density is singular) use 1-D ``quad``.

Tolerance: ``TOL = 1e-10`` relative to ``1 + |oracle|``; the measured worst
agreement over all cases is 1.2e-15 (float64), so a wrong formula or a slip in a
hyperparameter fails by orders of magnitude.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import slow_unless
from scipy import integrate, special

from widebnn import kernels

TOL = 1e-10  # relative; measured worst agreement 1.2e-15
RANGE = 16.0  # integration range in standard deviations

# (c, q1, q2) off the diagonal (|rho| <= 0.9) and variances on it.
OFF_DIAGONAL = ((0.3, 0.5, 1.2), (-0.6, 1.0, 0.8), (1.5, 2.5, 1.2))
DIAGONAL = (0.4, 1.7)


def _oracle(f, g, c, q1, q2):
    """:math:`E[f(u) g(v)]` by QUADPACK over the four quadrants of the plane."""
    slope, var = c / q1, q2 - c * c / q1
    sd = math.sqrt(var)
    norm = 1 / (2 * math.pi * math.sqrt(q1 * var))

    def integrand(v, u):
        exponent = -u * u / (2 * q1) - (v - slope * u) ** 2 / (2 * var)
        return f(u) * g(v) * math.exp(exponent) * norm

    def lower(sign):
        if sign < 0:
            return lambda u: min(0.0, slope * u - RANGE * sd)
        return lambda u: max(0.0, slope * u - RANGE * sd)

    def upper(sign):
        if sign < 0:
            return lambda u: min(0.0, slope * u + RANGE * sd)
        return lambda u: max(0.0, slope * u + RANGE * sd)

    limit = RANGE * math.sqrt(q1)
    total = 0.0
    with warnings.catch_warnings():
        # QUADPACK warns when it cannot certify 1e-11 for sign-changing integrands;
        # the comparison at TOL below decides, so a poor oracle can only fail a test.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        for u_lo, u_hi in ((-limit, 0.0), (0.0, limit)):
            for sign in (-1, 1):
                value, _ = integrate.dblquad(
                    integrand,
                    u_lo,
                    u_hi,
                    lower(sign),
                    upper(sign),
                    epsabs=1e-13,
                    epsrel=1e-11,
                )
                total += value
    return total


def _oracle_diagonal(f, g, q):
    """:math:`E[f(u) g(u)]`, ``u ~ N(0, q)``, by 1-D QUADPACK split at 0."""
    sd = math.sqrt(q)

    def integrand(u):
        return f(u) * g(u) * math.exp(-u * u / (2 * q)) / math.sqrt(2 * math.pi * q)

    return sum(
        integrate.quad(integrand, lo, hi, epsabs=1e-13, epsrel=1e-11)[0]
        for lo, hi in ((-RANGE * sd, 0.0), (0.0, RANGE * sd))
    )


@functools.partial(jax.jit, static_argnums=0)
def _jitted_duals(layer, c, q1, q2):
    k = kernels.Kernel(
        nngp=c,
        ntk=jnp.ones_like(c),
        cov1=q1,
        cov2=q2,
        shape1=(q1.shape[0], 1),
        shape2=(q2.shape[0], 1),
        is_gaussian=True,
    )
    out = layer.kernel_fn(k)
    return out.nngp, out.ntk


def _duals(layer, c, q1, q2):
    """``(nngp, NTK factor)`` of ``layer`` at ``c (N1, N2)``, ``q1 (N1)``, ``q2 (N2)``.

    Runs the layer's ``kernel_fn`` (jitted) on a Gaussian kernel with incoming NTK 1,
    so the outputs are exactly :math:`\\mathcal V(c, q_1, q_2)` and
    :math:`\\dot{\\mathcal V}`.
    """
    return _jitted_duals(layer, *map(jnp.asarray, (c, q1, q2)))


def _duals_at_points(layer, points):
    """``(nngp, NTK factor)`` at each ``(c, q1, q2)`` of ``points``, in one call."""
    c, q1, q2 = (np.array(column) for column in zip(*points, strict=True))
    nngp, ntk = _duals(layer, np.diag(c), q1, q2)  # off-diagonal pairs have c = 0
    return np.diag(nngp), np.diag(ntk)


def _step(power):
    if power == 0:
        return lambda x: 1.0 if x >= 0 else 0.0
    return lambda x: x**power if x >= 0 else 0.0


def _rect(n):
    """``(phi, phi')`` of ``1[x >= 0] x^n``; ``phi'`` is None for ``n = 0``."""
    if n == 0:
        return _step(0), None
    return _step(n), lambda x: n * _step(n - 1)(x)


def _horner(coef):
    def evaluate(x):
        total = 0.0
        for a in reversed(coef):
            total = total * x + a
        return total

    return evaluate


def _hermite(n):
    """``(phi, phi')`` of ``He_n / sqrt(n!)``, coefficients from numpy's HermiteE."""
    he = np.polynomial.HermiteE.basis(n).convert(kind=np.polynomial.Polynomial)
    norm = math.sqrt(math.factorial(n))
    coef = [float(a) / norm for a in he.coef]
    dcoef = [float(a) / norm for a in he.deriv().coef]
    return _horner(coef), _horner(dcoef)


POLY = (0.3, -1.0, 0.5, 0.2)


def _normal_cdf(x):
    return special.ndtr(x)


def _normal_pdf(x):
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


# name -> (layer factory, phi, phi' or None for "NTK factor is 0 by convention")
CASES = {
    "Sin": (
        lambda: kernels.Sin(1.3, 0.7, 0.4),
        lambda x: 1.3 * math.sin(0.7 * x + 0.4),
        lambda x: 1.3 * 0.7 * math.cos(0.7 * x + 0.4),
    ),
    "Cos": (
        lambda: kernels.Cos(0.9, 1.2, -0.3),
        lambda x: 0.9 * math.cos(1.2 * x - 0.3),
        lambda x: -0.9 * 1.2 * math.sin(1.2 * x - 0.3),
    ),
    "Rbf": (
        lambda: kernels.Rbf(0.6),
        lambda x: math.sqrt(2) * math.sin(math.sqrt(1.2) * x + math.pi / 4),
        lambda x: math.sqrt(2 * 1.2) * math.cos(math.sqrt(1.2) * x + math.pi / 4),
    ),
    "Gabor": (
        kernels.Gabor,
        lambda x: math.exp(-x * x) * math.sin(x),
        lambda x: math.exp(-x * x) * (math.cos(x) - 2 * x * math.sin(x)),
    ),
    "Exp": (
        lambda: kernels.Exp(0.8, 0.6),
        lambda x: 0.8 * math.exp(0.6 * x),
        lambda x: 0.8 * 0.6 * math.exp(0.6 * x),
    ),
    "Gaussian": (
        lambda: kernels.Gaussian(1.2, -0.7),
        lambda x: 1.2 * math.exp(-0.7 * x * x),
        lambda x: -2 * 1.2 * 0.7 * x * math.exp(-0.7 * x * x),
    ),
    "Gaussian_positive_b": (
        lambda: kernels.Gaussian(0.5, 0.1),
        lambda x: 0.5 * math.exp(0.1 * x * x),
        lambda x: 2 * 0.5 * 0.1 * x * math.exp(0.1 * x * x),
    ),
    "Gelu": (
        kernels.Gelu,
        lambda x: x * _normal_cdf(x),
        lambda x: _normal_cdf(x) + x * _normal_pdf(x),
    ),
    "Sign": (kernels.Sign, lambda x: float(np.sign(x)), None),
    **{
        f"Monomial{n}": (
            lambda n=n: kernels.Monomial(n),
            lambda x, n=n: x**n,
            lambda x, n=n: n * x ** (n - 1) if n else 0.0,
        )
        for n in range(6)
    },
    **{
        f"RectifiedMonomial{n}": (lambda n=n: kernels.RectifiedMonomial(n), *_rect(n))
        for n in range(5)
    },
    "Polynomial": (
        lambda: kernels.Polynomial(POLY),
        _horner(POLY),
        _horner([j * a for j, a in enumerate(POLY)][1:]),
    ),
    **{
        f"Hermite{n}": (lambda n=n: kernels.Hermite(n), *_hermite(n))
        for n in (0, 1, 2, 4)
    },
}


@pytest.mark.parametrize("name", slow_unless(sorted(CASES)))
def test_dual_matches_quadrature_oracle(name):
    make, phi, dphi = CASES[name]
    points = OFF_DIAGONAL + tuple((q, q, q) for q in DIAGONAL)
    nngp, ntk = _duals_at_points(make(), points)
    for i, (c, q1, q2) in enumerate(points):
        if q1 == q2 == c:
            expected = _oracle_diagonal(phi, phi, q1)
            expected_ntk = 0.0 if dphi is None else _oracle_diagonal(dphi, dphi, q1)
        else:
            expected = _oracle(phi, phi, c, q1, q2)
            expected_ntk = 0.0 if dphi is None else _oracle(dphi, dphi, c, q1, q2)
        assert abs(nngp[i] - expected) <= TOL * (1 + abs(expected)), (c, q1, q2)
        assert abs(ntk[i] - expected_ntk) <= TOL * (1 + abs(expected_ntk)), (c, q1, q2)


def test_documented_monomial_forms():
    """The Neural Tangents table: deg 2 is 2c^2 + q1 q2, deg 3 is 6c^3 + 9c q1 q2."""
    c, q1, q2 = jnp.array([[0.3, -0.7]]), jnp.array([0.9]), jnp.array([1.1, 2.0])
    prod = q1[:, None] * q2[None]
    for degree, nngp, ntk in (
        (2, 2 * c**2 + prod, 4 * c),
        (3, 6 * c**3 + 9 * c * prod, 9 * (2 * c**2 + prod)),
    ):
        got = _duals(kernels.Monomial(degree), c, q1, q2)
        np.testing.assert_allclose(got[0], nngp, rtol=1e-14)
        np.testing.assert_allclose(got[1], ntk, rtol=1e-14)


def test_hermite_unit_variance_is_neural_tangents_convention():
    """At q1 = q2 = 1 the exact dual is c^n and its derivative n c^(n-1)."""
    c = jnp.linspace(-1.0, 1.0, 9)[None]
    ones = jnp.ones(1), jnp.ones(9)
    for n in range(6):
        nngp, ntk = _duals(kernels.Hermite(n), c, *ones)
        np.testing.assert_allclose(nngp, c**n, atol=1e-14)
        np.testing.assert_allclose(
            ntk, n * c ** max(n - 1, 0) if n else 0 * c, atol=1e-13
        )


def test_rectified_monomial_finite_on_the_diagonal():
    """E[u^2n 1(u >= 0)] = (2n-1)!! q^n / 2 exactly where NT 0.6.5 returns NaN.

    Gradients there are checked in ``test_gradients_finite_...`` below.
    """
    q = jnp.array([0.3, 1.0, 2.5])
    for n in range(6):
        nngp, ntk = _duals(kernels.RectifiedMonomial(n), jnp.diag(q), q, q)
        double_factorial = math.prod(range(2 * n - 1, 0, -2))
        np.testing.assert_allclose(
            jnp.diag(nngp), double_factorial * q**n / 2, rtol=1e-14
        )
        expected_ntk = n**2 * math.prod(range(2 * n - 3, 0, -2)) * q ** (n - 1) / 2
        np.testing.assert_allclose(
            jnp.diag(ntk), expected_ntk if n else 0 * q, rtol=1e-14
        )


def test_rectified_monomial_one_is_relu():
    c = jnp.array([[0.5, -0.2, 1.0]])
    q1, q2 = jnp.array([1.0]), jnp.array([0.5, 0.3, 1.0])
    relu = _duals(kernels.Relu(), c, q1, q2)
    rect = _duals(kernels.RectifiedMonomial(1), c, q1, q2)
    for a, b in zip(relu, rect, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


AB_SPECIAL_CASES = (
    ((0.0, 1.0), kernels.Relu),
    ((-1.0, 1.0), kernels.Abs),
    ((0.1, 1.0), lambda: kernels.LeakyRelu(0.1)),
)


@pytest.mark.parametrize(("ab", "make"), AB_SPECIAL_CASES)
def test_ab_relu_special_cases(ab, make):
    c = jnp.array([[0.5, -0.2, 0.7], [0.0, 0.3, -0.9]])
    q1, q2 = jnp.array([1.0, 0.9]), jnp.array([0.5, 0.3, 1.0])
    for a, b in zip(
        _duals(kernels.ABRelu(*ab), c, q1, q2), _duals(make(), c, q1, q2), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=0)


def test_ab_relu_with_equal_slopes_is_linear():
    """ABRelu(s, s) is x -> s x: nngp s^2 c and NTK factor s^2, also on the diagonal."""
    c = jnp.array([[0.5, 0.3], [-0.2, 1.0]])
    q = jnp.array([0.5, 1.0])
    nngp, ntk = _duals(kernels.ABRelu(1.5, 1.5), c, q, q)
    np.testing.assert_allclose(nngp, 2.25 * c, rtol=1e-15)
    np.testing.assert_allclose(ntk, 2.25 * jnp.ones_like(c), rtol=1e-15)


def test_elementwise_autodiff_ntk_equals_erf():
    """Elementwise(fn, nngp_fn) with the NTK from autodiff equals the built-in Erf."""

    def erf_dual(c, q1, q2):  # written independently of kernels._erf
        return 2 / jnp.pi * jnp.arcsin(2 * c / jnp.sqrt((1 + 2 * q1) * (1 + 2 * q2)))

    custom = kernels.Elementwise(jax.scipy.special.erf, erf_dual)
    x = jax.random.normal(jax.random.key(0), (5, 3))
    got, expected = (
        kernels.serial(kernels.Dense(4, 1.4, 0.2), activation, kernels.Dense(1)).kernel(
            x
        )
        for activation in (custom, kernels.Erf())
    )
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_one_hidden_layer_relu_by_hand():
    """Dense -> Relu -> Dense on x1 = (1, 0), x2 = (1, 1), computed by hand.

    Input kernel x x^T / 2 = [[1/2, 1/2], [1/2, 1]]: cos theta = 1/sqrt(2),
    theta = pi/4. Relu: V11 = 1/4, V22 = 1/2,
    V12 = (sqrt(1/2 - 1/4) + (pi - pi/4) / 2) / (2 pi) = 1/(4 pi) + 3/16, and
    NTK factors 1/2 (diagonal) and (pi - pi/4) / (2 pi) = 3/8. The readout adds V to
    the incoming NTK times the factor: Theta = [[1/2, 1/(4 pi) + 3/8], [., 1]].
    """
    x = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    net = kernels.serial(kernels.Dense(8), kernels.Relu(), kernels.Dense(1))
    nngp, ntk = net.kernel(x)
    off = 1 / (4 * math.pi) + 3 / 16
    np.testing.assert_allclose(nngp, [[0.25, off], [off, 0.5]], rtol=1e-14)
    off = 1 / (4 * math.pi) + 3 / 8
    np.testing.assert_allclose(ntk, [[0.5, off], [off, 1.0]], rtol=1e-14)


def test_cos_and_rbf_are_shifted_sines():
    c = jnp.array([[0.5, -0.2], [0.1, 0.8]])
    q1, q2 = jnp.array([1.0, 0.9]), jnp.array([0.6, 1.1])
    pairs = (
        (kernels.Cos(0.7, 1.1, 0.2), kernels.Sin(0.7, 1.1, 0.2 + math.pi / 2)),
        (kernels.Rbf(0.8), kernels.Sin(math.sqrt(2), math.sqrt(1.6), math.pi / 4)),
    )
    for layer, sine in pairs:
        for a, b in zip(_duals(layer, c, q1, q2), _duals(sine, c, q1, q2), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_rbf_is_the_gaussian_kernel_of_the_inputs():
    """Dense(W_std=1, b_std=0) then Rbf(gamma): exp(-gamma |x - x'|^2 / d)."""
    x = jax.random.normal(jax.random.key(3), (4, 3))
    net = kernels.serial(kernels.Dense(2, 1.0, 0.0), kernels.Rbf(0.7))
    distances = jnp.sum((x[:, None] - x[None]) ** 2, axis=-1) / 3
    np.testing.assert_allclose(
        net.kernel(x, get="nngp"), jnp.exp(-0.7 * distances), rtol=1e-13
    )


def test_gelu_approximate_only_changes_apply():
    x = jnp.linspace(-3.0, 3.0, 7)[:, None]
    exact, approx = kernels.Gelu(), kernels.Gelu(approximate=True)
    c, q = jnp.array([[0.3, 0.2]]), jnp.array([0.5, 1.0])
    for a, b in zip(
        _duals(exact, c, q[:1], q), _duals(approx, c, q[:1], q), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(exact.apply((), x), x * special.ndtr(x), rtol=1e-14)
    assert not np.allclose(approx.apply((), x), exact.apply((), x), rtol=1e-6, atol=0)


def test_polynomial_is_linear_in_monomials():
    coef = (0.5, 0.0, -1.0)  # 0.5 - x^2: E[(0.5 - u^2)(0.5 - v^2)]
    c, q1, q2 = jnp.array([[0.4]]), jnp.array([1.2]), jnp.array([0.7])
    nngp, ntk = _duals(kernels.Polynomial(coef), c, q1, q2)
    expected = 0.25 - 0.5 * (1.2 + 0.7) + (2 * 0.4**2 + 1.2 * 0.7)
    np.testing.assert_allclose(nngp[0, 0], expected, rtol=1e-14)
    np.testing.assert_allclose(ntk[0, 0], 4 * 0.4, rtol=1e-14)


def test_exp_normalized():
    """Diagonal = q for shift = -1; NTK factor = d nngp / dc; 0 (finite) at q = 0."""
    layer = kernels.ExpNormalized(gamma=1.3, shift=-1.0)
    q = jnp.array([0.5, 2.0, 0.0])
    nngp, ntk = _duals(layer, jnp.diag(q), q, q)
    np.testing.assert_allclose(jnp.diag(nngp), q, rtol=1e-14)
    np.testing.assert_allclose(jnp.diag(ntk), [1.3, 1.3, 0.0], rtol=1e-14)
    c = jnp.array([[0.2, -0.4]])
    q1, q2 = jnp.array([0.8]), jnp.array([0.6, 1.5])
    nngp, ntk = _duals(layer, c, q1, q2)
    slope = jax.vmap(
        jax.grad(lambda c_, b: _duals(layer, c_[None, None], q1, b[None])[0][0, 0])
    )
    np.testing.assert_allclose(ntk[0], slope(c[0], q2), rtol=1e-13)
    root = jnp.sqrt(0.8 * q2)
    np.testing.assert_allclose(
        nngp[0], root * jnp.exp(1.3 * (c[0] / root - 1)), rtol=1e-14
    )
    with pytest.raises(NotImplementedError, match="finite"):
        layer.apply((), jnp.ones((1, 2)))


def test_sign_is_zero_where_a_variance_is_zero():
    nngp, ntk = _duals(
        kernels.Sign(), jnp.zeros((1, 2)), jnp.zeros(1), jnp.array([0.0, 1.0])
    )
    np.testing.assert_array_equal(nngp, 0.0)
    np.testing.assert_array_equal(ntk, 0.0)


# Closed-form layers whose hyperparameters are differentiated below: name -> (factory
# of the hyperparameters, their values).
HYPERPARAMETERS = {
    "Sin": (lambda a, b, c: kernels.Sin(a, b, c), (1.3, 0.7, 0.4)),
    "Cos": (lambda a, b, c: kernels.Cos(a, b, c), (0.9, 1.2, -0.3)),
    "Rbf": (lambda g: kernels.Rbf(g), (0.6,)),
    "Exp": (lambda a, b: kernels.Exp(a, b), (0.8, 0.6)),
    "Gaussian": (lambda a, b: kernels.Gaussian(a, b), (1.2, -0.7)),
    "ExpNormalized": (lambda g, s: kernels.ExpNormalized(g, s), (1.3, -0.5)),
    "Polynomial": (lambda *coef: kernels.Polynomial(coef), POLY),
    "Gabor": (lambda: kernels.Gabor(), ()),
    "Gelu": (lambda: kernels.Gelu(), ()),
    "Sign": (lambda: kernels.Sign(), ()),
    **{
        f"RectifiedMonomial{n}": (lambda n=n: kernels.RectifiedMonomial(n), ())
        for n in range(4)
    },
    "Hermite3": (lambda: kernels.Hermite(3), ()),
    "Monomial3": (lambda: kernels.Monomial(3), ()),
}


@pytest.mark.parametrize("name", slow_unless(sorted(HYPERPARAMETERS)))
def test_gradients_finite_on_the_diagonal_and_at_zero_variance(name):
    """d/d(c, q1, q2, hyperparameters) of nngp + NTK factor at c = q1 = q2 and q = 0."""
    make, values = HYPERPARAMETERS[name]

    def total(c, q1, q2, *hyper):
        return sum(jnp.sum(x) for x in _duals(make(*hyper), c, q1, q2))

    argnums = tuple(range(3 + len(values)))
    gradient = jax.jit(jax.grad(total, argnums=argnums))
    for q in (jnp.array([0.7, 1.9]), jnp.zeros(2), jnp.array([0.0, 1.3])):
        c = jnp.diag(q)
        assert np.isfinite(total(c, q, q, *values))
        grads = gradient(c, q, q, *values)
        for g in grads:
            assert np.all(np.isfinite(g)), (name, q, grads)


BAD_ARGUMENTS = (
    (lambda: kernels.Monomial(-1), ValueError, "degree"),
    (lambda: kernels.Monomial(2.0), TypeError, "degree"),
    (lambda: kernels.RectifiedMonomial(-2), ValueError, "degree"),
    (lambda: kernels.Hermite(-1), ValueError, "degree"),
    (lambda: kernels.Hermite(True), TypeError, "degree"),
    (lambda: kernels.Polynomial([]), ValueError, "coef"),
    (lambda: kernels.Polynomial("abc"), TypeError, "coef"),
    (lambda: kernels.Polynomial([1.0, float("nan")]), ValueError, "coef"),
    (lambda: kernels.Polynomial(np.ones((2, 2))), ValueError, "coef"),
    (lambda: kernels.Sin(a=float("inf")), ValueError, "a"),
    (lambda: kernels.Cos(c=float("nan")), ValueError, "c"),
    (lambda: kernels.Rbf(-1.0), ValueError, "gamma"),
    (lambda: kernels.Exp(b=float("nan")), ValueError, "b"),
    (lambda: kernels.Gaussian(a=float("inf")), ValueError, "a"),
    (lambda: kernels.ExpNormalized(gamma=float("nan")), ValueError, "gamma"),
    (lambda: kernels.ExpNormalized(do_clip=1), TypeError, "do_clip"),
    (lambda: kernels.Gelu(approximate="yes"), TypeError, "approximate"),
    (lambda: kernels.ElementwiseNumerical(3.0, 25), TypeError, "fn"),
    (lambda: kernels.ElementwiseNumerical(jnp.tanh, 25, df="x"), TypeError, "df"),
    (lambda: kernels.ElementwiseNumerical(jnp.tanh, 1), ValueError, "deg"),
    (lambda: kernels.ElementwiseNumerical(jnp.tanh, 2.5), TypeError, "deg"),
    (lambda: kernels.Dropout(0.0), ValueError, "rate"),
    (lambda: kernels.Dropout(1.5), ValueError, "rate"),
    (lambda: kernels.Dropout(-0.1), ValueError, "rate"),
    (lambda: kernels.Dropout("0.5"), TypeError, "rate"),
    (lambda: kernels.Dropout(0.5, mode="eval"), ValueError, "mode"),
)


@pytest.mark.parametrize(("make", "error", "argument"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_by_name(make, error, argument):
    with pytest.raises(error, match=argument):
        make()
