"""The post-LN transformer encoder block of BERT and DistilBERT (Vaswani et al. 2017; Devlin et al. 2019).

    a = Attention(x)              multi-head self-attention within each packed sequence
    x = LayerNorm(x + a)          sa_layer_norm      (BERT: attention.output.LayerNorm)
    h = W2 GELU(W1 x + b1) + b2   lin1, lin2         (BERT: intermediate.dense, output.dense)
    x = LayerNorm(x + h)          output_layer_norm  (BERT: output.LayerNorm)

Matches HF ``TransformerBlock`` (modeling_distilbert) and ``BertLayer`` in eval mode (no dropout).
"""

from .. import ops
from .attention_int8 import self_attention_of
from .qencoder import encoder_layer_int8, is_quantized


def self_attention(x, cu_seqlens, p, n_heads):  # [n, D] -> [n, D]
    """Attention(x) = concat_h softmax(Q_h K_h^T / sqrt(Dh)) V_h  W_o^T + b_o, with Q, K, V = x W^T + b."""
    n, D = x.shape
    q = ops.linear(x, p.q_lin.weight, p.q_lin.bias).reshape(n, n_heads, D // n_heads)  # [n, D] -> [n, H, Dh]
    k = ops.linear(x, p.k_lin.weight, p.k_lin.bias).reshape(n, n_heads, D // n_heads)  # [n, D] -> [n, H, Dh]
    v = ops.linear(x, p.v_lin.weight, p.v_lin.bias).reshape(n, n_heads, D // n_heads)  # [n, D] -> [n, H, Dh]
    a = self_attention_of(p, q, k, v, cu_seqlens).reshape(n, D)                        # [n, H, Dh] -> [n, D]
    return ops.linear(a, p.out_lin.weight, p.out_lin.bias)


def feed_forward(x, p):  # [n, D] -> [n, D]
    """FFN(x) = GELU(x W1^T + b1) W2^T + b2"""
    h = ops.gelu(ops.linear(x, p.lin1.weight, p.lin1.bias))  # [n, F]
    return ops.linear(h, p.lin2.weight, p.lin2.bias)


def encoder_layer(x, cu_seqlens, layer, config):  # [n, D] -> [n, D]
    """x = LN(x + Attention(x)); x = LN(x + FFN(x))"""
    if is_quantized(layer):  # INT8 GEMMs, the rest float32: fdbert/reference/qencoder.py
        return encoder_layer_int8(x, cu_seqlens, layer, config)
    eps = config.layer_norm_eps
    a = self_attention(x, cu_seqlens, layer, config.n_heads)
    x = ops.layer_norm(x + a, layer.sa_layer_norm.weight, layer.sa_layer_norm.bias, eps)
    h = feed_forward(x, layer)
    return ops.layer_norm(x + h, layer.output_layer_norm.weight, layer.output_layer_norm.bias, eps)
