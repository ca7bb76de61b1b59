/* fp32_vecmath.h -- 16-lane float32 exp and erf for the AVX-512 kernels of fp32_ops.c and attention.c
 * (and their 8-lane AVX2 twins).
 *
 * Internal header (static inline, no state). The generic twins are libm's expf and erff.
 *
 *   fdb_exp16(x)  exp(x): Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, then Cephes' degree-6
 *                 polynomial (Moshier's expf, the one numpy's SIMD exp also descends from), and
 *                 vscalefps to multiply by 2^n: it handles overflow (inf) and gradual underflow
 *                 (subnormals, then 0) without branches. x = -inf gives +0. Measured over every
 *                 float32 in [-104, 88.7]: <= 1 ulp from the correctly rounded exp.
 *   fdb_erf16(x)  erf(x): piecewise polynomial, 16 pieces of width 1/4 on [0, 4), degree 7 in
 *                 u = |x| - c_i (c_0 = 0 and the piece's constant term is exactly 0 there, so
 *                 erf keeps full relative accuracy near 0), odd symmetry, and erf = +-1 beyond 4
 *                 (float32 erf(x) rounds to 1 from x = 3.92 on). The piece index selects each
 *                 coefficient with one vpermps from a 16-entry table: no gathers, no branches.
 *                 Coefficients: least squares in float64 on 4000 Chebyshev nodes per piece,
 *                 weighted by 1/erf (relative error <= 4e-11 before rounding to float32);
 *                 regenerate with the script in docs/kernels.md ("float32 ops"). Measured over
 *                 every float32 in [0, 4.5]: <= 1 ulp from the correctly rounded erf.
 * Both use FMA: these results are within a tolerance of libm's, never bit-matched to it.
 *   fdb_transpose16(r)  a 16x16 transpose of 32-bit words in registers (64 shuffles).
 *   fdb_lanes16(n)  the mask of the first clamp(n, 0, 16) lanes: the tail of a row of n elements.
 *   fdb_quantize16(x, scale, zp)  the INT8 contract's u8(clip(rint(x / scale) + zp, 0, 255)) as
 *                 int32 lanes: a true division, round half to even, the clip in float. Exact:
 *                 bit-identical to the reference (fp32_ops.c's quantize and attention.c use it).
 * 8-lane AVX2 + FMA twins (fp32_ops.c's and attention.c's AVX2 paths), bit-identical to the
 * 16-lane ones: fdb_exp8, fdb_erf8, fdb_quantize8_store; and fdb_lanes8 (a tail mask vector),
 * fdb_hmax8 / fdb_hsum8, fdb_lut16x8 and fdb_store_codes8.
 */
#ifndef FDBERT_FP32_VECMATH_H
#define FDBERT_FP32_VECMATH_H

#include <immintrin.h>
#include <stdint.h>

#define FDB_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define FDB_AVX2_TARGET __attribute__((target("avx2,fma")))

