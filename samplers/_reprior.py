r"""Repriorisation of the readout: the data-dependent map :math:`\phi\to\theta`.

For features :math:`T = T(\theta_{rest})\in\mathbb R^{N\times(n+1)}` (last hidden
layer, scaled, with the bias column) and targets :math:`Y\in\mathbb R^{N\times d}`,

.. math::
    \Theta_{out} = G_k^{-1}T^\top Y + \sqrt k\, S^{-\top}\Phi_{out},
    \qquad G_k = T^\top T + kI = SS^\top,

with the hidden weights unchanged (:math:`\theta_{rest} = \phi_{rest}`). For
:math:`k=\sigma^2` a standard normal :math:`\Phi_{out}` is an exact draw of the
readout posterior given the features. The square root :math:`S` is

* primal path (``n + 1 <= N``): the Cholesky factor :math:`L` of :math:`G_k`;
* dual path (``n + 1 > N``): with the thin QR :math:`T^\top = QB` and
  :math:`kI_N + BB^\top = L_NL_N^\top`,
  :math:`S = \sqrt k(I - QQ^\top) + QL_NQ^\top` (cost :math:`O(nN^2 + N^3)`).

The log-determinant of the Jacobian is
:math:`d\,(\tfrac{n+1}{2}\log k - \log\det S)`; it depends on :math:`\phi_{rest}` and
is part of the log density. References: Hron et al., "Wide Bayesian neural networks
have a simple weight posterior", ICML 2022 (arXiv:2206.07673); the derivation of
the log-determinant, the dual path and the sharded form is the one above.

A model is anything with the protocol of :class:`widebnn.WideBNN` (``features``,
``split_readout``, ``merge_readout``, ``log_prior``, ``log_likelihood``,
``noise_std``, ``out_dim``). Repriorised positions are pairs
``(hidden_params, phi_out)`` with ``phi_out: (n + 1, d)``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from ._platform import sequential_on_cpu

PATHS = ("auto", "primal", "dual")
REPARAMS = ("repriorised", "none")


class ReadoutFactor(NamedTuple):
    """One factorisation of :math:`G_k`, shared by the map, its inverse and log-det.

    Attributes:
        mean: ``(n + 1, d)`` offset :math:`G_k^{-1}T^\\top Y`.
        chol: primal ``(n + 1, n + 1)`` Cholesky factor of :math:`G_k`; dual
            ``(N, N)`` Cholesky factor of :math:`kI + BB^\\top`.
        basis: dual ``(n + 1, N)`` orthonormal :math:`Q`; primal ``None``.
        log_det_jacobian: scalar :math:`\\log|\\det \\partial\\theta/\\partial\\phi|`.
        kernel_reg: the scalar :math:`k`.
    """

    mean: jax.Array
    chol: jax.Array
    basis: jax.Array | None
    log_det_jacobian: jax.Array
    kernel_reg: Any


def choose_path(num_features: int, num_data: int, path: str = "auto") -> str:
    """``"primal"`` if ``num_features <= num_data`` (n + 1 <= N), else ``"dual"``."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}.")
    if path != "auto":
        return path
    return "primal" if num_features <= num_data else "dual"


def resolve_kernel_reg(model, kernel_reg) -> float:
    """``kernel_reg`` or, for ``None``, the exact-posterior choice ``noise_std**2``."""
    if kernel_reg is None:
        return float(model.noise_std) ** 2
    value = float(kernel_reg)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"kernel_reg must be a finite number > 0, got {kernel_reg}.")
    return value


