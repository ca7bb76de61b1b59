/* attention_int8.c -- packed variable-length attention with both matmuls in INT8 (attention.h).
 *
 * reference: fdbert/reference/attention_int8.py · tests: spec_tests/test_attention_int8.py
 *
 * The twin of fdbert/reference/attention_int8.py; per (sequence b, head h), q and k codes per token:
 *   q8_i = clip(rint(q_i * (127 / max|q_i|)), -127, 127), sq_i = max|q_i| / 127; k8_j, sk_j alike;
 *   v8, sv the same over the whole (sequence, head)
 *   s_ij   = float32(sum_d q8_id k8_jd) * ((sq_i * sk_j) * scale)   [causal: j < visible_keys(i)]
 *   p_ij   = rint(255 * exp(s_ij - max_j s_ij))                     u8, 0 for keys a query cannot see
 *   out_id = float32(sum_j p_ij v8_jd) * (sv / float32(sum_j p_ij))
 * All integer sums are exact and every float32 step is the reference's, so results are bit-identical
 * to it except where this exp and NumPy's round 255 exp(.) to different sides of a half-integer.
 *
 * FDB_ISA_AVX512VNNI: vpdpbusd multiplies u8 by s8, so the pair's K codes are stored +128 (u8) in the
 * VNNI layout kt[d/4][key][4] (16 keys x 4 channels per 64-byte vector) and each query's 4 s8 codes
 * are broadcast: sum_d (k8 + 128) q8 = sum_d q8 k8 + 128 sum_d q8, and the last term (one per query)
 * is subtracted. P V broadcasts 4 u8 weights of a query against vt[key/4][d][4] (V's s8 codes, 4 keys
 * interleaved per channel). Blocks: 4 queries x 64 keys (scores) and 4 queries x 64 channels (P V),
 * 16 accumulators each; per 4-channel (4-key) step 4 vector loads, 4 broadcasts and 16 vpdpbusd.
 * FDB_ISA_GENERIC: one query at a time, plain loops, libm expf.
 */
#include "attention.h"
#include "attention_pairs.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fp32_ops.h"

#if defined(__x86_64__)
#define I8_X86 1
#include "fp32_vecmath.h"
#else
#define I8_X86 0
#endif

#define I8_QB 4    /* queries per block (AVX-512 VNNI) */
#define I8_NB 64   /* keys per score block, channels per P V block: 4 vectors */

/* max |x| over L rows of Dh floats (row stride rs); -1 if any element is NaN or +-inf. */
static float absmax_generic(const float *x, int64_t L, int64_t Dh, int64_t rs)
{
    float m = 0.0f;
    for (int64_t i = 0; i < L; i++)
        for (int64_t d = 0; d < Dh; d++) {
            const float a = fabsf(x[i * rs + d]);
            if (!(a <= FLT_MAX)) return -1.0f;
            m = a > m ? a : m;
        }
    return m;
}

/* The reference's two quotients: inv = 127 / amax, scale = amax / 127; both 1 below 2^-120, where
 * 127 / amax could overflow (the codes are then 0). */
static inline void symmetric_scale(float amax, float *inv, float *scale)
{
    const int tiny = amax < 0x1p-120f;
    *inv = tiny ? 1.0f : 127.0f / amax;
    *scale = tiny ? 1.0f : amax / 127.0f;
}

static inline int32_t code8(float x, float inv)
{
    float r = nearbyintf(x * inv);   /* round half to even, as np.rint */
    r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
    return (int32_t)r;
}

