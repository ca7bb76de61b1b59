/* sgemm.c -- float32 y = x @ w^T + b (see sgemm.h for the arithmetic and the blocking).
 *
 * reference: fdbert/reference/linear.py · tests: spec_tests/test_native_linear.py
 *
 * Layout of this file: the generic kernel (the definition of the arithmetic, plain loops over fmaf),
 * then the AVX-512 and AVX2 paths (pack a B panel, run the micro-kernel down the rows), then the
 * public entry point that splits (row block, column panel) tasks over threads and picks the path.
 */
#include "sgemm.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#if defined(__x86_64__)
#define SG_X86 1
#include <immintrin.h>
#define SG_AVX512_TARGET __attribute__((target(FDB_TARGETS_AVX512 ",avx2,fma")))   /* avx2, fma: implied by avx512f */
#define SG_AVX2_TARGET FDB_TARGET_AVX2
#else
#define SG_X86 0
#endif

#define MC 256          /* rows per task: an MC x KC block of x (256 KiB) stays in L2 */
#define KC 256          /* reduction chunk: a KC x 32 B panel (32 KiB) stays in L1 */
#define NR_TASK 32      /* output columns per task (a multiple of every path's NR) */
#define PARALLEL_MIN (1 << 18)   /* fewer multiply-adds than this: one thread (a region costs ~us) */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ================================================================ generic: the definition */

/* y[m0:m1, n0:n1] = fma chain over k in order, then + b. fmaf is the correctly rounded fused
 * multiply-add (C99), so this loop is bit-identical to the SIMD paths' vfmadd231ps. */
static void task_generic(const float *x, const float *w, const float *b, int64_t K, int64_t N,
                         int64_t m0, int64_t m1, int64_t n0, int64_t n1, float *y)
{
    for (int64_t m = m0; m < m1; m++) {
        const float *xm = x + m * K;
        for (int64_t n = n0; n < n1; n++) {
            const float *wn = w + n * K;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc = fmaf(xm[k], wn[k], acc);
            y[m * N + n] = b ? acc + b[n] : acc;
        }
    }
}

/* ================================================================ packing (shared by SIMD paths) */

/* bp[k * NR + j] = w[n0 + j, k0 + k] for j < nr, 0 for nr <= j < NR: a KC x NR slice of w^T. */
static void pack_panel(const float *w, int64_t K, int64_t n0, int64_t nr, int64_t k0, int64_t kc,
                       int NR, float *bp)
{
    for (int64_t j = 0; j < nr; j++) {
        const float *src = w + (n0 + j) * K + k0;
        for (int64_t k = 0; k < kc; k++) bp[k * NR + j] = src[k];
    }
    for (int64_t j = nr; j < NR; j++)
        for (int64_t k = 0; k < kc; k++) bp[k * NR + j] = 0.0f;
}

#if SG_X86
/* ================================================================ AVX-512: 8 x 32 micro-kernel */
#define MR16 8
#define NR16 32

/* y[0:mr, 0:nr] (row stride N) <- (first ? 0 : y) + sum_k a[i][k] * bp[k, :], then + bias if
 * bias != NULL. Rows mr..7 read a duplicate row pointer and are never stored, so every element's
 * arithmetic is the same wherever it sits. */
SG_AVX512_TARGET static void kernel_avx512(const float *const a[MR16], int64_t kc,
                                           const float *bp, float *y, int64_t N, int mr,
                                           __mmask16 m0, __mmask16 m1, int first, const float *bias)
{
    __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = _mm512_setzero_ps();
    c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = _mm512_setzero_ps();
    if (!first) {
#define LOAD_ROW(i, ca, cb) if (i < mr) { ca = _mm512_maskz_loadu_ps(m0, y + i * N); \
                                          cb = _mm512_maskz_loadu_ps(m1, y + i * N + 16); }
        LOAD_ROW(0, c00, c01) LOAD_ROW(1, c10, c11) LOAD_ROW(2, c20, c21) LOAD_ROW(3, c30, c31)
        LOAD_ROW(4, c40, c41) LOAD_ROW(5, c50, c51) LOAD_ROW(6, c60, c61) LOAD_ROW(7, c70, c71)
#undef LOAD_ROW
    }
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    const float *a4 = a[4], *a5 = a[5], *a6 = a[6], *a7 = a[7];
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(bp + k * NR16), b1 = _mm512_load_ps(bp + k * NR16 + 16);
        __m512 v;
