"""The ops of fdbert's transformer: each public function here owns its signature and docstring and
dispatches by name to the selected backend (:mod:`fdbert.backend`).

Backends implement functions of the same names and signatures. The reference implementations in
:mod:`fdbert.reference` (pure NumPy/SciPy) are the specification; read them for the maths. The ops
that are whole blocks (``encoder_layer``, ``prepadded_attention``) are specified by their composites
in :mod:`fdbert.blocks`, which call the ops here.

Each function checks its contract here, once, before dispatch (:mod:`fdbert.checks`): every backend
sees only valid input, and invalid input raises the same fdbert error whichever backend is selected
(ShapeError, DTypeError, TokenIdError, ArgumentError). A list is converted with ``np.asarray``.

Notation (docs/notation.md): n packed tokens, B sequences, D model width, H heads, Dh head width,
K input channels, N output channels, V vocabulary.
"""

from __future__ import annotations

import numpy as np

from . import checks as c
from .backend import call
from .int8 import check_qparams


def embedding(ids, table):
    """rows of ``table`` picked by ``ids``: ids int [n], table f32 [V, D] -> f32 [n, D]."""
    table = c.typed("embedding: table", table, "f", ndim=2)
    ids = c.token_ids("embedding: ids", ids, table.shape[0])
    return call("embedding", ids, table)


def linear(x, weight, bias=None):
    """y = x @ W.T + b: x f32 [n, K], W f32 [N, K], b f32 [N] or None -> f32 [n, N]."""
    weight = c.typed("linear: weight", weight, "f", ndim=2)
    x = c.typed("linear: x", x, "f", min_ndim=1)
    if np.shape(x)[-1] != weight.shape[1]:
        raise c.ShapeError(f"linear: x has K = {np.shape(x)[-1]} features but weight is {weight.shape} "
                           f"(expected [N, {np.shape(x)[-1]}])")
    if bias is not None:
        bias = c.exact_kind("linear: bias", bias, weight.shape[:1])
    return call("linear", x, weight, bias)


