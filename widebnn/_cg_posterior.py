r"""The exact GP posterior by conjugate gradients: ``gp.posterior(..., solver="cg")``.

The same posterior as the Cholesky path, without an ``N x N`` factor: the
training system :math:`(K + dI)\alpha = Y` is solved by preconditioned conjugate
gradients (:mod:`widebnn._cg`) with the kernel applied tile by tile
(:mod:`widebnn._kernel_operator`). Predictions need the kernel between the test
and training inputs, computed a block of test inputs at a time; variances need
one more solve with the ``M`` test columns as right-hand sides.

``solver="auto"`` keeps the Cholesky path while three dense ``N x N`` matrices
fit in a fixed budget (``N <= AUTO_CHOLESKY_MAX_POINTS``), and inside ``jit`` or
``grad`` (conjugate gradients run a Python loop with a stopping test).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from widebnn.kernels import FeatureMap

from . import _gp_core
from ._cg import (
    LogDetEstimate,
    LowRankPreconditioner,
    conjugate_gradients,
    pivoted_cholesky,
    stochastic_log_det,
)
from ._feature_blocks import call_features
from ._kernel_operator import KernelOperator

SOLVERS = ("auto", "cholesky", "cg")

#: ``solver="auto"`` uses Cholesky up to this many training points (three float64
#: ``N x N`` matrices are 9.6 GB at 20 000).
AUTO_CHOLESKY_MAX_POINTS = 20_000

#: Options of ``solver="cg"`` and their defaults.
CG_DEFAULTS = {
    "tol": 1e-10,
    "max_iters": None,
    "tile": 1024,
    "cache": True,
    "preconditioner": "pivoted_cholesky",
    "rank": 100,
    "progress": True,
}
PRECONDITIONERS = ("pivoted_cholesky", None)


def choose_solver(solver: str, num_points: int, traced: bool) -> str:
    """``"cholesky"`` or ``"cg"`` for ``solver`` (resolving ``"auto"``)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
    if solver == "cg" and traced:
        raise ValueError(
            "solver='cg' needs concrete inputs (its iterations stop on a residual "
            "test); inside jit or grad use solver='cholesky'."
        )
    if solver == "auto":
        small = num_points <= AUTO_CHOLESKY_MAX_POINTS
        return "cholesky" if traced or small else "cg"
    return solver


def check_cg_options(options: Mapping | None) -> dict:
    """``CG_DEFAULTS`` updated by ``options``, unknown keys refused."""
    options = dict(options or {})
    unknown = set(options) - set(CG_DEFAULTS)
    if unknown:
        raise ValueError(
            f"cg_options: unknown keys {sorted(unknown)}; known: {sorted(CG_DEFAULTS)}."
        )
    merged = {**CG_DEFAULTS, **options}
    preconditioner = merged["preconditioner"]
    if preconditioner not in PRECONDITIONERS and not callable(preconditioner):
        raise ValueError(
            "cg_options['preconditioner'] must be 'pivoted_cholesky', None, or a "
            "feature map of the network (widebnn.kernels.feature_map), got "
            f"{preconditioner!r}."
        )
    if isinstance(preconditioner, FeatureMap) and preconditioner.method == "exact":
        raise ValueError(
            "cg_options['preconditioner']: a feature map with method='exact' "
            "factors each block of rows in its own basis; build it with "
            "method='random'."
        )
    rank = merged["rank"]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"cg_options['rank'] must be an integer >= 1, got {rank!r}.")
    return merged


def _feature_factor(fmap, x, name: str, tile: int, dtype) -> jax.Array:
    """``(N, m)`` features of the ``name`` kernel, computed ``tile`` rows at a time
    (each block checked to be ``(n, m)``)."""
    blocks = [
        call_features(fmap, x[start : start + tile], (name,), dtype)[0]
        for start in range(0, x.shape[0], tile)
    ]
    return jnp.concatenate(blocks, axis=0)


