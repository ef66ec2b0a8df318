"""widebnn: wide Bayesian neural networks in JAX.

One network description (a :class:`widebnn.kernels.Layer`) gives its infinite-width
NNGP/NTK kernels and, for finite widths, weights to sample.
"""

from importlib.metadata import PackageNotFoundError, version

from . import kernels as kernels

try:
    __version__ = version("widebnn")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"
from . import compare as compare, diagnostics as diagnostics, gp as gp, plots as plots
from ._model import WideBNN as WideBNN
from ._numpyro import numpyro_model as numpyro_model