/* ERF_C[p][i] = coefficient of u^p on piece i = floor(4 |x|), u = |x| - ERF_CENTER(i). */
static const float FDB_ERF_C[8][16] __attribute__((aligned(64))) = {
    {0.0f, 0.4041168987751007f, 0.6232408881187439f, 0.7840750813484192f, 0.8883882164955139f, 0.9481700658798218f, 0.9784437417984009f, 0.9919900298118591f, 0.9973459839820862f, 0.9992170333862305f, 0.999794602394104f, 0.9999521374702454f, 0.9999901056289673f, 0.9999982118606567f, 0.9999997019767761f, 0.9999999403953552f},
    {0.12837916612625122f, 0.9803528189659119f, 0.7634995579719543f, 0.5247450470924377f, 0.31827396154403687f, 0.1703597754240036f, 0.08047226071357727f, 0.033545829355716705f, 0.012340820394456387f, 0.004006478004157543f, 0.0011478750966489315f, 0.0002902282867580652f, 6.475868576671928e-05f, 1.2751740541716572e-05f, 2.2159201762406155e-06f, 3.398223782369314e-07f},
    {-1.3553235866936575e-08f, -0.36763229966163635f, -0.47718721628189087f, -0.4591519236564636f, -0.35805821418762207f, -0.2342446893453598f, -0.13076741993427277f, -0.0628984272480011f, -0.02622424252331257f, -0.009515384212136269f, -0.003013172186911106f, -0.0008344064699485898f, -0.00020237099670339376f, -4.3037176510551944e-05f, -8.032729965634644e-06f, -1.3168173609301448e-06f},
    {-0.3761255443096161f, -0.23487624526023865f, -0.05567186325788498f, 0.0929235965013504f, 0.1624523401260376f, 0.15793770551681519f, 0.11484061926603317f, 0.06744109094142914f, 0.03303740546107292f, 0.013730532489717007f, 0.0048904260620474815f, 0.001502536004409194f, 0.00040001983870752156f, 9.258298814529553e-05f, 1.8673763406695798e-05f, 3.2884954634937458e-06f},
    {-1.9442564735072665e-05f, 0.1665799915790558f, 0.17645782232284546f, 0.11239711940288544f, 0.02797512896358967f, -0.03049931302666664f, -0.04971868544816971f, -0.042260315269231796f, -0.02636124938726425f, -0.013133395463228226f, -0.005414305254817009f, -0.0018817189848050475f, -0.0005575400427915156f, -0.00014187124907039106f, -3.116242805845104e-05f, -5.930709448875859e-06f},
    {0.11304651945829391f, 0.045481279492378235f, -0.027410145848989487f, -0.06721480190753937f, -0.061323996633291245f, -0.030606787651777267f, -0.0021355149801820517f, 0.011462443508207798f, 0.01249560434371233f, 0.008357532322406769f, 0.004217943642288446f, 0.0017132700886577368f, 0.0005769510753452778f, 0.00016376514395233244f, 3.95881688746158e-05f, 8.20744753582403e-06f},
    {-0.0010905497474595904f, -0.04975725710391998f, -0.04113639518618584f, -0.010424883104860783f, 0.015349086374044418f, 0.022028271108865738f, 0.014396519400179386f, 0.004149625543504953f, -0.0017782666254788637f, -0.003095475723966956f, -0.00224570045247674f, -0.001144289504736662f, -0.00045578941353596747f, -0.00014812588051427156f, -4.015940066892654e-05f, -9.205094102071598e-06f},
    {-0.024476397782564163f, -0.005673014093190432f, 0.013717876747250557f, 0.018490999937057495f, 0.009611019864678383f, -0.001357811619527638f, -0.006134382449090481f, -0.004915981087833643f, -0.0018795065116137266f, 0.00011140992137370631f, 0.0006754937930963933f, 0.0005279898177832365f, 0.00026737121515907347f, 0.00010293493687640876f, 3.1868821679381654e-05f, 8.154071110766381e-06f},
};

/* fdb_exp16 / fdb_exp8's constants: log2(e), ln2 = C1 - C2 (C1 has 9 significant bits), the clamp
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

FDB_AVX512_TARGET static inline __m512 fdb_exp16(__m512 x)
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

FDB_AVX512_TARGET static inline __m512 fdb_erf16(__m512 x)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    __m512 a = _mm512_andnot_ps(sign, x);                               /* |x| */
    __m512 a4 = _mm512_min_ps(_mm512_mul_ps(a, _mm512_set1_ps(4.0f)), _mm512_set1_ps(15.0f));
    __m512i idx = _mm512_cvttps_epi32(a4);                              /* piece 0..15 */
    /* centre of piece i: 0 for i = 0, else (i + 1/2) / 4 */
    __m512 centre = _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(idx), _mm512_set1_ps(0.5f)),
                                  _mm512_set1_ps(0.25f));
    centre = _mm512_maskz_mov_ps(_mm512_cmpneq_epi32_mask(idx, _mm512_setzero_si512()), centre);
    __m512 u = _mm512_sub_ps(a, centre);
    __m512 y = _mm512_permutexvar_ps(idx, _mm512_load_ps(FDB_ERF_C[7]));
    for (int p = 6; p >= 1; p--)
        y = _mm512_fmadd_ps(y, u, _mm512_permutexvar_ps(idx, _mm512_load_ps(FDB_ERF_C[p])));
    /* piece 0 stores c_1 - 1 and adds u itself: erf(x) = x + x (c_1 - 1 + ...) keeps the last bits
     * of x that a rounded c_1 * x would lose (the erx trick of fdlibm's erff). */
    __m512 base = _mm512_permutexvar_ps(idx, _mm512_load_ps(FDB_ERF_C[0]));
    base = _mm512_mask_mov_ps(base, _mm512_cmpeq_epi32_mask(idx, _mm512_setzero_si512()), u);
    y = _mm512_fmadd_ps(y, u, base);
    __mmask16 big = _mm512_cmp_ps_mask(a, _mm512_set1_ps(4.0f), _CMP_GE_OQ);  /* also |x| = inf */
    y = _mm512_mask_mov_ps(y, big, _mm512_set1_ps(1.0f));
    y = _mm512_min_ps(y, _mm512_set1_ps(1.0f));
    return _mm512_or_ps(y, _mm512_and_ps(x, sign));                   /* erf(-x) = -erf(x) */
}

