/* qepilogue.c -- the fused epilogue of every INT8 GEMM (dense, AMX, 1x4 sparse): int32 sums to float32 or u8.
 *
 * reference: fdbert/reference/qlinear.py (QuantizedLinear.__call__), fdbert/int8.py (quantize_u8)
 * · tests: spec_tests/test_native_qgemm.py, spec_tests/test_native_gelu_u8.py, spec_tests/test_native_qlinear.py, spec_tests/test_native_outliers.py
 *
 *   y   = float32(acc - comp[n]) * mult[n] + bias[n]                  (the INT8 contract, qgemm.h)
 *   y   = y + p[m, n]                                                  if ko: the outlier share (qgemm.h)
 *   y   = (0.5 y) (1 + erf(y / sqrt 2))                                if gelu (fp32_vecmath.h's erf)
 *   y   = y + residual[m, n]                                           if residual
 *   out = y,  or  u8(clip(rint(y / out_scale) + out_zp, 0, 255))      by out_kind
 *
 * Every step is one float32 operation in the reference's order, no fused multiply-add, so every
 * path (generic, avx2, avx512) returns the reference's bits wherever the reference's erf is
 * correctly rounded. Layout: the GELU helpers, the generic row loop (also the tail of the SIMD
 * ones), the AVX-512 row and channel-major loops, the AVX2 row loop, then the entry points that
 * pick the loop by ISA path: qg_epilogue_rows / qg_epilogue_row (row-major tiles, every driver) and
 * qg_epilogue_channels (channel-major tiles of qspmm.c).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <immintrin.h>

#include "fp32_ops.h"       /* fp_quantize1: the INT8 contract's scalar quantize */
#include "fp32_vecmath.h"   /* fdb_erf_*, fdb_lut16x8, fdb_store_codes8, fdb_outlier_* */
#include "qgemm.h"
#include "qgemm_internal.h"   /* qg_default_threads */

/* GELU as fdbert.reference.activations.gelu in float32: (0.5 * y) * (1 + erf(y * f32(1/sqrt 2))). */
#define QG_INV_SQRT2F 0.70710678118654752f

static inline float gelu_generic(float y)
{
    return (0.5f * y) * (1.0f + fdb_erf_generic(y * QG_INV_SQRT2F));
}

__attribute__((target("avx512f")))
static inline __m512 gelu_avx512(__m512 y)
{
    const __m512 e = fdb_erf_avx512(_mm512_mul_ps(y, _mm512_set1_ps(QG_INV_SQRT2F)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), y),
                         _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* GELU feeding a u8 requantization needs only rint(gelu(y) / scale) to be right, not every bit of
 * gelu(y). gelu_rint_u8_avx512 first evaluates a cheaper erf in float32: on the same 16 pieces,
 * degree-5 least-squares fits (Chebyshev nodes) in z = 8|x| - (2i + 1) (exact; piece 0 too: only the
 * absolute error matters here, so it needs no relative-accuracy form), rounded to float32, one
 * vpermps per coefficient for 16 lanes (6 vpermps + 5 FMAs, vs 11 vpermt2pd + 10 FMAs per 8 lanes
 * for the exact double path). Its erf is within 5.9e-8 of the exact erf on 20 M inputs over
 * [0, 4.5] (degree 4: 1.8e-7; the fit and check are in docs/kernels.md). Assuming 1e-6, the cheap t = g * float32(1 / scale) is within
 * |y| * 1.14e-6 / scale of the exact path's t = float32(gelu(y) / scale) (|gelu(y)| <= |y|; the
 * roundings of 1 + erf and of the products, the reciprocal's 2^-24 and the division's rounding
 * included). Where every lane's t is more than |y| * 2e-6 / scale away from a rounding boundary
 * k + 0.5, i.e. |t - rint(t)| < 0.5 - |y| * 2e-6 / scale, rint(t) equals the exact path's;
 * otherwise (~0.01% of lanes at typical scales, and NaN/inf) the whole vector takes the exact
 * gelu_avx512 and a true division. So the u8 codes are those of the exact path, on every ISA,
 * bit for bit. */
