# _fastcheck.pxi -- included by the kernel wrappers (_fp32, _qgemm, _sgemm) after `cimport numpy as cnp`.
#
# _check(a, name, dtype, shape): fdbert_native._checks.check_array at C speed. A forward pass makes
# ~47 argument checks per encoder layer; check_array, plain Python, took ~0.7 us each (~0.2 ms per
# DistilBERT forward). The fast path accepts exactly what check_array accepts (a C-contiguous ndarray
# of dtype `dtype` in native byte order and shape `shape`, None = any extent); anything else goes to
# check_array, which raises its error (or accepts an equal dtype spelled with another type number).
#
# _qscale / _qzero_point: the u8 quantization parameters as every kernel takes them.
from fdbert_native._checks import check_array as _check_array_py

cdef dict _TYPENUMS = {}


cdef inline int _typenum(object dtype) except -2:
    cdef object num = _TYPENUMS.get(dtype)
    if num is None:
        num = _TYPENUMS[dtype] = np.dtype(dtype).num
    return num


cdef inline int _check(object a, object name, object dtype, tuple shape) except -1:
    cdef cnp.ndarray arr
    cdef Py_ssize_t i, n = len(shape)
    cdef cnp.npy_intp *dims
    cdef object want
    if isinstance(a, cnp.ndarray):
        arr = <cnp.ndarray>a
        if (cnp.PyArray_TYPE(arr) == _typenum(dtype) and cnp.PyArray_ISNOTSWAPPED(arr)
                and cnp.PyArray_NDIM(arr) == n and cnp.PyArray_IS_C_CONTIGUOUS(arr)):
            dims = cnp.PyArray_DIMS(arr)
            for i in range(n):
                want = shape[i]
                if want is not None and <cnp.npy_intp>want != dims[i]:
                    break
            else:
                return 0
    _check_array_py(a, name, dtype, shape)
    return 0


cdef float _qscale(scale) except -1:
    """A quantization scale as the kernels take it: a finite float32 > 0."""
    cdef float s = scale
    if not (s > 0 and s < float("inf")):
        raise ValueError(f"scale must be a finite float32 > 0, got {scale!r}")
    return s


cdef float _qzero_point(zero_point) except -1:
    """A u8 zero point as the kernels take it: an integer in [0, 255], as a float."""
    cdef float z = zero_point
    if not (0 <= zero_point <= 255 and z == int(zero_point)):
        raise ValueError(f"zero_point must be an integer in [0, 255], got {zero_point!r}")
    return z
