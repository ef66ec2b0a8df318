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


@dataclasses.dataclass(frozen=True)
class MaskedCase:
    """A network of mask-aware layers under test.

    Attributes:
        make: builds the network (inputs ``(N, *S, C)``, Gaussian after a ``Dense``).
        spatial: the spatial shape ``S`` of its inputs.
    """

    make: Callable[[], kernels.Layer]
    spatial: tuple[int, ...] = (6,)


def _front(*layers):
    """``Dense`` first (attention and activations need Gaussian inputs)."""
    return lambda: kernels.serial(kernels.Dense(8, 1.1, 0.2), *layers)


def _attention(**kwargs):
    stds = dict(W_key_std=1.2, W_query_std=0.8, W_value_std=1.1, W_out_std=0.9)
    return kernels.GlobalSelfAttention(8, 8, 8, 2, b_std=0.1, **{**stds, **kwargs})


# Every layer that reads or transforms padding masks, alone or in small networks.
MASKED_LAYERS: dict[str, MaskedCase] = {
    "Dense_Relu": MaskedCase(_front(kernels.Relu(), kernels.Dense(4, 0.9, 0.1))),
    "Conv1d_odd": MaskedCase(_front(kernels.Conv(4, (3,), padding="SAME"))),
    "Conv1d_even": MaskedCase(_front(kernels.Conv(4, (4,), padding="SAME", b_std=0.3))),
    "Conv1d_valid_strided": MaskedCase(
        _front(kernels.Conv(4, (2,), strides=(2,), padding="VALID"))
    ),
    "Conv1d_circular": MaskedCase(_front(kernels.Conv(4, (2,), padding="CIRCULAR"))),
    "Conv2d_even_odd": MaskedCase(
        _front(kernels.Conv(4, (2, 3), padding="SAME")), spatial=(4, 3)
    ),
    "ConvTranspose1d_even": MaskedCase(
        _front(kernels.ConvTranspose(4, (2,), padding="SAME"))
    ),
    "ConvTranspose2d_strided": MaskedCase(
        _front(kernels.ConvTranspose(4, (3, 2), (2, 1), "SAME")), spatial=(3, 3)
    ),
    "ConvLocal1d_even": MaskedCase(
        _front(kernels.ConvLocal(4, (2,), padding="SAME", b_std=0.2))
    ),
    "AvgPool1d": MaskedCase(
        _front(kernels.AvgPool((2,), strides=(1,), padding="SAME"))
    ),
    "SumPool2d": MaskedCase(
        _front(kernels.SumPool((2, 2), strides=(1, 1), padding="VALID")), (4, 3)
    ),
    "GlobalAvgPool": MaskedCase(_front(kernels.Relu(), kernels.GlobalAvgPool())),
    "GlobalSumPool": MaskedCase(_front(kernels.Erf(), kernels.GlobalSumPool())),
    "LayerNorm_positions": MaskedCase(_front(kernels.LayerNorm(axis=(1, 2)))),
    "Index_positions": MaskedCase(
        _front(kernels.Index(slice(1, 5), axis=1), kernels.Relu())
    ),
    "Attention_softmax": MaskedCase(_front(_attention())),
    "Attention_identity_sqrt": MaskedCase(
        _front(_attention(linear_scaling=False, attention_mechanism="IDENTITY"))
    ),
    "Attention_abs_sum_emb": MaskedCase(
        _front(
            _attention(
                attention_mechanism="ABS",
                pos_emb_type="SUM",
                pos_emb_decay_fn=lambda d: 1 / (1 + d),
            )
        )
    ),
    "Attention_relu_concat_values": MaskedCase(
        _front(
            _attention(
                attention_mechanism="RELU", pos_emb_type="CONCAT", val_pos_emb=True
            )
        )
    ),
    "Attention_2d": MaskedCase(_front(_attention()), spatial=(3, 2)),
    "Residual_attention_block": MaskedCase(
        _front(
            kernels.FanOut(2),
            kernels.parallel(kernels.Identity(), _attention()),
            kernels.FanInSum(),
            kernels.LayerNorm(),
            kernels.GlobalAvgPool(),
        )
    ),
}
