"""The post-LN transformer encoder block of BERT and DistilBERT (Vaswani et al. 2017; Devlin et al. 2019),
with float32 Linears or INT8 ones (Fast DistilBERT, Shen et al. 2022, sec. 3.2, Fig. 3).

    a = Attention(x)              multi-head self-attention within each packed sequence
    x = LayerNorm(x + a)          sa_layer_norm      (BERT: attention.output.LayerNorm)
    h = W2 GELU(W1 x + b1) + b2   lin1, lin2         (BERT: intermediate.dense, output.dense)
    x = LayerNorm(x + h)          output_layer_norm  (BERT: output.LayerNorm)

Matches HF ``TransformerBlock`` (modeling_distilbert) and ``BertLayer`` in eval mode (no dropout).

The INT8 block (:func:`encoder_layer_int8`, the layer's Linears are QuantizedLinear) runs the four
GEMMs as u8 x s8 -> int32 (``ops.qlinear``, maths in :mod:`fdbert.reference.qlinear`); everything
between them stays float32, as in the float block:

    xq = quantize(x)                                  one u8 copy of x feeds Q, K and V
    q, k, v = qlinear(xq, W_q), qlinear(xq, W_k), qlinear(xq, W_v)         f32
    a = attention(q, k, v)                            f32, or INT8 with layer.attention == "int8"
                                                      (fdbert.reference.attention_int8)
    x = LN(qlinear(quantize(a), W_o, residual=x))     bias + residual fused in the epilogue; LN f32
    hq = qlinear(quantize(x), W_1, gelu, out=u8)      GELU + requantize fused: FFN1 emits u8
    x = LN(qlinear(hq, W_2, residual=x))

Outlier channels: a QuantizedLinear may keep a few input channels in float32 (``outliers``; their s8
codes are 0). Their part, x[:, outliers] @ outlier_weight.T, is added in float32 right after the
layer's qlinear (before GELU for FFN1, which then cannot fuse GELU + requantize: it runs
qlinear -> + outlier part -> GELU -> quantize). Q, K and V share their input, so their input
(scale, zero point) must be equal.

``encoder_layer`` is the op ``fdbert.ops.encoder_layer`` of the reference backend: a backend that
runs the block fused (native: the INT8 block) declines the rest, which this composite then runs
from dispatched ops.
"""

import numpy as np

from .. import ops
from ..weights import QuantizedLinear


def self_attention_of(layer, q, k, v, cu_seqlens):  # f32 [n, H, Dh] x3 -> [n, H, Dh]
    """The encoder blocks' self-attention: ops.attention_int8 when ``layer.attention`` is "int8",
    else ops.attention."""
    op = ops.attention_int8 if layer.attention == "int8" else ops.attention
    return op(q, k, v, cu_seqlens, cu_seqlens)


# ---- float32 -----------------------------------------------------------------------------------
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
    if is_quantized(layer):  # INT8 GEMMs, the rest float32
        return encoder_layer_int8(x, cu_seqlens, layer, config)
    eps = config.layer_norm_eps
    a = self_attention(x, cu_seqlens, layer, config.n_heads)
    x = ops.layer_norm(x + a, layer.sa_layer_norm.weight, layer.sa_layer_norm.bias, eps)
    h = feed_forward(x, layer)
    return ops.layer_norm(x + h, layer.output_layer_norm.weight, layer.output_layer_norm.bias, eps)


# ---- INT8 --------------------------------------------------------------------------------------
def is_quantized(layer) -> bool:
    """True when the layer's Linears are QuantizedLinear (all six are, or none)."""
    return isinstance(layer.q_lin, QuantizedLinear)


def _plus_outliers(y, x, lin):  # f32 [n, N], f32 [n, K] -> f32 [n, N]
    """y + the float32 share of lin's outlier input channels (ops.add_outlier_product), if it has any."""
    return ops.add_outlier_product(y, x, lin) if len(lin.outliers) else y


def encoder_layer_int8(x, cu_seqlens, layer, config):  # [n, D] -> [n, D]
    """x = LN(x + Attention_int8(x)); x = LN(x + FFN_int8(x)); layer's Linears are QuantizedLinear."""
    n, D = x.shape
    H, Dh, eps = config.n_heads, config.head_dim, config.layer_norm_eps
    qkv_in = layer.q_lin
    for other in (layer.k_lin, layer.v_lin):
        if (other.x_scale, other.x_zero_point) != (qkv_in.x_scale, qkv_in.x_zero_point):
            raise ValueError("q_lin, k_lin and v_lin share their input: their x_scale and "
                             "x_zero_point must be equal")
    xq = ops.quantize_u8(x, qkv_in.x_scale, qkv_in.x_zero_point)                 # u8 [n, D]
    q, k, v = (_plus_outliers(ops.qlinear(xq, lin), x, lin).reshape(n, H, Dh)  # [n, D] -> [n, H, Dh]
               for lin in (layer.q_lin, layer.k_lin, layer.v_lin))
    a = self_attention_of(layer, q, k, v, cu_seqlens).reshape(n, D)   # f32 or INT8: [n, H, Dh] -> [n, D]
    aq = ops.quantize_u8(a, layer.out_lin.x_scale, layer.out_lin.x_zero_point)
    y = _plus_outliers(ops.qlinear(aq, layer.out_lin, residual=x), a, layer.out_lin)
    x = ops.layer_norm(y, layer.sa_layer_norm.weight, layer.sa_layer_norm.bias, eps)

    lin1, lin2 = layer.lin1, layer.lin2
    xq = ops.quantize_u8(x, lin1.x_scale, lin1.x_zero_point)
    if not len(lin1.outliers) and not len(lin2.outliers):
        hq = ops.qlinear(xq, lin1, gelu=True, out_scale=lin2.x_scale,
                         out_zero_point=lin2.x_zero_point)                      # u8 [n, F], fused
        y = ops.qlinear(hq, lin2, residual=x)
    else:
        h = ops.gelu(_plus_outliers(ops.qlinear(xq, lin1), x, lin1))      # f32 [n, F]
        hq = ops.quantize_u8(h, lin2.x_scale, lin2.x_zero_point)
        y = _plus_outliers(ops.qlinear(hq, lin2, residual=x), h, lin2)
    return ops.layer_norm(y, layer.output_layer_norm.weight, layer.output_layer_norm.bias, eps)
