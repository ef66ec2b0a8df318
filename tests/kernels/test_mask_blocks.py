"""Padding masks: cross kernels with two masks, and padding invariance for any filter.

Oracles, both exact (no Monte Carlo):

* **Blocks of the joint kernel.** No layer mixes different inputs, so the kernel of
  a pair of inputs depends on that pair alone: ``kernel(x1, x2, mask1=m1,
  mask2=m2)`` must equal the off-diagonal block of ``kernel(concat(x1, x2),
  mask1=concat(m1, m2))``. The joint kernel reads each input's mask through
  ``mask1`` only, so a layer that drops or misreads ``mask2`` breaks the equality.
  Run for every network in ``layer_cases.MASKED_LAYERS``; ``x1`` and ``x2`` get
  different masks (one fully unpadded row, one short row, one fully padded row).
* **Padding invariance.** Appending padded positions to an input (``SAME`` padding,
  stride 1, so the windows stay aligned) leaves its kernel and the finite network's
  output unchanged, for even as well as odd filter sizes, in 1-D and 2-D. With an
  even filter the window has no middle position, and the output mask must take the
  position whose window is aligned like the input's (``(f - 1) // 2`` after the low
  padding ``(f - 1) // 2``).

Strided ``SAME`` convolutions and pools, ``VALID`` and ``CIRCULAR`` padding are not
padding-invariant by construction (XLA's ``SAME`` padding and the number of windows
depend on the input size; circular padding wraps padded positions in), so they
appear only in the block test. ``ConvTranspose`` with ``SAME`` padding is invariant at
any stride (its padding depends on the filter and stride alone; output ``i`` is
padding iff input ``i // stride`` is).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_cases import MASKED_LAYERS

from widebnn import kernels


def _masks(n, spatial, seed):
    """Masks ``(n, *spatial)``: row 0 unpadded, the rest padded after a random
    prefix of the first axis (row ``n - 1`` entirely) and on the last column of
    the second axis, if any."""
    length = spatial[0]
    prefix = jax.random.randint(jax.random.key(seed), (n,), 1, length)
    prefix = prefix.at[0].set(length).at[-1].set(0)
    shape = (n, *spatial)
    positions = jnp.arange(length).reshape((1, length) + (1,) * (len(spatial) - 1))
    mask = jnp.broadcast_to(
        positions >= prefix.reshape((n,) + (1,) * len(spatial)), shape
    )
    if len(spatial) > 1:
        mask = mask.at[1:, :, -1].set(True)
    return mask


@pytest.mark.parametrize("name", sorted(MASKED_LAYERS))
def test_cross_kernel_with_masks_equals_block_of_joint_kernel(name):
    case = MASKED_LAYERS[name]
    net = case.make()
    x1 = jax.random.normal(jax.random.key(0), (3, *case.spatial, 2))
    x2 = jax.random.normal(jax.random.key(1), (2, *case.spatial, 2))
    m1, m2 = _masks(3, case.spatial, seed=2), _masks(2, case.spatial, seed=3)
    m2 = m2.at[0].set(m1[1])  # also a shared mask with a different input
    get = ("nngp", "ntk")
    cross = jax.jit(lambda a, b, ma, mb: net.kernel(a, b, get=get, mask1=ma, mask2=mb))
    joint = jax.jit(lambda a, ma: net.kernel(a, get=get, mask1=ma))
    blocks = cross(x1, x2, m1, m2)
    full = joint(jnp.concatenate([x1, x2]), jnp.concatenate([m1, m2]))
    for which, block, whole in zip(get, blocks, full, strict=True):
        whole = np.asarray(whole)
        assert np.all(np.isfinite(whole)), which
        assert np.max(np.abs(whole[:3, 3:])) > 0, f"{name} {which}: trivial block"
        np.testing.assert_allclose(
            block, whole[:3, 3:], rtol=1e-12, atol=1e-14, err_msg=f"{name} {which}"
        )


def _padded(x, mask, extra):
    """Appends ``extra`` padded positions (value 3, masked) along each spatial axis."""
    widths = [(0, 0)] + [(0, e) for e in extra]
    x_pad = jnp.pad(x, widths + [(0, 0)], constant_values=3.0)
    mask_pad = jnp.pad(mask, widths, constant_values=True)
    return x_pad, mask_pad


def _spatial_layers(filter_shape):
    """One ``SAME`` layer of each spatial kind with this filter/window: stride 1,
    and a strided ``ConvTranspose`` (its windows stay aligned at any stride)."""
    return {
        "ConvTranspose_strided": kernels.ConvTranspose(
            6, filter_shape, (2,) * len(filter_shape), "SAME", W_std=1.2, b_std=0.3
        ),
        "Conv": kernels.Conv(6, filter_shape, padding="SAME", W_std=1.2, b_std=0.3),
        "ConvTranspose": kernels.ConvTranspose(
            6, filter_shape, padding="SAME", W_std=1.2, b_std=0.3
        ),
        "ConvLocal": kernels.ConvLocal(
            6, filter_shape, padding="SAME", W_std=1.2, b_std=0.3
        ),
        "AvgPool": kernels.AvgPool(
            filter_shape, strides=(1,) * len(filter_shape), padding="SAME"
        ),
    }


FILTERS = [(2,), (3,), (4,), (2, 2), (4, 3)]


KINDS = ["Conv", "ConvTranspose", "ConvTranspose_strided", "ConvLocal", "AvgPool"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("filter_shape", FILTERS, ids=str)
def test_padding_invariance_for_even_and_odd_filters(filter_shape, kind):
    n_dim = len(filter_shape)
    spatial = (5,) if n_dim == 1 else (4, 3)
    extra = (3,) if n_dim == 1 else (2, 1)
    x = jax.random.normal(jax.random.key(0), (3, *spatial, 2))
    mask = _masks(3, spatial, seed=1)
    x_pad, mask_pad = _padded(x, mask, extra)
    layer = _spatial_layers(filter_shape)[kind]
    net = kernels.serial(
        kernels.Dense(6, 1.1, 0.2),
        layer,
        kernels.Relu(),
        kernels.GlobalAvgPool(),
        kernels.Dense(1, 1.0, 0.1),
    )
    get = ("nngp", "ntk")
    for a, b in zip(
        net.kernel(x, get=get, mask1=mask),
        net.kernel(x_pad, get=get, mask1=mask_pad),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    if kind == "ConvLocal":  # untied weights: the padded input has more of them
        return
    _, params = net.init(jax.random.key(1), x.shape)
    np.testing.assert_allclose(
        net.apply(params, x, mask=mask),
        net.apply(params, x_pad, mask=mask_pad),
        rtol=1e-12,
        atol=1e-14,
    )
