"""Self-attention kernels: closed forms, Monte Carlo, masks, a transformer block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_symmetric_psd, assert_within_stderr

from widebnn import kernels

STDS = dict(W_key_std=1.2, W_query_std=0.8, W_value_std=1.1, W_out_std=0.9, b_std=0.1)
OV2 = (1.1 * 0.9) ** 2


def _seq(n=3, length=4, c=3, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, length, c))


def _attention(**kwargs):
    return kernels.GlobalSelfAttention(16, 16, 16, 2, **{**STDS, **kwargs})


def test_single_position_softmax_is_a_dense_map():
    """T = 1: weights are 1, so K' = OV^2 K + b^2, Theta' = K' + OV^2 (Theta + K)."""
    x = _seq(length=1)
    pre = kernels.Dense(8, 1.3, 0.2)
    att = kernels.serial(pre, _attention())
    k_pre, t_pre = pre.kernel(x)
    nngp, ntk = att.kernel(x)
    expected = OV2 * np.asarray(k_pre) + 0.01
    np.testing.assert_allclose(nngp, expected, rtol=1e-12)
    np.testing.assert_allclose(
        ntk, expected + OV2 * (np.asarray(t_pre) + k_pre), rtol=1e-12
    )


def test_identical_tokens_and_zero_queries_average_uniformly():
    token = jax.random.normal(jax.random.key(0), (2, 1, 3))
    x = jnp.broadcast_to(token, (2, 5, 3))
    att = _attention(W_query_std=0.0)  # zero logits: uniform weights for any input
    nngp = np.asarray(att.kernel(x, get="nngp"))
    base = np.asarray(token[:, 0]) @ np.asarray(token[:, 0]).T / 3
    np.testing.assert_allclose(
        nngp,
        np.broadcast_to(OV2 * base[:, :, None, None] + 0.01, nngp.shape),
        rtol=1e-12,
    )
    y = _seq()
    uniform = np.asarray(att.kernel(y, get="nngp"))
    k_in = np.einsum("nic,mjc->nmij", y, y) / 3
    averaged = OV2 * k_in.mean(axis=(2, 3)) + 0.01
    np.testing.assert_allclose(
        uniform, np.broadcast_to(averaged[:, :, None, None], uniform.shape), rtol=1e-12
    )


def test_identity_sqrt_scaling_closed_form():
    x = _seq()
    nngp, ntk = _attention(linear_scaling=False, attention_mechanism="IDENTITY").kernel(
        x
    )
    k = np.einsum("nic,mjc->nmij", x, x) / 3
    inner = np.sum(k * k, axis=(2, 3), keepdims=True)
    qk2 = (1.2 * 0.8) ** 2
    np.testing.assert_allclose(nngp, qk2 * OV2 * k * inner + 0.01, rtol=1e-12)
    # input NTK is 0: Theta' = QK^2 OV^2 <K, K> 4 K + b^2
    np.testing.assert_allclose(ntk, qk2 * OV2 * inner * 4 * k + 0.01, rtol=1e-12)


def test_sqrt_scaling_softmax_has_no_closed_form():
    with pytest.raises(NotImplementedError, match="linear_scaling=True"):
        _attention(linear_scaling=False).kernel(_seq())


MC_CASES = {
    # exact in expectation on raw inputs except for the O(1/d_key) logit noise
    "softmax_linear": (False, dict(attention_mechanism="SOFTMAX")),
    "relu_linear": (False, dict(attention_mechanism="RELU")),
    "identity_sqrt": (
        False,
        dict(linear_scaling=False, attention_mechanism="IDENTITY"),
    ),
    # embeddings need many input channels to concentrate: a wide Dense first
    "abs_concat_values": (
        True,
        dict(
            attention_mechanism="ABS",
            pos_emb_type="CONCAT",
            val_pos_emb=True,
            W_pos_emb_std=0.7,
            pos_emb_decay_fn=lambda d: jnp.exp(-d / 2),
        ),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MC_CASES))
