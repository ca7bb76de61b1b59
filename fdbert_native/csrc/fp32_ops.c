/* fp32_ops.c -- float32 layer norm, softmax, GELU, and the INT8 quantize / dequantize (see fp32_ops.h).
 *
 * reference: fdbert/reference/layernorm.py, fdbert/reference/activations.py, fdbert/int8.py (quantize_u8, dequantize_u8), fdbert/reference/qlinear.py (add_outlier_product) · tests: spec_tests/test_native_layernorm.py, spec_tests/test_native_activations.py, spec_tests/test_native_int8.py, spec_tests/test_native_embeddings.py, spec_tests/test_native_outliers.py
 *
 * Layout of this file: for each op, the generic kernel (the readable one, and the definition of the
 * arithmetic), then its AVX-512 twin, then the public entry point that splits rows over threads and
 * picks the path. Each op's cost is one or three streaming passes over a row that stays in L1.
 */
#include "fp32_ops.h"

#include <math.h>
#include <string.h>
#include <stddef.h>

#include "fp32_vecmath.h"

#define LANES 16                     /* floats per 512-bit register; the generic code mirrors them */
#define POINTWISE_BLOCK 4096         /* elements per parallel work item of the pointwise ops */
#define PARALLEL_MIN 32768           /* fewer elements than this: one thread (a region costs ~us) */

static const float INV_SQRT2 = 0.70710678118654752f; /* float32(1 / sqrt 2), as the reference */

static int threads_for(int64_t work, int nthreads)
{
    return (nthreads < 1 || work < PARALLEL_MIN) ? 1 : nthreads;
}

/* ---- the 16-lane sum, in the generic code: acc[l] holds x[j] for j = l mod 16 ----------------- */
static float fold16(float acc[LANES])
{
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    for (int l = 0; l < 4; l++) acc[l] += acc[l + 4];
    for (int l = 0; l < 2; l++) acc[l] += acc[l + 2];
    return acc[0] + acc[1];
}

/* The same fold on a register: 8+8, 4+4, 2+2, 1+1 (lane l with lane l + half). */
FDB_TARGET_AVX512 static inline float fold16_avx512(__m512 v)
{
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}


/* The same fold on two 8-lane halves (lanes 0-7 and 8-15 of the 16-lane sum): 8+8, then the rest. */
FDB_TARGET_AVX2 static inline float fold16_avx2(__m256 lo, __m256 hi)
{
    return fdb_hsum8(_mm256_add_ps(lo, hi));
}

/* 8 floats from p, lanes at or past `remaining` 0 (not read) */
FDB_TARGET_AVX2 static inline __m256 load8_avx2(const float *p, int64_t remaining)
{
    return remaining >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, fdb_lanes8(remaining));
}

FDB_TARGET_AVX2 static inline void store8_avx2(float *p, int64_t remaining, __m256 v)
{
    if (remaining >= 8)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, fdb_lanes8(remaining), v);
}

/* ================================================================ layer_norm */

/* y = (x - mean) * rstd * w + b, mean = sum x / D, var = sum (x - mean)^2 / D, rstd = 1 / sqrt(var + eps).
 * The reference divides by sqrt(var + eps); multiplying by its reciprocal costs one more rounding
 * (<= 1 ulp) and saves D divisions per row. */
static void layer_norm_row_generic(const float *x, int64_t D, const float *w, const float *b,
                                   float eps, float *y)
{
    float acc[LANES] = {0};
    for (int64_t j = 0; j < D; j++) acc[j % LANES] += x[j];
    float mean = fold16(acc) / (float)D;
    float acc2[LANES] = {0};
    for (int64_t j = 0; j < D; j++) {
        float d = x[j] - mean;
        acc2[j % LANES] += d * d;
    }
    float var = fold16(acc2) / (float)D;
    float rstd = 1.0f / sqrtf(var + eps);
    for (int64_t j = 0; j < D; j++) y[j] = (x[j] - mean) * rstd * w[j] + b[j];
}

