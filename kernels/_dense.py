"""Fully connected layer: finite weights and their infinite-width kernel map."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._affine import affine_features, affine_kernel
from ._checks import check_channels, check_choice, check_positive_int, check_std
from ._feature_core import Features, FeatureSpec
from ._kernel import Kernel, Layer

PARAMETERIZATIONS = ("ntk", "standard")


def _identity(values, which):
    """``Dense`` acts on channels only: its positional map is the identity."""
    del which
    return values


def Dense(
    out_dim: int,
    W_std: float = 1.0,
    b_std: float | None = None,
    *,
    parameterization: str = "ntk",
) -> Layer:
    r"""Fully connected layer acting on the channel (last) axis of every position.

    Finite network, with ``n`` input channels:

    * ``"ntk"``: :math:`z = \tfrac{\sigma_w}{\sqrt n} x W + \sigma_b b`,
      :math:`W_{ij}, b_j \sim \mathcal N(0, 1)`;
    * ``"standard"``: :math:`z = x W + b`, :math:`W_{ij}\sim\mathcal N(0,\sigma_w^2/n)`,
      :math:`b_j \sim \mathcal N(0, \sigma_b^2)`.

    Infinite width (both give the same NNGP):
    :math:`K' = \sigma_w^2 K + \sigma_b^2`; the NTK is
    :math:`\Theta' = K' + \sigma_w^2\Theta` (``"ntk"``) or
    :math:`\Theta' = n K + \sigma_w^2 \Theta + [b]` (``"standard"``: the weights are
    the trainable parameters, so their gradient contributes ``n K`` with the finite
    input width ``n``, and the bias contributes 1 when present). These follow the
    conventions of Neural Tangents' ``stax.Dense``.

    Args:
        out_dim: static; number of output channels of the finite layer (the kernel
            does not depend on it).
        W_std: weight standard deviation :math:`\sigma_w \ge 0` (may be traced).
        b_std: bias standard deviation :math:`\sigma_b \ge 0`, or ``None`` for no
            bias (not the same as 0 under standard parameterisation).
        parameterization: static; ``"ntk"`` or ``"standard"``.

    Returns:
        A :class:`Layer`; ``params`` is ``{"W": (n, out_dim), "b": (out_dim,)}``
        (no ``"b"`` when ``b_std`` is ``None``).

    Raises:
        ValueError: if ``out_dim < 1``, a std is negative or the parameterisation is
            unknown.

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import kernels
        >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
        >>> print(kernels.Dense(1, W_std=2.0, b_std=0.5).kernel(x, get="nngp"))
        [[2.25 1.45]
         [1.45 2.25]]
    """
    out_dim = check_positive_int(out_dim, "out_dim")
    check_std(W_std, "W_std")
    check_std(b_std, "b_std", allow_none=True)
    parameterization = check_choice(
        parameterization, "parameterization", PARAMETERIZATIONS
    )
    standard = parameterization == "standard"

    def init(key, input_shape):
        w_key, b_key = jax.random.split(key)
        n_in = input_shape[-1]
        w = jax.random.normal(w_key, (n_in, out_dim))
        params = {"W": w * (W_std / jnp.sqrt(n_in)) if standard else w}
        if b_std is not None:
            b = jax.random.normal(b_key, (out_dim,))
            params["b"] = b * b_std if standard else b
        return (*input_shape[:-1], out_dim), params

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del key, kwargs
        w = params["W"]
        check_channels(x, w.shape[0], "x", "Dense")
        z = x @ w if standard else (W_std / jnp.sqrt(w.shape[0])) * (x @ w)
        if b_std is not None:
            b = params["b"].reshape((1,) * (z.ndim - 1) + (-1,))
            z = z + (b if standard else b_std * b)
        if mask is not None:
            z = jnp.where(mask[..., None], 0.0, z)
        return z

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        out = affine_kernel(
            k, _identity, W_std, b_std, standard=standard, fan_in=k.shape1[-1]
        )
        return out.replace(
            shape1=k.shape1[:-1] + (out_dim,),
            shape2=k.shape2[:-1] + (out_dim,),
            is_gaussian=True,
        ).zero_masked()

    def feature_fn(f: Features, key, spec: FeatureSpec) -> Features:
        # Exact, no randomness: the kernel rule's sums become concatenations
        # (inner products of concatenated blocks add), scalings stay scalings.
        del key, spec
        out = affine_features(
            f, _identity, W_std, b_std, standard=standard, fan_in=f.shape[-1]
        )
        return out.replace(
            shape=(*f.shape[:-1], out_dim), is_gaussian=True
        ).zero_masked()

    return Layer(init, apply, kernel_fn, name="Dense", feature_fn=feature_fn)
