# fdbert_native/_cpu.pxd -- what other extension modules cimport from fdbert_native._cpu.
#
# The process-wide native state (detected CPU features, the user's disabled list, the AMX grant, the
# thread count) lives once, in _cpu. Another module reaches it through Cython's cross-module C-API
# (Cython imports _cpu at that module's init and calls through function pointers):
#
#     from fdbert_native._cpu cimport cpu_mask, num_threads, FDB_AVX512VNNI
#     isa = cpu_mask()                      # then pass isa and num_threads() to the C kernel
#
# Do not add csrc/cpu_features.c or csrc/threads.c to another module's sources: that module would
# get a private copy of the state that set_disabled_features / set_num_threads never reach.
from libc.stdint cimport uint64_t

cdef extern from "cpu_features.h":
    # Bit numbers: test a mask with  isa & (<uint64_t>1 << FDB_AVX512VNNI)
    enum:
        FDB_SSE4_2
        FDB_AVX2
        FDB_FMA
        FDB_F16C
        FDB_AVX512F
        FDB_AVX512BW
        FDB_AVX512VL
        FDB_AVX512DQ
        FDB_AVX512VNNI
        FDB_AVX512BF16
        FDB_AVX_VNNI
        FDB_AMX_TILE
        FDB_AMX_INT8
        FDB_AMX_BF16
        FDB_NFEATURES

cdef uint64_t cpu_mask() noexcept nogil       # usable features now (after disabling)
cdef bint has(int feature) noexcept nogil      # feature in cpu_mask()
cdef int num_threads() noexcept nogil          # threads for every parallel region