FDB_TARGET_AVX512 static void layer_norm_row_avx512(const float *x, int64_t D, const float *w,
                                                    const float *b, float eps, float *y)
{
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < D; j += LANES)
        acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(fdb_lanes16(D - j), x + j));
    float mean = fold16_avx512(acc) / (float)D;
    __m512 vmean = _mm512_set1_ps(mean);
    __m512 acc2 = _mm512_setzero_ps();
    for (int64_t j = 0; j < D; j += LANES) {
        __mmask16 m = fdb_lanes16(D - j);
        __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, x + j), vmean);
        acc2 = _mm512_add_ps(acc2, _mm512_mul_ps(d, d));
    }
    float var = fold16_avx512(acc2) / (float)D;
    __m512 rstd = _mm512_set1_ps(1.0f / sqrtf(var + eps));
    for (int64_t j = 0; j < D; j += LANES) {
        __mmask16 m = fdb_lanes16(D - j);
        __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), vmean);
        __m512 t = _mm512_mul_ps(_mm512_mul_ps(d, rstd), _mm512_maskz_loadu_ps(m, w + j));
        _mm512_mask_storeu_ps(y + j, m, _mm512_add_ps(t, _mm512_maskz_loadu_ps(m, b + j)));
    }
}

/* The AVX2 twin: the 16-lane sums as two 8-lane halves, so the same bits as the generic path. */
FDB_TARGET_AVX2 static void layer_norm_row_avx2(const float *x, int64_t D, const float *w,
                                                const float *b, float eps, float *y)
{
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int64_t j = 0; j < D; j += LANES) {
        lo = _mm256_add_ps(lo, load8_avx2(x + j, D - j));
        hi = _mm256_add_ps(hi, load8_avx2(x + j + 8, D - j - 8));
    }
    const float mean = fold16_avx2(lo, hi) / (float)D;
    const __m256 vmean = _mm256_set1_ps(mean);
    lo = hi = _mm256_setzero_ps();
    for (int64_t j = 0; j < D; j += LANES) {   /* d = 0 past D: adds nothing */
        __m256 dl = _mm256_and_ps(_mm256_sub_ps(load8_avx2(x + j, D - j), vmean),
                                  _mm256_castsi256_ps(fdb_lanes8(D - j)));
        __m256 dh = _mm256_and_ps(_mm256_sub_ps(load8_avx2(x + j + 8, D - j - 8), vmean),
                                  _mm256_castsi256_ps(fdb_lanes8(D - j - 8)));
        lo = _mm256_add_ps(lo, _mm256_mul_ps(dl, dl));
        hi = _mm256_add_ps(hi, _mm256_mul_ps(dh, dh));
    }
    const float var = fold16_avx2(lo, hi) / (float)D;
    const __m256 rstd = _mm256_set1_ps(1.0f / sqrtf(var + eps));
    for (int64_t j = 0; j < D; j += 8) {
        __m256 d = _mm256_sub_ps(load8_avx2(x + j, D - j), vmean);
        __m256 t = _mm256_mul_ps(_mm256_mul_ps(d, rstd), load8_avx2(w + j, D - j));
        store8_avx2(y + j, D - j, _mm256_add_ps(t, load8_avx2(b + j, D - j)));
    }
}

/* (fp_layer_norm and fp_layer_norm_u8 follow the quantize kernels, which the second uses.) */

/* ================================================================ softmax */

/* s <- exp(s - max s) / sum exp(s - max s), in place. Entries of -inf give 0 (a masked score). */
void fp_softmax_row_generic(float *s, int64_t L)
{
    float m = s[0];
    for (int64_t j = 1; j < L; j++) m = s[j] > m ? s[j] : m;
    float acc[LANES] = {0};
    for (int64_t j = 0; j < L; j++) {
        s[j] = expf(s[j] - m);
        acc[j % LANES] += s[j];
    }
    float inv = 1.0f / fold16(acc);
    for (int64_t j = 0; j < L; j++) s[j] *= inv;
}

FDB_TARGET_AVX512 void fp_softmax_row_avx512(float *s, int64_t L)
{
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < L; j += LANES)
        vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(vmax, fdb_lanes16(L - j), s + j));
    __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < L; j += LANES) {
        __mmask16 k = fdb_lanes16(L - j);
        __m512 e = _mm512_maskz_mov_ps(k, fdb_exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), m)));
        _mm512_mask_storeu_ps(s + j, k, e);
        acc = _mm512_add_ps(acc, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / fold16_avx512(acc));
    for (int64_t j = 0; j < L; j += LANES) {
        __mmask16 k = fdb_lanes16(L - j);
        _mm512_mask_storeu_ps(s + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + j), inv));
    }
}

