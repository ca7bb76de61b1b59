# distutils: sources = fdbert_native/csrc/fp32_ops.c fdbert_native/csrc/attention.c fdbert_native/csrc/attention_int8.c fdbert_native/csrc/peak_probes.c
# distutils: depends = fdbert_native/csrc/fp32_ops.h fdbert_native/csrc/attention.h fdbert_native/csrc/attention_pairs.h fdbert_native/csrc/fp32_vecmath.h fdbert_native/csrc/peak_probes.h
# distutils: libraries = m
"""Float32 kernels: layer norm, softmax, GELU, attention, and the INT8 quantize / dequantize.

Thin wrappers over csrc/fp32_ops.{c,h} and csrc/attention.{c,h}. Each checks dtype, shape and
C-contiguity at the edge (TypeError / ValueError naming what was expected and found), then calls the
C kernel without the GIL, writing into ``out``. The backend namespace with the fdbert.ops signatures
is fdbert_native/ops.py; these are the layer it and the tests call.

``isa`` is "auto" (the best path the CPU features allow now, after
fdbert_native.set_disabled_features) or one of ISAS, so tests can force each path; forcing a path the
CPU cannot run raises ValueError. ``num_threads`` <= 0 means fdbert_native.get_num_threads().
"""
import numpy as np

from fdbert_native._checks import IsaPaths, time_peak as _time_peak

cimport numpy as cnp

include "_fastcheck.pxi"
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.math cimport sqrt

from fdbert_native._cpu cimport num_threads

cnp.import_array()

cdef extern from "fp32_ops.h" nogil:
    void fp_layer_norm(const float *x, int64_t n, int64_t D, const float *w, const float *b,
                       float eps, float *y, int isa, int nthreads)
    void fp_softmax(const float *x, int64_t rows, int64_t L, float *y, int isa, int nthreads)
    void fp_gelu(const float *x, int64_t n, float *y, int isa, int nthreads)
    void fp_erf(const float *x, int64_t n, float *y, int isa, int nthreads)
    void fp_exp(const float *x, int64_t n, float *y, int isa, int nthreads)
    void fp_layer_norm_u8(const float *x, int64_t n, int64_t D, const float *w, const float *b,
                          float eps, float *y, float scale, float zp, uint8_t *q, int isa,
                          int nthreads)
    void fp_quantize_u8(const float *x, int64_t n, float scale, float zp, uint8_t *q, int isa,
                        int nthreads)
    void fp_dequantize_u8(const uint8_t *q, int64_t n, float scale, float zp, float *x, int isa,
                          int nthreads)
    int fp_embedding(const int64_t *ids, int64_t n, const float *table, int64_t V, int64_t D,
                     float *out, int nthreads)
    void fp_add_outlier_product(const float *x, int64_t ldx, const int32_t *o, int64_t ko,
                                const float *w, float *y, int64_t ldy, int64_t M, int64_t N, int isa,
                                int nthreads)

cdef extern from "peak_probes.h" nogil:
    int32_t fdb_peak_fma_loop(int64_t iters)

cdef extern from "attention.h" nogil:
    int FP_OK, FP_ENOMEM, FP_ENOKEYS, FP_ENONFINITE, FP_ETOOLONG, FP_EOVERFLOW
    int FP_I8_MAX_KEYS
    int fp_attention_int8(const float *q, const float *k, const float *v, const int32_t *cu_q,
                          const int32_t *cu_k, int64_t B, int64_t H, int64_t Dh, int causal,
                          float scale, const int64_t *rs, float *out, uint8_t *outq,
                          const fp_attn_u8 *qp, int isa, int nthreads)
    int fp_attention(const float *q, const float *k, const float *v, const int32_t *cu_q,
                     const int32_t *cu_k, int64_t B, int64_t H, int64_t Hkv, int64_t Dh, int causal,
                     float scale, const int64_t *rs, float *out, uint8_t *outq, const fp_attn_u8 *qp,
                     int isa, int nthreads)
    ctypedef struct fp_attn_u8:
        float scale
        float zp

#: ISA paths, lowest to highest (the one table: csrc/cpu_features.h).
ISAS = ("generic", "avx2", "avx512")
_PATHS = IsaPaths(ISAS)
isa_supported, supported_isas, best_isa = _PATHS.isa_supported, _PATHS.supported_isas, _PATHS.best_isa