#define QG_GELU_U8_MARGIN 2e-6f   /* the margin above, per |y| and per unit of scale */
#define QG_ERF_TF_DEG 5
static const float QG_ERF_TF[QG_ERF_TF_DEG + 1][16] = {   /* [power][piece]: erf(1/8 + i/4 + z/8) */
    {0.1403162032365799f, 0.4041168987751007f, 0.6232408881187439f, 0.7840750813484192f, 0.8883882164955139f, 0.9481700658798218f, 0.9784437417984009f, 0.9919900298118591f, 0.9973459839820862f, 0.9992170333862305f, 0.999794602394104f, 0.9999521374702454f, 0.9999901056289673f, 0.9999982118606567f, 0.9999997019767761f, 0.9999999403953552f},
    {0.13886065781116486f, 0.12254410237073898f, 0.0954374447464943f, 0.06559313088655472f, 0.03978424519300461f, 0.02129497192800045f, 0.010059031657874584f, 0.004193228203803301f, 0.0015426024328917265f, 0.0005008097505196929f, 0.00014348443073686212f, 3.62785613106098e-05f, 8.094849363260437e-06f, 1.5939729109959444e-06f, 2.7699169891093334e-07f, 4.247822360525788e-08f},
    {-0.002169649349525571f, -0.005744147580116987f, -0.007455961778759956f, -0.007174226455390453f, -0.005594692658632994f, -0.0036601205356419086f, -0.002043271902948618f, -0.000982796773314476f, -0.00040974997682496905f, -0.00014867124264128506f, -4.7075995098566636e-05f, -1.3035145457251929e-05f, -3.1610686619387707e-06f, -6.721380714225234e-07f, -1.2542523109004833e-07f, -2.055551995283622e-08f},
    {-0.0007006216328591108f, -0.00045874028000980616f, -0.00010873982682824135f, 0.00018148368690162897f, 0.00031728571048006415f, 0.0003084726631641388f, 0.00022430064564105123f, 0.00013172293256502599f, 6.452696834458038e-05f, 2.681740079424344e-05f, 9.551331459078938e-06f, 2.9344203085202025e-06f, 7.811771638444043e-07f, 1.80783203518331e-07f, 3.645889634640298e-08f, 6.419439646521141e-09f},
    {1.664509909460321e-05f, 4.038423139718361e-05f, 4.2845138523261994e-05f, 2.7381051040720195e-05f, 6.917693553987192e-06f, -7.320074473682325e-06f, -1.2055973456881475e-05f, -1.0293715604348108e-05f, -6.446027327910997e-06f, -3.2241077860817313e-06f, -1.3347017784326454e-06f, -4.6595172875640856e-07f, -1.387262216212548e-07f, -3.5484116978068414e-08f, -7.837807736166269e-09f, -1.5005987563654344e-09f},
    {3.159423613396939e-06f, 1.3832443528372096e-06f, -8.250441965174105e-07f, -2.0358027086331276e-06f, -1.8634398202266311e-06f, -9.351780931865505e-07f, -7.028967274891329e-08f, 3.457037962562026e-07f, 3.797672150085418e-07f, 2.551446129928081e-07f, 1.292850981826632e-07f, 5.27254435667146e-08f, 1.7830261711537787e-08f, 5.083612197864795e-09f, 1.2347290967440472e-09f, 2.5727667218866657e-10f},
};

