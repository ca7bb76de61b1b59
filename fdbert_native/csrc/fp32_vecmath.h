/* fp32_vecmath.h -- the float32 exp and the one erf of the native kernels, with their SIMD twins.
 *
 * reference: fdbert/reference/activations.py (gelu's erf, softmax's exp) · tests: spec_tests/test_native_activations.py
 *
 * Internal header (static inline, no state), shared by fp32_ops.c, attention.c, attention_int8.c,
 * decoder_ops.c and qepilogue.c. Twins carry the suffixes _generic, _avx2 (AVX2 + FMA, 8 lanes) and
 * _avx512 (16 lanes), in that order, and return the same bits unless said otherwise.
 *
 *   fdb_erf_generic / _avx2 / _avx512 (x)   erf(x), the only erf: a piecewise polynomial evaluated in
 *                 float64 (see the table below), so the float32 result is the correctly rounded erf
 *                 except within ~1e-15 of a rounding tie -- the bits of the reference's
 *                 scipy.special.erf on float32. Used by gelu (fp32_ops.c) and by the INT8 GEMM
 *                 epilogue's GELU (qepilogue.c): one GELU, the same bits on every path.
 *   fdb_exp_avx2 / _avx512 (x)   exp(x): Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then
 *                 Cephes' degree-6 polynomial (Moshier's expf, the one numpy's SIMD exp also
 *                 descends from), and a multiply by 2^n that handles overflow (inf) and gradual
 *                 underflow (subnormals, then 0) without branches. x = -inf gives +0. <= 1 ulp from
 *                 the correctly rounded exp over every float32 in [-104, 88.7]. Its generic twin is
 *                 libm's expf: within a tolerance, never bit-matched.
 *   fdb_quantize_avx512 (x, scale, zp) / fdb_quantize_store_avx2   the INT8 contract's
 *                 u8(clip(rint(x / scale) + zp, 0, 255)): a true division, round half to even, the
 *                 clip in float. Exact: bit-identical to fp_quantize1 (fp32_ops.h) and the reference.
 *   fdb_outlier_generic / _avx2 / _avx512 (x, o, ko, w, N, n[, k])   the float share of an INT8
 *                 Linear's outlier input channels at output column(s) n: p = x[o_0] w[0, n], then
 *                 p + x[o_j] w[j, n] in channel order, one float32 operation each, no FMA (the
 *                 reference's add_outlier_product). Used by fp_add_outlier_product (fp32_ops.c) and
 *                 by the INT8 GEMM epilogue (qepilogue.c): one order, the same bits on every path.
 *   helpers: fdb_transpose16 (a 16x16 transpose of 32-bit words in registers), fdb_lanes16 /
 *                 fdb_lanes8 (tail masks), fdb_hmax8 / fdb_hsum8, fdb_lut16x8, fdb_store_codes8.
 */
#ifndef FDBERT_FP32_VECMATH_H
#define FDBERT_FP32_VECMATH_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "cpu_features.h"   /* FDB_TARGET_AVX2, FDB_TARGET_AVX512 */

/* erf for float32, computed in double from a piecewise polynomial: |x| is clamped to 4 (where erf
 * rounds to 1.0f) and [0, 4] cut into 16 intervals of width 1/4. Interval 0 uses the Maclaurin
 * series, erf(a) = a * sum_{n<=10} c_n (a^2)^n, c_n = 2/sqrt(pi) (-1)^n / (n! (2n+1)); interval i >= 1
 * a degree-10 polynomial in u = 8 (a - center_i) in [-1, 1] (a Chebyshev fit of scipy.special.erf
 * converted to powers of u, generated offline). The relative error in double is ~1.5e-15, so the
 * float32 result is the correctly rounded erf except within ~1e-15 of a rounding tie. Evaluated as 11
 * Horner FMAs in double with the coefficients picked per lane by a table lookup (vpermt2pd on
 * AVX-512, a gather on AVX2). The three twins run the same operations: every path gives the same bits. */
