"""Multi-head global self-attention and its infinite-width kernels.

Finite layer (NTK parameterisation, all weights i.i.d. N(0, 1)), per head ``h``, on
activations ``x`` with ``T`` positions and ``n`` channels (``x~`` is ``x`` with
positional embeddings added or concatenated, ``n~`` its channel count):

* queries ``q = W_query_std x~ W_Q^h / sqrt(n~)``, keys ``k = W_key_std x~ W_K^h /
  sqrt(n~)`` (with ``linear_scaling`` the query weights are tied to the key weights),
  values ``v = W_value_std x W_V^h / sqrt(n)`` (``x~`` if ``val_pos_emb``);
* logits ``G = q k^T / d_key`` (``linear_scaling``) or ``/ sqrt(d_key)``;
* weights ``A = mechanism(G)`` (softmax over keys; masked keys get no weight);
* output ``W_out_std [A^1 v^1, ..., A^H v^H] W_O / sqrt(H d_val) + b_std b``.

Infinite width (``n, d_key, d_val, H -> infinity``), with ``K~`` the covariance of
``x~`` and ``QK = W_query_std W_key_std``, ``OV = W_out_std W_value_std``:

* ``linear_scaling``: the logits concentrate on ``QK K~(x, x)`` (each input's own
  position Gram matrix), so ``P(x) = mechanism(QK K~(x, x))`` is deterministic and
  ``K' = OV^2 P(x) K_v P(x')^T + b^2``,
  ``Theta' = K' + OV^2 P(x) (Theta_v + K_v) P(x')^T`` (value and output weights);
* ``1/sqrt(d_key)`` with the IDENTITY mechanism: the logits are Gaussian with
  covariance ``QK^2 K~_{ii'} K~_{jj'}``, and
  ``K'_{ii'} = QK^2 OV^2 K~_{ii'} <K~, K_v> + b^2``,
  ``Theta'_{ii'} = QK^2 OV^2 [(<K~, Theta_v> + <K_v, Theta~>) K~_{ii'}
  + <K~, K_v> (Theta~_{ii'} + 4 K~_{ii'})] + b^2`` (``<,>`` sums over all position
  pairs); other mechanisms have no closed form with this scaling.

Positional embeddings ``p`` (shared across the batch, zero at padded positions) have
position covariance ``R_{ij} = decay(sum_axes |i - j|^p)`` (``R = I`` without a decay
function): ``SUM`` gives ``K~ = K + W_pos_emb_std^2 R``; ``CONCAT`` gives
``K~ = (n K + n_pe W_pos_emb_std^2 R) / (n + n_pe)``; the NTK is interpolated the same
way (the embeddings are trained).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ._checks import check_choice, check_positive_int, check_std
from ._feature_core import Unsupported
from ._kernel import Kernel, Layer

MECHANISMS = ("softmax", "identity", "abs", "relu")
POS_EMB_TYPES = ("none", "sum", "concat")


def _needs_full(needs_full_output):
    del needs_full_output
    return True


def to_matrix(cov, lead: int, n_spatial: int):
    """Full-layout ``(*lead, S1, S1', S2, S2', ...)`` -> ``(*lead, T, T')``."""
    first = [lead + 2 * i for i in range(n_spatial)]
    second = [lead + 2 * i + 1 for i in range(n_spatial)]
    cov = jnp.transpose(cov, list(range(lead)) + first + second)
    t = math.prod(cov.shape[lead : lead + n_spatial])
    return cov.reshape(cov.shape[:lead] + (t, -1))


def from_matrix(mat, lead: int, spatial: tuple[int, ...]):
    """``(*lead, T, T')`` -> full layout ``(*lead, S1, S1', S2, S2', ...)``."""
    n = len(spatial)
    mat = mat.reshape(mat.shape[:lead] + spatial + spatial)
    order = list(range(lead))
    for i in range(n):
        order += [lead + i, lead + n + i]
    return jnp.transpose(mat, order)


def position_covariance(spatial, decay_fn, p_norm):
    """``(T, T)`` covariance of positional embeddings over a grid of positions."""
    t = math.prod(spatial)
    if decay_fn is None:
        return jnp.eye(t)
    grids = jnp.meshgrid(*(jnp.arange(s) for s in spatial), indexing="ij")
    coords = jnp.stack([g.reshape(-1) for g in grids], axis=-1).astype(float)
    distance = jnp.sum(jnp.abs(coords[:, None, :] - coords[None, :, :]) ** p_norm, -1)
    return decay_fn(distance)


def _weights(logits, keep_keys, mechanism):
    """Attention weights from logits ``(..., T, T)``; masked keys get weight 0."""
    keep = keep_keys[..., None, :] > 0
    if mechanism == "softmax":
        logits = jnp.where(keep, logits, -jnp.inf)
        shifted = logits - jax.lax.stop_gradient(
            jnp.max(jnp.where(keep, logits, -1e300), axis=-1, keepdims=True)
        )
        unnormalized = jnp.where(keep, jnp.exp(shifted), 0.0)
        total = jnp.sum(unnormalized, axis=-1, keepdims=True)
        return unnormalized / jnp.where(total > 0, total, 1.0)
    if mechanism == "identity":
        weights = logits
    elif mechanism == "abs":
        weights = jnp.abs(logits)
    else:
        weights = jnp.maximum(logits, 0.0)
    return jnp.where(keep, weights, 0.0)


def GlobalSelfAttention(
    n_chan_out: int,
    n_chan_key: int,
    n_chan_val: int,
    n_heads: int,
    linear_scaling: bool = True,
    W_key_std: float = 1.0,
    W_value_std: float = 1.0,
    W_query_std: float = 1.0,
    W_out_std: float = 1.0,
    b_std: float | None = None,
    attention_mechanism: str = "SOFTMAX",
    pos_emb_type: str = "NONE",
    pos_emb_p_norm: float = 2,
    pos_emb_decay_fn: Callable | None = None,
    n_chan_pos_emb: int | None = None,
    W_pos_emb_std: float = 1.0,
    val_pos_emb: bool = False,
) -> Layer:
    r"""Multi-head self-attention over all positions of ``(N, *S, C)`` inputs.

    See the module docstring for the finite layer and both infinite-width limits;
    arguments and conventions follow Neural Tangents' ``stax.GlobalSelfAttention``.

    Args:
        n_chan_out: static; output channels.
        n_chan_key: static; key/query channels per head ``d_key``.
        n_chan_val: static; value channels per head ``d_val``.
        n_heads: static; number of heads ``H``.
        linear_scaling: static; logits scaled by ``1/d_key`` with tied query and key
            weights (closed form for every mechanism) instead of ``1/sqrt(d_key)``
            (closed form only for ``IDENTITY``).
        W_key_std: key weight std.
        W_value_std: value weight std.
        W_query_std: query weight std (only the product with ``W_key_std`` matters).
        W_out_std: output weight std.
        b_std: output bias std, or ``None`` for no bias.
        attention_mechanism: static; ``"SOFTMAX"``, ``"IDENTITY"``, ``"ABS"`` or
            ``"RELU"``.
        pos_emb_type: static; ``"NONE"``, ``"SUM"`` or ``"CONCAT"``.
        pos_emb_p_norm: exponent ``p`` of the position distance.
        pos_emb_decay_fn: ``decay(distance) -> covariance`` of positional embeddings,
            or ``None`` for independent embeddings (``R = I``).
        n_chan_pos_emb: static; embedding channels for ``CONCAT`` (default: ``C``).
        W_pos_emb_std: embedding std.
        val_pos_emb: static; whether values also see the embeddings.

    Returns:
        A :class:`Layer` (NTK parameterisation).

    Raises:
        ValueError: on non-positive sizes or unknown options.
        NotImplementedError: from ``kernel_fn`` for ``1/sqrt(d_key)`` scaling with a
            mechanism other than ``IDENTITY`` (no closed form; use
            ``linear_scaling=True`` or :func:`monte_carlo_kernel`).
    """
    n_chan_out = check_positive_int(n_chan_out, "n_chan_out")
    n_chan_key = check_positive_int(n_chan_key, "n_chan_key")
    n_chan_val = check_positive_int(n_chan_val, "n_chan_val")
    n_heads = check_positive_int(n_heads, "n_heads")
    for value, name in (
        (W_key_std, "W_key_std"),
        (W_value_std, "W_value_std"),
        (W_query_std, "W_query_std"),
        (W_out_std, "W_out_std"),
        (W_pos_emb_std, "W_pos_emb_std"),
    ):
        check_std(value, name)
    check_std(b_std, "b_std", allow_none=True)
    mechanism = check_choice(attention_mechanism, "attention_mechanism", MECHANISMS)
    pos_emb = check_choice(pos_emb_type, "pos_emb_type", POS_EMB_TYPES)
    if n_chan_pos_emb is not None:
        check_positive_int(n_chan_pos_emb, "n_chan_pos_emb")
        if pos_emb == "sum":
            raise ValueError("n_chan_pos_emb applies to pos_emb_type='CONCAT' only.")
    if pos_emb_decay_fn is not None and not callable(pos_emb_decay_fn):
        raise TypeError(f"pos_emb_decay_fn must be callable, got {pos_emb_decay_fn!r}.")

    def spatial_of(shape):
        if len(shape) < 3:
            raise ValueError(
                "GlobalSelfAttention needs inputs with positions, shape (N, *S, C); "
                f"got {tuple(shape)}."
            )
        return tuple(shape[1:-1])

    def emb_channels(n_in):
        if pos_emb == "none":
            return 0
        if pos_emb == "sum":
            return n_in
        return n_in if n_chan_pos_emb is None else n_chan_pos_emb

    def init(key, input_shape):
        spatial = spatial_of(input_shape)
        n_in = input_shape[-1]
        n_pe = emb_channels(n_in)
        n_qk = n_in + n_pe if pos_emb == "concat" else n_in
        n_v = n_qk if val_pos_emb else n_in
        keys = jax.random.split(key, 6)
        params = {
            "W_key": jax.random.normal(keys[0], (n_heads, n_qk, n_chan_key)),
            "W_value": jax.random.normal(keys[1], (n_heads, n_v, n_chan_val)),
            "W_out": jax.random.normal(keys[2], (n_heads * n_chan_val, n_chan_out)),
        }
        if not linear_scaling:
            params["W_query"] = jax.random.normal(keys[3], (n_heads, n_qk, n_chan_key))
        if b_std is not None:
            params["b"] = jax.random.normal(keys[4], (n_chan_out,))
        if pos_emb != "none":
            params["pos_emb"] = jax.random.normal(keys[5], (math.prod(spatial), n_pe))
        return (*input_shape[:-1], n_chan_out), params

    def apply(params, x, *, mask=None, key=None, **kwargs):
        del key, kwargs
        spatial = spatial_of(x.shape)
        n_batch, n_in = x.shape[0], x.shape[-1]
        t = math.prod(spatial)
        keep = jnp.ones((n_batch, t)) if mask is None else (~mask).reshape(n_batch, t)
        keep = keep.astype(x.dtype)
        h = x.reshape(n_batch, t, n_in) * keep[..., None]
        h_qk = h
        if pos_emb != "none":
            chol = jnp.linalg.cholesky(
                position_covariance(spatial, pos_emb_decay_fn, pos_emb_p_norm)
                + 1e-12 * jnp.eye(t)
            )
            emb = W_pos_emb_std * (chol @ params["pos_emb"])[None] * keep[..., None]
            if pos_emb == "sum":
                h_qk = h + emb
            else:
                h_qk = jnp.concatenate(
                    [h, jnp.broadcast_to(emb, h.shape[:2] + emb.shape[-1:])], -1
                )
        h_v = h_qk if val_pos_emb else h
        n_qk, n_v = h_qk.shape[-1], h_v.shape[-1]
        keys_ = (
            W_key_std
            * jnp.einsum("ntc,hcd->nhtd", h_qk, params["W_key"])
            / math.sqrt(n_qk)
        )
        w_query = params["W_key"] if linear_scaling else params["W_query"]
        queries = (
            W_query_std * jnp.einsum("ntc,hcd->nhtd", h_qk, w_query) / math.sqrt(n_qk)
        )
        scale = n_chan_key if linear_scaling else math.sqrt(n_chan_key)
        logits = jnp.einsum("nhid,nhjd->nhij", queries, keys_) / scale
        weights = _weights(logits, keep[:, None, :], mechanism)
        values = (
            W_value_std
            * jnp.einsum("ntc,hcd->nhtd", h_v, params["W_value"])
            / math.sqrt(n_v)
        )
        heads = jnp.einsum("nhij,nhjd->nihd", weights, values)
        heads = heads.reshape(n_batch, t, n_heads * n_chan_val)
        out = W_out_std * heads @ params["W_out"] / math.sqrt(n_heads * n_chan_val)
        if b_std is not None:
            out = out + b_std * params["b"][None, None]
        out = out * keep[..., None]
        return out.reshape(*x.shape[:-1], n_chan_out)

    def kernel_fn(k: Kernel, **kwargs) -> Kernel:
        del kwargs
        spatial = spatial_of(k.shape1)
        n_sp = len(spatial)
        if k.diagonal_spatial:
            raise ValueError(
                "GlobalSelfAttention needs the covariance of every pair of positions; "
                "it got a diagonal-layout kernel."
            )
        if not linear_scaling and mechanism != "identity":
            raise NotImplementedError(
                f"attention_mechanism={attention_mechanism!r} with 1/sqrt(n_chan_key) "
                "scaling (linear_scaling=False) has no closed-form infinite-width "
                "kernel. Use linear_scaling=True (closed form for every mechanism), "
                "attention_mechanism='IDENTITY', or estimate the kernel with "
                "widebnn.kernels.monte_carlo_kernel."
            )
        t = math.prod(spatial)
        n_in = k.shape1[-1]

        def keep_of(mask, n):
            if mask is None:
                return jnp.ones((n, t))
            return (~mask).reshape(n, t).astype(float)

        keep1 = keep_of(k.mask1, k.shape1[0])
        keep2 = keep1 if k.x1_is_x2 else keep_of(k.mask2, k.shape2[0])
        cov1 = to_matrix(k.cov1, 1, n_sp)
        cov2 = cov1 if k.cov2 is None else to_matrix(k.cov2, 1, n_sp)
        nngp = to_matrix(k.nngp, 2, n_sp)
        ntk = None if k.ntk is None else to_matrix(k.ntk, 2, n_sp)

        n_pe = emb_channels(n_in)
        if pos_emb == "none":
            w_x, w_pe = 1.0, 0.0
        elif pos_emb == "sum":
            w_x, w_pe = 1.0, 1.0
        else:
            w_x, w_pe = n_in / (n_in + n_pe), n_pe / (n_in + n_pe)
        r = position_covariance(spatial, pos_emb_decay_fn, pos_emb_p_norm)
        r = w_pe * W_pos_emb_std**2 * r

        def tilde(cov, keep_a, keep_b):
            if pos_emb == "none":
                return cov
            outer = keep_a[..., :, None] * keep_b[..., None, :]
            return w_x * cov + r.reshape((1,) * (outer.ndim - 2) + r.shape) * outer

        cross_keep = (keep1[:, None], keep2[None, :])
        nngp_t = tilde(nngp, *cross_keep)
        cov1_t = tilde(cov1, keep1, keep1)
        cov2_t = tilde(cov2, keep2, keep2)
        ntk_t = None if ntk is None else tilde(ntk, *cross_keep)
        nngp_v = nngp_t if val_pos_emb else nngp
        cov1_v = cov1_t if val_pos_emb else cov1
        cov2_v = cov2_t if val_pos_emb else cov2
        ntk_v = ntk_t if val_pos_emb else ntk
        bias_var = 0.0 if b_std is None else b_std**2
        qk2 = (W_query_std * W_key_std) ** 2
        ov2 = (W_out_std * W_value_std) ** 2

        if linear_scaling:
            qk = W_query_std * W_key_std
            p1 = _weights(qk * cov1_t, keep1, mechanism)
            p2 = p1 if k.x1_is_x2 else _weights(qk * cov2_t, keep2, mechanism)

            def cross(cov):
                return ov2 * jnp.einsum("nij,nmjk,mlk->nmil", p1, cov, p2)

            def own(cov, p):
                return ov2 * jnp.einsum("nij,njk,nlk->nil", p, cov, p)

            weighted_nngp = cross(nngp_v)
            new_nngp = weighted_nngp + bias_var
            new_cov1 = own(cov1_v, p1) + bias_var
            new_cov2 = None if k.cov2 is None else own(cov2_v, p2) + bias_var
            new_ntk = None
            if ntk is not None:  # cross is linear: reuse cross(nngp_v)
                new_ntk = new_nngp + cross(ntk_v) + weighted_nngp
        else:

            def inner(a, b):
                return jnp.sum(a * b, axis=(-2, -1), keepdims=True)

            def identity_nngp(cov_t, cov_v):
                return qk2 * ov2 * cov_t * inner(cov_t, cov_v) + bias_var

            new_nngp = identity_nngp(nngp_t, nngp_v)
            new_cov1 = identity_nngp(cov1_t, cov1_v)
            new_cov2 = None if k.cov2 is None else identity_nngp(cov2_t, cov2_v)
            new_ntk = None
            if ntk is not None:
                mixed = inner(nngp_t, ntk_v) + inner(nngp_v, ntk_t)
                new_ntk = (
                    qk2
                    * ov2
                    * (mixed * nngp_t + inner(nngp_t, nngp_v) * (ntk_t + 4 * nngp_t))
                    + bias_var
                )

        return k.replace(
            nngp=from_matrix(new_nngp, 2, spatial),
            ntk=None if new_ntk is None else from_matrix(new_ntk, 2, spatial),
            cov1=from_matrix(new_cov1, 1, spatial),
            cov2=None if new_cov2 is None else from_matrix(new_cov2, 1, spatial),
            shape1=k.shape1[:-1] + (n_chan_out,),
            shape2=k.shape2[:-1] + (n_chan_out,),
            is_gaussian=True,
        ).zero_masked()

    no_features = Unsupported(
        "GlobalSelfAttention", "no known cheap feature map of the attention kernel"
    )
    return Layer(
        init,
        apply,
        kernel_fn,
        _needs_full,
        name="GlobalSelfAttention",
        feature_fn=no_features,
    )