FDB_TARGET_AVX2 static void softmax_row_avx2(float *s, int64_t L)
{
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (int64_t j = 0; j < L; j += 8)
        vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(vmax, load8_avx2(s + j, L - j),
                                                     _mm256_castsi256_ps(fdb_lanes8(L - j))));
    const __m256 m = _mm256_set1_ps(fdb_hmax8(vmax));
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int64_t j = 0; j < L; j += LANES) {
        __m256 el = _mm256_and_ps(fdb_exp_avx2(_mm256_sub_ps(load8_avx2(s + j, L - j), m)),
                                  _mm256_castsi256_ps(fdb_lanes8(L - j)));
        __m256 eh = _mm256_and_ps(fdb_exp_avx2(_mm256_sub_ps(load8_avx2(s + j + 8, L - j - 8), m)),
                                  _mm256_castsi256_ps(fdb_lanes8(L - j - 8)));
        store8_avx2(s + j, L - j, el);
        if (L - j > 8) store8_avx2(s + j + 8, L - j - 8, eh);
        lo = _mm256_add_ps(lo, el);
        hi = _mm256_add_ps(hi, eh);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / fold16_avx2(lo, hi));
    for (int64_t j = 0; j < L; j += 8) store8_avx2(s + j, L - j, _mm256_mul_ps(load8_avx2(s + j, L - j), inv));
}

void fp_softmax(const float *x, int64_t rows, int64_t L, float *y, int isa, int nthreads)
{
    int nt = threads_for(rows * L, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < rows; r++) {
        float *yr = y + r * L;
        if (yr != x + r * L)
            for (int64_t j = 0; j < L; j++) yr[j] = x[r * L + j];
        if (isa == FDB_ISA_AVX512) {
            fp_softmax_row_avx512(yr, L);
            continue;
        }
        if (isa == FDB_ISA_AVX2) {
            softmax_row_avx2(yr, L);
            continue;
        }
        fp_softmax_row_generic(yr, L);
    }
}

/* ================================================================ pointwise ops */

/* Each pointwise op is a generic, an AVX2 and an AVX-512 span kernel over x[0:n] -> y[0:n]. */
typedef void (*span_fn)(const void *x, int64_t n, void *y, const float *params);

static void run_pointwise(span_fn generic, span_fn avx2, span_fn avx512, size_t in_size,
                          size_t out_size, const void *x, int64_t n, void *y, const float *params,
                          int isa, int nthreads)
{
    span_fn fn = isa == FDB_ISA_AVX512 ? avx512 : isa == FDB_ISA_AVX2 ? avx2 : generic;
    int64_t nblocks = (n + POINTWISE_BLOCK - 1) / POINTWISE_BLOCK;
    int nt = threads_for(n, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        int64_t j0 = blk * POINTWISE_BLOCK;
        int64_t len = n - j0 < POINTWISE_BLOCK ? n - j0 : POINTWISE_BLOCK;
        fn((const char *)x + j0 * in_size, len, (char *)y + j0 * out_size, params);
    }
}

/* ---- gelu: y = (0.5 x) (1 + erf(x * float32(1/sqrt 2))), the reference's order of operations */
static void gelu_generic(const void *xv, int64_t n, void *yv, const float *params)
{
    (void)params;
    const float *x = xv;
    float *y = yv;
    for (int64_t j = 0; j < n; j++) y[j] = (0.5f * x[j]) * (1.0f + fdb_erf_generic(x[j] * INV_SQRT2));
}

static void erf_generic(const void *xv, int64_t n, void *yv, const float *params)
{
    (void)params;
    const float *x = xv;
    float *y = yv;
    for (int64_t j = 0; j < n; j++) y[j] = fdb_erf_generic(x[j]);
}

static void exp_generic(const void *xv, int64_t n, void *yv, const float *params)
{
    (void)params;
    const float *x = xv;
    float *y = yv;
    for (int64_t j = 0; j < n; j++) y[j] = expf(x[j]);
}

