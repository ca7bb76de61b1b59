/* qgemm.c -- INT8 dense GEMM: weight packing, per-ISA register tiles, the fused epilogue.
 *
 *   out[m, n] = epilogue( sum_k x[m, k] * W[n, k] )      x u8 [M, K], W s8 [N, K] (see qgemm.h)
 *
 * Kernel versions (one tile body, qgemm_dense.inc, compiled per ISA; selected by `isa`):
 *   generic     plain C int32 loops over the packed layout (the oracle for the SIMD paths)
 *   avx2        256-bit, int16 operands + vpmaddwd                 2 x 16 tile  (8 accumulators)
 *   avx2_vnni   256-bit VEX vpdpbusd                              4 x 16 tile  (8 accumulators)
 *   avx512bw    512-bit, int16 operands + vpmaddwd                 4 x 32 tile  (16 accumulators)
 *   avx512vnni  512-bit EVEX vpdpbusd                             6 x 64 tile  (24 accumulators)
 *
 * Without VNNI, why int16 and vpmaddwd: vpmaddubsw, the u8 x s8 instruction of AVX2 / AVX-512BW,
 * adds two products into a *saturating* int16, and 255*127 + 255*127 = 64770 > 32767 (ONNX Runtime
 * issues 5849, 6004). So each s8 weight vector is sign-extended to two int16 vectors as it is
 * loaded (its channel halves; the weight bytes streamed stay s8) and each row's 4 activation bytes
 * zero-extended into one int16 broadcast: vpmaddwd's int32 pair sums are exact, and the pairs are
 * added per channel once per tile (qgemm_dense.inc). Until 2026-12-06 these paths split x into
 * 7-bit halves for two exact vpmaddubsw (and two vpmaddwd to recombine): twice the multiplies.
 *
 * Blocking (driver below): threads take (N-chunk of ~1 MB of weights, M-chunk of ~256 KB of x)
 * tiles in N-major static order, so a thread keeps its weight chunk in L2 while it walks the
 * M chunks; inside a tile, one 64-channel weight panel (64*K bytes) is reused across the MR-row
 * steps of the M chunk. (The first version, M-major with 64-channel N chunks, re-streamed all
 * weights from L3 for every M chunk: 2x slower at M >= 1024.) K is never split, so every
 * thread count gives the same bits.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "fp32_ops.h"   /* fp_quantize1: the INT8 contract's scalar quantize */
#include "fp32_vecmath.h"   /* fdb_lut16x8, fdb_store_codes8 */
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

/* ---------------------------------------------------------------- epilogue (qgemm.h contract) */

/* erf for float32, computed in double from a piecewise polynomial: |x| is clamped to 4 (where erf
 * rounds to 1.0f) and [0, 4] cut into 16 intervals of width 1/4. Interval 0 uses the Maclaurin
 * series, erf(a) = a * sum_{n<=10} c_n (a^2)^n, c_n = 2/sqrt(pi) (-1)^n / (n! (2n+1)); interval i >= 1
 * a degree-10 polynomial in u = 8 (a - center_i) in [-1, 1] (a Chebyshev fit of scipy.special.erf
 * converted to powers of u, generated offline). The relative error in double is ~1.5e-15, so the
 * float32 result is the correctly rounded erf except within ~1e-15 of a rounding tie. Evaluated as 11
 * Horner FMAs in double with the coefficients picked per lane by a table lookup (vpermt2pd): ~4x
 * fewer operations than the 60-term series this replaced, same results on every tested input. The
 * scalar and AVX-512 versions run the same operations, so every ISA path returns the same bits. */
#define QG_ERF_DEG 10
static const double QG_ERF_T[QG_ERF_DEG + 1][16] = {   /* [power][interval] */
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

static float qg_erf_f32(float x)
{
    float fa = fabsf(x);
    fa = fa < 4.0f ? fa : 4.0f;                        /* NaN -> 4, as _mm512_min_ps(|x|, 4) */
    int i = (int)(fa * 4.0f);
    i = i < 15 ? i : 15;
    const double a = (double)fa;
    const double z = i == 0 ? a * a : (a - (0.125 + 0.25 * i)) * 8.0;
    double p = QG_ERF_T[QG_ERF_DEG][i];
    for (int j = QG_ERF_DEG - 1; j >= 0; j--) p = fma(p, z, QG_ERF_T[j][i]);
    const float r = (float)(i == 0 ? a * p : p);
    return copysignf(r, x);
}

__attribute__((target("avx512f")))
static __m512d erf8_abs_avx512(__m512d a, __m512i idx, __m512d center)
{   /* the same on 8 doubles: a = |x| in [0, 4], idx its interval, center = 0.125 + 0.25 idx */
    const __mmask8 first = _mm512_cmpeq_epi64_mask(idx, _mm512_setzero_si512());
    __m512d z = _mm512_mul_pd(_mm512_sub_pd(a, center), _mm512_set1_pd(8.0));
    z = _mm512_mask_mul_pd(z, first, a, a);
    __m512d p = _mm512_permutex2var_pd(_mm512_loadu_pd(QG_ERF_T[QG_ERF_DEG]), idx,
                                       _mm512_loadu_pd(QG_ERF_T[QG_ERF_DEG] + 8));
    for (int j = QG_ERF_DEG - 1; j >= 0; j--)
        p = _mm512_fmadd_pd(p, z, _mm512_permutex2var_pd(_mm512_loadu_pd(QG_ERF_T[j]), idx,
                                                         _mm512_loadu_pd(QG_ERF_T[j] + 8)));
    return _mm512_mask_mul_pd(p, first, a, p);
}

__attribute__((target("avx512f")))
static __m512 erf16_avx512(__m512 x)
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
    const __m256 rlo = _mm512_cvtpd_ps(erf8_abs_avx512(_mm512_cvtps_pd(alo), ilo, _mm512_cvtps_pd(clo)));
    const __m256 rhi = _mm512_cvtpd_ps(erf8_abs_avx512(_mm512_cvtps_pd(ahi), ihi, _mm512_cvtps_pd(chi)));
    const __m512 r = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(rlo)),
                                                         _mm256_castps_pd(rhi), 1));
    /* copysign(r, x): r >= 0 */
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r),
                               _mm512_andnot_si512(absmask, _mm512_castps_si512(x))));
}

