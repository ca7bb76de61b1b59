/* decoder_ops.c -- RMSNorm, RoPE, the SiLU-gated product and the tanh GELU (see decoder_ops.h).
 *
 * reference: fdbert/reference/rmsnorm.py, fdbert/reference/rope.py, fdbert/reference/activations.py (silu_mul, gelu_tanh) · tests: spec_tests/test_native_rmsnorm.py, spec_tests/test_native_rope.py, spec_tests/test_native_activations.py
 *
 * Layout: for each op, the generic kernel (the readable definition of the arithmetic), its AVX-512
 * and AVX2 twins, then the entry point that splits rows over threads and picks the path.
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
#define POINTWISE_BLOCK 4096  /* elements per parallel work item of silu_mul and gelu_tanh */

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

/* the AVX-512 twin in 8 lanes: lanes 0-7 and 8-15 of the 16 in two registers, folded the same way */
FDB_TARGET_AVX2 static void rms_norm_row_avx2(const float *x, int64_t D, const float *w, float eps, float *y)
{
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int64_t j = 0; j < D; j += LANES) {
        __m256 a = _mm256_maskload_ps(x + j, fdb_lanes8(D - j));
        __m256 b = _mm256_maskload_ps(x + j + 8, fdb_lanes8(D - j - 8));
        lo = _mm256_add_ps(lo, _mm256_mul_ps(a, a));
        hi = _mm256_add_ps(hi, _mm256_mul_ps(b, b));
    }
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    float sum = _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
    __m256 d = _mm256_set1_ps(sqrtf(sum / (float)D + eps));
    for (int64_t j = 0; j < D; j += 8) {
        __m256i m = fdb_lanes8(D - j);
        __m256 v = _mm256_div_ps(_mm256_maskload_ps(x + j, m), d);
        _mm256_maskstore_ps(y + j, m, _mm256_mul_ps(v, _mm256_maskload_ps(w + j, m)));
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
        if (isa == FDB_ISA_AVX2) {
            rms_norm_row_avx2(x + r * D, D, w, eps, y + r * D);
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

FDB_TARGET_AVX2 static void rope_row_avx2(const float *x, int64_t H, int64_t Dh, const float *c,
                                            const float *s, float *y)
{
    int64_t half = Dh / 2;
    for (int64_t h = 0; h < H; h++, x += Dh, y += Dh)
        for (int64_t j = 0; j < half; j += 8) {
            __m256i m = fdb_lanes8(half - j);
            __m256 x1 = _mm256_maskload_ps(x + j, m), x2 = _mm256_maskload_ps(x + j + half, m);
            __m256 cv = _mm256_maskload_ps(c + j, m), sv = _mm256_maskload_ps(s + j, m);
            _mm256_maskstore_ps(y + j, m, _mm256_sub_ps(_mm256_mul_ps(x1, cv), _mm256_mul_ps(x2, sv)));
            _mm256_maskstore_ps(y + j + half, m, _mm256_add_ps(_mm256_mul_ps(x2, cv), _mm256_mul_ps(x1, sv)));
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
        if (isa == FDB_ISA_AVX2) {
            rope_row_avx2(x + r * H * Dh, H, Dh, cos_ + r * half, sin_ + r * half, y + r * H * Dh);
            continue;
        }
#endif
        rope_row_generic(x + r * H * Dh, H, Dh, cos_ + r * half, sin_ + r * half, y + r * H * Dh);
    }
}

/* ================================================================ silu_mul */

/* the pointwise kernels' signature: y[:n] = f(a[:n], b[:n]) (b unused by one-input ops) */
typedef void (*pointwise_fn)(const float *a, int64_t n, float *y, const float *b);

static void silu_mul_generic(const float *g, int64_t n, float *y, const float *u)
{
    for (int64_t j = 0; j < n; j++) y[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
}

#if DEC_X86
FDB_TARGET_AVX512 static void silu_mul_avx512(const float *g, int64_t n, float *y, const float *u)
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

FDB_TARGET_AVX2 static void silu_mul_avx2(const float *g, int64_t n, float *y, const float *u)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; j += 8) {
        __m256i m = fdb_lanes8(n - j);
        __m256 gv = _mm256_maskload_ps(g + j, m);
        __m256 e = fdb_exp_avx2(_mm256_sub_ps(zero, gv));
        __m256 v = _mm256_div_ps(gv, _mm256_add_ps(one, e));
        _mm256_maskstore_ps(y + j, m, _mm256_mul_ps(v, _mm256_maskload_ps(u + j, m)));
    }
}
#endif

/* ================================================================ gelu_tanh */

/* y = x/2 (1 + tanh(z)), z = sqrt(2/pi) (x + 0.044715 x^3), computed as y = x / (1 + exp(-2 z)):
 * 1 + tanh(z) = 2 / (1 + exp(-2 z)), so the halves cancel. z is the reference's, rounding for
 * rounding (((0.044715 x) x) x, then + x, then * sqrt(2/pi) in float32); only tanh differs, and the
 * exp form has no cancellation in 1 + tanh(z) for z < 0 (the reference's does: tolerances.py). x = +-inf
 * and NaN give what the reference gives (inf, NaN, NaN). */
#define GELU_TANH_C 0.044715f
#define GELU_TANH_K 0.7978845608028654f   /* float32(sqrt(2/pi)), the reference's _SQRT_2_OVER_PI */

static void gelu_tanh_generic(const float *x, int64_t n, float *y, const float *unused)
{
    (void)unused;
    for (int64_t j = 0; j < n; j++) {
        float z = GELU_TANH_K * (x[j] + GELU_TANH_C * x[j] * x[j] * x[j]);
        y[j] = x[j] / (1.0f + expf(-2.0f * z));
    }
}

#if DEC_X86
FDB_TARGET_AVX512 static void gelu_tanh_avx512(const float *x, int64_t n, float *y, const float *unused)
{
    (void)unused;
    const __m512 one = _mm512_set1_ps(1.0f), c = _mm512_set1_ps(GELU_TANH_C);
    const __m512 k = _mm512_set1_ps(GELU_TANH_K), m2 = _mm512_set1_ps(-2.0f);
    for (int64_t j = 0; j < n; j += LANES) {
        __mmask16 m = fdb_lanes16(n - j);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + j);
        __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(c, xv), xv), xv);
        __m512 z = _mm512_mul_ps(k, _mm512_add_ps(xv, x3));
        __m512 e = fdb_exp_avx512(_mm512_mul_ps(m2, z));
        _mm512_mask_storeu_ps(y + j, m, _mm512_div_ps(xv, _mm512_add_ps(one, e)));
    }
}