#define FMA_ROW(ai, ca, cb) v = _mm512_set1_ps(ai[k]); ca = _mm512_fmadd_ps(v, b0, ca); \
                            cb = _mm512_fmadd_ps(v, b1, cb);
        FMA_ROW(a0, c00, c01) FMA_ROW(a1, c10, c11) FMA_ROW(a2, c20, c21) FMA_ROW(a3, c30, c31)
        FMA_ROW(a4, c40, c41) FMA_ROW(a5, c50, c51) FMA_ROW(a6, c60, c61) FMA_ROW(a7, c70, c71)
#undef FMA_ROW
    }
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (bias) {
        bias0 = _mm512_maskz_loadu_ps(m0, bias);
        bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
#define STORE_ROW(i, ca, cb) if (i < mr) { \
        if (bias) { ca = _mm512_add_ps(ca, bias0); cb = _mm512_add_ps(cb, bias1); } \
        _mm512_mask_storeu_ps(y + i * N, m0, ca); _mm512_mask_storeu_ps(y + i * N + 16, m1, cb); }
    STORE_ROW(0, c00, c01) STORE_ROW(1, c10, c11) STORE_ROW(2, c20, c21) STORE_ROW(3, c30, c31)
    STORE_ROW(4, c40, c41) STORE_ROW(5, c50, c51) STORE_ROW(6, c60, c61) STORE_ROW(7, c70, c71)
#undef STORE_ROW
}

/* The same slice as pack_panel(..., NR16, bp), 16 x 16 blocks at a time: load 16 rows of w (16 k
 * each; rows >= nr and k >= kc read as 0 by masked loads), transpose in registers, store 16 rows of
 * bp. For small M the pack is most of the work; this runs it ~4x faster than the scalar loop. */
SG_AVX512_TARGET static void pack_panel_avx512(const float *w, int64_t K, int64_t n0, int64_t nr,
                                               int64_t k0, int64_t kc, float *bp)
{
    for (int64_t kk = 0; kk < kc; kk += 16) {
        int64_t kn = min64(16, kc - kk);
        __mmask16 km = (__mmask16)(kn >= 16 ? 0xFFFF : (1u << kn) - 1u);
        for (int h = 0; h < 2; h++) {
            __m512 r[16], t[16];
            for (int i = 0; i < 16; i++) {
                int64_t j = 16 * h + i;
                r[i] = j < nr ? _mm512_maskz_loadu_ps(km, w + (n0 + j) * K + k0 + kk)
                              : _mm512_setzero_ps();
            }
            for (int i = 0; i < 16; i += 2) {   /* 2 x 2 blocks of scalars */
                t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 16; i += 4) {   /* 4 x 4 */
                r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
                r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
                r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
            }
            for (int i = 0; i < 16; i += 8) {   /* 128-bit lanes, 8 x 8 */
                for (int q = 0; q < 4; q++) {
                    t[i + q] = _mm512_shuffle_f32x4(r[i + q], r[i + q + 4], 0x88);
                    t[i + q + 4] = _mm512_shuffle_f32x4(r[i + q], r[i + q + 4], 0xDD);
                }
            }
            for (int q = 0; q < 8; q++) {       /* 16 x 16 */
                r[q] = _mm512_shuffle_f32x4(t[q], t[q + 8], 0x88);
                r[q + 8] = _mm512_shuffle_f32x4(t[q], t[q + 8], 0xDD);
            }
            for (int64_t i = 0; i < kn; i++) _mm512_store_ps(bp + (kk + i) * NR16 + 16 * h, r[i]);
        }
    }
}

