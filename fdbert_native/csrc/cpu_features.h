/* cpu_features.h -- which x86 instruction sets fdbert kernels may use, decided at run time.
 *
 * reference: none (CPU state; fdbert_native/__init__.py documents it) · tests: spec_tests/test_cpu_features.py
 *
 * A feature is USABLE when all of these hold:
 *   1. the CPU reports it (cpuid);
 *   2. the OS saves its register state on context switch (xgetbv XCR0: ymm for AVX-class, opmask + zmm
 *      for AVX-512, XTILECFG + XTILEDATA for AMX) -- without this check the first vector instruction
 *      faults on a kernel that does not manage the state (ggml forgot it; numpy checks it);
 *   3. everything it requires (the `requires` column of the table in cpu_features.c) is usable;
 *   4. the user has not disabled it, nor anything it requires (fdb_set_disabled; Python parses the
 *      FDBERT_DISABLE_CPU_FEATURES environment variable and calls it at import);
 *   5. AMX only: Linux has granted this process the tile-data permission (fdb_amx_request).
 *
 * Detection (1-3) runs once and is cached; the disabled mask and the AMX grant are atomics, so
 * fdb_cpu_mask() is a few loads and ANDs: cheap enough to call on every kernel invocation.
 *
 * ONE copy per process: this file's state lives in the extension module fdbert_native._cpu and
 * nowhere else. Other extension modules must not compile cpu_features.c (they would get a private
 * copy that never sees set_disabled_features). They include this header for the FDB_* constants only
 * and obtain the mask through Cython:  `from fdbert_native._cpu cimport cpu_mask, num_threads`,
 * then pass `isa` (a mask) and `nthreads` to their C kernels as arguments.
 */
#ifndef FDBERT_CPU_FEATURES_H
#define FDBERT_CPU_FEATURES_H

#include <stdint.h>

/* Bit positions, in dependency order: a feature's prerequisites always have smaller numbers. */
enum fdb_feature {
    FDB_SSE4_2 = 0,
    FDB_AVX2,
    FDB_FMA,
    FDB_F16C,
    FDB_AVX512F,
    FDB_AVX512BW,
    FDB_AVX512VL,
    FDB_AVX512DQ,
    FDB_AVX512VNNI,
    FDB_AVX512BF16,
    FDB_AVX_VNNI,
    FDB_AMX_TILE,
    FDB_AMX_INT8,
    FDB_AMX_BF16,
    FDB_NFEATURES
};

#define FDB_BIT(feature) ((uint64_t)1 << (feature))
#define FDB_AMX_MASK (FDB_BIT(FDB_AMX_TILE) | FDB_BIT(FDB_AMX_INT8) | FDB_BIT(FDB_AMX_BF16))

/* ---- The ISA paths: ONE table for every kernel family ----------------------------------------------
 * A path is a name, the features it needs, and the target its code compiles for. Every kernel family
 * implements some of these paths (its wrapper lists which, as an IsaPaths of fdbert_native._checks);
 * path X may run when FDB_NEEDS_X is a subset of fdb_cpu_mask(). A kernel's code for path X is
 * compiled with FDB_TARGET_X, or with a subset of it: never an instruction its needs do not cover.
 * Functions of path X carry the suffix _x (_generic, _avx2, _avx2_vnni, _avx512, _avx512vnni, _amx).
 *
 *   path        needs (usable also implies what these require: avx512f -> avx2, fma, f16c)
 *   generic     -                                    plain C, the readable definition
 *   avx2        avx2 fma                             256-bit (Haswell, Zen)
 *   avx2_vnni   avx2 fma avx_vnni                    256-bit VEX vpdpbusd (Alder Lake)
 *   avx512      avx512f avx512bw avx512vl avx512dq   512-bit (Skylake-SP)
 *   avx512vnni  avx512 + avx512vnni                  512-bit vpdpbusd (Cascade Lake)
 *   amx         avx512vnni + amx_tile amx_int8       AMX-INT8 tiles (Sapphire Rapids)
 */