#: ISA paths of attention_int8, lowest to highest.
INT8_ATTENTION_ISAS = ("generic", "avx512vnni")
INT8_ATTENTION_PATHS = IsaPaths(INT8_ATTENTION_ISAS)


include "_paths.pxi"


# ------------------------------------------------------------------------------ row ops

def layer_norm(x, weight, bias, eps, out, isa="auto", num_threads=0):
    """out = (x - mean) / sqrt(var + eps) * weight + bias per row: x, out f32 [n, D]; weight, bias f32 [D]."""
    _check(x, "x", np.float32, (None, None))
    cdef int64_t n = x.shape[0], D = x.shape[1]
    _check(weight, "weight", np.float32, (D,))
    _check(bias, "bias", np.float32, (D,))
    _check(out, "out", np.float32, (n, D))
    cdef int i = _isa(isa), nt = _threads(num_threads)
    cdef float e = eps
    cdef const float *px = <const float *>_ptr(x)
    cdef const float *pw = <const float *>_ptr(weight)
    cdef const float *pb = <const float *>_ptr(bias)
    cdef float *po = <float *>_ptr(out)
    with nogil:
        fp_layer_norm(px, n, D, pw, pb, e, po, i, nt)
    return out


def layer_norm_quantize_u8(x, weight, bias, eps, out, scale, zero_point, out_u8, isa="auto",
                           num_threads=0):
    """layer_norm(x, weight, bias, eps, out), then quantize_u8(out, scale, zero_point, out_u8), in
    one pass over the rows (the same bits as the two calls): out f32 and out_u8 u8 [n, D]."""
    _check(x, "x", np.float32, (None, None))
    cdef int64_t n = x.shape[0], D = x.shape[1]
    _check(weight, "weight", np.float32, (D,))
    _check(bias, "bias", np.float32, (D,))
    _check(out, "out", np.float32, (n, D))
    _check(out_u8, "out_u8", np.uint8, (n, D))
    cdef float s = _qscale(scale), z = _qzero_point(zero_point), e = eps
    cdef int i = _isa(isa), nt = _threads(num_threads)
    cdef const float *px = <const float *>_ptr(x)
    cdef const float *pw = <const float *>_ptr(weight)
    cdef const float *pb = <const float *>_ptr(bias)
    cdef float *po = <float *>_ptr(out)
    cdef uint8_t *pq = <uint8_t *>_ptr(out_u8)
    with nogil:
        fp_layer_norm_u8(px, n, D, pw, pb, e, po, s, z, pq, i, nt)
    return out, out_u8


def softmax(x, out, isa="auto", num_threads=0):
    """out = exp(x - max) / sum exp(x - max) per row: x, out f32 [rows, L], L >= 1."""
    _check(x, "x", np.float32, (None, None))
    cdef int64_t rows = x.shape[0], L = x.shape[1]
    if L < 1 and rows > 0:
        raise ValueError("softmax: rows must have L >= 1 entries")
    _check(out, "out", np.float32, (rows, L))
    cdef int i = _isa(isa), nt = _threads(num_threads)
    cdef const float *px = <const float *>_ptr(x)
    cdef float *po = <float *>_ptr(out)
    with nogil:
        fp_softmax(px, rows, L, po, i, nt)
    return out


# ------------------------------------------------------------------------------ pointwise ops


def gelu(x, out, isa="auto", num_threads=0):
    """out = (0.5 x) (1 + erf(x / sqrt 2)): x, out f32 [n]."""
    return _unary(fp_gelu, x, out, isa, num_threads)


def erf(x, out, isa="auto", num_threads=0):
    """out = erf(x): x, out f32 [n] (the erf inside gelu; a test hook)."""
    return _unary(fp_erf, x, out, isa, num_threads)


def exp(x, out, isa="auto", num_threads=0):
    """out = exp(x): x, out f32 [n] (the exp inside softmax; a test hook)."""
    return _unary(fp_exp, x, out, isa, num_threads)


def quantize_u8(x, scale, zero_point, out, isa="auto", num_threads=0):
    """out = u8(clip(rint(x / scale) + zero_point, 0, 255)) in float32: x f32 [n], out u8 [n].

    scale: a float32 value > 0 (the caller rounds it with np.float32 first); zero_point in [0, 255].
    """
    _check(x, "x", np.float32, (None,))
    cdef int64_t n = x.shape[0]
    _check(out, "out", np.uint8, (n,))
    cdef float s = _qscale(scale), z = _qzero_point(zero_point)
    cdef int i = _isa(isa), nt = _threads(num_threads)
    cdef const float *px = <const float *>_ptr(x)
    cdef uint8_t *po = <uint8_t *>_ptr(out)
    with nogil:
        fp_quantize_u8(px, n, s, z, po, i, nt)
    return out


