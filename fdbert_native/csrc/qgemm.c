/* qgemm.c -- INT8 dense GEMM: weight packing, per-ISA register tiles, the driver (epilogue: qepilogue.c).
 *
 * reference: fdbert/reference/qlinear.py, fdbert/int8.py (matmul_u8s8_s32) · tests: spec_tests/test_native_qgemm.py, spec_tests/test_native_qlinear.py
 *
 *   out[m, n] = epilogue( sum_k x[m, k] * W[n, k] )      x u8 [M, K], W s8 [N, K] (see qgemm.h)
 *
 * Kernel versions (one tile body, qgemm_dense.inc, compiled per ISA by qgemm_isas.inc;
 * selected by `isa`):
 *   generic     plain C int32 loops over the packed layout (the oracle for the SIMD paths)
 *   avx2        256-bit, int16 operands + vpmaddwd                 2 x 16 tile  (8 accumulators);
 *               qg_gemm runs qg_gemm_avx2w instead: operands widened once per task, 3 x 16 tile
 *               (12 accumulators; see "avx2: widened operands" below)
 *   avx2_vnni   256-bit VEX vpdpbusd                              4 x 16 tile  (8 accumulators)
 *   avx512      512-bit, int16 operands + vpmaddwd                 4 x 32 tile  (16 accumulators)
 *   avx512vnni  512-bit EVEX vpdpbusd                             6 x 64 tile  (24 accumulators)
 *
 * Without VNNI, why int16 and vpmaddwd: vpmaddubsw, the u8 x s8 instruction of AVX2 / AVX-512BW,
 * adds two products into a *saturating* int16, and 255*127 + 255*127 = 64770 > 32767 (ONNX Runtime
 * issues 5849, 6004). So each s8 weight vector is sign-extended to two int16 vectors as it is
 * loaded (its channel halves; the weight bytes streamed stay s8) and each row's 4 activation bytes
 * zero-extended into one int16 broadcast: vpmaddwd's int32 pair sums are exact, and the pairs are
 * added per channel once per tile (qgemm_dense.inc).
 *
 * Blocking (driver below): threads take (N-chunk of ~1 MB of weights, M-chunk of ~256 KB of x)
 * tiles in N-major static order, so a thread keeps its weight chunk in L2 while it walks the
 * M chunks; inside a tile, one 64-channel weight panel (64*K bytes) is reused across the MR-row
 * steps of the M chunk (M-major order would re-stream every weight from L3 for each M chunk).
 * K is never split, so every thread count gives the same bits.
 * Speed: docs/benchmarks.md (current figures); why this blocking: docs/kernels.md.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "qgemm.h"
#include "qgemm_internal.h"

/* ---------------------------------------------------------------- packing (load time, once) */

int64_t qg_packed_dense_size(int64_t N, int64_t K)
{
    return ((N + 15) / 16) * ((K + 3) / 4) * 64;
}

void qg_pack_dense(const int8_t *w__nk, int64_t N, int64_t K, int8_t *packed, int32_t *colsum)
{
    const int64_t Nb = (N + 15) / 16, Kg = (K + 3) / 4;
    memset(packed, 0, (size_t)(Nb * Kg * 64));
    for (int64_t n = 0; n < N; n++) {
        int32_t s = 0;
        int8_t *dst = packed + (n / 16) * Kg * 64 + (n % 16) * 4; /* packed[n/16][g][n%16][i] */
        for (int64_t k = 0; k < K; k++) {
            s += w__nk[n * K + k];
            dst[(k / 4) * 64 + (k % 4)] = w__nk[n * K + k];
        }
        colsum[n] = s;
    }
}

/* ---------------------------------------------------------------- register tiles per ISA */

/* generic: tile[r][j*16 + c] += sum_{k0 <= k < K} x[r][k] * W[16 b_j + c, k], plain C. */
static void dense_tile_cols_generic(const uint8_t *const *xr, int64_t k0, int64_t K,
                                    const int8_t *const *wb, int32_t *tile, int mr, int nblk)
{
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nblk; j++) {
            int32_t *t = tile + r * nblk * 16 + j * 16;
            for (int64_t k = k0; k < K; k++) {
                const int32_t xv = xr[r][k];
                const int8_t *w = wb[j] + (k / 4) * 64 + (k % 4);   /* packed[b][k/4][c][k%4] */
                for (int c = 0; c < 16; c++) t[c] += xv * (int32_t)w[4 * c];
            }
        }
}