/* ---------------------------------------------------------------- generic: one query at a time */
static int pair_generic(const float *q, const float *k, const float *v, int64_t Lq, int64_t Lk,
                        const int64_t rs[4], int64_t Dh, int causal, float scale, float *out,
                        uint8_t *outq, const fp_attn_u8 *qp, int8_t *c8, float *sc, float *s,
                        int32_t *p)
{
    const float av = absmax_generic(v, Lk, Dh, rs[2]);
    if (av < 0.0f) return FP_ENONFINITE;
    float iv, sv;
    symmetric_scale(av, &iv, &sv);
    int8_t *q8 = c8, *k8 = c8 + Lq * Dh, *v8 = k8 + Lk * Dh;   /* [L][Dh] codes */
    float *sq = sc, *sk = sc + Lq;                            /* per-token scales */
    for (int64_t i = 0; i < Lq; i++) {
        const float a = absmax_generic(q + i * rs[0], 1, Dh, 0);
        if (a < 0.0f) return FP_ENONFINITE;
        float inv;
        symmetric_scale(a, &inv, &sq[i]);
        for (int64_t d = 0; d < Dh; d++) q8[i * Dh + d] = (int8_t)code8(q[i * rs[0] + d], inv);
    }
    for (int64_t j = 0; j < Lk; j++) {
        const float a = absmax_generic(k + j * rs[1], 1, Dh, 0);
        if (a < 0.0f) return FP_ENONFINITE;
        float inv;
        symmetric_scale(a, &inv, &sk[j]);
        for (int64_t d = 0; d < Dh; d++) {
            k8[j * Dh + d] = (int8_t)code8(k[j * rs[1] + d], inv);
            v8[j * Dh + d] = (int8_t)code8(v[j * rs[2] + d], iv);
        }
    }
    for (int64_t i = 0; i < Lq; i++) {
        const int64_t nk = visible_keys(i, Lq, Lk, causal);
        float m = -INFINITY;
        for (int64_t j = 0; j < nk; j++) {
            int32_t acc = 0;
            for (int64_t d = 0; d < Dh; d++) acc += (int32_t)q8[i * Dh + d] * (int32_t)k8[j * Dh + d];
            s[j] = (float)acc * ((sq[i] * sk[j]) * scale);
            if (!(fabsf(s[j]) <= FLT_MAX)) return FP_EOVERFLOW;
            m = s[j] > m ? s[j] : m;
        }
        int32_t den = 0;
        for (int64_t j = 0; j < nk; j++) {
            p[j] = (int32_t)nearbyintf(255.0f * expf(s[j] - m));
            den += p[j];
        }
        const float t = sv / (float)den;
        for (int64_t d = 0; d < Dh; d++) {
            int32_t num = 0;
            for (int64_t j = 0; j < nk; j++) num += p[j] * (int32_t)v8[j * Dh + d];
            const float o = (float)num * t;
            if (outq) outq[i * rs[3] + d] = fp_quantize1(o, qp->scale, qp->zp);
            else out[i * rs[3] + d] = o;
        }
    }
    return FP_OK;
}

#if I8_X86
/* ---------------------------------------------------------------- AVX-512 VNNI */
#define I8_TARGET FDB_TARGET_AVX512VNNI

/* max |x| as absmax_generic (-1 for a non-finite element). */
I8_TARGET static float absmax_avx512(const float *x, int64_t L, int64_t Dh, int64_t rs)
{
    __m512 m = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t i = 0; i < L; i++)
        for (int64_t d = 0; d < Dh; d += 16) {
            const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(fdb_lanes16(Dh - d), x + i * rs + d));
            bad |= _mm512_cmp_ps_mask(a, _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ);   /* NaN or inf */
            m = _mm512_max_ps(m, a);
        }
    return bad ? -1.0f : _mm512_reduce_max_ps(m);
}

/* 16 codes clip(rint(x * inv), -127, 127) as int32 lanes; masked-off lanes read 0. The clip is
 * never active: |x| <= amax, so |x * float32(127 / amax)| <= 127 (1 + 2^-24)^2 < 127.5; and the
 * conversion rounds half to even itself (embedded rounding, whatever MXCSR says). */
I8_TARGET static inline __m512i codes16(const float *x, __mmask16 k, __m512 inv)
{
    return _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x), inv),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* Per-thread scratch of one pair, sized for the longest sequence (fp_attention_int8). */
typedef struct {
    int8_t *q8;     /* [Lq4][Dh4]: q codes, rows and channels zero-padded */
    int32_t *cq;    /* [Lq4]: 128 * sum_d q8 */
    float *sq;      /* [Lq4]: per-query scales (0 for padding rows) */
    float *sk;      /* [Lk64]: per-key scales (1 for padding keys, whose codes are 0) */
    uint8_t *kt;    /* [Dh4 / 4][Lk64][4]: k codes + 128 */
    int8_t *vt;     /* [Lk64 / 4][Dh64][4]: v codes, 4 keys interleaved */
    float *s;       /* [QB][Lk64] scores */
    uint8_t *pu;    /* [QB][Lk64] u8 weights */
} i8_scratch;

