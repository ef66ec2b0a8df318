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

The training data enter only through the sufficient statistics :math:`\Phi^\top
\Phi`, :math:`\Phi^\top Y`, :math:`\sum Y^2` and ``N``, which are sums over rows:
they are accumulated over row blocks (features computed block by block, so ``N x m``
never sits in memory), each block's rows split over devices with ``shard_map`` and
the partial sums added with ``psum``. Only the mesh says which devices take part.

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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from jax.typing import ArrayLike
from tqdm.auto import tqdm

from widebnn.kernels import FeatureMap

from . import _gp_core, _linalg
from ._gp_core import Prediction
from ._linalg import DEFAULT_JITTER_LADDER

#: Rows per block by default: ``block_size * m`` feature entries sit in memory.
DEFAULT_BLOCK_SIZE = 1024

FEATURE_POSTERIOR_KINDS = ("nngp", "ntk", "ntkgp")

#: which features each kind needs; the first is the one the solve is done with.
_FEATURE_NAMES = {"nngp": ("nngp",), "ntkgp": ("ntk",), "ntk": ("ntk", "nngp")}

_ROWS = "rows"  # the mesh axis the rows of a block are split over


class FeatureStatistics(NamedTuple):
    r"""Sufficient statistics of the training data for a GP on features.

    With :math:`\Phi` ``(N, m)`` the features the solve is done with (NNGP features
    for ``"nngp"``, NTK features for ``"ntkgp"`` and ``"ntk"``):

    Attributes:
        gram: ``(m, m)`` :math:`\Phi^\top\Phi`.
        moment: ``(m, out)`` :math:`\Phi^\top Y`.
        target_sq: scalar :math:`\sum_{i,k} Y_{ik}^2`.
        num_points: scalar ``N`` (a float array, summed like the others).
        cross: ``(m, m_nngp)`` :math:`\Psi^\top\Phi` of the NTK and NNGP features
            for ``"ntk"``, else ``None``.
    """

    gram: jax.Array
    moment: jax.Array
    target_sq: jax.Array
    num_points: jax.Array
    cross: jax.Array | None = None


# --- checks -----------------------------------------------------------------------


def _check_fmap(fmap) -> None:
    if isinstance(fmap, FeatureMap) and fmap.method == "exact":
        raise ValueError(
            "fmap: method='exact' factors the kernel of each batch on its own, so "
            "its features of different row blocks, devices, or of training and test "
            "inputs are in different bases. Build the map with method='random', or "
            "use widebnn.gp.posterior for the exact kernel."
        )
    if not callable(fmap):
        raise TypeError(
            "fmap must be a feature map fmap(x, get=names) (widebnn.kernels."
            f"feature_map), got {type(fmap).__name__}."
        )


def _check_block_size(block_size) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer):
        raise TypeError(f"block_size must be an integer >= 1, got {block_size!r}.")
    if block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size}.")
    return int(block_size)


def _check_devices(devices) -> list:
    if devices is None:
        return list(jax.local_devices())
    if isinstance(devices, jax.Device):
        devices = [devices]
    devices = list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(
            f"devices must be a non-empty sequence of jax.Device, got {devices!r}."
        )
    return devices


def _check_positive_diagonal(noise_var, diag_reg) -> None:
    """The Woodbury identity divides by ``noise_var + regulariser``: refuse 0."""
    if _linalg.is_traced(noise_var, diag_reg):
        return
    if float(noise_var) == 0 and float(diag_reg) == 0:
        raise ValueError(
            "noise_var must be > 0 (or diag_reg > 0) for a GP on features: the "
            "Woodbury identity divides by the total diagonal noise_var + regulariser "
            "(for an interpolating GP use widebnn.gp.posterior)."
        )


