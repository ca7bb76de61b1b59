/* attention.c -- packed variable-length scaled dot-product attention (see attention.h). */
#include "attention.h"

#include <stdlib.h>

#include "fp32_ops.h"

#if defined(__x86_64__)
#define FP_X86 1
#include "fp32_vecmath.h"
#else
#define FP_X86 0
#endif

#define KB 16   /* keys per score column block (one zmm) */
#define QB 8    /* queries per score and P V block */
/* K and V rows of one head lie H*Dh floats apart (3 KB in DistilBERT): farther than the hardware
 * streamer follows within a page, so the first pass over them waits on DRAM without this. */
#define PREFETCH_ROWS 16

/* Keys query i (0-based within its sequence) may see: all Lk, or j <= i + Lk - Lq when causal. */
static inline int64_t visible_keys(int64_t i, int64_t Lq, int64_t Lk, int causal)
{
    if (!causal) return Lk;
    int64_t lim = i + Lk - Lq + 1;
    return lim < Lk ? lim : Lk;
}

/* ---------------------------------------------------------------- generic: one query at a time */
static void pair_generic(const float *q, const float *k, const float *v, int64_t Lq, int64_t Lk,
                         int64_t rs, int64_t Dh, int causal, float scale, float *out, float *s)
{
    /* q, k, v, out point at the pair's first row and head; consecutive rows are rs floats apart. */
    for (int64_t i = 0; i < Lq; i++) {
        const float *qi = q + i * rs;
        int64_t nk = visible_keys(i, Lq, Lk, causal);
        for (int64_t j = 0; j < nk; j++) {
            const float *kj = k + j * rs;
            float dot = 0.0f;
            for (int64_t d = 0; d < Dh; d++) dot += qi[d] * kj[d];
            s[j] = dot * scale;
        }
        fp_softmax_row_generic(s, nk);
        float *oi = out + i * rs;
        for (int64_t d = 0; d < Dh; d++) oi[d] = 0.0f;
        for (int64_t j = 0; j < nk; j++) {
            const float *vj = v + j * rs;
            for (int64_t d = 0; d < Dh; d++) oi[d] += s[j] * vj[d];
        }
    }
}

#if FP_X86
/* ---------------------------------------------------------------- AVX-512: blocked */

/* kt[(c * Dh + d) * KB + jj] = k[c * KB + jj, d], zero for keys >= Lk: column block c of K^T is
 * Dh contiguous 64-byte lines, read in order by the score loop. */
static inline void prefetch_row(const float *row, int64_t Dh, int to_l1)
{
    for (int64_t d = 0; d < Dh; d += 16)
        _mm_prefetch((const char *)(row + d), to_l1 ? _MM_HINT_T0 : _MM_HINT_T1);
}

/* Also starts fetching the pair's V and Q rows into L2 (they are read right after), one row of each
 * per key packed, so the misses overlap the packing instead of stalling the FMA loops. */
static void pack_kt(const float *k, const float *v, const float *q, int64_t Lq, int64_t Lk, int64_t rs,
                    int64_t Dh, float *kt)
{
    int64_t nkb = (Lk + KB - 1) / KB;
    for (int64_t c = 0; c < nkb; c++)
        for (int64_t jj = 0; jj < KB; jj++) {
            int64_t j = c * KB + jj;
            float *dst = kt + c * Dh * KB + jj;
            if (j + PREFETCH_ROWS < Lk) prefetch_row(k + (j + PREFETCH_ROWS) * rs, Dh, 1);
            if (j < Lk) prefetch_row(v + j * rs, Dh, 0);
            if (j < Lq) prefetch_row(q + j * rs, Dh, 0);
            if (j < Lk)
                for (int64_t d = 0; d < Dh; d++) dst[d * KB] = k[j * rs + d];
            else
                for (int64_t d = 0; d < Dh; d++) dst[d * KB] = 0.0f;
        }
}

FDB_AVX512_TARGET static inline __mmask16 lanes_mask(int64_t remaining)
{
    return remaining >= 16 ? (__mmask16)0xFFFF : remaining <= 0 ? 0 : (__mmask16)((1u << remaining) - 1u);
}

