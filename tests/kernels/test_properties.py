"""Properties of random small architectures (hypothesis, derandomised).

For any stack of Dense layers and registered activations, in either
parameterisation: the kernels are finite, symmetric and PSD, the cross kernel is a
block of the joint kernel, and gradients with respect to the hyperparameters and the
inputs are finite, including at duplicated inputs (x1 == x2) and at zero inputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_symmetric_psd
from hypothesis import given, settings, strategies as st
from layer_cases import ACTIVATIONS

from widebnn import kernels

pytestmark = pytest.mark.slow  # hypothesis sweeps over random architectures

NAMES = sorted(ACTIVATIONS)


@st.composite
def architectures(draw):
    depth = draw(st.integers(1, 3))
    names = [draw(st.sampled_from(NAMES)) for _ in range(depth)]
    W_std = draw(st.floats(0.3, 2.0))
    b_std = draw(st.one_of(st.none(), st.floats(0.0, 1.0)))
    parameterization = draw(st.sampled_from(["ntk", "standard"]))
    return names, W_std, b_std, parameterization


def _build(names, W_std, b_std, parameterization):
    layers = []
    for name in names:
        layers += [
            kernels.Dense(7, W_std, b_std, parameterization=parameterization),
            ACTIVATIONS[name].make(),
        ]
    layers.append(kernels.Dense(1, W_std, b_std, parameterization=parameterization))
    return kernels.serial(*layers)


def _inputs(names, seed):
    scale = min(ACTIVATIONS[name].input_std for name in names)
    x = jax.random.normal(jax.random.key(seed), (4, 3)) * scale
    return jnp.concatenate([x, x[:1], jnp.zeros_like(x[:1])])


@settings(max_examples=25, deadline=None, derandomize=True)
@given(architectures(), st.integers(0, 1000))
def test_random_architectures_symmetric_psd_consistent(arch, seed):
    names = arch[0]
    net = _build(*arch)
    x = _inputs(names, seed)
    get = ("nngp", "ntk") if all(ACTIVATIONS[n].has_ntk for n in names) else ("nngp",)
    joint = net.kernel(x, get=get)
    cross = net.kernel(x[:3], x[3:], get=get)
    for full, block, which in zip(joint, cross, get, strict=True):
        assert np.all(np.isfinite(full)), which
        assert_symmetric_psd(full, rtol=1e-9, name=f"{names} {which}")
        np.testing.assert_allclose(
            block, np.asarray(full)[:3, 3:], rtol=1e-10, atol=1e-12
        )


@settings(max_examples=15, deadline=None, derandomize=True)
@given(architectures(), st.integers(0, 1000))
def test_random_architectures_gradients_finite(arch, seed):
    names, W_std, b_std, parameterization = arch
    x = _inputs(names, seed)
    get = "ntk" if all(ACTIVATIONS[n].has_ntk for n in names) else "nngp"

    def total(W, b, inputs):
        net = _build(names, W, None if b_std is None else b, parameterization)
        return jnp.sum(net.kernel(inputs, get=get))

    b0 = 0.5 if b_std is None else b_std
    grads = jax.grad(total, argnums=(0, 1, 2))(W_std, b0, x)
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(g)), f"{names}: non-finite gradient"
