"""The native backend: functions named and called exactly like those of :mod:`fdbert.ops`.

:func:`fdbert.backend.call` tries these first when the backend is ``"native"``. Each one takes what
its kernel can take and declines everything else by raising :class:`fdbert.backend.Declined` with the
reason -- wrong dtype, a non-contiguous array, a shape the kernel does not handle -- so the reference
runs instead (or, with ``set_backend("native", only=True)``, the call fails naming the reason). No
input is ever converted silently: a float64 array or a strided view costs a copy the caller should
see. Invalid arguments the reference rejects too (a zero scale) raise the reference's own error.

``embedding`` copies rows on the same OpenMP pool; an id outside [0, V) (which NumPy's take wraps
when negative, or rejects) declines to the reference. The float32 ``linear`` runs on
fdbert_native._sgemm (csrc/sgemm.c), on the same OpenMP pool as every other kernel, rather than
on NumPy's BLAS, whose own thread pool would fight ours. ``encoder_layer`` runs a quantized block
fused (:func:`encoder_layer`: the kernels of the reference INT8 block, in its order, without
dispatch) and declines float blocks, which the reference then composes from these ops. A
QuantizedLinear's weight is packed for the kernels once, the first time it is seen, and cached in
``qweight.packed["native"]``.

The kernels are fdbert_native._fp32 (csrc/fp32_ops.c, csrc/attention.c) and fdbert_native._qgemm
(csrc/qgemm.c, csrc/qspmm.c); each runs its AVX-512 path
when the CPU features allow it now (see :func:`op_paths`; ``fdbert_native.disabled_cpu_features``
forces the generic C path) on ``fdbert_native.get_num_threads()`` threads.
"""

from __future__ import annotations

import numpy as np

from fdbert import int8
from fdbert.errors import Declined
from fdbert.weights import QuantizedLinear

try:
    from fdbert_native import _fp32
except ImportError as _e:  # _cpu built but _fp32 not (yet): every float32 op declines
    _fp32 = None
    _FP32_MISSING = f"fdbert_native._fp32 did not import ({_e})"
try:
    from fdbert_native import _qgemm
except ImportError as _e:  # every INT8 GEMM declines
    _qgemm = None
    _QGEMM_MISSING = f"fdbert_native._qgemm did not import ({_e})"

__all__ = ["embedding", "linear", "layer_norm", "softmax", "gelu", "attention", "attention_int8",
           "quantize_u8", "dequantize_u8", "qlinear", "qlinear_s32", "add_outlier_product", "encoder_layer",
           "rms_norm", "rope", "silu_mul", "gelu_tanh", "decoder_attention", "op_paths"]

#: The ops this module implements, each with one kernel family in fdbert_native._fp32.
FP32_OPS = ("layer_norm", "softmax", "gelu", "attention", "quantize_u8", "dequantize_u8",
            "add_outlier_product")
#: The INT8 GEMMs, in fdbert_native._qgemm.
INT8_OPS = ("qlinear", "qlinear_s32")


def op_paths() -> dict[str, str]:
    """Map each op implemented here to the ISA path it runs now (e.g. "avx512", "avx512vnni",
    "generic"; "reference" when the kernel module is missing)."""
    path = _fp32.best_isa() if _fp32 is not None else "reference"
    paths = {op: path for op in FP32_OPS}
    qpath = _qgemm.best_isa() if _qgemm is not None else "reference"
    if _qgemm is not None:
        _request_amx_once()   # as the first packed weight would: the answer is what will run
        if _qgemm.AMX in _qgemm.supported_dense_isas():
            qpath += f" (amx from M = {_qgemm.AMX_AUTO_MIN_M} rows, 1x4-sparse weights too)"
    paths.update({op: qpath for op in INT8_OPS})
    paths["attention_int8"] = (_fp32.INT8_ATTENTION_PATHS.best_isa() if _fp32 is not None
                               else "reference")
    paths["embedding"] = "row copy" if _fp32 is not None else "reference"
    paths["linear"] = _linear_path()   # fdbert_native._sgemm (defined at the end of this file)
    paths["encoder_layer"] = "fused INT8 block; float layers decline to the reference block"
    dpath = _decoder.best_isa() if _decoder is not None else "reference"
    paths.update({op: dpath for op in DECODER_OPS})
    paths["decoder_attention"] = f"{paths['attention']} (query head h reads kv head h // (H / Hkv))"
    paths["prepadded_attention"] = f"{paths['attention']} (pads, real rows and unused capacity: three segments per sequence)"
    return paths


def _take(a, name, dtype, *, min_ndim=0):  # -> a, unchanged
    """Return `a` if the kernels can read it as is, else raise Declined saying why."""
    if _fp32 is None:
        raise Declined(_FP32_MISSING)
    if not isinstance(a, np.ndarray):
        raise Declined(f"{name} is a {type(a).__name__}, not a numpy.ndarray")
    if a.dtype != dtype:
        raise Declined(f"{name} has dtype {a.dtype}; the kernel takes {np.dtype(dtype)}")
    if a.ndim < min_ndim:
        raise Declined(f"{name} has {a.ndim} dimensions; the kernel needs at least {min_ndim}")
    if not a.flags.c_contiguous:
        raise Declined(f"{name} is not C-contiguous")
    return a


