"""The Metropolis log-ratio from per-element differences (samplers/_ratio.py)
equals the difference of log densities, and keeps its digits in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from widebnn import samplers

from .test_reprior import CASES, problem


def _proposal(position, key, scale):
    leaves, treedef = jax.tree_util.tree_flatten(position)
    keys = jax.random.split(key, len(leaves))
    moved = [
        leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype)
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, moved)


def _position(model, phi, x, y, reparam):
    if reparam == "repriorised":
        return phi
    theta, _ = samplers.repriorise(model, phi, x, y)
    return theta


@pytest.mark.parametrize("reparam", ["repriorised", "none"])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("n, width, path", CASES)
def test_ratio_equals_difference_of_log_densities(
    reparam, parameterization, n, width, path
):
    model, x, y, phi = problem(n, width, 2, seed=3, parameterization=parameterization)
    position = _position(model, phi, x, y, reparam)
    proposal = _proposal(position, jax.random.key(4), 0.3)
    density = samplers.log_density_fn(model, reparam=reparam, path=path)
    expected = density(proposal, x, y) - density(position, x, y)
    ratio = samplers.log_density_ratio(
        model, position, proposal, x, y, reparam=reparam, path=path
    )
    assert abs(float(expected)) > 1e-3  # a non-trivial move
    np.testing.assert_allclose(ratio, expected, rtol=1e-10, atol=1e-10)
    # Antisymmetric: the reverse move has the opposite log-ratio.
    reverse = samplers.log_density_ratio(
        model, proposal, position, x, y, reparam=reparam, path=path
    )
    np.testing.assert_allclose(reverse, -ratio, rtol=1e-12, atol=1e-12)


def test_ratio_keeps_its_digits_in_float32():
    """A small move of a network with 20k parameters: in float32 the difference of
    the two totals (each ~1e4) is off by many ulps of the totals, the per-element
    ratio stays close to the float64 value."""
    model, x, y, phi = problem(64, 4000, 1, seed=5, d_in=3)
    theta = _position(model, phi, x, y, "none")
    proposal = _proposal(theta, jax.random.key(6), 1e-3)
    to32 = lambda tree: jax.tree.map(lambda v: v.astype(jnp.float32), tree)  # noqa: E731
    density = samplers.log_density_fn(model, reparam="none")
    exact = float(density(proposal, x, y) - density(theta, x, y))
    t32, p32, x32, y32 = to32(theta), to32(proposal), to32(x), to32(y)
    assert density(t32, x32, y32).dtype == jnp.float32
    totals = float(density(p32, x32, y32) - density(t32, x32, y32))
    ratio = samplers.log_density_ratio(model, t32, p32, x32, y32, reparam="none")
    assert ratio.dtype == jnp.float32
    error_ratio, error_totals = abs(float(ratio) - exact), abs(totals - exact)
    # float32 rounding of a sum of 2e4 terms of size ~1 is ~1e-3 (eps * total);
    # the per-element differences are ~1e-3 each and sum to O(1) with error ~1e-6.
    assert error_ratio < 1e-4 * max(1.0, abs(exact)), (error_ratio, exact)
    assert error_ratio < error_totals / 10, (error_ratio, error_totals)


def test_ratio_rejects_unknown_reparam():
    model, x, y, phi = problem(4, 3, 1)
    with pytest.raises(ValueError, match="reparam"):
        samplers.log_density_ratio(model, phi, phi, x, y, reparam="nngp")
