# distutils: sources = fdbert_native/csrc/qgemm.c fdbert_native/csrc/qepilogue.c fdbert_native/csrc/qspmm.c fdbert_native/csrc/qgemm_amx.c fdbert_native/csrc/peak_probes.c
# distutils: depends = fdbert_native/csrc/qgemm.h fdbert_native/csrc/qgemm_internal.h fdbert_native/csrc/qgemm_dense.inc fdbert_native/csrc/qspmm_tile.inc fdbert_native/csrc/qgemm_simd.inc fdbert_native/csrc/qgemm_isas.inc fdbert_native/csrc/cpu_features.h fdbert_native/csrc/qgemm_amx.h fdbert_native/csrc/fp32_ops.h fdbert_native/csrc/fp32_vecmath.h fdbert_native/csrc/peak_probes.h
"""INT8 dense GEMM and 1x4 block-sparse SpMM with a fused epilogue (wraps csrc/qgemm.{c,h}).

    acc[m, n] = sum_k int32(x[m, k]) * int32(w[n, k])        x u8 [M, K], w s8 [N, K]
    y = float32(acc - comp[n]) * mult[n] + bias[n]; [GELU]; [+ residual]; f32 or requantized u8

Thin wrappers: each checks dtype, shape and C-contiguity at the edge (errors name the expected
and actual value), then calls the C kernel without the GIL. ``isa`` is "auto" (the best path the
shared detector fdbert_native._cpu allows, so FDBERT_DISABLE_CPU_FEATURES reaches these kernels)
or one of ISAS (the dense qgemm_* also "amx": DENSE_ISAS, amx_auto), so tests can force every
path; ``num_threads`` <= 0 means the project-wide thread count (fdbert_native.set_num_threads).
"""
import numpy as np

from fdbert_native._checks import IsaPaths, empty_aligned as _empty_aligned, time_peak as _time_peak

cimport numpy as cnp
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t

from fdbert_native._cpu cimport num_threads as _default_threads

cnp.import_array()

cdef extern from "qgemm.h" nogil:
    ctypedef struct qg_epilogue:
        int out_kind
        const int32_t *comp
        const float *mult
        const float *bias
        int gelu
        const float *residual
        float out_scale
        float out_zp
        void *out
        const float *xo
        int64_t ldxo
        const int32_t *xo_idx
        int64_t ko
        const float *wo_t
    int QG_OUT_S32, QG_OUT_F32, QG_OUT_U8, QG_OK, QG_EBADISA, QG_ENOMEM, QG_EBADINDEX
    int FDB_ISA_AMX
    int64_t qg_packed_dense_size(int64_t N, int64_t K)
    void qg_pack_dense(const int8_t *w, int64_t N, int64_t K, int8_t *packed, int32_t *colsum)
    int qg_gemm(const uint8_t *x, int64_t M, int64_t K, const int8_t *packed, int64_t N,
                const qg_epilogue *ep, int isa, int nthreads)
    int qg_spmm(const uint8_t *x, int64_t M, int64_t K, const int32_t *blk, const int32_t *cptr,
                int64_t N, const qg_epilogue *ep, int isa, int nthreads)
    int qg_spmm_multi(const uint8_t *x, int64_t M, int64_t K, int nw, const int32_t *const *blks,
                      const int32_t *const *cptrs, const int64_t *Ns, const qg_epilogue *eps,
                      int isa, int nthreads)
    int qg_bsr_validate(const int32_t *indices, const int32_t *indptr, int64_t N, int64_t K,
                        int64_t nnz)
    int64_t qg_bsr_n_chunks(int64_t K)
    int64_t qg_bsr_pack_cptr(const int32_t *indices, const int32_t *indptr, int64_t N, int64_t K,
                             int32_t *cptr)
    int qg_bsr_pack_blk(const int8_t *data, const int32_t *indices, const int32_t *indptr,
                        int64_t N, int64_t K, const int32_t *cptr, int32_t *blk)
    int QG_SP_KC, QG_SP_UNROLL
    void qg_gelu_quantize_u8(const float *x, int64_t n, float scale, float zp, uint8_t *q, int isa,
                             int nthreads)

cdef extern from "peak_probes.h" nogil:
    int32_t fdb_peak_vnni_loop(int64_t iters)
    int32_t fdb_peak_amx_loop(int64_t iters)

cdef extern from "qgemm_amx.h" nogil:
    int qg_gemm_amx(const uint8_t *x, int64_t M, int64_t K, const int8_t *packed, int64_t N,
                    const qg_epilogue *ep, int nthreads)

