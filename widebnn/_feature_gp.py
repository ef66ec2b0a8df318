r"""Gaussian-process inference on network features, by Woodbury.

With features :math:`\Phi` ``(N, m)`` of the training inputs, :math:`K \approx
\Phi\Phi^\top`, and a total diagonal :math:`d = \sigma^2 + \lambda > 0` (noise plus
regulariser), every quantity of the GP posterior only needs the ``m x m`` matrix
:math:`B = \Phi^\top\Phi + d I_m` (Woodbury and the push-through identity):

* mean :math:`\Phi_*(\Phi^\top\Phi + dI)^{-1}\Phi^\top Y`;
* covariance :math:`k_{**} - k_{*D}(K + dI)^{-1}k_{D*} = d\,\Phi_* B^{-1}
  \Phi_*^\top`, since :math:`\Phi^\top(K + dI)^{-1}\Phi = I - dB^{-1}`;
* :math:`\log\det(K + dI) = (N - m)\log d + \log\det B` (matrix determinant
  lemma) and :math:`Y^\top(K + dI)^{-1}Y = (Y^\top Y - Y^\top\Phi B^{-1}\Phi^\top
  Y)/d`.

The training data enter only through sums over rows (``widebnn._feature_blocks``
accumulates them over row blocks and devices).

The gradient-descent ensemble (``"ntk"``; Lee et al. 2019) at ``t = inf`` has mean
:math:`\Theta_{*D}(\Theta_{DD} + dI)^{-1}Y = \Psi_* B^{-1}\Psi^\top Y` with NTK
features :math:`\Psi` and :math:`B = \Psi^\top\Psi + dI`. Its covariance
:math:`K_{**} + WK_{DD}W^\top - WK_{D*} - K_{*D}W^\top`, with :math:`W =
\Psi_* B^{-1}\Psi^\top`, factorises as :math:`(\Phi_* - \Psi_* B^{-1}G)(\Phi_* -
\Psi_* B^{-1}G)^\top` with NNGP features :math:`\Phi` and :math:`G =
\Psi^\top\Phi`, one more statistic summed over rows.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec
from jax.typing import ArrayLike
from tqdm.auto import tqdm

from . import _gp_core, _linalg
from ._feature_blocks import (
    DEFAULT_BLOCK_SIZE,
    FEATURE_NAMES,
    ROWS,
    FeatureStatistics,
    accumulate_statistics,
    block_rows,
    call_features,
    check_data,
    check_devices,
    hashable,
    row_mesh,
    rows_per_block,
)
from ._gp_core import Prediction
from ._linalg import DEFAULT_JITTER_LADDER

# --- the solve ----------------------------------------------------------------------


def _factor(stats, noise_var, diag_reg, absolute, jitter_ladder):
    """Cholesky factor of ``gram + (noise_var + reg) I`` (jitter relative to its
    mean diagonal ``trace(gram) / m``)."""
    if absolute:
        reg = jnp.asarray(diag_reg)
    else:
        reg = diag_reg * jnp.trace(stats.gram) / stats.num_points
    return _linalg.cholesky(
        stats.gram,
        diag_reg=noise_var + reg,
        absolute=True,
        jitter_ladder=jitter_ladder,
    )


@jax.jit
def log_marginal_likelihood_from_statistics(
    stats: FeatureStatistics, chol: _linalg.CholeskyFactor
) -> jax.Array:
    r"""``log N(Y; 0, Phi Phi^T + d I)`` from the statistics, ``d`` the factor's
    added diagonal (determinant lemma and Woodbury; see the module doc).

    Args:
        stats: the training statistics.
        chol: factor of ``gram + d I`` (``d > 0``).

    Returns:
        A scalar.
    """
    d = chol.added_diagonal
    m, out = stats.moment.shape
    white = _linalg.half_solve(chol, stats.moment)  # L^{-1} Phi^T Y
    fit = (stats.target_sq - jnp.sum(white**2)) / d
    log_det = (stats.num_points - m) * jnp.log(d) + _linalg.log_det(chol)
    n_out = stats.num_points * out
    return -0.5 * (fit + out * log_det + n_out * jnp.log(2 * jnp.pi))


def feature_log_marginal_likelihood(
    fmap: Callable,
    x_train: ArrayLike,
    y_train: ArrayLike,
    *,
    noise_var,
    get: str = "nngp",
    diag_reg=0.0,
    diag_reg_absolute_scale: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    jitter_ladder: tuple[float, ...] = DEFAULT_JITTER_LADDER,
    devices: Sequence | None = None,
    progress: bool = False,
) -> jax.Array:
    r"""Log evidence of the targets under the GP whose kernel is ``Phi Phi^T``.

    :math:`-\tfrac{1}{2d}(\sum Y^2 - \|L^{-1}\Phi^\top Y\|^2) - \tfrac{o}{2}
    ((N - m)\log d + \log\det B) - \tfrac{No}{2}\log 2\pi` with :math:`B = LL^\top
    = \Phi^\top\Phi + dI`, ``o`` outputs sharing the kernel and :math:`d =
    \sigma^2 + \lambda` (see :func:`feature_posterior`); it equals
    :func:`widebnn.gp.log_marginal_likelihood` on the kernel :math:`\Phi\Phi^\top`.
    Differentiable with respect to ``noise_var``, ``diag_reg`` and the
    hyperparameters the feature map's network was built from (build the network
    and the map, with a fixed key, inside the differentiated function); under
    tracing the blocks run in ``lax.scan`` with rematerialised features.

    Args:
        fmap: the feature map (:func:`widebnn.kernels.feature_map`), or a callable
            ``fmap(x, get=names)`` returning a tuple of ``(n, m)`` features.
        x_train: ``(N, ...)`` inputs.
        y_train: ``(N, out)`` targets.
        noise_var: :math:`\sigma^2 \ge 0` (may be traced); ``noise_var +
            diag_reg`` must be ``> 0``.
        get: static; ``"nngp"`` or ``"ntkgp"`` (the prior covariance).
        diag_reg: relative regulariser ``>= 0``: ``diag_reg * ||Phi||_F^2 / N``.
        diag_reg_absolute_scale: static; ``diag_reg`` is absolute.
        block_size: static; rows per block, ``>= 1``.
        jitter_ladder: static; see :func:`widebnn.gp.posterior`.
        devices: the devices each block's rows are split over (default
            ``jax.local_devices()``).
        progress: show a progress bar over blocks.

    Returns:
        A scalar.

    Raises:
        ValueError, TypeError: as :func:`feature_posterior`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from widebnn import gp, kernels
        >>> net = kernels.serial(kernels.Dense(1, 1.5, 0.1), kernels.Relu(),
        ...                      kernels.Dense(1, 1.5, 0.1))
        >>> fmap = kernels.feature_map(net, jax.random.key(0), dim=64)
        >>> x = jnp.linspace(-1.0, 1.0, 10)[:, None]
        >>> lml = gp.feature_log_marginal_likelihood(fmap, x, jnp.sin(3 * x),
        ...                                          noise_var=0.1, block_size=4)
        >>> lml.shape
        ()
    """
    if get not in ("nngp", "ntkgp"):
        raise ValueError(f"get must be 'nngp' or 'ntkgp', got {get!r}.")
    x, y, jitter_ladder, block_size = check_data(
        fmap, x_train, y_train, get, noise_var, diag_reg, jitter_ladder, block_size
    )
    stats = accumulate_statistics(
        fmap, x, y, get, block_size=block_size, devices=devices, progress=progress
    )
    chol = _factor(stats, noise_var, diag_reg, diag_reg_absolute_scale, jitter_ladder)
    return log_marginal_likelihood_from_statistics(stats, chol)


# --- the posterior ------------------------------------------------------------------


def _block_prediction(fmap, names, dtype, widths, full_cov, solved, x):
    """Mean ``(n, out)`` and covariance factor rows ``(n, k)`` (or their squared
    norms, the variances) of one device's test rows."""
    features = call_features(fmap, x, names, dtype, widths, what="x_test")
    mean = features[0] @ solved["beta"]
    if len(features) == 2:  # "ntk": rows of Phi_* - Psi_* B^{-1} G
        factor = features[1] - features[0] @ solved["gain"]
    else:  # rows of sqrt(d) Phi_* L^{-T}
        factor = (
            jnp.sqrt(solved["d"])
            * jax.scipy.linalg.solve_triangular(
                solved["chol"], features[0].T, lower=True
            ).T
        )
    return mean, factor if full_cov else jnp.sum(factor**2, axis=1)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _sharded_prediction(fmap, names, dtype, widths, full_cov, mesh, solved, x):
    """:func:`_block_prediction` with the rows of ``x`` split over the mesh."""
    row = PartitionSpec(ROWS)
    return jax.shard_map(
        functools.partial(_block_prediction, fmap, names, dtype, widths, full_cov),
        mesh=mesh,
        in_specs=(PartitionSpec(), row),
        out_specs=(row, row),
    )(solved, x)