__attribute__((target("avx512f")))
static inline __m512 erf_cheap_avx512(__m512 x)
{
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
    const __m512 fa = _mm512_min_ps(_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), absmask)),
                                    _mm512_set1_ps(4.0f));
    const __m512i i32 = _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_mul_ps(fa, _mm512_set1_ps(4.0f))),
                                         _mm512_set1_epi32(15));
    const __m512 c = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i32), _mm512_set1_ps(2.0f), _mm512_set1_ps(1.0f));
    const __m512 z = _mm512_fmsub_ps(fa, _mm512_set1_ps(8.0f), c);   /* 8 (|x| - center), exact */
    __m512 p = _mm512_permutexvar_ps(i32, _mm512_loadu_ps(QG_ERF_TF[QG_ERF_TF_DEG]));
    for (int j = QG_ERF_TF_DEG - 1; j >= 0; j--)
        p = _mm512_fmadd_ps(p, z, _mm512_permutexvar_ps(i32, _mm512_loadu_ps(QG_ERF_TF[j])));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(p),
                               _mm512_andnot_si512(absmask, _mm512_castps_si512(x))));
}

/* rint(gelu(y) / scale), the exact path's value (see above). */
__attribute__((target("avx512f")))
static inline __m512 gelu_rint_u8_avx512(__m512 y, __m512 scale, __m512 inv_scale,
                                               __m512 margin_per_y)
{
    const __m512 h = _mm512_mul_ps(_mm512_set1_ps(0.5f), y);
    const __m512 e = erf_cheap_avx512(_mm512_mul_ps(y, _mm512_set1_ps(QG_INV_SQRT2F)));
    const __m512 t = _mm512_mul_ps(_mm512_mul_ps(h, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), inv_scale);
    const __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 limit = _mm512_fnmadd_ps(_mm512_abs_ps(y), margin_per_y, _mm512_set1_ps(0.5f));
    if (_mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(t, r)), limit, _CMP_LT_OQ) == 0xFFFF)
        return r;   /* every lane decided */
    return _mm512_roundscale_ps(_mm512_div_ps(gelu_avx512(y), scale),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* The generic epilogue loop; also the tail of the AVX-512 one (starts at column i0). */
static void epilogue_row_generic(const int32_t *acc, int64_t m, int64_t n0, int64_t i0,
                                 int64_t len, int64_t N, const qg_epilogue *ep)
{
    for (int64_t i = i0; i < len; i++) {
        const int64_t n = n0 + i;
        /* acc - comp in wrapping int32 (as vpsubd and the reference): exact, see docs/int8.md */
        const int32_t d = (int32_t)((uint32_t)acc[i] - (uint32_t)(ep->comp ? ep->comp[n] : 0));
        float y = (float)d * ep->mult[n];
        if (ep->bias) y = y + ep->bias[n];
        if (ep->ko) y = y + fdb_outlier_generic(ep->xo + m * ep->ldxo, ep->xo_idx, ep->ko, ep->wo_t, N, n);
        if (ep->gelu) y = gelu_generic(y);
        if (ep->residual) y = y + ep->residual[m * N + n];
        if (ep->out_kind == QG_OUT_F32)
            ((float *)ep->out)[m * N + n] = y;
        else
            ((uint8_t *)ep->out)[m * N + n] = fp_quantize1(y, ep->out_scale, ep->out_zp);
    }
}

/* The AVX-512 epilogue of 16 accumulators a whose lanes carry the channel parameters comp (zeros
 * where the epilogue has none), mult and bias: y = (a - comp) * mult (+ bias: added only if the
 * epilogue has one, as -0 + 0 is +0), then GELU. Residual and store are the caller's. */
typedef struct {
    __m512 scale, zp, inv_scale, margin_per_y;
    int gelu_u8, u8, bias;
} ep16_consts;

__attribute__((target("avx512f")))
static inline ep16_consts ep16_setup(const qg_epilogue *ep)
{
    ep16_consts k;
    k.scale = _mm512_set1_ps(ep->out_scale);
    k.zp = _mm512_set1_ps(ep->out_zp);
    k.inv_scale = _mm512_set1_ps(1.0f / ep->out_scale);   /* the cheap GELU path only */
    k.margin_per_y = _mm512_set1_ps(QG_GELU_U8_MARGIN / ep->out_scale);
    k.u8 = ep->out_kind == QG_OUT_U8;
    k.bias = ep->bias != NULL;
    /* GELU then u8 without residual (FFN1 of the INT8 block): the cheap-first path above */
    k.gelu_u8 = ep->gelu && !ep->residual && k.u8;
    return k;
}

/* y before any residual, or for gelu_u8 already rint(gelu(y) / scale). */
__attribute__((target("avx512f"), always_inline))
static inline __m512 ep16_avx512(__m512i a, __m512i comp, __m512 mult, __m512 bias, const __m512 *p,
                                 int gelu, const ep16_consts *k)
{
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a, comp)), mult);
    if (k->bias) y = _mm512_add_ps(y, bias);
    if (p) y = _mm512_add_ps(y, *p);
    if (k->gelu_u8) return gelu_rint_u8_avx512(y, k->scale, k->inv_scale, k->margin_per_y);
    return gelu ? gelu_avx512(y) : y;
}

