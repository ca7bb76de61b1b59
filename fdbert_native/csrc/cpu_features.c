/* cpu_features.c -- run-time CPU feature detection: cpuid AND the OS state in XCR0 (see the header).
 *
 * reference: none (CPU state; fdbert_native/__init__.py documents it) · tests: spec_tests/test_cpu_features.py
 *
 * Modelled on numpy's npy_cpu_features.c. Compiled into fdbert_native._cpu only (one state per
 * process). Compiles on any architecture; off x86-64 every feature reads as absent.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* syscall() under -std=c11 */
#endif

#include "cpu_features.h"

#include <stdatomic.h>
#include <stddef.h>

#if defined(__x86_64__)
#define FDB_X86 1
#include <cpuid.h>
#else
#define FDB_X86 0
#endif

#if FDB_X86 && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_GET_XCOMP_PERM_ 0x1022 /* arch_prctl codes, <asm/prctl.h> (Linux 5.16+) */
#define ARCH_REQ_XCOMP_PERM_ 0x1023
#define XFEATURE_XTILEDATA 18 /* XSAVE state component 18: the eight 1 KiB tile registers */
#endif

/* The 32-bit cpuid output words a feature bit can live in. */
enum cpuid_word {
    CPUID_1_ECX,   /* leaf 1: ECX */
    CPUID_7_0_EBX, /* leaf 7, subleaf 0: EBX */
    CPUID_7_0_ECX, /* leaf 7, subleaf 0: ECX */
    CPUID_7_0_EDX, /* leaf 7, subleaf 0: EDX */
    CPUID_7_1_EAX, /* leaf 7, subleaf 1: EAX */
    CPUID_NWORDS
};

/* Register state the OS must save (XCR0 bits) before a feature's instructions may run. */
enum os_state {
    OS_NONE, /* SSE state: always enabled on x86-64 */
    OS_YMM,  /* XCR0 bits 1,2 (SSE, AVX) and CPUID.1:ECX.AVX */
    OS_ZMM,  /* OS_YMM and XCR0 bits 5,6,7 (opmask, ZMM_Hi256, Hi16_ZMM): (xcr0 & 0xe6) == 0xe6 */
    OS_TILE, /* XCR0 bits 17,18 (XTILECFG, XTILEDATA) */
    OS_NSTATES
};

struct feature_info {
    const char *name;
    enum cpuid_word word;
    int bit;
    enum os_state os;
    uint64_t requires; /* direct prerequisites; disabling one of them disables this feature */
};

#define REQ(f) FDB_BIT(FDB_##f)

/* The table. Prerequisites follow what code compiled for the feature may execute: gcc's
 * target("avx512f") implies avx2, and no CPU has AVX-512 without FMA/F16C, so avx512f requires all
 * three. VNNI and BF16 kernels also use BW/VL instructions, and every CPU with them has BW/VL.
 * Our AMX kernels convert and requantize with AVX-512, and no CPU has AMX without it. */
