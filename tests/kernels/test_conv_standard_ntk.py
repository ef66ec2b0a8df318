"""NTKs of the conv-like layers, checked exactly against autodiff of the finite network.

Oracle: ``kernels.empirical_ntk`` (Jacobian contraction of the finite ``apply``)
evaluated at parameters for which it equals the infinite-width NTK exactly, with no
Monte Carlo error:

* one layer (``Conv``, ``ConvTranspose``, ``ConvLocal``; 1-D and 2-D; every padding):
  the output is linear in the parameters, so its Jacobian, and with it the empirical
  NTK, does not depend on their values. In standard parameterisation it is
  ``sum_{taps, channels} x x' + 1 = C |f| A(K) + 1`` at any width, which is the
  infinite-width formula with a zero input NTK.
* two linear layers in a row: the empirical NTK is
  ``sum_c h1_c h1'_c`` through the second layer's window (its weight term) plus
  ``sum_{d, d'} (W2_d . W2_d') Theta1`` (the first layer's). Drawing weights from the
  prior makes these sums random with the infinite-width value as their mean; here
  the weights are instead a *design* with exactly the prior's second moments: the
  rows of the first layer's weight matrix and its bias are orthogonal vectors over
  the ``C1`` output channels with squared norm ``C1 * (prior variance)``, and so are
  the second layer's per-tap rows. Then ``sum_c h1_c h1'_c = C1 K1`` and
  ``W2_d . W2_d' = delta_dd' * C1 Var(W2)`` hold exactly, and the empirical NTK equals
  ``C1 |f2| A(K1) + sigma_w^2 A(Theta1) + 1`` (standard) or
  ``K2 + sigma_w^2 A(Theta1)`` (NTK parameterisation) to rounding.

The standard-parameterisation weight term carries the factor ``C |f|`` (fan-in); a
kernel that drops ``|f|`` is off by that factor and fails both tests.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from widebnn import kernels

STDS = dict(W_std=1.3, b_std=0.4)


def _conv(c, f, p, **kw):
    return kernels.Conv(c, f, **STDS, parameterization=p, **kw)


def _transpose(c, f, p, **kw):
    return kernels.ConvTranspose(c, f, **STDS, parameterization=p, **kw)


def _local(c, f, p, **kw):
    return kernels.ConvLocal(c, f, **STDS, parameterization=p, **kw)


# name -> (make(out_chan, parameterization), input shape (N, *S, C))
SINGLE = {
    "Conv1d_same": (lambda c, p: _conv(c, (3,), p, padding="SAME"), (3, 5, 2)),
    "Conv1d_valid_strided": (
        lambda c, p: _conv(c, (2,), p, strides=(2,), padding="VALID"),
        (3, 5, 2),
    ),
    "Conv1d_circular_even": (
        lambda c, p: _conv(c, (4,), p, padding="CIRCULAR"),
        (3, 5, 2),
    ),
    "Conv2d_same": (lambda c, p: _conv(c, (3, 2), p, padding="SAME"), (2, 4, 3, 2)),
    "ConvTranspose1d_same_strided": (
        lambda c, p: _transpose(c, (3,), p, strides=(2,), padding="SAME"),
        (3, 4, 2),
    ),
    "ConvTranspose2d_valid": (
        lambda c, p: _transpose(c, (2, 3), p, strides=(1, 2), padding="VALID"),
        (2, 3, 2, 2),
    ),
    "ConvLocal1d_same": (lambda c, p: _local(c, (3,), p, padding="SAME"), (3, 5, 2)),
    "ConvLocal2d_valid": (
        lambda c, p: _local(c, (2, 2), p, padding="VALID"),
        (2, 3, 4, 2),
    ),
}


def _param_shapes(layer, input_shape):
    """The parameter shapes of ``layer`` (abstract evaluation; nothing is drawn)."""
    return jax.eval_shape(
        lambda key: layer.init(key, input_shape)[1], jax.random.key(0)
    )


def _compare(net, params, x1, x2, rtol):
    """Empirical NTK of the finite ``net`` at ``params`` against its kernel."""
    empirical = jax.jit(lambda p, a, b: kernels.empirical_ntk(net.apply, p, a, b))
    analytic = jax.jit(lambda a, b: net.kernel(a, b, get="ntk"))
    np.testing.assert_allclose(
        analytic(x1, x2), empirical(params, x1, x2), rtol=rtol, atol=1e-12
    )


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
@pytest.mark.parametrize("name", sorted(SINGLE))
def test_single_layer_ntk_equals_empirical_ntk(name, parameterization):
    make, shape = SINGLE[name]
    layer = make(4, parameterization)
    x1 = jax.random.normal(jax.random.key(0), shape)
    x2 = jax.random.normal(jax.random.key(1), (2, *shape[1:]))
    rng = np.random.default_rng(2)  # any values: the Jacobian does not depend on them
    params = jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s.shape)), _param_shapes(layer, shape)
    )
    _compare(layer, params, x1, x2, rtol=1e-12)


def _orthogonal_rows(n_rows, dim, seed):
    """``(n_rows, dim)`` orthonormal rows (``n_rows <= dim``)."""
    assert n_rows <= dim, (n_rows, dim)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q.T[:n_rows]


def _variances(parameterization, fan_in):
    """Prior variances ``(Var W, Var b)`` of the raw parameters."""
    if parameterization == "standard":
        return STDS["W_std"] ** 2 / fan_in, STDS["b_std"] ** 2
    return 1.0, 1.0


def _patch_order(filter_shape, channels):
    """``(tap, channel)`` of each feature of ``lax.conv_general_dilated_patches``
    (the features ``ConvLocal`` multiplies its weights with), read off a tagged input.
    """
    taps = math.prod(filter_shape)
    tags = np.arange(taps * channels, dtype=float).reshape(*filter_shape, channels)
    n = len(filter_shape)
    spatial = "DHW"[3 - n :]
    patches = jax.lax.conv_general_dilated_patches(
        jnp.asarray(tags)[None],
        filter_shape,
        (1,) * n,
        [(0, 0)] * n,
        dimension_numbers=("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"),
    )
    flat = np.asarray(patches).reshape(-1).astype(int)
    return np.stack(np.divmod(flat, channels), axis=-1)  # (features, (tap, channel))


def _designed_params(kind, shape1, f1, f2, c1, out_spatial, parameterization):
    """Parameters of ``layer1 -> layer2`` (``c1`` channels between, 1 out) with the
    prior's second moments built in exactly (see the module docstring)."""
    c0 = shape1[-1]
    taps1, taps2 = math.prod(f1), math.prod(f2)
    var_w1, var_b1 = _variances(parameterization, c0 * taps1)
    var_w2, var_b2 = _variances(parameterization, c1 * taps2)
    if kind != "local":
        rows1 = _orthogonal_rows(c0 * taps1 + 1, c1, seed=0)
        w1 = np.sqrt(c1 * var_w1) * rows1[:-1].reshape(*f1, c0, c1)
        b1 = np.sqrt(c1 * var_b1) * rows1[-1]
        rows2 = _orthogonal_rows(taps2, c1, seed=1)
        w2 = np.sqrt(c1 * var_w2) * rows2.reshape(*f2, c1, 1)
        b2 = np.full((1,), np.sqrt(var_b2))
    else:
        # untied weights: rows orthogonal across output positions as well
        s1, s2 = out_spatial
        n_s1, n_s2 = math.prod(s1), math.prod(s2)
        rows1 = _orthogonal_rows(n_s1 * (c0 * taps1 + 1), c1, seed=0)
        rows1 = rows1.reshape(n_s1, c0 * taps1 + 1, c1)
        w1 = np.sqrt(c1 * var_w1) * rows1[:, :-1].reshape(*s1, c0 * taps1, c1)
        b1 = np.sqrt(c1 * var_b1) * rows1[:, -1].reshape(*s1, c1)
        rows2 = _orthogonal_rows(n_s2 * taps2, c1, seed=1).reshape(n_s2, taps2, c1)
        tap, channel = _patch_order(f2, c1).T
        w2 = np.sqrt(c1 * var_w2) * rows2[:, tap, channel].reshape(*s2, -1, 1)
        b2 = np.full((*s2, 1), np.sqrt(var_b2))
    as_jax = jnp.asarray
    return (
        {"W": as_jax(w1), "b": as_jax(b1)},
        {"W": as_jax(w2), "b": as_jax(b2)},
    )