def embedding(ids, table):  # int64 [n], f32 [V, D] -> f32 [n, D]
    """y[i] = table[ids[i]], the same bits as np.take (a copy)."""
    _take(ids, "embedding: ids", np.int64)
    _take(table, "embedding: table", np.float32)
    if ids.ndim != 1 or table.ndim != 2:
        raise Declined(f"embedding: ids must be [n] and table [V, D], got {ids.shape} and {table.shape}")
    try:
        return _fp32.embedding(ids, table, np.empty((ids.shape[0], table.shape[1]), np.float32))
    except IndexError as exc:
        raise Declined(f"{exc} (the reference wraps a negative id, or raises)") from None


# ---- row ops: [..., D] viewed as [rows, D] ---------------------------------------------------------
def layer_norm(x, weight, bias, eps):  # [..., D], [D], [D] -> [..., D]
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance)."""
    _take(x, "layer_norm: x", np.float32, min_ndim=1)
    D = x.shape[-1]
    _take(weight, "layer_norm: weight", np.float32)
    _take(bias, "layer_norm: bias", np.float32)
    if weight.shape != (D,) or bias.shape != (D,):
        raise Declined(f"layer_norm: weight {weight.shape} and bias {bias.shape} must both be ({D},)")
    if D == 0:
        raise Declined("layer_norm: D = 0 (the mean of nothing)")
    out = np.empty_like(x)
    if x.size:
        _fp32.layer_norm(x.reshape(-1, D), weight, bias, float(eps), out.reshape(-1, D))
    return out


def softmax(x):  # [..., L] -> [..., L]
    """y = exp(x - max x) / sum exp(x - max x) over the last axis."""
    _take(x, "softmax: x", np.float32, min_ndim=1)
    L = x.shape[-1]
    if L == 0:
        raise Declined("softmax: L = 0 (the max of nothing)")
    out = np.empty_like(x)
    if x.size:
        _fp32.softmax(x.reshape(-1, L), out.reshape(-1, L))
    return out


# ---- pointwise ops: any shape, viewed as [n] -------------------------------------------------------
def gelu(x):  # [...] -> [...]
    """y = x/2 * (1 + erf(x / sqrt 2)), the exact GELU."""
    _take(x, "gelu: x", np.float32)
    out = np.empty_like(x)
    _fp32.gelu(x.reshape(-1), out.reshape(-1))
    return out


def quantize_u8(x, scale, zero_point):  # f32 [...] -> u8 [...]
    """q = clip(rint(x / scale) + zero_point, 0, 255) in float32, half-even: bit-identical to fdbert.int8."""
    _take(x, "quantize_u8: x", np.float32)
    int8.check_qparams("quantize_u8", scale, zero_point)  # the reference's ValueError, not a decline
    out = np.empty(x.shape, np.uint8)
    _fp32.quantize_u8(x.reshape(-1), np.float32(scale), int(zero_point), out.reshape(-1))
    return out


def dequantize_u8(q, scale, zero_point):  # u8 [...] -> f32 [...]
    """x = (q - zero_point) * scale in float32: bit-identical to fdbert.int8."""
    _take(q, "dequantize_u8: q", np.uint8)
    int8.check_qparams("dequantize_u8", scale, zero_point)
    out = np.empty(q.shape, np.float32)
    _fp32.dequantize_u8(q.reshape(-1), np.float32(scale), int(zero_point), out.reshape(-1))
    return out


def _outlier_weight_t(lin):  # -> f32 [k_o, N], cached on the layer
    """The outlier weight transposed (one channel's weights contiguous over N), built once per layer."""
    w = lin.packed.get("native_outlier_t")
    if w is None or w[0] is not lin.outlier_weight:
        w = lin.packed["native_outlier_t"] = (lin.outlier_weight, np.ascontiguousarray(lin.outlier_weight.T))
    return w[1]


def add_outlier_product(y, x, qweight):  # f32 [M, N], f32 [M, K], QuantizedLinear -> f32 [M, N]
    """y + x[:, outliers] @ outlier_weight.T summed in channel order: bit-identical to the reference."""
    if _fp32 is None:
        raise Declined(_FP32_MISSING)
    _take(y, "add_outlier_product: y", np.float32)
    _take(x, "add_outlier_product: x", np.float32)
    out = np.array(y, np.float32, order="C")
    _fp32.add_outlier_product(np.ascontiguousarray(x), qweight.outliers, _outlier_weight_t(qweight), out)
    return out


# ---- attention ----------------------------------------------------------------------------------------
def _attention_checked(name, q, k, v, cu_seqlens_q, cu_seqlens_k, gqa=False):
    """Decline the layouts the attention kernels cannot take (the reference then defines what
    happens); ``gqa``: k and v may have Hkv heads, Hkv dividing q's H. The offsets and the empty
    sequences are checked by the kernel wrapper in C (:func:`_run_attention`)."""
    for arg, a in (("q", q), ("k", k), ("v", v)):
        _take(a, f"{name}: {arg}", np.float32)
        if a.ndim != 3:
            raise Declined(f"{name}: {arg} must be [n, H, Dh], got shape {a.shape}")
    nq, H, Dh = q.shape
    Hkv = k.shape[1] if gqa and k.shape[1] and H % k.shape[1] == 0 else H
    if k.shape[1:] != (Hkv, Dh) or v.shape != k.shape:
        heads = f"Hkv dividing {H}" if gqa else H
        raise Declined(f"{name}: k {k.shape} and v {v.shape} must both be [nk, {heads}, {Dh}]")
    if Dh == 0:
        raise Declined(f"{name}: Dh = 0")
    for arg, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        _take(cu, f"{name}: {arg}", np.int32)
        if cu.ndim != 1 or cu.shape[0] < 1:
            raise Declined(f"{name}: {arg} must be [B+1], got shape {cu.shape}")
    if cu_seqlens_k.shape != cu_seqlens_q.shape:
        raise Declined(f"{name}: cu_seqlens_q {cu_seqlens_q.shape} and cu_seqlens_k "
                       f"{cu_seqlens_k.shape} differ in B")


def _run_attention(kernel, name, q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale):
    """out = kernel(...) on a zeroed out (rows outside every sequence stay 0, as in the reference).
    The wrapper's offset checks (non-decreasing within [0, n]; no query without a key: Lk = 0 < Lq,
    or causal with Lk < Lq) raise OffsetsError before any work, which becomes Declined. They run in
    C: the same checks in NumPy took ~40 us of a batch-1 decode step's ~100 us attention call."""
    out = np.zeros_like(q)
    try:
        kernel(q, k, v, cu_seqlens_q, cu_seqlens_k, out, causal=bool(causal),
               scale=None if scale is None else float(np.float32(scale)))
    except _fp32.OffsetsError as e:
        raise Declined(f"{name}: {e}") from None
    return out


def attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None):
    """softmax(q k^T * scale [+ causal mask aligned at the end]) v within each packed sequence.

    q f32 [nq, H, Dh]; k, v f32 [nk, H, Dh]; cu_seqlens_q, cu_seqlens_k int32 [B+1] -> f32 [nq, H, Dh].
    Declines when a query would see no key (Lk = 0 < Lq, or causal with Lk < Lq): the reference then
    defines what happens.
    """
    _attention_checked("attention", q, k, v, cu_seqlens_q, cu_seqlens_k)
    return _run_attention(_fp32.attention, "attention", q, k, v, cu_seqlens_q, cu_seqlens_k, causal, scale)