/* The K % 4 tail of every SIMD tile is the generic loop. */
static inline void dense_tile_ktail_generic(const uint8_t *const *xr, int64_t K,
                                            const int8_t *const *wb, int32_t *tile, int mr,
                                            int nblk)
{
    if (K & 3) dense_tile_cols_generic(xr, K & ~(int64_t)3, K, wb, tile, mr, nblk);
}

/* generic: the same tile contract in plain C (MR = 4 rows x 1 block). */
static void dense_tile_generic(const uint8_t *const *xr, int64_t K, const int8_t *const *wb,
                               int32_t *tile)
{
    memset(tile, 0, 4 * 16 * sizeof(int32_t));
    dense_tile_cols_generic(xr, 0, K, wb, tile, 4, 1);
}
static const qg_tile_kernel dense_kernel_generic = { dense_tile_generic, 4, 1 };

/* The SIMD paths (QG_SIMD_PATHS): the tile shape of each, MR rows x NBLK 16-channel blocks
 * (MR * NBLK * VPB accumulators); qgemm_dense.inc compiled once per path (qgemm_isas.inc). */
#define QG_DENSE_MR_avx512vnni 6     /* 512-bit EVEX vpdpbusd: 6 x 64, 24 zmm */
#define QG_DENSE_NBLK_avx512vnni 4
#define QG_DENSE_MR_avx512 4         /* 512-bit vpmaddwd on int16 (see the file comment): 4 x 32 */
#define QG_DENSE_NBLK_avx512 2
#define QG_DENSE_MR_avx2_vnni 4      /* 256-bit VEX vpdpbusd (AVX-VNNI): 4 x 16 */
#define QG_DENSE_NBLK_avx2_vnni 1
#define QG_DENSE_MR_avx2 2           /* 256-bit vpmaddwd on int16: 2 x 16 */
#define QG_DENSE_NBLK_avx2 1
#define QG_TEMPLATE "qgemm_dense.inc"
#include "qgemm_isas.inc"

static const qg_tile_kernel *dense_kernel_for(int isa)
{
    switch (isa) {
    case FDB_ISA_GENERIC: return &dense_kernel_generic;
#define QG_DENSE_CASE(sfx, id) case FDB_ISA_##id: return &dense_kernel_##sfx;
    QG_SIMD_PATHS(QG_DENSE_CASE)
#undef QG_DENSE_CASE
    default: return NULL;
    }
}

/* ---------------------------------------------------------------- avx2: widened operands, 3 x 16 tile
 *
 * The avx2 tile above widens its two 16-channel weight vectors to int16 inside the k loop, which
 * with 16 ymm registers leaves room for 2 rows only: per k-group 4 vpmovsxbw and 2 x broadcasts (3
 * shuffle uops each) for 8 vpmaddwd, and the shuffles and the vpaddd that follow each vpmaddwd
 * compete for the same two pipes (Zen 3), so vpmaddwd, the multiply this path is bound by, issued
 * about half the cycles. Here the driver widens once per task instead: each 16-channel weight panel
 * (s8 [K/4][16][4] -> int16, the same order: 128 B per k-group, 2 KB per 16 k) into a per-thread
 * buffer reused over the rows of the M chunk, and the chunk's x rows (u8 -> int16) into another.
 * The tile then reads its weights as vpmaddwd memory operands and each row's 4 activations with one
 * vpbroadcastq, which frees the registers for 3 rows x 4 accumulators (12 vpmaddwd per k-group, no
 * shuffle in the loop). Same int32 sums as every other path (integer adds, exact), so the same bits.
 */
#define QG_W16_MR 3

FDB_TARGET_AVX2
static void w16_widen_panel(const int8_t *wb, int64_t kfull, int16_t *dst)   /* [kfull][64] */
{
    for (int64_t i = 0; i < kfull * 64; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wb + i))));
}