def layer_norm(x, weight, bias, eps):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis: f32 [n, D] -> [n, D]."""
    x = c.typed("layer_norm: x", x, "f", min_ndim=1)
    D = np.shape(x)[-1]
    if D == 0:
        raise c.ShapeError("layer_norm: x has D = 0 features (the mean of nothing)")
    weight = c.exact_kind("layer_norm: weight", weight, (D,))
    bias = c.exact_kind("layer_norm: bias", bias, (D,))
    c.number("layer_norm: eps", eps, lo=0)
    return call("layer_norm", x, weight, bias, eps)


def gelu(x):
    """y = x/2 * (1 + erf(x / sqrt 2)), the exact GELU: f32 [...] -> f32 [...]."""
    x = c.typed("gelu: x", x, "f")
    return call("gelu", x)


def softmax(x):
    """y = exp(x - max x) / sum exp(x - max x) over the last axis: f32 [..., L] -> f32 [..., L]."""
    x = c.typed("softmax: x", x, "f", min_ndim=1)
    if np.shape(x)[-1] == 0:
        raise c.ShapeError(f"softmax: x has L = 0 entries on its last axis (shape {np.shape(x)}): "
                           "the max of nothing")
    return call("softmax", x)


def attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None):
    """softmax(q k^T * scale [+ causal mask]) v within each sequence of a packed batch.

    q f32 [nq, H, Dh]; k, v f32 [nk, H, Dh]; cu_seqlens_q, cu_seqlens_k int32 [B+1] (sequence b owns
    rows ``cu[b]:cu[b+1]``) -> f32 [nq, H, Dh]. ``scale`` defaults to 1/sqrt(Dh). With ``causal``, query i
    of a sequence with Lq queries and Lk keys sees keys ``j <= i + Lk - Lq`` (the queries are the last
    Lq positions: a KV cache holds the first Lk - Lq).
    """
    args = _attention_args("attention", q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale)
    return call("attention", *args, causal=causal, scale=scale)


def attention_int8(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None):
    """:func:`attention` with both matmuls in INT8: q and k become s8 codes per token and head, v per
    sequence and head (symmetric, absmax / 127), q k^T and P v run as exact int32 sums, and the
    softmax weights are u8 (255 for each row's largest; the row's integer sum normalises). Same
    arguments and result; equations in :mod:`fdbert.reference.attention_int8`. Raises ValueError on
    non-finite input, a visible score that overflows float32, or more than 65,536 keys.
    """
    args = _attention_args("attention_int8", q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale)
    return call("attention_int8", *args, causal=causal, scale=scale)


def _attention_args(op, q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale):
    """The attention contract: shapes, offsets, every query sees a key."""
    q = c.typed(f"{op}: q", q, "f", ndim=3)
    k = c.typed(f"{op}: k", k, "f", ndim=3)
    v = c.typed(f"{op}: v", v, "f", ndim=3)
    nq, H, Dh = q.shape
    if k.shape[1:] != (H, Dh) or v.shape != k.shape:
        raise c.ShapeError(f"{op}: k {k.shape} and v {v.shape} must both be [nk, H = {H}, Dh = {Dh}] "
                           f"like q {q.shape}")
    if Dh == 0:
        raise c.ShapeError(f"{op}: head width Dh = 0")
    cu_q = c.cu_seqlens(f"{op}: cu_seqlens_q", cu_seqlens_q, nq)
    cu_k = c.cu_seqlens(f"{op}: cu_seqlens_k", cu_seqlens_k, k.shape[0])
    if cu_q.shape != cu_k.shape:
        raise c.ShapeError(f"{op}: cu_seqlens_q {cu_q.shape} and cu_seqlens_k {cu_k.shape} differ in B")
    if not isinstance(causal, (bool, np.bool_)):
        raise c.ArgumentError(f"{op}: causal must be True or False, got {causal!r}")
    if scale is not None:
        c.number(f"{op}: scale", scale)
    Lq, Lk = cu_q[1:] - cu_q[:-1], cu_k[1:] - cu_k[:-1]    # >= 0: the offsets are non-decreasing
    blind = (Lq > 0) & ((Lk == 0) | (Lk < Lq)) if causal else (Lq > 0) & (Lk == 0)
    if blind.any():
        b = int(np.argmax(blind))
        raise c.ShapeError(f"{op}: sequence {b} has {Lq[b]} queries and {Lk[b]} keys: a query sees no key "
                           "(Lk = 0 < Lq, or causal with Lk < Lq)")
    return q, k, v, cu_q, cu_k


def encoder_layer(x, cu_seqlens, layer, config):
    """One post-LN transformer encoder block (DistilBERT/BERT) on a packed batch: f32 [n, D] -> [n, D].

    ``layer`` is an :class:`fdbert.weights.EncoderLayerWeights`, ``config`` an
    :class:`fdbert.config.EncoderConfig`. A backend may run the whole block fused; the reference is
    the composite :func:`fdbert.blocks.encoder.encoder_layer`.
    """
    c.encoder_layer(layer, config)
    x = c.typed("encoder_layer: x", x, "f", ndim=2)
    if x.shape[1] != config.d_model:
        raise c.ShapeError(f"encoder_layer: x must be [n, {config.d_model}], got shape {x.shape}")
    cu_seqlens = c.cu_seqlens("encoder_layer: cu_seqlens", cu_seqlens, x.shape[0], whole=True)
    return call("encoder_layer", x, cu_seqlens, layer, config)


# ---- INT8 ops (docs/int8.md; reference: fdbert/reference/qlinear.py) ----------------------------
def quantize_u8(x, scale, zero_point):
    """q = clip(rint(x / scale) + zero_point, 0, 255) in float32, half-even: f32 [...] -> u8 [...]."""
    x = c.exact_dtype("quantize_u8: x", x, np.float32)
    check_qparams("quantize_u8", scale, zero_point)
    return call("quantize_u8", x, scale, zero_point)


def dequantize_u8(q, scale, zero_point):
    """x = (q - zero_point) * scale: u8 [...] -> f32 [...]."""
    q = c.exact_dtype("dequantize_u8: q", q, np.uint8)
    check_qparams("dequantize_u8", scale, zero_point)
    return call("dequantize_u8", q, scale, zero_point)


def qlinear_s32(x_u8, qweight):
    """acc = x_u8 @ wq.T exactly in int32: u8 [M, K], QuantizedLinear [N, K] (dense or BSR) -> s32 [M, N]."""
    x_u8 = _qlinear_input("qlinear_s32", x_u8, qweight)
    return call("qlinear_s32", x_u8, qweight)


def qlinear(x_u8, qweight, *, gelu=False, residual=None, out_scale=None, out_zero_point=None):
    """y = float32(acc - comp) * mult + bias [-> GELU] [+ residual] [-> u8 with out_scale/out_zero_point].

    x_u8 u8 [M, K]; qweight a QuantizedLinear [N, K] (dense s8 or BSR); residual f32 [M, N] or None
    -> f32 [M, N], or u8 [M, N] when out_scale is given. acc is :func:`qlinear_s32`.
    """
    x_u8 = _qlinear_input("qlinear", x_u8, qweight)
    M, N = x_u8.shape[0], qweight.shape[0]
    if not isinstance(gelu, (bool, np.bool_)):
        raise c.ArgumentError(f"qlinear: gelu must be True or False, got {gelu!r}")
    if residual is not None:
        residual = c.exact("qlinear: residual", residual, np.float32, (M, N))
    if out_scale is not None:
        check_qparams("qlinear: output", out_scale, 0 if out_zero_point is None else out_zero_point)
    elif out_zero_point is not None:
        raise c.ArgumentError("qlinear: out_zero_point without out_scale")
    return call("qlinear", x_u8, qweight, gelu=gelu, residual=residual, out_scale=out_scale,
                out_zero_point=out_zero_point)


def add_outlier_product(y, x, qweight):
    """y + x[:, outliers] @ outlier_weight.T, summed in channel order, each step one float32 operation:
    the float share of a QuantizedLinear's outlier input channels. y f32 [M, N]; x f32 [M, K] (the
    Linear's float input); qweight a QuantizedLinear [N, K] -> f32 [M, N]."""
    c.quantized_linear("add_outlier_product: qweight", qweight)
    N, K = qweight.shape
    x = c.exact("add_outlier_product: x", x, np.float32, (None, K))
    y = c.exact("add_outlier_product: y", y, np.float32, (x.shape[0], N))
    return call("add_outlier_product", y, x, qweight)