FDB_TARGET_AVX2 static void gelu_tanh_avx2(const float *x, int64_t n, float *y, const float *unused)
{
    (void)unused;
    const __m256 one = _mm256_set1_ps(1.0f), c = _mm256_set1_ps(GELU_TANH_C);
    const __m256 k = _mm256_set1_ps(GELU_TANH_K), m2 = _mm256_set1_ps(-2.0f);
    for (int64_t j = 0; j < n; j += 8) {
        __m256i m = fdb_lanes8(n - j);
        __m256 xv = _mm256_maskload_ps(x + j, m);
        __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(c, xv), xv), xv);
        __m256 z = _mm256_mul_ps(k, _mm256_add_ps(xv, x3));
        __m256 e = fdb_exp_avx2(_mm256_mul_ps(m2, z));
        _mm256_maskstore_ps(y + j, m, _mm256_div_ps(xv, _mm256_add_ps(one, e)));
    }
}
#endif

/* ================================================================ the pointwise entry points */

/* blocks of POINTWISE_BLOCK elements over threads, each on the path `isa` picks */
static void run_pointwise(pointwise_fn generic, pointwise_fn avx2, pointwise_fn avx512, const float *a,
                          const float *b, int64_t n, float *y, int isa, int nthreads)
{
    int64_t nblocks = (n + POINTWISE_BLOCK - 1) / POINTWISE_BLOCK;
    int nt = threads_for(n, nthreads);
    pointwise_fn f = generic;
#if DEC_X86
    if (isa == FDB_ISA_AVX512) f = avx512;
    else if (isa == FDB_ISA_AVX2) f = avx2;
#else
    (void)avx2; (void)avx512; (void)isa;
#endif
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        int64_t j0 = blk * POINTWISE_BLOCK, len = n - j0 < POINTWISE_BLOCK ? n - j0 : POINTWISE_BLOCK;
        f(a + j0, len, y + j0, b ? b + j0 : NULL);
    }
}

void dec_silu_mul(const float *g, const float *u, int64_t n, float *y, int isa, int nthreads)
{
#if DEC_X86
    run_pointwise(silu_mul_generic, silu_mul_avx2, silu_mul_avx512, g, u, n, y, isa, nthreads);
#else
    run_pointwise(silu_mul_generic, NULL, NULL, g, u, n, y, isa, nthreads);
#endif
}

void dec_gelu_tanh(const float *x, int64_t n, float *y, int isa, int nthreads)
{
#if DEC_X86
    run_pointwise(gelu_tanh_generic, gelu_tanh_avx2, gelu_tanh_avx512, x, NULL, n, y, isa, nthreads);
#else
    run_pointwise(gelu_tanh_generic, NULL, NULL, x, NULL, n, y, isa, nthreads);
#endif
}