FDB_TARGET_AVX512 static void gelu_avx512(const void *xv, int64_t n, void *yv, const float *params)
{
    (void)params;
    const float *x = xv;
    float *y = yv;
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    const __m512 inv_sqrt2 = _mm512_set1_ps(INV_SQRT2);
    for (int64_t j = 0; j < n; j += LANES) {
        __mmask16 k = fdb_lanes16(n - j);
        __m512 v = _mm512_maskz_loadu_ps(k, x + j);
        __m512 e = fdb_erf_avx512(_mm512_mul_ps(v, inv_sqrt2));
        _mm512_mask_storeu_ps(y + j, k, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, e)));
    }
}

FDB_TARGET_AVX512 static void erf_avx512(const void *xv, int64_t n, void *yv, const float *params)
{
    (void)params;
    const float *x = xv;
    float *y = yv;
    for (int64_t j = 0; j < n; j += LANES) {
        __mmask16 k = fdb_lanes16(n - j);
        _mm512_mask_storeu_ps(y + j, k, fdb_erf_avx512(_mm512_maskz_loadu_ps(k, x + j)));
    }
}

FDB_TARGET_AVX512 static void exp_avx512(const void *xv, int64_t n, void *yv, const float *params)
{
    (void)params;
    const float *x = xv;
    float *y = yv;
    for (int64_t j = 0; j < n; j += LANES) {
        __mmask16 k = fdb_lanes16(n - j);
        _mm512_mask_storeu_ps(y + j, k, fdb_exp_avx512(_mm512_maskz_loadu_ps(k, x + j)));
    }
}

FDB_TARGET_AVX2 static void gelu_avx2(const void *xv, int64_t n, void *yv, const float *params)
{
    (void)params;
    const float *x = xv;
    float *y = yv;
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 inv_sqrt2 = _mm256_set1_ps(INV_SQRT2);
    for (int64_t j = 0; j < n; j += 8) {
        __m256 v = load8_avx2(x + j, n - j);
        __m256 e = fdb_erf_avx2(_mm256_mul_ps(v, inv_sqrt2));
        store8_avx2(y + j, n - j, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e)));
    }
}

FDB_TARGET_AVX2 static void erf_avx2(const void *xv, int64_t n, void *yv, const float *params)
{
    (void)params;
    const float *x = xv;
    float *y = yv;
    for (int64_t j = 0; j < n; j += 8) store8_avx2(y + j, n - j, fdb_erf_avx2(load8_avx2(x + j, n - j)));
}

FDB_TARGET_AVX2 static void exp_avx2(const void *xv, int64_t n, void *yv, const float *params)
{
    (void)params;
    const float *x = xv;
    float *y = yv;
    for (int64_t j = 0; j < n; j += 8) store8_avx2(y + j, n - j, fdb_exp_avx2(load8_avx2(x + j, n - j)));
}

void fp_gelu(const float *x, int64_t n, float *y, int isa, int nthreads)
{
    run_pointwise(gelu_generic, gelu_avx2, gelu_avx512, 4, 4, x, n, y, NULL, isa, nthreads);
}

void fp_erf(const float *x, int64_t n, float *y, int isa, int nthreads)
{
    run_pointwise(erf_generic, erf_avx2, erf_avx512, 4, 4, x, n, y, NULL, isa, nthreads);
}

void fp_exp(const float *x, int64_t n, float *y, int isa, int nthreads)
{
    run_pointwise(exp_generic, exp_avx2, exp_avx512, 4, 4, x, n, y, NULL, isa, nthreads);
}

/* ---- quantize_u8: q = u8(clip(rint(x / scale) + zp, 0, 255)), every step one float32 operation.
 * x / scale is a true division (x * (1/scale) rounds differently); rint is round-half-even under the
 * default MXCSR / fenv mode (nearbyintf, vrndscaleps imm 0), never roundf's half-away; the clip
 * happens in float before the conversion (cvtps2dq maps values beyond int32 to INT32_MIN).
 * params = {scale, zp}. */
static void quantize_generic(const void *xv, int64_t n, void *qv, const float *params)
{
    const float *x = xv;
    uint8_t *q = qv;
    const float scale = params[0], zp = params[1];
    for (int64_t j = 0; j < n; j++) q[j] = fp_quantize1(x[j], scale, zp);
}