def dequantize_u8(q, scale, zero_point, out, isa="auto", num_threads=0):
    """out = (float32(q) - zero_point) * scale: q u8 [n], out f32 [n]."""
    _check(q, "q", np.uint8, (None,))
    cdef int64_t n = q.shape[0]
    _check(out, "out", np.float32, (n,))
    cdef float s = scale, z = _qzero_point(zero_point)
    cdef int i = _isa(isa), nt = _threads(num_threads)
    cdef const uint8_t *pq = <const uint8_t *>_ptr(q)
    cdef float *po = <float *>_ptr(out)
    with nogil:
        fp_dequantize_u8(pq, n, s, z, po, i, nt)
    return out


def add_outlier_product(x, outliers, weight_t, y, isa="auto", num_threads=0):
    """y += p in place, p[m, n] = x[m, o_0] w[0, n], then p + x[m, o_j] w[j, n] for j = 1.. in order,
    each product and sum one float32 operation: x f32 [M, K] (the Linear's float input), outliers
    int32 [ko] (channels in [0, K)), weight_t f32 [ko, N] (the outlier weight transposed), y f32
    [M, N] whose rows may be strided (a view of a wider buffer: its elements contiguous, its rows
    not overlapping). Returns y."""
    _check(x, "x", np.float32, (None, None))
    cdef int64_t M = x.shape[0], K = x.shape[1]
    _check(outliers, "outliers", np.int32, (None,))
    cdef int64_t ko = outliers.shape[0]
    _check(weight_t, "weight_t", np.float32, (ko, None))
    cdef int64_t N = weight_t.shape[1]
    if not (isinstance(y, np.ndarray) and y.dtype == np.float32 and y.dtype.isnative and y.ndim == 2
            and y.shape == (M, N) and y.flags.writeable and y.flags.aligned
            and (M == 0 or N <= 1 or y.strides[1] == 4)
            and (M <= 1 or (y.strides[0] % 4 == 0 and y.strides[0] >= 4 * N))):
        raise ValueError(f"y must be a writeable float32 [{M}, {N}] array with contiguous rows, got "
                         f"{getattr(y, 'dtype', type(y))} {getattr(y, 'shape', '')} strides {getattr(y, 'strides', '')}")
    if ko and (int(outliers.min()) < 0 or int(outliers.max()) >= K):
        raise ValueError(f"outliers must be channels in [0, {K})")
    if M == 0 or N == 0 or ko == 0:
        return y
    cdef int64_t ldy = y.strides[0] // 4 if M > 1 else N
    cdef int i = _isa(isa), nt = _threads(num_threads)
    cdef const float *px = <const float *>_ptr(x)
    cdef const int32_t *po = <const int32_t *>_ptr(outliers)
    cdef const float *pw = <const float *>_ptr(weight_t)
    cdef cnp.ndarray ya = <cnp.ndarray>y
    cdef float *py = <float *>cnp.PyArray_DATA(ya)
    with nogil:
        fp_add_outlier_product(px, K, po, ko, pw, py, ldy, M, N, i, nt)
    return y


# ------------------------------------------------------------------------------ attention

cdef bint _cu_ok(const int32_t *cu, int64_t B, int64_t n) noexcept:
    """0 <= cu[0] <= cu[1] <= ... <= cu[B] <= n (B = 0: nothing to check). A C loop: NumPy's
    np.diff / np.any cost ~10 us per call, a third of a batch-1 attention call's overhead."""
    if B <= 0:
        return True
    if cu[0] < 0 or cu[B] > n:
        return False
    cdef int64_t b
    for b in range(B):
        if cu[b + 1] < cu[b]:
            return False
    return True