/* rint(y / scale) (already done for gelu_u8) + zp, clamped to 0..255, as int32. */
__attribute__((target("avx512f"), always_inline))
static inline __m512i ep16_code(__m512 q, int rounded, const ep16_consts *k)
{
    if (!rounded)
        q = _mm512_roundscale_ps(_mm512_div_ps(q, k->scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, k->zp), _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
    return _mm512_cvtps_epi32(q);
}

__attribute__((target("avx512f")))
static void epilogue_rows_avx512(const int32_t *acc0, int64_t lda, int64_t m0, int64_t rows, int64_t n0,
                                 int64_t len, int64_t N, const qg_epilogue *ep)
{
    const ep16_consts k = ep16_setup(ep);
    for (int64_t r = 0; r < rows; r++) {
        const int32_t *acc = acc0 + r * lda;
        const int64_t m = m0 + r;
        int64_t i = 0;
        for (; i + 16 <= len; i += 16) {
            const int64_t n = n0 + i;
            const __m512 p = ep->ko ? fdb_outlier_avx512(ep->xo + m * ep->ldxo, ep->xo_idx, ep->ko, ep->wo_t, N,
                                                         n, 0xFFFF) : _mm512_setzero_ps();
            __m512 y = ep16_avx512(_mm512_loadu_si512(acc + i),
                                   ep->comp ? _mm512_loadu_si512(ep->comp + n) : _mm512_setzero_si512(),
                                   _mm512_loadu_ps(ep->mult + n),
                                   ep->bias ? _mm512_loadu_ps(ep->bias + n) : _mm512_setzero_ps(),
                                   ep->ko ? &p : NULL, ep->gelu, &k);
            if (ep->residual) y = _mm512_add_ps(y, _mm512_loadu_ps(ep->residual + m * N + n));
            if (ep->out_kind == QG_OUT_F32)
                _mm512_storeu_ps((float *)ep->out + m * N + n, y);
            else
                _mm_storeu_si128((__m128i *)((uint8_t *)ep->out + m * N + n),
                                 _mm512_cvtepi32_epi8(ep16_code(y, k.gelu_u8, &k)));
        }
        if (i < len) epilogue_row_generic(acc, m, n0, i, len, N, ep);
    }
}

/* ---- AVX2 (8 lanes): the rows epilogue of the AVX2 paths, the same arithmetic per element.
 * FMA is not part of the AVX2 path's requirements, so the cheap erf below runs its Horner steps
 * as a multiply then an add (two roundings): max |cheap erf - erf| is then 5.96e-8 on the 20 M
 * inputs of docs/kernels.md (5.94e-8 with FMAs), well inside the 1e-6 the margin assumes. Lanes
 * the margin test cannot decide, and GELU anywhere but before a u8 output without residual, take
 * the scalar exact gelu_generic: the same bits as the AVX-512 exact path. */

/* erf_cheap_avx512 on 8 lanes (the same pieces, coefficients and NaN behaviour) */
__attribute__((target("avx2"), always_inline))
static inline __m256 erf_cheap_avx2(__m256 x)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 fa = _mm256_min_ps(_mm256_and_ps(x, absmask), _mm256_set1_ps(4.0f));   /* NaN -> 4 */
    const __m256i i32 = _mm256_min_epi32(_mm256_cvttps_epi32(_mm256_mul_ps(fa, _mm256_set1_ps(4.0f))),
                                         _mm256_set1_epi32(15));
    const __m256 c = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i32), _mm256_set1_ps(2.0f)),
                                   _mm256_set1_ps(1.0f));
    /* 8 (|x| - center): 8|x| is exact, the subtraction too except in piece 0 below |x| = 1/16 */
    const __m256 z = _mm256_sub_ps(_mm256_mul_ps(fa, _mm256_set1_ps(8.0f)), c);
    const __m256 upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(i32, _mm256_set1_epi32(7)));
    __m256 p = fdb_lut16x8(QG_ERF_TF[QG_ERF_TF_DEG], i32, upper);
    for (int j = QG_ERF_TF_DEG - 1; j >= 0; j--)
        p = _mm256_add_ps(_mm256_mul_ps(p, z), fdb_lut16x8(QG_ERF_TF[j], i32, upper));
    return _mm256_or_ps(p, _mm256_andnot_ps(absmask, x));
}