static void dequantize_generic(const void *qv, int64_t n, void *xv, const float *params)
{
    const uint8_t *q = qv;
    float *x = xv;
    const float scale = params[0], zp = params[1];
    for (int64_t j = 0; j < n; j++) x[j] = ((float)q[j] - zp) * scale;
}

FDB_TARGET_AVX512 static void quantize_avx512(const void *xv, int64_t n, void *qv, const float *params)
{
    const float *x = xv;
    uint8_t *q = qv;
    const __m512 scale = _mm512_set1_ps(params[0]), zp = _mm512_set1_ps(params[1]);
    for (int64_t j = 0; j < n; j += LANES) {
        __mmask16 k = fdb_lanes16(n - j);
        _mm512_mask_cvtepi32_storeu_epi8(q + j, k, fdb_quantize_avx512(_mm512_maskz_loadu_ps(k, x + j), scale, zp));
    }
}

FDB_TARGET_AVX512 static void dequantize_avx512(const void *qv, int64_t n, void *xv, const float *params)
{
    const uint8_t *q = qv;
    float *x = xv;
    const __m512 scale = _mm512_set1_ps(params[0]), zp = _mm512_set1_ps(params[1]);
    for (int64_t j = 0; j < n; j += LANES) {
        __mmask16 k = fdb_lanes16(n - j);
        __m512i qi = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, q + j));
        __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(qi), zp), scale);
        _mm512_mask_storeu_ps(x + j, k, v);
    }
}

FDB_TARGET_AVX2 static void quantize_avx2(const void *xv, int64_t n, void *qv, const float *params)
{
    const float *x = xv;
    uint8_t *q = qv;
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) fdb_quantize_store_avx2(q + j, _mm256_loadu_ps(x + j), params[0], params[1]);
    if (j < n) {
        uint8_t tail[8];
        fdb_quantize_store_avx2(tail, load8_avx2(x + j, n - j), params[0], params[1]);
        memcpy(q + j, tail, (size_t)(n - j));
    }
}

FDB_TARGET_AVX2 static void dequantize_avx2(const void *qv, int64_t n, void *xv, const float *params)
{
    const uint8_t *q = qv;
    float *x = xv;
    const __m256 scale = _mm256_set1_ps(params[0]), zp = _mm256_set1_ps(params[1]);
    for (int64_t j = 0; j < n; j += 8) {
        uint8_t bytes[8] = {0};
        memcpy(bytes, q + j, (size_t)(n - j < 8 ? n - j : 8));
        __m256i qi = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)bytes));
        store8_avx2(x + j, n - j, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(qi), zp), scale));
    }
}

void fp_quantize_u8(const float *x, int64_t n, float scale, float zp, uint8_t *q, int isa,
                    int nthreads)
{
    const float params[2] = {scale, zp};
    run_pointwise(quantize_generic, quantize_avx2, quantize_avx512, 4, 1, x, n, q, params, isa, nthreads);
}

void fp_dequantize_u8(const uint8_t *q, int64_t n, float scale, float zp, float *x, int isa,
                      int nthreads)
{
    const float params[2] = {scale, zp};
    run_pointwise(dequantize_generic, dequantize_avx2, dequantize_avx512, 1, 4, q, n, x, params, isa,
                  nthreads);
}

/* ================================================================ layer_norm entry points */

/* Rows split over threads; with q, each row is also quantized (params = {scale, zp}) right after its
 * layer norm, while it is still in L1, with fp_quantize_u8's arithmetic: the bits of the two calls,
 * in one pass and one parallel region. */
static void layer_norm_rows(const float *x, int64_t n, int64_t D, const float *w, const float *b,
                            float eps, float *y, uint8_t *q, const float *params, int isa, int nthreads)
{
    int nt = threads_for(n * D, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < n; r++) {
        if (isa == FDB_ISA_AVX512) {
            layer_norm_row_avx512(x + r * D, D, w, b, eps, y + r * D);
            if (q) quantize_avx512(y + r * D, D, q + r * D, params);
            continue;
        }
        if (isa == FDB_ISA_AVX2) {
            layer_norm_row_avx2(x + r * D, D, w, b, eps, y + r * D);
            if (q) quantize_avx2(y + r * D, D, q + r * D, params);
            continue;
        }
        layer_norm_row_generic(x + r * D, D, w, b, eps, y + r * D);
        if (q) quantize_generic(y + r * D, D, q + r * D, params);
    }
}

