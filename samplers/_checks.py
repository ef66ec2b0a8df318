"""Argument checks shared by the samplers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_key(key, name: str = "key"):
    """Returns ``key`` if it is one JAX PRNG key, else raises ``TypeError``.

    A key is a typed key of shape ``()`` (``jax.random.key(seed)``) or a raw
    ``uint32`` key of shape ``(2,)`` or ``(4,)`` (``jax.random.PRNGKey(seed)``).

    Raises:
        TypeError: naming ``name``, for anything else (an integer seed, an array
            of keys, a float array).
    """
    if isinstance(key, jax.Array | np.ndarray):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape == ():
                return key
            got = f"an array of {key.size} keys (shape {key.shape})"
        elif key.dtype == np.uint32 and key.shape in ((2,), (4,)):
            return jnp.asarray(key)
        else:
            got = f"an array of shape {key.shape} and dtype {key.dtype}"
    else:
        got = f"{type(key).__name__} {key!r}"[:80]
    raise TypeError(
        f"{name} must be a JAX PRNG key such as jax.random.key(0), got {got}."
    )
