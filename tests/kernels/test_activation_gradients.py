"""Kernel gradients at ``x1 == x2`` for every activation in ``layer_cases.ACTIVATIONS``.

The inputs contain an exact duplicate row, so the cross kernel has an entry with
correlation exactly 1, where the arc-cosine and arcsine duals have square-root
branch points (``arccos`` has an infinite derivative at 1). Two properties of the
gradient of a weighted sum of the NNGP and NTK of ``Dense -> activation -> Dense``,
with respect to the inputs and to ``W_std`` / ``b_std``:

* it is finite;
* it equals central finite differences in float64.

Oracle for the second point: central differences ``D(h) = (f(+h) - f(-h)) / 2h``
with Richardson extrapolation ``2 D(h/2) - D(h)``. At the duplicate the ReLU NTK
factor ``(pi - theta) / 2 pi`` has a kink (``theta`` grows like ``|h|``), so ``D(h)``
converges to the symmetric derivative with an error linear in ``h``; the
extrapolation removes that term, leaving ``O(h^2) ~ 1e-8`` relative, and rounding
adds ``~1e-16 / h ~ 1e-12``. The tolerance, ``1e-6`` of the gradient's scale, sits
between these errors and the size of any formula error worth catching. The library's
convention at the kink (the derivative of ``theta`` is taken as 0) is exactly that
symmetric derivative.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import slow_unless
from layer_cases import ACTIVATIONS

from widebnn import kernels

STEP = 1e-4
RTOL = 1e-6


def _inputs(case, n=3, d=3, seed=0):
    x = jax.random.normal(jax.random.key(seed), (n, d)) * case.input_std
    return jnp.concatenate([x, x[:1]], axis=0)  # row 3 duplicates row 0


def _objective(case):
    """``f(W_std, b_std, x)``: a fixed random weighting of the NNGP and NTK entries."""
    get = ("nngp", "ntk") if case.has_ntk else ("nngp",)
    weights = jax.random.normal(jax.random.key(1), (len(get), 4, 4))

    def f(W_std, b_std, x):
        net = kernels.serial(
            kernels.Dense(8, W_std, b_std),
            case.make(),
            kernels.Dense(1, W_std, b_std),
        )
        values = net.kernel(x, get=get)
        return sum(jnp.sum(w * v) for w, v in zip(weights, values, strict=True))

    return f


def _directions(x, n_random=2, seed=2):
    """Unit directions in ``(W_std, b_std, x)``: each hyperparameter, random in ``x``.

    A random direction moves the two copies of the duplicated row differently, so it
    crosses the ``x1 == x2`` point of their cross-kernel entry.
    """
    n_coords = 2 + x.size
    random = jax.random.normal(jax.random.key(seed), (n_random, x.size))
    random = random / jnp.linalg.norm(random, axis=1, keepdims=True)
    return jnp.concatenate(
        [jnp.eye(2, n_coords), jnp.pad(random, [(0, 0), (2, 0)])], axis=0
    )


def _central_difference(f, point, direction, step, shape):
    """``(f(p + h v) - f(p - h v)) / 2h``, evaluated op by op (no ``jit``).

    Op-by-op evaluation keeps the diagonal of every kernel exact (``c == q`` to the
    bit, so ``rho == 1``); under ``jit`` XLA may sum the two in different orders and
    leave ``rho`` an ulp below 1, where ``theta ~ 1e-8`` makes the ReLU NTK factor
    jitter by ``~1e-9``, which a step of ``1e-4`` would blow up to ``~1e-5``.
    """

    def at(p):
        return float(f(p[0], p[1], p[2:].reshape(shape)))

    return (at(point + step * direction) - at(point - step * direction)) / (2 * step)


@pytest.mark.parametrize("name", slow_unless(sorted(ACTIVATIONS)))
def test_kernel_gradient_at_equal_inputs_is_finite_and_matches_finite_differences(
    name,
):
    case = ACTIVATIONS[name]
    f = _objective(case)
    x = _inputs(case)
    W_std, b_std = 1.1, 0.3
    grads = jax.grad(f, argnums=(0, 1, 2))(W_std, b_std, x)
    gradient = np.concatenate([np.ravel(g) for g in grads])
    assert np.all(np.isfinite(gradient)), f"{name}: non-finite gradient {gradient}"
    if not case.smooth_gradient:
        return
    point = jnp.concatenate([jnp.array([W_std, b_std]), x.reshape(-1)])
    directions = _directions(x)
    derivative = np.asarray(directions) @ gradient
    extrapolated = np.array(
        [
            2 * _central_difference(f, point, v, STEP / 2, x.shape)
            - _central_difference(f, point, v, STEP, x.shape)
            for v in directions
        ]
    )
    scale = np.max(np.abs(gradient))
    np.testing.assert_allclose(
        derivative, extrapolated, rtol=0, atol=RTOL * scale, err_msg=name
    )