#define FDB_NEEDS_GENERIC 0
#define FDB_NEEDS_AVX2 (FDB_BIT(FDB_AVX2) | FDB_BIT(FDB_FMA))
#define FDB_NEEDS_AVX2_VNNI (FDB_NEEDS_AVX2 | FDB_BIT(FDB_AVX_VNNI))
#define FDB_NEEDS_AVX512 (FDB_BIT(FDB_AVX512F) | FDB_BIT(FDB_AVX512BW) | FDB_BIT(FDB_AVX512VL) \
                          | FDB_BIT(FDB_AVX512DQ))
#define FDB_NEEDS_AVX512VNNI (FDB_NEEDS_AVX512 | FDB_BIT(FDB_AVX512VNNI))
#define FDB_NEEDS_AMX (FDB_NEEDS_AVX512VNNI | FDB_BIT(FDB_AMX_TILE) | FDB_BIT(FDB_AMX_INT8))

/* Compile targets: FDB_TARGETS_X the string (for `#pragma GCC target` regions, qgemm_isas.inc),
 * FDB_TARGET_X the function attribute. */
#define FDB_TARGETS_AVX2 "avx2,fma"
#define FDB_TARGETS_AVX2_VNNI "avx2,fma,avxvnni"
#define FDB_TARGETS_AVX512 "avx512f,avx512bw,avx512vl,avx512dq"
#define FDB_TARGETS_AVX512VNNI "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"
#define FDB_TARGET_AVX2 __attribute__((target(FDB_TARGETS_AVX2)))
#define FDB_TARGET_AVX2_VNNI __attribute__((target(FDB_TARGETS_AVX2_VNNI)))
#define FDB_TARGET_AVX512 __attribute__((target(FDB_TARGETS_AVX512)))
#define FDB_TARGET_AVX512VNNI __attribute__((target(FDB_TARGETS_AVX512VNNI)))

/* X(ID, name, needs): the paths, lowest to highest; the enum below numbers them. */
#define FDB_ISA_PATHS(X)                                   \
    X(GENERIC, "generic", FDB_NEEDS_GENERIC)              \
    X(AVX2, "avx2", FDB_NEEDS_AVX2)                       \
    X(AVX2_VNNI, "avx2_vnni", FDB_NEEDS_AVX2_VNNI)        \
    X(AVX512, "avx512", FDB_NEEDS_AVX512)                 \
    X(AVX512VNNI, "avx512vnni", FDB_NEEDS_AVX512VNNI)     \
    X(AMX, "amx", FDB_NEEDS_AMX)

/* The `isa` argument of every kernel entry point. */
enum fdb_isa {
#define FDB_ISA_ENUM(id, name, needs) FDB_ISA_##id,
    FDB_ISA_PATHS(FDB_ISA_ENUM)
#undef FDB_ISA_ENUM
    FDB_ISA_COUNT
};

/* The path's name ("avx512"), or NULL when out of range. */
const char *fdb_isa_name(int isa);
/* The features the path needs, as a mask (0 when out of range). */
uint64_t fdb_isa_needs(int isa);

/* Lower-case name of a feature ("avx512vnni"), or NULL when out of range. */
const char *fdb_feature_name(int feature);
/* Direct prerequisites of a feature as a mask (0 when out of range). */
uint64_t fdb_feature_requires(int feature);

/* What the CPU and OS support (conditions 1 and 2 only): cached, never changes. */
uint64_t fdb_cpu_detected(void);
/* What kernels may use now (conditions 1-5). */
uint64_t fdb_cpu_mask(void);
/* 1 if `feature` is in fdb_cpu_mask(), else 0 (also 0 when out of range). */
int fdb_has(int feature);

/* Disable `mask` (plus everything that requires any of it); returns the previous argument. */
uint64_t fdb_set_disabled(uint64_t mask);
/* The mask last given to fdb_set_disabled (before closing over dependents). */
uint64_t fdb_get_disabled(void);
/* `mask` plus every feature that transitively requires a feature in `mask`. */
uint64_t fdb_disabled_closure(uint64_t mask);

/* Ask Linux for permission to use AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA).
 * Idempotent; returns 1 if this process may use AMX tiles (now or already), 0 if not (no AMX in
 * the CPU/OS, kernel too old, or refused). Off Linux, XCR0 alone decides. */
int fdb_amx_request(void);
/* 1 if the tile-data permission is held (without asking for it). */
int fdb_amx_granted(void);

#endif /* FDBERT_CPU_FEATURES_H */