cdef int64_t _row_stride(a, name, shape) except -1:
    """The row stride (in float32 elements) of `a`, f32 [n, H, Dh] with C-contiguous rows [H, Dh]
    that do not overlap: C-contiguous, or a row-strided view (qkv[:, 0] of qkv [n, 3, H, Dh])."""
    try:
        _check(a, name, np.float32, shape)   # type, dtype and shape first, then contiguity
        return a.shape[1] * a.shape[2]
    except ValueError as e:
        if "C-contiguous" not in str(e):
            raise
    cdef int64_t H = a.shape[1], Dh = a.shape[2], st = a.strides[0]
    if not (a.strides[2] == 4 and (a.strides[1] == 4 * Dh or H == 1) and st % 4 == 0
            and st >= 4 * H * Dh):
        raise ValueError(f"{name} must have C-contiguous, non-overlapping rows [H, Dh] (a C-contiguous "
                         f"array or a row-strided view such as qkv[:, 0]), got strides {a.strides}")
    return st // 4


class OffsetsError(ValueError):
    """attention's offsets are not within [0, n] and non-decreasing, or a query would see no key:
    what fdbert_native.ops declines (the reference then defines what happens)."""


cdef class _AttentionArgs:
    """attention's and attention_int8's arguments, checked, as the C kernels take them."""
    cdef int64_t rs[4]
    cdef int64_t B, H, Hkv, Dh
    cdef float scale
    cdef fp_attn_u8 qp
    cdef const float *q
    cdef const float *k
    cdef const float *v
    cdef const int32_t *cu_q
    cdef const int32_t *cu_k
    cdef float *out
    cdef uint8_t *outq

    def __init__(self, q, k, v, cu_seqlens_q, cu_seqlens_k, out, scale, quantize):
        self.rs[0] = _row_stride(q, "q", (None, None, None))
        cdef int64_t nq = q.shape[0]
        self.H, self.Dh = q.shape[1], q.shape[2]
        self.rs[1] = _row_stride(k, "k", (None, None, self.Dh))
        cdef int64_t nk = k.shape[0]
        self.Hkv = k.shape[1]
        if self.Hkv == 0 or self.H % self.Hkv:
            raise ValueError(f"k has {self.Hkv} heads, which must divide q's {self.H} (grouped-query heads)")
        self.rs[2] = _row_stride(v, "v", (nk, self.Hkv, self.Dh))
        self.rs[3] = self.H * self.Dh
        _check(cu_seqlens_q, "cu_seqlens_q", np.int32, (None,))
        self.B = cu_seqlens_q.shape[0] - 1
        if self.B < 0:
            raise ValueError("cu_seqlens_q must have B + 1 >= 1 entries")
        _check(cu_seqlens_k, "cu_seqlens_k", np.int32, (self.B + 1,))
        _check(out, "out", np.float32 if quantize is None else np.uint8, (nq, self.H, self.Dh))
        if quantize is not None:
            self.qp.scale, self.qp.zp = _qscale(quantize[0]), _qzero_point(quantize[1])
        for name, cu, n in (("cu_seqlens_q", cu_seqlens_q, nq), ("cu_seqlens_k", cu_seqlens_k, nk)):
            if not _cu_ok(<const int32_t *>_ptr(cu), self.B, n):
                raise OffsetsError(f"{name} must be non-decreasing within [0, {n}], got {cu}")
        self.scale = (1.0 / sqrt(<double>self.Dh)) if scale is None else scale
        self.q, self.k, self.v = <const float *>_ptr(q), <const float *>_ptr(k), <const float *>_ptr(v)
        self.cu_q, self.cu_k = <const int32_t *>_ptr(cu_seqlens_q), <const int32_t *>_ptr(cu_seqlens_k)
        self.out = <float *>_ptr(out) if quantize is None else NULL
        self.outq = <uint8_t *>_ptr(out) if quantize is not None else NULL


cdef _attention_error(int rc, name):
    if rc == FP_ENOKEYS:
        raise OffsetsError(f"{name}: a query sees no key (Lk = 0 < Lq, or causal with Lk < Lq)")
    if rc == FP_ENONFINITE:
        raise ValueError(f"{name}: q, k and v must be finite (a NaN or inf has no INT8 code)")
    if rc == FP_EOVERFLOW:
        raise ValueError(f"{name}: a score q.k overflows float32 (|q| |k| too large)")
    if rc == FP_ETOOLONG:
        raise ValueError(f"{name}: a sequence has more than {FP_I8_MAX_KEYS} keys")
    if rc == FP_ENOMEM:
        raise MemoryError(f"{name}: out of memory for the per-thread scratch buffers")