void fp_layer_norm(const float *x, int64_t n, int64_t D, const float *w, const float *b, float eps,
                   float *y, int isa, int nthreads)
{
    layer_norm_rows(x, n, D, w, b, eps, y, NULL, NULL, isa, nthreads);
}

void fp_layer_norm_u8(const float *x, int64_t n, int64_t D, const float *w, const float *b, float eps,
                      float *y, float scale, float zp, uint8_t *q, int isa, int nthreads)
{
    const float params[2] = {scale, zp};
    layer_norm_rows(x, n, D, w, b, eps, y, q, params, isa, nthreads);
}

/* ================================================================ embedding: a row gather */

int fp_embedding(const int64_t *ids, int64_t n, const float *table, int64_t V, int64_t D, float *out,
                 int nthreads)
{
    for (int64_t i = 0; i < n; i++)   /* validate first: nothing is written on a bad id */
        if (ids[i] < 0 || ids[i] >= V) return -1;
    int nt = threads_for(n * D, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t i = 0; i < n; i++) memcpy(out + i * D, table + ids[i] * D, (size_t)D * sizeof(float));
    return 0;
}

/* ================================================================ outlier product, added in place
 *
 *   p[m, n] = x[m, o_0] * w[0, n];   p = p + x[m, o_j] * w[j, n]   (j = 1 .. ko - 1, in order)
 *   y[m, n] = y[m, n] + p[m, n]
 *
 * The float32 share of an INT8 Linear's outlier input channels (fdbert.weights.QuantizedLinear):
 * every product and sum one float32 operation, no fused multiply-add, so every path gives the bits
 * of the reference (fdbert/reference/qlinear.py add_outlier_product). x: rows of stride ldx (the
 * Linear's whole float input; only the ko columns o are read); w: the outlier weight transposed,
 * f32 [ko, N]; y: f32 [M, N] with rows of stride ldy, updated in place. One pass over y instead of
 * a [M, N] product written by a GEMM of K = ko and added afterwards. The arithmetic is
 * fp32_vecmath.h's fdb_outlier_*, which the INT8 epilogue (qepilogue.c) also adds. */
static void outlier_row_generic(const float *x, const int32_t *o, int64_t ko, const float *w,
                                int64_t N, int64_t n0, float *y)
{
    for (int64_t n = n0; n < N; n++) y[n] = y[n] + fdb_outlier_generic(x, o, ko, w, N, n);
}

FDB_TARGET_AVX512 static void outlier_row_avx512(const float *x, const int32_t *o, int64_t ko,
                                                 const float *w, int64_t N, float *y)
{
    for (int64_t n = 0; n < N; n += LANES) {
        const __mmask16 k = fdb_lanes16(N - n);
        const __m512 p = fdb_outlier_avx512(x, o, ko, w, N, n, k);
        _mm512_mask_storeu_ps(y + n, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, y + n), p));
    }
}

FDB_TARGET_AVX2 static void outlier_row_avx2(const float *x, const int32_t *o, int64_t ko,
                                             const float *w, int64_t N, float *y)
{
    int64_t n = 0;
    for (; n + 8 <= N; n += 8)
        _mm256_storeu_ps(y + n, _mm256_add_ps(_mm256_loadu_ps(y + n), fdb_outlier_avx2(x, o, ko, w, N, n)));
    outlier_row_generic(x, o, ko, w, N, n, y);
}

void fp_add_outlier_product(const float *x, int64_t ldx, const int32_t *o, int64_t ko, const float *w,
                            float *y, int64_t ldy, int64_t M, int64_t N, int isa, int nthreads)
{
    if (ko <= 0 || M <= 0 || N <= 0) return;
    int nt = threads_for(M * N * ko, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t m = 0; m < M; m++) {
        if (isa == FDB_ISA_AVX512)
            outlier_row_avx512(x + m * ldx, o, ko, w, N, y + m * ldy);
        else if (isa == FDB_ISA_AVX2)
            outlier_row_avx2(x + m * ldx, o, ko, w, N, y + m * ldy);
        else
            outlier_row_generic(x + m * ldx, o, ko, w, N, 0, y + m * ldy);
    }
}
