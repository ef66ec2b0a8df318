"""``WideBNN``: a Bayesian network with a Gaussian linear readout.

The model implements the small sampler protocol of ``widebnn.samplers`` (``init``,
``log_prior``, ``log_likelihood``, ``features``, ``split_readout``,
``merge_readout``, ``predict``) and gives the infinite-width limit of the same
network through :meth:`WideBNN.kernel`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from widebnn import kernels

BODY = "body"
"""Key of the body (hidden layers) parameters in a parameter dict."""
READOUT = "readout"
"""Key of the readout parameters ``{"W": (width, out_dim), "b": (out_dim,)}``."""
PARAMETERIZATIONS = ("ntk", "standard")


def _check_std(value, name: str, *, positive: bool) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a number, got {value!r}.") from error
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}.")
    return value


MAX_DIM = 2**31 - 1
"""Largest ``width``/``out_dim``: XLA indexes array axes with 32-bit integers (a
larger axis aborts the process instead of raising)."""


def _check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}.")
    if value > MAX_DIM:
        raise ValueError(
            f"{name} must be at most 2**31 - 1 = {MAX_DIM} (XLA's 32-bit array "
            f"axes), got {value}."
        )
    return int(value)


def _normal_logpdf_sum(values, std) -> jax.Array:
    """Sum of ``log N(v; 0, std^2)`` over all entries of ``values``."""
    values = jnp.asarray(values)
    return -0.5 * jnp.sum((values / std) ** 2) - values.size * (
        math.log(std) + 0.5 * math.log(2 * math.pi)
    )


class WideBNN:
    r"""A Bayesian network ``body`` followed by a Gaussian linear readout.

    With penultimate activations :math:`h(x)\in\mathbb R^n` (``n = width``) from
    ``body``, the network output is

    .. math:: f(x) = \tfrac{\sigma_{w}}{\sqrt n}\, h(x) W + \sigma_{b}\, b
        \quad(\text{"ntk"}),\qquad f(x) = h(x) W + b \quad(\text{"standard"}),

    with :math:`W_{ij}, b_j \sim \mathcal N(0, 1)` ("ntk") or
    :math:`W_{ij}\sim\mathcal N(0,\sigma_w^2/n)`,
    :math:`b_j\sim\mathcal N(0,\sigma_b^2)`
    ("standard"), and :math:`y \sim \mathcal N(f(x), \sigma^2 I)` per output.
    Every parameter of ``body`` is taken to have a :math:`\mathcal N(0, 1)` prior,
    which is what the NTK parameterisation of ``widebnn.kernels`` layers gives
    (body layers in standard parameterisation are not supported by
    :meth:`log_prior`).

    Parameters are a dict ``{"body": body_params, "readout": {"W": (n, d),
    "b": (d,)}}`` (the module constants ``BODY`` and ``READOUT``). The readout in
    whitened coordinates is ``theta_out = [W; b] (n + 1, d)`` ("ntk": the stored
    values; "standard": divided by their prior standard deviations), so that its
    prior is always :math:`\mathcal N(0, I)` and ``f = features(body) @ theta_out``.

    Args:
        body: a ``widebnn.kernels`` layer mapping inputs ``(N, *S, C)`` to the last
            hidden representation ``(N, width)`` (dense, conv + pooling/flatten,
            attention + pooling).
        width: the number of features ``n`` the body outputs (static).
        readout_W_std: :math:`\sigma_w > 0` of the readout.
        readout_b_std: :math:`\sigma_b \ge 0` of the readout.
        noise_std: standard deviation :math:`\sigma > 0` of the Gaussian noise.
        out_dim: number of outputs ``d`` (static).
        parameterization: ``"ntk"`` or ``"standard"``, of the readout (static).

    Raises:
        ValueError: naming the argument, for a non-positive ``width``/``out_dim``
            or one of ``2**31`` or more,
            a negative or non-finite std, a non-positive ``noise_std`` or
            ``readout_W_std``, or an unknown parameterisation.

    Example:
        >>> import jax
        >>> from widebnn import WideBNN, kernels
        >>> body = kernels.serial(kernels.Dense(16, 1.5, 0.1), kernels.Relu())
        >>> model = WideBNN(body, 16, 1.0, 0.1, noise_std=0.1, out_dim=1)
        >>> sorted(model.init(jax.random.key(0), (5, 3)))
        ['body', 'readout']
    """

    def __init__(
        self,
        body: kernels.Layer,
        width: int,
        readout_W_std: float,
        readout_b_std: float,
        noise_std: float,
        out_dim: int = 1,
        parameterization: str = "ntk",
    ):
        if not isinstance(body, kernels.Layer):
            raise ValueError(
                f"body must be a widebnn.kernels Layer, got {type(body).__name__}."
            )
        self.body = body
        self.width = _check_int(width, "width")
        self.readout_W_std = _check_std(readout_W_std, "readout_W_std", positive=True)
        self.readout_b_std = _check_std(readout_b_std, "readout_b_std", positive=False)
        self.noise_std = _check_std(noise_std, "noise_std", positive=True)
        self.out_dim = _check_int(out_dim, "out_dim")
        if not isinstance(parameterization, str) or parameterization.lower() not in (
            PARAMETERIZATIONS
        ):
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}, got "
                f"{parameterization!r}."
            )
        self.parameterization = parameterization.lower()
        if self.parameterization == "standard" and self.readout_b_std == 0:
            raise ValueError(
                "readout_b_std must be > 0 with parameterization='standard'."
            )

    def _key(self):
        return (
            self.body,
            self.width,
            self.readout_W_std,
            self.readout_b_std,
            self.noise_std,
            self.out_dim,
            self.parameterization,
        )

    def __eq__(self, other) -> bool:
        return isinstance(other, WideBNN) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"WideBNN(width={self.width}, readout_W_std={self.readout_W_std}, "
            f"readout_b_std={self.readout_b_std}, noise_std={self.noise_std}, "
            f"out_dim={self.out_dim}, parameterization={self.parameterization!r})"
        )

    # --- prior scales of the stored readout -----------------------------------
    def _readout_scales(self) -> tuple[float, float]:
        """Prior standard deviations of the stored ``W`` and ``b`` entries."""
        if self.parameterization == "standard":
            return self.readout_W_std / math.sqrt(self.width), self.readout_b_std
        return 1.0, 1.0

    # --- protocol ---------------------------------------------------------------
    def init(self, key, input_shape) -> dict[str, Any]:
        """Draws parameters from the prior.

        Args:
            key: a PRNG key.
            input_shape: static; the shape ``(N, *S, C)`` of an input batch.

        Returns:
            ``{"body": ..., "readout": {"W": (width, out_dim), "b": (out_dim,)}}``.

        Raises:
            ValueError: if the body does not output ``(N, width)``.
        """
        body_key, w_key, b_key = jax.random.split(key, 3)
        out_shape, body_params = self.body.init(body_key, tuple(input_shape))
        self._check_body_shape(tuple(out_shape))
        w_scale, b_scale = self._readout_scales()
        readout = {
            "W": w_scale * jax.random.normal(w_key, (self.width, self.out_dim)),
            "b": b_scale * jax.random.normal(b_key, (self.out_dim,)),
        }
        return {BODY: body_params, READOUT: readout}

    def _check_body_shape(self, shape) -> None:
        if len(shape) != 2 or shape[-1] != self.width:
            raise ValueError(
                f"body must output (N, width) = (N, {self.width}), got shape "
                f"{shape}; end the body with pooling or Flatten, or fix width."
            )

    def prior_std(self, params) -> dict[str, Any]:
        r"""Prior standard deviation of every leaf of ``params`` (same structure).

        Every entry of a leaf is an independent :math:`\mathcal N(0, s^2)` with the
        leaf's ``s``: 1 for the body (its scales are in the forward pass) and for an
        NTK readout; :math:`\sigma_w/\sqrt n` and :math:`\sigma_b` for a standard
        readout.
        """
        w_scale, b_scale = self._readout_scales()
        body = jax.tree.map(lambda _: 1.0, params[BODY])
        return {BODY: body, READOUT: {"W": w_scale, "b": b_scale}}

    def log_prior(self, params) -> jax.Array:
        """Normalised log prior density of ``params`` (a scalar)."""
        terms = jax.tree.map(_normal_logpdf_sum, params, self.prior_std(params))
        return jnp.asarray(sum(jax.tree_util.tree_leaves(terms), 0.0))

    def hidden(self, body_params, x) -> jax.Array:
        """The last hidden representation ``h(x)``, shape ``(N, width)``."""
        h = self.body.apply(body_params, x)
        self._check_body_shape(h.shape)
        return h

    def features(self, body_params, x) -> jax.Array:
        r"""Scaled features with the bias column, ``T`` of shape ``(N, width + 1)``.

        :math:`T = [\tfrac{\sigma_w}{\sqrt n} h(x) \,|\, \sigma_b \mathbf 1]`, so that
        ``predict(params, x) == features(params["body"], x) @ theta_out``.
        """
        h = self.hidden(body_params, x)
        scaled = (self.readout_W_std / math.sqrt(self.width)) * h
        bias = jnp.full((h.shape[0], 1), self.readout_b_std, dtype=h.dtype)
        return jnp.concatenate([scaled, bias], axis=1)

    def split_readout(self, params) -> tuple[Any, jax.Array]:
        """``(body_params, theta_out)``: ``theta_out = [W; b]`` whitened, (n+1, d)."""
        w_scale, b_scale = self._readout_scales()
        readout = params[READOUT]
        theta_out = jnp.concatenate(
            [readout["W"] / w_scale, readout["b"][None, :] / b_scale], axis=0
        )
        return params[BODY], theta_out

    def merge_readout(self, body_params, theta_out) -> dict[str, Any]:
        """Inverse of :meth:`split_readout`."""
        w_scale, b_scale = self._readout_scales()
        readout = {"W": w_scale * theta_out[:-1], "b": b_scale * theta_out[-1]}
        return {BODY: body_params, READOUT: readout}

    def predict(self, params, x) -> jax.Array:
        """Network outputs ``f(x)``, shape ``(N, out_dim)`` (a full forward pass)."""
        h = self.hidden(params[BODY], x)
        readout = params[READOUT]
        b = readout["b"][None, :]
        if self.parameterization == "standard":
            return h @ readout["W"] + b
        w_scale = self.readout_W_std / math.sqrt(self.width)
        return w_scale * (h @ readout["W"]) + self.readout_b_std * b

    def log_likelihood(self, params, x, y) -> jax.Array:
        """``sum log N(y; f(x), noise_std^2)`` over points and outputs (y: (N, d))."""
        residual = y - self.predict(params, x)
        return _normal_logpdf_sum(residual, self.noise_std)

    def log_joint(self, params, x, y) -> jax.Array:
        """``log_prior + log_likelihood``."""
        return self.log_prior(params) + self.log_likelihood(params, x, y)

    def kernel(self, x1, x2=None, get="nngp", **kwargs):
        """Infinite-width kernels of the network (body + readout).

        Args:
            x1: ``(N1, *S, C)`` inputs.
            x2: ``(N2, *S, C)`` inputs or ``None``.
            get: ``"nngp"``, ``"ntk"`` or a tuple, as in ``Layer.kernel``.
            **kwargs: passed to ``Layer.kernel``.

        Returns:
            ``(N1, N2)`` kernel(s) of one output (all outputs are i.i.d.).
        """
        readout = kernels.Dense(
            self.out_dim,
            self.readout_W_std,
            self.readout_b_std,
            parameterization=self.parameterization,
        )
        return kernels.serial(self.body, readout).kernel(x1, x2, get, **kwargs)