class IterativePosterior:
    """A GP posterior whose training solve is by conjugate gradients.

    Built by :func:`widebnn.gp.posterior` with ``solver="cg"`` (or ``"auto"`` on
    large data). Same attributes as :class:`widebnn.gp.Posterior`, except that
    ``log_marginal_likelihood`` is ``None`` (it needs a log-determinant), plus:

    Attributes:
        iterations: matrix products of the training solve.
        relative_residuals: ``(out,)`` final :math:`\\|r\\| / \\|y\\|` per output.
        converged: whether every output reached the tolerance.
        preconditioner_rank: columns of the low-rank preconditioner (0: none).
    """

    def __init__(
        self, kernel, get, x_train, y_train, noise_var, diag_reg, absolute, options
    ):
        self._kernel = kernel
        self._fn = _gp_core.as_kernel_fn(kernel)
        self.get = get
        self.x_train = x_train
        self.y_train = y_train
        self.noise_var = noise_var
        self._options = options
        self._name = "ntk" if get == "ntkgp" else "nngp"
        diagonal = _gp_core.kernel_diagonal(kernel, self._fn, x_train, (self._name,))
        diagonal = diagonal[self._name]
        self.mean_diagonal = jnp.mean(diagonal)
        reg = diag_reg if absolute else diag_reg * self.mean_diagonal
        self.added_diagonal = noise_var + reg
        self.jitter = 0.0
        self.log_marginal_likelihood = None
        if not float(self.added_diagonal) > 0:
            raise ValueError(
                "solver='cg' needs noise_var + regulariser > 0 (conjugate gradients "
                "on a singular kernel do not converge); use solver='cholesky' for "
                "an interpolating GP."
            )
        self._operator = KernelOperator(
            kernel,
            x_train,
            self._name,
            self.added_diagonal,
            tile=options["tile"],
            cache=options["cache"],
        )
        self._precondition = self._build_preconditioner(diagonal)
        result = self._solve(y_train)
        self._alpha = result.solution
        self.iterations = result.iterations
        self.relative_residuals = result.relative_residuals
        self.converged = result.converged

    def _build_preconditioner(self, diagonal):
        choice = self._options["preconditioner"]
        self.preconditioner_rank = 0
        if choice is None:
            return None
        if choice == "pivoted_cholesky":
            factor = pivoted_cholesky(
                diagonal, self._operator.column, self._options["rank"]
            )
        else:  # a feature map
            factor = _feature_factor(
                choice, self.x_train, self._name, self._options["tile"], diagonal.dtype
            )
        self.preconditioner_rank = factor.shape[1]
        return LowRankPreconditioner(factor, self.added_diagonal)

    def _solve(self, rhs):
        result = conjugate_gradients(
            self._operator,
            rhs,
            precondition=self._precondition,
            tol=self._options["tol"],
            max_iters=self._options["max_iters"],
            progress=self._options["progress"],
        )
        if not result.converged:
            warnings.warn(
                f"widebnn.gp.posterior(solver='cg'): conjugate gradients stopped "
                f"after {result.iterations} products with relative residual "
                f"{result.relative_residuals.max():.2e} > tol "
                f"{self._options['tol']:.1e}. Raise cg_options['max_iters'] or "
                "noise_var, or use a preconditioner of higher rank.",
                RuntimeWarning,
                stacklevel=3,
            )
        return result

    def _cross(self, x_test) -> jax.Array:
        """``(M, N)`` kernel between test and training inputs, by test blocks;
        NaN or inf refused."""
        tile = self._options["tile"]
        blocks = [
            _gp_core.evaluate(
                self._fn,
                x_test[start : start + tile],
                self.x_train,
                (self._name,),
                "kernel(x_test, x_train)",
            )[self._name]
            for start in range(0, x_test.shape[0], tile)
        ]
        cross = jnp.concatenate(blocks, axis=0)
        if not bool(jnp.all(jnp.isfinite(cross))):
            raise ValueError(
                f"the {self._name} kernel(x_test, x_train) has NaN or inf."
            )
        return cross

    def estimate_log_marginal_likelihood(
        self, key: jax.Array, probes: int = 32
    ) -> LogDetEstimate:
        r"""``log p(y_train)`` with its Monte Carlo standard error.

        :math:`-\tfrac12 \sum_c y_c^\top\alpha_c - \tfrac{out}{2}\log\det(K + dI)
        - \tfrac{N\,out}{2}\log 2\pi`, the log-determinant by stochastic Lanczos
        quadrature on preconditioned CG (:func:`widebnn._cg.stochastic_log_det`,
        the posterior's preconditioner, ``probes`` probes).

        Args:
            key: PRNG key of the probes.
            probes: probe vectors, ``>= 2``; the standard error falls like
                ``1/sqrt(probes)``.

        Returns:
            ``(value, standard_error, iterations)``.
        """
        n, out = self.y_train.shape
        log_det = stochastic_log_det(
            self._operator,
            n,
            key,
            probes=probes,
            preconditioner=self._precondition,
            dtype=self._alpha.dtype,
            max_iters=self._options["max_iters"],
            progress=self._options["progress"],
        )
        fit = float(jnp.sum(self.y_train * self._alpha))
        value = -0.5 * fit - 0.5 * out * log_det.value
        value -= 0.5 * n * out * float(jnp.log(2 * jnp.pi))
        return LogDetEstimate(
            value, 0.5 * out * log_det.standard_error, log_det.iterations
        )

    def predict_mean(self, x_test) -> jax.Array:
        """``(M, out)`` the predictive mean alone: one ``(M, N)`` kernel block, no
        solve (the variances of :meth:`predict` cost a solve with ``M``
        right-hand sides; ask for them on the test points that need them)."""
        x_test = _gp_core.check_inputs(x_test, "x_test")
        return self._cross(x_test) @ self._alpha

    def predict(
        self,
        x_test,
        full_cov: bool = True,
        *,
        observation_noise: bool = False,
    ) -> _gp_core.Prediction:
        r"""Predictive mean and covariance at ``x_test`` (as
        :meth:`widebnn.gp.Posterior.predict`).

        The mean costs one ``(M, N)`` kernel block; the covariance another
        conjugate-gradient solve with the ``M`` test points as right-hand sides.

        Args:
            x_test: ``(M, ...)`` test inputs.
            full_cov: return the ``(M, M)`` covariance, else ``(M,)`` variances.
            observation_noise: add ``noise_var`` to the variances.

        Returns:
            A :class:`widebnn.gp.Prediction`.
        """
        x_test = _gp_core.check_inputs(x_test, "x_test")
        cross = self._cross(x_test)
        mean = cross @ self._alpha
        solved = self._solve(cross.T).solution  # (N, M)
        if full_cov:
            test = _gp_core.evaluate(
                self._fn, x_test, None, (self._name,), "kernel(x_test)"
            )[self._name]
            cov = test - cross @ solved
            cov = (cov + cov.T) / 2
            if observation_noise:
                cov = cov + self.noise_var * jnp.eye(cov.shape[0], dtype=cov.dtype)
        else:
            test = _gp_core.kernel_diagonal(
                self._kernel, self._fn, x_test, (self._name,)
            )[self._name]
            cov = test - jnp.sum(cross * solved.T, axis=1)
            if observation_noise:
                cov = cov + self.noise_var
        return _gp_core.Prediction(mean, cov)


def iterative_posterior(
    kernel, get, x_train, y_train, noise_var, diag_reg, absolute, cg_options
) -> IterativePosterior:
    """Checks the options and builds an :class:`IterativePosterior`."""
    if get == "ntk":
        raise ValueError(
            "solver='cg' supports get='nngp' and get='ntkgp'; the gradient-descent "
            "ensemble (get='ntk') needs solver='cholesky' for now."
        )
    options = check_cg_options(cg_options)
    return IterativePosterior(
        kernel, get, x_train, y_train, noise_var, diag_reg, absolute, options
    )