SG_AVX512_TARGET static void task_avx512(const float *x, const float *w, const float *b,
                                         int64_t K, int64_t N, int64_t m0, int64_t m1,
                                         int64_t n0, int64_t n1, float *y)
{
    float bp[KC * NR16] __attribute__((aligned(64)));
    int64_t nr = n1 - n0;   /* <= 32 */
    __mmask16 mk0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1u);
    __mmask16 mk1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1u);
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        int64_t kc = min64(KC, K - k0);
        int last = k0 + kc >= K;
        pack_panel_avx512(w, K, n0, nr, k0, kc, bp);
        for (int64_t m = m0; m < m1; m += MR16) {
            int mr = (int)min64(MR16, m1 - m);
            const float *a[MR16];
            for (int i = 0; i < MR16; i++) a[i] = x + (m + (i < mr ? i : mr - 1)) * K + k0;
            kernel_avx512(a, kc, bp, y + m * N + n0, N, mr, mk0, mk1, k0 == 0,
                          last && b ? b + n0 : NULL);
        }
    }
}

/* task_avx512 on a weight packed once (sg_pack_weight): the panel of columns n0..n0+31 is wp's K x 32
 * slice starting at (n0 / 32) K 32, so no packing per call. The same kernel, the same chunks of K,
 * the same bits. */
SG_AVX512_TARGET static void task_avx512_packed(const float *x, const float *wp, const float *b,
                                                int64_t K, int64_t N, int64_t m0, int64_t m1,
                                                int64_t n0, int64_t n1, float *y)
{
    int64_t nr = n1 - n0;   /* <= 32 */
    __mmask16 mk0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1u);
    __mmask16 mk1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1u);
    const float *panel = wp + (n0 / NR16) * K * NR16;
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        int64_t kc = min64(KC, K - k0);
        int last = k0 + kc >= K;
        for (int64_t m = m0; m < m1; m += MR16) {
            int mr = (int)min64(MR16, m1 - m);
            const float *a[MR16];
            for (int i = 0; i < MR16; i++) a[i] = x + (m + (i < mr ? i : mr - 1)) * K + k0;
            kernel_avx512(a, kc, panel + k0 * NR16, y + m * N + n0, N, mr, mk0, mk1, k0 == 0,
                          last && b ? b + n0 : NULL);
        }
    }
}

/* ================================================================ AVX2: 6 x 16 micro-kernel */
#define MR8 6
#define NR8 16

SG_AVX2_TARGET static inline __m256i mask8(int64_t n)   /* lanes j < n all-ones */
{
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 0 ? 0 : n > 8 ? 8 : n)), lane);
}

SG_AVX2_TARGET static void kernel_avx2(const float *const a[MR8], int64_t kc, const float *bp,
                                       int64_t ldb, float *y, int64_t N, int mr, __m256i m0,
                                       __m256i m1, int first, const float *bias)
{
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c00 = c01 = c10 = c11 = c20 = c21 = _mm256_setzero_ps();
    c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
    if (!first) {
#define LOAD_ROW(i, ca, cb) if (i < mr) { ca = _mm256_maskload_ps(y + i * N, m0); \
                                          cb = _mm256_maskload_ps(y + i * N + 8, m1); }
        LOAD_ROW(0, c00, c01) LOAD_ROW(1, c10, c11) LOAD_ROW(2, c20, c21)
        LOAD_ROW(3, c30, c31) LOAD_ROW(4, c40, c41) LOAD_ROW(5, c50, c51)
#undef LOAD_ROW
    }
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(bp + k * ldb), b1 = _mm256_load_ps(bp + k * ldb + 8);
        __m256 v;