def attention_int8(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None):
    """:func:`attention` with INT8 q k^T and P v (fdbert/reference/attention_int8.py): the same
    arguments and declines; ValueError, as the reference, for a NaN or inf in q, k or v."""
    _attention_checked("attention_int8", q, k, v, cu_seqlens_q, cu_seqlens_k)
    return _run_attention(_fp32.attention_int8, "attention_int8", q, k, v, cu_seqlens_q, cu_seqlens_k,
                          causal, scale)


# ---- INT8 GEMMs ----------------------------------------------------------------------------------------
def _packed(qweight):  # QuantizedLinear -> dense packed s8 array or _qgemm.PackedBSR
    """The kernel layout of ``qweight``'s codes, built once and cached in ``qweight.packed["native"]``."""
    if _qgemm is None:
        raise Declined(_QGEMM_MISSING)
    p = qweight.packed.get("native")
    if p is not None:
        return p
    if qweight.sparse:
        w = qweight.weight
        if tuple(w.blocksize) != (1, 4):
            raise Declined(f"qlinear: blocksize {tuple(w.blocksize)}; the native SpMM takes (1, 4)")
        p = _qgemm.pack_bsr(w.data, w.indices, w.indptr, w.shape)
    else:
        _take(qweight.weight, "qlinear: weight", np.int8)
        p, _ = _qgemm.pack_dense(qweight.weight)
    _request_amx_once()
    qweight.packed["native"] = p
    return p


def _kernel_weight(qweight, packed, M):  # -> (packed weight the kernel reads, sparse?)
    """``packed`` (from _packed) and whether it goes to the SpMM, or, for a sparse weight the AMX
    GEMM should run at M rows, its dense packing (_dense_on_amx) for the dense GEMM."""
    if qweight.sparse:
        dense = _dense_on_amx(qweight, M)
        if dense is not None:
            return dense, False
    return packed, qweight.sparse


def _dense_on_amx(qweight, M):  # -> dense packed s8 array | None
    """The dense packing of a block-sparse weight's codes when the AMX GEMM should run it, else None.

    On a CPU with AMX-INT8 the dense tile GEMM does the skipped zeros as well and still beats the
    VNNI SpMM wherever it runs at all (_qgemm.amx_auto: M >= AMX_AUTO_MIN_M rows): `tdpbusd` does
    ~8x the MACs of `vpdpbusd` per core and 80% sparsity saves 5x, although the dense codes are
    2.5x the SpMM's bytes to stream (figures: docs/benchmarks.md, AMX). The accumulators are the
    same integers (the skipped blocks are zeros) and
    both paths share the avx512vnni epilogue, so the outputs are the same bits. The dense codes
    (N x K bytes) are packed the first time and cached in ``qweight.packed["native-dense"]``."""
    N, K = qweight.shape
    if not _qgemm.amx_auto(M, N, K):
        return None
    p = qweight.packed.get("native-dense")
    if p is None:
        p, _ = _qgemm.pack_dense(qweight.dense_codes())
        qweight.packed["native-dense"] = p
    return p


