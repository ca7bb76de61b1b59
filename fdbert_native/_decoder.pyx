# distutils: sources = fdbert_native/csrc/decoder_ops.c
# distutils: depends = fdbert_native/csrc/decoder_ops.h fdbert_native/csrc/fp32_vecmath.h
# distutils: libraries = m
"""Float32 kernels of the decoders: RMSNorm, RoPE, the SiLU-gated product, the tanh GELU (csrc/decoder_ops.{c,h}).

Thin wrappers: each checks dtype, shape and C-contiguity (TypeError / ValueError naming what was
expected and found), then calls the C kernel without the GIL, writing into ``out``. The backend
functions with fdbert.ops signatures are in fdbert_native/ops.py. ``isa`` is "auto" or one of ISAS;
``num_threads`` <= 0 means fdbert_native.get_num_threads().
"""
import numpy as np

from fdbert_native._checks import IsaPaths

cimport numpy as cnp

include "_fastcheck.pxi"
from libc.stdint cimport int64_t, uint64_t

from fdbert_native._cpu cimport num_threads

cnp.import_array()

cdef extern from "decoder_ops.h" nogil:
    void dec_rms_norm(const float *x, int64_t n, int64_t D, const float *w, float eps, float *y,
                      int isa, int nthreads)
    void dec_rope(const float *x, int64_t n, int64_t H, int64_t Dh, const float *c, const float *s,
                  float *y, int isa, int nthreads)
    void dec_silu_mul(const float *g, const float *u, int64_t n, float *y, int isa, int nthreads)
    void dec_gelu_tanh(const float *x, int64_t n, float *y, int isa, int nthreads)

#: ISA paths, lowest to highest (the one table: csrc/cpu_features.h).
ISAS = ("generic", "avx2", "avx512")
_PATHS = IsaPaths(ISAS)
isa_supported, supported_isas, best_isa = _PATHS.isa_supported, _PATHS.supported_isas, _PATHS.best_isa


include "_paths.pxi"


def rms_norm(x, weight, eps, out, isa="auto", num_threads=0):
    """out = x / sqrt(mean(x^2) + eps) * weight per row: x, out f32 [n, D]; weight f32 [D]."""
    _check(x, "x", np.float32, (None, None))
    cdef int64_t n = x.shape[0], D = x.shape[1]
    _check(weight, "weight", np.float32, (D,))
    _check(out, "out", np.float32, (n, D))
    if D == 0:
        raise ValueError("rms_norm: D = 0 (the mean of nothing)")
    cdef int i = _isa(isa), nt = _threads(num_threads)
    cdef float e = eps
    cdef const float *px = <const float *>_ptr(x)
    cdef const float *pw = <const float *>_ptr(weight)
    cdef float *po = <float *>_ptr(out)
    with nogil:
        dec_rms_norm(px, n, D, pw, e, po, i, nt)
    return out


def rope(x, cos, sin, out, isa="auto", num_threads=0):
    """out = (x1 cos - x2 sin, x2 cos + x1 sin) per head: x, out f32 [n, H, Dh]; cos, sin f32 [n, Dh/2]."""
    _check(x, "x", np.float32, (None, None, None))
    cdef int64_t n = x.shape[0], H = x.shape[1], Dh = x.shape[2]
    if Dh % 2:
        raise ValueError(f"rope: head width Dh must be even, got {Dh}")
    _check(cos, "cos", np.float32, (n, Dh // 2))
    _check(sin, "sin", np.float32, (n, Dh // 2))
    _check(out, "out", np.float32, (n, H, Dh))
    if out is x:
        raise ValueError("rope: out must not be x")
    cdef int i = _isa(isa), nt = _threads(num_threads)
    cdef const float *px = <const float *>_ptr(x)
    cdef const float *pc = <const float *>_ptr(cos)
    cdef const float *ps = <const float *>_ptr(sin)
    cdef float *po = <float *>_ptr(out)
    with nogil:
        dec_rope(px, n, H, Dh, pc, ps, po, i, nt)
    return out


def silu_mul(gate, up, out, isa="auto", num_threads=0):
    """out = gate / (1 + exp(-gate)) * up: gate, up, out f32 [n] (flattened by the caller)."""
    _check(gate, "gate", np.float32, (None,))
    cdef int64_t n = gate.shape[0]
    _check(up, "up", np.float32, (n,))
    _check(out, "out", np.float32, (n,))
    cdef int i = _isa(isa), nt = _threads(num_threads)
    cdef const float *pg = <const float *>_ptr(gate)
    cdef const float *pu = <const float *>_ptr(up)
    cdef float *po = <float *>_ptr(out)
    with nogil:
        dec_silu_mul(pg, pu, n, po, i, nt)
    return out


def gelu_tanh(x, out, isa="auto", num_threads=0):
    """out = x / (1 + exp(-2 sqrt(2/pi) (x + 0.044715 x^3))) = x/2 (1 + tanh(...)): x, out f32 [n]."""
    return _unary(dec_gelu_tanh, x, out, isa, num_threads)
