/* attention.c -- packed variable-length scaled dot-product attention (see attention.h).
 *
 * reference: fdbert/reference/attention.py · tests: spec_tests/test_native_attention.py
 */
#include "attention.h"
#include "attention_pairs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fp32_ops.h"

#if defined(__x86_64__)
#define FP_X86 1
#include "fp32_vecmath.h"
#else
#define FP_X86 0
#endif

#define KB 16   /* keys per score column block (one zmm) */
#define QB 6    /* queries per score and P V block */
#define SCORE_FLOATS 16384   /* per-thread score scratch (64 KB): Lq = Lk = 128 in one chunk */
#define KEY_TILE 256   /* keys per online-softmax tile (a multiple of KB and KB8): Lk <= KEY_TILE is one tile */

/* Queries whose scores are computed in one phase: SCORE_FLOATS worth rounded up to whole blocks of
 * qb <= QB queries, at least one block (so chunk_rows(ldS, qb) * ldS <= SCORE_FLOATS + QB * ldS). */
static inline int64_t chunk_rows(int64_t ldS, int64_t qb)
{
    int64_t rows = (SCORE_FLOATS / ldS + qb - 1) / qb * qb;
    return rows < qb ? qb : rows;
}

/* ---------------------------------------------------------------- generic: one query at a time
 *
 * The online softmax over key tiles of KEY_TILE keys (FlashAttention-2, Dao 2023, sec. 3.1), as in
 * fdbert/reference/attention.py: per query a running max m, sum l and unnormalised output o,
 *   m' = max(m, max_j s_j),  l' = e^(m - m') l + sum_j e^(s_j - m'),  o' = e^(m - m') o + sum_j e^(s_j - m') v_j,
 * and out = o / l after the last tile. Scratch: s [KEY_TILE] and o [Dh], whatever Lk. */
static void pair_generic(const float *q, const float *k, const float *v, int64_t Lq, int64_t Lk,
                         const int64_t rs[4], int64_t Dh, int causal, float scale, float *out, uint8_t *outq,
                         const fp_attn_u8 *qp, float *s, float *o)
{
    /* q, k, v, out point at the pair's first row and head; consecutive rows of q, k, v and out are
     * rs[0], rs[1], rs[2] and rs[3] elements apart. */
    for (int64_t i = 0; i < Lq; i++) {
        const float *qi = q + i * rs[0];
        const int64_t nk = visible_keys(i, Lq, Lk, causal);
        float m = -INFINITY, l = 0.0f;
        for (int64_t t0 = 0; t0 < nk; t0 += KEY_TILE) {
            const int64_t n = nk - t0 < KEY_TILE ? nk - t0 : KEY_TILE;
            float mt = -INFINITY;
            for (int64_t j = 0; j < n; j++) {
                const float *kj = k + (t0 + j) * rs[1];
                float dot = 0.0f;
                for (int64_t d = 0; d < Dh; d++) dot += qi[d] * kj[d];
                s[j] = dot * scale;
                mt = s[j] > mt ? s[j] : mt;
            }
            const float mnew = t0 == 0 || mt > m ? mt : m;
            const float alpha = t0 == 0 || mnew == m ? 1.0f : expf(m - mnew);   /* unused in the first tile */
            float sum = 0.0f;
            for (int64_t j = 0; j < n; j++) {
                s[j] = expf(s[j] - mnew);
                sum += s[j];
            }
            l = t0 == 0 ? sum : l * alpha + sum;
            m = mnew;
            for (int64_t d = 0; d < Dh; d++) {
                float od = t0 == 0 ? 0.0f : o[d] * alpha;
                for (int64_t j = 0; j < n; j++) od += s[j] * v[(t0 + j) * rs[2] + d];
                o[d] = od;
            }
        }
        const float inv = 1.0f / l;
        for (int64_t d = 0; d < Dh; d++) {
            if (outq) outq[i * rs[3] + d] = fp_quantize1(o[d] * inv, qp->scale, qp->zp);
            else out[i * rs[3] + d] = o[d] * inv;
        }
    }
}

#if FP_X86
/* ---------------------------------------------------------------- AVX-512: blocked
 *
 * The three inner kernels (scores_rows, exp_rows, pv_rows) are noinline: each then has the 32 zmm
 * registers to itself. Inlined into the pair driver, GCC kept other values live across them and spilled
 * K^T lines and accumulators to the stack inside the FMA loops. */