/* s[r * ldS + c*KB .. +KB] = scale * q_r . K[c*KB .. +KB] for 8 query rows and key blocks c < nkb.
 * Two key blocks per step: 16 independent accumulator chains hide the FMA latency. */
FDB_AVX512_TARGET static void scores_8xN(const float *const qr[QB], const float *kt, int64_t nkb,
                                         int64_t Dh, float scale, float *s, int64_t ldS)
{
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int64_t c = 0; c < nkb; c += 2) {
        const float *kt0 = kt + c * Dh * KB;
        const float *kt1 = c + 1 < nkb ? kt0 + Dh * KB : kt0;   /* odd count: recompute block c */
        __m512 a0[QB], a1[QB];
#pragma GCC unroll 8
        for (int r = 0; r < QB; r++) a0[r] = a1[r] = _mm512_setzero_ps();
        for (int64_t d = 0; d < Dh; d++) {
            __m512 k0 = _mm512_load_ps(kt0 + d * KB), k1 = _mm512_load_ps(kt1 + d * KB);
#pragma GCC unroll 8
            for (int r = 0; r < QB; r++) {
                __m512 qv = _mm512_set1_ps(qr[r][d]);
                a0[r] = _mm512_fmadd_ps(qv, k0, a0[r]);
                a1[r] = _mm512_fmadd_ps(qv, k1, a1[r]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < QB; r++) {
            _mm512_store_ps(s + r * ldS + c * KB, _mm512_mul_ps(a0[r], vscale));
            if (c + 1 < nkb) _mm512_store_ps(s + r * ldS + (c + 1) * KB, _mm512_mul_ps(a1[r], vscale));
        }
    }
}

/* o_r[dc .. dc+32] = sum_{j < nk} p[r * ldS + j] v[j, dc .. dc+32] for 8 rows r (16 accumulator
 * chains), over all channel chunks; rows with orow[r] == NULL are computed and dropped. Rows whose
 * p is zero beyond their own visible keys get exactly the sums they would get alone. */
FDB_AVX512_TARGET static void pv_8xDh(const float *p, int64_t ldS, const float *v, int64_t nk,
                                      int64_t rs, int64_t Dh, float *const orow[QB])
{
    for (int64_t dc = 0; dc < Dh; dc += 32) {
        __mmask16 m0 = lanes_mask(Dh - dc), m1 = lanes_mask(Dh - dc - 16);
        __m512 o0[QB], o1[QB];
#pragma GCC unroll 8
        for (int r = 0; r < QB; r++) o0[r] = o1[r] = _mm512_setzero_ps();
        for (int64_t j = 0; j < nk; j++) {
            _mm_prefetch((const char *)(v + (j + PREFETCH_ROWS) * rs + dc), _MM_HINT_T0);
            _mm_prefetch((const char *)(v + (j + PREFETCH_ROWS) * rs + dc + 16), _MM_HINT_T0);
            __m512 v0 = _mm512_maskz_loadu_ps(m0, v + j * rs + dc);
            __m512 v1 = _mm512_maskz_loadu_ps(m1, v + j * rs + dc + 16);
#pragma GCC unroll 8
            for (int r = 0; r < QB; r++) {
                __m512 pv = _mm512_set1_ps(p[r * ldS + j]);
                o0[r] = _mm512_fmadd_ps(pv, v0, o0[r]);
                o1[r] = _mm512_fmadd_ps(pv, v1, o1[r]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < QB; r++)
            if (orow[r]) {
                _mm512_mask_storeu_ps(orow[r] + dc, m0, o0[r]);
                _mm512_mask_storeu_ps(orow[r] + dc + 16, m1, o1[r]);
            }
    }
}

FDB_AVX512_TARGET static void pair_avx512(const float *q, const float *k, const float *v, int64_t Lq,
                                          int64_t Lk, int64_t rs, int64_t Dh, int causal, float scale,
                                          float *out, float *kt, float *s)
{
    int64_t ldS = (Lk + KB - 1) / KB * KB;   /* score row stride: Lk rounded up to a key block */
    pack_kt(k, v, q, Lq, Lk, rs, Dh, kt);
    for (int64_t i0 = 0; i0 < Lq; i0 += QB) {
        int64_t rows = Lq - i0 < QB ? Lq - i0 : QB;
        const float *qr[QB];
        int64_t nk[QB], nk_max = 0;
        for (int64_t r = 0; r < QB; r++) {
            qr[r] = q + (i0 + (r < rows ? r : 0)) * rs;   /* missing rows repeat row 0, unused */
            nk[r] = r < rows ? visible_keys(i0 + r, Lq, Lk, causal) : 0;
            nk_max = nk[r] > nk_max ? nk[r] : nk_max;
        }
        int64_t nkb = (nk_max + KB - 1) / KB;
        scores_8xN(qr, kt, nkb, Dh, scale, s, ldS);
        for (int64_t r = 0; r < QB; r++) {
            float *sr = s + r * ldS;
            if (nk[r] > 0) fp_softmax_row_avx512(sr, nk[r]);
            for (int64_t j = nk[r]; j < nk_max; j++) sr[j] = 0.0f;   /* masked keys weigh 0 */
        }
        float *orow[QB];
        for (int64_t r = 0; r < QB; r++) orow[r] = r < rows ? out + (i0 + r) * rs : NULL;
        pv_8xDh(s, ldS, v, nk_max, rs, Dh, orow);
    }
}
#endif

int fp_attention(const float *q, const float *k, const float *v, const int32_t *cu_q,
                 const int32_t *cu_k, int64_t B, int64_t H, int64_t Dh, int causal, float scale,
                 float *out, int isa, int nthreads)
{
    int64_t lk_max = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t Lq = cu_q[b + 1] - cu_q[b], Lk = cu_k[b + 1] - cu_k[b];
        if (Lq > 0 && (Lk == 0 || (causal && Lk < Lq))) return FP_ENOKEYS;
        lk_max = Lk > lk_max ? Lk : lk_max;
    }
    if (!FP_X86) isa = FP_ISA_GENERIC;
    int64_t ldS = (lk_max + KB - 1) / KB * KB;
    /* per-thread scratch: AVX-512 needs K^T [ldS, Dh] and 8 score rows; generic one score row */
    size_t kt_bytes = isa == FP_ISA_AVX512 ? (size_t)(ldS * Dh) * sizeof(float) : 0;
    size_t s_bytes = (size_t)((isa == FP_ISA_AVX512 ? QB : 1) * ldS) * sizeof(float);
    kt_bytes = (kt_bytes + 63) / 64 * 64 + 64;   /* aligned_alloc wants a multiple of 64; never 0 */
    s_bytes = (s_bytes + 63) / 64 * 64 + 64;
    int64_t rs = H * Dh;
    int nt = nthreads < 1 ? 1 : nthreads;
    int err = FP_OK;

#pragma omp parallel num_threads(nt)
    {
        float *kt = aligned_alloc(64, kt_bytes), *s = aligned_alloc(64, s_bytes);
        if (!kt || !s) {
#pragma omp atomic write
            err = FP_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t task = 0; task < B * H; task++) {
            int64_t b = task / H, h = task % H;
            int64_t q0 = cu_q[b], Lq = cu_q[b + 1] - q0, k0 = cu_k[b], Lk = cu_k[b + 1] - k0;
            if (Lq == 0 || !kt || !s) continue;
            const float *qb = q + q0 * rs + h * Dh, *kb = k + k0 * rs + h * Dh, *vb = v + k0 * rs + h * Dh;
            float *ob = out + q0 * rs + h * Dh;
#if FP_X86
            if (isa == FP_ISA_AVX512) {
                pair_avx512(qb, kb, vb, Lq, Lk, rs, Dh, causal, scale, ob, kt, s);
                continue;
            }
#endif
            pair_generic(qb, kb, vb, Lq, Lk, rs, Dh, causal, scale, ob, s);
        }
        free(kt);
        free(s);
    }
    return err;
}