/* rint(gelu(y) / scale) for 8 lanes: the cheap erf where the margin decides every lane, else the
 * scalar exact path (see gelu_rint_u8_avx512) */
__attribute__((target("avx2"), always_inline))
static inline __m256 gelu_rint_u8_avx2(__m256 y, float scale, __m256 inv_scale, __m256 margin_per_y)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 h = _mm256_mul_ps(_mm256_set1_ps(0.5f), y);
    const __m256 e = erf_cheap_avx2(_mm256_mul_ps(y, _mm256_set1_ps(QG_INV_SQRT2F)));
    const __m256 t = _mm256_mul_ps(_mm256_mul_ps(h, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), inv_scale);
    const __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 limit = _mm256_sub_ps(_mm256_set1_ps(0.5f),
                                       _mm256_mul_ps(_mm256_and_ps(y, absmask), margin_per_y));
    const __m256 dist = _mm256_and_ps(_mm256_sub_ps(t, r), absmask);
    if (_mm256_movemask_ps(_mm256_cmp_ps(dist, limit, _CMP_LT_OQ)) == 0xFF) return r;
    float v[8];
    _mm256_storeu_ps(v, y);
    for (int l = 0; l < 8; l++) v[l] = nearbyintf(gelu_generic(v[l]) / scale);
    return _mm256_loadu_ps(v);
}