def _check_data(fmap, x, y, get, noise_var, diag_reg, jitter_ladder, block_size):
    if get not in FEATURE_POSTERIOR_KINDS:
        raise ValueError(f"get must be one of {FEATURE_POSTERIOR_KINDS}, got {get!r}.")
    _check_fmap(fmap)
    x = _gp_core.check_inputs(x, "x_train")
    if not _linalg.is_traced(x) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("x_train contains NaN or inf.")
    y = _gp_core.check_targets(y, x, "x_train", "y_train")
    _gp_core.check_nonnegative(noise_var, "noise_var")
    _gp_core.check_nonnegative(diag_reg, "diag_reg")
    _check_positive_diagonal(noise_var, diag_reg)
    jitter_ladder = _linalg.check_jitter_ladder(jitter_ladder)
    return x, y, jitter_ladder, _check_block_size(block_size)


# --- features of one block ----------------------------------------------------------


def _work_dtype(dtype) -> jnp.dtype:
    """float64 when JAX runs with x64, else the (floating) dtype given."""
    return jnp.promote_types(dtype, jnp.result_type(float))


def _call_features(fmap, x, names, dtype, widths=None, what="x_train"):
    """``fmap(x, get=names)`` checked to be ``(n, m)`` arrays, cast to ``dtype``."""
    out = fmap(x, get=names)
    if not isinstance(out, tuple | list) or len(out) != len(names):
        raise ValueError(
            f"fmap(x, get={names}) must return a tuple of {len(names)} feature "
            f"arrays, got {type(out).__name__}."
        )
    for name, value in zip(names, out, strict=True):
        if value.ndim != 2 or value.shape[0] != x.shape[0] or value.shape[1] < 1:
            raise ValueError(
                f"fmap({what}): the {name} features must have shape (n, m) with "
                f"n = {x.shape[0]} and m >= 1, got {value.shape}. A GP needs one "
                "output per input: end the network with pooling or Flatten and a "
                "Dense readout."
            )
    if widths is not None:
        got = tuple(value.shape[1] for value in out)
        if got != widths:
            raise ValueError(
                f"fmap({what}) gave features of widths {got} for {names}, but the "
                f"training features have widths {widths}: train and test features "
                "must come from the same map (same network, key and dim)."
            )
    return tuple(jnp.asarray(value).astype(dtype) for value in out)


def _row_mesh(devices) -> Mesh:
    """A 1-D mesh whose axis splits the rows of a block over ``devices``."""
    return Mesh(np.asarray(devices), (_ROWS,))


