"""The pre-LN decoder block of GPT-2 (Radford et al. 2019), as HF ``GPT2Block`` in eval mode.

    h = x + attn.c_proj(Attention(ln_1(x)))      q, k, v = thirds of attn.c_attn(ln_1(x))
    y = h + mlp.c_proj(gelu_new(mlp.c_fc(ln_2(h))))

GPT-2 stores its Linears as ``Conv1D`` with weight [in, out]; the loader transposes them to [out, in]
(fdbert.decoder_loading), so they run through ``ops.linear`` like every other Linear.
``attend(q, k, v)`` is the causal attention over the sequence's cache (:mod:`fdbert.kv_cache`).
"""

from .. import ops


def gpt2_attention(x, attend, p, config):  # [n, D] -> [n, D]
    """c_proj(concat_h softmax(q_h k_h^T / sqrt(Dh), causal) v_h), [q | k | v] = c_attn(x)"""
    n, D = x.shape
    H, Dh = config.n_heads, config.head_dim
    qkv = ops.linear(x, p.c_attn.weight, p.c_attn.bias).reshape(n, 3, H, Dh)  # [n, 3D] -> [n, 3, H, Dh]
    q, k, v = (qkv[:, i].copy() for i in range(3))                             # [n, H, Dh] each
    a = attend(q, k, v).reshape(n, D)                                          # [n, H, Dh] -> [n, D]
    return ops.linear(a, p.c_proj.weight, p.c_proj.bias)


def gpt2_mlp(x, p):  # [n, D] -> [n, D]
    """mlp.c_proj(gelu_new(mlp.c_fc(x)))"""
    return ops.linear(ops.gelu_tanh(ops.linear(x, p.c_fc.weight, p.c_fc.bias)),
                      p.mlp_c_proj.weight, p.mlp_c_proj.bias)


def gpt2_layer(x, attend, p, config):  # [n, D] -> [n, D]
    """x = x + Attention(ln_1(x)); x = x + MLP(ln_2(x))"""
    eps = config.norm_eps
    x = x + gpt2_attention(ops.layer_norm(x, p.ln_1.weight, p.ln_1.bias, eps), attend, p, config)
    return x + gpt2_mlp(ops.layer_norm(x, p.ln_2.weight, p.ln_2.bias, eps), p)


def gpt2_embeddings(ids, positions, w):  # [n], [n] -> [n, D]
    """x = wte[ids] + wpe[positions] (learned absolute positions)."""
    return ops.embedding(ids, w.embed_tokens) + ops.embedding(positions, w.positions)


def gpt2_final_norm(x, w, config):  # [n, D] -> [n, D]
    """ln_f(x): the LayerNorm after the last block."""
    return ops.layer_norm(x, w.norm.weight, w.norm.bias, config.norm_eps)