@jax.jit
def _solve(stats: FeatureStatistics, chol: _linalg.CholeskyFactor) -> dict:
    """What prediction needs: ``B^{-1} Phi^T Y``, the factor, ``d`` (and ``B^{-1}
    G`` for ``"ntk"``)."""
    solved = {
        "beta": _linalg.cho_solve(chol, stats.moment),
        "chol": chol.factor,
        "d": chol.added_diagonal,
    }
    if stats.cross is not None:
        solved["gain"] = _linalg.cho_solve(chol, stats.cross)
    return solved


class FeaturePosterior:
    """A GP posterior on features; build it with :func:`feature_posterior`.

    Attributes:
        get: ``"nngp"``, ``"ntk"`` or ``"ntkgp"``.
        noise_var: the observation noise variance.
        statistics: the :class:`FeatureStatistics` of the training data.
        added_diagonal: the total diagonal ``d`` (noise, regulariser and jitter).
        jitter: the part of ``added_diagonal`` from the jitter ladder.
        mean_diagonal: ``||Phi||_F^2 / N``, the mean diagonal of the kernel
            ``Phi Phi^T`` that is solved with (the NTK for ``"ntk"`` and
            ``"ntkgp"``): the unit of the relative ``diag_reg``.
        log_marginal_likelihood: ``log p(y_train)`` for ``"nngp"``/``"ntkgp"``
            (``None`` for ``"ntk"``, which is not a Bayesian posterior).
        block_size: rows per block.
    """

    def __init__(self, fmap, get, noise_var, stats, chol, block_size, devices):
        self._fmap = hashable(fmap)
        self._devices = devices
        self.get = get
        self.noise_var = noise_var
        self.statistics = stats
        self.block_size = block_size
        self.added_diagonal = chol.added_diagonal
        self.jitter = chol.jitter
        self.mean_diagonal = jnp.trace(stats.gram) / stats.num_points
        self._solved = _solve(stats, chol)
        self._widths = (stats.gram.shape[0],)
        self.log_marginal_likelihood = None
        if get == "ntk":
            self._widths = stats.cross.shape
        else:
            self.log_marginal_likelihood = log_marginal_likelihood_from_statistics(
                stats, chol
            )

    def predict(
        self,
        x_test: ArrayLike,
        full_cov: bool = False,
        *,
        observation_noise: bool = False,
        progress: bool = True,
    ) -> Prediction:
        r"""Predictive mean and variance (or covariance) at ``x_test``, by blocks.

        ``"nngp"``/``"ntkgp"``: mean :math:`\Phi_* B^{-1}\Phi^\top Y`, covariance
        :math:`d\,\Phi_* B^{-1}\Phi_*^\top`. ``"ntk"``: mean :math:`\Psi_* B^{-1}
        \Psi^\top Y`, covariance :math:`RR^\top` with :math:`R = \Phi_* -
        \Psi_* B^{-1}\Psi^\top\Phi` (the module doc derives both).

        Args:
            x_test: ``(M, ...)`` test inputs.
            full_cov: static; the ``(M, M)`` covariance (keeps ``(M, m)`` factor
                rows), else ``(M,)`` variances.
            observation_noise: static; add ``noise_var`` (targets, not outputs).
            progress: show a progress bar over blocks.

        Returns:
            A :class:`Prediction` ``(mean (M, out), covariance (M, M) or (M,))``.

        Raises:
            ValueError: on inputs of the wrong shape, or test features whose
                widths differ from the training features'.
        """
        x_test = _gp_core.check_inputs(x_test, "x_test")
        mesh = row_mesh(self._devices)
        names = FEATURE_NAMES[self.get]
        dtype = self._solved["beta"].dtype
        rows = rows_per_block(self.block_size, x_test.shape[0], mesh.size)
        num_blocks = -(-x_test.shape[0] // rows)
        block_fn = functools.partial(
            _sharded_prediction, self._fmap, names, dtype, self._widths, full_cov, mesh
        )
        means, covs = [], []
        bar = tqdm(
            range(num_blocks), desc="predict", disable=not progress or num_blocks == 1
        )
        for i in bar:
            xb, valid = block_rows(x_test, None, i, rows)
            mean, cov = block_fn(self._solved, xb)
            count = int(np.sum(np.asarray(valid)))
            means.append(mean[:count])
            covs.append(cov[:count])
        mean, cov = jnp.concatenate(means), jnp.concatenate(covs)
        if full_cov:
            cov = cov @ cov.T
            if observation_noise:
                cov = cov + self.noise_var * jnp.eye(cov.shape[0], dtype=cov.dtype)
        elif observation_noise:
            cov = cov + self.noise_var
        return Prediction(mean, cov)


def feature_posterior(
    fmap: Callable,
    x_train: ArrayLike,
    y_train: ArrayLike,
    *,
    noise_var: float,
    get: str = "nngp",
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    block_size: int = DEFAULT_BLOCK_SIZE,
    jitter_ladder: tuple[float, ...] = DEFAULT_JITTER_LADDER,
    devices: Sequence | None = None,
    progress: bool = True,
) -> FeaturePosterior:
    r"""Conditions the GP with kernel ``Phi Phi^T`` on data, in ``O(N m^2 + m^3)``.

    The same posterior as :func:`widebnn.gp.posterior` on the kernel
    :math:`\Phi\Phi^\top` (the NNGP, or the NTK for ``"ntkgp"`` and ``"ntk"``,
    estimated by random features), computed from the ``m x m`` matrix :math:`B =
    \Phi^\top\Phi + dI` by Woodbury (see the module doc). The statistics
    :math:`\Phi^\top\Phi` and :math:`\Phi^\top Y` are summed over blocks of
    ``block_size`` rows, each block's rows split over ``devices`` (summed with
    ``psum``), so ``N x m`` features never sit in memory. Linear algebra is in
    float64 when JAX runs with x64. The total diagonal :math:`d = \sigma^2 +
    \lambda` must be positive (Woodbury divides by it), with :math:`\lambda =
    \texttt{diag\_reg}\cdot\|\Phi\|_F^2/N` (``trace(Phi Phi^T) / N``), or
    ``diag_reg`` when ``diag_reg_absolute_scale``; for ``"ntk"`` it regularises
    :math:`\Theta_{DD}` as in :func:`widebnn.gp.posterior`. ``m > N`` is fine.
    A jitter, when the ladder needs one, is relative to ``trace(Phi^T Phi) / m``
    and is added to ``d``. In float32 the data-fit term loses accuracy when ``d``
    is small compared with :math:`\|\Phi\|^2` (a difference of two large numbers).

    Args:
        fmap: the feature map (:func:`widebnn.kernels.feature_map`, not
            ``method="exact"``), or a callable ``fmap(x, get=names)`` returning a
            tuple of ``(n, m)`` arrays in the order of ``names``, consistent
            across batches.
        x_train: ``(N, ...)`` training inputs.
        y_train: ``(N, out)`` targets; every output shares the kernel.
        noise_var: observation noise variance :math:`\sigma^2 \ge 0`.
        get: static; ``"nngp"``, ``"ntk"`` (gradient-descent ensemble at ``t =
            inf``; needs NTK and NNGP features) or ``"ntkgp"``.
        diag_reg: relative diagonal regulariser ``>= 0``.
        diag_reg_absolute_scale: static; ``diag_reg`` is an absolute variance.
        block_size: static; rows per block ``>= 1`` (rounded up to a multiple of
            the number of devices), for training and test inputs.
        jitter_ladder: static; relative jitters tried if the factorisation fails.
        devices: the devices each block's rows are split over (default
            ``jax.local_devices()``).
        progress: show progress bars when there is more than one block.

    Returns:
        A :class:`FeaturePosterior`; call ``.predict(x_test)``.

    Raises:
        ValueError: on a 1-D or mismatched ``y_train``, NaN in the data, a
            negative ``noise_var`` or ``diag_reg``, both of them 0, ``block_size <
            1``, an exact feature map, or features that are not ``(n, m)``.
        TypeError: if ``fmap`` is not callable, ``block_size`` is not an
            integer, ``devices`` are not devices, or ``noise_var`` is not a number.
        LinAlgError: if ``B`` cannot be factorised even with the jitter ladder.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from widebnn import gp, kernels
        >>> net = kernels.serial(kernels.Dense(1, 1.5, 0.1), kernels.Relu(),
        ...                      kernels.Dense(1, 1.5, 0.1))
        >>> fmap = kernels.feature_map(net, jax.random.key(0), dim=256)
        >>> x = jnp.linspace(-1.0, 1.0, 40)[:, None]
        >>> post = gp.feature_posterior(fmap, x, jnp.sin(3 * x), noise_var=1e-2,
        ...                             block_size=16, progress=False)
        >>> mean, var = post.predict(x[:3], progress=False)
        >>> mean.shape, var.shape, post.statistics.gram.shape
        ((3, 1), (3,), (257, 257))

    References:
        Rahimi & Recht (2007), "Random features for large-scale kernel machines";
        Rasmussen & Williams (2006), "Gaussian processes for machine learning",
        A.3 (Woodbury, determinant lemma); Lee et al. (2019) for ``"ntk"``.
    """
    x, y, jitter_ladder, block_size = check_data(
        fmap, x_train, y_train, get, noise_var, diag_reg, jitter_ladder, block_size
    )
    devices = check_devices(devices)
    stats = accumulate_statistics(
        fmap, x, y, get, block_size=block_size, devices=devices, progress=progress
    )
    chol = _factor(stats, noise_var, diag_reg, diag_reg_absolute_scale, jitter_ladder)
    if not _linalg.is_traced(chol.jitter) and float(chol.jitter) > 0:
        warnings.warn(
            "widebnn.gp.feature_posterior: Phi^T Phi + d I was not numerically "
            f"positive definite; added jitter {float(chol.jitter):.3g} to d. "
            "Consider a larger noise_var or diag_reg, or float64.",
            RuntimeWarning,
            stacklevel=2,
        )
    return FeaturePosterior(fmap, get, noise_var, stats, chol, block_size, devices)
