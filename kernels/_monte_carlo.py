"""Monte Carlo estimates of the infinite-width kernels from finite networks."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ._checks import check_positive_int
from ._empirical import empirical_nngp, empirical_ntk
from ._inputs import validate_get
from ._kernel import Layer


def monte_carlo_kernel(
    layer: Layer,
    key,
    n_samples: int,
    batch_size: int | None = None,
    *,
    implementation: str = "jacobian",
):
    """Averages empirical kernels of ``n_samples`` random finite networks.

    Each sample draws weights with ``layer.init`` from its own key (split from
    ``key``) and computes the empirical NNGP/NTK of ``layer.apply``; samples are
    vectorised ``batch_size`` at a time.

    Args:
        layer: the network (its finite widths set the accuracy).
        key: a PRNG key.
        n_samples: static; number of networks.
        batch_size: static; networks per vectorised batch (default: all).
        implementation: static; passed to :func:`empirical_ntk`.

    Returns:
        ``kernel(x1, x2=None, get=("nngp", "ntk"), *, return_stderr=False)`` that
        returns the requested averages (one array or a tuple in the order of
        ``get``); with ``return_stderr=True`` each is a pair
        ``(mean, standard error of the mean)``.

    Raises:
        ValueError: if ``n_samples`` or ``batch_size`` is not a positive integer.
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"layer must be a widebnn.kernels Layer, got {type(layer)}.")
    n_samples = check_positive_int(n_samples, "n_samples")
    batch_size = n_samples if batch_size is None else batch_size
    batch_size = min(check_positive_int(batch_size, "batch_size"), n_samples)
    keys = jax.random.split(key, n_samples)

    def kernel(
        x1, x2=None, get: str | Sequence[str] = ("nngp", "ntk"), *, return_stderr=False
    ):
        names = validate_get(get)
        for name in names:
            if name not in ("nngp", "ntk"):
                raise ValueError(
                    f"monte_carlo_kernel computes nngp and ntk, not {name}."
                )
        x1 = jnp.asarray(x1)
        input_shape = tuple(x1.shape)

        def one_sample(sample_key):
            _, params = layer.init(sample_key, input_shape)

            def apply_fn(p, x):
                return layer.apply(p, x)

            out = {}
            if "nngp" in names:
                out["nngp"] = empirical_nngp(apply_fn, params, x1, x2)
            if "ntk" in names:
                out["ntk"] = empirical_ntk(
                    apply_fn, params, x1, x2, implementation=implementation
                )
            return out

        samples = jax.lax.map(one_sample, keys, batch_size=batch_size)
        results: list = []
        for name in names:
            values = samples[name]
            mean = jnp.mean(values, axis=0)
            if return_stderr:
                if n_samples < 2:
                    raise ValueError("return_stderr needs n_samples >= 2.")
                stderr = jnp.std(values, axis=0, ddof=1) / jnp.sqrt(n_samples)
                results.append((mean, stderr))
            else:
                results.append(mean)
        return results[0] if isinstance(get, str) else tuple(results)

    return kernel