/* The pair's codes and scales into the scratch; FP_ENONFINITE for a NaN or inf in q or k (v is
 * checked by the caller, whose absmax gives iv). */
I8_TARGET static int pack_codes(const float *q, const float *k, const float *v, int64_t Lq,
                                int64_t Lk, const int64_t rs[4], int64_t Dh, float iv,
                                const i8_scratch *w)
{
    const int64_t Dh4 = (Dh + 3) / 4 * 4, Dh64 = (Dh + 63) / 64 * 64, Lk64 = (Lk + 63) / 64 * 64;
    const int64_t Lq4 = (Lq + 3) / 4 * 4;
    const __m512 vv = _mm512_set1_ps(iv);
    memset(w->q8, 0, (size_t)(Lq4 * Dh4));
    for (int64_t i = 0; i < Lq; i++) {   /* q: row-major codes, and 128 * their sum */
        const float a = absmax_avx512(q + i * rs[0], 1, Dh, 0);
        if (a < 0.0f) return FP_ENONFINITE;
        float inv;
        symmetric_scale(a, &inv, &w->sq[i]);
        const __m512 vq = _mm512_set1_ps(inv);
        __m512i sum = _mm512_setzero_si512();
        for (int64_t d = 0; d < Dh; d += 16) {
            const __mmask16 m = fdb_lanes16(Dh - d);
            const __m512i c = codes16(q + i * rs[0] + d, m, vq);
            sum = _mm512_add_epi32(sum, c);
            _mm_mask_storeu_epi8(w->q8 + i * Dh4 + d, m, _mm512_cvtepi32_epi8(c));
        }
        w->cq[i] = 128 * _mm512_reduce_add_epi32(sum);
    }
    for (int64_t i = Lq; i < Lq4; i++) w->cq[i] = 0, w->sq[i] = 0.0f;
    /* k: per key its scale, then 16 keys x 64 channels at a time: each key's codes + 128 as 64
     * bytes (16 words), a 16x16 word transpose, and word g of 16 keys is kt[g][j0 .. j0+15];
     * keys past Lk are 128 (code 0) */
    float kinv[16];
    for (int64_t j0 = 0; j0 < Lk64; j0 += 16) {
        for (int r = 0; r < 16; r++) {
            const int64_t j = j0 + r;
            float a = 0.0f;
            if (j < Lk && (a = absmax_avx512(k + j * rs[1], 1, Dh, 0)) < 0.0f) return FP_ENONFINITE;
            symmetric_scale(a, &kinv[r], &w->sk[j]);   /* padded keys: scale 1, codes 0 */
        }
        for (int64_t d0 = 0; d0 < Dh4; d0 += 64) {
            __m512 rows[16];
            for (int r = 0; r < 16; r++) {
                const int64_t j = j0 + r;
                __m512i b = _mm512_set1_epi8((char)128);
                if (j < Lk) {
                    const __m512 vk = _mm512_set1_ps(kinv[r]);
                    for (int u = 0; u < 4; u++) {
                        const __m512i c = _mm512_add_epi32(
                            codes16(k + j * rs[1] + d0 + 16 * u, fdb_lanes16(Dh - d0 - 16 * u), vk),
                            _mm512_set1_epi32(128));
                        b = _mm512_inserti32x4(b, _mm512_cvtepi32_epi8(c), 0);
                        b = _mm512_alignr_epi32(b, b, 4);   /* rotate: chunk u ends in lanes 4u.. */
                    }
                }
                rows[r] = _mm512_castsi512_ps(b);
            }
            fdb_transpose16(rows);
            for (int64_t g = d0 / 4; g < Dh4 / 4 && g < d0 / 4 + 16; g++)
                _mm512_storeu_si512(w->kt + (g * Lk64 + j0) * 4, _mm512_castps_si512(rows[g - d0 / 4]));
        }
    }
    /* v: 4 key rows at a time, channel d's 4 codes in one int32 (key 4jg + r in byte r) */
    const __m512i lo8 = _mm512_set1_epi32(0xff);
    for (int64_t j0 = 0; j0 < Lk64; j0 += 4)
        for (int64_t d = 0; d < Dh64; d += 16) {
            const __mmask16 m = fdb_lanes16(Dh - d);
            __m512i word = _mm512_setzero_si512();
            for (int r = 0; r < 4; r++) {
                const int64_t j = j0 + r;
                const __m512i c = j < Lk ? codes16(v + j * rs[2] + d, m, vv) : _mm512_setzero_si512();
                word = _mm512_or_si512(word, _mm512_slli_epi32(_mm512_and_si512(c, lo8), 8 * r));
            }
            _mm512_storeu_si512(w->vt + (j0 * Dh64 + 4 * d), word);
        }
    return FP_OK;
}

