/* qgemm.c -- INT8 dense GEMM: weight packing, per-ISA register tiles, the fused epilogue.
 *
 *   out[m, n] = epilogue( sum_k x[m, k] * W[n, k] )      x u8 [M, K], W s8 [N, K] (see qgemm.h)
 *
 * Kernel versions (one tile body, qgemm_dense.inc, compiled per ISA; selected by `isa`):
 *   generic     plain C int32 loops over the packed layout (the oracle for the SIMD paths)
 *   avx2        256-bit, 7-bit split + vpmaddubsw/vpmaddwd      4 x 16 tile  (8 accumulators)
 *   avx2_vnni   256-bit VEX vpdpbusd                              4 x 16 tile  (8 accumulators)
 *   avx512bw    512-bit, 7-bit split + vpmaddubsw/vpmaddwd      4 x 32 tile  (8 accumulators)
 *   avx512vnni  512-bit EVEX vpdpbusd                             6 x 64 tile  (24 accumulators)
 *
 * Why the 7-bit split on the non-VNNI paths: vpmaddubsw adds two u8*s8 products into a
 * *saturating* int16, and 255*127 + 255*127 = 64770 > 32767 (ONNX Runtime issues 5849, 6004).
 * Writing x = lo + 128*hi with lo = x & 127 and hi = x >> 7 in {0, 1} keeps each pair sum within
 * 2*127*128 = 32512 (even for w = -128), so vpmaddubsw is exact on both halves; vpmaddwd by 1 and
 * by 128 widens them to int32 and recombines. It costs ~3x the instructions of vpdpbusd but needs
 * no separate int16 copy of the weights (widening to int16 + vpmaddwd would double weight bytes).
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

/* erf for float32, computed in double: erf(x) = x * sum_{n<60} c_n x^(2n), c_n = 2/sqrt(pi) *
 * (-1)^n / (n! (2n+1)) (the Maclaurin series), |x| clamped to 4 where erf(x) rounds to 1.0f.
 * FMA evaluation in double: relative error ~1e-9 even at x^2 = 16 (partial sums <= ~1e6 times
 * 2^-53), so the float32 result is the correctly rounded erf except within ~1e-9 of a rounding
 * tie (1 in 200k random inputs differed from the correctly rounded value when checked). Unlike libm's erff (up
 * to ~1 ulp off) this matches scipy.special.erf on float32, and it vectorizes: the scalar and
 * AVX-512 versions run the same FMAs, so every ISA path returns the same bits. */
static const double QG_ERF_C[60] = {
    1.1283791670955126, -0.37612638903183754, 0.11283791670955126,
    -0.026866170645131252, 0.005223977625442188, -0.0008548327023450853,
    0.00012055332981789664, -1.492565035840625e-05, 1.6462114365889248e-06,
    -1.6365844691234924e-07, 1.4807192815879218e-08, -1.2290555301717928e-09,
    9.422759064650411e-11, -6.7113668551641105e-12, 4.4632242632864775e-13,
    -2.7835162072109215e-14, 1.6342614095367152e-15, -9.063970842808673e-17,
    4.763348040515068e-18, -2.3784598852774293e-19, 1.131218725924631e-20,
    -5.136209054585811e-22, 2.2308786802746453e-23, -9.28672901131906e-25,
    3.71153285316323e-26, -1.4263930180784176e-27, 5.279103332510834e-29,
    -1.8841244217042036e-30, 6.492909974544561e-32, -2.1630383901171243e-33,
    6.973730328792914e-35, -2.1781748594796097e-36, 6.597356545539203e-38,
    -1.9395213725013487e-39, 5.539127534424142e-41, -1.538027363683162e-42,
    4.1552489658106737e-44, -1.0930925207357809e-45, 2.801843440026779e-47,
    -7.002335114640117e-49, 1.7073594878289175e-50, -4.0639470618319806e-52,
    9.448392328628975e-54, -2.1467878854142287e-55, 4.769421502324767e-57,
    -1.0365775670498273e-58, 2.2049686442621386e-60, -4.59265585479012e-62,
    9.370753999249602e-64, -1.8737644566629794e-65, 3.673320419992772e-67,
    -7.062732960580048e-69, 1.3323470603292033e-70, -2.4668742961482336e-72,
    4.4844639770278804e-74, -8.006659680524799e-76, 1.4044551588784017e-77,
    -2.4211050031008298e-79, 4.1029630910196793e-81, -6.837297844314235e-83,
};

/* P(t) = sum_n c_n t^n split 4 ways so the FMA chains are 15 deep instead of 59 (latency):
 * P = (A0 + t A1) + t^2 (A2 + t A3),  Aj = sum_k c_{4k+j} u^k,  u = t^4. */
static float qg_erf_f32(float x)
{
    const double a = x < -4.0f ? -4.0 : (x > 4.0f ? 4.0 : (double)x);
    const double t = a * a, t2 = t * t, u = t2 * t2;
    double A[4];
    for (int j = 0; j < 4; j++) {
        A[j] = QG_ERF_C[56 + j];
        for (int k = 13; k >= 0; k--) A[j] = fma(A[j], u, QG_ERF_C[4 * k + j]);
    }
    const double p = fma(t2, fma(t, A[3], A[2]), fma(t, A[1], A[0]));
    return (float)(a * p);
}

