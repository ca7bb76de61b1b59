"""Argument checks shared by the thin Cython wrappers (_fp32, _qgemm, _sgemm)."""

import numpy as np


def check_array(a, name, dtype, shape):
    """Raise unless `a` is a C-contiguous ndarray of `dtype` and `shape` (None = any extent)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    ok = a.ndim == len(shape)
    if ok:   # a plain loop: any() over a generator cost 0.45 of this function's 0.69 us
        for want, got in zip(shape, a.shape):
            if want is not None and want != got:
                ok = False
                break
    if not ok:
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (np.ascontiguousarray)")


def empty_aligned(shape, dtype, align=64):
    """np.empty(shape, dtype) whose data starts on an `align`-byte boundary (a cache line).

    NumPy only promises 16 bytes. AMX tile loads and 512-bit loads read 64-byte rows: a row that
    straddles two cache lines costs two, which made the AMX GEMM 2.4x slower (docs/kernels.md).
    """
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + n].view(dtype).reshape(shape)