/* GELU as fdbert.reference.activations.gelu in float32: (0.5 * y) * (1 + erf(y * f32(1/sqrt 2))). */
#define QG_INV_SQRT2F 0.70710678118654752f

static inline float qg_gelu(float y)
{
    return (0.5f * y) * (1.0f + qg_erf_f32(y * QG_INV_SQRT2F));
}

__attribute__((target("avx512f")))
static inline __m512 gelu16_avx512(__m512 y)
{
    const __m512 e = erf16_avx512(_mm512_mul_ps(y, _mm512_set1_ps(QG_INV_SQRT2F)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), y),
                         _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* GELU feeding a u8 requantization needs only rint(gelu(y) / scale) to be right, not every bit of
 * gelu(y). gelu16_rint_for_u8_avx512 first evaluates a cheaper erf in float32: on the same 16 pieces,
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
 * gelu16_avx512 and a true division. So the u8 codes are those of the exact path, on every ISA,
 * bit for bit. */
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
static inline __m512 erf16_cheap_avx512(__m512 x)
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
static inline __m512 gelu16_rint_for_u8_avx512(__m512 y, __m512 scale, __m512 inv_scale,
                                               __m512 margin_per_y)
{
    const __m512 h = _mm512_mul_ps(_mm512_set1_ps(0.5f), y);
    const __m512 e = erf16_cheap_avx512(_mm512_mul_ps(y, _mm512_set1_ps(QG_INV_SQRT2F)));
    const __m512 t = _mm512_mul_ps(_mm512_mul_ps(h, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), inv_scale);
    const __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 limit = _mm512_fnmadd_ps(_mm512_abs_ps(y), margin_per_y, _mm512_set1_ps(0.5f));
    if (_mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(t, r)), limit, _CMP_LT_OQ) == 0xFFFF)
        return r;   /* every lane decided */
    return _mm512_roundscale_ps(_mm512_div_ps(gelu16_avx512(y), scale),
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
        if (ep->gelu) y = qg_gelu(y);
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
    k.margin_per_y = _mm512_set1_ps(2e-6f / ep->out_scale);
    k.u8 = ep->out_kind == QG_OUT_U8;
    k.bias = ep->bias != NULL;
    /* GELU then u8 without residual (FFN1 of the INT8 block): the cheap-first path above */
    k.gelu_u8 = ep->gelu && !ep->residual && k.u8;
    return k;
}

/* y before any residual, or for gelu_u8 already rint(gelu(y) / scale). */
__attribute__((target("avx512f"), always_inline))
static inline __m512 ep16_avx512(__m512i a, __m512i comp, __m512 mult, __m512 bias, int gelu,
                                 const ep16_consts *k)
{
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a, comp)), mult);
    if (k->bias) y = _mm512_add_ps(y, bias);
    if (k->gelu_u8) return gelu16_rint_for_u8_avx512(y, k->scale, k->inv_scale, k->margin_per_y);
    return gelu ? gelu16_avx512(y) : y;
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
            __m512 y = ep16_avx512(_mm512_loadu_si512(acc + i),
                                   ep->comp ? _mm512_loadu_si512(ep->comp + n) : _mm512_setzero_si512(),
                                   _mm512_loadu_ps(ep->mult + n),
                                   ep->bias ? _mm512_loadu_ps(ep->bias + n) : _mm512_setzero_ps(),
                                   ep->gelu, &k);
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
 * the scalar exact qg_gelu: the same bits as the AVX-512 exact path. */

/* erf16_cheap_avx512 on 8 lanes (the same pieces, coefficients and NaN behaviour) */
__attribute__((target("avx2"), always_inline))
static inline __m256 erf8_cheap_avx2(__m256 x)
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
 * scalar exact path (see gelu16_rint_for_u8_avx512) */
