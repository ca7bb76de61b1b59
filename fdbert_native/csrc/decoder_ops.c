/* decoder_ops.c -- RMSNorm, RoPE and the SiLU-gated product (see decoder_ops.h).
 *
 * reference: fdbert/reference/rmsnorm.py, fdbert/reference/rope.py, fdbert/reference/activations.py (silu_mul) · tests: spec_tests/test_native_rmsnorm.py, spec_tests/test_native_rope.py, spec_tests/test_native_activations.py
 *
 * Layout: for each op, the generic kernel (the readable definition of the arithmetic), its AVX-512
 * twin, then the entry point that splits rows over threads and picks the path.
 */
#include "decoder_ops.h"

#include <math.h>

#if defined(__x86_64__)
#define DEC_X86 1
#include "fp32_vecmath.h"
#else
#define DEC_X86 0
#endif

#define LANES 16              /* floats per 512-bit register; the generic sums mirror them */
#define PARALLEL_MIN 32768    /* fewer elements than this: one thread (a parallel region costs ~us) */
#define POINTWISE_BLOCK 4096  /* elements per parallel work item of silu_mul */

static int threads_for(int64_t work, int nthreads)
{
    return (nthreads < 1 || work < PARALLEL_MIN) ? 1 : nthreads;
}

/* ================================================================ rms_norm */

/* sum of squares in 16 lanes (lane l holds j = l mod 16), folded 8+8, 4+4, 2+2, 1+1 */
static void rms_norm_row_generic(const float *x, int64_t D, const float *w, float eps, float *y)
{
    float acc[LANES] = {0};
    for (int64_t j = 0; j < D; j++) acc[j % LANES] += x[j] * x[j];
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    for (int l = 0; l < 4; l++) acc[l] += acc[l + 4];
    for (int l = 0; l < 2; l++) acc[l] += acc[l + 2];
    float d = sqrtf((acc[0] + acc[1]) / (float)D + eps);
    for (int64_t j = 0; j < D; j++) y[j] = x[j] / d * w[j];
}

#if DEC_X86
FDB_TARGET_AVX512 static void rms_norm_row_avx512(const float *x, int64_t D, const float *w, float eps,
                                                  float *y)
{
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < D; j += LANES) {
        __mmask16 m = fdb_lanes16(D - j);
        __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        acc = _mm512_add_ps(acc, _mm512_mul_ps(v, v));   /* no fma: the generic x*x then + */
    }
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    float sum = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
    __m512 d = _mm512_set1_ps(sqrtf(sum / (float)D + eps));
    for (int64_t j = 0; j < D; j += LANES) {
        __mmask16 m = fdb_lanes16(D - j);
        __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + j), d);
        _mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + j)));
    }
}
#endif

void dec_rms_norm(const float *x, int64_t n, int64_t D, const float *w, float eps, float *y, int isa,
                  int nthreads)
{
    int nt = threads_for(n * D, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < n; r++) {
#if DEC_X86
        if (isa == FDB_ISA_AVX512) {
            rms_norm_row_avx512(x + r * D, D, w, eps, y + r * D);
            continue;
        }
#endif
        rms_norm_row_generic(x + r * D, D, w, eps, y + r * D);
    }
}

/* ================================================================ rope */

static void rope_row_generic(const float *x, int64_t H, int64_t Dh, const float *c, const float *s, float *y)
{
    int64_t half = Dh / 2;
    for (int64_t h = 0; h < H; h++, x += Dh, y += Dh)
        for (int64_t j = 0; j < half; j++) {
            float x1 = x[j], x2 = x[j + half];
            y[j] = x1 * c[j] - x2 * s[j];
            y[j + half] = x2 * c[j] + x1 * s[j];
        }
}

#if DEC_X86
FDB_TARGET_AVX512 static void rope_row_avx512(const float *x, int64_t H, int64_t Dh, const float *c,
                                              const float *s, float *y)
{
    int64_t half = Dh / 2;
    for (int64_t h = 0; h < H; h++, x += Dh, y += Dh)
        for (int64_t j = 0; j < half; j += LANES) {
            __mmask16 m = fdb_lanes16(half - j);
            __m512 x1 = _mm512_maskz_loadu_ps(m, x + j), x2 = _mm512_maskz_loadu_ps(m, x + j + half);
            __m512 cv = _mm512_maskz_loadu_ps(m, c + j), sv = _mm512_maskz_loadu_ps(m, s + j);
            _mm512_mask_storeu_ps(y + j, m, _mm512_sub_ps(_mm512_mul_ps(x1, cv), _mm512_mul_ps(x2, sv)));
            _mm512_mask_storeu_ps(y + j + half, m, _mm512_add_ps(_mm512_mul_ps(x2, cv), _mm512_mul_ps(x1, sv)));
        }
}
#endif

void dec_rope(const float *x, int64_t n, int64_t H, int64_t Dh, const float *cos_, const float *sin_,
              float *y, int isa, int nthreads)
{
    int nt = threads_for(n * H * Dh, nthreads);
    int64_t half = Dh / 2;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < n; r++) {
#if DEC_X86
        if (isa == FDB_ISA_AVX512) {
            rope_row_avx512(x + r * H * Dh, H, Dh, cos_ + r * half, sin_ + r * half, y + r * H * Dh);
            continue;
        }
#endif
        rope_row_generic(x + r * H * Dh, H, Dh, cos_ + r * half, sin_ + r * half, y + r * H * Dh);
    }
}

/* ================================================================ silu_mul */

static void silu_mul_generic(const float *g, const float *u, int64_t n, float *y)
{
    for (int64_t j = 0; j < n; j++) y[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
}

#if DEC_X86
FDB_TARGET_AVX512 static void silu_mul_avx512(const float *g, const float *u, int64_t n, float *y)
{
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += LANES) {
        __mmask16 m = fdb_lanes16(n - j);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + j);
        __m512 e = fdb_exp_avx512(_mm512_sub_ps(zero, gv));
        __m512 v = _mm512_div_ps(gv, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, u + j)));
    }
}
#endif

void dec_silu_mul(const float *g, const float *u, int64_t n, float *y, int isa, int nthreads)
{
    int64_t nblocks = (n + POINTWISE_BLOCK - 1) / POINTWISE_BLOCK;
    int nt = threads_for(n, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t j0 = b * POINTWISE_BLOCK, len = n - j0 < POINTWISE_BLOCK ? n - j0 : POINTWISE_BLOCK;
#if DEC_X86
        if (isa == FDB_ISA_AVX512) {
            silu_mul_avx512(g + j0, u + j0, len, y + j0);
            continue;
        }
#endif
        silu_mul_generic(g + j0, u + j0, len, y + j0);
    }
}