/* Copies the pair's K and V into contiguous panels:
 *   vp[j * ldV + d] = v[j, d]    (zero for Dh <= d < ldV): V rows 64-byte aligned and adjacent;
 *   kt[(c * Dh + d) * KB + jj] = k[c * KB + jj, d]  (zero for keys >= Lk), by 16x16 transposes:
 *                                column block c of K^T is Dh 64-byte lines, read in order by the
 *                                score loop.
 * K and V rows of one head lie H*Dh floats apart (3 KB in DistilBERT), all in the same few L1 sets:
 * the P V loop would miss L1 on nearly every row of the strided original. */
FDB_TARGET_AVX512 static void pack_kv(const float *k, const float *v, int64_t Lk, const int64_t rs[4], int64_t Dh,
                                      int64_t ldV, float *kt, float *vp)
{
    for (int64_t j = 0; j < Lk; j++)
        for (int64_t d0 = 0; d0 < ldV; d0 += 16)
            _mm512_store_ps(vp + j * ldV + d0, _mm512_maskz_loadu_ps(fdb_lanes16(Dh - d0), v + j * rs[2] + d0));
    int64_t nkb = (Lk + KB - 1) / KB;
    for (int64_t c = 0; c < nkb; c++) {
        int64_t nrow = Lk - c * KB < KB ? Lk - c * KB : KB;
        for (int64_t d0 = 0; d0 < ldV; d0 += 16) {
            __mmask16 m = fdb_lanes16(Dh - d0);
            __m512 r[16];
#pragma GCC unroll 16
            for (int jj = 0; jj < 16; jj++)
                r[jj] = jj < nrow ? _mm512_maskz_loadu_ps(m, k + (c * KB + jj) * rs[1] + d0) : _mm512_setzero_ps();
            fdb_transpose16(r);
#pragma GCC unroll 16
            for (int e = 0; e < 16; e++)
                if (d0 + e < Dh) _mm512_store_ps(kt + (c * Dh + d0 + e) * KB, r[e]);
        }
    }
}

/* s[r * ldS + b*KB .. +KB] = scale * q_r . K[b*KB .. +KB] for QB query rows and nb <= 4 key blocks
 * b (kt at the first one): QB * nb <= 24 accumulators, each FMA step loading nb K^T lines and QB
 * broadcast q values for QB * nb FMAs. A template: nb is a constant wherever it is inlined. */