__attribute__((target("avx2"), always_inline))
static inline __m256 gelu8_rint_for_u8_avx2(__m256 y, float scale, __m256 inv_scale, __m256 margin_per_y)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 h = _mm256_mul_ps(_mm256_set1_ps(0.5f), y);
    const __m256 e = erf8_cheap_avx2(_mm256_mul_ps(y, _mm256_set1_ps(QG_INV_SQRT2F)));
    const __m256 t = _mm256_mul_ps(_mm256_mul_ps(h, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), inv_scale);
    const __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 limit = _mm256_sub_ps(_mm256_set1_ps(0.5f),
                                       _mm256_mul_ps(_mm256_and_ps(y, absmask), margin_per_y));
    const __m256 dist = _mm256_and_ps(_mm256_sub_ps(t, r), absmask);
    if (_mm256_movemask_ps(_mm256_cmp_ps(dist, limit, _CMP_LT_OQ)) == 0xFF) return r;
    float v[8];
    _mm256_storeu_ps(v, y);
    for (int l = 0; l < 8; l++) v[l] = nearbyintf(qg_gelu(v[l]) / scale);
    return _mm256_loadu_ps(v);
}

__attribute__((target("avx2")))
static void epilogue_rows_avx2(const int32_t *acc0, int64_t lda, int64_t m0, int64_t rows, int64_t n0,
                               int64_t len, int64_t N, const qg_epilogue *ep)
{
    const int u8 = ep->out_kind == QG_OUT_U8, gelu_u8 = ep->gelu && !ep->residual && u8;
    const __m256 scale = _mm256_set1_ps(ep->out_scale), zp = _mm256_set1_ps(ep->out_zp);
    const __m256 inv_scale = _mm256_set1_ps(1.0f / ep->out_scale);
    const __m256 margin_per_y = _mm256_set1_ps(2e-6f / ep->out_scale);
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
            if (gelu_u8) {
                y = gelu8_rint_for_u8_avx2(y, ep->out_scale, inv_scale, margin_per_y);
            } else if (ep->gelu) {
                float v[8];
                _mm256_storeu_ps(v, y);
                for (int l = 0; l < 8; l++) v[l] = qg_gelu(v[l]);
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
            const __m512 y = ep16_avx512(_mm512_loadu_si512(t + i), comp, mult, bias, ep->gelu, &k);
            _mm512_storeu_si512(t + i, k.u8 ? ep16_code(y, k.gelu_u8, &k) : _mm512_castps_si512(y));
        }
    }
}

int qg_epilogue_channels(int32_t *T, int64_t ldt, int64_t n0, int64_t nch, int64_t ntok,
                         const qg_epilogue *ep, int isa)
{
    if (isa < QG_ISA_AVX512BW || ep->out_kind == QG_OUT_S32 || (ep->residual && ep->out_kind == QG_OUT_U8)
        || ntok % 16)
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
    } else if (isa >= QG_ISA_AVX512BW) {
        epilogue_rows_avx512(acc, lda, m0, rows, n0, len, N, ep);
    } else if (isa >= QG_ISA_AVX2) {
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

/* avx512vnni */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni")
#define SFX avx512vnni
#define MR 6
#define NBLK 4
#define QG_SIMD_BITS 512
#define QG_SIMD_VNNI 1
#include "qgemm_simd.inc"
#include "qgemm_dense.inc"
#pragma GCC pop_options

/* avx512bw: int16 operands, vpmaddwd (see the file comment) */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw")
#define SFX avx512bw
#define MR 4
#define NBLK 2
#define QG_SIMD_BITS 512
#define QG_SIMD_VNNI 0
#include "qgemm_simd.inc"
#include "qgemm_dense.inc"
#pragma GCC pop_options

/* avx2_vnni: AVX-VNNI (VEX-encoded 256-bit vpdpbusd, e.g. Alder Lake) */
#pragma GCC push_options
#pragma GCC target("avx2,avxvnni")
#define SFX avx2_vnni
#define MR 4
#define NBLK 1
#define QG_SIMD_BITS 256
#define QG_SIMD_VNNI 1
#include "qgemm_simd.inc"
#include "qgemm_dense.inc"
#pragma GCC pop_options

/* avx2: int16 operands, vpmaddwd (see the file comment) */
#pragma GCC push_options
#pragma GCC target("avx2")
#define SFX avx2
#define MR 2
#define NBLK 1
#define QG_SIMD_BITS 256
#define QG_SIMD_VNNI 0
#include "qgemm_simd.inc"
#include "qgemm_dense.inc"
#pragma GCC pop_options

static const qg_tile_kernel *dense_kernel_for(int isa)
{
    switch (isa) {
    case QG_ISA_GENERIC: return &dense_kernel_generic;
    case QG_ISA_AVX2: return &dense_kernel_avx2;
    case QG_ISA_AVX2_VNNI: return &dense_kernel_avx2_vnni;
    case QG_ISA_AVX512BW: return &dense_kernel_avx512bw;
    case QG_ISA_AVX512VNNI: return &dense_kernel_avx512vnni;
    default: return NULL;
    }
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

/* ---------------------------------------------------------------- peak probe */

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
int32_t qg_vnni_peak_loop(int64_t iters)
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
