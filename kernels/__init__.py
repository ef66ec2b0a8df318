"""widebnn.kernels: layers with their finite-width and infinite-width forms.

Every layer is a :class:`Layer` (``init``/``apply`` for the finite network,
``kernel_fn`` for its infinite-width limit, ``kernel`` to evaluate it on inputs).
"""

from ._aggregate import Aggregate as Aggregate
from ._attention import GlobalSelfAttention as GlobalSelfAttention
from ._batching import BatchedKernel as BatchedKernel, batched as batched
from ._combinators import (
    FanOut as FanOut,
    Identity as Identity,
    parallel as parallel,
    repeat as repeat,
    serial as serial,
)
from ._conv import Conv as Conv
from ._conv_local import ConvLocal as ConvLocal
from ._conv_transpose import ConvTranspose as ConvTranspose
from ._dense import Dense as Dense
from ._dropout import Dropout as Dropout
from ._elementwise import Elementwise as Elementwise
from ._empirical import (
    empirical_nngp as empirical_nngp,
    empirical_nngp_fn as empirical_nngp_fn,
    empirical_ntk as empirical_ntk,
    empirical_ntk_fn as empirical_ntk_fn,
)
from ._erf import Erf as Erf, Sigmoid_like as Sigmoid_like
from ._exponential import (
    Exp as Exp,
    ExpNormalized as ExpNormalized,
    Gaussian as Gaussian,
)
from ._fan_in import (
    FanInConcat as FanInConcat,
    FanInProd as FanInProd,
    FanInSum as FanInSum,
)
from ._feature_core import Features as Features, FeatureSpec as FeatureSpec
from ._features import FeatureMap as FeatureMap, feature_map as feature_map
from ._gelu import Gelu as Gelu
from ._inputs import input_kernel as input_kernel
from ._kernel import Kernel as Kernel, Layer as Layer
from ._linear_maps import DotGeneral as DotGeneral, Index as Index, Slice as Slice
from ._monte_carlo import monte_carlo_kernel as monte_carlo_kernel
from ._normalization import LayerNorm as LayerNorm
from ._numerical import ElementwiseNumerical as ElementwiseNumerical
from ._polynomial import (
    Hermite as Hermite,
    Monomial as Monomial,
    Polynomial as Polynomial,
    RectifiedMonomial as RectifiedMonomial,
)
from ._pooling import (
    AvgPool as AvgPool,
    Flatten as Flatten,
    GlobalAvgPool as GlobalAvgPool,
    GlobalSumPool as GlobalSumPool,
    SumPool as SumPool,
)
from ._relu import ABRelu as ABRelu, Abs as Abs, LeakyRelu as LeakyRelu, Relu as Relu
from ._resize import ImageResize as ImageResize
from ._sign import Sign as Sign
from ._store import CheckpointWarning as CheckpointWarning
from ._tanh import Tanh as Tanh
from ._trig import Cos as Cos, Gabor as Gabor, Rbf as Rbf, Sin as Sin