static const struct feature_info FEATURES[FDB_NFEATURES] = {
    /*                   name          cpuid word     bit  OS state  requires */
    [FDB_SSE4_2]     = {"sse4_2",     CPUID_1_ECX,   20, OS_NONE, 0},
    [FDB_AVX2]       = {"avx2",       CPUID_7_0_EBX,  5, OS_YMM,  REQ(SSE4_2)},
    [FDB_FMA]        = {"fma",        CPUID_1_ECX,   12, OS_YMM,  REQ(SSE4_2)},
    [FDB_F16C]       = {"f16c",       CPUID_1_ECX,   29, OS_YMM,  REQ(SSE4_2)},
    [FDB_AVX512F]    = {"avx512f",    CPUID_7_0_EBX, 16, OS_ZMM,  REQ(AVX2) | REQ(FMA) | REQ(F16C)},
    [FDB_AVX512BW]   = {"avx512bw",   CPUID_7_0_EBX, 30, OS_ZMM,  REQ(AVX512F)},
    [FDB_AVX512VL]   = {"avx512vl",   CPUID_7_0_EBX, 31, OS_ZMM,  REQ(AVX512F)},
    [FDB_AVX512DQ]   = {"avx512dq",   CPUID_7_0_EBX, 17, OS_ZMM,  REQ(AVX512F)},
    [FDB_AVX512VNNI] = {"avx512vnni", CPUID_7_0_ECX, 11, OS_ZMM,  REQ(AVX512BW) | REQ(AVX512VL)},
    [FDB_AVX512BF16] = {"avx512bf16", CPUID_7_1_EAX,  5, OS_ZMM,  REQ(AVX512BW) | REQ(AVX512VL)},
    [FDB_AVX_VNNI]   = {"avx_vnni",   CPUID_7_1_EAX,  4, OS_YMM,  REQ(AVX2)},
    [FDB_AMX_TILE]   = {"amx_tile",   CPUID_7_0_EDX, 24, OS_TILE, REQ(AVX512F)},
    [FDB_AMX_INT8]   = {"amx_int8",   CPUID_7_0_EDX, 25, OS_TILE, REQ(AMX_TILE)},
    [FDB_AMX_BF16]   = {"amx_bf16",   CPUID_7_0_EDX, 22, OS_TILE, REQ(AMX_TILE)},
};

#define VALID ((uint64_t)1 << 63) /* marks g_detected as computed */

static _Atomic uint64_t g_detected;      /* VALID | detected mask (conditions 1, 2); 0 = not yet */
static _Atomic uint64_t g_supported;     /* detected, closed over requires (condition 3) */
static _Atomic uint64_t g_disabled;      /* the user's mask, as given */
static _Atomic uint64_t g_disabled_all;  /* fdb_disabled_closure(g_disabled) */
static atomic_int g_amx_granted = -1;    /* -1 unknown, 0 no, 1 yes */

const char *fdb_feature_name(int feature)
{
    return (feature >= 0 && feature < FDB_NFEATURES) ? FEATURES[feature].name : NULL;
}

uint64_t fdb_feature_requires(int feature)
{
    return (feature >= 0 && feature < FDB_NFEATURES) ? FEATURES[feature].requires : 0;
}

#if FDB_X86

static void read_cpuid(uint32_t words[CPUID_NWORDS], int *osxsave, int *avx)
{
    unsigned a, b, c, d;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    for (int i = 0; i < CPUID_NWORDS; i++) words[i] = 0;
    *osxsave = *avx = 0;
    if (max_leaf >= 1) {
        __cpuid_count(1, 0, a, b, c, d);
        words[CPUID_1_ECX] = c;
        *osxsave = (c >> 27) & 1; /* the OS enabled XSAVE: xgetbv is legal */
        *avx = (c >> 28) & 1;
    }
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        words[CPUID_7_0_EBX] = b;
        words[CPUID_7_0_ECX] = c;
        words[CPUID_7_0_EDX] = d;
        if (a >= 1) { /* EAX of subleaf 0 = the highest valid subleaf */
            __cpuid_count(7, 1, a, b, c, d);
            words[CPUID_7_1_EAX] = a;
        }
    }
}

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int linux_amx_permitted(void)
{
#if defined(__linux__)
    unsigned long bitmask = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM_, &bitmask) != 0) return 0;
    return (bitmask >> XFEATURE_XTILEDATA) & 1;
#else
    return 1; /* other OSes grant the state with XCR0 */
#endif
}

static uint64_t detect(int *amx_permitted)
{
    uint32_t words[CPUID_NWORDS];
    int osxsave, avx;
    read_cpuid(words, &osxsave, &avx);
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;

    int os_ok[OS_NSTATES];
    os_ok[OS_NONE] = 1;
    os_ok[OS_YMM] = avx && (xcr0 & 0x6) == 0x6;
    os_ok[OS_ZMM] = os_ok[OS_YMM] && (xcr0 & 0xe6) == 0xe6;
    os_ok[OS_TILE] = (xcr0 & 0x60000) == 0x60000;

    uint64_t mask = 0;
    for (int f = 0; f < FDB_NFEATURES; f++) {
        const struct feature_info *fi = &FEATURES[f];
        if (((words[fi->word] >> fi->bit) & 1) && os_ok[fi->os]) mask |= FDB_BIT(f);
    }
    *amx_permitted = (mask & FDB_BIT(FDB_AMX_TILE)) ? linux_amx_permitted() : 0;
    return mask;
}

