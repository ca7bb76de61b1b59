/* peak_probes.c -- register-only loops that time a core's multiply-add peak (benchmarks only).
 *
 * reference: none (no results, only timing) · tests: spec_tests/test_native_backend.py, spec_tests/test_native_qgemm_amx.py
 *
 * Each loop keeps its operands in registers, written in asm (or tile intrinsics) so the compiler adds
 * no spills or moves; the operands' values do not affect timing. The Python wrappers
 * (_fp32.fma_peak_gmacs, _qgemm.vnni_peak_gmacs, _qgemm.amx_peak_gmacs) check the ISA path is
 * usable before they call, and divide the multiply-adds by the time:
 *   fdb_peak_fma_loop    24 independent vfmadd231ps zmm chains: 24 * 16 float32 MACs per iteration
 *   fdb_peak_vnni_loop   24 independent vpdpbusd zmm chains: 24 * 64 u8 x s8 MACs per iteration
 *   fdb_peak_amx_loop    4 tdpbusd on resident tiles (the AMX GEMM's 2 x 2 pattern): 4 * 16,384
 */
#include <stdint.h>

#include <immintrin.h>

#include "peak_probes.h"
#include "qgemm_amx.h"   /* QG_AMX_CFG */

/* 24 chains: latency 4 (FMA) or 5 (vpdpbusd) x 2 ports, with room. */
__attribute__((target("avx512f")))
int32_t fdb_peak_fma_loop(int64_t iters)
{
    if (iters <= 0) return 0;
    __asm__ volatile(
        "vxorps %%zmm24, %%zmm24, %%zmm24\n\t"
        "vxorps %%zmm25, %%zmm25, %%zmm25\n\t"
        "1:\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm0\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm1\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm2\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm3\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm4\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm5\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm6\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm7\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm8\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm9\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm10\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm11\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm12\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm13\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm14\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm15\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm16\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm17\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm18\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm19\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm20\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm21\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm22\n\t"
        "vfmadd231ps %%zmm25, %%zmm24, %%zmm23\n\t"
        "dec %0\n\t"
        "jnz 1b\n\t"
        : "+r"(iters)
        :
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "cc");
    return (int32_t)iters;
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
int32_t fdb_peak_vnni_loop(int64_t iters)
{
    /* 24 independent register-only vpdpbusd chains (enough for latency 5 x 2 ports), in asm so
     * the compiler cannot add spills or moves; the operands' values do not affect timing. */
    if (iters <= 0) return 0;
    __asm__ volatile(
        "vpxord %%zmm24, %%zmm24, %%zmm24\n\t"
        "vpxord %%zmm25, %%zmm25, %%zmm25\n\t"
        "1:\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm0\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm1\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm2\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm3\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm4\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm5\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm6\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm7\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm8\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm9\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm10\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm11\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm12\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm13\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm14\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm15\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm16\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm17\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm18\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm19\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm20\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm21\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm22\n\t"
        "vpdpbusd %%zmm25, %%zmm24, %%zmm23\n\t"
        "dec %0\n\t"
        "jnz 1b\n\t"
        : "+r"(iters)
        :
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "cc");
    return (int32_t)iters;
}

/* The tile unit's peak: 4 tdpbusd per iteration on register-resident tiles (C tmm0..3 += A tmm4..5 x
 * B tmm6..7, the kernel's 2 x 2 pattern), no loads. Returns 0; the caller checked AMX is usable. */
__attribute__((target("amx-tile,amx-int8")))
int32_t fdb_peak_amx_loop(int64_t iters)
{
    _tile_loadconfig(&QG_AMX_CFG);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_zero(4);
    _tile_zero(5);
    _tile_zero(6);
    _tile_zero(7);
    for (int64_t i = 0; i < iters; i++) {
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 7);
        _tile_dpbusd(2, 5, 6);
        _tile_dpbusd(3, 5, 7);
    }
    _tile_release();
    return 0;
}