_AMX_REQUESTED = False


def _request_amx_once():
    """Ask Linux once for the AMX tile-data permission, so the dense GEMM's "amx" path (isa="auto"
    picks it by shape: _qgemm.amx_auto) may run; a no-op without AMX, and FDBERT_DISABLE_CPU_FEATURES
    still turns it off."""
    global _AMX_REQUESTED
    if not _AMX_REQUESTED:
        _AMX_REQUESTED = True
        import fdbert_native
        fdbert_native.request_amx_permission()


def _check_qlinear_input(x_u8, qweight):  # -> (M, N)
    _take(x_u8, "qlinear: x", np.uint8)
    N, K = qweight.shape
    if x_u8.ndim != 2 or x_u8.shape[1] != K:
        raise Declined(f"qlinear: x must be [M, {K}], got shape {x_u8.shape}")
    return x_u8.shape[0], N


def qlinear_s32(x_u8, qweight):  # u8 [M, K], QuantizedLinear [N, K] -> s32 [M, N]
    """acc[m, n] = sum_k x[m, k] * wq[n, k], exact in int32 (bit-identical to the reference)."""
    M, N = _check_qlinear_input(x_u8, qweight)
    p, sparse = _kernel_weight(qweight, _packed(qweight), M)
    return (_qgemm.qspmm_s32 if sparse else _qgemm.qgemm_s32)(x_u8, p, np.empty((M, N), np.int32))


def qlinear(x_u8, qweight, *, gelu=False, residual=None, out_scale=None,
            out_zero_point=None):  # u8 [M, K] -> f32 | u8 [M, N]
    """y = float32(acc - comp) * mult + bias; [GELU]; [+ residual]; [requantize to u8], fused."""
    M, N = _check_qlinear_input(x_u8, qweight)
    if residual is not None:
        _take(residual, "qlinear: residual", np.float32)
        if residual.shape != (M, N):
            raise Declined(f"qlinear: residual must be [{M}, {N}], got shape {residual.shape}")
    out_qparams = None
    if out_scale is not None:
        zp = 0 if out_zero_point is None else out_zero_point
        int8.check_qparams("qlinear: output", out_scale, zp)
        out_qparams = (float(np.float32(out_scale)), float(zp))
    return _qlin(x_u8, qweight, _packed(qweight), 0, gelu=bool(gelu), residual=residual,
                 out_qparams=out_qparams)


# ---- the fused INT8 encoder block ----------------------------------------------------------------------

_QLINEARS = ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2")