FDB_AVX512_TARGET static inline __m512i fdb_quantize16(__m512 x, __m512 scale, __m512 zp)
{
    __m512 r = _mm512_roundscale_ps(_mm512_div_ps(x, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, zp), _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
    return _mm512_cvtps_epi32(r);   /* exact: r is integral */
}

/* fdb_exp16 in 8 lanes for AVX2 + FMA, the same operations in the same order. AVX2 has no
 * vscalefps: p * 2^n is p * 2^(n/2) * 2^(n - n/2), the first product exact (no underflow or
 * overflow for n in [-150, 129]) and the second rounded once, as vscalefps rounds it: so the
 * result is fdb_exp16's, bit for bit (gradual underflow, inf on overflow, 0 for -inf included). */
FDB_AVX2_TARGET static inline __m256 fdb_pow2i8(__m256i k)   /* 2^k for k in [-126, 127] */
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

FDB_AVX2_TARGET static inline __m256 fdb_exp8(__m256 x)
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

/* fdb_erf16 in 8 lanes, the same operations in the same order: the same bits. */
FDB_AVX2_TARGET static inline __m256 fdb_erf8(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 a = _mm256_andnot_ps(sign, x);
    const __m256 a4 = _mm256_min_ps(_mm256_mul_ps(a, _mm256_set1_ps(4.0f)), _mm256_set1_ps(15.0f));
    const __m256i idx = _mm256_cvttps_epi32(a4);
    const __m256 first = _mm256_castsi256_ps(_mm256_cmpeq_epi32(idx, _mm256_setzero_si256()));
    __m256 centre = _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(idx), _mm256_set1_ps(0.5f)),
                                  _mm256_set1_ps(0.25f));
    centre = _mm256_andnot_ps(first, centre);
    const __m256 u = _mm256_sub_ps(a, centre);
    const __m256 upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7)));
    __m256 y = fdb_lut16x8(FDB_ERF_C[7], idx, upper);
    for (int p = 6; p >= 1; p--) y = _mm256_fmadd_ps(y, u, fdb_lut16x8(FDB_ERF_C[p], idx, upper));
    const __m256 base = _mm256_blendv_ps(fdb_lut16x8(FDB_ERF_C[0], idx, upper), u, first);
    y = _mm256_fmadd_ps(y, u, base);
    const __m256 big = _mm256_cmp_ps(a, _mm256_set1_ps(4.0f), _CMP_GE_OQ);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(1.0f), big);
    y = _mm256_min_ps(y, _mm256_set1_ps(1.0f));
    return _mm256_or_ps(y, _mm256_and_ps(x, sign));
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

/* fdb_quantize16 in 8 lanes, the codes stored as 8 bytes at dst. Exact (the INT8 contract). */
FDB_AVX2_TARGET static inline void fdb_quantize8_store(uint8_t *dst, __m256 x, float scale, float zp)
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
FDB_AVX2_TARGET static inline __m256i fdb_lanes8(int64_t remaining)
{
    const int n = remaining < 0 ? 0 : remaining > 8 ? 8 : (int)remaining;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#endif /* FDBERT_FP32_VECMATH_H */