#define FMA_ROW(ai, ca, cb) v = _mm256_broadcast_ss(ai + k); ca = _mm256_fmadd_ps(v, b0, ca); \
                            cb = _mm256_fmadd_ps(v, b1, cb);
        FMA_ROW(a0, c00, c01) FMA_ROW(a1, c10, c11) FMA_ROW(a2, c20, c21)
        FMA_ROW(a3, c30, c31) FMA_ROW(a4, c40, c41) FMA_ROW(a5, c50, c51)
#undef FMA_ROW
    }
    __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
    if (bias) {
        bias0 = _mm256_maskload_ps(bias, m0);
        bias1 = _mm256_maskload_ps(bias + 8, m1);
    }
#define STORE_ROW(i, ca, cb) if (i < mr) { \
        if (bias) { ca = _mm256_add_ps(ca, bias0); cb = _mm256_add_ps(cb, bias1); } \
        _mm256_maskstore_ps(y + i * N, m0, ca); _mm256_maskstore_ps(y + i * N + 8, m1, cb); }
    STORE_ROW(0, c00, c01) STORE_ROW(1, c10, c11) STORE_ROW(2, c20, c21)
    STORE_ROW(3, c30, c31) STORE_ROW(4, c40, c41) STORE_ROW(5, c50, c51)
#undef STORE_ROW
}

SG_AVX2_TARGET static void task_avx2(const float *x, const float *w, const float *b, int64_t K,
                                     int64_t N, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                                     float *y)
{
    float bp[KC * NR8] __attribute__((aligned(32)));
    for (int64_t p0 = n0; p0 < n1; p0 += NR8) {       /* NR_TASK / NR8 panels per task */
        int64_t nr = min64(NR8, n1 - p0);
        __m256i mk0 = mask8(nr), mk1 = mask8(nr - 8);
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            int64_t kc = min64(KC, K - k0);
            int last = k0 + kc >= K;
            pack_panel(w, K, p0, nr, k0, kc, NR8, bp);
            for (int64_t m = m0; m < m1; m += MR8) {
                int mr = (int)min64(MR8, m1 - m);
                const float *a[MR8];
                for (int i = 0; i < MR8; i++) a[i] = x + (m + (i < mr ? i : mr - 1)) * K + k0;
                kernel_avx2(a, kc, bp, NR8, y + m * N + p0, N, mr, mk0, mk1, k0 == 0,
                            last && b ? b + p0 : NULL);
            }
        }
    }
}

/* ================================================================ AVX2 on a weight packed once: 2 x 32 */
#define MRP 2

/* y[0:mr, 0:nr] <- (first ? 0 : y) + sum_k a[i][k] * bp[k, 0:32], then + bias if bias != NULL, with
 * bp a K x 32 panel of sg_pack_weight (row stride 32). Two rows of four ymm accumulators: at M = 1
 * (a decode step) four independent FMA chains keep both FMA ports busy while the panel streams in,
 * where kernel_avx2's 16 columns would give two. Rows >= mr read row 0 again and are never stored. */