#define FDB_ERF_DEG 10
static const double FDB_ERF_T[FDB_ERF_DEG + 1][16] = {   /* [power][interval] */
    {1.1283791670955126, 0.4041169094348222, 0.6232408821884177, 0.7840750610598599, 0.8883882317017068, 0.9481700727820903, 0.9784437332399831, 0.9919900576701194, 0.997345970640517, 0.999217061782109, 0.9997946242638597, 0.9999521451602558, 0.9999901032653742, 0.999998184718573, 0.9999997048598069, 0.9999999574860563},
    {-0.37612638903183754, 0.1225441011932386, 0.09543744197007635, 0.06559313066126901, 0.039784244812595744, 0.02129497171093906, 0.010059032377813616, 0.004193228553026978, 0.0015426025767917555, 0.0005008097327088114, 0.00014348439073547846, 3.627853535769035e-05, 8.094835404202569e-06, 1.59396760007389e-06, 2.76990035445561e-07, 4.2477797803104836e-08},
    {0.11283791670955126, -0.005744254743433786, -0.007456050153913539, -0.007174248666077349, -0.005594659426771772, -0.003660073262817596, -0.0020432409517442923, -0.0009827879421174962, -0.00040975380946012735, -0.00014867788939835344, -4.708081571075854e-05, -1.3037598645302647e-05, -3.1620450803552448e-06, -6.724550811984191e-07, -1.2551111096451607e-07, -2.057518269461734e-08},
    {-0.026866170645131252, -0.0004587425663177579, -0.00010873406475990549, 0.0001814914096973327, 0.00031728971286825515, 0.0003084720837115225, 0.00022429808525225057, 0.00013172088390882224, 6.452618200329556e-05, 2.681744825122817e-05, 9.551613899379413e-06, 2.934640638764701e-06, 7.812886406426747e-07, 1.8082607542690195e-07, 3.6472160157710536e-08, 6.422829658935288e-09},
    {0.005223977625442188, 4.066977236387925e-05, 4.308101896999636e-05, 2.7440567011636677e-05, 6.8294182515283525e-06, -7.446438117196146e-06, -1.2138394318105469e-05, -1.0317353867775978e-05, -6.4357491245171805e-06, -3.2063509637318005e-06, -1.321849067045306e-06, -4.594140691888433e-07, -1.3612644735651568e-07, -3.464063062247273e-08, -7.609509602452538e-09, -1.4483720687138664e-09},
    {-0.0008548327023450852, 1.3877975618298564e-06, -8.365908248088064e-07, -2.051265733401738e-06, -1.8714503418191274e-06, -9.340203179340386e-07, -6.51527596913832e-08, 3.4981028466932904e-07, 3.8133187443488335e-07, 2.5504739407333094e-07, 1.2871950910796417e-07, 5.228463761736222e-08, 1.760745839417843e-08, 4.9979906094524425e-09, 1.2082531779979439e-09, 2.5052008277811946e-10},
    {0.00012055332981789664, -1.911417556896346e-07, -1.5771806878740328e-07, -3.9550000450077e-08, 5.926830154073488e-08, 8.453840762539061e-08, 5.4988001249796123e-08, 1.5659992783274815e-08, -6.948133875882974e-09, -1.1879281066838492e-08, -8.571012829973454e-09, -4.349074232134093e-09, -1.7254617442337917e-09, -5.585050162626857e-10, -1.5082333533095824e-10, -3.439718101638229e-11},
    {-1.492565035840625e-05, -2.603039173424584e-09, 6.632600191004469e-09, 8.867005980902282e-09, 4.580997687319778e-09, -6.765555205596359e-10, -2.9488358421472554e-09, -2.3500510853040968e-09, -8.913539920503832e-10, 5.876769167398188e-11, 3.246517390956271e-10, 2.520560867431731e-10, 1.270828891837965e-10, 4.871657508334176e-11, 1.504073029423968e-11, 3.821291096397605e-12},
    {1.6462114365889246e-06, 6.705257206558654e-10, 3.985807173545534e-10, -1.09988551424437e-10, -3.5945923519816163e-10, -2.5398359829320307e-10, -3.433271264917513e-11, 8.533248086495963e-11, 8.244949989858092e-11, 3.5427523065233155e-11, 2.0931547919448596e-12, -8.037838683544365e-12, -6.61080717916927e-12, -3.269715583007476e-12, -1.1567842108013471e-12, -3.6797574472353703e-13},
    {-1.6365844691234924e-07, 9.613775733257657e-13, -2.6857577014308314e-11, -2.413904643675195e-11, -2.7483233742726102e-12, 1.1649179934680161e-11, 1.0465449000791247e-11, 2.715616583594552e-12, -2.1325201497751793e-12, -2.503691358592759e-12, -1.1328962355160903e-12, -1.2972538175217411e-13, 1.8120204653180006e-13, 1.6306944137037855e-13, 6.823937743981539e-14, 3.0586433047973696e-14},
    {1.4807192815879218e-08, -1.8808238786877043e-12, -7.056887282209052e-13, 8.097879378633334e-13, 1.0566124267287437e-12, 3.049692395524235e-13, -3.434093995303207e-13, -3.9273255847583337e-13, -1.1282552083423063e-13, 4.362680708986215e-14, 5.625564757320923e-14, 1.098558367979663e-14, -5.737657098148722e-15, -4.011120269449866e-15, -2.1466805792317574e-14, 6.86143299493827e-15},
};

