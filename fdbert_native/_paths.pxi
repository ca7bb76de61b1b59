# _paths.pxi -- included by the float kernel wrappers (_fp32, _sgemm, _decoder) after `cimport numpy
# as cnp` and `from fdbert_native._cpu cimport num_threads`. Each wrapper defines its ISA list and
# `_PATHS = IsaPaths(ISAS)` (the one table: csrc/cpu_features.h); these turn a call's arguments into
# what the C kernels take, and _unary wraps a pointwise float32 kernel (x f32 [n] -> out f32 [n]).


cdef int _isa(name) except -1:  # "auto" or a path name -> the index of the path in ISAS
    return _PATHS.index(name)


cdef int _threads(n):  # 0 -> the process's thread count (fdbert_native.set_num_threads)
    return n if n > 0 else num_threads()


cdef inline void *_ptr(a):  # the data pointer of a checked, C-contiguous ndarray
    return cnp.PyArray_DATA(<cnp.ndarray>a)


ctypedef void (*_unary_fn)(const float *, int64_t, float *, int, int) noexcept nogil


cdef _unary(_unary_fn fn, x, out, isa, num_threads):  # fn(x, n, out, isa, nthreads) on checked arrays
    _check(x, "x", np.float32, (None,))
    cdef int64_t n = x.shape[0]
    _check(out, "out", np.float32, (n,))
    cdef int i = _isa(isa), nt = _threads(num_threads)
    cdef const float *px = <const float *>_ptr(x)
    cdef float *po = <float *>_ptr(out)
    with nogil:
        fn(px, n, po, i, nt)
    return out
