"""The kernel of raw inputs, and validation of what users pass in."""

from __future__ import annotations

import string
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ._covariance import Kernel

KERNEL_OUTPUTS = ("nngp", "ntk", "cov1", "cov2")


def validate_get(get: str | Sequence[str]) -> tuple[str, ...]:
    """Checks the ``get`` argument and returns it as a tuple of names."""
    names = (get,) if isinstance(get, str) else tuple(get)
    if not names:
        raise ValueError(f"get must name at least one of {KERNEL_OUTPUTS}.")
    for name in names:
        if name not in KERNEL_OUTPUTS:
            raise ValueError(f"get must be among {KERNEL_OUTPUTS}, got {name!r}.")
    return names


def as_inputs(x, name: str) -> jax.Array:
    if x is None:
        raise TypeError(f"{name} must be an array, got None.")
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, *spatial, channels) with at least 2 axes, "
            f"got shape {x.shape}."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


@jax.jit
def _all_finite(x, mask):
    if mask is not None:
        x = jnp.where(mask[..., None], 0.0, x)
    return jnp.all(jnp.isfinite(x))


def check_finite_inputs(x: jax.Array, mask: jax.Array | None, name: str) -> None:
    """Refuses NaN or infinite inputs (outside padded positions) when concrete.

    A NaN input makes every kernel entry it touches NaN, silently. Under ``jit``
    or another transformation the values are unknown and nothing is checked.

    Raises:
        ValueError: naming ``name`` if an unpadded entry is NaN or infinite.
    """
    if isinstance(x, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
        return
    finite = _all_finite(x, mask)
    if isinstance(finite, jax.core.Tracer):  # concrete inputs inside a trace
        return
    if not bool(finite):
        raise ValueError(
            f"{name} contains NaN or infinite values (outside padded positions); "
            "its kernel would be NaN. Remove or impute them, or mask them."
        )


def as_mask(mask, x: jax.Array, name: str) -> jax.Array | None:
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.shape != x.shape[:-1]:
        raise ValueError(
            f"{name} must be a boolean array of shape {x.shape[:-1]} (inputs without "
            f"the channel axis), got shape {mask.shape}."
        )
    return mask.astype(bool)


def checked_inputs(
    x, mask, x_name: str, mask_name: str
) -> tuple[jax.Array, jax.Array | None]:
    """``(x, mask)`` as arrays after every check on one batch of inputs.

    Args:
        x: ``(N, *S, C)`` inputs (any array-like; integers become floats).
        mask: ``(N, *S)`` boolean padding mask or ``None``.
        x_name: the argument name of ``x`` in error messages.
        mask_name: likewise for ``mask``.

    Raises:
        TypeError: if ``x`` is ``None``.
        ValueError: on fewer than 2 axes, a mask of the wrong shape, or (for
            concrete inputs) NaN or infinite values outside padded positions.
    """
    x = as_inputs(x, x_name)
    mask = as_mask(mask, x, mask_name)
    check_finite_inputs(x, mask, x_name)
    return x, mask


def checked_pair(x1, x2, mask1, mask2):
    """``(x1, x2, mask1, mask2)`` after every check on a pair of input batches.

    ``x2=None`` (the kernel of ``x1`` with itself) stays ``None``, and then
    ``mask2`` must be ``None`` too.

    Raises:
        ValueError: as :func:`checked_inputs`, if ``mask2`` is given without
            ``x2``, or if ``x1`` and ``x2`` differ on an axis but the batch axis.
    """
    x1, mask1 = checked_inputs(x1, mask1, "x1", "mask1")
    if x2 is None:
        if mask2 is not None:
            raise ValueError("mask2 was given but x2 is None; pass x2 as well.")
        return x1, None, mask1, None
    x2 = as_inputs(x2, "x2")
    if x2.ndim != x1.ndim or x2.shape[1:] != x1.shape[1:]:
        raise ValueError(
            "x1 and x2 must agree on every axis but the batch axis, got shapes "
            f"{x1.shape} and {x2.shape}."
        )
    x2, mask2 = checked_inputs(x2, mask2, "x2", "mask2")
    return x1, x2, mask1, mask2


def _pair_subscripts(n_spatial: int, diagonal_spatial: bool, batch_pair: bool):
    """einsum subscripts for ``<x_a, x_b>`` over channels in the given layout."""
    letters = iter(string.ascii_lowercase)
    n_a, n_b, chan = next(letters), next(letters), next(letters)
    if not batch_pair:
        n_b = n_a
    pos_a, pos_b, out_pos = [], [], []
    for _ in range(n_spatial):
        a = next(letters)
        if diagonal_spatial:
            pos_a.append(a)
            pos_b.append(a)
            out_pos.append(a)
        else:
            b = next(letters)
            pos_a.append(a)
            pos_b.append(b)
            out_pos += [a, b]
    lhs = n_a + "".join(pos_a) + chan
    rhs = n_b + "".join(pos_b) + chan
    out = (n_a + n_b if batch_pair else n_a) + "".join(out_pos)
    return f"{lhs},{rhs}->{out}"


def input_kernel(
    x1,
    x2=None,
    *,
    mask1=None,
    mask2=None,
    diagonal_spatial: bool = False,
    compute_ntk: bool = True,
) -> Kernel:
    """Builds the kernel of raw inputs: inner products over channels divided by ``C``.

    Args:
        x1: ``(N1, *S, C)`` inputs.
        x2: ``(N2, *S, C)`` inputs or ``None`` (then ``x2`` is ``x1``).
        mask1: ``(N1, *S)`` boolean padding mask or ``None``. Padded positions are
            zeroed in the inputs.
        mask2: likewise for ``x2``.
        diagonal_spatial: static; keep only equal-position covariances.
        compute_ntk: static; if ``False`` the kernel carries ``ntk=None``.

    Returns:
        The input :class:`Kernel` (``ntk`` is zero: inputs have no parameters).

    Raises:
        ValueError: on arrays of the wrong rank, mismatched channel counts, masks
            of the wrong shape, or (for concrete inputs, not under ``jit``) NaN or
            infinite values outside padded positions.
    """
    x1, x2, mask1, mask2 = checked_pair(x1, x2, mask1, mask2)
    return kernel_of_inputs(
        x1,
        x2,
        mask1,
        mask2,
        diagonal_spatial=diagonal_spatial,
        compute_ntk=compute_ntk,
    )


def kernel_of_inputs(
    x1: jax.Array,
    x2: jax.Array | None,
    mask1: jax.Array | None,
    mask2: jax.Array | None,
    *,
    diagonal_spatial: bool,
    compute_ntk: bool,
) -> Kernel:
    """:func:`input_kernel` of inputs already checked by :func:`checked_pair`."""
    x1_is_x2 = x2 is None
    if mask1 is not None:
        x1 = jnp.where(mask1[..., None], 0.0, x1)
    if x2 is None:
        x2, mask2 = x1, mask1
    elif mask2 is not None:
        x2 = jnp.where(mask2[..., None], 0.0, x2)
    dtype = jnp.result_type(x1.dtype, x2.dtype)
    x1, x2 = x1.astype(dtype), x2.astype(dtype)
    n_spatial = x1.ndim - 2
    channels = x1.shape[-1]
    cross = _pair_subscripts(n_spatial, diagonal_spatial, batch_pair=True)
    self_ = _pair_subscripts(n_spatial, diagonal_spatial, batch_pair=False)
    nngp = jnp.einsum(cross, x1, x2) / channels
    cov1 = jnp.einsum(self_, x1, x1) / channels
    cov2 = None if x1_is_x2 else jnp.einsum(self_, x2, x2) / channels
    return Kernel(
        nngp=nngp,
        ntk=jnp.zeros_like(nngp) if compute_ntk else None,
        cov1=cov1,
        cov2=cov2,
        mask1=mask1,
        mask2=None if x1_is_x2 else mask2,
        shape1=tuple(x1.shape),
        shape2=tuple(x2.shape),
        diagonal_spatial=diagonal_spatial,
        is_gaussian=False,
        x1_is_x2=x1_is_x2,
    )
