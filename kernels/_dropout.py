"""Dropout: random masking in the finite network, a diagonal rescaling of the kernel."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_choice
from ._feature_core import Unsupported
from ._kernel import Kernel, Layer, stateless_init

MODES = ("train", "test")


def _check_rate(rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float | np.number):
        raise TypeError(f"rate must be a number in (0, 1], got {rate!r}.")
    if not 0 < rate <= 1:
        raise ValueError(
            f"rate must be in (0, 1] (it is the keep probability), got {rate}."
        )
    return float(rate)


def _same_position(n_spatial: int, spatial_shape, diagonal_spatial: bool, lead: int):
    """``(1,)*lead + layout`` indicator of equal positions (``None`` if all are)."""
    if diagonal_spatial or n_spatial == 0:
        return None
    eye = None
    for i, size in enumerate(spatial_shape):
        shape = [1] * (lead + 2 * n_spatial)
        shape[lead + 2 * i] = shape[lead + 2 * i + 1] = size
        factor = jnp.eye(size, dtype=bool).reshape(shape)
        eye = factor if eye is None else eye & factor
    return eye


def _scale_where(cov, where, factor):
    if cov is None:
        return None
    if where is None:
        return cov * factor
    return jnp.where(where, cov * factor, cov)


def _unchanged_features(f, key, spec):
    """The feature rule of ``"test"`` mode: the identity."""
    del key, spec
    return f


def Dropout(rate: float, mode: str = "train") -> Layer:
    r"""Dropout as in Neural Tangents' ``stax.Dropout`` (``rate`` = keep probability).

    Finite network (``"train"``): each activation is kept with probability
    ``rate`` and rescaled, :math:`y = x\,m/\mathrm{rate}`,
    :math:`m \sim \mathrm{Bernoulli}(\mathrm{rate})`, independently per example,
    position and channel; ``apply`` needs ``key``. In ``"test"`` mode ``apply`` is
    the identity.

    Infinite width (``"train"``): :math:`\mathbb E[m m'] / \mathrm{rate}^2` is
    :math:`1/\mathrm{rate}` for the same mask entry and 1 otherwise, so the entries
    that pair an example and position *with itself* are multiplied by
    :math:`1/\mathrm{rate}`:

    * ``cov1`` and ``cov2``: the equal-position entries (all of them in diagonal
      layout);
    * ``nngp`` and ``ntk``: only when ``x2`` is ``x1`` (``Kernel.x1_is_x2``, one
      forward pass, one mask), on the batch diagonal at equal positions. Two
      different batches see independent masks, so their cross kernel is unchanged.

    The output is no longer Gaussian (an affine layer must follow before a
    nonlinearity). ``"test"`` mode leaves the kernel unchanged. As in Neural
    Tangents 0.6.5, dropout directly on the inputs is not refused.

    Feature map: the identity in ``"test"`` mode (and for ``rate=1``); none in
    ``"train"`` mode (:func:`~widebnn.kernels.feature_map` refuses it).

    Args:
        rate: static; keep probability in ``(0, 1]`` (``1`` keeps everything).
        mode: static; ``"train"`` or ``"test"``.

    Returns:
        A :class:`Layer` without parameters.

    Raises:
        TypeError: if ``rate`` is not a number.
        ValueError: if ``rate`` is not in ``(0, 1]`` or ``mode`` is unknown.

    Example:
        >>> import jax.numpy as jnp
        >>> from widebnn import kernels
        >>> net = kernels.serial(kernels.Dense(8), kernels.Dropout(0.5))
        >>> net.kernel(jnp.array([[1.0], [0.0]]), get="nngp").tolist()
        [[2.0, 0.0], [0.0, 0.0]]
    """
    rate = _check_rate(rate)
    mode = check_choice(mode, "mode", MODES)
    train = mode == "train"

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del params, mask, kwargs
        if not train:
            return x
        if key is None:
            raise ValueError(
                "Dropout in 'train' mode needs a PRNG key: apply(params, x, key=key)."
            )
        keep = jax.random.bernoulli(key, rate, x.shape)
        return jnp.where(keep, x / rate, jnp.zeros_like(x))

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        if not train:
            return k
        factor = 1 / rate
        n_spatial, spatial = k.n_spatial, k.shape1[1:-1]
        same = _same_position(n_spatial, spatial, k.diagonal_spatial, lead=1)
        cov1 = _scale_where(k.cov1, same, factor)
        cov2 = _scale_where(k.cov2, same, factor)
        nngp, ntk = k.nngp, k.ntk
        if k.x1_is_x2:
            n = k.shape1[0]
            batch = jnp.eye(n, dtype=bool).reshape((n, n) + (1,) * (nngp.ndim - 2))
            same_pair = _same_position(n_spatial, spatial, k.diagonal_spatial, lead=2)
            where = batch if same_pair is None else batch & same_pair
            nngp = _scale_where(nngp, where, factor)
            ntk = _scale_where(ntk, where, factor)
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=False)

    # In train mode the kernel changes only where an input meets itself in one
    # forward pass (the batch diagonal when x2 is x1): no map of single inputs
    # gives that.
    feature_fn = _unchanged_features
    if train and rate < 1:
        feature_fn = Unsupported(
            "Dropout",
            "in 'train' mode its kernel changes only on the batch diagonal of one "
            "batch, which no per-input feature map reproduces; use mode='test'",
        )
    return Layer(
        stateless_init, apply, kernel_fn, name="Dropout", feature_fn=feature_fn
    )