static inline float fdb_erf_generic(float x)
{
    float fa = fabsf(x);
    fa = fa < 4.0f ? fa : 4.0f;                        /* NaN -> 4, as _mm512_min_ps(|x|, 4) */
    int i = (int)(fa * 4.0f);
    i = i < 15 ? i : 15;
    const double a = (double)fa;
    const double z = i == 0 ? a * a : (a - (0.125 + 0.25 * i)) * 8.0;
    double p = FDB_ERF_T[FDB_ERF_DEG][i];
    for (int j = FDB_ERF_DEG - 1; j >= 0; j--) p = fma(p, z, FDB_ERF_T[j][i]);
    const float r = (float)(i == 0 ? a * p : p);
    return copysignf(r, x);
}

__attribute__((target("avx512f")))
static inline __m512d fdb_erf_abs8_avx512(__m512d a, __m512i idx, __m512d center)
{   /* the same on 8 doubles: a = |x| in [0, 4], idx its interval, center = 0.125 + 0.25 idx */
    const __mmask8 first = _mm512_cmpeq_epi64_mask(idx, _mm512_setzero_si512());
    __m512d z = _mm512_mul_pd(_mm512_sub_pd(a, center), _mm512_set1_pd(8.0));
    z = _mm512_mask_mul_pd(z, first, a, a);
    __m512d p = _mm512_permutex2var_pd(_mm512_loadu_pd(FDB_ERF_T[FDB_ERF_DEG]), idx,
                                       _mm512_loadu_pd(FDB_ERF_T[FDB_ERF_DEG] + 8));
    for (int j = FDB_ERF_DEG - 1; j >= 0; j--)
        p = _mm512_fmadd_pd(p, z, _mm512_permutex2var_pd(_mm512_loadu_pd(FDB_ERF_T[j]), idx,
                                                         _mm512_loadu_pd(FDB_ERF_T[j] + 8)));
    return _mm512_mask_mul_pd(p, first, a, p);
}

__attribute__((target("avx512f")))
static inline __m512 fdb_erf_avx512(__m512 x)
{
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
    const __m512 fa = _mm512_min_ps(_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), absmask)),
                                    _mm512_set1_ps(4.0f));
    const __m512i i32 = _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_mul_ps(fa, _mm512_set1_ps(4.0f))),
                                         _mm512_set1_epi32(15));
    const __m256 alo = _mm512_castps512_ps256(fa);
    const __m256 ahi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(fa), 1));
    const __m512i ilo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(i32));
    const __m512i ihi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(i32, 1));
    const __m512 cf = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(i32), _mm512_set1_ps(0.25f)),
                                    _mm512_set1_ps(0.125f));          /* exact */
    const __m256 clo = _mm512_castps512_ps256(cf);
    const __m256 chi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(cf), 1));
    const __m256 rlo = _mm512_cvtpd_ps(fdb_erf_abs8_avx512(_mm512_cvtps_pd(alo), ilo, _mm512_cvtps_pd(clo)));
    const __m256 rhi = _mm512_cvtpd_ps(fdb_erf_abs8_avx512(_mm512_cvtps_pd(ahi), ihi, _mm512_cvtps_pd(chi)));
    const __m512 r = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(rlo)),
                                                         _mm256_castps_pd(rhi), 1));
    /* copysign(r, x): r >= 0 */
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r),
                               _mm512_andnot_si512(absmask, _mm512_castps_si512(x))));
}