FDB_TARGET_AVX2
static void w16_widen_rows(const uint8_t *x__mk, int64_t K, int64_t m0, int64_t rows, int64_t kpad,
                           int16_t *dst)   /* dst[r][kpad] = x[m0 + r][k] for k < 4 * (K / 4) */
{
    const int64_t kf = K & ~(int64_t)3;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *src = x__mk + (m0 + r) * K;
        int16_t *d = dst + r * kpad;
        int64_t k = 0;
        for (; k + 16 <= kf; k += 16)
            _mm256_storeu_si256((__m256i *)(d + k),
                                _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(src + k))));
        for (; k < kf; k++) d[k] = src[k];
    }
}

/* tile[r][c] = sum_{k < 4 kfull} xw[r][k] * W[c, k] for r < 3, c < 16, from the widened panel ww
 * ([kfull][16 channels][4 k] int16) and rows xw[r] (int16, 4 kfull entries each).
 * Per k-group: each row's 4 activations broadcast (vpbroadcastq), then for each of the panel's 4
 * vectors (channels 4v..4v+3, int32 lanes (k pair 0, k pair 1) each) one vpmaddwd with the weight
 * as a memory operand and one vpaddd per row: acc[r][v] is ymm(4r + v). In asm because GCC keeps
 * the 4 weight vectors in registers and then spills accumulators (12 + 4 + 3 > 16 registers).
 * At the end, per row and 8 channels: vphaddd of two accumulators gives c0 c1 c4 c5 | c2 c3 c6 c7,
 * vpermq 0xD8 orders them. */
