# distutils: sources = fdbert_native/csrc/cpu_features.c fdbert_native/csrc/threads.c
"""Typed wrappers over csrc/cpu_features.c and csrc/threads.c. The Python API is fdbert_native/__init__.py.

Masks are Python ints with bit ``i`` for feature ``feature_names()[i]``.
"""
from libc.stdint cimport uint64_t

cdef extern from "cpu_features.h" nogil:
    const char *fdb_feature_name(int feature)
    uint64_t fdb_feature_requires(int feature)
    uint64_t fdb_cpu_detected()
    uint64_t fdb_cpu_mask()
    int fdb_has(int feature)
    uint64_t fdb_set_disabled(uint64_t mask)
    uint64_t fdb_get_disabled()
    uint64_t fdb_disabled_closure(uint64_t mask)
    int fdb_amx_request()
    int fdb_amx_granted()
    const char *fdb_isa_name(int isa)
    uint64_t fdb_isa_needs(int isa)
    enum:
        FDB_ISA_COUNT

cdef extern from "threads.h" nogil:
    int fdb_num_threads()
    int fdb_set_num_threads(int n)
    int fdb_openmp_enabled()
    int fdb_omp_thread_limit()
    int fdb_omp_team_size()


# --- the C-level API for other extension modules (declared in _cpu.pxd) ---

cdef uint64_t cpu_mask() noexcept nogil:
    return fdb_cpu_mask()

cdef bint has(int feature) noexcept nogil:
    return fdb_has(feature) != 0

cdef int num_threads() noexcept nogil:
    return fdb_num_threads()


# --- Python wrappers ---

def feature_names():
    """Names in bit order: tuple[str, ...]."""
    return tuple(fdb_feature_name(f).decode("ascii") for f in range(FDB_NFEATURES))

def feature_requires():
    """Direct prerequisites of each feature, as masks, in bit order."""
    return tuple(fdb_feature_requires(f) for f in range(FDB_NFEATURES))

def isa_paths():
    """The ISA path table of every kernel family (cpu_features.h): ((name, needs mask), ...), lowest
    to highest; a path's position is the `isa` value its C kernels take."""
    return tuple((fdb_isa_name(i).decode("ascii"), fdb_isa_needs(i)) for i in range(FDB_ISA_COUNT))

def detected_mask():
    """cpuid and XCR0 agree (before requires, disabling and the AMX grant)."""
    return fdb_cpu_detected()

def usable_mask():
    """What kernels may use now."""
    return fdb_cpu_mask()

def has_feature(int feature):
    """The C API kernels dispatch on: fdb_has(feature)."""
    return fdb_has(feature) != 0

def set_disabled_mask(uint64_t mask):
    """Disable mask (and its dependents); returns the previous mask."""
    return fdb_set_disabled(mask)

def get_disabled_mask():
    return fdb_get_disabled()

def disabled_closure(uint64_t mask):
    """mask plus every feature that requires one of it."""
    return fdb_disabled_closure(mask)

def amx_request():
    """arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA); True if AMX tiles may be used."""
    cdef int granted
    with nogil:
        granted = fdb_amx_request()
    return granted != 0

def amx_granted():
    return fdb_amx_granted() != 0

def get_num_threads():
    return fdb_num_threads()

def set_num_threads(int n):
    """Returns the previous count; the caller validates n."""
    return fdb_set_num_threads(n)

def openmp_enabled():
    return fdb_openmp_enabled() != 0

def omp_thread_limit():
    return fdb_omp_thread_limit()

def omp_team_size():
    """omp_get_num_threads() inside a region opened with num_threads(get_num_threads())."""
    cdef int team
    with nogil:
        team = fdb_omp_team_size()
    return team
