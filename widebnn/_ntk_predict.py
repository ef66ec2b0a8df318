r"""The infinite ensemble of wide networks trained by gradient descent on the MSE.

Time convention (that of Neural Tangents' ``predict.gradient_descent_mse_ensemble``,
so that times and learning rates transfer): the loss is the *mean* over the
:math:`|Y| = N\cdot\text{out}` target entries,
:math:`\mathcal L = \frac{1}{2|Y|}\sum (f(x_i) - y_i)^2`, and training is gradient
flow :math:`\dot\theta = -\eta\nabla\mathcal L` for a time ``t``. In the
infinite-width limit the training outputs then follow
:math:`f_t = Y + e^{-\eta t\Theta/|Y|}(f_0 - Y)`; i.e. the learning rate is divided
by the number of target entries. Gradient descent with step ``eta`` for ``S``
steps approximates ``t = eta * S`` when ``eta`` is well below
:func:`max_learning_rate`.

With :math:`\Theta = V\,\mathrm{diag}(s)\,V^\top` (regularised) and
:math:`g_t(s) = (1 - e^{-\eta t s/|Y|})/s`, write
:math:`A_t = \Theta_{*D} V \mathrm{diag}(g_t) V^\top`. Over random initialisations
:math:`f_0 \sim GP(0, K)`:

* mean :math:`A_t Y`,
* covariance :math:`K_{**} + A_t K_{DD} A_t^\top - A_t K_{D*} - K_{*D} A_t^\top`.

At :math:`t=\infty`, :math:`g = 1/s` gives the kernel-regression solution
:math:`\Theta_{*D}\Theta_{DD}^{-1}Y`. One eigendecomposition serves every ``t``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from . import _gp_core, _linalg

ENSEMBLE_KINDS = ("ntk", "nngp")


def max_learning_rate(
    ntk_train_train: ArrayLike, y_train_size: int | None = None, momentum: float = 0.0
) -> float:
    r"""Largest stable gradient-descent step: :math:`2(1+\mu)|Y|/\lambda_{max}`.

    With the loss averaged over the ``y_train_size`` target entries (the time
    convention of this module), gradient descent with momentum :math:`\mu` on the
    linearised network diverges for larger steps.

    Args:
        ntk_train_train: ``(N, N)`` NTK of the training inputs.
        y_train_size: number of target entries ``N * out`` (default ``N``).
        momentum: heavy-ball momentum in ``[0, 1)``.

    Returns:
        A Python float.

    Raises:
        ValueError: on a non-square kernel, a non-positive largest eigenvalue or a
            momentum outside ``[0, 1)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import gp
        >>> gp.max_learning_rate(jnp.array([[2.0, 0.0], [0.0, 1.0]]))
        2.0
    """
    ntk = np.asarray(ntk_train_train, dtype=float)
    if ntk.ndim != 2 or ntk.shape[0] != ntk.shape[1]:
        raise ValueError(f"ntk_train_train must be (N, N), got shape {ntk.shape}.")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
    size = ntk.shape[0] if y_train_size is None else int(y_train_size)
    if size < 1:
        raise ValueError(f"y_train_size must be positive, got {y_train_size}.")
    top = float(np.linalg.eigvalsh((ntk + ntk.T) / 2)[-1])
    if not top > 0:
        raise ValueError(
            f"ntk_train_train must have a positive eigenvalue, largest is {top:.3g}."
        )
    return 2.0 * (1.0 + momentum) * size / top


def _time_filter(eigenvalues, times, rate):
    """``(T, N)`` values of ``g_t(s) = (1 - exp(-rate t s)) / s`` (``1/s`` at inf).

    At ``s = 0`` and finite ``t`` the limit ``rate * t`` is used. At ``t = inf``,
    eigenvalues below ``N * eps * max(s)`` are treated as 0 (pseudo-inverse).
    """
    s = eigenvalues[None, :]
    t = times[:, None]
    finite = jnp.isfinite(t)
    safe_t = jnp.where(finite, t, 0.0)
    positive = s > 0
    safe_s = jnp.where(positive, s, 1.0)
    decay = -jnp.expm1(-rate * safe_t * s)
    g_finite = jnp.where(positive, decay / safe_s, rate * safe_t)
    eps = jnp.finfo(eigenvalues.dtype).eps
    cutoff = eigenvalues.shape[0] * eps * jnp.max(eigenvalues)
    invertible = s > cutoff
    g_inf = jnp.where(invertible, 1.0 / jnp.where(invertible, s, 1.0), 0.0)
    return jnp.where(finite, g_finite, g_inf)


@jax.jit
def _ensemble_moments(gains, cross, vectors, y_rotated, k_train_eig, nngp_cross, test):
    """Mean ``(T, M, out)`` and covariance ``(T, M, M)`` or variances ``(T, M)``.

    Everything is in the eigenbasis ``V`` of the trained kernel: ``A = W V^T``
    with ``W = Θ_*D V diag(g)``, so ``A K_DD A^T = W (V^T K_DD V) W^T`` and
    ``A K_D* = W (K_*D V)^T``.
    """
    basis = cross @ vectors  # (M, N)
    nngp_cross_eig = nngp_cross @ vectors  # (M, N)

    def one_time(gain):
        weights = basis * gain[None, :]
        mean = weights @ y_rotated
        spread = weights @ k_train_eig  # (M, N)
        if test.ndim == 2:
            mixed = weights @ nngp_cross_eig.T  # (M, M)
            cov = test + spread @ weights.T - mixed - mixed.T
        else:
            mixed = jnp.sum(weights * nngp_cross_eig, axis=1)
            cov = test + jnp.sum(spread * weights, axis=1) - 2 * mixed
        return mean, cov

    return jax.vmap(one_time)(gains)


class NTKEnsemble:
    """Predictive of the infinite ensemble at any training time; see the module doc.

    Build it with :func:`gradient_descent_mse_ensemble`.

    Attributes:
        get: ``"ntk"`` (all layers trained) or ``"nngp"`` (only the readout).
        learning_rate: ``eta``.
        eigenvalues: ``(N,)`` eigenvalues of the regularised training kernel.
        max_learning_rate: the largest stable gradient-descent step for these data.
    """

    def __init__(self, kernel, get, x_train, y_train, learning_rate, train, reg):
        self._kernel = kernel
        self._fn = _gp_core.as_kernel_fn(kernel)
        self.get = get
        self.x_train = x_train
        self.y_train = y_train
        self.learning_rate = learning_rate
        trained = train[get]
        regularised = trained + reg * jnp.eye(trained.shape[0], dtype=trained.dtype)
        self.eigenvalues, self._vectors = _linalg.symmetric_eigh(regularised)
        self._y_rotated = self._vectors.T @ y_train
        self._k_train_eig = self._vectors.T @ train["nngp"] @ self._vectors
        self.max_learning_rate = max_learning_rate(regularised, y_train.size)

    def predict(self, x_test: ArrayLike, t: ArrayLike = np.inf, full_cov: bool = True):
        """Mean and covariance over initialisations of the outputs at time ``t``.

        Args:
            x_test: ``(M, ...)`` test inputs.
            t: a time ``>= 0`` or a ``(T,)`` array of times; ``inf`` allowed.
            full_cov: static; ``(M, M)`` covariances, else ``(M,)`` variances.

        Returns:
            A ``Prediction(mean, covariance)``: ``(M, out)`` and ``(M, M)`` (or
            ``(M,)``) for a scalar ``t``, with a leading ``T`` axis for an array.

        Raises:
            ValueError: on negative or NaN times or badly shaped inputs.
        """
        times = np.asarray(t, dtype=float)
        if times.ndim > 1:
            raise ValueError(f"t must be a scalar or 1-D, got shape {times.shape}.")
        if np.any(np.isnan(times)) or np.any(times < 0):
            raise ValueError(f"t must be >= 0 (inf allowed), got {t}.")
        x_test = _gp_core.check_inputs(x_test, "x_test")
        names = ("nngp",) if self.get == "nngp" else ("nngp", "ntk")
        cross = _gp_core.evaluate(
            self._fn, x_test, self.x_train, names, "kernel(x_test, x_train)"
        )
        if full_cov:
            test = _gp_core.evaluate(
                self._fn, x_test, None, ("nngp",), "kernel(x_test)"
            )
        else:
            test = _gp_core.kernel_diagonal(self._kernel, self._fn, x_test, ("nngp",))
        dtype = self.eigenvalues.dtype
        rate = self.learning_rate / self.y_train.size
        gains = _time_filter(
            self.eigenvalues, jnp.asarray(np.atleast_1d(times), dtype), rate
        )
        mean, cov = _ensemble_moments(
            gains,
            cross[self.get],
            self._vectors,
            self._y_rotated,
            self._k_train_eig,
            cross["nngp"],
            test["nngp"],
        )
        if times.ndim == 0:
            mean, cov = mean[0], cov[0]
        return _gp_core.Prediction(mean, cov)


def gradient_descent_mse_ensemble(
    kernel,
    x_train: ArrayLike,
    y_train: ArrayLike,
    *,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    get: str = "ntk",
) -> NTKEnsemble:
    r"""The infinite ensemble of infinite networks trained on the MSE, at any time.

    See the module docstring for the time convention (the learning rate is
    divided by ``y_train.size``, as in Neural Tangents) and the formulas. The
    ``(N, N)`` training kernel is eigendecomposed once; predictions at many times
    cost one matrix product each.

    Args:
        kernel: a :class:`widebnn.kernels.Layer` or a callable, as in
            :func:`widebnn.gp.posterior`.
        x_train: ``(N, ...)`` training inputs.
        y_train: ``(N, out)`` targets.
        learning_rate: ``eta > 0``.
        diag_reg: relative regulariser ``>= 0`` added to the trained kernel.
        diag_reg_absolute_scale: static; ``diag_reg`` is absolute.
        get: static; ``"ntk"`` trains every layer; ``"nngp"`` trains only the
            readout layer (the NNGP plays the role of the NTK).

    Returns:
        An :class:`NTKEnsemble`; call ``.predict(x_test, t)``.

    Raises:
        ValueError: on bad inputs (as :func:`widebnn.gp.posterior`) or a
            non-positive learning rate.

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import gp, kernels
        >>> net = kernels.serial(kernels.Dense(512, 1.5, 0.1), kernels.Relu(),
        ...                      kernels.Dense(1, 1.5, 0.1))
        >>> x = jnp.linspace(-1.0, 1.0, 8)[:, None]
        >>> ens = gp.gradient_descent_mse_ensemble(net, x, jnp.sin(3 * x))
        >>> mean, cov = ens.predict(x[:3], t=jnp.array([1.0, 10.0, jnp.inf]))
        >>> mean.shape, cov.shape
        ((3, 3, 1), (3, 3, 3))

    References:
        Lee et al. (2019), "Wide neural networks of any depth evolve as linear
        models under gradient descent".
    """
    if get not in ENSEMBLE_KINDS:
        raise ValueError(f"get must be one of {ENSEMBLE_KINDS}, got {get!r}.")
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(
            f"learning_rate must be a positive number, got {learning_rate}."
        )
    x_train = _gp_core.check_inputs(x_train, "x_train")
    y_train = _gp_core.check_targets(y_train, x_train, "x_train", "y_train")
    _gp_core.check_nonnegative(diag_reg, "diag_reg")
    fn = _gp_core.as_kernel_fn(kernel)
    names = ("nngp",) if get == "nngp" else ("nngp", "ntk")
    train = _gp_core.evaluate(fn, x_train, None, names, "kernel(x_train, None)")
    for name, value in train.items():
        _gp_core.check_symmetric(value, f"the {name} kernel(x_train, x_train)")
    reg = _linalg.regularizer(train[get], diag_reg, absolute=diag_reg_absolute_scale)
    return NTKEnsemble(kernel, get, x_train, y_train, learning_rate, train, reg)
