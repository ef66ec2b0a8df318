"""Robust dense linear algebra for kernel matrices.

Kernel matrices of wide networks are symmetric positive semi-definite in exact
arithmetic but often numerically singular (duplicate or close inputs, deep networks,
large data sets). Everything here works on a *symmetrised* matrix and adds a diagonal
regulariser in the convention of Neural Tangents: ``diag_reg`` is relative to the
mean of the diagonal (``diag_reg * trace(K) / N`` is added) unless
``absolute=True``.

When the regularised matrix still cannot be factorised, an escalating *jitter
ladder* of further relative diagonal terms is tried. The jitter actually used is
returned, so callers can report it. If every step fails, eager calls raise
:class:`LinAlgError` with an estimate of the condition number; traced calls (inside
``jit``/``grad``) cannot raise, so they return a factor full of NaN that the caller
must check (``fit_hyperparameters`` does).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

DEFAULT_JITTER_LADDER = (1e-10, 1e-8, 1e-6, 1e-4)
"""Relative jitters tried, in order, after the regularised matrix fails."""


class LinAlgError(np.linalg.LinAlgError):
    """A kernel matrix could not be factorised, even with the jitter ladder.

    Attributes:
        condition_estimate: ``lambda_max / lambda_min`` of the symmetrised,
            regularised matrix (``inf`` when ``lambda_min <= 0``).
        min_eigenvalue: the smallest eigenvalue of that matrix.
    """

    def __init__(self, message: str, condition_estimate: float, min_eigenvalue: float):
        super().__init__(message)
        self.condition_estimate = condition_estimate
        self.min_eigenvalue = min_eigenvalue


class CholeskyFactor(NamedTuple):
    """A Cholesky factor together with the diagonal that was added to get it.

    Attributes:
        factor: ``(N, N)`` lower-triangular ``L`` with ``L L^T = K + d I``.
        added_diagonal: scalar ``d >= 0``: the regulariser plus the jitter.
        jitter: scalar part of ``d`` that came from the jitter ladder (0 when the
            regularised matrix factorised directly).
    """

    factor: jax.Array
    added_diagonal: jax.Array
    jitter: jax.Array


def is_traced(*values) -> bool:
    """Whether any of ``values`` is a JAX tracer (inside ``jit``, ``grad``...)."""
    return any(isinstance(v, jax.core.Tracer) for v in values)


def mean_diagonal(matrix: ArrayLike) -> jax.Array:
    """``trace(K) / N`` of a ``(N, N)`` matrix: the scale of relative regularisers."""
    matrix = jnp.asarray(matrix)
    return jnp.trace(matrix) / matrix.shape[0]


def regularizer(matrix: ArrayLike, diag_reg: ArrayLike, *, absolute: bool = False):
    """The diagonal term ``diag_reg * trace(K) / N`` (or ``diag_reg`` if absolute).

    Args:
        matrix: ``(N, N)`` kernel.
        diag_reg: scalar ``>= 0``.
        absolute: static; use ``diag_reg`` as it is.

    Returns:
        A scalar.
    """
    if absolute:
        return jnp.asarray(diag_reg)
    return diag_reg * mean_diagonal(matrix)


def _symmetrize(matrix):
    return (matrix + matrix.T) / 2


def _add_diagonal(matrix, value):
    n = matrix.shape[0]
    return matrix + value * jnp.eye(n, dtype=matrix.dtype)


def _all_finite(x):
    return jnp.all(jnp.isfinite(x))


def _factor_ok(factor):
    """A failed Cholesky factor is NaN throughout, and NaN or inf inputs reach the
    diagonal, so checking the diagonal is enough (O(N) instead of O(N^2))."""
    return _all_finite(jnp.diagonal(factor))


_all_finite_jit = jax.jit(_all_finite)


@jax.custom_jvp
def _cholesky(matrix):
    """Lower Cholesky factor (NaN when it fails) whose derivative is 0, not NaN,
    where the factorisation failed, so an unused failed attempt cannot poison
    gradients."""
    return jnp.linalg.cholesky(matrix, symmetrize_input=False)


@_cholesky.defjvp
def _cholesky_jvp(primals, tangents):
    (matrix,), (d_matrix,) = primals, tangents
    factor = _cholesky(matrix)
    ok = _factor_ok(factor)
    safe = jnp.where(ok, factor, jnp.eye(matrix.shape[0], dtype=factor.dtype))
    d_sym = (d_matrix + d_matrix.T) / 2
    solve = functools.partial(jax.scipy.linalg.solve_triangular, safe, lower=True)
    inner = solve(solve(d_sym).T).T  # L^{-1} dA L^{-T}
    phi = jnp.tril(inner) - jnp.diag(jnp.diagonal(inner)) / 2
    return factor, jnp.where(ok, safe @ phi, 0.0)


def check_jitter_ladder(jitter_ladder) -> tuple[float, ...]:
    """Checks a jitter ladder: a non-empty sequence of increasing numbers > 0.

    Args:
        jitter_ladder: the relative jitters, e.g. :data:`DEFAULT_JITTER_LADDER`.

    Returns:
        The ladder as a tuple of Python floats.

    Raises:
        TypeError: if it is not a sequence of real numbers.
        ValueError: if it is empty, or a value is not finite and > 0, or the
            values do not increase.
    """
    expected = (
        f"a non-empty tuple of increasing numbers > 0, e.g. {DEFAULT_JITTER_LADDER}"
    )
    if isinstance(jitter_ladder, str | bytes) or not hasattr(jitter_ladder, "__len__"):
        raise TypeError(f"jitter_ladder must be {expected}, got {jitter_ladder!r}.")
    try:
        ladder = tuple(float(j) for j in jitter_ladder)
    except (TypeError, ValueError):
        raise TypeError(
            f"jitter_ladder must be {expected}, got {jitter_ladder!r}."
        ) from None
    if not ladder:
        raise ValueError(f"jitter_ladder must be {expected}, got {jitter_ladder!r}.")
    if not all(np.isfinite(j) and j > 0 for j in ladder) or any(
        b <= a for a, b in zip(ladder, ladder[1:], strict=False)
    ):
        raise ValueError(f"jitter_ladder must be {expected}, got {jitter_ladder!r}.")
    return ladder


def _usable_ladder(ladder, dtype) -> tuple[float, ...]:
    """Drops jitters below the resolution of ``dtype`` (they would change nothing)."""
    eps = float(jnp.finfo(dtype).eps)
    return tuple(float(j) for j in ladder if j >= eps) or (float(ladder[-1]),)


def cholesky(
    matrix: ArrayLike,
    *,
    diag_reg: ArrayLike = 0.0,
    absolute: bool = False,
    jitter_ladder: tuple[float, ...] = DEFAULT_JITTER_LADDER,
    check: bool = True,
) -> CholeskyFactor:
    r"""Cholesky factor of a symmetric PSD matrix with a relative regulariser.

    Factorises :math:`\tfrac12(K + K^\top) + (\lambda + j) I` where
    :math:`\lambda = \texttt{diag\_reg}\cdot\mathrm{tr}(K)/N` (or ``diag_reg`` when
    ``absolute``) and :math:`j = 0` if that succeeds, else the first
    :math:`j = \texttt{jitter}_i \cdot \mathrm{tr}(K)/N` of the ladder that does.
    Differentiable (the choice of jitter is not differentiated); only one
    factorisation is done when no jitter is needed. Concrete inputs run the
    ladder as a Python loop; traced inputs (``jit``, ``grad``) as ``lax.cond`` and
    ``lax.while_loop``.

    Args:
        matrix: ``(N, N)`` symmetric kernel.
        diag_reg: scalar ``>= 0`` (may be traced).
        absolute: static; ``diag_reg`` is an absolute variance.
        jitter_ladder: static; increasing relative jitters. Values below the dtype's
            resolution (``eps``) are skipped.
        check: static; in eager mode, raise :class:`LinAlgError` if every step of
            the ladder fails. Ignored under tracing.

    Returns:
        A :class:`CholeskyFactor`.

    Raises:
        LinAlgError: eager mode only, when the matrix is not numerically positive
            definite even with the largest jitter. The message gives the smallest
            eigenvalue and the condition estimate.
        ValueError: if ``matrix`` is not square or contains NaN/inf (eager mode),
            or ``jitter_ladder`` is empty or not increasing and positive.
        TypeError: if ``jitter_ladder`` is not a sequence of numbers.
    """
    matrix = jnp.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square (N, N), got shape {matrix.shape}.")
    jitter_ladder = check_jitter_ladder(jitter_ladder)
    eager = not is_traced(matrix, diag_reg)
    if eager and check and not bool(_all_finite_jit(matrix)):
        raise ValueError("the kernel matrix contains NaN or inf entries.")
    ladder = _usable_ladder(jitter_ladder, matrix.dtype)
    if not eager:
        return _cholesky_with_ladder(matrix, diag_reg, absolute, ladder)
    result = _eager_ladder(matrix, diag_reg, absolute, ladder)
    if check and not bool(_factor_ok(result.factor)):
        raise _failure(matrix, result.added_diagonal, jitter_ladder)
    return result


@jax.jit
def _shifted_cholesky(matrix, shift):
    """Factor of the symmetrised ``matrix + shift I`` (one fused pass, then LAPACK)."""
    shifted = _add_diagonal(_symmetrize(matrix), shift)
    return jnp.linalg.cholesky(shifted, symmetrize_input=False)


def _eager_ladder(matrix, diag_reg, absolute, ladder) -> CholeskyFactor:
    """The ladder on concrete values: a Python loop, without the traced branches."""
    base = regularizer(matrix, diag_reg, absolute=absolute)
    factor = _shifted_cholesky(matrix, base)
    if bool(_factor_ok(factor)):
        return CholeskyFactor(factor, base, jnp.zeros((), matrix.dtype))
    scale = mean_diagonal(matrix)
    for relative in ladder:
        jitter = relative * scale
        factor = _shifted_cholesky(matrix, base + jitter)
        if bool(_factor_ok(factor)):
            return CholeskyFactor(factor, base + jitter, jitter)
    return CholeskyFactor(factor, base, jnp.full((), jnp.nan, matrix.dtype))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _cholesky_with_ladder(matrix, diag_reg, absolute, ladder):
    matrix = _symmetrize(matrix)
    base = regularizer(matrix, diag_reg, absolute=absolute)
    scale = jax.lax.stop_gradient(mean_diagonal(matrix))
    first = _cholesky(_add_diagonal(matrix, base))
    ladder_values = jnp.asarray(ladder, dtype=matrix.dtype)

    def factor_ok(_):
        return first, jnp.zeros((), matrix.dtype)

    def escalate(_):
        fixed = jax.lax.stop_gradient(_add_diagonal(matrix, base))

        def keep_going(state):
            index, ok = state
            return jnp.logical_and(jnp.logical_not(ok), index < len(ladder))

        def try_next(state):
            index, _ = state
            jitter = ladder_values[index] * scale
            factor = jnp.linalg.cholesky(
                _add_diagonal(fixed, jitter), symmetrize_input=False
            )
            return index + 1, _factor_ok(factor)

        index, ok = jax.lax.while_loop(keep_going, try_next, (0, jnp.array(False)))
        jitter = jnp.where(ok, ladder_values[index - 1] * scale, jnp.nan)
        factor = jnp.linalg.cholesky(
            _add_diagonal(matrix, base + jitter), symmetrize_input=False
        )
        return factor, jitter

    factor, jitter = jax.lax.cond(_factor_ok(first), factor_ok, escalate, None)
    added = base + jnp.where(jnp.isfinite(jitter), jitter, 0.0)
    return CholeskyFactor(factor, added, jitter)


def _failure(matrix, added_diagonal, ladder) -> LinAlgError:
    """Builds the error for a matrix that the whole ladder could not factorise."""
    host = np.asarray(matrix, dtype=np.float64)
    host = (host + host.T) / 2 + float(added_diagonal) * np.eye(host.shape[0])
    eigenvalues = np.linalg.eigvalsh(host)
    low, high = float(eigenvalues[0]), float(eigenvalues[-1])
    condition = high / low if low > 0 else float("inf")
    message = (
        f"Cholesky factorisation of the ({host.shape[0]}, {host.shape[0]}) kernel "
        f"matrix failed, even after adding relative jitter up to {max(ladder):g} x "
        f"mean diagonal ({np.asarray(matrix).dtype}). Smallest eigenvalue "
        f"{low:.3e}, largest {high:.3e}, condition estimate {condition:.3e}. "
    )
    if low < -1e-6 * abs(high):
        message += (
            "The matrix is not positive semi-definite: check the kernel (a valid "
            "kernel gives a PSD Gram matrix)."
        )
    else:
        message += (
            "The matrix is numerically singular: increase diag_reg or noise_var, "
            "or compute in float64 (jax.config.update('jax_enable_x64', True))."
        )
    return LinAlgError(message, condition, low)


def cho_solve(chol: CholeskyFactor, rhs: ArrayLike) -> jax.Array:
    """Solves ``(K + d I) X = B`` with the factor from :func:`cholesky`.

    Args:
        chol: the factor of the ``(N, N)`` matrix.
        rhs: ``(N,)`` or ``(N, k)`` right-hand side.

    Returns:
        ``X`` with the shape of ``rhs``.
    """
    return jax.scipy.linalg.cho_solve((chol.factor, True), jnp.asarray(rhs))


def half_solve(chol: CholeskyFactor, rhs: ArrayLike) -> jax.Array:
    """``L^{-1} B`` (one triangular solve): ``||L^{-1} b||^2 = b^T (K + dI)^{-1} b``.

    Args:
        chol: the factor of the ``(N, N)`` matrix.
        rhs: ``(N,)`` or ``(N, k)``.

    Returns:
        ``L^{-1} B`` with the shape of ``rhs``.
    """
    return jax.scipy.linalg.solve_triangular(chol.factor, jnp.asarray(rhs), lower=True)


def log_det(chol: CholeskyFactor) -> jax.Array:
    """``log det(K + d I) = 2 sum log diag(L)``."""
    return 2 * jnp.sum(jnp.log(jnp.diagonal(chol.factor)))


def gaussian_log_likelihood(chol: CholeskyFactor, targets: ArrayLike) -> jax.Array:
    r"""Log density of independent columns ``y_k ~ N(0, K + d I)``.

    :math:`-\tfrac12\sum_k y_k^\top (K+dI)^{-1} y_k - \tfrac{m}{2}\log\det(K+dI)
    - \tfrac{Nm}{2}\log 2\pi` for ``m`` columns.

    Args:
        chol: the factor of the ``(N, N)`` covariance.
        targets: ``(N, m)``.

    Returns:
        A scalar.
    """
    targets = jnp.asarray(targets)
    n, m = targets.shape
    white = half_solve(chol, targets)
    return -0.5 * (jnp.sum(white**2) + m * log_det(chol) + n * m * jnp.log(2 * jnp.pi))


def symmetric_eigh(matrix: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Eigendecomposition of the symmetrised matrix, eigenvalues clipped at 0.

    Used when many functions of the same matrix are needed (e.g. the NTK
    gradient-descent predictive at many times), where one ``O(N^3)``
    decomposition replaces one solve per time.

    Args:
        matrix: ``(N, N)`` symmetric PSD matrix.

    Returns:
        ``(eigenvalues (N,), eigenvectors (N, N))`` with ascending eigenvalues
        ``>= 0`` (round-off negatives are set to 0) and orthonormal columns.
    """
    matrix = jnp.asarray(matrix)
    values, vectors = jnp.linalg.eigh(_symmetrize(matrix))
    return jnp.maximum(values, 0.0), vectors


def condition_estimate(matrix: ArrayLike) -> float:
    """``lambda_max / lambda_min`` of the symmetrised matrix (``inf`` if singular).

    Costs one dense eigenvalue computation (``O(N^3)``, host numpy, float64).

    Args:
        matrix: ``(N, N)``.

    Returns:
        A Python float.
    """
    host = np.asarray(matrix, dtype=np.float64)
    eigenvalues = np.linalg.eigvalsh((host + host.T) / 2)
    low, high = eigenvalues[0], eigenvalues[-1]
    return float(high / low) if low > 0 else float("inf")