def _qlinear_input(op, x_u8, qweight):  # -> x_u8 u8 [M, K]
    """A validated QuantizedLinear (once per layer object) and its u8 input [M, K]."""
    c.quantized_linear(f"{op}: qweight", qweight)
    K = qweight.shape[1]
    return c.exact(f"{op}: x", x_u8, np.uint8, (None, K))


# ---- decoder ops (docs/decoder.md; reference: fdbert/reference/{rmsnorm,rope,decoder_attention}.py) --
def rms_norm(x, weight, eps):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last axis: f32 [n, D], [D] -> f32 [n, D]."""
    x = c.typed("rms_norm: x", x, "f", min_ndim=1)
    if np.shape(x)[-1] == 0:
        raise c.ShapeError("rms_norm: x has D = 0 features (the mean of nothing)")
    weight = c.exact_kind("rms_norm: weight", weight, (np.shape(x)[-1],))
    c.number("rms_norm: eps", eps, lo=0)
    return call("rms_norm", x, weight, eps)


def rope(x, cos, sin):
    """Rotary embedding, HF "rotate half" layout: y = (x1 cos - x2 sin, x2 cos + x1 sin) per head.

    x f32 [n, H, Dh] (x1, x2 its channel halves); cos, sin f32 [n, Dh/2] (one angle per token and
    channel pair, :func:`fdbert.reference.rope.rope_angles`) -> f32 [n, H, Dh].
    """
    x = c.typed("rope: x", x, "f", ndim=3)
    n, _, Dh = x.shape
    if Dh % 2:
        raise c.ShapeError(f"rope: head width Dh = {Dh} must be even (channel pairs)")
    cos = c.exact_kind("rope: cos", cos, (n, Dh // 2))
    sin = c.exact_kind("rope: sin", sin, (n, Dh // 2))
    return call("rope", x, cos, sin)


def silu_mul(gate, up):
    """y = silu(gate) * up = gate / (1 + exp(-gate)) * up (SwiGLU's gated product): f32 [n, F] x2 -> [n, F]."""
    gate = c.typed("silu_mul: gate", gate, "f")
    up = c.exact_kind("silu_mul: up", up, gate.shape)
    return call("silu_mul", gate, up)


def gelu_tanh(x):
    """y = x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's ``gelu_new``: f32 [...] -> f32 [...]."""
    x = c.typed("gelu_tanh: x", x, "f")
    return call("gelu_tanh", x)


def decoder_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, scale=None):
    """Causal attention of each sequence's new tokens over its KV cache, with grouped-query heads.

    q f32 [nq, H, Dh]; k, v f32 [nk, Hkv, Dh], H a multiple of Hkv (query head h reads kv head
    h // (H / Hkv)); cu_seqlens_q, cu_seqlens_k int32 [B+1] -> f32 [nq, H, Dh]. Sequence b's queries
    are the last Lq = cu_q[b+1] - cu_q[b] of its Lk keys' positions: query i sees keys j <= i + Lk - Lq.
    """
    q = c.typed("decoder_attention: q", q, "f", ndim=3)
    k = c.typed("decoder_attention: k", k, "f", ndim=3)
    v = c.typed("decoder_attention: v", v, "f", ndim=3)
    H, Dh, Hkv = q.shape[1], q.shape[2], k.shape[1]
    if k.shape[2] != Dh or v.shape != k.shape or Hkv == 0 or H % Hkv:
        raise c.ShapeError(f"decoder_attention: k {k.shape} and v {v.shape} must both be [nk, Hkv, Dh = {Dh}] "
                           f"with Hkv dividing H = {H} (q {q.shape})")
    cu_q = c.cu_seqlens("decoder_attention: cu_seqlens_q", cu_seqlens_q, q.shape[0])
    cu_k = c.cu_seqlens("decoder_attention: cu_seqlens_k", cu_seqlens_k, k.shape[0])
    if cu_q.shape != cu_k.shape:
        raise c.ShapeError(f"decoder_attention: cu_seqlens_q {cu_q.shape} and cu_seqlens_k {cu_k.shape} differ in B")
    if np.any(np.diff(cu_q) > np.diff(cu_k)):
        raise c.ShapeError("decoder_attention: a sequence has more queries than keys (its queries are its "
                           "last positions, so every query needs its own key)")
    if scale is not None:
        c.number("decoder_attention: scale", scale)
    return call("decoder_attention", q, k, v, cu_q, cu_k, scale=scale)