/* Scores of queries i0 .. i0+3 against keys kb0 .. kb0+63 into s[r][kb0 ..]. */
I8_TARGET static void scores_block(const i8_scratch *w, int64_t i0, int64_t kb0, int64_t Dh4,
                                   int64_t Lk64, float scale)
{
    __m512i acc[I8_QB][4];
    for (int r = 0; r < I8_QB; r++)
        for (int u = 0; u < 4; u++) acc[r][u] = _mm512_setzero_si512();
    const int8_t *qrow = w->q8 + i0 * Dh4;
    for (int64_t g = 0; g < Dh4 / 4; g++) {
        const uint8_t *kg = w->kt + (g * Lk64 + kb0) * 4;
        __m512i kv[4];
        for (int u = 0; u < 4; u++) kv[u] = _mm512_loadu_si512(kg + 64 * u);
        for (int r = 0; r < I8_QB; r++) {
            int32_t qw;
            memcpy(&qw, qrow + r * Dh4 + 4 * g, 4);
            const __m512i b = _mm512_set1_epi32(qw);
            for (int u = 0; u < 4; u++) acc[r][u] = _mm512_dpbusd_epi32(acc[r][u], kv[u], b);
        }
    }
    const __m512 vs = _mm512_set1_ps(scale);
    for (int r = 0; r < I8_QB; r++) {
        const __m512i comp = _mm512_set1_epi32(w->cq[i0 + r]);
        const __m512 sq = _mm512_set1_ps(w->sq[i0 + r]);
        for (int u = 0; u < 4; u++) {   /* float32(acc) * ((sq_i * sk_j) * scale), as the reference */
            const __m512 c = _mm512_mul_ps(_mm512_mul_ps(sq, _mm512_loadu_ps(w->sk + kb0 + 16 * u)), vs);
            _mm512_storeu_ps(w->s + r * Lk64 + kb0 + 16 * u,
                             _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][u], comp)), c));
        }
    }
}

/* The u8 weights rint(255 exp(s - max s)) of the block's rows r < rows, each over its nk[r] visible
 * keys (0 beyond, up to Lk64; rows past `rows` all 0), and their sums in den[r]. The rows go
 * through exp side by side: four independent chains per step (one row at a time ran ~24 cycles per
 * 16 weights, latency-bound). Returns -1 if a visible score is not finite, else 0. */
I8_TARGET static int weights_block(const float *s, const int64_t nk[I8_QB], int rows, int64_t Lk64,
                                   uint8_t *pu, int32_t den[I8_QB])
{
    __m512 vm[I8_QB];
    __mmask16 bad = 0;
    for (int r = 0; r < I8_QB; r++) {
        __m512 m = _mm512_set1_ps(-INFINITY);
        for (int64_t j = 0; r < rows && j < nk[r]; j += 16) {
            const __mmask16 k = fdb_lanes16(nk[r] - j);
            const __m512 x = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, s + r * Lk64 + j);
            bad |= _mm512_mask_cmp_ps_mask(k, _mm512_abs_ps(x), _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ);
            m = _mm512_max_ps(m, x);
        }
        vm[r] = _mm512_set1_ps(r < rows ? _mm512_reduce_max_ps(m) : 0.0f);
    }
    if (bad) return -1;
    __m512i sum[I8_QB];
    for (int r = 0; r < I8_QB; r++) sum[r] = _mm512_setzero_si512();
    for (int64_t j = 0; j < Lk64; j += 16)
        for (int r = 0; r < I8_QB; r++) {
            const __mmask16 k = r < rows ? fdb_lanes16(nk[r] - j) : 0;
            const __m512 e = fdb_exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + r * Lk64 + j), vm[r]));
            const __m512i p = _mm512_maskz_cvt_roundps_epi32(k, _mm512_mul_ps(_mm512_set1_ps(255.0f), e),
                                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            sum[r] = _mm512_add_epi32(sum[r], p);
            _mm_storeu_si128((__m128i *)(pu + r * Lk64 + j), _mm512_cvtepi32_epi8(p));
        }
    for (int r = 0; r < I8_QB; r++) den[r] = _mm512_reduce_add_epi32(sum[r]);
    return 0;
}

