"""The pre-norm decoder block of Llama (Touvron et al. 2023), as HF ``LlamaDecoderLayer`` in eval mode.

    h = x + o_proj(Attention(RMSNorm(x)))        input_layernorm, q/k/v_proj + RoPE, GQA, o_proj
    y = h + down_proj(silu(gate_proj(n)) * up_proj(n)),  n = RMSNorm(h)   post_attention_layernorm

q/k/v_proj run as one linear of their stacked rows (``qkv_proj``), gate/up_proj as ``gate_up_proj``
(:class:`fdbert.weights.LlamaLayerWeights`): the same outputs, one call instead of three (two).

``attend(q, k, v)`` is the causal attention of this step's tokens over their sequence's cache
(:mod:`fdbert.kv_cache`): it stores k and v and returns [n, H, Dh].
"""

import numpy as np

from .. import ops


def llama_attention(x, cos, sin, attend, p, config):  # [n, D] -> [n, D]
    """o_proj(concat_h softmax(RoPE(q_h) RoPE(k_g(h))^T / sqrt(Dh), causal) v_g(h))"""
    n, _ = x.shape
    H, Hkv, Dh = config.n_heads, config.n_kv_heads, config.head_dim
    qkv = ops.linear(x, p.qkv_proj.weight, p.qkv_proj.bias)     # [n, (H + 2 Hkv) Dh]: q, k, v_proj at once
    qd, kvd = H * Dh, Hkv * Dh
    qk = ops.rope(_columns(qkv, 0, qd + kvd).reshape(n, H + Hkv, Dh), cos, sin)  # RoPE(q), RoPE(k) at once
    q, k = (np.ascontiguousarray(h) for h in (qk[:, :H], qk[:, H:]))            # [n, H, Dh], [n, Hkv, Dh]
    v = _columns(qkv, qd + kvd, qd + 2 * kvd).reshape(n, Hkv, Dh)             # [n, Hkv, Dh]
    a = attend(q, k, v).reshape(n, H * Dh)                                     # -> [n, H Dh]
    return ops.linear(a, p.o_proj.weight, p.o_proj.bias)


def llama_mlp(x, p):  # [n, D] -> [n, D]
    """SwiGLU: down_proj(silu(x W_gate^T) * (x W_up^T))"""
    gu = ops.linear(x, p.gate_up_proj.weight, p.gate_up_proj.bias)          # [n, 2F]: gate, up_proj at once
    F = gu.shape[1] // 2
    h = ops.silu_mul(_columns(gu, 0, F), _columns(gu, F, 2 * F))             # [n, F]
    return ops.linear(h, p.down_proj.weight, p.down_proj.bias)


def _columns(y, a, b):  # [n, N] -> [n, b - a], C-contiguous (a view when n = 1: a decode step)
    return np.ascontiguousarray(y[:, a:b])


def llama_layer(x, cos, sin, attend, p, config):  # [n, D] -> [n, D]
    """x = x + Attention(RMSNorm(x)); x = x + MLP(RMSNorm(x))"""
    eps = config.norm_eps
    x = x + llama_attention(ops.rms_norm(x, p.input_layernorm, eps), cos, sin, attend, p, config)
    return x + llama_mlp(ops.rms_norm(x, p.post_attention_layernorm, eps), p)


def llama_embeddings(ids, w):  # [n] -> [n, D]
    """x = embed_tokens[ids] (positions enter through RoPE, inside attention)."""
    return ops.embedding(ids, w.embed_tokens)


def llama_final_norm(x, w, config):  # [n, D] -> [n, D]
    """norm(x): the RMSNorm after the last block."""
    return ops.rms_norm(x, w.norm, config.norm_eps)
