r"""Preconditioned conjugate gradients for kernel systems, and their preconditioners.

The exact GP needs :math:`(K + \sigma^2 I)^{-1} Y`. When the ``N x N`` kernel and
its Cholesky factor do not fit in memory, conjugate gradients solve the system
with products :math:`(K + \sigma^2 I) V` only, which a tiled kernel computes a
block of rows at a time. Convergence depends on the condition number; a
preconditioner :math:`P \approx K + \sigma^2 I` of the form low rank plus
diagonal, :math:`P = F F^\top + d I` with ``F`` ``(N, k)``, is applied in
``O(N k)`` by the Woodbury identity. Two choices of ``F``: a rank-``k`` pivoted
Cholesky factor of ``K`` (Harbrecht, Peters & Schneider 2012), which needs ``k``
kernel columns and the diagonal; or random features :math:`\Phi` of the network
(:func:`widebnn.kernels.feature_map`), with :math:`\Phi\Phi^\top \approx K`.

Every right-hand side (column of ``b``) runs its own CG recursion; all columns
share each product with the matrix. Sums are in the dtype of ``b`` (float64 when
JAX runs with x64).

References:
    Hestenes & Stiefel (1952), "Methods of conjugate gradients for solving linear
    systems"; Gardner et al. (2018), "GPyTorch: blackbox matrix-matrix Gaussian
    process inference with GPU acceleration" (batched CG with a pivoted Cholesky
    preconditioner); Harbrecht, Peters & Schneider (2012), "On the low-rank
    approximation by the pivoted Cholesky decomposition".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ._linalg import LinAlgError


class CGResult(NamedTuple):
    """The outcome of :func:`conjugate_gradients`.

    Attributes:
        solution: ``(N, k)`` the approximate solution.
        iterations: matrix products used (the same for every column).
        relative_residuals: ``(k,)`` :math:`\\|b - A x\\| / \\|b\\|` per column,
            recomputed from the recursion's residuals.
        converged: whether every column reached the tolerance.
        coefficients: ``(iterations, 3, k)`` the recursion's ``alpha``, ``beta`` and
            whether the column was still iterating, per iteration (they define the
            Lanczos tridiagonal matrices of :func:`lanczos_tridiagonals`).
        initial_rz: ``(k,)`` :math:`r_0^\top P^{-1} r_0` of each column.
    """

    solution: jax.Array
    iterations: int
    relative_residuals: np.ndarray
    converged: bool
    coefficients: np.ndarray
    initial_rz: np.ndarray


def conjugate_gradients(
    matvec: Callable[[jax.Array], jax.Array],
    b: jax.Array,
    *,
    precondition: Callable[[jax.Array], jax.Array] | None = None,
    tol: float = 1e-10,
    max_iters: int | None = None,
    progress: bool = False,
) -> CGResult:
    r"""Solves :math:`A X = B` for symmetric positive definite ``A`` by (P)CG.

    Args:
        matvec: ``V (N, k) -> A V (N, k)``.
        b: ``(N, k)`` right-hand sides (a ``(N,)`` vector is one column).
        precondition: ``R (N, k) -> P^{-1} R`` for a symmetric positive definite
            ``P``; ``None`` is plain CG.
        tol: stop when every column has :math:`\|r\| \le \texttt{tol}\,\|b\|`.
        max_iters: at most this many products (default ``10 N``).
        progress: show a progress bar (the largest relative residual).

    Returns:
        A :class:`CGResult`; ``converged`` is ``False`` if ``max_iters`` ran out.

    Raises:
        LinAlgError: if a search direction has :math:`p^\top A p \le 0` (``A`` is
            not positive definite: duplicated inputs with no noise, say); its
            ``min_eigenvalue`` is the Rayleigh quotient of that direction, an
            upper bound on the smallest eigenvalue.
        FloatingPointError: if a product is not finite.
        ValueError: on a ``tol`` outside ``(0, 1)`` or ``max_iters < 1``.
    """
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol}.")
    vector = b.ndim == 1
    b = b[:, None] if vector else b
    if b.ndim != 2:
        raise ValueError(f"b must be (N,) or (N, k), got shape {b.shape}.")
    n = b.shape[0]
    max_iters = 10 * n if max_iters is None else max_iters
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}.")
    identity = lambda r: r  # noqa: E731
    precondition = identity if precondition is None else precondition

    b_norm = jnp.linalg.norm(b, axis=0)
    scale = jnp.where(b_norm > 0, b_norm, 1.0)
    x = jnp.zeros_like(b)
    r = b
    z = precondition(r)
    p = z
    rz = jnp.sum(r * z, axis=0, keepdims=True)  # (1, k): one scalar per column
    relative = np.asarray(jnp.linalg.norm(r, axis=0) / scale)
    initial_rz = np.asarray(rz[0])
    coefficients = []
    bar = tqdm(total=max_iters, desc="conjugate gradients", disable=not progress)
    iterations = 0
    try:
        while iterations < max_iters and np.any(relative > tol):
            ap = matvec(p)
            iterations += 1
            curvature = jnp.sum(p * ap, axis=0, keepdims=True)
            active = jnp.asarray(relative > tol)[None, :]
            if not bool(jnp.all(jnp.isfinite(curvature))):
                raise FloatingPointError(
                    f"conjugate_gradients: the product A p is not finite at "
                    f"iteration {iterations}."
                )
            if bool(jnp.any(active & (curvature <= 0))):
                # p^T A p / p^T p bounds the smallest eigenvalue from above.
                quotient = curvature / jnp.sum(p * p, axis=0, keepdims=True)
                raise LinAlgError(
                    "conjugate_gradients: the matrix is not positive definite "
                    f"(p^T A p <= 0 at iteration {iterations}). Add noise or a "
                    "diagonal regulariser (duplicated inputs with noise_var = 0 "
                    "make the kernel singular).",
                    condition_estimate=float("inf"),
                    min_eigenvalue=float(jnp.min(jnp.where(active, quotient, jnp.inf))),
                )
            alpha = jnp.where(active, rz / jnp.where(active, curvature, 1.0), 0.0)
            x = x + alpha * p
            r = r - alpha * ap
            z = precondition(r)
            rz_new = jnp.sum(r * z, axis=0, keepdims=True)
            beta = jnp.where(active, rz_new / jnp.where(rz != 0, rz, 1.0), 0.0)
            p = z + beta * p
            rz = rz_new
            coefficients.append(np.stack([alpha[0], beta[0], active[0]]))
            relative = np.asarray(jnp.linalg.norm(r, axis=0) / scale)
            bar.update(1)
            bar.set_postfix(residual=f"{relative.max():.2e}")
    finally:
        bar.close()
    solution = x[:, 0] if vector else x
    coefficients_array = (
        np.stack(coefficients) if coefficients else np.zeros((0, 3, b.shape[1]))
    )
    return CGResult(
        solution,
        iterations,
        relative,
        bool(np.all(relative <= tol)),
        coefficients_array,
        initial_rz,
    )


def lanczos_tridiagonals(result: CGResult) -> list[np.ndarray]:
    r"""The Lanczos tridiagonal matrix of each column, from its CG coefficients.

    CG on :math:`A x = b` with preconditioner ``P`` is the Lanczos process on
    :math:`P^{-1/2} A P^{-1/2}` started at :math:`P^{-1/2} b / \|\cdot\|`; its
    tridiagonal matrix has diagonal :math:`1/lpha_j + eta_{j-1}/lpha_{j-1}`
    and off-diagonal :math:`\sqrt{eta_j}/lpha_j` (Saad 2003, section 6.7.3).

    Returns:
        One ``(t, t)`` symmetric matrix per column, ``t`` its iterations.
    """
    out = []
    for column in range(result.coefficients.shape[2]):
        active = result.coefficients[:, 2, column] > 0
        alpha = result.coefficients[active, 0, column]
        beta = result.coefficients[active, 1, column]
        diagonal = 1.0 / alpha
        diagonal[1:] += beta[:-1] / alpha[:-1]
        off = np.sqrt(np.maximum(beta[:-1], 0.0)) / alpha[:-1]
        out.append(np.diag(diagonal) + np.diag(off, 1) + np.diag(off, -1))
    return out


class LogDetEstimate(NamedTuple):
    """A stochastic Lanczos quadrature estimate of a log-determinant.

    Attributes:
        value: the estimate.
        standard_error: its Monte Carlo standard error (sample standard deviation
            of the probes' estimates over ``sqrt(probes)``).
        iterations: matrix products used (all probes share them).
    """

    value: float
    standard_error: float
    iterations: int


def stochastic_log_det(
    matvec: Callable[[jax.Array], jax.Array],
    num_points: int,
    key: jax.Array,
    *,
    probes: int = 32,
    preconditioner: LowRankPreconditioner | None = None,
    dtype=jnp.float64,
    tol: float = 1e-8,
    max_iters: int | None = None,
    progress: bool = False,
) -> LogDetEstimate:
    r""":math:`\log\det A` by stochastic Lanczos quadrature on preconditioned CG.

    With :math:`P = FF^\top + dI`, :math:`\log\det A = \log\det P +
    \mathrm{tr}\log(P^{-1/2}AP^{-1/2})`; the first term is exact
    (:math:`(N-k)\log d + \log\det(dI_k + F^\top F)`), the trace is
    :math:`E[w^\top \log(M) w]` for :math:`w \sim N(0, I)`. Each probe
    :math:`z = P^{1/2}w` (drawn as :math:`F\epsilon_1 + \sqrt{d}\,\epsilon_2`)
    is a right-hand side of preconditioned CG, whose coefficients give the
    Lanczos matrix ``T`` of ``M`` started at ``w``:
    :math:`w^\top\log(M)w \approx \|w\|^2 e_1^\top \log(T) e_1` (Gauss
    quadrature), with :math:`\|w\|^2 = z^\top P^{-1} z`. A better
    preconditioner needs fewer iterations and leaves less variance.

    Args:
        matvec: ``V (N, k) -> A V`` for symmetric positive definite ``A``.
        num_points: ``N``.
        key: PRNG key of the probes.
        probes: number of probe vectors, ``>= 2``.
        preconditioner: a :class:`LowRankPreconditioner` or ``None`` (``P = I``).
        dtype: of the probes.
        tol, max_iters, progress: as in :func:`conjugate_gradients`.

    Returns:
        A :class:`LogDetEstimate`.

    References:
        Ubaru, Chen & Saad (2017), "Fast estimation of tr(f(A)) via stochastic
        Lanczos quadrature"; Gardner et al. (2018), GPyTorch (the Lanczos
        coefficients read off preconditioned CG).
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 2:
        raise ValueError(f"probes must be an integer >= 2, got {probes!r}.")
    first, second = jax.random.split(key)
    noise = jax.random.normal(first, (num_points, probes), dtype)
    if preconditioner is None:
        z, log_det_p = noise, 0.0
    else:
        factor, d = preconditioner.factor, preconditioner.diagonal
        low = jax.random.normal(second, (factor.shape[1], probes), dtype)
        z = factor.astype(dtype) @ low + jnp.sqrt(d) * noise
        log_det_p = preconditioner.log_det()
    result = conjugate_gradients(
        matvec,
        z,
        precondition=preconditioner,
        tol=tol,
        max_iters=max_iters,
        progress=progress,
    )
    per_probe = []
    for t, norm_sq in zip(lanczos_tridiagonals(result), result.initial_rz, strict=True):
        theta, vectors = np.linalg.eigh(t)
        if np.any(theta <= 0):
            raise LinAlgError(
                "stochastic_log_det: a Lanczos matrix has a non-positive "
                "eigenvalue: the matrix is not positive definite.",
                condition_estimate=float("inf"),
                min_eigenvalue=float(theta.min()),
            )
        per_probe.append(norm_sq * np.sum(vectors[0] ** 2 * np.log(theta)))
    estimates = np.asarray(per_probe)
    return LogDetEstimate(
        log_det_p + float(estimates.mean()),
        float(estimates.std(ddof=1) / np.sqrt(probes)),
        result.iterations,
    )


