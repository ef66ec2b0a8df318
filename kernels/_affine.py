r"""The rules every affine layer shares: kernel and features from one linear map.

An affine layer (``Dense``, ``Conv``, ``ConvTranspose``, ``ConvLocal``) computes
:math:`z = \tfrac{\sigma_w}{\sqrt n} W \mathcal A x + \sigma_b b` (``"ntk"``
parameterisation; ``"standard"`` draws :math:`W \sim \mathcal N(0, \sigma_w^2/n)`
and computes :math:`W \mathcal A x + b`), with ``n`` its fan-in and
:math:`\mathcal A` a fixed linear map of the input positions (the identity for
``Dense``, the window gather of a convolution). Writing :math:`a` for the map
:math:`\mathcal A` induces on covariances, the infinite-width kernel is

.. math::
    K' = \sigma_w^2 a(K) + \sigma_b^2, \qquad
    \Theta' = K' + \sigma_w^2 a(\Theta) \;(\texttt{"ntk"}), \qquad
    \Theta' = n\, a(K) + \sigma_w^2 a(\Theta) + [b] \;(\texttt{"standard"}),

(``[b]`` is 1 with a bias, else 0) and, for a feature map ``A`` with
``A(u) . A(v) = a(u . v)`` (exactly, or in expectation), the output features are
the concatenations whose inner products add up to the same sums:

.. math::
    \phi' = [\sigma_w A(\phi), \sigma_b], \qquad
    \psi' = [\sigma_w A(\psi), \phi'] \;(\texttt{"ntk"}), \qquad
    \psi' = [\sqrt n A(\phi), \sigma_w A(\psi), [1]] \;(\texttt{"standard"}).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ._feature_core import Features
from ._kernel import Kernel

#: ``ones(cov, lead)``: the layout of a constant term (a bias variance) in the
#: covariance ``cov`` with ``lead`` batch axes; 1 everywhere unless a layer says
#: otherwise (``ConvLocal``: only at equal positions).
OnesFn = Callable[[jax.Array, int], jax.Array | float]


def _everywhere(cov, lead):
    del cov, lead
    return 1.0


def affine_kernel(
    k: Kernel,
    a: Callable[[jax.Array, int], jax.Array],
    W_std,
    b_std,
    *,
    standard: bool,
    fan_in: int,
    ones: OnesFn = _everywhere,
) -> Kernel:
    """``k`` with ``nngp``, ``ntk``, ``cov1``, ``cov2`` mapped by an affine layer.

    Args:
        k: the input kernel.
        a: ``a(cov, lead)``, the layer's linear operator on covariances with
            ``lead`` leading batch axes (2 for ``nngp``/``ntk``, 1 for ``cov1``);
            it must keep the layout of ``k``.
        W_std: weight standard deviation (may be traced).
        b_std: bias standard deviation or ``None`` (no bias).
        standard: static; ``"standard"`` parameterisation.
        fan_in: static; inputs per output unit of the finite layer (``C`` for
            ``Dense``, ``C |f|`` for a convolution); only used by ``standard``.
        ones: where the bias variance enters (default: every entry).

    Returns:
        The kernel with the four covariances replaced; masks, shapes and flags are
        left to the layer.
    """
    bias_var = 0.0 if b_std is None else b_std**2
    mapped = k.map_covariances(a, ntk=True, lead=True)

    def affine(cov, lead):
        return W_std**2 * cov + bias_var * ones(cov, lead)

    out = mapped.map_covariances(affine, lead=True)
    if k.ntk is None:
        return out
    if standard:
        ntk = fan_in * mapped.nngp + W_std**2 * mapped.ntk
        if b_std is not None:
            ntk = ntk + ones(ntk, 2)
    else:
        ntk = out.nngp + W_std**2 * mapped.ntk
    return out.replace(ntk=ntk)


def affine_features(
    f: Features,
    a: Callable[[jax.Array, str], jax.Array],
    W_std,
    b_std,
    *,
    standard: bool,
    fan_in: int,
) -> Features:
    """``f`` with ``nngp`` and ``ntk`` features mapped by an affine layer.

    Args:
        f: the input features, ``nngp`` ``(N, *S, m1)`` and ``ntk`` ``(N, *S, m2)``.
        a: ``a(features, name)`` with ``name`` ``"nngp"`` or ``"ntk"``: the layer's
            feature operator, ``(N, *S, m) -> (N, *S', m')`` with
            ``a(u) . a(v)`` equal (or unbiased) for the operator of
            :func:`affine_kernel`. It is applied once per kind, so a random ``a``
            may draw independent randomness for each.
        W_std: weight standard deviation.
        b_std: bias standard deviation or ``None``.
        standard: static; ``"standard"`` parameterisation.
        fan_in: static; as in :func:`affine_kernel`.

    Returns:
        Features with ``nngp`` ``(N, *S', m1' [+ 1])`` and ``ntk`` as in the module
        docstring; mask, shape and flags are left to the layer.
    """
    mapped = a(f.nngp, "nngp")
    ones = jnp.ones((*mapped.shape[:-1], 1), mapped.dtype)
    nngp = W_std * mapped
    if b_std is not None:
        nngp = jnp.concatenate([nngp, b_std * ones], axis=-1)
    ntk = None
    if f.ntk is not None:
        mapped_ntk = W_std * a(f.ntk, "ntk")
        if standard:
            parts = [math.sqrt(fan_in) * mapped, mapped_ntk]
            if b_std is not None:
                parts.append(ones)
        else:
            parts = [mapped_ntk, nngp]
        ntk = jnp.concatenate(parts, axis=-1)
    return f.replace(nngp=nngp, ntk=ntk)