__attribute__((target("avx512f")))
static __m512d erf8_avx512(__m512d a)   /* the same, 8 doubles; a already clamped */
{
    const __m512d t = _mm512_mul_pd(a, a), t2 = _mm512_mul_pd(t, t), u = _mm512_mul_pd(t2, t2);
    __m512d A[4];
    for (int j = 0; j < 4; j++) A[j] = _mm512_set1_pd(QG_ERF_C[56 + j]);
    for (int k = 13; k >= 0; k--)
        for (int j = 0; j < 4; j++) A[j] = _mm512_fmadd_pd(A[j], u, _mm512_set1_pd(QG_ERF_C[4 * k + j]));
    const __m512d p = _mm512_fmadd_pd(t2, _mm512_fmadd_pd(t, A[3], A[2]), _mm512_fmadd_pd(t, A[1], A[0]));
    return _mm512_mul_pd(a, p);
}

__attribute__((target("avx512f")))
static __m512 erf16_avx512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-4.0f)), _mm512_set1_ps(4.0f));
    const __m256 xlo = _mm512_castps512_ps256(x);
    const __m256 xhi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
    const __m256 rlo = _mm512_cvtpd_ps(erf8_avx512(_mm512_cvtps_pd(xlo)));
    const __m256 rhi = _mm512_cvtpd_ps(erf8_avx512(_mm512_cvtps_pd(xhi)));
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(rlo)),
                                               _mm256_castps_pd(rhi), 1));
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

static inline uint8_t qg_requant(float y, float scale, float zp)
{
    float q = rintf(y / scale) + zp;   /* rint: round half to even, as np.rint / cvtps2dq */
    q = q < 0.0f ? 0.0f : (q > 255.0f ? 255.0f : q);
    return (uint8_t)q;
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
            ((uint8_t *)ep->out)[m * N + n] = qg_requant(y, ep->out_scale, ep->out_zp);
    }
}

__attribute__((target("avx512f")))
static void epilogue_row_avx512(const int32_t *acc, int64_t m, int64_t n0, int64_t len, int64_t N,
                                const qg_epilogue *ep)
{
    int64_t i = 0;
    const __m512 scale = _mm512_set1_ps(ep->out_scale), zp = _mm512_set1_ps(ep->out_zp);
    for (; i + 16 <= len; i += 16) {
        const int64_t n = n0 + i;
        __m512i a = _mm512_loadu_si512(acc + i);
        if (ep->comp) a = _mm512_sub_epi32(a, _mm512_loadu_si512(ep->comp + n));
        __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_loadu_ps(ep->mult + n));
        if (ep->bias) y = _mm512_add_ps(y, _mm512_loadu_ps(ep->bias + n));
        if (ep->gelu) y = gelu16_avx512(y);
        if (ep->residual) y = _mm512_add_ps(y, _mm512_loadu_ps(ep->residual + m * N + n));
        if (ep->out_kind == QG_OUT_F32) {
            _mm512_storeu_ps((float *)ep->out + m * N + n, y);
        } else {
            __m512 q = _mm512_roundscale_ps(_mm512_div_ps(y, scale),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = _mm512_add_ps(q, zp);
            q = _mm512_min_ps(_mm512_max_ps(q, _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
            _mm_storeu_si128((__m128i *)((uint8_t *)ep->out + m * N + n),
                             _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q)));
        }
    }
    epilogue_row_generic(acc, m, n0, i, len, N, ep);
}

