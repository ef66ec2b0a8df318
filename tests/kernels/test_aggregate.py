"""``Aggregate`` in Neural Tangents' convention and signature.

Oracles: numpy loops over edges written from Neural Tangents' documentation of
``stax.Aggregate`` (``pattern[n, tail, head]``; the output is ``x @ pattern`` over
the vertex axis; the kernel is ``A1^T K A2``), and the ``Dense`` closed form.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from widebnn import kernels

W_STD, B_STD = 1.3, 0.4


def _directed_graphs(seed, n, v):
    """Random weighted directed graphs: ``pattern[n, tail, head]``, not symmetric."""
    rng = np.random.default_rng(seed)
    pattern = rng.uniform(0.5, 2.0, (n, v, v)) * (rng.uniform(size=(n, v, v)) < 0.5)
    assert not np.allclose(pattern, np.swapaxes(pattern, 1, 2))
    return pattern


def _aggregate_numpy(x, pattern):
    """``y[n, head] = sum over edges tail -> head of weight * x[n, tail]``."""
    y = np.zeros_like(x)
    n, v = pattern.shape[:2]
    for i in range(n):
        for tail in range(v):
            for head in range(v):
                y[i, head] += pattern[i, tail, head] * x[i, tail]
    return y


def _dense_then_aggregate_numpy(x1, x2, p1, p2):
    """NNGP of Dense(W_STD, B_STD) then Aggregate: sum over edge pairs."""
    d = x1.shape[-1]
    k = W_STD**2 * np.einsum("ntc,muc->nmtu", x1, x2) / d + B_STD**2
    out = np.zeros_like(k)
    v = x1.shape[1]
    for t in range(v):
        for u in range(v):
            # out[n, m, h, g] += p1[n, t, h] * k[n, m, t, u] * p2[m, u, g]
            left = p1[:, None, t, :, None]
            right = p2[None, :, u, None, :]
            out += left * k[:, :, t, u, None, None] * right
    return out


@pytest.mark.parametrize("aggregate_axis", [None, 1, (1,), -2])
def test_apply_and_kernel_follow_neural_tangents(aggregate_axis):
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(3, 5, 2)), rng.normal(size=(2, 5, 2))
    p1, p2 = _directed_graphs(1, 3, 5), _directed_graphs(2, 2, 5)
    layer = kernels.Aggregate(aggregate_axis=aggregate_axis)
    np.testing.assert_allclose(
        layer.apply((), x1, pattern=p1), _aggregate_numpy(x1, p1), rtol=1e-13
    )
    net = kernels.serial(kernels.Dense(8, W_STD, B_STD), layer)
    nngp = net.kernel(x1, x2, get="nngp", pattern=(p1, p2))
    expected = _dense_then_aggregate_numpy(x1, x2, p1, p2)
    np.testing.assert_allclose(nngp, expected, rtol=1e-12)
    same = net.kernel(x1, get="nngp", pattern=(p1, None))
    np.testing.assert_allclose(
        same, _dense_then_aggregate_numpy(x1, x1, p1, p1), rtol=1e-12
    )


def test_aggregate_axis_spelling_equals_the_argument_free_form():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 3))
    p = _directed_graphs(4, 2, 4)
    reference = kernels.serial(
        kernels.Dense(8, W_STD, B_STD), kernels.Aggregate(), kernels.Relu()
    ).kernel(x, pattern=(p, None))
    for axis in (1, (1,), -2):
        got = kernels.serial(
            kernels.Dense(8, W_STD, B_STD),
            kernels.Aggregate(aggregate_axis=axis),
            kernels.Relu(),
        ).kernel(x, pattern=(p, None))
        for a, b in zip(got, reference, strict=True):
            np.testing.assert_array_equal(a, b)


def test_two_vertex_axes_equal_the_flattened_graph():
    """Inputs (N, H, W, C) with pattern (N, H, W, H, W), as Neural Tangents
    documents, equal the same graph with H*W vertices in a row."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 2, 3, 2))
    p = _directed_graphs(6, 2, 6)
    flat_x = x.reshape(2, 6, 2)
    net = kernels.serial(kernels.Dense(8, W_STD, B_STD), kernels.Aggregate())
    grid = net.kernel(x, get="nngp", pattern=(p.reshape(2, 2, 3, 2, 3), None))
    flat = net.kernel(flat_x, get="nngp", pattern=(p, None))
    # grid layout (N1, N2, H, H', W, W') -> (N1, N2, H, W, H', W') -> (N1, N2, V, V')
    regrouped = np.transpose(np.asarray(grid), (0, 1, 2, 4, 3, 5)).reshape(2, 2, 6, 6)
    np.testing.assert_allclose(regrouped, flat, rtol=1e-13)
    y = kernels.Aggregate(aggregate_axis=(1, 2)).apply(
        (), x, pattern=p.reshape(2, 2, 3, 2, 3)
    )
    np.testing.assert_allclose(
        np.asarray(y).reshape(2, 6, 2), _aggregate_numpy(flat_x, p), rtol=1e-13
    )


def test_to_dense_decodes_an_edge_list():
    def to_dense(edges):  # (N, E, 2) integer (tail, head) pairs, weight 1
        dense = jnp.zeros((edges.shape[0], 4, 4))
        batch = jnp.arange(edges.shape[0])[:, None]
        return dense.at[batch, edges[..., 0], edges[..., 1]].add(1.0)

    edges = jnp.array([[[0, 1], [1, 2], [3, 2]]])
    x = jax.random.normal(jax.random.key(0), (1, 4, 3))
    dense = np.zeros((1, 4, 4))
    for tail, head in [(0, 1), (1, 2), (3, 2)]:
        dense[0, tail, head] += 1
    layer = kernels.Aggregate(to_dense=to_dense)
    np.testing.assert_allclose(
        layer.apply((), x, pattern=edges), _aggregate_numpy(np.asarray(x), dense)
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"implementation": "SPARSE"}, NotImplementedError, "to_dense"),
        ({"batch_axis": 1}, ValueError, "batch_axis=0"),
        ({"channel_axis": 1}, ValueError, "channel_axis=-1"),
        ({"aggregate_axis": "1"}, TypeError, "aggregate_axis"),
        ({"to_dense": 3}, TypeError, "to_dense"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        kernels.Aggregate(**kwargs)


def test_a_subset_of_the_vertex_axes_is_refused():
    x = jnp.ones((1, 2, 3, 2))
    with pytest.raises(NotImplementedError, match="aggregate_axis"):
        kernels.Aggregate(aggregate_axis=2).apply((), x, pattern=jnp.ones((1, 3, 3)))
