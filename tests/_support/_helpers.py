"""Small test utilities: trace counting, tolerances from Monte Carlo errors."""

from __future__ import annotations

import functools

import numpy as np
import scipy.stats


class TraceCounter:
    """Wraps a function and counts how often JAX traces it (Python calls under jit)."""

    def __init__(self, fn):
        self.fn = fn
        self.count = 0
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.fn(*args, **kwargs)


def bonferroni_t_quantile(false_alarm_rate: float, n_tests: int, dof: int) -> float:
    """Two-sided Student-t quantile for ``n_tests`` simultaneous comparisons.

    A test whose statistic |mean - expected| / stderr is compared with this bound
    fails by chance with probability at most ``false_alarm_rate`` overall.
    """
    return float(scipy.stats.t.ppf(1 - false_alarm_rate / (2 * n_tests), dof))


def assert_within_stderr(
    estimate, stderr, expected, *, false_alarm_rate=1e-4, dof, floor=1e-12, name=""
):
    """Checks every entry of a Monte Carlo ``estimate`` against ``expected``.

    The bound is ``z * stderr + floor`` with ``z`` the Bonferroni-corrected Student-t
    quantile, so a correct ``expected`` fails with probability ``false_alarm_rate``.
    """
    estimate, stderr, expected = map(np.asarray, (estimate, stderr, expected))
    z = bonferroni_t_quantile(false_alarm_rate, estimate.size, dof)
    bound = z * stderr + floor * max(1.0, float(np.max(np.abs(expected))))
    excess = np.abs(estimate - expected) - bound
    worst = int(np.argmax(excess))
    assert np.all(excess <= 0), (
        f"{name}: Monte Carlo estimate off by more than {z:.2f} standard errors at "
        f"entry {np.unravel_index(worst, estimate.shape)}: estimate "
        f"{estimate.flat[worst]:.6g}, expected {expected.flat[worst]:.6g}, "
        f"stderr {stderr.flat[worst]:.3g}."
    )


def relative_frobenius(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def assert_symmetric_psd(matrix, *, rtol=1e-10, name=""):
    """Checks a ``(N, N)`` kernel is symmetric and positive semi-definite."""
    matrix = np.asarray(matrix)
    scale = max(np.max(np.abs(matrix)), 1e-300)
    np.testing.assert_allclose(matrix, matrix.T, atol=rtol * scale, err_msg=name)
    eigenvalues = np.linalg.eigvalsh((matrix + matrix.T) / 2)
    assert eigenvalues.min() >= -rtol * scale * matrix.shape[0], (
        f"{name}: not PSD, smallest eigenvalue {eigenvalues.min():.3g}"
    )


def slow_except_first(cases):
    """Parametrize values with every case after the first marked ``slow``.

    The fast tier keeps one case of an expensive family (a Monte Carlo check per
    layer family, say), so the code path is still exercised; the full tier runs all.
    """
    import pytest

    cases = list(cases)
    return cases[:1] + [pytest.param(c, marks=pytest.mark.slow) for c in cases[1:]]


# One activation per kernel module (arc-cosine, arcsine, GELU, sign, trigonometric,
# exponential, polynomial, quadrature): the fast tier runs these, the full tier all.
FAST_ACTIVATIONS = (
    "Relu",
    "Erf",
    "Gelu",
    "Sign",
    "Sin",
    "Exp",
    "Monomial3",
    "ElementwiseNumerical_tanh",
)


def slow_unless(cases, fast=FAST_ACTIVATIONS):
    """Parametrize values with the cases not in ``fast`` marked ``slow``."""
    import pytest

    return [c if c in fast else pytest.param(c, marks=pytest.mark.slow) for c in cases]


def truncate_file(path):
    """Damages a checkpoint file: keeps its first half."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty_file(path):
    """Damages a checkpoint file: no bytes."""
    path.write_bytes(b"")


def flip_bit(path):
    """Damages a checkpoint file: one bit flipped in the middle."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