/* fdb_erf_avx512 in 8 lanes for AVX2 + FMA, the same operations in the same order (the coefficients
 * gathered by interval, 4 doubles at a time): the same bits. */
FDB_TARGET_AVX2 static inline __m256d fdb_erf_abs4_avx2(__m256d a, __m128i idx, __m256d center)
{   /* a = |x| in [0, 4], idx its interval, center = 0.125 + 0.25 idx */
    const __m256d first = _mm256_castsi256_pd(_mm256_cmpeq_epi64(_mm256_cvtepi32_epi64(idx),
                                                                 _mm256_setzero_si256()));
    __m256d z = _mm256_mul_pd(_mm256_sub_pd(a, center), _mm256_set1_pd(8.0));
    z = _mm256_blendv_pd(z, _mm256_mul_pd(a, a), first);
    __m256d p = _mm256_i32gather_pd(FDB_ERF_T[FDB_ERF_DEG], idx, 8);
    for (int j = FDB_ERF_DEG - 1; j >= 0; j--)
        p = _mm256_fmadd_pd(p, z, _mm256_i32gather_pd(FDB_ERF_T[j], idx, 8));
    return _mm256_blendv_pd(p, _mm256_mul_pd(a, p), first);
}

FDB_TARGET_AVX2 static inline __m256 fdb_erf_avx2(__m256 x)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 fa = _mm256_min_ps(_mm256_and_ps(x, absmask), _mm256_set1_ps(4.0f));   /* NaN -> 4 */
    const __m256i i32 = _mm256_min_epi32(_mm256_cvttps_epi32(_mm256_mul_ps(fa, _mm256_set1_ps(4.0f))),
                                         _mm256_set1_epi32(15));
    const __m256 cf = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(i32), _mm256_set1_ps(0.25f)),
                                    _mm256_set1_ps(0.125f));          /* exact */
    const __m128 rlo = _mm256_cvtpd_ps(fdb_erf_abs4_avx2(_mm256_cvtps_pd(_mm256_castps256_ps128(fa)),
                                                         _mm256_castsi256_si128(i32),
                                                         _mm256_cvtps_pd(_mm256_castps256_ps128(cf))));
    const __m128 rhi = _mm256_cvtpd_ps(fdb_erf_abs4_avx2(_mm256_cvtps_pd(_mm256_extractf128_ps(fa, 1)),
                                                         _mm256_extracti128_si256(i32, 1),
                                                         _mm256_cvtps_pd(_mm256_extractf128_ps(cf, 1))));
    const __m256 r = _mm256_insertf128_ps(_mm256_castps128_ps256(rlo), rhi, 1);
    return _mm256_or_ps(r, _mm256_andnot_ps(absmask, x));   /* copysign(r, x): r >= 0 */
}

/* fdb_exp_avx512 / fdb_exp_avx2's constants: log2(e), ln2 = C1 - C2 (C1 has 9 significant bits), the clamp
 * (exp(-104) < 2^-150 rounds to 0; exp(89) > FLT_MAX gives inf), Cephes' P5 .. P0. */
#define FDB_EXP_LOG2E 1.44269504088896341f
#define FDB_EXP_C1 0.693359375f
#define FDB_EXP_C2 (-2.12194440e-4f)
#define FDB_EXP_LO (-104.0f)
#define FDB_EXP_HI 89.0f
#define FDB_EXP_P5 1.9875691500e-4f
#define FDB_EXP_P4 1.3981999507e-3f
#define FDB_EXP_P3 8.3334519073e-3f
#define FDB_EXP_P2 4.1665795894e-2f
#define FDB_EXP_P1 1.6666665459e-1f
#define FDB_EXP_P0 5.0000001201e-1f