def _rows_per_block(block_size: int, num_points: int, num_devices: int) -> int:
    """``min(block_size, N)`` rounded up to a multiple of the device count."""
    rows = min(block_size, num_points)
    return -(-rows // num_devices) * num_devices


def _pad_rows(a: jax.Array, rows: int, fill: jax.Array) -> jax.Array:
    """``a`` with copies of ``fill`` (shape ``(1, ...)``) appended up to ``rows``."""
    missing = rows - a.shape[0]
    if missing == 0:
        return a
    return jnp.concatenate([a, jnp.repeat(fill, missing, axis=0)], axis=0)


def _block(x, y, index: int, rows: int):
    """Rows ``[index * rows, (index + 1) * rows)``, padded, and which are real.

    Padding repeats the first input (any valid input works: its features are
    multiplied by 0) and has zero targets.
    """
    start = index * rows
    xb, count = x[start : start + rows], min(rows, x.shape[0] - start)
    xb = _pad_rows(xb, rows, x[:1])
    valid = jnp.arange(rows) < count
    if y is None:
        return xb, valid
    yb = _pad_rows(y[start : start + rows], rows, jnp.zeros_like(y[:1]))
    return xb, yb, valid


def _block_statistics(fmap, names, dtype, x, y, valid):
    """One device's rows of a block: partial statistics, summed over the mesh."""
    features = _call_features(fmap, x, names, dtype)
    keep = valid.astype(dtype)[:, None]
    solve = features[0] * keep
    y = y.astype(dtype) * keep
    stats = {
        "gram": solve.T @ solve,
        "moment": solve.T @ y,
        "target_sq": jnp.sum(y**2),
        "num_points": jnp.sum(keep),
    }
    if len(features) == 2:
        stats["cross"] = solve.T @ features[1]
    return jax.lax.psum(stats, _ROWS)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _sharded_statistics(fmap, names, dtype, mesh, x, y, valid):
    """:func:`_block_statistics` with the rows of ``x, y, valid`` split over the
    mesh; compiled once per map, dtype, mesh and block shape."""
    return jax.shard_map(
        functools.partial(_block_statistics, fmap, names, dtype),
        mesh=mesh,
        in_specs=(PartitionSpec(_ROWS),) * 3,
        out_specs=PartitionSpec(),
    )(x, y, valid)


def accumulate_statistics(
    fmap,
    x: jax.Array,
    y: jax.Array,
    get: str,
    *,
    block_size: int,
    devices: Sequence | None = None,
    progress: bool = False,
) -> FeatureStatistics:
    """Sums the statistics over row blocks, each block split over ``devices``.

    Concrete inputs run a Python loop over blocks (one compiled block program, a
    ``tqdm`` bar when ``progress`` and there is more than one block); traced
    inputs (inside ``jit``/``grad``) run ``lax.scan`` with each block's features
    rematerialised in the backward pass (``jax.checkpoint``), so gradients do not
    keep ``N x m`` features either. Both add the blocks in the same order.

    Args:
        fmap: ``fmap(x, get=names) -> tuple of (n, m)`` features.
        x: ``(N, ...)`` inputs.
        y: ``(N, out)`` targets.
        get: static; ``"nngp"``, ``"ntkgp"`` or ``"ntk"``.
        block_size: static; rows per block (rounded up to a multiple of the number
            of devices).
        devices: the devices the rows of a block are split over (default
            ``jax.local_devices()``).
        progress: show a progress bar (concrete inputs only).

    Returns:
        A :class:`FeatureStatistics` in float64 when x64 is on.
    """
    names = _FEATURE_NAMES[get]
    mesh = _row_mesh(_check_devices(devices))
    dtype = _work_dtype(y.dtype)
    rows = _rows_per_block(block_size, x.shape[0], mesh.size)
    num_blocks = -(-x.shape[0] // rows)
    block_fn = functools.partial(_sharded_statistics, fmap, names, dtype, mesh)
    if _linalg.is_traced(x, y):
        blocks = [_block(x, y, i, rows) for i in range(num_blocks)]
        stacked = jax.tree.map(lambda *parts: jnp.stack(parts), *blocks)
        shapes = jax.eval_shape(block_fn, *blocks[0])
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        remat = jax.checkpoint(block_fn)

        def add_block(total, block):
            return jax.tree.map(jnp.add, total, remat(*block)), None

        total, _ = jax.lax.scan(add_block, zeros, stacked)
    else:
        total = None
        bar = tqdm(
            range(num_blocks),
            desc="feature statistics",
            disable=not progress or num_blocks == 1,
        )
        for i in bar:
            part = block_fn(*_block(x, y, i, rows))
            total = part if total is None else jax.tree.map(jnp.add, total, part)
    return FeatureStatistics(**total)


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
    x, y, jitter_ladder, block_size = _check_data(
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
    features = _call_features(fmap, x, names, dtype, widths, what="x_test")
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
    row = PartitionSpec(_ROWS)
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
        self._fmap = fmap
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
        mesh = _row_mesh(self._devices)
        names = _FEATURE_NAMES[self.get]
        dtype = self._solved["beta"].dtype
        rows = _rows_per_block(self.block_size, x_test.shape[0], mesh.size)
        num_blocks = -(-x_test.shape[0] // rows)
        block_fn = functools.partial(
            _sharded_prediction, self._fmap, names, dtype, self._widths, full_cov, mesh
        )
        means, covs = [], []
        bar = tqdm(
            range(num_blocks), desc="predict", disable=not progress or num_blocks == 1
        )
        for i in bar:
            xb, valid = _block(x_test, None, i, rows)
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
    x, y, jitter_ladder, block_size = _check_data(
        fmap, x_train, y_train, get, noise_var, diag_reg, jitter_ladder, block_size
    )
    devices = _check_devices(devices)
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