FDB_TARGET_AVX2
static void w16_tile(const int16_t *const *xw, const int16_t *ww, int64_t kfull, int32_t *tile)
{
    const int16_t *x0 = xw[0], *x1 = xw[1], *x2 = xw[2], *w = ww;
    int64_t n = kfull;
    __asm__ volatile(
        "vpxor %%xmm0, %%xmm0, %%xmm0\n\t"
        "vmovdqa %%ymm0, %%ymm1\n\t"
        "vmovdqa %%ymm0, %%ymm2\n\t"
        "vmovdqa %%ymm0, %%ymm3\n\t"
        "vmovdqa %%ymm0, %%ymm4\n\t"
        "vmovdqa %%ymm0, %%ymm5\n\t"
        "vmovdqa %%ymm0, %%ymm6\n\t"
        "vmovdqa %%ymm0, %%ymm7\n\t"
        "vmovdqa %%ymm0, %%ymm8\n\t"
        "vmovdqa %%ymm0, %%ymm9\n\t"
        "vmovdqa %%ymm0, %%ymm10\n\t"
        "vmovdqa %%ymm0, %%ymm11\n\t"
        "test %[n], %[n]\n\t"
        "jle 2f\n\t"
        "1:\n\t"
        "vpbroadcastq (%[x0]), %%ymm12\n\t"
        "vpbroadcastq (%[x1]), %%ymm13\n\t"
        "vpbroadcastq (%[x2]), %%ymm14\n\t"
        "vpmaddwd 0(%[w]), %%ymm12, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm0, %%ymm0\n\t"
        "vpmaddwd 0(%[w]), %%ymm13, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm4, %%ymm4\n\t"
        "vpmaddwd 0(%[w]), %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm8, %%ymm8\n\t"
        "vpmaddwd 32(%[w]), %%ymm12, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm1, %%ymm1\n\t"
        "vpmaddwd 32(%[w]), %%ymm13, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm5, %%ymm5\n\t"
        "vpmaddwd 32(%[w]), %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm9, %%ymm9\n\t"
        "vpmaddwd 64(%[w]), %%ymm12, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm2, %%ymm2\n\t"
        "vpmaddwd 64(%[w]), %%ymm13, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm6, %%ymm6\n\t"
        "vpmaddwd 64(%[w]), %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm10, %%ymm10\n\t"
        "vpmaddwd 96(%[w]), %%ymm12, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm3, %%ymm3\n\t"
        "vpmaddwd 96(%[w]), %%ymm13, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm7, %%ymm7\n\t"
        "vpmaddwd 96(%[w]), %%ymm14, %%ymm15\n\t"
        "vpaddd %%ymm15, %%ymm11, %%ymm11\n\t"
        "add $8, %[x0]\n\t"
        "add $8, %[x1]\n\t"
        "add $8, %[x2]\n\t"
        "sub $-128, %[w]\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        "2:\n\t"
        "vphaddd %%ymm1, %%ymm0, %%ymm0\n\t"
        "vpermq $0xD8, %%ymm0, %%ymm0\n\t"
        "vmovdqu %%ymm0, 0(%[t])\n\t"
        "vphaddd %%ymm3, %%ymm2, %%ymm2\n\t"
        "vpermq $0xD8, %%ymm2, %%ymm2\n\t"
        "vmovdqu %%ymm2, 32(%[t])\n\t"
        "vphaddd %%ymm5, %%ymm4, %%ymm4\n\t"
        "vpermq $0xD8, %%ymm4, %%ymm4\n\t"
        "vmovdqu %%ymm4, 64(%[t])\n\t"
        "vphaddd %%ymm7, %%ymm6, %%ymm6\n\t"
        "vpermq $0xD8, %%ymm6, %%ymm6\n\t"
        "vmovdqu %%ymm6, 96(%[t])\n\t"
        "vphaddd %%ymm9, %%ymm8, %%ymm8\n\t"
        "vpermq $0xD8, %%ymm8, %%ymm8\n\t"
        "vmovdqu %%ymm8, 128(%[t])\n\t"
        "vphaddd %%ymm11, %%ymm10, %%ymm10\n\t"
        "vpermq $0xD8, %%ymm10, %%ymm10\n\t"
        "vmovdqu %%ymm10, 160(%[t])\n\t"
        : [x0] "+r"(x0), [x1] "+r"(x1), [x2] "+r"(x2), [w] "+r"(w), [n] "+r"(n)
        : [t] "r"(tile)
        : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

/* Per-thread buffers of the avx2 driver, kept between calls (OpenMP keeps its threads). */
static __thread int16_t *w16_buf;
static __thread size_t w16_cap;

static int16_t *w16_buffer(size_t n)   /* >= n int16, 64-byte aligned; NULL if out of memory */
{
    if (n > w16_cap || !w16_buf) {   /* (n = 0 when K < 4: still a valid pointer) */
        n = n > 32 ? n : 32;
        free(w16_buf);
        w16_buf = aligned_alloc(64, (n * sizeof(int16_t) + 63) / 64 * 64);
        w16_cap = w16_buf ? n : 0;
    }
    return w16_buf;
}

static int qg_gemm_avx2w(const uint8_t *x__mk, int64_t M, int64_t K, const int8_t *packed, int64_t N,
                         const qg_epilogue *ep, int nthreads)
{
    const int mr = QG_W16_MR;
    const int64_t Nb = (N + 15) / 16, kfull = K / 4, wstride = ((K + 3) / 4) * 64;
    const int64_t kpad = (kfull * 4 + 15) / 16 * 16;   /* widened row stride (int16) */
    int64_t MC, NCB;
    qg_dense_chunks(M, K, Nb, wstride, mr, 1, nthreads, &MC, &NCB);
    const int64_t n_mc = (M + MC - 1) / MC, n_nc = (Nb + NCB - 1) / NCB;
    int failed = 0;

#pragma omp parallel for schedule(static) num_threads(nthreads) reduction(|:failed)
    for (int64_t t = 0; t < n_mc * n_nc; t++) {
        const int64_t mc = t % n_mc, bend = ((t / n_mc) + 1) * NCB < Nb ? ((t / n_mc) + 1) * NCB : Nb;
        const int64_t m0 = mc * MC, mend = (mc + 1) * MC < M ? (mc + 1) * MC : M;
        int16_t *xw = w16_buffer((size_t)(MC * kpad + kfull * 64));
        if (!xw) { failed = 1; continue; }
        int16_t *ww = xw + MC * kpad;
        w16_widen_rows(x__mk, K, m0, mend - m0, kpad, xw);
        int32_t tile[QG_W16_MR * 16];
        for (int64_t b = (t / n_mc) * NCB; b < bend; b++) {   /* 16-channel panels */
            const int64_t n0 = b * 16, ncols = N - n0 < 16 ? N - n0 : 16;
            const int8_t *wb = packed + b * wstride;
            w16_widen_panel(wb, kfull, ww);
            for (int64_t m = m0; m < mend; m += mr) {
                const int64_t rows = mend - m < mr ? mend - m : mr;
                const int16_t *xr16[QG_W16_MR];
                const uint8_t *xr[QG_W16_MR];
                for (int r = 0; r < mr; r++) {   /* rows past M re-read row m; results dropped */
                    xr16[r] = xw + (m - m0 + (r < rows ? r : 0)) * kpad;
                    xr[r] = x__mk + (m + (r < rows ? r : 0)) * K;
                }
                w16_tile(xr16, ww, kfull, tile);
                dense_tile_ktail_generic(xr, K, &wb, tile, mr, 1);   /* the K % 4 last columns */
                qg_epilogue_rows(tile, 16, m, rows, n0, ncols, N, ep, FDB_ISA_AVX2);
            }
        }
    }
    return failed ? QG_ENOMEM : QG_OK;
}

/* ---------------------------------------------------------------- driver */

int qg_gemm(const uint8_t *x__mk, int64_t M, int64_t K, const int8_t *packed, int64_t N,
            const qg_epilogue *ep, int isa, int nthreads)
{
    const qg_tile_kernel *tk = dense_kernel_for(isa);
    if (!tk) return QG_EBADISA;
    if (M <= 0 || N <= 0) return QG_OK;

    const int mr = tk->mr, nb = tk->nblk;
    const int64_t Nb = (N + 15) / 16, wstride = ((K + 3) / 4) * 64;
    if (nthreads <= 0) nthreads = qg_default_threads();
    if (isa == FDB_ISA_AVX2) return qg_gemm_avx2w(x__mk, M, K, packed, N, ep, nthreads);
    /* M chunks of MC rows, N chunks of NCB 16-channel blocks (qg_dense_chunks: L2-sized, equal,
     * at least 2 per thread) */
    int64_t MC, NCB;
    qg_dense_chunks(M, K, Nb, wstride, mr, nb, nthreads, &MC, &NCB);
    const int64_t n_mc = (M + MC - 1) / MC, n_nc = (Nb + NCB - 1) / NCB;

    /* Tiles in N-major static order: a thread keeps one weight chunk in its L2 while it walks
     * the M chunks, re-reading x (M*K) about N/(16*NCB) times instead of the weights M/MC times. */
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t t = 0; t < n_mc * n_nc; t++) {
        const int64_t mc = t % n_mc, bend = ((t / n_mc) + 1) * NCB < Nb ? ((t / n_mc) + 1) * NCB : Nb;
        const int64_t mend = (mc + 1) * MC < M ? (mc + 1) * MC : M;
        int32_t tile[QG_MAX_MR * QG_MAX_NBLK * 16];
        for (int64_t b0 = (t / n_mc) * NCB; b0 < bend; b0 += nb) {   /* 16*nb-channel panels */
            const int64_t nvalid = bend - b0 < nb ? bend - b0 : nb;
            const int64_t n0 = b0 * 16, ncols = N - n0 < nb * 16 ? N - n0 : nb * 16;
            const int8_t *wb[QG_MAX_NBLK];
            for (int j = 0; j < nb; j++)   /* blocks past the chunk repeat its last; dropped */
                wb[j] = packed + (b0 + (j < nvalid ? j : nvalid - 1)) * wstride;
            for (int64_t m = mc * MC; m < mend; m += mr) {
                const int64_t rows = mend - m < mr ? mend - m : mr;
                const uint8_t *xr[QG_MAX_MR];
                for (int r = 0; r < mr; r++)   /* rows past M re-read row m; results dropped */
                    xr[r] = x__mk + (m + (r < rows ? r : 0)) * K;
                tk->fn(xr, K, wb, tile);
                qg_epilogue_rows(tile, nb * 16, m, rows, n0, nvalid * 16 < ncols ? nvalid * 16 : ncols,
                                 N, ep, isa);
            }
        }
    }
    return QG_OK;
}

int qg_default_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