FDB_TARGET_AVX512 static inline __m512 fdb_exp_avx512(__m512 x)
{
    const __m512 log2e = _mm512_set1_ps(FDB_EXP_LOG2E);
    const __m512 c1 = _mm512_set1_ps(FDB_EXP_C1);
    const __m512 c2 = _mm512_set1_ps(FDB_EXP_C2);
    x = _mm512_max_ps(x, _mm512_set1_ps(FDB_EXP_LO));
    x = _mm512_min_ps(x, _mm512_set1_ps(FDB_EXP_HI));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, c1, x);
    r = _mm512_fnmadd_ps(n, c2, r);
    __m512 p = _mm512_set1_ps(FDB_EXP_P5);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FDB_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FDB_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FDB_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FDB_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(FDB_EXP_P0));
    __m512 r2 = _mm512_mul_ps(r, r);
    p = _mm512_fmadd_ps(p, r2, r);                        /* r + r^2 P(r) */
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

FDB_TARGET_AVX512 static inline __m512i fdb_quantize_avx512(__m512 x, __m512 scale, __m512 zp)
{
    __m512 r = _mm512_roundscale_ps(_mm512_div_ps(x, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, zp), _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
    return _mm512_cvtps_epi32(r);   /* exact: r is integral */
}

/* fdb_exp_avx512 in 8 lanes for AVX2 + FMA, the same operations in the same order. AVX2 has no
 * vscalefps: p * 2^n is p * 2^(n/2) * 2^(n - n/2), the first product exact (no underflow or
 * overflow for n in [-150, 129]) and the second rounded once, as vscalefps rounds it: so the
 * result is fdb_exp_avx512's, bit for bit (gradual underflow, inf on overflow, 0 for -inf included). */
FDB_TARGET_AVX2 static inline __m256 fdb_pow2i8(__m256i k)   /* 2^k for k in [-126, 127] */
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

FDB_TARGET_AVX2 static inline __m256 fdb_exp_avx2(__m256 x)
{
    const __m256 log2e = _mm256_set1_ps(FDB_EXP_LOG2E);
    const __m256 c1 = _mm256_set1_ps(FDB_EXP_C1);
    const __m256 c2 = _mm256_set1_ps(FDB_EXP_C2);
    x = _mm256_max_ps(x, _mm256_set1_ps(FDB_EXP_LO));
    x = _mm256_min_ps(x, _mm256_set1_ps(FDB_EXP_HI));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, c1, x);
    r = _mm256_fnmadd_ps(n, c2, r);
    __m256 p = _mm256_set1_ps(FDB_EXP_P5);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FDB_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FDB_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FDB_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FDB_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(FDB_EXP_P0));
    const __m256 r2 = _mm256_mul_ps(r, r);
    p = _mm256_fmadd_ps(p, r2, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    const __m256i ni = _mm256_cvtps_epi32(n);                    /* integral already: exact */
    const __m256i n1 = _mm256_srai_epi32(ni, 1);
    return _mm256_mul_ps(_mm256_mul_ps(p, fdb_pow2i8(n1)), fdb_pow2i8(_mm256_sub_epi32(ni, n1)));
}

/* table16[idx] for 8 lanes, idx in 0..15, upper = the lanes with idx >= 8 (all ones): two vpermps
 * and a blend (AVX2 has no 2-table permute). AVX2 alone (no FMA): qgemm.c's AVX2 epilogue uses it. */
__attribute__((target("avx2"))) static inline __m256 fdb_lut16x8(const float *table16, __m256i idx,
                                                                 __m256 upper)
{
    const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table16), idx);
    const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table16 + 8), idx);
    return _mm256_blendv_ps(lo, hi, upper);
}

/* The second half of the INT8 contract's quantize in 8 lanes: r = rint(x / scale) already, then
 * + zp, the clip to 0..255 in float, the 8 codes stored as bytes at dst. AVX2 alone (no FMA):
 * qgemm.c's AVX2 epilogue uses it too. */
__attribute__((target("avx2"))) static inline void fdb_store_codes8(uint8_t *dst, __m256 r, __m256 zp)
{
    r = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, zp), _mm256_setzero_ps()), _mm256_set1_ps(255.0f));
    const __m256i q = _mm256_cvtps_epi32(r);   /* exact: r is integral */
    const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)dst, _mm_packus_epi16(w16, w16));
}

