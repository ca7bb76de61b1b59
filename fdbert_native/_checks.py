"""Argument checks shared by the thin Cython wrappers (_fp32, _qgemm, _sgemm, _decoder), the ISA
paths every one of them selects from (IsaPaths over the one table of csrc/cpu_features.h), and the
timing of the peak probes."""

import time

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
    straddles two cache lines costs two, which made the AMX GEMM more than twice as slow (docs/kernels.md).
    """
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + n].view(dtype).reshape(shape)


class IsaPaths:
    """The ISA paths one kernel family implements, lowest to highest, out of the one table of every
    family (csrc/cpu_features.h, FDB_ISA_PATHS: generic, avx2, avx2_vnni, avx512, avx512vnni, amx).
    A path may run when the CPU features it needs are all in ``fdbert_native._cpu.usable_mask()``
    (the CPU, the OS, the AMX grant and fdbert_native's disabled features). ``index(name)`` is the
    ``isa`` value the family's C kernels take."""

    def __init__(self, names):
        from fdbert_native import _cpu
        table = _cpu.isa_paths()
        known = [name for name, _ in table]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"IsaPaths: unknown ISA path(s) {unknown}; the table has {known}")
        self.names = tuple(names)
        self._isa = tuple(known.index(name) for name in self.names)   # the C enum fdb_isa
        self._needs = tuple(table[i][1] for i in self._isa)
        self._usable = _cpu.usable_mask
        self._auto = {}   # usable mask -> C value of the best path (index("auto") runs per op call)

    def isa_supported(self, name):
        """True if path `name` may run now (CPU, OS state and fdbert_native's disabled features)."""
        if name not in self.names:
            raise ValueError(f"isa must be one of {self.names}, got {name!r}")
        need = self._needs[self.names.index(name)]
        return (self._usable() & need) == need

    def supported_isas(self):
        """The paths that may run now, lowest to highest."""
        usable = self._usable()
        return tuple(n for n, need in zip(self.names, self._needs) if (usable & need) == need)

    def best_isa(self):
        """What isa="auto" runs now."""
        return self.supported_isas()[-1]

    def index(self, name):  # "auto" or a path name -> its C value (enum fdb_isa); ValueError if it cannot run
        if name == "auto":
            usable = self._usable()
            i = self._auto.get(usable)
            if i is None:
                i = self._auto[usable] = self._isa[self.names.index(self.best_isa())]
            return i
        if name not in self.names:
            raise ValueError(f"isa must be 'auto' or one of {self.names}, got {name!r}")
        if not self.isa_supported(name):
            raise ValueError(f"isa {name!r} is not supported here: it cannot run on this CPU now "
                             f"(available: {self.supported_isas()})")
        return self._isa[self.names.index(name)]


def time_peak(run, iters, macs_per_iter):
    """GMAC/s of run(iters), a register-only peak loop doing macs_per_iter multiply-adds per
    iteration (run(iters // 10) first, to bring the clock up)."""
    run(iters // 10)
    t = time.perf_counter()
    run(iters)
    return iters * macs_per_iter / (time.perf_counter() - t) / 1e9