#: ISA paths, lowest to highest (the one table: csrc/cpu_features.h), which every kernel family
#: here (dense and sparse) implements.
ISAS = ("generic", "avx2", "avx2_vnni", "avx512", "avx512vnni")
#: The dense GEMM's extra path: AMX-INT8 tiles (csrc/qgemm_amx.c). Dense only (qgemm_*), so it is
#: not in ISAS. Usable only once Linux granted the tile-data permission
#: (fdbert_native.request_amx_permission()).
AMX = "amx"
#: The paths qgemm_* accept (isa=...), lowest to highest.
DENSE_ISAS = ISAS + (AMX,)
#: isa="auto" runs the dense GEMM on AMX when it is usable and M >= AMX_AUTO_MIN_M (None: never):
#: below it, a 32-row AMX block is mostly padding (docs/kernels.md; figures: docs/benchmarks.md).
AMX_AUTO_MIN_M = 64

_PATHS = IsaPaths(ISAS)
_DENSE_PATHS = IsaPaths(DENSE_ISAS)
isa_supported = _DENSE_PATHS.isa_supported   # True if path `name` (one of DENSE_ISAS) may run now
supported_isas = _PATHS.supported_isas       # the paths of ISAS that may run now, lowest to highest
supported_dense_isas = _DENSE_PATHS.supported_isas   # supported_isas() and "amx" if usable
best_isa = _PATHS.best_isa   # what isa="auto" runs (dense GEMMs: AMX instead when amx_auto(M, N, K))


def amx_auto(int64_t M, int64_t N, int64_t K):
    """True if isa="auto" runs a dense [M, K] x [K, N] GEMM on AMX now."""
    return (AMX_AUTO_MIN_M is not None and M >= AMX_AUTO_MIN_M
            and _DENSE_PATHS.isa_supported(AMX))



include "_fastcheck.pxi"


cdef inline void *_ptr(a):
    return cnp.PyArray_DATA(<cnp.ndarray>a) if a is not None else NULL


def _raise(int rc, what):
    if rc == QG_OK:
        return
    if rc == QG_ENOMEM:
        raise MemoryError(f"{what}: out of memory")
    if rc == QG_EBADINDEX:
        raise ValueError(f"{what}: invalid BSR indices/indptr")
    raise RuntimeError(f"{what}: error code {rc}")


# ------------------------------------------------------------------------------ packing