def test_attention_matches_monte_carlo(name):
    """Key width 1024 (256 behind a width-256 Dense) keeps the logit noise, a bias
    O(1/d_key + 1/width) ~ 1e-3..4e-3 relative, below the Monte Carlo error ~1e-2."""
    wide_input, kwargs = MC_CASES[name]
    x = _seq()
    sizes = (64, 256, 32, 4) if wide_input else (128, 1024, 32, 8)
    att = kernels.GlobalSelfAttention(*sizes, **{**STDS, **kwargs})
    layers = [kernels.Dense(256, 1.0, 0.1)] if wide_input else []
    net = kernels.serial(
        *layers, att, kernels.GlobalAvgPool(), kernels.Dense(1, 1.0, 0.0)
    )
    expected = net.kernel(x)
    n_samples = 32
    mc = kernels.monte_carlo_kernel(net, jax.random.key(1), n_samples, 4)
    for which, (mean, err), exp in zip(
        ("nngp", "ntk"), mc(x, return_stderr=True), expected, strict=True
    ):
        assert_within_stderr(mean, err, exp, dof=n_samples - 1, name=f"{name} {which}")


def _padded(x, lengths, total):
    mask = jnp.arange(x.shape[1])[None] >= jnp.asarray(lengths)[:, None]
    x_pad = jnp.concatenate(
        [x, 5.0 * jnp.ones((x.shape[0], total - x.shape[1], x.shape[2]))], 1
    )
    mask_pad = jnp.arange(total)[None] >= jnp.asarray(lengths)[:, None]
    return mask, x_pad, mask_pad


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(dict(attention_mechanism="SOFTMAX"), marks=pytest.mark.slow),
        dict(attention_mechanism="IDENTITY"),
        dict(
            attention_mechanism="ABS",
            pos_emb_type="SUM",
            pos_emb_decay_fn=lambda d: 1 / (1 + 4 * d),
        ),
        dict(attention_mechanism="RELU", pos_emb_type="CONCAT", val_pos_emb=True),
        dict(attention_mechanism="IDENTITY", linear_scaling=False, pos_emb_type="SUM"),
    ],
    ids=["softmax", "identity", "abs_sum", "relu_concat", "identity_sqrt"],
)
def test_padding_invariance(kwargs):
    x = _seq(length=5)
    mask, x_pad, mask_pad = _padded(x, [5, 3, 2], 8)
    net = kernels.serial(
        kernels.Dense(8, 1.0, 0.2), _attention(**kwargs), kernels.GlobalAvgPool()
    )
    a = net.kernel(x, mask1=mask)
    b = net.kernel(x_pad, mask1=mask_pad)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-13)
    # The finite network: positional embeddings are one parameter row per position,
    # mapped by the Cholesky factor of the position covariance R. The factor of the
    # leading block of R is the leading block of the factor, so the first T rows of
    # the padded network's embedding parameters give the unpadded network the same
    # embeddings at the real positions; with them the outputs agree (for SUM and
    # CONCAT alike, by construction).
    _, params_pad = net.init(jax.random.key(0), x_pad.shape)
    params = _prefix_embeddings(params_pad, x.shape[1])
    if "pos_emb_type" in kwargs:
        assert params[1]["pos_emb"].shape[0] == x.shape[1] < x_pad.shape[1]
    np.testing.assert_allclose(
        net.apply(params, x, mask=mask),
        net.apply(params_pad, x_pad, mask=mask_pad),
        rtol=1e-12,
        atol=1e-14,
    )


def _prefix_embeddings(params, length):
    """``serial`` params with each layer's ``pos_emb`` cut to its first ``length``
    rows (positions)."""
    return tuple(
        {**p, "pos_emb": p["pos_emb"][:length]}
        if isinstance(p, dict) and "pos_emb" in p
        else p
        for p in params
    )


def transformer_block(width=16, heads=2):
    """Post-LayerNorm residual block: x + attention(x), then x + MLP(x)."""
    attention = kernels.GlobalSelfAttention(width, width, width, heads, b_std=0.1)
    mlp = kernels.serial(
        kernels.Dense(width, 1.4, 0.1), kernels.Relu(), kernels.Dense(width, 1.0, 0.1)
    )
    return kernels.serial(
        kernels.FanOut(2),
        kernels.parallel(kernels.Identity(), attention),
        kernels.FanInSum(),
        kernels.LayerNorm(),
        kernels.FanOut(2),
        kernels.parallel(kernels.Identity(), mlp),
        kernels.FanInSum(),
        kernels.LayerNorm(),
    )