/* out rows i0 .. i0+rows-1, channels dc0 .. dc0+63 (< Dh) = float32(sum_j p v8) * t[r]. */
I8_TARGET static void pv_block(const i8_scratch *w, int64_t i0, int64_t rows, int64_t dc0,
                               int64_t njg, int64_t Dh, int64_t Dh64, int64_t Lk64, const float t[I8_QB],
                               float *out, uint8_t *outq, const int64_t rs[4], const fp_attn_u8 *qp)
{
    __m512i acc[I8_QB][4];
    for (int r = 0; r < I8_QB; r++)
        for (int u = 0; u < 4; u++) acc[r][u] = _mm512_setzero_si512();
    for (int64_t g = 0; g < njg; g++) {
        const int8_t *vg = w->vt + (g * Dh64 + dc0) * 4;
        __m512i vv[4];
        for (int u = 0; u < 4; u++) vv[u] = _mm512_loadu_si512(vg + 64 * u);
        for (int r = 0; r < I8_QB; r++) {
            int32_t pw;
            memcpy(&pw, w->pu + r * Lk64 + 4 * g, 4);
            const __m512i a = _mm512_set1_epi32(pw);
            for (int u = 0; u < 4; u++) acc[r][u] = _mm512_dpbusd_epi32(acc[r][u], a, vv[u]);
        }
    }
    for (int r = 0; r < rows; r++) {
        const __m512 vt = _mm512_set1_ps(t[r]);
        for (int u = 0; u < 4; u++) {
            const int64_t d = dc0 + 16 * u;
            if (d >= Dh) break;
            const __mmask16 m = fdb_lanes16(Dh - d);
            const __m512 o = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][u]), vt);
            if (outq)
                _mm_mask_storeu_epi8(outq + (i0 + r) * rs[3] + d, m,
                                     _mm512_cvtepi32_epi8(fdb_quantize_avx512(o, _mm512_set1_ps(qp->scale),
                                                                         _mm512_set1_ps(qp->zp))));
            else
                _mm512_mask_storeu_ps(out + (i0 + r) * rs[3] + d, m, o);
        }
    }
}

I8_TARGET static int pair_avx512vnni(const float *q, const float *k, const float *v, int64_t Lq,
                                     int64_t Lk, const int64_t rs[4], int64_t Dh, int causal,
                                     float scale, float *out, uint8_t *outq, const fp_attn_u8 *qp,
                                     const i8_scratch *w)
{
    const float av = absmax_avx512(v, Lk, Dh, rs[2]);
    if (av < 0.0f) return FP_ENONFINITE;
    float iv, sv;
    symmetric_scale(av, &iv, &sv);
    if (pack_codes(q, k, v, Lq, Lk, rs, Dh, iv, w) != FP_OK) return FP_ENONFINITE;
    const int64_t Dh4 = (Dh + 3) / 4 * 4, Dh64 = (Dh + 63) / 64 * 64, Lk64 = (Lk + 63) / 64 * 64;
    for (int64_t i0 = 0; i0 < Lq; i0 += I8_QB) {
        const int64_t rows = Lq - i0 < I8_QB ? Lq - i0 : I8_QB;
        const int64_t nk_max = visible_keys(i0 + rows - 1, Lq, Lk, causal);   /* the last row's */
        for (int64_t kb0 = 0; kb0 < nk_max; kb0 += I8_NB) scores_block(w, i0, kb0, Dh4, Lk64, scale);
        int64_t nk[I8_QB];
        int32_t den[I8_QB];
        float t[I8_QB];
        for (int r = 0; r < I8_QB; r++) nk[r] = r < rows ? visible_keys(i0 + r, Lq, Lk, causal) : 0;
        if (weights_block(w->s, nk, (int)rows, Lk64, w->pu, den) != 0) return FP_EOVERFLOW;
        for (int r = 0; r < I8_QB; r++) t[r] = r < rows ? sv / (float)den[r] : 0.0f;
        const int64_t njg = (nk_max + 3) / 4;
        for (int64_t dc0 = 0; dc0 < Dh; dc0 += I8_NB)
            pv_block(w, i0, rows, dc0, njg, Dh, Dh64, Lk64, t, out, outq, rs, qp);
    }
    return FP_OK;
}
#endif

