"""Argument checks shared by the layer constructors.

Hyperparameters such as ``W_std`` may be traced (when a user differentiates a kernel
with respect to them), so values are only checked when they are concrete.
"""

from __future__ import annotations

import jax
import numpy as np


def _concrete(value):
    """Returns ``value`` as a float array when it is concrete, else ``None``."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as error:
        raise TypeError(f"expected a number, got {value!r}") from error


def check_std(value, name: str, *, allow_none: bool = False):
    """Checks that a standard deviation is a finite number ``>= 0``."""
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number >= 0, got None.")
    concrete = _concrete(value)
    if concrete is not None:
        if concrete.ndim != 0:
            raise ValueError(f"{name} must be a scalar, got shape {concrete.shape}.")
        if not np.isfinite(concrete) or concrete < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    return value


def check_finite(value, name: str):
    """Checks that a scalar hyperparameter is finite (any sign)."""
    concrete = _concrete(value)
    if concrete is not None:
        if concrete.ndim != 0:
            raise ValueError(f"{name} must be a scalar, got shape {concrete.shape}.")
        if not np.isfinite(concrete):
            raise ValueError(f"{name} must be finite, got {value}.")
    return value


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    """Checks that ``value`` is an integer ``>= minimum`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return int(value)


def check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    """Checks that ``value`` is one of ``choices`` (case-insensitive for strings)."""
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    return value.lower()


def check_channels(x, expected: int, name: str, layer: str):
    """Checks the channel (last) axis of a finite input."""
    if x.ndim < 2:
        raise ValueError(
            f"{layer}: {name} must have shape (N, *spatial, channels), got {x.shape}."
        )
    if x.shape[-1] != expected:
        raise ValueError(
            f"{layer}: {name} has {x.shape[-1]} channels but the parameters were "
            f"initialised for {expected}."
        )