def pack_dense(w):
    """W s8 [N, K] -> (packed s8 [ceil(N/16), ceil(K/4), 16, 4], colsum int32 [N]).

    packed[b, g, c, i] = W[16b + c, 4g + i] (zero padded): one 64-byte row [b, g] is the weight
    operand of one 512-bit vpdpbusd. colsum[n] = sum_k W[n, k]; the zero-point compensation of
    the INT8 contract is comp = x_zp * colsum.
    """
    _check(w, "w", np.int8, (None, None))
    cdef int64_t N = w.shape[0], K = w.shape[1]
    packed = _empty_aligned(((N + 15) // 16, (K + 3) // 4, 16, 4), np.int8)   # 64-byte rows
    colsum = np.empty(N, dtype=np.int32)
    cdef const int8_t *pw = <const int8_t *>_ptr(w)
    cdef int8_t *pp = <int8_t *>_ptr(packed)
    cdef int32_t *pc = <int32_t *>_ptr(colsum)
    with nogil:
        qg_pack_dense(pw, N, K, pp, pc)
    return packed, colsum


cdef class PackedBSR:
    """A 1x4 BSR weight W [N, K] packed for qspmm_* (see csrc/qgemm.h, "block stream").

    blk int32 [nblk, 2] = (block column, the 4 weight bytes as one int32), grouped by (output
    channel, K chunk of QG_SP_KC block columns), each run padded with zero blocks; cptr int32
    [N*S + 1] the run boundaries; colsum int32 [N] = sum_k W[n, k]. Built only by pack_bsr,
    which validates the indices, so the kernels need no per-call O(nnz) check; the arrays are
    read-only.
    """
    cdef readonly object blk, cptr, colsum
    cdef readonly int64_t N, K, nnz

    def __repr__(self):
        return f"PackedBSR(N={self.N}, K={self.K}, nnz={self.nnz}, blocksize=(1, 4))"


def pack_bsr(data, indices, indptr, shape):
    """Validate and pack a 1x4 BSR weight (SciPy vocabulary) -> PackedBSR.

    data s8 [nnz, 1, 4] (or [nnz, 4]), indices int32 [nnz] (block columns), indptr int32 [N + 1],
    shape = (N, K). Bytes of the last block column past K must be zero (SciPy pads with zeros).
    """
    N, K = (int(s) for s in shape)
    data = np.ascontiguousarray(data)
    if data.ndim == 3:
        if data.shape[1:] != (1, 4):
            raise ValueError(f"data must have blocksize (1, 4), got {data.shape[1:]}")
        data = data.reshape(data.shape[0], 4)   # [nnz, 1, 4] -> [nnz, 4]
    _check(data, "data", np.int8, (None, 4))
    indices = np.ascontiguousarray(indices)
    indptr = np.ascontiguousarray(indptr)
    _check(indices, "indices", np.int32, (data.shape[0],))
    _check(indptr, "indptr", np.int32, (N + 1,))
    cdef int64_t nnz = data.shape[0]
    cdef const int32_t *pi = <const int32_t *>_ptr(indices)
    cdef const int32_t *pp = <const int32_t *>_ptr(indptr)
    _raise(qg_bsr_validate(pi, pp, N, K, nnz), "pack_bsr")
    if K % 4:
        tail = data[indices == (K + 3) // 4 - 1][:, K % 4:]
        if np.any(tail):
            raise ValueError("data: bytes of the last block column past K must be zero")
    cptr = np.empty(N * (qg_bsr_n_chunks(K) + 1) + 1, dtype=np.int32)
    cdef int64_t nblk = qg_bsr_pack_cptr(pi, pp, N, K, <int32_t *>_ptr(cptr))
    blk = np.zeros((nblk, 2), dtype=np.int32)
    _raise(qg_bsr_pack_blk(<const int8_t *>_ptr(data), pi, pp, N, K, <const int32_t *>_ptr(cptr),
                           <int32_t *>_ptr(blk)), "pack_bsr")
    rows = np.repeat(np.arange(N), np.diff(indptr))
    colsum = np.zeros(N, dtype=np.int64)
    np.add.at(colsum, rows, data.sum(axis=1, dtype=np.int64))
    cdef PackedBSR p = PackedBSR.__new__(PackedBSR)
    for a in (blk, cptr):
        a.flags.writeable = False
    p.blk, p.cptr, p.colsum = blk, cptr, colsum.astype(np.int32)
    p.N, p.K, p.nnz = N, K, nnz
    return p


# ------------------------------------------------------------------------------ kernels

cdef qg_epilogue _epilogue(int kind, out, comp, mult, bias, residual, bint gelu,
                           float out_scale, float out_zp, int64_t M, int64_t N,
                           outliers=None) except *:
    cdef qg_epilogue ep
    ep.xo = NULL
    ep.ldxo = 0
    ep.xo_idx = NULL
    ep.ko = 0
    ep.wo_t = NULL
    ep.out_kind = kind
    ep.out = _ptr(out)
    ep.comp = NULL
    ep.mult = NULL
    ep.bias = NULL
    ep.residual = NULL
    ep.gelu = gelu
    ep.out_scale = out_scale
    ep.out_zp = out_zp
    if kind != QG_OUT_S32:
        _check(comp, "comp", np.int32, (N,))
        _check(mult, "mult", np.float32, (N,))
        ep.comp = <const int32_t *>_ptr(comp)
        ep.mult = <const float *>_ptr(mult)
        if bias is not None:
            _check(bias, "bias", np.float32, (N,))
            ep.bias = <const float *>_ptr(bias)
        if residual is not None:
            _check(residual, "residual", np.float32, (M, N))
            ep.residual = <const float *>_ptr(residual)
        if outliers is not None:
            _outliers(&ep, outliers, M, N)
    if kind == QG_OUT_U8 and not out_scale > 0:
        raise ValueError(f"out_scale must be > 0, got {out_scale}")
    return ep


cdef int _outliers(qg_epilogue *ep, outliers, int64_t M, int64_t N) except -1:
    """(xo f32 [M, K'], idx int32 [ko], wo_t f32 [ko, N]): the outlier share of the epilogue (qgemm.h)."""
    xo, idx, wo_t = outliers
    _check(xo, "outliers: x", np.float32, (M, None))
    _check(idx, "outliers: channels", np.int32, (None,))
    cdef int64_t ko = idx.shape[0]
    _check(wo_t, "outliers: weight_t", np.float32, (ko, N))
    if ko and (int(idx.min()) < 0 or int(idx.max()) >= xo.shape[1]):
        raise ValueError(f"outliers: channels must lie in [0, {xo.shape[1]})")
    if ko:
        ep.xo = <const float *>_ptr(xo)
        ep.ldxo = xo.shape[1]
        ep.xo_idx = <const int32_t *>_ptr(idx)
        ep.ko = ko
        ep.wo_t = <const float *>_ptr(wo_t)
    return 0


def _gemm(int kind, x, packed, out, comp, mult, bias, residual, gelu, out_scale, out_zp, isa,
          num_threads, outliers=None):
    _check(x, "x", np.uint8, (None, None))
    cdef int64_t M = x.shape[0], K = x.shape[1]
    _check(out, "out", (np.int32, np.float32, np.uint8)[kind], (M, None))
    cdef int64_t N = out.shape[1]
    _check(packed, "packed", np.int8, ((N + 15) // 16, (K + 3) // 4, 16, 4))
    cdef qg_epilogue ep = _epilogue(kind, out, comp, mult, bias, residual, gelu, out_scale,
                                    out_zp, M, N, outliers)
    if isa == "auto" and amx_auto(M, N, K):
        isa = AMX
    cdef int i = _PATHS.index(isa) if isa == "auto" else _DENSE_PATHS.index(isa)
    cdef int nt = num_threads if num_threads > 0 else _default_threads(), rc
    cdef const uint8_t *px = <const uint8_t *>_ptr(x)
    cdef const int8_t *pw = <const int8_t *>_ptr(packed)
    with nogil:
        if i == FDB_ISA_AMX:
            rc = qg_gemm_amx(px, M, K, pw, N, &ep, nt)
        else:
            rc = qg_gemm(px, M, K, pw, N, &ep, i, nt)
    _raise(rc, "qgemm")
    return out


def qgemm_s32(x, packed, out, isa="auto", num_threads=0):
    """out int32 [M, N] = x u8 [M, K] @ W.T, W from pack_dense (exact int32 sums)."""
    return _gemm(QG_OUT_S32, x, packed, out, None, None, None, None, False, 1.0, 0.0, isa,
                 num_threads)


def qgemm_f32(x, packed, comp, mult, bias, out, residual=None, gelu=False, isa="auto",
              num_threads=0, outliers=None):
    """out f32 [M, N] = [gelu](float32(x @ W.T - comp) * mult + bias [+ p]) [+ residual].

    outliers=(xo f32 [M, K'], channels int32 [ko], weight_t f32 [ko, N]) adds the float share
    p[m, n] of those input channels before GELU (csrc/qgemm.h; the reference's add_outlier_product)."""
    return _gemm(QG_OUT_F32, x, packed, out, comp, mult, bias, residual, gelu, 1.0, 0.0, isa,
                 num_threads, outliers)


def qgemm_u8(x, packed, comp, mult, bias, out_scale, out_zp, out, residual=None, gelu=False,
             isa="auto", num_threads=0, outliers=None):
    """out u8 [M, N] = clip(rint(y / out_scale) + out_zp, 0, 255), y as in qgemm_f32."""
    return _gemm(QG_OUT_U8, x, packed, out, comp, mult, bias, residual, gelu, out_scale, out_zp,
                 isa, num_threads, outliers)


def _spmm(int kind, x, PackedBSR w, out, comp, mult, bias, residual, gelu, out_scale, out_zp,
          isa, num_threads, outliers=None):
    if w is None:
        raise TypeError("w must be a PackedBSR from pack_bsr, got None")
    _check(x, "x", np.uint8, (None, w.K))
    cdef int64_t M = x.shape[0], K = w.K, N = w.N
    _check(out, "out", (np.int32, np.float32, np.uint8)[kind], (M, N))
    cdef qg_epilogue ep = _epilogue(kind, out, comp, mult, bias, residual, gelu, out_scale,
                                    out_zp, M, N, outliers)
    cdef int i = _PATHS.index(isa), nt = num_threads if num_threads > 0 else _default_threads(), rc
    cdef const uint8_t *px = <const uint8_t *>_ptr(x)
    cdef const int32_t *pb = <const int32_t *>_ptr(w.blk)
    cdef const int32_t *pc = <const int32_t *>_ptr(w.cptr)
    with nogil:
        rc = qg_spmm(px, M, K, pb, pc, N, &ep, i, nt)
    _raise(rc, "qspmm")
    return out


def gelu_quantize_u8(x, scale, zero_point, out, isa="auto", num_threads=0):
    """out u8 [n] = u8(clip(rint(gelu(x) / scale) + zero_point, 0, 255)): x f32 [n]. The bits of
    _fp32.gelu then _fp32.quantize_u8, in one pass with the fused epilogue's cheap-first GELU
    (csrc/qepilogue.c)."""
    _check(x, "x", np.float32, (None,))
    cdef int64_t n = x.shape[0]
    _check(out, "out", np.uint8, (n,))
    cdef float s = _qscale(scale), z = _qzero_point(zero_point)
    cdef int i = _PATHS.index(isa), nt = num_threads if num_threads > 0 else _default_threads()
    cdef const float *px = <const float *>_ptr(x)
    cdef uint8_t *po = <uint8_t *>_ptr(out)
    with nogil:
        qg_gelu_quantize_u8(px, n, s, z, po, i, nt)
    return out


def qspmm_s32(x, w, out, isa="auto", num_threads=0):
    """out int32 [M, N] = x u8 [M, K] @ W.T, W a PackedBSR from pack_bsr (exact int32 sums)."""
    return _spmm(QG_OUT_S32, x, w, out, None, None, None, None, False, 1.0, 0.0, isa, num_threads)


def qspmm_f32(x, w, comp, mult, bias, out, residual=None, gelu=False, isa="auto", num_threads=0,
              outliers=None):
    """qgemm_f32 with a PackedBSR weight."""
    return _spmm(QG_OUT_F32, x, w, out, comp, mult, bias, residual, gelu, 1.0, 0.0, isa,
                 num_threads, outliers)


def qspmm_u8(x, w, comp, mult, bias, out_scale, out_zp, out, residual=None, gelu=False,
             isa="auto", num_threads=0, outliers=None):
    """qgemm_u8 with a PackedBSR weight."""
    return _spmm(QG_OUT_U8, x, w, out, comp, mult, bias, residual, gelu, out_scale, out_zp, isa,
                 num_threads, outliers)


def qspmm_f32_multi(x, ws, comps, mults, biases, outs, isa="auto", num_threads=0):
    """outs[i] = qspmm_f32(x, ws[i], comps[i], mults[i], biases[i], outs[i]) for 1..8 weights that
    read the same x (Q, K and V): one repack of x and one parallel region, the same bits."""
    cdef int nw = len(ws), w
    if not 1 <= nw <= 8 or not len(comps) == len(mults) == len(biases) == len(outs) == nw:
        raise ValueError("qspmm_f32_multi: 1..8 weights, and one comp, mult, bias and out each")
    _check(x, "x", np.uint8, (None, None))
    cdef int64_t M = x.shape[0], K = x.shape[1]
    cdef qg_epilogue eps[8]
    cdef const int32_t *blks[8]
    cdef const int32_t *cptrs[8]
    cdef int64_t Ns[8]
    cdef PackedBSR pw
    for w in range(nw):
        pw = ws[w]
        if pw is None:
            raise TypeError("ws must hold PackedBSRs from pack_bsr, got None")
        if pw.K != K:
            raise ValueError(f"ws[{w}] has K = {pw.K}, x has K = {K}")
        _check(outs[w], f"outs[{w}]", np.float32, (M, pw.N))
        eps[w] = _epilogue(QG_OUT_F32, outs[w], comps[w], mults[w], biases[w], None, False, 1.0, 0.0,
                           M, pw.N)
        blks[w] = <const int32_t *>_ptr(pw.blk)
        cptrs[w] = <const int32_t *>_ptr(pw.cptr)
        Ns[w] = pw.N
    cdef int i = _PATHS.index(isa), nt = num_threads if num_threads > 0 else _default_threads(), rc
    cdef const uint8_t *px = <const uint8_t *>_ptr(x)
    with nogil:
        rc = qg_spmm_multi(px, M, K, nw, blks, cptrs, Ns, eps, i, nt)
    _raise(rc, "qspmm_f32_multi")
    return outs


def _vnni_loop(int64_t n):
    with nogil:
        fdb_peak_vnni_loop(n)


def _amx_loop(int64_t n):
    with nogil:
        fdb_peak_amx_loop(n)


def vnni_peak_gmacs(iters=20_000_000):
    """Measured single-thread vpdpbusd zmm peak, GMAC/s: a register-only loop of 24 chains."""
    if not isa_supported("avx512vnni"):
        raise RuntimeError(f"avx512vnni is not usable here (supported: {supported_isas()})")
    return _time_peak(_vnni_loop, iters, 24 * 64)


def amx_peak_gmacs(iters=2_000_000):
    """Measured single-thread AMX-INT8 peak, GMAC/s: a loop of register-only tdpbusd (16,384 MACs
    each), the dense AMX GEMM's 2 x 2 pattern without its tile loads. Needs the "amx" path."""
    if not isa_supported(AMX):
        raise RuntimeError(f"the amx path is not usable here (dense paths: {supported_dense_isas()})")
    return _time_peak(_amx_loop, iters, 4 * 16384)