__attribute__((target("avx2")))
static void epilogue_rows_avx2(const int32_t *acc0, int64_t lda, int64_t m0, int64_t rows, int64_t n0,
                               int64_t len, int64_t N, const qg_epilogue *ep)
{
    const int u8 = ep->out_kind == QG_OUT_U8, gelu_u8 = ep->gelu && !ep->residual && u8;
    const __m256 scale = _mm256_set1_ps(ep->out_scale), zp = _mm256_set1_ps(ep->out_zp);
    const __m256 inv_scale = _mm256_set1_ps(1.0f / ep->out_scale);
    const __m256 margin_per_y = _mm256_set1_ps(QG_GELU_U8_MARGIN / ep->out_scale);
    for (int64_t r = 0; r < rows; r++) {
        const int32_t *acc = acc0 + r * lda;
        const int64_t m = m0 + r;
        int64_t i = 0;
        for (; i + 8 <= len; i += 8) {
            const int64_t n = n0 + i;
            __m256i d = _mm256_loadu_si256((const __m256i *)(acc + i));
            if (ep->comp) d = _mm256_sub_epi32(d, _mm256_loadu_si256((const __m256i *)(ep->comp + n)));
            __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(d), _mm256_loadu_ps(ep->mult + n));
            if (ep->bias) y = _mm256_add_ps(y, _mm256_loadu_ps(ep->bias + n));
            if (ep->ko) y = _mm256_add_ps(y, fdb_outlier_avx2(ep->xo + m * ep->ldxo, ep->xo_idx, ep->ko, ep->wo_t, N, n));
            if (gelu_u8) {
                y = gelu_rint_u8_avx2(y, ep->out_scale, inv_scale, margin_per_y);
            } else if (ep->gelu) {
                float v[8];
                _mm256_storeu_ps(v, y);
                for (int l = 0; l < 8; l++) v[l] = gelu_generic(v[l]);
                y = _mm256_loadu_ps(v);
            }
            if (ep->residual) y = _mm256_add_ps(y, _mm256_loadu_ps(ep->residual + m * N + n));
            if (!u8) {
                _mm256_storeu_ps((float *)ep->out + m * N + n, y);
                continue;
            }
            /* rint(y / scale) (done for gelu_u8) + zp, clipped in float as fp_quantize1, to bytes */
            if (!gelu_u8) y = _mm256_round_ps(_mm256_div_ps(y, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            fdb_store_codes8((uint8_t *)ep->out + m * N + n, y, zp);
        }
        if (i < len) epilogue_row_generic(acc, m, n0, i, len, N, ep);
    }
}

/* Channel-major (qspmm.c): row c of T holds channel n0 + c for ntok tokens; in place, each int32
 * becomes y's float bits (f32 outputs; the residual is added after the transpose) or the u8 code.
 * The same arithmetic per element as epilogue_rows_avx512 (one channel per vector instead of 16). */
__attribute__((target("avx512f")))
static void epilogue_channels_avx512(int32_t *T, int64_t ldt, int64_t n0, int64_t nch, int64_t ntok,
                                     const qg_epilogue *ep)
{
    const ep16_consts k = ep16_setup(ep);
    for (int64_t c = 0; c < nch; c++) {
        const int64_t n = n0 + c;
        const __m512i comp = _mm512_set1_epi32(ep->comp ? ep->comp[n] : 0);
        const __m512 mult = _mm512_set1_ps(ep->mult[n]), bias = _mm512_set1_ps(ep->bias ? ep->bias[n] : 0.0f);
        int32_t *t = T + c * ldt;
        for (int64_t i = 0; i < ntok; i += 16) {
            const __m512 y = ep16_avx512(_mm512_loadu_si512(t + i), comp, mult, bias, NULL, ep->gelu, &k);
            _mm512_storeu_si512(t + i, k.u8 ? ep16_code(y, k.gelu_u8, &k) : _mm512_castps_si512(y));
        }
    }
}

int qg_epilogue_channels(int32_t *T, int64_t ldt, int64_t n0, int64_t nch, int64_t ntok,
                         const qg_epilogue *ep, int isa)
{
    if (isa < FDB_ISA_AVX512 || ep->out_kind == QG_OUT_S32 || (ep->residual && ep->out_kind == QG_OUT_U8)
        || ntok % 16 || ep->ko)   /* the outlier share is per token row: the rows epilogue adds it */
        return 0;
    epilogue_channels_avx512(T, ldt, n0, nch, ntok, ep);
    return 1;
}

void qg_epilogue_rows(const int32_t *acc, int64_t lda, int64_t m0, int64_t rows, int64_t n0,
                      int64_t len, int64_t N, const qg_epilogue *ep, int isa)
{
    if (ep->out_kind == QG_OUT_S32) {
        for (int64_t r = 0; r < rows; r++)
            memcpy((int32_t *)ep->out + (m0 + r) * N + n0, acc + r * lda, (size_t)len * sizeof(int32_t));
    } else if (isa >= FDB_ISA_AVX512) {
        epilogue_rows_avx512(acc, lda, m0, rows, n0, len, N, ep);
    } else if (isa >= FDB_ISA_AVX2) {
        epilogue_rows_avx2(acc, lda, m0, rows, n0, len, N, ep);
    } else {
        for (int64_t r = 0; r < rows; r++) epilogue_row_generic(acc + r * lda, m0 + r, n0, 0, len, N, ep);
    }
}

void qg_epilogue_row(const int32_t *acc, int64_t m, int64_t n0, int64_t len, int64_t N,
                     const qg_epilogue *ep, int isa)
{
    qg_epilogue_rows(acc, len, m, 1, n0, len, N, ep, isa);
}

/* ---- GELU then u8 on float32 input: q = u8(clip(rint(gelu(x) / scale) + zp, 0, 255)), the bits of
 * fp_gelu followed by fp_quantize_u8 (fp32_ops.c), in one pass and without the float GELU stored.
 * The unfused FFN of INT8 blocks with float outlier channels uses it (fdbert_native/ops.py): their
 * GELU input is float32 (it carries the outlier share), so the fused epilogue above cannot serve,
 * but the codes need only rint(gelu(x) / scale): the same cheap-first GELU decides them. */
static void gelu_quantize_generic(const float *x, int64_t n, uint8_t *q, float scale, float zp)
{
    for (int64_t j = 0; j < n; j++) q[j] = fp_quantize1(gelu_generic(x[j]), scale, zp);
}

__attribute__((target("avx512f")))
static void gelu_quantize_avx512(const float *x, int64_t n, uint8_t *q, float scale, float zp)
{
    const qg_epilogue ep = {.out_kind = QG_OUT_U8, .gelu = 1, .out_scale = scale, .out_zp = zp};
    const ep16_consts k = ep16_setup(&ep);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 lanes = fdb_lanes16(n - j);
        const __m512 r = gelu_rint_u8_avx512(_mm512_maskz_loadu_ps(lanes, x + j), k.scale, k.inv_scale,
                                             k.margin_per_y);
        _mm512_mask_cvtepi32_storeu_epi8(q + j, lanes, ep16_code(r, 1, &k));
    }
}

