"""widebnn: wide Bayesian neural networks in JAX.

One network description (a :class:`widebnn.kernels.Layer`) gives its infinite-width
NNGP/NTK kernels and, for finite widths, weights to sample.

``import widebnn`` makes every subpackage and public module available as an
attribute: ``widebnn.kernels``, ``widebnn.samplers``, ``widebnn.gp``,
``widebnn.data``, ``widebnn.compare``, ``widebnn.diagnostics``, ``widebnn.plots``.
"""

from importlib.metadata import PackageNotFoundError, version

# Imports follow the one-way dependencies: kernels <- samplers <- the rest.
from . import kernels as kernels, samplers as samplers

try:
    __version__ = version("widebnn")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"
from . import (
    compare as compare,
    data as data,
    diagnostics as diagnostics,
    gp as gp,
    plots as plots,
)
from ._model import WideBNN as WideBNN
from ._numpyro import numpyro_model as numpyro_model