def pivoted_cholesky(
    diagonal: jax.Array,
    column: Callable[[int], jax.Array],
    rank: int,
    *,
    rtol: float = 1e-12,
) -> jax.Array:
    r"""A rank-``rank`` pivoted Cholesky factor ``L`` with :math:`K \approx LL^\top`.

    Greedy: each step takes the largest remaining diagonal entry of
    :math:`K - LL^\top` as the pivot and adds the (scaled) residual column there.
    It stops early when that entry falls below ``rtol`` times the largest
    diagonal entry of ``K`` (``K`` is then reproduced to that accuracy).

    Args:
        diagonal: ``(N,)`` the diagonal of ``K``.
        column: ``i -> K[:, i]``, ``(N,)``.
        rank: the largest rank, ``>= 1``.
        rtol: relative size of the remaining diagonal at which to stop.

    Returns:
        ``(N, r)`` with ``r <= rank``.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}.")
    remaining = np.array(diagonal, dtype=np.result_type(float, diagonal.dtype))
    n = remaining.shape[0]
    rank = min(rank, n)
    factor = np.zeros((n, rank), remaining.dtype)
    stop = rtol * float(remaining.max(initial=0.0))
    for j in range(rank):
        pivot = int(np.argmax(remaining))
        if remaining[pivot] <= stop:
            return jnp.asarray(factor[:, :j])
        col = np.asarray(column(pivot), remaining.dtype)
        new = (col - factor[:, :j] @ factor[pivot, :j]) / np.sqrt(remaining[pivot])
        factor[:, j] = new
        remaining = remaining - new**2
        remaining[pivot] = 0.0
    return jnp.asarray(factor)


class LowRankPreconditioner:
    r"""Applies :math:`P^{-1}` for :math:`P = F F^\top + d I` by Woodbury.

    :math:`P^{-1} r = (r - F (d I_k + F^\top F)^{-1} F^\top r) / d`, with the
    ``k x k`` matrix factorised once: ``O(N k)`` per application.

    Args:
        factor: ``(N, k)`` the low-rank factor ``F`` (pivoted Cholesky, or random
            features of the kernel).
        diagonal: ``d > 0``, the noise (plus regulariser) of the system.
    """

    def __init__(self, factor: jax.Array, diagonal: float):
        if not float(diagonal) > 0:
            raise ValueError(
                f"the preconditioner's diagonal must be > 0, got {diagonal}."
            )
        self.factor = factor
        self.diagonal = diagonal
        inner = diagonal * jnp.eye(factor.shape[1], dtype=factor.dtype)
        self._chol = jnp.linalg.cholesky(inner + factor.T @ factor)

    def log_det(self) -> float:
        """:math:`\\log\\det P = (N - k)\\log d + \\log\\det(dI_k + F^\\top F)`
        (the determinant lemma)."""
        n, k = self.factor.shape
        inner = 2 * jnp.sum(jnp.log(jnp.diagonal(self._chol)))
        return float((n - k) * jnp.log(self.diagonal) + inner)

    def __call__(self, r: jax.Array) -> jax.Array:
        projected = jax.scipy.linalg.cho_solve((self._chol, True), self.factor.T @ r)
        return (r - self.factor @ projected) / self.diagonal