void qg_epilogue_row(const int32_t *acc, int64_t m, int64_t n0, int64_t len, int64_t N,
                     const qg_epilogue *ep, int isa)
{
    if (ep->out_kind == QG_OUT_S32)
        memcpy((int32_t *)ep->out + m * N + n0, acc, (size_t)len * sizeof(int32_t));
    else if (isa >= QG_ISA_AVX512BW)
        epilogue_row_avx512(acc, m, n0, len, N, ep);
    else
        epilogue_row_generic(acc, m, n0, 0, len, N, ep);
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
#define VEC __m512i
#define VPB 1
#define MR 6
#define NBLK 4
#define VZERO() _mm512_setzero_si512()
#define VLOADU(p) _mm512_loadu_si512((const void *)(p))
#define VSTOREU(p, v) _mm512_storeu_si512((void *)(p), (v))
#define VBCAST32(i) _mm512_set1_epi32(i)
#define XSPLIT(xv, lo, hi) ((lo) = (xv), (hi) = (lo))
#define DOT(acc, lo, hi, w) ((void)(hi), _mm512_dpbusd_epi32((acc), (lo), (w)))
#include "qgemm_dense.inc"
#undef SFX
#undef VEC
#undef VPB
#undef MR
#undef NBLK
#undef VZERO
#undef VLOADU
#undef VSTOREU
#undef VBCAST32
#undef XSPLIT
#undef DOT
#pragma GCC pop_options

/* avx512bw: 7-bit split (see the file comment) */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw")
#define SFX avx512bw
#define VEC __m512i
#define VPB 1
#define MR 4
#define NBLK 2
#define VZERO() _mm512_setzero_si512()
#define VLOADU(p) _mm512_loadu_si512((const void *)(p))
#define VSTOREU(p, v) _mm512_storeu_si512((void *)(p), (v))
#define VBCAST32(i) _mm512_set1_epi32(i)
#define XSPLIT(xv, lo, hi)                                                                  \
    ((lo) = _mm512_and_si512((xv), _mm512_set1_epi8(0x7f)),                                \
     (hi) = _mm512_and_si512(_mm512_srli_epi16((xv), 7), _mm512_set1_epi8(1)))
#define DOT(acc, lo, hi, w)                                                                 \
    _mm512_add_epi32((acc), _mm512_add_epi32(                                               \
        _mm512_madd_epi16(_mm512_maddubs_epi16((lo), (w)), _mm512_set1_epi16(1)),           \
        _mm512_madd_epi16(_mm512_maddubs_epi16((hi), (w)), _mm512_set1_epi16(128))))
#include "qgemm_dense.inc"
#undef SFX
#undef VEC
#undef VPB
#undef MR
#undef NBLK
#undef VZERO
#undef VLOADU
#undef VSTOREU
#undef VBCAST32
#undef XSPLIT
#undef DOT
#pragma GCC pop_options

/* avx2_vnni: AVX-VNNI (VEX-encoded 256-bit vpdpbusd, e.g. Alder Lake) */
#pragma GCC push_options
#pragma GCC target("avx2,avxvnni")
#define SFX avx2_vnni
#define VEC __m256i
#define VPB 2
#define MR 4
#define NBLK 1
#define VZERO() _mm256_setzero_si256()
#define VLOADU(p) _mm256_loadu_si256((const __m256i *)(p))
#define VSTOREU(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#define VBCAST32(i) _mm256_set1_epi32(i)
#define XSPLIT(xv, lo, hi) ((lo) = (xv), (hi) = (lo))
#define DOT(acc, lo, hi, w) ((void)(hi), _mm256_dpbusd_avx_epi32((acc), (lo), (w)))
#include "qgemm_dense.inc"
#undef SFX
#undef VEC
#undef VPB
#undef MR
#undef NBLK
#undef VZERO
#undef VLOADU
#undef VSTOREU
#undef VBCAST32
#undef XSPLIT
#undef DOT
#pragma GCC pop_options

/* avx2: 7-bit split (see the file comment) */
#pragma GCC push_options
#pragma GCC target("avx2")
#define SFX avx2
#define VEC __m256i
#define VPB 2
#define MR 2
#define NBLK 1
#define VZERO() _mm256_setzero_si256()
#define VLOADU(p) _mm256_loadu_si256((const __m256i *)(p))
#define VSTOREU(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#define VBCAST32(i) _mm256_set1_epi32(i)
#define XSPLIT(xv, lo, hi)                                                                  \
    ((lo) = _mm256_and_si256((xv), _mm256_set1_epi8(0x7f)),                                \
     (hi) = _mm256_and_si256(_mm256_srli_epi16((xv), 7), _mm256_set1_epi8(1)))
#define DOT(acc, lo, hi, w)                                                                 \
    _mm256_add_epi32((acc), _mm256_add_epi32(                                               \
        _mm256_madd_epi16(_mm256_maddubs_epi16((lo), (w)), _mm256_set1_epi16(1)),           \
        _mm256_madd_epi16(_mm256_maddubs_epi16((hi), (w)), _mm256_set1_epi16(128))))
#include "qgemm_dense.inc"
#undef SFX
#undef VEC
#undef VPB
#undef MR
#undef NBLK
#undef VZERO
#undef VLOADU
#undef VSTOREU
#undef VBCAST32
#undef XSPLIT
#undef DOT
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
    /* M chunks of MC rows: x chunk ~256 KB (L2). N chunks of NCB 16-channel blocks: weights
     * ~1 MB (L2, with the x chunk); halved while there are fewer than 2 tiles per thread. */
    int64_t MC = (256 * 1024 / (K > 0 ? K : 1)) / mr * mr;
    if (MC < mr) MC = mr;
    if (MC > M) MC = (M + mr - 1) / mr * mr;
    const int64_t n_mc = (M + MC - 1) / MC;
    int64_t NCB = (1024 * 1024 / (wstride > 0 ? wstride : 1)) / nb * nb;
    if (NCB < nb) NCB = nb;
    while (NCB > nb && n_mc * ((Nb + NCB - 1) / NCB) < 2 * nthreads) NCB = (NCB / 2 + nb - 1) / nb * nb;
    const int64_t n_nc = (Nb + NCB - 1) / NCB;

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
                for (int r = 0; r < rows; r++)
                    qg_epilogue_row(tile + r * nb * 16, m + r, n0, nvalid * 16 < ncols ? nvalid * 16 : ncols,
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