def check_data(model, x, y) -> tuple[jax.Array, jax.Array]:
    """Checks training data at a public entry point; returns them as arrays.

    Args:
        model: a model with an ``out_dim`` attribute (e.g. :class:`widebnn.WideBNN`).
        x: ``(N, *S, C)`` training inputs.
        y: ``(N, out_dim)`` training targets.

    Returns:
        ``(x, y)`` as JAX arrays.

    Raises:
        ValueError: naming ``x`` or ``y``: ``y`` not 2-D ``(N, out_dim)``, lengths
            that differ, or non-finite values.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if y.ndim != 2 or y.shape[1] != model.out_dim:
        raise ValueError(
            f"y must be 2-D with shape (N, out_dim) = (N, {model.out_dim}), got "
            f"shape {y.shape}."
        )
    if x.ndim < 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x must have shape (N, *S, C) with N = len(y) = {y.shape[0]}, got "
            f"shape {x.shape}."
        )
    for name, value in (("x", x), ("y", y)):
        if not bool(np.all(np.isfinite(np.asarray(value)))):
            raise ValueError(f"{name} contains NaN or infinite values.")
    return x, y


def _psum(value, axis_name):
    return value if axis_name is None else jax.lax.psum(value, axis_name)


def readout_factor(
    features, y, kernel_reg, *, path: str = "auto", axis_name=None
) -> ReadoutFactor:
    """Factorises :math:`G_k` for the features ``(N, n + 1)`` and targets ``(N, d)``.

    Args:
        features: ``(N, n + 1)`` matrix :math:`T` (a local shard under ``axis_name``).
        y: ``(N, d)`` targets (the matching shard).
        kernel_reg: :math:`k > 0`.
        path: static; ``"auto"``, ``"primal"`` or ``"dual"``.
        axis_name: static; a ``shard_map`` axis over which rows of ``features`` and
            ``y`` are sharded (primal path only): the Gram matrix and
            :math:`T^\\top Y` are summed across devices, ``kI`` added once.

    Returns:
        A :class:`ReadoutFactor`. A failed factorisation gives NaNs, which the log
        density turns into a rejection.
    """
    num_data, num_features = features.shape
    d = y.shape[1]
    path = choose_path(num_features, num_data, path)
    if axis_name is not None and path == "dual":
        raise ValueError("path='dual' is not available with data sharding.")
    if path == "dual" and num_features < num_data:
        raise ValueError(
            f"path='dual' needs n + 1 >= N, got n + 1 = {num_features}, N = {num_data}."
        )
    if path == "primal":
        gram = _psum(features.T @ features, axis_name)
        gram = gram + kernel_reg * jnp.eye(num_features, dtype=gram.dtype)
        cross = _psum(features.T @ y, axis_name)
        chol = jnp.linalg.cholesky(gram)
        mean = cho_solve((chol, True), cross)
        log_det_s = jnp.sum(jnp.log(jnp.diagonal(chol)))
        basis = None
        log_det = d * (0.5 * num_features * jnp.log(kernel_reg) - log_det_s)
    else:
        basis, upper = jnp.linalg.qr(features.T)  # T^T = Q B, Q: (n+1, N)
        inner = upper @ upper.T + kernel_reg * jnp.eye(num_data, dtype=upper.dtype)
        chol = jnp.linalg.cholesky(inner)
        mean = basis @ cho_solve((chol, True), upper @ y)
        log_det_n = jnp.sum(jnp.log(jnp.diagonal(chol)))
        log_det = d * (0.5 * num_data * jnp.log(kernel_reg) - log_det_n)
    return ReadoutFactor(mean, chol, basis, log_det, kernel_reg)


def readout_forward(factor: ReadoutFactor, phi_out) -> jax.Array:
    """:math:`\\Theta_{out} = G_k^{-1}T^\\top Y + \\sqrt k S^{-\\top}\\Phi_{out}`.

    Args:
        factor: the :class:`ReadoutFactor` of the features and targets.
        phi_out: ``(n + 1, d)`` repriorised readout coordinates.

    Returns:
        ``(n + 1, d)`` readout weights :math:`\\Theta_{out}`.
    """
    root_k = jnp.sqrt(factor.kernel_reg)
    if factor.basis is None:
        return factor.mean + root_k * solve_triangular(
            factor.chol, phi_out, lower=True, trans="T"
        )
    q = factor.basis
    coef = q.T @ phi_out
    inner = solve_triangular(factor.chol, coef, lower=True, trans="T")
    return factor.mean + (phi_out - q @ coef) + root_k * (q @ inner)


def readout_inverse(factor: ReadoutFactor, theta_out) -> jax.Array:
    """:math:`\\Phi_{out} = S^\\top(\\Theta_{out} - G_k^{-1}T^\\top Y)/\\sqrt k`.

    Args:
        factor: the :class:`ReadoutFactor` of the features and targets.
        theta_out: ``(n + 1, d)`` readout weights.

    Returns:
        ``(n + 1, d)`` repriorised coordinates :math:`\\Phi_{out}` (the inverse of
        :func:`readout_forward`).
    """
    root_k = jnp.sqrt(factor.kernel_reg)
    centred = theta_out - factor.mean
    if factor.basis is None:
        return factor.chol.T @ centred / root_k
    q = factor.basis
    coef = q.T @ centred
    return (centred - q @ coef) + q @ (factor.chol.T @ coef) / root_k


def repriorise(model, phi, x, y, *, kernel_reg=None, path="auto"):
    """Maps repriorised coordinates to model parameters, with the log-determinant.

    Args:
        model: a model with the sampler protocol (e.g. :class:`widebnn.WideBNN`).
        phi: ``(hidden_params, phi_out)`` with ``phi_out: (n + 1, d)``.
        x: ``(N, *S, C)`` training inputs.
        y: ``(N, d)`` training targets.
        kernel_reg: :math:`k > 0`; default ``noise_std**2`` (exact posterior map).
        path: static; ``"auto"`` (primal if ``n + 1 <= N``), ``"primal"``, ``"dual"``.

    Returns:
        ``(theta, log_det_jacobian)``: model parameters and the scalar
        :math:`\\log|\\det\\partial\\theta/\\partial\\phi|`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from widebnn import WideBNN, kernels, samplers
        >>> model = WideBNN(kernels.serial(kernels.Dense(4), kernels.Relu()), 4,
        ...                 1.0, 0.1, noise_std=0.1)
        >>> x, y = jnp.ones((3, 2)), jnp.zeros((3, 1))
        >>> hidden, _ = model.split_readout(model.init(jax.random.key(0), x.shape))
        >>> theta, log_det = samplers.repriorise(model, (hidden, jnp.zeros((5, 1))),
        ...                                      x, y)
        >>> theta["readout"]["W"].shape
        (4, 1)
    """
    k = resolve_kernel_reg(model, kernel_reg)
    hidden, phi_out = phi
    factor = readout_factor(model.features(hidden, x), y, k, path=path)
    theta_out = readout_forward(factor, phi_out)
    return model.merge_readout(hidden, theta_out), factor.log_det_jacobian


def unrepriorise(model, theta, x, y, *, kernel_reg=None, path="auto"):
    """Inverse of :func:`repriorise`: model parameters to ``(hidden, phi_out)``.

    Args:
        model: a model with the sampler protocol.
        theta: model parameters.
        x: ``(N, *S, C)`` training inputs.
        y: ``(N, d)`` training targets.
        kernel_reg: as in :func:`repriorise`.
        path: as in :func:`repriorise`.

    Returns:
        ``(hidden_params, phi_out)``.
    """
    k = resolve_kernel_reg(model, kernel_reg)
    hidden, theta_out = model.split_readout(theta)
    factor = readout_factor(model.features(hidden, x), y, k, path=path)
    return hidden, readout_inverse(factor, theta_out)


def _gaussian_log_likelihood(residual, noise_std, axis_name):
    squares = _psum(jnp.sum(residual**2), axis_name)
    count = _psum(residual.size, axis_name)
    return -0.5 * squares / noise_std**2 - count * (
        math.log(noise_std) + 0.5 * math.log(2 * math.pi)
    )


@jax.custom_vjp
def log_marginal_likelihood(features, y, noise_var):
    r"""Closed form :math:`\sum_j \log\mathcal N(y_j; 0, TT^\top + \sigma^2 I)`.

    One Cholesky factorisation of the smaller of :math:`T^\top T + \sigma^2 I`
    (primal, ``n + 1 <= N``) and :math:`TT^\top + \sigma^2 I` (dual); the gradient
    is the analytic :math:`(\alpha\alpha^\top - dK^{-1})T` with
    :math:`\alpha = K^{-1}Y` (a custom VJP: differentiating through the
    factorisation is slow on CPU).

    Args:
        features: ``(N, n + 1)`` matrix :math:`T`.
        y: ``(N, d)`` targets.
        noise_var: :math:`\sigma^2 > 0`.

    Returns:
        A scalar; NaN when the factorisation fails.
    """
    return _lml_forward(features, y, noise_var)[0]


def _lml_forward(features, y, noise_var):
    value, alpha, k_inv_t = _lml_factorised(features, y, noise_var)
    return value, (features, alpha, k_inv_t, y.shape[1])


@sequential_on_cpu
def _lml_factorised(features, y, noise_var):
    """Value, :math:`\alpha` and :math:`K^{-1}T` (one Cholesky; see ``_platform``)."""
    num_data, num_features = features.shape
    d = y.shape[1]
    if num_features <= num_data:
        gram = features.T @ features + noise_var * jnp.eye(num_features)
        chol = jnp.linalg.cholesky(gram)
        ty = features.T @ y
        alpha = (y - features @ cho_solve((chol, True), ty)) / noise_var
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol))) + (
            num_data - num_features
        ) * jnp.log(noise_var)
        k_inv_t = features @ cho_solve((chol, True), jnp.eye(num_features))
    else:
        gram = features @ features.T + noise_var * jnp.eye(num_data)
        chol = jnp.linalg.cholesky(gram)
        alpha = cho_solve((chol, True), y)
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        k_inv_t = cho_solve((chol, True), features)
    value = -0.5 * jnp.sum(y * alpha) - 0.5 * d * (
        log_det + num_data * math.log(2 * math.pi)
    )
    return value, alpha, k_inv_t


def _lml_fwd(features, y, noise_var):
    value, res = _lml_forward(features, y, noise_var)
    return value, res


def _lml_bwd(res, cotangent):
    features, alpha, k_inv_t, d = res
    grad_t = alpha @ (alpha.T @ features) - d * k_inv_t
    return cotangent * grad_t, -cotangent * alpha, None


log_marginal_likelihood.defvjp(_lml_fwd, _lml_bwd)


def repriorised_log_density(
    model, phi, x, y, *, kernel_reg=None, path="auto", axis_name=None, closed_form=None
):
    r"""Log density of :math:`\phi` under the posterior: log joint at
    :math:`\theta=\mathcal T(\phi)` plus :math:`\log|\det J|`.

    Two equal forms (up to rounding) for ``k = noise_std**2``:

    * ``closed_form=True``: :math:`\log p_{prior}(\phi) +
      \sum_j\log\mathcal N(y_j;0,TT^\top+\sigma^2I)` (for this ``k`` the readout
      integrates out exactly; Hron et al. 2022, arXiv:2206.07673), with
      the analytic gradient of :func:`log_marginal_likelihood`: the fast path;
    * ``closed_form=False``: the map, prior, likelihood of :math:`T\Theta_{out}`
      and log-det from one factorisation (the reference form; any ``k``;
      differentiated through the factorisation).

    ``closed_form=None`` picks the first when ``k = noise_std**2`` and the data are
    not sharded. Under ``axis_name`` (``shard_map``), rows of ``x`` and ``y`` are
    sharded and the result is the same on every device.

    Args:
        model: a model with the sampler protocol.
        phi: ``(hidden_params, phi_out)``.
        x: ``(N, *S, C)`` inputs.
        y: ``(N, d)`` targets.
        kernel_reg: :math:`k`; default ``noise_std**2``.
        path: static; see :func:`repriorise` (reference form only).
        axis_name: static; the data-sharding axis, or ``None``.
        closed_form: static; see above.

    Returns:
        A scalar (normalised: for ``k = noise_std**2`` and NTK coordinates it
        equals :math:`\log\mathcal N(\phi;0,I)
        + \sum_j\log\mathcal N(y_j;0,TT^\top+\sigma^2I)`).
    """
    k = resolve_kernel_reg(model, kernel_reg)
    noise_var = float(model.noise_std) ** 2
    exact = k == noise_var
    if closed_form is None:
        closed_form = exact and axis_name is None
    if closed_form and (not exact or axis_name is not None):
        raise ValueError(
            "closed_form=True needs kernel_reg = noise_std**2 and unsharded data."
        )
    hidden, phi_out = phi
    features = model.features(hidden, x)
    if closed_form:
        prior = model.log_prior(model.merge_readout(hidden, phi_out))
        return prior + log_marginal_likelihood(features, y, noise_var)
    factor = readout_factor(features, y, k, path=path, axis_name=axis_name)
    theta_out = readout_forward(factor, phi_out)
    theta = model.merge_readout(hidden, theta_out)
    residual = y - features @ theta_out
    log_lik = _gaussian_log_likelihood(residual, model.noise_std, axis_name)
    return model.log_prior(theta) + log_lik + factor.log_det_jacobian


def standard_log_density(model, theta, x, y, *, axis_name=None):
    """Log joint density of the parameters ``theta`` (no repriorisation).

    Args:
        model: a model with the sampler protocol (e.g. :class:`widebnn.WideBNN`).
        theta: model parameters.
        x: ``(N, *S, C)`` training inputs.
        y: ``(N, d)`` training targets.
        axis_name: static; a ``shard_map`` axis over which the rows of ``x`` and
            ``y`` are sharded (the likelihood is summed across it), or ``None``.

    Returns:
        A scalar: log prior plus Gaussian log-likelihood.
    """
    residual = y - model.predict(theta, x)
    log_lik = _gaussian_log_likelihood(residual, model.noise_std, axis_name)
    return model.log_prior(theta) + log_lik


def log_density_fn(model, *, reparam="repriorised", kernel_reg=None, path="auto"):
    """``fn(position, x, y) -> log density`` for ``reparam`` (data are arguments).

    Non-finite values (a failed Cholesky, overflow) are returned as ``-inf`` so that
    samplers reject them.

    Args:
        model: a model with the sampler protocol (e.g. :class:`widebnn.WideBNN`).
        reparam: static; ``"repriorised"`` (the position is ``(hidden, phi_out)``)
            or ``"none"`` (the position is the model parameters).
        kernel_reg: :math:`k > 0` of the repriorisation; default ``noise_std**2``.
        path: static; ``"auto"``, ``"primal"`` or ``"dual"``.

    Returns:
        ``fn(position, x, y) -> scalar``.

    Raises:
        ValueError: for an unknown ``reparam``.
    """
    if reparam not in REPARAMS:
        raise ValueError(f"reparam must be one of {REPARAMS}, got {reparam!r}.")
    k = resolve_kernel_reg(model, kernel_reg) if reparam == "repriorised" else None

    def fn(position, x, y):
        if reparam == "repriorised":
            value = repriorised_log_density(
                model, position, x, y, kernel_reg=k, path=path
            )
        else:
            value = standard_log_density(model, position, x, y)
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)

    return fn


def position_to_params(model, position, x, y, *, reparam, kernel_reg=None, path="auto"):
    """Model parameters reported for a sampler position (``T(phi)`` or itself)."""
    if reparam == "repriorised":
        return repriorise(model, position, x, y, kernel_reg=kernel_reg, path=path)[0]
    return position


def sharded_log_density_fn(
    model, mesh, *, reparam="repriorised", kernel_reg=None, axis="data"
):
    """Like :func:`log_density_fn`, with the rows of ``x``/``y`` sharded over ``mesh``.

    Each device computes its shard's features, Gram matrix, :math:`T^\\top Y` and
    residual sums; these are summed across devices (``psum``), ``kI`` is added once,
    and the Cholesky factorisation is repeated on every device (primal path). The
    position is replicated. ``N`` must be divisible by the number of devices.

    Args:
        model: a model with the sampler protocol.
        mesh: a ``jax.sharding.Mesh`` with axis ``axis``.
        reparam: static; ``"repriorised"`` or ``"none"``.
        kernel_reg: :math:`k`; default ``noise_std**2``.
        axis: static; the mesh axis name.

    Returns:
        ``fn(position, x, y) -> scalar``, differentiable in ``position``.
    """
    from jax.sharding import PartitionSpec

    if reparam not in REPARAMS:
        raise ValueError(f"reparam must be one of {REPARAMS}, got {reparam!r}.")
    k = resolve_kernel_reg(model, kernel_reg) if reparam == "repriorised" else None

    def local(position, x, y):
        if reparam == "repriorised":
            return repriorised_log_density(
                model, position, x, y, kernel_reg=k, path="primal", axis_name=axis
            )
        return standard_log_density(model, position, x, y, axis_name=axis)

    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(axis), PartitionSpec(axis)),
        out_specs=PartitionSpec(),
    )

    def fn(position, x, y):
        value = sharded(position, x, y)
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)

    return fn
