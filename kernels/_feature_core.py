"""The value every feature rule works with (``Features``) and the rule contract.

A layer's fourth form, next to ``init``/``apply``/``kernel_fn``, is its feature rule
``feature_fn(f: Features, key, spec: FeatureSpec) -> Features``. It maps random
features of its inputs to random features of its outputs, in the same recursion as
the kernel: if ``f.nngp[i] . f.nngp[j]`` estimates the NNGP of inputs ``i, j`` (at
every pair of positions), the output's inner products estimate the output NNGP, and
likewise for the NTK. Randomness comes only from ``key`` and never depends on the
batch, so the same key maps training and test inputs consistently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax

Shape = tuple[int, ...]

#: the feature methods: ``"random"`` (random features and TensorSRHT sketches) and
#: ``"exact"`` (a factor of the exact kernel of one batch; a test oracle).
FEATURE_METHODS = ("random", "exact")


class FeatureSpec(NamedTuple):
    """Static settings every feature rule receives.

    Attributes:
        dim: feature columns produced by each random layer (activations, the
            sketch of a convolution's window when it is wider); see
            :func:`widebnn.kernels.feature_map` for the resulting widths.
        method: how activations are featurised (``"random"``).
    """

    dim: int
    method: str = "random"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Features:
    """Random features of one layer's activations, per input and per position.

    Attributes:
        nngp: ``(N, *S, m_nngp)``; ``nngp[i, s] . nngp[j, s']`` estimates the NNGP
            covariance of the activations of inputs ``i, j`` at positions ``s, s'``.
        ntk: ``(N, *S, m_ntk)`` likewise for the NTK accumulated so far (``m_ntk``
            may be 0, e.g. for raw inputs), or ``None`` when only the NNGP is built.
        mask: ``(N, *S)`` boolean, ``True`` at padded positions, or ``None``; the
            features of padded positions are 0.
        shape: static; shape ``(N, *S, C)`` of the finite activations (``C`` is the
            finite channel count, used by standard parameterisation).
        is_gaussian: static; ``True`` right after an affine layer (activations
            require it, as in the kernel).
    """

    nngp: jax.Array
    ntk: jax.Array | None
    mask: jax.Array | None = None
    shape: Shape = dataclasses.field(default=(), metadata={"static": True})
    is_gaussian: bool = dataclasses.field(default=False, metadata={"static": True})

    def replace(self, **changes: Any) -> Features:
        """Returns a copy with the given fields replaced."""
        return dataclasses.replace(self, **changes)

    @property
    def n_spatial(self) -> int:
        """Number of spatial axes of the activations."""
        return len(self.shape) - 2

    def zero_masked(self) -> Features:
        """Sets the features of padded positions to 0 (both kinds)."""
        if self.mask is None:
            return self
        keep = ~self.mask[..., None]
        ntk = None if self.ntk is None else self.ntk * keep.astype(self.ntk.dtype)
        return self.replace(nngp=self.nngp * keep.astype(self.nngp.dtype), ntk=ntk)


FeatureFn = Callable[[Features, jax.Array, FeatureSpec], Features]


class Unsupported:
    """The feature rule of a layer that has none: calling it raises.

    Combinators whose children include such a layer carry an ``Unsupported``
    naming that child, so :func:`widebnn.kernels.feature_map` can refuse the
    network when the map is built, not inside a trace.
    """

    def __init__(self, layer_name: str, reason: str = ""):
        self.layer_name = layer_name
        self.reason = reason

    def message(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return (
            f"{self.layer_name} has no feature map{why}; use its kernel "
            "(Layer.kernel, kernels.batched) instead."
        )

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(self.message())

    def __repr__(self) -> str:
        return f"Unsupported({self.layer_name!r})"


def feature_rule(layer) -> FeatureFn:
    """``layer.feature_fn``, or an :class:`Unsupported` naming the layer."""
    rule = layer.feature_fn
    return Unsupported(layer.name) if rule is None else rule


def unsupported(layer) -> Unsupported | None:
    """The :class:`Unsupported` rule of ``layer`` (or of a child), else ``None``."""
    rule = feature_rule(layer)
    return rule if isinstance(rule, Unsupported) else None


def composite_rule(layers: Iterable, build: Callable[[], FeatureFn]) -> FeatureFn:
    """The feature rule of a combinator: ``build()``, unless a child has none."""
    for layer in layers:
        missing = unsupported(layer)
        if missing is not None:
            return missing
    return build()


def split_keys(key: jax.Array, num: int) -> list[jax.Array]:
    """``num`` independent keys (one per child layer)."""
    return list(jax.random.split(key, num))
