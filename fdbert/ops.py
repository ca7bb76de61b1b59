"""The ops of fdbert's transformer: each public function here owns its signature and docstring and
dispatches by name to the selected backend (:mod:`fdbert.backend`).

Backends implement functions of the same names and signatures. The reference implementations in
:mod:`fdbert.reference` are the specification; read them for the maths.

Notation (docs/notation.md): n packed tokens, B sequences, D model width, H heads, Dh head width,
K input channels, N output channels, V vocabulary.
"""

from __future__ import annotations

from .backend import call


def embedding(ids, table):
    """rows of ``table`` picked by ``ids``: ids int [n], table f32 [V, D] -> f32 [n, D]."""
    return call("embedding", ids, table)


def linear(x, weight, bias=None):
    """y = x @ W.T + b: x f32 [n, K], W f32 [N, K], b f32 [N] or None -> f32 [n, N]."""
    return call("linear", x, weight, bias)


def layer_norm(x, weight, bias, eps):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis: f32 [n, D] -> [n, D]."""
    return call("layer_norm", x, weight, bias, eps)


def gelu(x):
    """y = x/2 * (1 + erf(x / sqrt 2)), the exact GELU: f32 [...] -> f32 [...]."""
    return call("gelu", x)


def softmax(x):
    """y = exp(x - max x) / sum exp(x - max x) over the last axis: f32 [..., L] -> f32 [..., L]."""
    return call("softmax", x)


def attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None):
    """softmax(q k^T * scale [+ causal mask]) v within each sequence of a packed batch.

    q f32 [nq, H, Dh]; k, v f32 [nk, H, Dh]; cu_seqlens_q, cu_seqlens_k int32 [B+1] (sequence b owns
    rows ``cu[b]:cu[b+1]``) -> f32 [nq, H, Dh]. ``scale`` defaults to 1/sqrt(Dh). With ``causal``, query i
    of a sequence with Lq queries and Lk keys sees keys ``j <= i + Lk - Lq`` (the queries are the last
    Lq positions: a KV cache holds the first Lk - Lq).
    """
    return call("attention", q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal, scale=scale)


def attention_int8(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None):
    """:func:`attention` with both matmuls in INT8: q and k become s8 codes per token and head, v per
    sequence and head (symmetric, absmax / 127), q k^T and P v run as exact int32 sums, and the
    softmax weights are u8 (255 for each row's largest; the row's integer sum normalises). Same
    arguments and result; equations in :mod:`fdbert.reference.attention_int8`. Raises ValueError on
    non-finite input, a visible score that overflows float32, or more than 65,536 keys.
    """
    return call("attention_int8", q, k, v, cu_seqlens_q, cu_seqlens_k, causal=causal, scale=scale)


def encoder_layer(x, cu_seqlens, layer, config):
    """One post-LN transformer encoder block (DistilBERT/BERT) on a packed batch: f32 [n, D] -> [n, D].

    ``layer`` is an :class:`fdbert.weights.EncoderLayerWeights`, ``config`` an
    :class:`fdbert.config.EncoderConfig`. A backend may run the whole block fused.
    """
    return call("encoder_layer", x, cu_seqlens, layer, config)


# ---- INT8 ops (docs/int8.md; reference: fdbert/reference/qlinear.py) ----------------------------
def quantize_u8(x, scale, zero_point):
    """q = clip(rint(x / scale) + zero_point, 0, 255) in float32, half-even: f32 [...] -> u8 [...]."""
    return call("quantize_u8", x, scale, zero_point)


def dequantize_u8(q, scale, zero_point):
    """x = (q - zero_point) * scale: u8 [...] -> f32 [...]."""
    return call("dequantize_u8", q, scale, zero_point)


def qlinear_s32(x_u8, qweight):
    """acc = x_u8 @ wq.T exactly in int32: u8 [M, K], QuantizedLinear [N, K] (dense or BSR) -> s32 [M, N]."""
    return call("qlinear_s32", x_u8, qweight)


def qlinear(x_u8, qweight, *, gelu=False, residual=None, out_scale=None, out_zero_point=None):
    """y = float32(acc - comp) * mult + bias [-> GELU] [+ residual] [-> u8 with out_scale/out_zero_point].

    x_u8 u8 [M, K]; qweight a QuantizedLinear [N, K] (dense s8 or BSR); residual f32 [M, N] or None
    -> f32 [M, N], or u8 [M, N] when out_scale is given. acc is :func:`qlinear_s32`.
    """
    return call("qlinear", x_u8, qweight, gelu=gelu, residual=residual, out_scale=out_scale,
                out_zero_point=out_zero_point)


# ---- decoder ops (docs/decoder.md; reference: fdbert/reference/{rmsnorm,rope,decoder_attention}.py) --
def rms_norm(x, weight, eps):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last axis: f32 [n, D], [D] -> f32 [n, D]."""
    return call("rms_norm", x, weight, eps)


def rope(x, cos, sin):
    """Rotary embedding, HF "rotate half" layout: y = (x1 cos - x2 sin, x2 cos + x1 sin) per head.

    x f32 [n, H, Dh] (x1, x2 its channel halves); cos, sin f32 [n, Dh/2] (one angle per token and
    channel pair, :func:`fdbert.reference.rope.rope_angles`) -> f32 [n, H, Dh].
    """
    return call("rope", x, cos, sin)


def silu_mul(gate, up):
    """y = silu(gate) * up = gate / (1 + exp(-gate)) * up (SwiGLU's gated product): f32 [n, F] x2 -> [n, F]."""
    return call("silu_mul", gate, up)


def gelu_tanh(x):
    """y = x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's ``gelu_new``: f32 [...] -> f32 [...]."""
    return call("gelu_tanh", x)


def decoder_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, scale=None):
    """Causal attention of each sequence's new tokens over its KV cache, with grouped-query heads.

    q f32 [nq, H, Dh]; k, v f32 [nk, Hkv, Dh], H a multiple of Hkv (query head h reads kv head
    h // (H / Hkv)); cu_seqlens_q, cu_seqlens_k int32 [B+1] -> f32 [nq, H, Dh]. Sequence b's queries
    are the last Lq = cu_q[b+1] - cu_q[b] of its Lk keys' positions: query i sees keys j <= i + Lk - Lq.
    """
    return call("decoder_attention", q, k, v, cu_seqlens_q, cu_seqlens_k, scale=scale)


def prepadded_attention(q, k, v, n_pad, *, scale=None):
    """EET's pre-padded causal attention: q f32 [B, Tq, H, Dh]; k, v f32 [B, Tk, Hkv, Dh]; n_pad int
    [B] (sequence b's first n_pad[b] columns are pads, never seen) -> f32 [B, Tq, H, Dh]; query i
    sees keys n_pad[b] <= j <= i + Tk - Tq, and a pad query's output is 0."""
    return call("prepadded_attention", q, k, v, n_pad, scale=scale)