def attention(q, k, v, cu_seqlens_q, cu_seqlens_k, out, causal=False, scale=None, isa="auto",
              num_threads=0, quantize=None):
    """out[rows of b, h] = softmax(q_bh k_bg^T * scale [causal, aligned at the end]) v_bg, g = h // (H / Hkv).

    q, out f32 [nq, H, Dh]; k, v f32 [nk, Hkv, Dh] with Hkv dividing H (query head h reads kv head
    h // (H / Hkv) in place: grouped-query attention; Hkv = H is multi-head attention); tiled over
    keys with an online softmax (csrc/attention.h); cu_seqlens_q, cu_seqlens_k int32 [B + 1] with
    0 <= cu[b] <= cu[b+1] <= n. ``out`` is C-contiguous; q, k and v need only contiguous rows
    [H, Dh]: row-strided views such as ``qkv[:, 0]`` of a fused QKV output [n, 3, H, Dh] are read
    in place. Rows outside every sequence are left untouched (zero-fill ``out``
    first unless the sequences cover it). scale None means 1/sqrt(Dh), rounded to float32.
    quantize=(x_scale, x_zero_point): ``out`` is u8 [nq, H, Dh] and receives
    quantize_u8(attention, x_scale, x_zero_point) -- the same bits as the two calls, in one pass.
    """
    cdef _AttentionArgs a = _AttentionArgs(q, k, v, cu_seqlens_q, cu_seqlens_k, out, scale, quantize)
    cdef int i = _isa(isa), nt = _threads(num_threads), c = bool(causal), rc
    with nogil:
        rc = fp_attention(a.q, a.k, a.v, a.cu_q, a.cu_k, a.B, a.H, a.Hkv, a.Dh, c, a.scale, a.rs,
                          a.out, a.outq, &a.qp, i, nt)
    _attention_error(rc, "attention")
    return out


def attention_int8(q, k, v, cu_seqlens_q, cu_seqlens_k, out, causal=False, scale=None, isa="auto",
                   num_threads=0, quantize=None):
    """attention() with both matmuls in INT8 (fdbert/reference/attention_int8.py): the same
    arguments, layouts and ``quantize`` option; ``isa`` names one of INT8_ATTENTION_ISAS. ValueError
    if q, k or v holds a NaN or inf or a score a query sees overflows float32 (``out`` is then
    unspecified), or a sequence has more than 65536 keys."""
    cdef _AttentionArgs a = _AttentionArgs(q, k, v, cu_seqlens_q, cu_seqlens_k, out, scale, quantize)
    if a.Hkv != a.H:
        raise ValueError(f"attention_int8: k has {a.Hkv} heads, q {a.H}: grouped-query heads are float32 only")
    cdef int i = INT8_ATTENTION_PATHS.index(isa)
    cdef int nt = _threads(num_threads), c = bool(causal), rc
    with nogil:
        rc = fp_attention_int8(a.q, a.k, a.v, a.cu_q, a.cu_k, a.B, a.H, a.Dh, c, a.scale, a.rs,
                               a.out, a.outq, &a.qp, i, nt)
    _attention_error(rc, "attention_int8")
    return out


def embedding(ids, table, out, num_threads=0):
    """out[i] = table[ids[i]]: ids int64 [n], table f32 [V, D], out f32 [n, D]. IndexError if an id
    lies outside [0, V) (NumPy's take would wrap a negative one; the native op declines those)."""
    _check(ids, "ids", np.int64, (None,))
    _check(table, "table", np.float32, (None, None))
    cdef int64_t n = ids.shape[0], V = table.shape[0], D = table.shape[1]
    _check(out, "out", np.float32, (n, D))
    cdef int nt = _threads(num_threads), rc
    cdef const int64_t *pi = <const int64_t *>_ptr(ids)
    cdef const float *pt = <const float *>_ptr(table)
    cdef float *po = <float *>_ptr(out)
    with nogil:
        rc = fp_embedding(pi, n, pt, V, D, po, nt)
    if rc != 0:
        raise IndexError(f"embedding: an id lies outside [0, {V})")
    return out


def _fma_loop(int64_t n):
    with nogil:
        fdb_peak_fma_loop(n)


def fma_peak_gmacs(iters=20_000_000):
    """Measured single-thread float32 FMA peak, GMAC/s: a register-only loop of 24 vfmadd231ps zmm
    chains (the attention kernel's ceiling). Needs the avx512 path."""
    if not isa_supported("avx512"):
        raise RuntimeError(f"the avx512 path is not usable here (supported: {supported_isas()})")
    return _time_peak(_fma_loop, iters, 24 * 16)