FDB_TARGET_AVX512 __attribute__((always_inline)) static inline void
scores_tile(const float *const qr[QB], const float *kt, int64_t Dh, __m512 vscale, float *s, int64_t ldS,
            const int nb)
{
    __m512 a[QB][4];
#pragma GCC unroll 8
    for (int r = 0; r < QB; r++)
#pragma GCC unroll 4
        for (int b = 0; b < nb; b++) a[r][b] = _mm512_setzero_ps();
    for (int64_t d = 0; d < Dh; d++) {
        __m512 kv[4];
#pragma GCC unroll 4
        for (int b = 0; b < nb; b++) kv[b] = _mm512_load_ps(kt + (b * Dh + d) * KB);
#pragma GCC unroll 8
        for (int r = 0; r < QB; r++) {
            __m512 qv = _mm512_set1_ps(qr[r][d]);
#pragma GCC unroll 4
            for (int b = 0; b < nb; b++) a[r][b] = _mm512_fmadd_ps(qv, kv[b], a[r][b]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < QB; r++)
#pragma GCC unroll 4
        for (int b = 0; b < nb; b++) _mm512_store_ps(s + r * ldS + b * KB, _mm512_mul_ps(a[r][b], vscale));
}

/* The scores of QB query rows against key blocks c < nkb: tiles of 4 key blocks, then one of 1-3. */
FDB_TARGET_AVX512 __attribute__((noinline)) static void scores_rows(const float *const qr[QB], const float *kt,
                                                                    int64_t nkb, int64_t Dh, float scale,
                                                                    float *s, int64_t ldS)
{
    const __m512 vscale = _mm512_set1_ps(scale);
    int64_t c = 0;
    for (; c + 4 <= nkb; c += 4) scores_tile(qr, kt + c * Dh * KB, Dh, vscale, s + c * KB, ldS, 4);
    switch (nkb - c) {
    case 3: scores_tile(qr, kt + c * Dh * KB, Dh, vscale, s + c * KB, ldS, 3); break;
    case 2: scores_tile(qr, kt + c * Dh * KB, Dh, vscale, s + c * KB, ldS, 2); break;
    case 1: scores_tile(qr, kt + c * Dh * KB, Dh, vscale, s + c * KB, ldS, 1); break;
    }
}

/* One key tile of the online softmax for QB score rows, in place (the generic path's equations):
 * m'_r = max(m_r, max_{j < nk[r]} s[r, j]), e[r, j] = exp(s[r, j] - m'_r) for j < nk[r] and 0 for
 * nk[r] <= j < nz (masked keys weigh 0; nk[r] <= 0: the row sees no key of this tile), with
 * s[r, j] = s[r * ldS + j]; alpha[r] = exp(m_r - m'_r), exactly 1 when the max did not move;
 * l'_r = alpha[r] l_r + sum_j e[r, j]. In the first tile (first != 0) m and l are only written: every
 * row sees key 0. The P V loop sums e v and scales the Dh outputs by 1 / l once, instead of
 * normalizing Lk scores. The QB rows go through fdb_exp_avx512 side by side: independent chains that
 * hide its ~70-cycle latency. */
FDB_TARGET_AVX512 __attribute__((noinline)) static void exp_rows(float *s, int64_t ldS, const int64_t nk[QB],
                                                                 int64_t nz, int first, float m_run[QB],
                                                                 float l_run[QB], float alpha[QB])
{
    __m512 m[QB], acc[QB];
#pragma GCC unroll 8
    for (int r = 0; r < QB; r++) m[r] = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < nz; j += 16)
#pragma GCC unroll 8
        for (int r = 0; r < QB; r++)
            m[r] = _mm512_mask_max_ps(m[r], fdb_lanes16(nk[r] - j), m[r], _mm512_load_ps(s + r * ldS + j));
#pragma GCC unroll 8
    for (int r = 0; r < QB; r++) {
        const float mt = _mm512_reduce_max_ps(m[r]);
        const float mnew = first || mt > m_run[r] ? mt : m_run[r];
        alpha[r] = first || mnew == m_run[r] ? 1.0f : expf(m_run[r] - mnew);
        m_run[r] = mnew;
        m[r] = _mm512_set1_ps(mnew);
        acc[r] = _mm512_setzero_ps();
    }
    for (int64_t j = 0; j < nz; j += 16)
#pragma GCC unroll 8
        for (int r = 0; r < QB; r++) {
            float *sr = s + r * ldS + j;
            __m512 e = _mm512_maskz_mov_ps(fdb_lanes16(nk[r] - j), fdb_exp_avx512(_mm512_sub_ps(_mm512_load_ps(sr), m[r])));
            _mm512_store_ps(sr, e);
            acc[r] = _mm512_add_ps(acc[r], e);
        }
#pragma GCC unroll 8
    for (int r = 0; r < QB; r++) {
        const float sum = _mm512_reduce_add_ps(acc[r]);
        l_run[r] = first ? sum : l_run[r] * alpha[r] + sum;
    }
}

/* o_r[dc .. dc + 16 nv] = alpha_r o_r + sum_{j < nk} e[r * ldS + j] vp[j, dc .. dc + 16 nv] for QB rows r
 * and nv <= 4 channel vectors: QB * nv <= 24 accumulators, each step loading nv V panel lines and QB
 * broadcast e values for QB * nv FMAs. o_r starts at 0 in the first key tile, else from the row's
 * accumulator acc[r * ldV ..]; after the last tile (final) the row is written scaled by inv_r = 1 / l_r
 * (or quantized), else stored back to acc. Rows with orow[r] == qrow[r] == NULL are computed and
 * dropped. Rows whose e is zero beyond their own visible keys get exactly the sums they would get
 * alone (alpha = 1 in the tiles they do not see). A template: nv is a constant wherever it is inlined. */
FDB_TARGET_AVX512 __attribute__((always_inline)) static inline void
pv_tile(const float *e, int64_t ldS, const float *vp, int64_t ldV, int64_t nk, int64_t dc, int64_t Dh,
        const float alpha[QB], float *acc, int first, int final, const float inv[QB],
        float *const orow[QB], uint8_t *const qrow[QB], const fp_attn_u8 *qp, const int nv)
{
    __m512 o[QB][4];
    if (first) {
#pragma GCC unroll 8
        for (int r = 0; r < QB; r++)
#pragma GCC unroll 4
            for (int b = 0; b < nv; b++) o[r][b] = _mm512_setzero_ps();
    } else {
#pragma GCC unroll 8
        for (int r = 0; r < QB; r++) {
            const __m512 va = _mm512_set1_ps(alpha[r]);
#pragma GCC unroll 4
            for (int b = 0; b < nv; b++) o[r][b] = _mm512_mul_ps(_mm512_load_ps(acc + r * ldV + dc + 16 * b), va);
        }
    }
    for (int64_t j = 0; j < nk; j++) {
        __m512 vv[4];
#pragma GCC unroll 4
        for (int b = 0; b < nv; b++) vv[b] = _mm512_load_ps(vp + j * ldV + dc + 16 * b);
#pragma GCC unroll 8
        for (int r = 0; r < QB; r++) {
            __m512 ev = _mm512_set1_ps(e[r * ldS + j]);
#pragma GCC unroll 4
            for (int b = 0; b < nv; b++) o[r][b] = _mm512_fmadd_ps(ev, vv[b], o[r][b]);
        }
    }
    if (!final) {
#pragma GCC unroll 8
        for (int r = 0; r < QB; r++)
#pragma GCC unroll 4
            for (int b = 0; b < nv; b++) _mm512_store_ps(acc + r * ldV + dc + 16 * b, o[r][b]);
        return;
    }
#pragma GCC unroll 8
    for (int r = 0; r < QB; r++) {
        const __m512 vinv = _mm512_set1_ps(inv[r]);
        if (qrow[r]) {
            const __m512 scale = _mm512_set1_ps(qp->scale), zp = _mm512_set1_ps(qp->zp);
#pragma GCC unroll 4
            for (int b = 0; b < nv; b++)
                _mm512_mask_cvtepi32_storeu_epi8(qrow[r] + dc + 16 * b, fdb_lanes16(Dh - dc - 16 * b),
                                                 fdb_quantize_avx512(_mm512_mul_ps(o[r][b], vinv), scale, zp));
        } else if (orow[r]) {
#pragma GCC unroll 4
            for (int b = 0; b < nv; b++)
                _mm512_mask_storeu_ps(orow[r] + dc + 16 * b, fdb_lanes16(Dh - dc - 16 * b), _mm512_mul_ps(o[r][b], vinv));
        }
    }
}

/* The P V product of QB rows over all ldV channels: tiles of 64 channels, then one of 16-48. */
FDB_TARGET_AVX512 __attribute__((noinline)) static void pv_rows(const float *e, int64_t ldS, const float *vp,
                                                                int64_t ldV, int64_t nk, int64_t Dh,
                                                                const float alpha[QB], float *acc, int first,
                                                                int final, const float inv[QB],
                                                                float *const orow[QB], uint8_t *const qrow[QB],
                                                                const fp_attn_u8 *qp)
{
    int64_t dc = 0;
    for (; dc + 64 <= ldV; dc += 64)
        pv_tile(e, ldS, vp, ldV, nk, dc, Dh, alpha, acc, first, final, inv, orow, qrow, qp, 4);
    switch ((ldV - dc) / 16) {
    case 3: pv_tile(e, ldS, vp, ldV, nk, dc, Dh, alpha, acc, first, final, inv, orow, qrow, qp, 3); break;
    case 2: pv_tile(e, ldS, vp, ldV, nk, dc, Dh, alpha, acc, first, final, inv, orow, qrow, qp, 2); break;
    case 1: pv_tile(e, ldS, vp, ldV, nk, dc, Dh, alpha, acc, first, final, inv, orow, qrow, qp, 1); break;
    }
}

/* ---------------------------------------------------------------- AVX2 + FMA: blocked, 8 lanes
 *
 * The AVX-512 path's panels and phases with AVX2's 16 ymm registers: 8-key column blocks of K^T,
 * QB8 = 4 queries x 16 keys of scores and 4 queries x 16 head channels of P V per tile (8
 * accumulators each), exp by fdb_exp_avx2 (fp32_vecmath.h). For the CPUs without AVX-512 (AMD Zen 2/3,
 * Intel client cores): the generic path computes one query at a time with scalar loops. */
#define KB8 8   /* keys per score column block (one ymm) */
#define QB8 4   /* queries per score and P V block */

/* As pack_kv with 8-key blocks: vp[j * ldV + d] = v[j, d] (zero for Dh <= d < ldV, ldV = Dh rounded
 * up to 8); kt[(c * Dh + d) * KB8 + jj] = k[c * KB8 + jj, d] (zero for keys >= Lk). */
FDB_TARGET_AVX2 static void pack_kv_avx2(const float *k, const float *v, int64_t Lk, const int64_t rs[4],
                                         int64_t Dh, int64_t ldV, float *kt, float *vp)
{
    for (int64_t j = 0; j < Lk; j++) {
        memcpy(vp + j * ldV, v + j * rs[2], (size_t)Dh * sizeof(float));
        for (int64_t d = Dh; d < ldV; d++) vp[j * ldV + d] = 0.0f;
    }
    const int64_t nkb = (Lk + KB8 - 1) / KB8;
    for (int64_t c = 0; c < nkb; c++)
        for (int64_t jj = 0; jj < KB8; jj++) {
            const int64_t j = c * KB8 + jj;
            float *dst = kt + c * Dh * KB8 + jj;
            if (j < Lk)
                for (int64_t d = 0; d < Dh; d++) dst[d * KB8] = k[j * rs[1] + d];
            else
                for (int64_t d = 0; d < Dh; d++) dst[d * KB8] = 0.0f;
        }
}

/* s[r * ldS + b*KB8 .. +KB8] = scale * q_r . K[b*KB8 .. +KB8] for QB8 query rows and nb <= 2 key blocks. */
FDB_TARGET_AVX2 __attribute__((always_inline)) static inline void
scores_tile8(const float *const qr[QB8], const float *kt, int64_t Dh, __m256 vscale, float *s, int64_t ldS,
             const int nb)
{
    __m256 a[QB8][2];
#pragma GCC unroll 4
    for (int r = 0; r < QB8; r++)
#pragma GCC unroll 2
        for (int b = 0; b < nb; b++) a[r][b] = _mm256_setzero_ps();
    for (int64_t d = 0; d < Dh; d++) {
        __m256 kv[2];
#pragma GCC unroll 2
        for (int b = 0; b < nb; b++) kv[b] = _mm256_loadu_ps(kt + (b * Dh + d) * KB8);
#pragma GCC unroll 4
        for (int r = 0; r < QB8; r++) {
            const __m256 qv = _mm256_broadcast_ss(qr[r] + d);
#pragma GCC unroll 2
            for (int b = 0; b < nb; b++) a[r][b] = _mm256_fmadd_ps(qv, kv[b], a[r][b]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < QB8; r++)
#pragma GCC unroll 2
        for (int b = 0; b < nb; b++) _mm256_storeu_ps(s + r * ldS + b * KB8, _mm256_mul_ps(a[r][b], vscale));
}

FDB_TARGET_AVX2 __attribute__((noinline)) static void scores_rows8(const float *const qr[QB8], const float *kt,
                                                                   int64_t nkb, int64_t Dh, float scale,
                                                                   float *s, int64_t ldS)
{
    const __m256 vscale = _mm256_set1_ps(scale);
    int64_t c = 0;
    for (; c + 2 <= nkb; c += 2) scores_tile8(qr, kt + c * Dh * KB8, Dh, vscale, s + c * KB8, ldS, 2);
    if (c < nkb) scores_tile8(qr, kt + c * Dh * KB8, Dh, vscale, s + c * KB8, ldS, 1);
}

/* exp_rows for QB8 rows in 8 lanes (see there): one key tile of the online softmax. */
FDB_TARGET_AVX2 __attribute__((noinline)) static void exp_rows8(float *s, int64_t ldS, const int64_t nk[QB8],
                                                                int64_t nz, int first, float m_run[QB8],
                                                                float l_run[QB8], float alpha[QB8])
{
    __m256 m[QB8], acc[QB8];
#pragma GCC unroll 4
    for (int r = 0; r < QB8; r++) m[r] = _mm256_set1_ps(-INFINITY);
    for (int64_t j = 0; j < nz; j += 8)
#pragma GCC unroll 4
        for (int r = 0; r < QB8; r++) {
            const __m256 x = _mm256_loadu_ps(s + r * ldS + j);
            m[r] = _mm256_blendv_ps(m[r], _mm256_max_ps(m[r], x), _mm256_castsi256_ps(fdb_lanes8(nk[r] - j)));
        }
#pragma GCC unroll 4
    for (int r = 0; r < QB8; r++) {
        const float mt = fdb_hmax8(m[r]);
        const float mnew = first || mt > m_run[r] ? mt : m_run[r];
        alpha[r] = first || mnew == m_run[r] ? 1.0f : expf(m_run[r] - mnew);
        m_run[r] = mnew;
        m[r] = _mm256_set1_ps(mnew);
        acc[r] = _mm256_setzero_ps();
    }
    for (int64_t j = 0; j < nz; j += 8)
#pragma GCC unroll 4
        for (int r = 0; r < QB8; r++) {
            float *sr = s + r * ldS + j;
            const __m256 e = _mm256_and_ps(_mm256_castsi256_ps(fdb_lanes8(nk[r] - j)),
                                           fdb_exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(sr), m[r])));
            _mm256_storeu_ps(sr, e);
            acc[r] = _mm256_add_ps(acc[r], e);
        }
#pragma GCC unroll 4
    for (int r = 0; r < QB8; r++) {
        const float sum = fdb_hsum8(acc[r]);
        l_run[r] = first ? sum : l_run[r] * alpha[r] + sum;
    }
}

/* pv_tile in 8 lanes: QB8 rows x nv <= 2 channel vectors from dc. */
FDB_TARGET_AVX2 __attribute__((always_inline)) static inline void
pv_tile8(const float *e, int64_t ldS, const float *vp, int64_t ldV, int64_t nk, int64_t dc, int64_t Dh,
         const float alpha[QB8], float *acc, int first, int final, const float inv[QB8],
         float *const orow[QB8], uint8_t *const qrow[QB8], const fp_attn_u8 *qp, const int nv)
{
    __m256 o[QB8][2];
    if (first) {
#pragma GCC unroll 4
        for (int r = 0; r < QB8; r++)
#pragma GCC unroll 2
            for (int b = 0; b < nv; b++) o[r][b] = _mm256_setzero_ps();
    } else {
#pragma GCC unroll 4
        for (int r = 0; r < QB8; r++) {
            const __m256 va = _mm256_set1_ps(alpha[r]);
#pragma GCC unroll 2
            for (int b = 0; b < nv; b++) o[r][b] = _mm256_mul_ps(_mm256_loadu_ps(acc + r * ldV + dc + 8 * b), va);
        }
    }
    for (int64_t j = 0; j < nk; j++) {
        __m256 vv[2];
#pragma GCC unroll 2
        for (int b = 0; b < nv; b++) vv[b] = _mm256_loadu_ps(vp + j * ldV + dc + 8 * b);
#pragma GCC unroll 4
        for (int r = 0; r < QB8; r++) {
            const __m256 ev = _mm256_broadcast_ss(e + r * ldS + j);
#pragma GCC unroll 2
            for (int b = 0; b < nv; b++) o[r][b] = _mm256_fmadd_ps(ev, vv[b], o[r][b]);
        }
    }
    if (!final) {
#pragma GCC unroll 4
        for (int r = 0; r < QB8; r++)
#pragma GCC unroll 2
            for (int b = 0; b < nv; b++) _mm256_storeu_ps(acc + r * ldV + dc + 8 * b, o[r][b]);
        return;
    }
#pragma GCC unroll 4
    for (int r = 0; r < QB8; r++) {
        const __m256 vinv = _mm256_set1_ps(inv[r]);
#pragma GCC unroll 2
        for (int b = 0; b < nv; b++) {
            const int64_t c = dc + 8 * b, lanes = Dh - c < 8 ? Dh - c : 8;
            if (lanes <= 0) continue;
            const __m256 y = _mm256_mul_ps(o[r][b], vinv);
            if (qrow[r]) {
                uint8_t code[8];
                fdb_quantize_store_avx2(code, y, qp->scale, qp->zp);
                memcpy(qrow[r] + c, code, (size_t)lanes);
            } else if (orow[r]) {
                _mm256_maskstore_ps(orow[r] + c, fdb_lanes8(lanes), y);
            }
        }
    }
}

FDB_TARGET_AVX2 __attribute__((noinline)) static void pv_rows8(const float *e, int64_t ldS, const float *vp,
                                                               int64_t ldV, int64_t nk, int64_t Dh,
                                                               const float alpha[QB8], float *acc, int first,
                                                               int final, const float inv[QB8],
                                                               float *const orow[QB8], uint8_t *const qrow[QB8],
                                                               const fp_attn_u8 *qp)
{
    int64_t dc = 0;
    for (; dc + 16 <= ldV; dc += 16)
        pv_tile8(e, ldS, vp, ldV, nk, dc, Dh, alpha, acc, first, final, inv, orow, qrow, qp, 2);
    if (dc < ldV) pv_tile8(e, ldS, vp, ldV, nk, dc, Dh, alpha, acc, first, final, inv, orow, qrow, qp, 1);
}

/* ---------------------------------------------------------------- the blocked driver (both paths)
 *
 * One (sequence, head) pair: K and V are packed once (K^T [ldS, Dh] and the V panel [Lk, ldV]), then
 * per chunk of queries, per key tile of KEY_TILE keys (the online softmax), three phases that each
 * keep one panel in L1 (48 KB): the scores of up to chunk_rows(ldT, qb) queries against the tile
 * (the K^T panel, 32 KB in DistilBERT, read once per qb queries), then per qb queries the tile's
 * softmax numerators and their P V product (the V panel) into the rows' accumulators. Done qb
 * queries at a time instead, the two panels would evict each other every time. A pair with
 * Lk <= KEY_TILE is one tile: its accumulators never leave the registers. The kernels are the ISA's
 * (noinline: each has the registers to itself); the scratch is sized for the AVX-512 layouts, which
 * hold the 8-lane ones too. */
typedef struct {
    int64_t kb, qb, lanes;   /* keys per score column block, queries per block (<= QB), vector floats */
    void (*pack_kv)(const float *k, const float *v, int64_t Lk, const int64_t rs[4], int64_t Dh,
                    int64_t ldV, float *kt, float *vp);
    void (*scores_rows)(const float *const *qr, const float *kt, int64_t nkb, int64_t Dh, float scale,
                        float *s, int64_t ldS);
    void (*exp_rows)(float *s, int64_t ldS, const int64_t *nk, int64_t nz, int first, float *m_run,
                     float *l_run, float *alpha);
    void (*pv_rows)(const float *e, int64_t ldS, const float *vp, int64_t ldV, int64_t nk, int64_t Dh,
                    const float *alpha, float *acc, int first, int final, const float *inv,
                    float *const *orow, uint8_t *const *qrow, const fp_attn_u8 *qp);
} blocked_kernels;

static const blocked_kernels KERNELS_AVX512 = {KB, QB, 16, pack_kv, scores_rows, exp_rows, pv_rows};
static const blocked_kernels KERNELS_AVX2 = {KB8, QB8, 8, pack_kv_avx2, scores_rows8, exp_rows8, pv_rows8};

#endif

/* Per-thread scratch (fp_attention sizes it for the longest pair): the packed panels kt [ldS, Dh]
 * and vp [Lk, ldV]; s, one key tile of scores per chunk row; the chunk rows' online-softmax state:
 * o [chunk, ldV] (used when Lk > KEY_TILE), m and l [chunk]. The generic path uses s [KEY_TILE] and
 * o [Dh] only. Nothing is [Lq, Lk]: the scratch grows with Lk Dh, like K and V themselves. */
typedef struct {
    float *kt, *vp, *s, *o, *m, *l;
} attn_scratch;

#if FP_X86
static void pair_blocked(const blocked_kernels *kn, const float *q, const float *k, const float *v,
                         int64_t Lq, int64_t Lk, const int64_t rs[4], int64_t Dh, int causal, float scale,
                         float *out, uint8_t *outq, const fp_attn_u8 *qp, const attn_scratch *w)
{
    const int64_t kb = kn->kb, qb = kn->qb;
    const int64_t ldS = (Lk + kb - 1) / kb * kb;                            /* Lk rounded up to a key block */
    const int64_t ldT = ldS < KEY_TILE ? ldS : KEY_TILE;                  /* a score row: one key tile */
    const int64_t ldV = (Dh + kn->lanes - 1) / kn->lanes * kn->lanes;      /* Dh rounded up to a vector */
    const int64_t chunk = chunk_rows(ldT, qb);
    kn->pack_kv(k, v, Lk, rs, Dh, ldV, w->kt, w->vp);
    for (int64_t c0 = 0; c0 < Lq; c0 += chunk) {
        const int64_t c1 = Lq - c0 < chunk ? Lq : c0 + chunk;
        const int64_t kend = visible_keys(c1 - 1, Lq, Lk, causal);       /* keys the chunk's last query sees */
        for (int64_t t0 = 0; t0 < kend; t0 += KEY_TILE) {
            const int64_t t1 = Lk - t0 < KEY_TILE ? Lk : t0 + KEY_TILE;
            for (int64_t i0 = c0; i0 < c1; i0 += qb) {
                const float *qr[QB];
                for (int64_t r = 0; r < qb; r++)
                    qr[r] = q + (i0 + r < c1 ? i0 + r : i0) * rs[0];   /* missing rows repeat row i0, unused */
                const int64_t last = (c1 - i0 < qb ? c1 : i0 + qb) - 1;
                const int64_t vis = visible_keys(last, Lq, Lk, causal);
                if (vis <= t0) continue;                                   /* the block sees no key of the tile */
                const int64_t nkb = ((vis < t1 ? vis : t1) - t0 + kb - 1) / kb;
                kn->scores_rows(qr, w->kt + t0 * Dh, nkb, Dh, scale, w->s + (i0 - c0) * ldT, ldT);
            }
            for (int64_t i0 = c0; i0 < c1; i0 += qb) {
                const int64_t rows = c1 - i0 < qb ? c1 - i0 : qb;
                const int64_t vis = visible_keys(i0 + rows - 1, Lq, Lk, causal);
                if (vis <= t0) continue;
                const int first = t0 == 0, final = vis <= t1;   /* the block's first and last tiles */
                int64_t nk[QB];
                float *e = w->s + (i0 - c0) * ldT, alpha[QB], inv[QB], *orow[QB];
                uint8_t *qrow[QB];
                for (int64_t r = 0; r < qb; r++) {
                    /* the row's keys in this tile, as in the scores */
                    const int64_t n = visible_keys(r < rows ? i0 + r : i0, Lq, Lk, causal) - t0;
                    nk[r] = n < t1 - t0 ? n : t1 - t0;   /* <= 0: the row sees no key of this tile */
                    orow[r] = r < rows && out ? out + (i0 + r) * rs[3] : NULL;
                    qrow[r] = r < rows && outq ? outq + (i0 + r) * rs[3] : NULL;
                }
                const int64_t nk_max = nk[rows - 1];   /* the last row's */
                float *m = w->m + (i0 - c0), *l = w->l + (i0 - c0);
                kn->exp_rows(e, ldT, nk, nk_max, first, m, l, alpha);
                for (int64_t r = 0; r < qb; r++) inv[r] = 1.0f / l[r];
                kn->pv_rows(e, ldT, w->vp + t0 * ldV, ldV, nk_max, Dh, alpha, w->o + (i0 - c0) * ldV, first,
                            final, inv, orow, qrow, qp);
            }
        }
    }
}
#endif

int fp_attention(const float *q, const float *k, const float *v, const int32_t *cu_q,
                 const int32_t *cu_k, int64_t B, int64_t H, int64_t Hkv, int64_t Dh, int causal,
                 float scale, const int64_t rs[4], float *out, uint8_t *outq, const fp_attn_u8 *qp,
                 int isa, int nthreads)
{
    int64_t lq_max, lk_max;
    const int rc = scan_pairs(cu_q, cu_k, B, causal, INT64_MAX, &lq_max, &lk_max);
    if (rc != FP_OK) return rc;
    if (!FP_X86) isa = FDB_ISA_GENERIC;
    const int64_t ldS = (lk_max + KB - 1) / KB * KB, ldV = (Dh + 15) / 16 * 16;
    const int64_t ldT = ldS < KEY_TILE ? ldS : KEY_TILE;
    /* attn_scratch, sized for every pair (the 16-lane sizes hold the 8-lane layouts): K^T [ldS, Dh],
     * the V panel [lk_max, ldV], the scores of chunk_rows(ldT') rows for every pair's ldT' <= ldT (at
     * most SCORE_FLOATS + QB ldT floats), the online-softmax state of as many rows (at most
     * SCORE_FLOATS / KB8 + QB of them; o only with more than one key tile). Generic: s [KEY_TILE], o [Dh]. */
    const int avx = isa == FDB_ISA_AVX512 || isa == FDB_ISA_AVX2;
    const int64_t state_rows = SCORE_FLOATS / KB8 + QB;
    size_t bytes[6] = {
        avx ? (size_t)(ldS * Dh) : 0,                                                 /* kt */
        avx ? (size_t)(lk_max * ldV) : 0,                                             /* vp */
        avx ? (size_t)(SCORE_FLOATS + QB * ldT) : KEY_TILE,                           /* s */
        avx ? (ldS > KEY_TILE ? (size_t)((SCORE_FLOATS / KEY_TILE + QB) * ldV) : 0) : (size_t)Dh,   /* o */
        avx ? (size_t)state_rows : 0,                                                 /* m */
        avx ? (size_t)state_rows : 0,                                                 /* l */
    };
    for (int a = 0; a < 6; a++)
        bytes[a] = (bytes[a] * sizeof(float) + 63) / 64 * 64 + 64;   /* aligned_alloc wants a multiple of 64; never 0 */
    const int64_t G = H / Hkv;   /* query head h reads kv head h / G (the caller checks H % Hkv == 0) */
    int nt = nthreads < 1 ? 1 : nthreads;
    int err = FP_OK;

#pragma omp parallel num_threads(nt)
    {
        attn_scratch w = {aligned_alloc(64, bytes[0]), aligned_alloc(64, bytes[1]), aligned_alloc(64, bytes[2]),
                          aligned_alloc(64, bytes[3]), aligned_alloc(64, bytes[4]), aligned_alloc(64, bytes[5])};
        const int ok = w.kt && w.vp && w.s && w.o && w.m && w.l;
        if (!ok) {
#pragma omp atomic write
            err = FP_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t task = 0; task < B * H; task++) {
            const attn_pair p = pair_at_gqa(task, H, G, Dh, cu_q, cu_k, q, k, v, rs, out, outq);
            if (p.Lq == 0 || !ok) continue;
#if FP_X86
            if (isa == FDB_ISA_AVX512 || isa == FDB_ISA_AVX2) {
                pair_blocked(isa == FDB_ISA_AVX512 ? &KERNELS_AVX512 : &KERNELS_AVX2, p.q, p.k, p.v, p.Lq,
                             p.Lk, rs, Dh, causal, scale, p.out, p.outq, qp, &w);
                continue;
            }
#endif
            pair_generic(p.q, p.k, p.v, p.Lq, p.Lk, rs, Dh, causal, scale, p.out, p.outq, qp, w.s, w.o);
        }
        free(w.kt);
        free(w.vp);
        free(w.s);
        free(w.o);
        free(w.m);
        free(w.l);
    }
    return err;
}