def _int8_block_plan(layer, config):  # -> the six (layer, packed) pairs; raises Declined
    """Check once per layer object that the fused block can run it; cache the packed weights."""
    lins = [getattr(layer, name, None) for name in _QLINEARS]
    key = (*map(id, lins), id(layer.sa_layer_norm), id(layer.output_layer_norm))
    cached = getattr(layer, "_native_block", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    if not all(isinstance(lin, QuantizedLinear) for lin in lins):
        raise Declined("encoder_layer: a float layer (the reference block composes the native ops)")
    q = lins[0]
    if any((o.x_scale, o.x_zero_point) != (q.x_scale, q.x_zero_point) for o in lins[1:3]):
        raise Declined("encoder_layer: q_lin, k_lin and v_lin have different input quantization")
    D, F = config.d_model, config.d_ffn
    shapes = [(D, D)] * 4 + [(F, D), (D, F)]
    for name, lin, shape in zip(_QLINEARS, lins, shapes):
        if lin.shape != shape:
            raise Declined(f"encoder_layer: {name} has shape {lin.shape}, expected {shape}")
    for ln in (layer.sa_layer_norm, layer.output_layer_norm):
        for a in (ln.weight, ln.bias):
            _take(a, "encoder_layer: LayerNorm parameter", np.float32)
            if a.shape != (D,):
                raise Declined(f"encoder_layer: LayerNorm parameter of shape {a.shape}, expected ({D},)")
    plan = [(lin, _packed(lin)) for lin in lins]
    layer._native_block = (key, plan)   # valid while the layer holds these same objects
    return plan


#: The fused block runs Q, K and V as one GEMM (_fused_qkv) up to this many tokens: one pass over x
#: and one parallel region pay off while the GEMM is short; at ~1,024 tokens one GEMM is no faster
#: than three and the whole forward slowed (docs/kernels.md; figures: docs/benchmarks.md).
QKV_FUSED_MAX_TOKENS = 512


def _fused_qkv(layer, plan):  # -> (packed, comp, mult, bias) of W_qkv [3D, D]
    """Q, K and V as one weight (their dense codes stacked: [3D, D]) for one dense GEMM, built once
    per layer and cached on it. One GEMM instead of three: one pass over x and one parallel region
    (QKV_FUSED_MAX_TOKENS). Each output channel has its own epilogue constants, so every channel
    gets the bits its own GEMM gives; float outlier channels are added afterwards, per projection,
    as after three GEMMs."""
    (ql, _), (kl, _), (vl, _) = plan[:3]
    key = tuple(map(id, (ql, kl, vl)))
    cached = getattr(layer, "_native_qkv", None)
    if cached is None or cached[0] != key:
        lins = (ql, kl, vl)
        packed, _ = _qgemm.pack_dense(np.concatenate([lin.dense_codes() for lin in lins]))
        cat = [np.ascontiguousarray(np.concatenate([getattr(lin, f) for lin in lins]))
               for f in ("comp", "mult", "bias")]
        cached = layer._native_qkv = (key, (packed, *cat))
    return cached[1]


def _qlin(x_u8, lin, packed, nt, *, gelu=False, residual=None, out_qparams=None, outliers_of=None):
    """One quantized linear on the kernel that runs it fastest: the SpMM, or for a sparse weight
    with enough rows the dense AMX GEMM (_dense_on_amx); f32 out, or u8 with out_qparams.
    outliers_of: the float input x [M, K] whose outlier channels' share the epilogue adds before
    GELU (the reference's add_outlier_product, then GELU)."""
    M, N = x_u8.shape[0], lin.shape[0]
    ep = (lin.comp, lin.mult, lin.bias)
    packed, sparse = _kernel_weight(lin, packed, M)
    outl = (None if outliers_of is None or not len(lin.outliers) else
            (outliers_of, lin.outliers, _outlier_weight_t(lin)))
    if out_qparams is None:
        fn = _qgemm.qspmm_f32 if sparse else _qgemm.qgemm_f32
        return fn(x_u8, packed, *ep, np.empty((M, N), np.float32), residual=residual, gelu=gelu,
                  num_threads=nt, outliers=outl)
    fn = _qgemm.qspmm_u8 if sparse else _qgemm.qgemm_u8
    return fn(x_u8, packed, *ep, *out_qparams, np.empty((M, N), np.uint8), residual=residual,
              gelu=gelu, num_threads=nt, outliers=outl)


def encoder_layer(x, cu_seqlens, layer, config):  # f32 [n, D] -> [n, D]
    """The INT8 encoder block of :func:`fdbert.blocks.encoder.encoder_layer_int8`, fused.

    The same native kernels in the same order as the reference block composed from dispatched ops
    (so the same bits), called directly: no dispatch, no per-op checks after the first call on a
    layer (its plan is cached); Q, K and V in one call (one SpMM for sparse weights the VNNI path
    runs, else one stacked GEMM up to QKV_FUSED_MAX_TOKENS tokens); each LayerNorm that feeds a
    linear quantizes in the same pass, and attention writes the O projection's u8 input. Float
    outlier channels are added exactly where the reference block adds them, in the order of the
    reference's add_outlier_product: FFN1's share inside its GEMM epilogue, before GELU (so FFN1
    still emits u8; FFN2's share takes gelu(h) on its few channels from a small GEMM of FFN1's rows
    there), the others in place after their GEMM. Declines float layers (the reference
    block then composes the native ops), Q/K/V with different input quantization (the reference
    raises its error) and shapes it does not expect.
    """
    if _qgemm is None:
        raise Declined(_QGEMM_MISSING)
    plan = _int8_block_plan(layer, config)
    _take(x, "encoder_layer: x", np.float32)
    n, D = x.shape if x.ndim == 2 else (None, None)
    if D != config.d_model:
        raise Declined(f"encoder_layer: x must be [n, {config.d_model}], got shape {x.shape}")
    _take(cu_seqlens, "encoder_layer: cu_seqlens", np.int32)
    if (cu_seqlens.ndim != 1 or cu_seqlens.shape[0] < 1 or
            (cu_seqlens.shape[0] > 1 and (cu_seqlens[0] != 0 or cu_seqlens[-1] != n or
                                          np.any(np.diff(cu_seqlens) < 0)))):
        raise Declined("encoder_layer: cu_seqlens must run non-decreasing from 0 to n")
    H, Dh, eps = config.n_heads, config.head_dim, float(config.layer_norm_eps)
    if H * Dh != D or Dh == 0:
        raise Declined(f"encoder_layer: H {H} x Dh {Dh} != D {D}")
    (ql, pq), (kl, pk), (vl, pv), (ol, po), (l1, p1), (l2, p2) = plan
    nt = 0   # every kernel: the project-wide thread count

    def quantize(a, lin):
        out = np.empty(a.shape, np.uint8)
        _fp32.quantize_u8(a.reshape(-1), lin.x_scale, lin.x_zero_point, out.reshape(-1),
                          num_threads=nt)
        return out

    def layer_norm(a, ln):
        out = np.empty_like(a)
        _fp32.layer_norm(a, ln.weight, ln.bias, eps, out, num_threads=nt)
        return out

    def layer_norm_quantize(a, ln, lin):   # (layer_norm(a), quantize(layer_norm(a), lin)), one pass
        return _fp32.layer_norm_quantize_u8(a, ln.weight, ln.bias, eps, np.empty_like(a),
                                            lin.x_scale, lin.x_zero_point,
                                            np.empty(a.shape, np.uint8), num_threads=nt)

    def plus_outliers(y, a, lin):   # add_outlier_product(y, a, lin), in place: y is this block's own
        if len(lin.outliers):
            _fp32.add_outlier_product(a, lin.outliers, _outlier_weight_t(lin), y, num_threads=nt)
        return y

    xq = quantize(x, ql)
    all_sparse = ql.sparse and kl.sparse and vl.sparse
    spmm = all_sparse and _dense_on_amx(ql, n) is None
    fused = _fused_qkv(layer, plan) if not spmm and n <= QKV_FUSED_MAX_TOKENS else None
    if fused is not None:   # one dense GEMM [n, D] x [D, 3D]; q, k, v are row-strided views
        qkv = np.empty((n, 3, H, Dh), np.float32)
        _qgemm.qgemm_f32(xq, *fused, qkv.reshape(n, 3 * D), num_threads=nt)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        if any(len(lin.outliers) for lin in (ql, kl, vl)):   # then + each one's float share
            q, k, v = (plus_outliers(y.reshape(n, D), x, lin).reshape(n, H, Dh)
                       for y, lin in zip((q, k, v), (ql, kl, vl)))
    else:
        if spmm:   # the SpMM: one repack of xq, one parallel region
            qkv = [np.empty((n, D), np.float32) for _ in range(3)]
            _qgemm.qspmm_f32_multi(xq, (pq, pk, pv), (ql.comp, kl.comp, vl.comp),
                                   (ql.mult, kl.mult, vl.mult), (ql.bias, kl.bias, vl.bias), qkv,
                                   num_threads=nt)
        else:
            qkv = [_qlin(xq, lin, p, nt) for lin, p in ((ql, pq), (kl, pk), (vl, pv))]
        q, k, v = (plus_outliers(y, x, lin).reshape(n, H, Dh) for y, lin in zip(qkv, (ql, kl, vl)))
    # cu_seqlens runs from 0 to n: every row of the attention output is written
    attention = _fp32.attention_int8 if layer.attention == "int8" else _fp32.attention
    if not len(ol.outliers):   # attention emits the O projection's u8 input directly
        aq = np.empty((n, H, Dh), np.uint8)
        attention(q, k, v, cu_seqlens, cu_seqlens, aq, num_threads=nt,
                  quantize=(ol.x_scale, ol.x_zero_point))
        y = _qlin(aq.reshape(n, D), ol, po, nt, residual=x)
    else:
        a = np.empty((n, H, Dh), np.float32)
        attention(q, k, v, cu_seqlens, cu_seqlens, a, num_threads=nt)
        a = a.reshape(n, D)
        y = plus_outliers(_qlin(quantize(a, ol), ol, po, nt, residual=x), a, ol)
    x, xq = layer_norm_quantize(y, layer.sa_layer_norm, l1)
    # FFN1 + its outlier share (in the epilogue, before GELU) + GELU + requantize, fused: FFN1 emits u8
    hq = _qlin(xq, l1, p1, nt, gelu=True, out_qparams=(float(l2.x_scale), float(l2.x_zero_point)),
               outliers_of=x)
    y = _qlin(hq, l2, p2, nt, residual=x)
    if len(l2.outliers):   # FFN2's float share needs gelu(h) on its outlier channels only: FFN1's
        sub, g = _rows_of(l1, l2.outliers), np.empty((n, len(l2.outliers)), np.float32)  # rows there
        _qgemm.qgemm_f32(xq, *sub[:4], g, num_threads=nt, outliers=(x, l1.outliers, sub[4])
                         if len(l1.outliers) else None)
        _fp32.gelu(g.reshape(-1), g.reshape(-1), num_threads=nt)
        _fp32.add_outlier_product(g, np.arange(len(l2.outliers), dtype=np.int32),
                                  _outlier_weight_t(l2), y, num_threads=nt)
    return layer_norm(y, layer.output_layer_norm)


def _rows_of(lin, rows):  # -> (packed, comp, mult, bias, outlier weight_t) of lin's output channels rows
    """The output channels ``rows`` of ``lin`` as a small dense GEMM, cached on lin: each channel
    keeps its codes and epilogue constants, so it gets the bits it gets in the whole GEMM."""
    key = ("native_rows", tuple(int(r) for r in rows))
    got = lin.packed.get(key)
    if got is None:
        packed, _ = _qgemm.pack_dense(np.ascontiguousarray(lin.dense_codes()[rows]))
        got = lin.packed[key] = (packed, *(np.ascontiguousarray(getattr(lin, f)[rows])
                                           for f in ("comp", "mult", "bias")),
                                 np.ascontiguousarray(lin.outlier_weight[rows].T))
    return got


# ---- float32 linear (fdbert_native._sgemm) -------------------------------------------------------------
try:
    from fdbert_native import _sgemm
except ImportError as _e:  # linear declines; NumPy's BLAS serves it
    _sgemm = None
    _SGEMM_MISSING = f"fdbert_native._sgemm did not import ({_e})"


def _linear_path():  # -> "avx512" | "avx2" | "reference"
    """The path linear runs now. The generic C path (a libm fmaf per multiply-add, kept as the readable
    definition and for tests) is far slower than NumPy's BLAS, so on a CPU without AVX2 + FMA linear
    declines."""
    if _sgemm is None:
        return "reference"
    isa = _sgemm.best_isa()
    return "reference" if isa == "generic" else isa


def linear(x, weight, bias=None):  # f32 [M, K], [N, K], [N] | None -> f32 [M, N]
    """y = x @ W.T + b: one float32 fused multiply-add chain per output over k in order, then + b.

    Within K * 2^-24 * sum_k |x_k w_k| (plus the bias rounding) of the exact product; bit-identical for
    every thread count and ISA path, and a row's result does not depend on the other rows. W is packed
    on the fly, one KC x 32 slice at a time inside the kernel (csrc/sgemm.h), so nothing is cached.
    """
    if _sgemm is None:
        raise Declined(_SGEMM_MISSING)
    if _linear_path() == "reference":
        raise Declined("linear: no AVX2 + FMA; NumPy's BLAS beats the generic C path")
    _take(x, "linear: x", np.float32)
    _take(weight, "linear: weight", np.float32)
    if x.ndim != 2 or weight.ndim != 2 or x.shape[1] != weight.shape[1]:
        raise Declined(f"linear: x must be [M, K] and weight [N, K], got {x.shape} and {weight.shape}")
    N = weight.shape[0]
    if bias is not None:
        _take(bias, "linear: bias", np.float32)
        if bias.shape != (N,):
            raise Declined(f"linear: bias must be [{N}], got shape {bias.shape}")
    out = np.empty((x.shape[0], N), np.float32)
    packed = _packed_weight(weight) if x.shape[0] <= PACKED_MAX_M else _packed_weight(weight, create=False)
    if packed is not None:
        return _sgemm.linear_packed(x, packed, bias, out)
    return _sgemm.linear(x, weight, bias, out)


#: Rows up to which linear packs a weight once and keeps the copy (a decoder's decode steps, up to 64
#: sequences): there the per-call packing of W^T panels is most of sgemm's work (at M = 1), or a third
#: of it (M = 32, AVX2). The copy costs N K floats per weight, kept while the weight lives; more rows
#: use it when it exists (a prefill), else pack per call. The bits are the same (figures:
#: docs/benchmarks.md, decoder).
PACKED_MAX_M = 64
_PACKED: dict = {}   # id(weight) -> (weakref to weight, _sgemm.PackedWeight)


def _packed_weight(weight, create=True):
    import weakref
    entry = _PACKED.get(id(weight))
    if entry is not None and entry[0]() is weight:
        return entry[1]
    if not create:
        return None
    key = id(weight)
    packed = _sgemm.PackedWeight(weight)
    _PACKED[key] = (weakref.ref(weight, lambda _ref, key=key: _PACKED.pop(key, None)), packed)
    return packed


# ---- decoder ops (fdbert_native._decoder: csrc/decoder_ops.c) -------------------------------------------
try:
    from fdbert_native import _decoder
except ImportError as _e:  # rms_norm, rope, silu_mul, gelu_tanh decline
    _decoder = None
    _DECODER_MISSING = f"fdbert_native._decoder did not import ({_e})"

#: The ops of fdbert_native._decoder.
DECODER_OPS = ("rms_norm", "rope", "silu_mul", "gelu_tanh")


def _take_decoder(a, name, *, min_ndim=0):
    if _decoder is None:
        raise Declined(_DECODER_MISSING)
    return _take(a, name, np.float32, min_ndim=min_ndim)


def rms_norm(x, weight, eps):  # [..., D], [D] -> [..., D]
    """y = x / sqrt(mean(x^2) + eps) * weight over the last axis."""
    _take_decoder(x, "rms_norm: x", min_ndim=1)
    D = x.shape[-1]
    _take_decoder(weight, "rms_norm: weight")
    if weight.shape != (D,) or D == 0:
        raise Declined(f"rms_norm: weight {weight.shape} must be ({D},), D > 0")
    out = np.empty_like(x)
    if x.size:
        _decoder.rms_norm(x.reshape(-1, D), weight, float(eps), out.reshape(-1, D))
    return out


def rope(x, cos, sin):  # [n, H, Dh], [n, Dh/2] x2 -> [n, H, Dh]
    """y = (x1 cos - x2 sin, x2 cos + x1 sin) per head: the same bits as the reference."""
    _take_decoder(x, "rope: x")
    _take_decoder(cos, "rope: cos")
    _take_decoder(sin, "rope: sin")
    if x.ndim != 3 or x.shape[2] % 2 or cos.shape != (x.shape[0], x.shape[2] // 2) or sin.shape != cos.shape:
        raise Declined(f"rope: x must be [n, H, Dh] with Dh even and cos, sin [n, Dh/2]; got {x.shape}, "
                       f"{cos.shape}, {sin.shape}")
    return _decoder.rope(x, cos, sin, np.empty_like(x))


def silu_mul(gate, up):  # [...] x2 -> [...]
    """y = gate / (1 + exp(-gate)) * up."""
    _take_decoder(gate, "silu_mul: gate")
    _take_decoder(up, "silu_mul: up")
    if gate.shape != up.shape:
        raise Declined(f"silu_mul: gate {gate.shape} and up {up.shape} differ")
    out = np.empty_like(gate)
    _decoder.silu_mul(gate.reshape(-1), up.reshape(-1), out.reshape(-1))
    return out


def gelu_tanh(x):  # [...] -> [...]
    """y = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed as x / (1 + exp(-2 sqrt(2/pi) (...)))."""
    _take_decoder(x, "gelu_tanh: x")
    out = np.empty_like(x)
    _decoder.gelu_tanh(x.reshape(-1), out.reshape(-1))
    return out


def decoder_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, scale=None):
    """Causal attention over the cache with grouped-query heads, the mask aligned at the end: the float32
    attention kernel reads kv head h // (H / Hkv) for query head h in place (no copy of k and v)."""
    _attention_checked("decoder_attention", q, k, v, cu_seqlens_q, cu_seqlens_k, gqa=True)
    return _run_attention(_fp32.attention, "decoder_attention", q, k, v, cu_seqlens_q, cu_seqlens_k,
                          True, scale)


def prepadded_attention(q, k, v, n_pad, *, scale=None):  # [B, Tq, H, Dh], [B, Tk, Hkv, Dh] x2, [B] -> [B, Tq, H, Dh]
    """EET's pre-padded causal attention (reference: fdbert/blocks/prepadded_attention.py) on the packed
    float32 attention kernel, one call for the batch, grouped-query heads and the cache read in place.

    Row b Tq + i of q is query i of sequence b, and key j of sequence b is row b C + j of k's buffer,
    where C >= Tk is the rows between two sequences' starts: Tk for a contiguous k, the capacity of the
    cache when k is its first Tk columns (PrePaddedKVCache). Sequence b is three segments: its pad
    queries i < i0 = max(0, n_pad[b] - (Tk - Tq)) over its pad keys, whose output is then set to 0 (a
    pad query sees no key); its other queries over its real keys n_pad[b] <= j < Tk, where the
    kernel's causal mask (aligned at the end) lets query i see keys j <= i + Tk - Tq, as the reference;
    and the unused rows Tk <= j < C, with no queries. So no real query reads a pad key, and pads cost
    what EET's scheme costs.
    """
    for arg, a in (("q", q), ("k", k), ("v", v)):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 4:
            raise Declined(f"prepadded_attention: {arg} must be a 4-d float32 array")
    _take(q, "prepadded_attention: q", np.float32)
    B, Tq, H, Dh = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    C = _sequence_stride(k, v)
    n_pad = np.asarray(n_pad, np.int64)
    i0 = np.maximum(0, n_pad - (Tk - Tq))                            # [B] pad queries of each sequence
    rows_q, rows_k = np.arange(B) * Tq, np.arange(B) * C
    cu_q = np.stack([rows_q, rows_q + i0, rows_q + Tq], axis=1).reshape(-1)[:-1]
    cu_k = np.stack([rows_k, rows_k + n_pad, rows_k + Tk], axis=1).reshape(-1)[:-1]
    #      [3B - 1]: sequence b's pad, real and unused rows (the last sequence has no unused rows)
    n_rows = (B - 1) * C + Tk if B else 0
    kf, vf = (np.lib.stride_tricks.as_strided(a, (n_rows, Hkv, Dh), a.strides[1:]) for a in (k, v))
    out = _run_attention(_fp32.attention, "prepadded_attention", q.reshape(B * Tq, H, Dh), kf, vf,
                         np.append(cu_q, B * Tq).astype(np.int32), np.append(cu_k, n_rows).astype(np.int32),
                         True, scale)
    out = out.reshape(B, Tq, H, Dh)
    out[np.arange(Tq)[None, :] < i0[:, None]] = 0.0                  # pad queries: 0, as in the reference
    return out


def _sequence_stride(k, v) -> int:  # -> C: rows between the starts of two sequences' keys
    """k, v [B, Tk, Hkv, Dh] with C-contiguous rows [Tk, Hkv, Dh] and sequences C >= Tk rows apart (a
    contiguous array, or the first Tk columns of one); Declined otherwise."""
    B, Tk, Hkv, Dh = k.shape
    row = Hkv * Dh * 4
    if v.shape == k.shape and k.size == 0:   # NumPy gives an empty array any strides
        return Tk
    if (v.shape != k.shape or k.strides[1:] != (row, Dh * 4, 4) or v.strides != k.strides
            or (B > 1 and (k.strides[0] % row or k.strides[0] // row < Tk)) or row == 0):
        raise Declined(f"prepadded_attention: k and v must be [B, Tk, Hkv, Dh] with C-contiguous rows, "
                       f"got shapes {k.shape}, {v.shape} and strides {k.strides}, {v.strides}")
    return k.strides[0] // row if B > 1 else Tk
