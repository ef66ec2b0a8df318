"""The registry of activation layers that every shared contract test runs over.

Each entry is data: a factory, and flags for what the layer supports. Add a new
activation here and the Monte Carlo, property, gradient and jit contracts cover it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

from widebnn import kernels


@dataclasses.dataclass(frozen=True)
class ActivationCase:
    """One activation under test.

    Attributes:
        make: builds the layer.
        has_ntk: whether the layer has an NTK (``Sign`` has a zero one).
        has_finite: whether ``apply`` exists (``ExpNormalized`` has none).
        input_std: scale of the inputs for the tests (keeps e.g. ``Exp`` moderate).
        smooth_gradient: whether input gradients at ``x1 == x2`` are defined.
    """

    make: Callable[[], kernels.Layer]
    has_ntk: bool = True
    has_finite: bool = True
    input_std: float = 1.0
    smooth_gradient: bool = True


ACTIVATIONS: dict[str, ActivationCase] = {
    "Relu": ActivationCase(kernels.Relu),
    "Relu_stabilized": ActivationCase(lambda: kernels.Relu(do_stabilize=True)),
    "ABRelu": ActivationCase(lambda: kernels.ABRelu(-0.3, 1.7)),
    "LeakyRelu": ActivationCase(lambda: kernels.LeakyRelu(0.1)),
    "Abs": ActivationCase(kernels.Abs),
    "Erf": ActivationCase(lambda: kernels.Erf(a=1.3, b=0.7, c=0.2)),
    "Sigmoid_like": ActivationCase(kernels.Sigmoid_like),
    "Sin": ActivationCase(lambda: kernels.Sin(1.3, 0.7, 0.4)),
    "Cos": ActivationCase(lambda: kernels.Cos(0.9, 1.2, -0.3)),
    "Rbf": ActivationCase(lambda: kernels.Rbf(0.6)),
    "Gabor": ActivationCase(kernels.Gabor),
    "Exp": ActivationCase(lambda: kernels.Exp(0.8, 0.6), input_std=0.5),
    "Gaussian": ActivationCase(lambda: kernels.Gaussian(1.2, -0.7)),
    "ExpNormalized": ActivationCase(
        lambda: kernels.ExpNormalized(1.3, -1.0), has_finite=False
    ),
    "Gelu": ActivationCase(kernels.Gelu),
    # Sign has a zero NTK factor (as the finite network's gradient), so the NTK
    # contracts hold; the true d nngp / dc is infinite at x1 == x2.
    "Sign": ActivationCase(kernels.Sign, smooth_gradient=False),
    "RectifiedMonomial2": ActivationCase(lambda: kernels.RectifiedMonomial(2)),
    "Monomial3": ActivationCase(lambda: kernels.Monomial(3), input_std=0.7),
    "Polynomial": ActivationCase(lambda: kernels.Polynomial([0.3, -1.0, 0.5, 0.2])),
    "Hermite3": ActivationCase(lambda: kernels.Hermite(3)),
    "ElementwiseNumerical_tanh": ActivationCase(
        lambda: kernels.ElementwiseNumerical(jnp.tanh, 50)
    ),
}