@pytest.mark.slow
def test_transformer_block_kernels_padding_invariant_and_psd():
    net = kernels.serial(
        kernels.Dense(16, 1.0, 0.1),
        transformer_block(),
        kernels.GlobalAvgPool(),
        kernels.Dense(1),
    )
    x = _seq(length=5)
    mask, x_pad, mask_pad = _padded(x, [5, 4, 1], 7)
    a = net.kernel(x, mask1=mask)
    b = net.kernel(x_pad, mask1=mask_pad)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-13)
        assert_symmetric_psd(u)
    _, params = net.init(jax.random.key(0), x.shape)
    assert net.apply(params, x, mask=mask).shape == (3, 1)


def test_fully_masked_sequence_gives_zero_kernel_rows():
    x = _seq()
    mask = jnp.zeros((3, 4), bool).at[1].set(True)
    net = kernels.serial(
        kernels.Dense(8, 1.0, 0.2), _attention(), kernels.GlobalAvgPool()
    )
    nngp, ntk = net.kernel(x, mask1=mask)
    assert np.all(np.isfinite(nngp)) and np.all(np.isfinite(ntk))
    np.testing.assert_allclose(np.asarray(nngp)[1], 0.0, atol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_chan_key=0), "n_chan_key"),
        (dict(n_heads=0), "n_heads"),
        (dict(attention_mechanism="SPARSEMAX"), "attention_mechanism"),
        (dict(pos_emb_type="ROTARY"), "pos_emb_type"),
        (dict(W_key_std=-1.0), "W_key_std"),
        (dict(pos_emb_type="SUM", n_chan_pos_emb=4), "CONCAT"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(n_chan_out=4, n_chan_key=4, n_chan_val=4, n_heads=2)
    with pytest.raises(ValueError, match=match):
        kernels.GlobalSelfAttention(**{**args, **kwargs})


def test_needs_positions_and_matching_mask():
    with pytest.raises(ValueError, match="positions"):
        _attention().kernel(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="mask1"):
        _attention().kernel(_seq(), mask1=jnp.zeros((3, 5), bool))


def _head_average_kernel_means(x, n_heads, draws, seed, d_head=4):
    """Mean entry of the empirical NNGP of ``draws`` random attention layers.

    ``W_out`` is replaced by ``sqrt(H d_val) I`` (same ``E[W W^T] / n_out``), so each
    value is an average of ``H`` i.i.d. per-head terms: its variance is exactly
    ``v_1 / H`` (see benchmarks/attention_heads_rate.py).
    """
    width = n_heads * d_head
    kwargs = {**STDS, "b_std": None}
    small = kernels.GlobalSelfAttention(1, d_head, d_head, n_heads, **kwargs)
    full = kernels.GlobalSelfAttention(width, d_head, d_head, n_heads, **kwargs)
    w_out = np.sqrt(width) * jnp.eye(width)

    def one(key):
        _, params = small.init(key, x.shape)
        f = full.apply({**params, "W_out": w_out}, x)
        return jnp.mean(jnp.einsum("aic,bjc->abij", f, f)) / width

    keys = jax.random.split(jax.random.key(seed), draws)
    return np.asarray(jax.jit(jax.vmap(one))(keys))


def test_finite_heads_variance_falls_like_one_over_heads():
    """Var(H=16) / Var(H=64) = 4. Delta method: log of a sample variance has variance
    (kurtosis - 1) / R; |z| <= 3.29 fails by chance with probability ~1e-3. A
    variance that did not fall with H (ratio 1) would sit ~10 standard errors off."""
    x = _seq(n=2, length=3)
    draws = 400
    s16 = _head_average_kernel_means(x, 16, draws, seed=1)
    s64 = _head_average_kernel_means(x, 64, draws, seed=2)

    def kurtosis(s):
        c = s - s.mean()
        return np.mean(c**4) / np.mean(c**2) ** 2

    log_ratio = np.log(np.var(s16, ddof=1) / np.var(s64, ddof=1))
    stderr = np.sqrt((kurtosis(s16) - 1 + kurtosis(s64) - 1) / draws)
    z = (log_ratio - np.log(4.0)) / stderr
    assert abs(z) <= 3.29, f"log variance ratio {log_ratio:.3f} vs log 4, z = {z:.2f}"
    assert np.log(4.0) / stderr > 8  # the test has power against "no 1/H decay"
