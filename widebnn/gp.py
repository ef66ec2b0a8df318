r"""Exact Gaussian-process inference with the kernels of infinitely wide networks.

* :func:`posterior`: the exact posterior of the infinite network (``"nngp"``), the
  infinite ensemble of infinite networks trained to convergence by gradient descent
  on the MSE (``"ntk"``), or the GP with the NTK as prior covariance (``"ntkgp"``).
* :func:`gradient_descent_mse_ensemble`: the same ensemble at any training time
  ``t`` (vectorised over times), and :func:`max_learning_rate`.
* :func:`log_marginal_likelihood` and :func:`fit_hyperparameters` (``optax``).
* :func:`feature_posterior` and :func:`feature_log_marginal_likelihood`: the same
  on random features of the network (:func:`widebnn.kernels.feature_map`), by
  Woodbury in ``O(N m^2 + m^3)``, accumulated over row blocks and devices.

Conventions (those of Neural Tangents, so that numbers transfer): targets are
``(N, out)`` and all outputs share one ``(N, N)`` kernel; ``diag_reg`` is relative,
``diag_reg * trace(K_DD) / N`` is added to the training kernel, unless
``diag_reg_absolute_scale=True``. Linear algebra is in float64 when JAX runs with
``jax_enable_x64`` (recommended: float32 Cholesky of kernel matrices fails early).
A training kernel that cannot be factorised even after a jitter ladder (see
:func:`widebnn._linalg.cholesky`) raises :class:`LinAlgError`; nothing returns NaN
silently.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _cg_posterior, _gp_core, _linalg
from ._cg_posterior import IterativePosterior as IterativePosterior
from ._feature_gp import (
    FeaturePosterior as FeaturePosterior,
    FeatureStatistics as FeatureStatistics,
    feature_log_marginal_likelihood as feature_log_marginal_likelihood,
    feature_posterior as feature_posterior,
)
from ._gp_core import Prediction as Prediction
from ._hyperparameters import (
    FitResult as FitResult,
    fit_hyperparameters as fit_hyperparameters,
)
from ._linalg import DEFAULT_JITTER_LADDER, LinAlgError as LinAlgError
from ._ntk_predict import (
    NTKEnsemble as NTKEnsemble,
    gradient_descent_mse_ensemble as gradient_descent_mse_ensemble,
    max_learning_rate as max_learning_rate,
)

POSTERIOR_KINDS = ("nngp", "ntk", "ntkgp")


class Posterior:
    """A GP posterior conditioned on training data; build it with :func:`posterior`.

    Attributes:
        get: ``"nngp"``, ``"ntk"`` or ``"ntkgp"``.
        x_train: ``(N, ...)`` training inputs.
        y_train: ``(N, out)`` training targets.
        noise_var: the observation noise variance.
        added_diagonal: the total diagonal added to the training kernel (noise,
            relative regulariser and any jitter).
        jitter: the part of ``added_diagonal`` that came from the jitter ladder.
        mean_diagonal: ``trace(k_DD) / N`` of the training prior kernel (the unit
            of the relative ``diag_reg``).
        log_marginal_likelihood: ``log p(y_train)`` for ``"nngp"``/``"ntkgp"``
            (``None`` for ``"ntk"``, which is not a Bayesian posterior).
    """

    def __init__(self, kernel, get, x_train, y_train, noise_var, train, chol):
        self._kernel = kernel
        self._fn = _gp_core.as_kernel_fn(kernel)
        self.get = get
        self.x_train = x_train
        self.y_train = y_train
        self.noise_var = noise_var
        self._train = train
        self._chol = chol
        self._alpha = _linalg.cho_solve(chol, y_train)
        self.added_diagonal = chol.added_diagonal
        self.jitter = chol.jitter
        self.mean_diagonal = _linalg.mean_diagonal(train[self._prior])
        self.log_marginal_likelihood = None
        if get != "ntk":
            self.log_marginal_likelihood = _linalg.gaussian_log_likelihood(
                chol, y_train
            )

    @property
    def _names(self):
        return ("nngp", "ntk") if self.get == "ntk" else (self._prior,)

    @property
    def _prior(self):
        return "ntk" if self.get == "ntkgp" else "nngp"

    def predict(
        self, x_test: ArrayLike, full_cov: bool = True, *, observation_noise=False
    ) -> Prediction:
        r"""Predictive mean and covariance of the network outputs at ``x_test``.

        ``"nngp"``/``"ntkgp"`` (prior covariance :math:`k`):
        mean :math:`k_{*D}(k_{DD}+\sigma^2 I)^{-1}Y`, covariance
        :math:`k_{**}-k_{*D}(k_{DD}+\sigma^2 I)^{-1}k_{D*}`.
        ``"ntk"``: mean :math:`\Theta_{*D}\Theta_{DD}^{-1}Y`, covariance
        :math:`K_{**}+\Theta_{*D}\Theta_{DD}^{-1}K_{DD}\Theta_{DD}^{-1}\Theta_{D*}
        -(\Theta_{*D}\Theta_{DD}^{-1}K_{D*}+\text{transpose})`, with
        :math:`\Theta_{DD}` regularised.

        Args:
            x_test: ``(M, ...)`` test inputs.
            full_cov: static; return the ``(M, M)`` covariance, else ``(M,)``
                variances (cheaper: no ``(M, M)`` kernel is formed).
            observation_noise: static; add ``noise_var`` to the variances (the
                predictive of noisy targets rather than of the network output).

        Returns:
            A :class:`Prediction` ``(mean (M, out), covariance (M, M) or (M,))``.

        Raises:
            ValueError: on inputs of the wrong shape or a non-finite test kernel.
        """
        x_test = _gp_core.check_inputs(x_test, "x_test")
        names = self._names
        cross = _gp_core.evaluate(
            self._fn, x_test, self.x_train, names, "kernel(x_test, x_train)"
        )
        for name, value in cross.items():
            if not _linalg.is_traced(value) and not bool(jnp.all(jnp.isfinite(value))):
                raise ValueError(f"the {name} kernel(x_test, x_train) has NaN or inf.")
        if full_cov:
            test = _gp_core.evaluate(self._fn, x_test, None, names, "kernel(x_test)")
        else:
            test = _gp_core.kernel_diagonal(self._kernel, self._fn, x_test, names)
        if self.get == "ntk":
            mean, cov = _ntk_prediction(
                cross, test, self._train["nngp"], self._chol, self.y_train, full_cov
            )
        else:
            k_cross = cross[self._prior]
            mean = k_cross @ self._alpha
            white = _linalg.half_solve(self._chol, k_cross.T)  # (N, M)
            if full_cov:
                cov = test[self._prior] - white.T @ white
            else:
                cov = test[self._prior] - jnp.sum(white**2, axis=0)
        if observation_noise:
            if full_cov:
                cov = cov + self.noise_var * jnp.eye(cov.shape[0], dtype=cov.dtype)
            else:
                cov = cov + self.noise_var
        return Prediction(mean, cov)


def _ntk_prediction(cross, test, k_train, chol, y_train, full_cov):
    """Infinite-ensemble NTK predictive at ``t = inf`` (see ``Posterior.predict``)."""
    ntk_cross, nngp_cross = cross["ntk"], cross["nngp"]
    weights = _linalg.cho_solve(chol, ntk_cross.T).T  # (M, N) = Θ_*D Θ_DD^{-1}
    mean = weights @ y_train
    spread = weights @ k_train  # (M, N)
    if full_cov:
        mixed = weights @ nngp_cross.T
        cov = test["nngp"] + spread @ weights.T - mixed - mixed.T
    else:
        cov = (
            test["nngp"]
            + jnp.sum(spread * weights, axis=1)
            - 2 * jnp.sum(weights * nngp_cross, axis=1)
        )
    return mean, cov


def posterior(
    kernel,
    x_train: ArrayLike,
    y_train: ArrayLike,
    *,
    noise_var: float,
    get: str = "nngp",
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    jitter_ladder: tuple[float, ...] = DEFAULT_JITTER_LADDER,
    solver: str = "auto",
    cg_options: dict | None = None,
) -> Posterior | IterativePosterior:
    r"""Conditions the infinite-width network on training data.

    The training kernel is regularised by
    :math:`\sigma^2 + \texttt{diag\_reg}\cdot\mathrm{tr}(k_{DD})/N` (the second term
    absolute when ``diag_reg_absolute_scale``). For ``"nngp"`` and ``"ntkgp"`` this
    is the exact GP posterior with Gaussian noise of variance :math:`\sigma^2`; for
    ``"ntk"`` the regulariser is added to :math:`\Theta_{DD}` only (a ridge in
    function space; the NNGP :math:`K_{DD}` stays the prior of the initial outputs).

    Args:
        kernel: a :class:`widebnn.kernels.Layer` (its output must have no spatial
            axes), or a callable ``kernel(x1, x2, get)`` with the convention of
            :meth:`Layer.kernel` (``x2=None`` for ``x1``; ``get`` a tuple of
            names; returns a tuple of ``(N1, N2)`` arrays), for example
            :func:`widebnn.kernels.batched`.
        x_train: ``(N, ...)`` training inputs.
        y_train: ``(N, out)`` targets; every output shares the kernel. A 1-D
            array is refused (use ``y[:, None]``).
        noise_var: observation noise variance :math:`\sigma^2 \ge 0`.
        get: static; ``"nngp"`` (Bayesian infinite network), ``"ntk"`` (infinite
            ensemble trained by gradient flow on the MSE, ``t = inf``) or
            ``"ntkgp"`` (GP with the NTK as prior covariance).
        diag_reg: relative diagonal regulariser ``>= 0``.
        diag_reg_absolute_scale: static; ``diag_reg`` is an absolute variance.
        jitter_ladder: static; relative jitters tried if the factorisation fails.
        solver: static; ``"cholesky"`` (the dense factor), ``"cg"`` (conjugate
            gradients with the kernel applied tile by tile: no ``N x N`` factor;
            ``"nngp"``/``"ntkgp"``, concrete inputs, noise or regulariser > 0) or
            ``"auto"``: Cholesky up to 20 000 training points and inside
            ``jit``/``grad``, conjugate gradients beyond.
        cg_options: for ``"cg"``: ``tol`` (relative residual, 1e-10),
            ``max_iters`` (``10 N``), ``tile`` (inputs per kernel tile, 1024),
            ``cache`` (keep the kernel tiles on and above the diagonal, about half
            the dense matrix: ``True``; ``False`` recomputes them at every
            product), ``preconditioner`` (``"pivoted_cholesky"``, ``None``, or a
            random feature map of the network, :func:`widebnn.kernels.feature_map`,
            whose features :math:`\Phi` give :math:`P = \Phi\Phi^\top + dI`),
            ``rank`` (of the pivoted Cholesky factor, 100), ``progress`` (True).

    Returns:
        A :class:`Posterior` (Cholesky) or :class:`IterativePosterior` (conjugate
        gradients; it reports ``iterations``, ``relative_residuals`` and
        ``converged``); call ``.predict(x_test, full_cov=True)``.

    Raises:
        ValueError: on mismatched lengths, a 1-D ``y_train``, NaN in ``y_train``
            or (concrete) ``x_train``, a negative ``noise_var`` or ``diag_reg``,
            an empty or non-increasing ``jitter_ladder``, or an asymmetric kernel.
        TypeError: if ``noise_var`` or ``diag_reg`` is not a real number (e.g. a
            string), or ``kernel`` is neither a layer nor a callable.
        LinAlgError: if the regularised training kernel is not positive definite
            even with the jitter ladder (the message gives its condition estimate).

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import gp, kernels
        >>> net = kernels.serial(kernels.Dense(512, 1.5, 0.1), kernels.Relu(),
        ...                      kernels.Dense(1, 1.5, 0.1))
        >>> x = jnp.linspace(-1.0, 1.0, 8)[:, None]
        >>> post = gp.posterior(net, x, jnp.sin(3 * x), noise_var=1e-2)
        >>> mean, cov = post.predict(x[:3])
        >>> mean.shape, cov.shape
        ((3, 1), (3, 3))

    References:
        Lee et al. (2018), "Deep neural networks as Gaussian processes"; Lee et al.
        (2019), "Wide neural networks of any depth evolve as linear models under
        gradient descent"; He et al. (2020), "Bayesian deep ensembles via the
        neural tangent kernel" (NTKGP).
    """
    if get not in POSTERIOR_KINDS:
        raise ValueError(f"get must be one of {POSTERIOR_KINDS}, got {get!r}.")
    x_train = _gp_core.check_inputs(x_train, "x_train")
    y_train = _gp_core.check_targets(y_train, x_train, "x_train", "y_train")
    _gp_core.check_nonnegative(noise_var, "noise_var")
    _gp_core.check_nonnegative(diag_reg, "diag_reg")
    jitter_ladder = _linalg.check_jitter_ladder(jitter_ladder)
    traced = _linalg.is_traced(x_train, y_train, noise_var, diag_reg)
    if _cg_posterior.choose_solver(solver, x_train.shape[0], traced) == "cg":
        return _cg_posterior.iterative_posterior(
            kernel, get, x_train, y_train, noise_var, diag_reg,
            diag_reg_absolute_scale, cg_options,
        )  # fmt: skip
    if cg_options is not None and solver == "cholesky":
        raise ValueError("cg_options is for solver='cg' (or 'auto' on large data).")
    fn = _gp_core.as_kernel_fn(kernel)
    names = ("nngp", "ntk") if get == "ntk" else ("ntk" if get == "ntkgp" else "nngp",)
    train = _gp_core.evaluate(fn, x_train, None, names, "kernel(x_train, None)")
    prior = "ntk" if get in ("ntk", "ntkgp") else "nngp"
    for name, value in train.items():
        _gp_core.check_symmetric(value, f"the {name} kernel(x_train, x_train)")
    k_prior = train[prior]
    reg = _linalg.regularizer(k_prior, diag_reg, absolute=diag_reg_absolute_scale)
    chol = _linalg.cholesky(
        k_prior, diag_reg=noise_var + reg, absolute=True, jitter_ladder=jitter_ladder
    )
    if not _linalg.is_traced(chol.jitter) and float(chol.jitter) > 0:
        warnings.warn(
            f"widebnn.gp.posterior: the {prior} training kernel was not numerically "
            f"positive definite; added jitter {float(chol.jitter):.3g} to its "
            "diagonal. Consider a larger diag_reg or noise_var.",
            RuntimeWarning,
            stacklevel=2,
        )
    return Posterior(kernel, get, x_train, y_train, noise_var, train, chol)


def log_marginal_likelihood(
    kernel,
    x_train: ArrayLike,
    y_train: ArrayLike,
    *,
    noise_var,
    get: str = "nngp",
    diag_reg=0.0,
    diag_reg_absolute_scale: bool = False,
    jitter_ladder: tuple[float, ...] = DEFAULT_JITTER_LADDER,
) -> jax.Array:
    r"""Log evidence of the targets under the GP prior of the infinite network.

    :math:`\log p(Y) = -\tfrac12\,\mathrm{tr}(Y^\top C^{-1} Y) - \tfrac{m}{2}\log\det C
    - \tfrac{Nm}{2}\log 2\pi` with :math:`C = k_{DD} + (\sigma^2 + \lambda) I`, ``m``
    outputs sharing the kernel, :math:`\lambda` as in :func:`posterior`.
    Differentiable with respect to ``noise_var`` and to hyperparameters the kernel
    was built from (build the network inside the differentiated function). Under
    tracing, a kernel that fails the jitter ladder gives NaN instead of an error.

    Args:
        kernel: a :class:`widebnn.kernels.Layer` or a callable, as in
            :func:`posterior`.
        x_train: ``(N, ...)`` inputs.
        y_train: ``(N, out)`` targets.
        noise_var: noise variance ``>= 0`` (may be traced).
        get: static; ``"nngp"`` or ``"ntkgp"`` (the prior covariance).
        diag_reg: relative regulariser ``>= 0`` (may be traced).
        diag_reg_absolute_scale: static; ``diag_reg`` is absolute.
        jitter_ladder: static; see :func:`posterior`.

    Returns:
        A scalar.

    Raises:
        ValueError: as :func:`posterior`.
        LinAlgError: in eager mode, as :func:`posterior`.

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import gp, kernels
        >>> x = jnp.array([[1.0], [-1.0]])
        >>> lml = gp.log_marginal_likelihood(kernels.Dense(1, 1.0, 0.0), x,
        ...                                  jnp.zeros((2, 1)), noise_var=1.0)
        >>> round(float(lml), 4)  # N(0, [[2, -1], [-1, 2]]) at 0
        -2.3872
    """
    if get not in ("nngp", "ntkgp"):
        raise ValueError(f"get must be 'nngp' or 'ntkgp', got {get!r}.")
    x_train = _gp_core.check_inputs(x_train, "x_train")
    y_train = _gp_core.check_targets(y_train, x_train, "x_train", "y_train")
    _gp_core.check_nonnegative(noise_var, "noise_var")
    _gp_core.check_nonnegative(diag_reg, "diag_reg")
    jitter_ladder = _linalg.check_jitter_ladder(jitter_ladder)
    name = "ntk" if get == "ntkgp" else "nngp"
    fn = _gp_core.as_kernel_fn(kernel)
    k_train = _gp_core.evaluate(fn, x_train, None, (name,), "kernel(x_train, None)")
    _gp_core.check_symmetric(k_train[name], f"the {name} kernel(x_train, x_train)")
    lml, _ = _gp_core.lml_from_kernel(
        k_train[name],
        y_train,
        noise_var,
        diag_reg,
        diag_reg_absolute_scale,
        jitter_ladder,
    )
    return lml