int fp_attention_int8(const float *q, const float *k, const float *v, const int32_t *cu_q,
                      const int32_t *cu_k, int64_t B, int64_t H, int64_t Dh, int causal, float scale,
                      const int64_t rs[4], float *out, uint8_t *outq, const fp_attn_u8 *qp, int isa,
                      int nthreads)
{
    int64_t lq_max, lk_max;
    const int scan = scan_pairs(cu_q, cu_k, B, causal, FP_I8_MAX_KEYS, &lq_max, &lk_max);
    if (scan != FP_OK) return scan;
    if (!I8_X86) isa = FDB_ISA_GENERIC;
    const int64_t Dh4 = (Dh + 3) / 4 * 4, Dh64 = (Dh + 63) / 64 * 64, Lk64 = (lk_max + 63) / 64 * 64;
    const int64_t Lq4 = (lq_max + 3) / 4 * 4;
    /* scratch per thread; generic: the three code matrices, the per-token scales, one score row
     * and one weight row */
    enum { NBUF = 8 };
    size_t sz[NBUF] = {0};
    if (isa == FDB_ISA_AVX512VNNI) {
        sz[0] = (size_t)(Lq4 * Dh4); sz[1] = (size_t)Lq4 * 4; sz[2] = (size_t)Lq4 * 4;
        sz[3] = (size_t)Lk64 * 4; sz[4] = (size_t)(Dh4 * Lk64); sz[5] = (size_t)(Lk64 * Dh64);
        sz[6] = (size_t)(I8_QB * Lk64) * 4; sz[7] = (size_t)(I8_QB * Lk64) + 64;
    } else {
        sz[0] = (size_t)((lq_max + 2 * lk_max) * Dh); sz[1] = (size_t)(lq_max + lk_max) * 4;
        sz[2] = (size_t)lk_max * 4; sz[3] = (size_t)lk_max * 4;
    }
    for (int i = 0; i < NBUF; i++) sz[i] = (sz[i] + 63) / 64 * 64 + 64;   /* multiples of 64, never 0 */
    int nt = nthreads < 1 ? 1 : nthreads;
    int err = FP_OK;

#pragma omp parallel num_threads(nt)
    {
        void *buf[NBUF];
        int ok = 1;
        for (int i = 0; i < NBUF; i++) ok &= (buf[i] = aligned_alloc(64, sz[i])) != NULL;
        if (!ok) {
#pragma omp atomic write
            err = FP_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t task = 0; task < B * H; task++) {
            const attn_pair p = pair_at(task, H, Dh, cu_q, cu_k, q, k, v, rs, out, outq);
            if (p.Lq == 0 || !ok) continue;
            int rc;
#if I8_X86
            if (isa == FDB_ISA_AVX512VNNI) {
                const i8_scratch w = {buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7]};
                rc = pair_avx512vnni(p.q, p.k, p.v, p.Lq, p.Lk, rs, Dh, causal, scale, p.out, p.outq,
                                     qp, &w);
            } else
#endif
                rc = pair_generic(p.q, p.k, p.v, p.Lq, p.Lk, rs, Dh, causal, scale, p.out, p.outq, qp,
                                  buf[0], buf[1], buf[2], buf[3]);
            if (rc != FP_OK) {
#pragma omp atomic write
                err = rc;
            }
        }
        for (int i = 0; i < NBUF; i++) free(buf[i]);
    }
    return err;
}