# name -> (kind, layer constructor, (filter1, kwargs1), (filter2, kwargs2), shape)
TWO = {
    "Conv1d": (
        "shared",
        _conv,
        ((3,), dict(padding="SAME")),
        ((2,), dict(strides=(2,), padding="VALID")),
        (3, 5, 2),
    ),
    "Conv2d": (
        "shared",
        _conv,
        ((3, 2), dict(padding="SAME")),
        ((2, 2), dict(padding="CIRCULAR")),
        (2, 4, 3, 2),
    ),
    "ConvTranspose1d": (
        "shared",
        _transpose,
        ((3,), dict(strides=(2,), padding="SAME")),
        ((2,), dict(padding="VALID")),
        (3, 3, 2),
    ),
    "ConvTranspose2d": (
        "shared",
        _transpose,
        ((2, 2), dict(strides=(1, 2), padding="VALID")),
        ((3, 2), dict(padding="SAME")),
        (2, 2, 2, 2),
    ),
    "ConvLocal1d": (
        "local",
        _local,
        ((3,), dict(padding="SAME")),
        ((2,), dict(padding="VALID")),
        (3, 4, 2),
    ),
    "ConvLocal2d": (
        "local",
        _local,
        ((2, 2), dict(padding="VALID")),
        ((2, 1), dict(padding="SAME")),
        (2, 3, 3, 1),
    ),
}


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
@pytest.mark.parametrize("name", sorted(TWO))
def test_two_layers_ntk_equals_empirical_ntk_of_a_designed_network(
    name, parameterization
):
    kind, make, (f1, kw1), (f2, kw2), shape = TWO[name]
    c1 = 48
    first = make(c1, f1, parameterization, **kw1)
    second = make(1, f2, parameterization, **kw2)
    net = kernels.serial(first, second)
    out_spatial = (None, None)
    if kind == "local":  # untied weights: one set per output position
        s1 = _param_shapes(first, shape)["W"].shape[:-2]
        s2 = _param_shapes(second, (shape[0], *s1, c1))["W"].shape[:-2]
        out_spatial = (s1, s2)
    params = _designed_params(kind, shape, f1, f2, c1, out_spatial, parameterization)
    x1 = jax.random.normal(jax.random.key(3), shape)
    x2 = jax.random.normal(jax.random.key(4), (2, *shape[1:]))
    _compare(net, params, x1, x2, rtol=1e-10)