#else /* not x86-64 */

static uint64_t detect(int *amx_permitted)
{
    *amx_permitted = 0;
    return 0;
}

#endif

/* Closing over requires in table order works in one pass: prerequisites have smaller numbers. */
static uint64_t close_over_requires(uint64_t detected)
{
    uint64_t supported = 0;
    for (int f = 0; f < FDB_NFEATURES; f++)
        if ((detected & FDB_BIT(f)) && (FEATURES[f].requires & ~supported) == 0) supported |= FDB_BIT(f);
    return supported;
}

uint64_t fdb_disabled_closure(uint64_t mask)
{
    uint64_t closed = mask;
    for (int f = 0; f < FDB_NFEATURES; f++)
        if (FEATURES[f].requires & closed) closed |= FDB_BIT(f);
    return closed;
}

/* Idempotent: racing threads compute and store the same values. */
static uint64_t ensure_detected(void)
{
    uint64_t d = atomic_load(&g_detected);
    if (d & VALID) return d & ~VALID;
    int amx_permitted;
    d = detect(&amx_permitted);
    int unknown = -1; /* a concurrent fdb_amx_request() may already have set the grant */
    atomic_compare_exchange_strong(&g_amx_granted, &unknown, amx_permitted);
    atomic_store(&g_supported, close_over_requires(d));
    atomic_store(&g_detected, d | VALID);
    return d;
}

uint64_t fdb_cpu_detected(void)
{
    return ensure_detected();
}

uint64_t fdb_cpu_mask(void)
{
    ensure_detected();
    uint64_t usable = atomic_load(&g_supported) & ~atomic_load(&g_disabled_all);
    if (atomic_load(&g_amx_granted) != 1) usable &= ~FDB_AMX_MASK;
    return usable;
}

int fdb_has(int feature)
{
    if (feature < 0 || feature >= FDB_NFEATURES) return 0;
    return (int)((fdb_cpu_mask() >> feature) & 1);
}

uint64_t fdb_set_disabled(uint64_t mask)
{
    mask &= FDB_BIT(FDB_NFEATURES) - 1;
    atomic_store(&g_disabled_all, fdb_disabled_closure(mask));
    return atomic_exchange(&g_disabled, mask);
}

uint64_t fdb_get_disabled(void)
{
    return atomic_load(&g_disabled);
}

int fdb_amx_granted(void)
{
    ensure_detected();
    return atomic_load(&g_amx_granted) == 1;
}

int fdb_amx_request(void)
{
    if (!(ensure_detected() & FDB_BIT(FDB_AMX_TILE))) return 0;
    if (atomic_load(&g_amx_granted) == 1) return 1;
#if FDB_X86 && defined(__linux__)
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM_, XFEATURE_XTILEDATA) != 0) return 0;
    if (!linux_amx_permitted()) return 0;
#endif
    atomic_store(&g_amx_granted, 1);
    return 1;
}

/* ---- the ISA path table (cpu_features.h) */

static const char *const ISA_NAMES[FDB_ISA_COUNT] = {
#define FDB_ISA_NAME(id, name, needs) name,
    FDB_ISA_PATHS(FDB_ISA_NAME)
#undef FDB_ISA_NAME
};

static const uint64_t ISA_NEEDS[FDB_ISA_COUNT] = {
#define FDB_ISA_NEEDS(id, name, needs) needs,
    FDB_ISA_PATHS(FDB_ISA_NEEDS)
#undef FDB_ISA_NEEDS
};

const char *fdb_isa_name(int isa)
{
    return isa >= 0 && isa < FDB_ISA_COUNT ? ISA_NAMES[isa] : NULL;
}

uint64_t fdb_isa_needs(int isa)
{
    return isa >= 0 && isa < FDB_ISA_COUNT ? ISA_NEEDS[isa] : 0;
}