SG_AVX2_TARGET static void kernel_avx2_packed(const float *a0, const float *a1, int64_t kc,
                                              const float *bp, float *y, int64_t N, int mr,
                                              const __m256i m[4], int first, const float *bias)
{
    __m256 c00, c01, c02, c03, c10, c11, c12, c13;
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = _mm256_setzero_ps();
    if (!first) {
        c00 = _mm256_maskload_ps(y, m[0]);      c01 = _mm256_maskload_ps(y + 8, m[1]);
        c02 = _mm256_maskload_ps(y + 16, m[2]); c03 = _mm256_maskload_ps(y + 24, m[3]);
        if (mr > 1) {
            c10 = _mm256_maskload_ps(y + N, m[0]);      c11 = _mm256_maskload_ps(y + N + 8, m[1]);
            c12 = _mm256_maskload_ps(y + N + 16, m[2]); c13 = _mm256_maskload_ps(y + N + 24, m[3]);
        }
    }
    for (int64_t k = 0; k < kc; k++) {
        const float *bk = bp + k * SG_PACK_NR;
        __m256 b0 = _mm256_load_ps(bk), b1 = _mm256_load_ps(bk + 8);
        __m256 b2 = _mm256_load_ps(bk + 16), b3 = _mm256_load_ps(bk + 24);
        __m256 v0 = _mm256_broadcast_ss(a0 + k), v1 = _mm256_broadcast_ss(a1 + k);
        c00 = _mm256_fmadd_ps(v0, b0, c00); c01 = _mm256_fmadd_ps(v0, b1, c01);
        c02 = _mm256_fmadd_ps(v0, b2, c02); c03 = _mm256_fmadd_ps(v0, b3, c03);
        c10 = _mm256_fmadd_ps(v1, b0, c10); c11 = _mm256_fmadd_ps(v1, b1, c11);
        c12 = _mm256_fmadd_ps(v1, b2, c12); c13 = _mm256_fmadd_ps(v1, b3, c13);
    }
    if (bias) {
        __m256 d0 = _mm256_maskload_ps(bias, m[0]), d1 = _mm256_maskload_ps(bias + 8, m[1]);
        __m256 d2 = _mm256_maskload_ps(bias + 16, m[2]), d3 = _mm256_maskload_ps(bias + 24, m[3]);
        c00 = _mm256_add_ps(c00, d0); c01 = _mm256_add_ps(c01, d1);
        c02 = _mm256_add_ps(c02, d2); c03 = _mm256_add_ps(c03, d3);
        c10 = _mm256_add_ps(c10, d0); c11 = _mm256_add_ps(c11, d1);
        c12 = _mm256_add_ps(c12, d2); c13 = _mm256_add_ps(c13, d3);
    }
    _mm256_maskstore_ps(y, m[0], c00);      _mm256_maskstore_ps(y + 8, m[1], c01);
    _mm256_maskstore_ps(y + 16, m[2], c02); _mm256_maskstore_ps(y + 24, m[3], c03);
    if (mr > 1) {
        _mm256_maskstore_ps(y + N, m[0], c10);      _mm256_maskstore_ps(y + N + 8, m[1], c11);
        _mm256_maskstore_ps(y + N + 16, m[2], c12); _mm256_maskstore_ps(y + N + 24, m[3], c13);
    }
}

/* The AVX2 twin of task_avx512_packed: the same chunks of K, the same bits. Blocks of 6 rows run
 * kernel_avx2's 6 x 16 on each 16-column half of the panel (row stride 32: 12 accumulators, for the
 * compute-bound batches), the remaining rows the 2 x 32 kernel (a decode step of one sequence: four
 * FMA chains per row while the panel streams in). */
SG_AVX2_TARGET static void task_avx2_packed(const float *x, const float *wp, const float *b,
                                            int64_t K, int64_t N, int64_t m0, int64_t m1,
                                            int64_t n0, int64_t n1, float *y)
{
    int64_t nr = n1 - n0;   /* <= 32 */
    const __m256i m[4] = {mask8(nr), mask8(nr - 8), mask8(nr - 16), mask8(nr - 24)};
    const float *panel = wp + (n0 / SG_PACK_NR) * K * SG_PACK_NR;
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        int64_t kc = min64(KC, K - k0);
        int last = k0 + kc >= K;
        const float *bp = panel + k0 * SG_PACK_NR;
        int64_t r = m0;
        for (; r + MR8 <= m1; r += MR8) {          /* full blocks of 6 rows */
            const float *a[MR8];
            for (int i = 0; i < MR8; i++) a[i] = x + (r + i) * K + k0;
            for (int h = 0; h < 2 && 16 * h < nr; h++)
                kernel_avx2(a, kc, bp + 16 * h, SG_PACK_NR, y + r * N + n0 + 16 * h, N, MR8,
                            m[2 * h], m[2 * h + 1], k0 == 0, last && b ? b + n0 + 16 * h : NULL);
        }
        for (; r < m1; r += MRP) {                 /* the rest, 2 rows at a time */
            int mr = (int)min64(MRP, m1 - r);
            const float *a0 = x + r * K + k0, *a1 = mr > 1 ? a0 + K : a0;
            kernel_avx2_packed(a0, a1, kc, bp, y + r * N + n0, N, mr, m, k0 == 0,
                               last && b ? b + n0 : NULL);
        }
    }
}
#endif /* SG_X86 */