def prepadded_attention(q, k, v, n_pad, *, scale=None):
    """EET's pre-padded causal attention: q f32 [B, Tq, H, Dh]; k, v f32 [B, Tk, Hkv, Dh]; n_pad int
    [B] (sequence b's first n_pad[b] columns are pads, never seen) -> f32 [B, Tq, H, Dh]; query i
    sees keys n_pad[b] <= j <= i + Tk - Tq, and a pad query's output is 0. Reference: the block
    :func:`fdbert.blocks.prepadded_attention.prepadded_attention`."""
    q = c.typed("prepadded_attention: q", q, "f", ndim=4)
    k = c.typed("prepadded_attention: k", k, "f", ndim=4)
    v = c.typed("prepadded_attention: v", v, "f", ndim=4)
    B, Tq, H, Dh = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    if k.shape[0] != B or k.shape[3] != Dh or v.shape != k.shape or Hkv == 0 or H % Hkv or Tq > Tk:
        raise c.ShapeError(f"prepadded_attention: k {k.shape} and v {v.shape} must both be [B = {B}, Tk >= {Tq}, "
                           f"Hkv, Dh = {Dh}] with Hkv dividing H = {H} (q {q.shape})")
    n_pad = c.typed("prepadded_attention: n_pad", n_pad, "iu", ndim=1)
    if n_pad.shape != (B,) or np.any(n_pad < 0) or np.any(n_pad > Tk):
        raise c.ShapeError(f"prepadded_attention: n_pad must be [B = {B}] counts in [0, Tk = {Tk}], got "
                           f"{n_pad.tolist() if n_pad.size <= 8 else n_pad.shape}")
    if scale is not None:
        c.number("prepadded_attention: scale", scale)
    return call("prepadded_attention", q, k, v, n_pad, scale=scale)
