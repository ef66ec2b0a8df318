"""The registry of activation layers that every shared contract test runs over.

Each entry is data: a factory, and flags for what the layer supports. Add a new
activation here and the Monte Carlo, property, gradient and jit contracts cover it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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
}
