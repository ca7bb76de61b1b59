# distutils: sources = fdbert_native/csrc/sgemm.c
# distutils: depends = fdbert_native/csrc/sgemm.h
# distutils: libraries = m
"""Float32 linear: y = x @ W.T + b on fdbert's own OpenMP pool (csrc/sgemm.{c,h}).

A thin wrapper: checks dtype, shape and C-contiguity at the edge (TypeError / ValueError naming what
was expected and found), then calls the C kernel without the GIL, writing into ``out``. The backend
op with the fdbert.ops signature is fdbert_native.ops.linear.

Every path computes each output as one float32 fused multiply-add chain over k in order, then adds
the bias, so the paths agree bit for bit and the thread count never changes a result (sgemm.h).

``isa`` is "auto" (the best path the CPU features allow now, after
fdbert_native.set_disabled_features) or one of ISAS, so tests can force each path; forcing a path the
CPU cannot run raises ValueError. ``num_threads`` <= 0 means fdbert_native.get_num_threads().
"""
import numpy as np

from fdbert_native._checks import IsaPaths

cimport numpy as cnp

include "_fastcheck.pxi"
from libc.stdint cimport int64_t, uint64_t

from fdbert_native._cpu cimport num_threads

cnp.import_array()

cdef extern from "sgemm.h" nogil:
    void sg_linear(const float *x, const float *w, const float *b, int64_t M, int64_t N,
                   int64_t K, float *y, int isa, int nthreads)
    int SG_PACK_NR
    int64_t sg_packed_size(int64_t N, int64_t K)
    void sg_pack_weight(const float *w, int64_t N, int64_t K, float *wp)
    int sg_linear_packed(const float *x, const float *wp, const float *b, int64_t M, int64_t N,
                         int64_t K, float *y, int isa, int nthreads)

#: ISA paths, lowest to highest (the one table: csrc/cpu_features.h).
ISAS = ("generic", "avx2", "avx512")
_PATHS = IsaPaths(ISAS)
isa_supported, supported_isas, best_isa = _PATHS.isa_supported, _PATHS.supported_isas, _PATHS.best_isa


include "_paths.pxi"


def linear(x, weight, bias, out, isa="auto", num_threads=0):
    """out = x @ weight.T + bias: x f32 [M, K], weight f32 [N, K], bias f32 [N] or None, out f32 [M, N].

    ``out`` must not share memory with x, weight or bias.
    """
    _check(x, "x", np.float32, (None, None))
    cdef int64_t M = x.shape[0], K = x.shape[1]
    _check(weight, "weight", np.float32, (None, K))
    cdef int64_t N = weight.shape[0]
    if bias is not None:
        _check(bias, "bias", np.float32, (N,))
    _check(out, "out", np.float32, (M, N))
    for name, a in (("x", x), ("weight", weight), ("bias", bias)):
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"out must not share memory with {name}")
    cdef int i = _isa(isa)
    cdef int nt = _threads(num_threads)
    cdef const float *px = <const float *>_ptr(x)
    cdef const float *pw = <const float *>_ptr(weight)
    cdef const float *pb = NULL if bias is None else <const float *>_ptr(bias)
    cdef float *po = <float *>_ptr(out)
    with nogil:
        sg_linear(px, pw, pb, M, N, K, po, i, nt)
    return out


class PackedWeight:
    """A weight [N, K] packed once into 32-column panels of W^T ([ceil(N / 32), K, 32], 64-byte aligned)
    for :func:`linear_packed`: N K floats more memory, no packing per call."""

    def __init__(self, weight):
        _check(weight, "weight", np.float32, (None, None))
        cdef int64_t N = weight.shape[0], K = weight.shape[1]
        cdef int64_t size = sg_packed_size(N, K)
        raw = np.empty(size + 16, np.float32)
        cdef int64_t off = ((-raw.ctypes.data) % 64) // 4      # floats to the next 64-byte boundary
        self.data = raw[off:off + size]
        self.shape = (N, K)
        cdef const float *pw = <const float *>_ptr(weight)
        cdef float *pp = <float *>_ptr(self.data)
        with nogil:
            sg_pack_weight(pw, N, K, pp)


def linear_packed(x, packed, bias, out, isa="auto", num_threads=0):
    """:func:`linear` with a :class:`PackedWeight`: the same bits. AVX-512 and AVX2 (ValueError on the
    generic path)."""
    _check(x, "x", np.float32, (None, None))
    cdef int64_t M = x.shape[0], K = x.shape[1]
    cdef int64_t N = packed.shape[0]
    if packed.shape[1] != K:
        raise ValueError(f"x has K = {K}, the packed weight {packed.shape[1]}")
    if bias is not None:
        _check(bias, "bias", np.float32, (N,))
    _check(out, "out", np.float32, (M, N))
    cdef int i = _isa(isa)
    cdef int nt = _threads(num_threads)
    cdef const float *px = <const float *>_ptr(x)
    cdef const float *pw = <const float *>_ptr(packed.data)
    cdef const float *pb = NULL if bias is None else <const float *>_ptr(bias)
    cdef float *po = <float *>_ptr(out)
    cdef int rc
    with nogil:
        rc = sg_linear_packed(px, pw, pb, M, N, K, po, i, nt)
    if rc:
        raise ValueError("linear_packed runs on the avx512 and avx2 paths only")
    return out