__attribute__((target("avx2")))
static void gelu_quantize_avx2(const float *x, int64_t n, uint8_t *q, float scale, float zp)
{
    const __m256 inv_scale = _mm256_set1_ps(1.0f / scale), zpv = _mm256_set1_ps(zp);
    const __m256 margin_per_y = _mm256_set1_ps(QG_GELU_U8_MARGIN / scale);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        fdb_store_codes8(q + j, gelu_rint_u8_avx2(_mm256_loadu_ps(x + j), scale, inv_scale, margin_per_y), zpv);
    gelu_quantize_generic(x + j, n - j, q + j, scale, zp);
}

#define QG_GELU_U8_BLOCK 16384   /* elements per parallel work item */

void qg_gelu_quantize_u8(const float *x, int64_t n, float scale, float zp, uint8_t *q, int isa,
                         int nthreads)
{
    void (*span)(const float *, int64_t, uint8_t *, float, float) =
        isa >= FDB_ISA_AVX512 ? gelu_quantize_avx512 : isa >= FDB_ISA_AVX2 ? gelu_quantize_avx2
                                                                          : gelu_quantize_generic;
    const int64_t nblocks = (n + QG_GELU_U8_BLOCK - 1) / QG_GELU_U8_BLOCK;
    if (nthreads <= 0) nthreads = qg_default_threads();
    if (nthreads > nblocks) nthreads = nblocks > 0 ? (int)nblocks : 1;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t j0 = b * QG_GELU_U8_BLOCK;
        span(x + j0, n - j0 < QG_GELU_U8_BLOCK ? n - j0 : QG_GELU_U8_BLOCK, q + j0, scale, zp);
    }
}