/* ================================================================ entry point */

void sg_linear(const float *x, const float *w, const float *b, int64_t M, int64_t N, int64_t K,
               float *y, int isa, int nthreads)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {   /* the empty sum: y = 0 + b */
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) y[m * N + n] = b ? 0.0f + b[n] : 0.0f;
        return;
    }
    int64_t n_mblocks = (M + MC - 1) / MC, n_panels = (N + NR_TASK - 1) / NR_TASK;
    int64_t n_tasks = n_mblocks * n_panels;
    int nt = (nthreads < 1 || (double)M * N * K < PARALLEL_MIN) ? 1 : nthreads;
    /* Task t = (row block t / n_panels, column panel t % n_panels); static chunks give each thread
     * consecutive panels of the same row block, so its x block is reused from L2. */
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t t = 0; t < n_tasks; t++) {
        int64_t m0 = (t / n_panels) * MC, m1 = min64(M, m0 + MC);
        int64_t n0 = (t % n_panels) * NR_TASK, n1 = min64(N, n0 + NR_TASK);
#if SG_X86
        if (isa == FDB_ISA_AVX512) task_avx512(x, w, b, K, N, m0, m1, n0, n1, y);
        else if (isa == FDB_ISA_AVX2) task_avx2(x, w, b, K, N, m0, m1, n0, n1, y);
        else
#endif
            task_generic(x, w, b, K, N, m0, m1, n0, n1, y);
    }
}

/* ================================================================ weights packed once */

int64_t sg_packed_size(int64_t N, int64_t K)
{
    return (N + SG_PACK_NR - 1) / SG_PACK_NR * K * SG_PACK_NR;
}

void sg_pack_weight(const float *w, int64_t N, int64_t K, float *wp)
{
    for (int64_t p = 0; p * SG_PACK_NR < N; p++)
        pack_panel(w, K, p * SG_PACK_NR, min64(SG_PACK_NR, N - p * SG_PACK_NR), 0, K, SG_PACK_NR,
                   wp + p * K * SG_PACK_NR);
}

int sg_linear_packed(const float *x, const float *wp, const float *b, int64_t M, int64_t N, int64_t K,
                     float *y, int isa, int nthreads)
{
#if SG_X86
    if (isa != FDB_ISA_AVX512 && isa != FDB_ISA_AVX2) return -1;
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {
        sg_linear(x, wp, b, M, N, K, y, isa, nthreads);
        return 0;
    }
    int64_t n_mblocks = (M + MC - 1) / MC, n_panels = (N + NR_TASK - 1) / NR_TASK;
    int64_t n_tasks = n_mblocks * n_panels;
    int nt = (nthreads < 1 || (double)M * N * K < PARALLEL_MIN) ? 1 : nthreads;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t t = 0; t < n_tasks; t++) {
        int64_t m0 = (t / n_panels) * MC, m1 = min64(M, m0 + MC);
        int64_t n0 = (t % n_panels) * NR_TASK, n1 = min64(N, n0 + NR_TASK);
        if (isa == FDB_ISA_AVX512) task_avx512_packed(x, wp, b, K, N, m0, m1, n0, n1, y);
        else task_avx2_packed(x, wp, b, K, N, m0, m1, n0, n1, y);
    }
    return 0;
#else
    (void)x; (void)wp; (void)b; (void)M; (void)N; (void)K; (void)y; (void)isa; (void)nthreads;
    return -1;
#endif
}