/* fdb_quantize_avx512 in 8 lanes, the codes stored as 8 bytes at dst. Exact (the INT8 contract). */
FDB_TARGET_AVX2 static inline void fdb_quantize_store_avx2(uint8_t *dst, __m256 x, float scale, float zp)
{
    const __m256 r = _mm256_round_ps(_mm256_div_ps(x, _mm256_set1_ps(scale)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    fdb_store_codes8(dst, r, _mm256_set1_ps(zp));
}

/* Horizontal max and sum of 8 lanes: (0..3 with 4..7), then (0,1 with 2,3), then (0 with 1). The
 * sum is the last three steps of the 16-lane fold (fp32_ops.c). */
__attribute__((target("avx2"))) static inline float fdb_hmax8(__m256 x)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

__attribute__((target("avx2"))) static inline float fdb_hsum8(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* r[e] <- (r[0][e], ..., r[15][e]): a 16x16 transpose of 32-bit words in registers (floats, or
 * integers through the free _mm512_castsi512_ps casts; attention.c, attention_int8.c, qspmm.c). Interleave pairs of rows, then
 * quads within each 128-bit lane (u[4i + k] lane l = element 4l + k of rows 4i..4i+3), then gather
 * the four lanes l of u[k], u[4 + k], u[8 + k], u[12 + k] in two rounds of 128-bit lane shuffles. */
__attribute__((target("avx512f"), always_inline)) static inline void fdb_transpose16(__m512 r[16])
{
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        t[k] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);        /* lanes 0, 2 of each */
        t[k + 4] = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);    /* lanes 1, 3 */
        t[k + 8] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
        t[k + 12] = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        r[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
        r[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xDD);
        r[k + 4] = _mm512_shuffle_f32x4(t[k + 4], t[k + 12], 0x88);
        r[k + 12] = _mm512_shuffle_f32x4(t[k + 4], t[k + 12], 0xDD);
    }
}


/* The first clamp(remaining, 0, 16) lanes: masked loads and stores of a row's tail. */
__attribute__((target("avx512f"), always_inline)) static inline __mmask16 fdb_lanes16(int64_t remaining)
{
    int n = remaining < 0 ? 0 : remaining > 16 ? 16 : (int)remaining;
    return (__mmask16)((1u << n) - 1u);
}

/* The first clamp(remaining, 0, 8) lanes as an all-ones int32 mask vector (AVX2 maskstore, blendv). */
FDB_TARGET_AVX2 static inline __m256i fdb_lanes8(int64_t remaining)
{
    const int n = remaining < 0 ? 0 : remaining > 8 ? 8 : (int)remaining;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ---- the outlier share (header comment): x a row of the float input, o [ko] its outlier channels,
 * w [ko, N] the outlier weight transposed; column n (generic), n..n+7 (avx2), the lanes k of
 * n..n+15 (avx512, masked loads: the lanes outside k are 0). */
static inline float fdb_outlier_generic(const float *x, const int32_t *o, int64_t ko, const float *w,
                                        int64_t N, int64_t n)
{
    float p = x[o[0]] * w[n];
    for (int64_t j = 1; j < ko; j++) p = p + x[o[j]] * w[j * N + n];
    return p;
}

FDB_TARGET_AVX2 static inline __m256 fdb_outlier_avx2(const float *x, const int32_t *o, int64_t ko,
                                                      const float *w, int64_t N, int64_t n)
{
    __m256 p = _mm256_mul_ps(_mm256_set1_ps(x[o[0]]), _mm256_loadu_ps(w + n));
    for (int64_t j = 1; j < ko; j++)
        p = _mm256_add_ps(p, _mm256_mul_ps(_mm256_set1_ps(x[o[j]]), _mm256_loadu_ps(w + j * N + n)));
    return p;
}

FDB_TARGET_AVX512 static inline __m512 fdb_outlier_avx512(const float *x, const int32_t *o, int64_t ko,
                                                          const float *w, int64_t N, int64_t n,
                                                          __mmask16 k)
{
    __m512 p = _mm512_mul_ps(_mm512_set1_ps(x[o[0]]), _mm512_maskz_loadu_ps(k, w + n));
    for (int64_t j = 1; j < ko; j++)
        p = _mm512_add_ps(p, _mm512_mul_ps(_mm512_set1_ps(x[o[j]]), _mm512_maskz_loadu_ps(k, w + j * N + n)));
    return p;
}

#endif /* FDBERT_FP32_VECMATH_H */
