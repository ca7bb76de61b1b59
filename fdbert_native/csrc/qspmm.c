/* qspmm.c -- INT8 x 1x4 block-sparse (BSR) SpMM with the fused epilogue of qgemm.c.
 *
 * reference: fdbert/reference/qlinear.py (1x4 BSR weights), fdbert/blocksparse.py · tests: spec_tests/test_native_qgemm.py, spec_tests/test_native_qspmm_multi.py
 *
 *   out[m, n] = epilogue( sum_{b: indptr[n] <= b < indptr[n+1]} sum_i data[b][i] * x[m, 4*indices[b] + i] )
 *
 * Design ("transposed" like Fast DistilBERT's VNNI kernel, sec. 3.2, but without building 4x4
 * tiles): per call, x u8 [M, K] is repacked to xt u8 [Kg][Mp][4] (Kg = ceil(K/4), Mp = M rounded
 * up to 16, zero padded). A nonzero 1x4 block (row n, block column j) is then ONE vpdpbusd lane
 * pattern: broadcast its 4 weight bytes and multiply against xt[j][m0 : m0+16], 16 tokens x 4 k
 * in one contiguous 64-byte load. Each output channel n walks only its own nonzero blocks, so
 * the work is exactly nnz * M * 4 MACs whatever the sparsity pattern (no 4x4-tile fill-in), and
 * the accumulators come out token-major per channel, in a channel x tile-tokens int32 buffer. On
 * AVX-512 the epilogue runs there, one channel per vector (qg_epilogue_channels), and 16x16 blocks
 * are then transposed into output rows; other ISAs transpose first and take the row epilogue.
 *
 * Kernel versions (qspmm_tile.inc compiled per ISA):
 *   generic     plain C over the BSR arrays and the original x (the oracle for the SIMD paths)
 *   avx2        x widened to int16: 4 tokens per vector, vpmaddwd, 16-token tiles (qspmm_tile.inc)
 *   avx2_vnni   8 tokens per vector, VEX vpdpbusd
 *   avx512      x widened to int16: 8 tokens per vector, vpmaddwd, 32-token tiles
 *   avx512vnni  16 tokens per vector, vpdpbusd, 64 tokens x 2 accumulator sets per channel
 *
 * Threads: (token tile, 32-channel group) pairs, token-major static order; K never split.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <immintrin.h>

#include "qgemm.h"
#include "qgemm_internal.h"
#include "fp32_vecmath.h"

int qg_bsr_validate(const int32_t *indices, const int32_t *indptr, int64_t N, int64_t K,
                    int64_t nnz)
{
    const int64_t Kg = (K + 3) / 4;
    if (indptr[0] != 0 || indptr[N] != nnz) return QG_EBADINDEX;
    for (int64_t n = 0; n < N; n++)
        if (indptr[n + 1] < indptr[n]) return QG_EBADINDEX;
    for (int64_t b = 0; b < nnz; b++)
        if (indices[b] < 0 || indices[b] >= Kg) return QG_EBADINDEX;
    return QG_OK;
}

/* ---------------------------------------------------------------- generic */

int64_t qg_bsr_n_chunks(int64_t K)
{
    return ((K + 3) / 4 + QG_SP_KC - 1) / QG_SP_KC;
}

int64_t qg_bsr_pack_cptr(const int32_t *indices, const int32_t *indptr, int64_t N, int64_t K,
                         int32_t *cptr)
{
    const int64_t S = qg_bsr_n_chunks(K) + 1;
    memset(cptr, 0, (size_t)(N * S + 1) * sizeof(int32_t));
    for (int64_t n = 0; n < N; n++)   /* count blocks per run into the slot after its start ... */
        for (int32_t b = indptr[n]; b < indptr[n + 1]; b++) cptr[n * S + 1 + indices[b] / QG_SP_KC]++;
    for (int64_t n = 0; n < N; n++) {  /* ... pad each count to QG_SP_UNROLL, prefix-sum */
        if (n > 0) cptr[n * S] = cptr[n * S - 1];
        for (int64_t kc = 0; kc + 1 < S; kc++) {
            const int32_t c = cptr[n * S + kc + 1];
            cptr[n * S + kc + 1] = cptr[n * S + kc] + (c + QG_SP_UNROLL - 1) / QG_SP_UNROLL * QG_SP_UNROLL;
        }
    }
    return N > 0 ? cptr[N * S - 1] : 0;
}

int qg_bsr_pack_blk(const int8_t *data, const int32_t *indices, const int32_t *indptr, int64_t N,
                    int64_t K, const int32_t *cptr, int32_t *blk)
{
    const int64_t S = qg_bsr_n_chunks(K) + 1;
    int32_t *cur = malloc((size_t)(N * S + 1) * sizeof(int32_t));   /* next free slot per run */
    if (!cur) return QG_ENOMEM;
    memcpy(cur, cptr, (size_t)(N * S + 1) * sizeof(int32_t));
    for (int64_t n = 0; n < N; n++)
        for (int32_t b = indptr[n]; b < indptr[n + 1]; b++) {
            int32_t *dst = blk + 2 * (int64_t)cur[n * S + indices[b] / QG_SP_KC]++;
            dst[0] = indices[b];
            dst[1] = qg_load_i32(data + 4 * (int64_t)b);
        }
    free(cur);
    return QG_OK;
}

/* ---------------------------------------------------------------- generic */

static void spmm_generic(const uint8_t *x__mk, int64_t M, int64_t K, const int32_t *blk,
                         const int32_t *cptr, int64_t N, const qg_epilogue *ep, int nthreads)
{
    const int64_t S = qg_bsr_n_chunks(K) + 1;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t m = 0; m < M; m++) {
        int32_t acc[16];
        for (int64_t n0 = 0; n0 < N; n0 += 16) {
            const int64_t nch = N - n0 < 16 ? N - n0 : 16;
            for (int64_t c = 0; c < nch; c++) {   /* all runs of channel n0 + c are contiguous */
                int32_t s = 0;
                for (int32_t b = cptr[(n0 + c) * S]; b < cptr[(n0 + c) * S + S - 1]; b++) {
                    int8_t w[4];
                    memcpy(w, &blk[2 * (int64_t)b + 1], 4);
                    for (int64_t i = 0, k = 4 * (int64_t)blk[2 * (int64_t)b]; i < 4 && k < K; i++, k++)
                        s += (int32_t)x__mk[m * K + k] * (int32_t)w[i];
                }
                acc[c] = s;
            }
            qg_epilogue_row(acc, m, n0, nch, N, ep, FDB_ISA_GENERIC);
        }
    }
}

/* ---------------------------------------------------------------- SIMD tiles per ISA */

#define QG_SP_MV 4   /* token vectors per tile, every path: TM = MV * LANES tokens */
#define QG_TEMPLATE "qspmm_tile.inc"
#include "qgemm_isas.inc"

static const qg_sparse_kernel *sparse_kernel_for(int isa)
{
    switch (isa) {
#define QG_SPARSE_CASE(sfx, id) case FDB_ISA_##id: return &spmm_kernel_##sfx;
    QG_SIMD_PATHS(QG_SPARSE_CASE)
#undef QG_SPARSE_CASE
    default: return NULL;
    }
}

/* ---------------------------------------------------------------- T -> output rows */

/* dst[j][i] = src[i][j] for a 16x16 block of 4-byte words; row strides in BYTES (so it also
 * transposes u8 activations viewed as 4-byte groups, with any K). The generic twin: */
static void transpose16_generic(const void *src, int64_t lds, void *dst, int64_t ldd)
{
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            memcpy((char *)dst + j * ldd + 4 * i, (const char *)src + i * lds + 4 * j, 4);
}

/* The same in registers (fdb_transpose16, csrc/fp32_vecmath.h): row j of the result goes to out[j]. */
__attribute__((target("avx512f"), always_inline))
static inline void transpose16_regs_avx512(const void *src, int64_t lds, __m512i out[16])
{
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps((const char *)src + i * lds);
    fdb_transpose16(r);
    for (int j = 0; j < 16; j++) out[j] = _mm512_castps_si512(r[j]);
}

__attribute__((target("avx512f")))
static void transpose16_avx512(const void *src, int64_t lds, void *dst, int64_t ldd)
{
    __m512i rows[16];
    transpose16_regs_avx512(src, lds, rows);
    for (int j = 0; j < 16; j++) _mm512_storeu_si512((char *)dst + j * ldd, rows[j]);
}

/* A 16-channel x 16-token block of T after qg_epilogue_channels (float bits or u8 codes) into
 * output rows m .. m+15, columns n .. n+15: the transpose, then the residual add (f32) or the
 * narrowing to bytes (u8) on the way out. */
__attribute__((target("avx512f")))
static void transpose16_store_avx512(const int32_t *src, int64_t lds, const qg_epilogue *ep,
                                     int64_t m, int64_t n, int64_t N)
{
    __m512i rows[16];
    transpose16_regs_avx512(src, lds, rows);
    for (int j = 0; j < 16; j++) {
        const int64_t o = (m + j) * N + n;
        if (ep->out_kind == QG_OUT_U8) {
            _mm_storeu_si128((__m128i *)((uint8_t *)ep->out + o), _mm512_cvtepi32_epi8(rows[j]));
        } else {
            __m512 y = _mm512_castsi512_ps(rows[j]);
            if (ep->residual) y = _mm512_add_ps(y, _mm512_loadu_ps(ep->residual + o));
            _mm512_storeu_ps((float *)ep->out + o, y);
        }
    }
}

/* The same with AVX2: four 8x8 transposes in registers (unpack, shuffle, 128-bit permute). */
__attribute__((target("avx2")))
static void transpose16_avx2(const void *src, int64_t lds, void *dst, int64_t ldd)
{
    for (int bi = 0; bi < 2; bi++)
        for (int bj = 0; bj < 2; bj++) {
            __m256 r[8], t[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps((const float *)((const char *)src + (8 * bi + i) * lds) + 8 * bj);
            for (int i = 0; i < 4; i++) {
                t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            for (int i = 0; i < 2; i++) {
                r[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
                r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
                r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
                r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
            }
            for (int j = 0; j < 4; j++) {   /* rows j and j + 4 of the result: 128-bit halves */
                t[j] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x20);
                t[j + 4] = _mm256_permute2f128_ps(r[j], r[j + 4], 0x31);
            }
            for (int j = 0; j < 8; j++) _mm256_storeu_ps((float *)((char *)dst + (8 * bj + j) * ldd) + 8 * bi, t[j]);
        }
}

typedef void (*transpose_fn)(const void *, int64_t, void *, int64_t);

/* xt [Kg][TM][4] = the TM-token tile of x starting at row m0 (rows < TM of them valid),
 * zero past K and past M: 16x16 word transposes where whole, the generic byte loop for the rest. */
static void repack_tile(const uint8_t *x__mk, int64_t K, int64_t m0, int64_t rows, int64_t TM,
                        uint8_t *xt, transpose_fn transpose)
{
    const int64_t Kw = K / 4, Kg = (K + 3) / 4;   /* whole 4-byte groups, all groups */
    if (rows < TM || (K & 3)) memset(xt, 0, (size_t)(Kg * TM * 4));
    const int64_t r16 = rows / 16 * 16, g16 = Kw / 16 * 16;
    for (int64_t r0 = 0; r0 < r16; r0 += 16)
        for (int64_t g0 = 0; g0 < g16; g0 += 16)
            transpose(x__mk + (m0 + r0) * K + 4 * g0, K, xt + (g0 * TM + r0) * 4, TM * 4);
    for (int64_t t = 0; t < rows; t++) {
        const uint8_t *src = x__mk + (m0 + t) * K;
        for (int64_t g = t < r16 ? g16 : 0; g < Kw; g++) memcpy(xt + (g * TM + t) * 4, src + 4 * g, 4);
        if (K & 3) memcpy(xt + (Kw * TM + t) * 4, src + 4 * Kw, (size_t)(K & 3));
    }
}

enum { QG_SP_MAX_TOKENS = 64, QG_SP_GROUP = 32 };   /* tile tokens (max), channels per task */

/* The tile of the paths without VNNI, in place: xt u8 [Kg][TM][4] -> int16 [Kg][TM][4] (zero
 * extended). Backwards, so no byte is overwritten before it is read; the buffer has room. */
static void widen_tile(uint8_t *xt, int64_t n)
{
    int16_t *w = (int16_t *)xt;
    for (int64_t i = n - 1; i >= 0; i--) w[i] = xt[i];
}

/* ---------------------------------------------------------------- driver */

/* Row m, columns n .. n+len of the output from values that went through the epilogue already
 * (qg_epilogue_channels; or raw s32): float bits plus the residual, u8 codes, or int32. */
static void store_final(const int32_t *src, int64_t m, int64_t n, int64_t len, int64_t N,
                        const qg_epilogue *ep)
{
    for (int64_t i = 0; i < len; i++) {
        const int64_t o = m * N + n + i;
        if (ep->out_kind == QG_OUT_S32) {
            ((int32_t *)ep->out)[o] = src[i];
        } else if (ep->out_kind == QG_OUT_U8) {
            ((uint8_t *)ep->out)[o] = (uint8_t)src[i];
        } else {
            float y;
            memcpy(&y, src + i, 4);
            if (ep->residual) y = y + ep->residual[o];
            ((float *)ep->out)[o] = y;
        }
    }
}

/* One task: token tile mt (its repacked xt tile) x the QG_SP_GROUP channels from g0, through the
 * epilogue into out. */
static void spmm_task(const qg_sparse_kernel *sk, const uint8_t *xt, int64_t mt, int64_t g0,
                      int64_t M, int64_t Kg, int64_t TM, int64_t n_kc, const int32_t *blk,
                      const int32_t *cptr, int64_t N, const qg_epilogue *ep, int isa,
                      transpose_fn transpose)
{
    const int64_t S = n_kc + 1, m0 = mt * TM;
    const int64_t rows = M - m0 < TM ? M - m0 : TM;
    const int64_t gend = g0 + QG_SP_GROUP < N ? g0 + QG_SP_GROUP : N;
    const uint8_t *xtile = xt + mt * Kg * TM * 4 * sk->xbytes;
    int32_t T[QG_SP_GROUP * QG_SP_MAX_TOKENS], R[16 * QG_SP_GROUP];   /* T [channel][token] */
    if (n_kc == 0) memset(T, 0, sizeof(T));
    for (int64_t kc = 0; kc < n_kc; kc++)      /* accumulate chunk by chunk ... */
        for (int64_t n0 = g0; n0 < gend; n0 += 16)
            sk->fn(xtile, blk, cptr + n0 * S + kc, S, (int)(gend - n0 < 16 ? gend - n0 : 16),
                   kc > 0, T + (n0 - g0) * TM);
    /* ... then T [channel][token] -> output rows, 16 tokens at a time. On AVX-512 the epilogue
     * runs on T itself, one channel per vector (its parameters broadcast once), and whole 16x16
     * blocks are transposed straight into the output (s32 too); otherwise, and for the partial
     * blocks at the edges, R [16 tokens][group] takes the transposed block first. */
    const int64_t gw = gend - g0;   /* channels in this group */
    if (gw % 16) memset(T + gw * TM, 0, (size_t)((16 - gw % 16) * TM) * sizeof(int32_t));
    const int chan = qg_epilogue_channels(T, TM, g0, gw, TM, ep, isa);
    for (int64_t v = 0; v < rows; v += 16) {
        const int64_t rv = rows - v < 16 ? rows - v : 16;
        const int64_t cs = rv == 16 ? gw / 16 * 16 : 0;   /* columns from cs on go through R */
        for (int64_t c0 = 0; c0 < gw; c0 += 16) {
            if (c0 < cs && ep->out_kind == QG_OUT_S32)
                transpose(T + c0 * TM + v, TM * 4, (int32_t *)ep->out + (m0 + v) * N + g0 + c0, N * 4);
            else if (c0 < cs && chan)
                transpose16_store_avx512(T + c0 * TM + v, TM * 4, ep, m0 + v, g0 + c0, N);
            else
                transpose(T + c0 * TM + v, TM * 4, R + c0, QG_SP_GROUP * 4);
        }
        if (ep->out_kind == QG_OUT_S32 || chan) {   /* R holds final values: copy the edge part */
            for (int64_t r = 0; r < rv && cs < gw; r++)
                store_final(R + r * QG_SP_GROUP + cs, m0 + v + r, g0 + cs, gw - cs, N, ep);
        } else {
            qg_epilogue_rows(R, QG_SP_GROUP, m0 + v, rv, g0, gw, N, ep, isa);
        }
    }
}

int qg_spmm(const uint8_t *x__mk, int64_t M, int64_t K, const int32_t *blk, const int32_t *cptr,
            int64_t N, const qg_epilogue *ep, int isa, int nthreads)
{
    return qg_spmm_multi(x__mk, M, K, 1, &blk, &cptr, &N, ep, isa, nthreads);
}

enum { QG_SP_MAX_WEIGHTS = 8 };

int qg_spmm_multi(const uint8_t *x__mk, int64_t M, int64_t K, int nw, const int32_t *const *blks,
                  const int32_t *const *cptrs, const int64_t *Ns, const qg_epilogue *eps, int isa,
                  int nthreads)
{
    if (isa < 0 || isa >= FDB_ISA_AMX) return QG_EBADISA;
    if (nw < 1 || nw > QG_SP_MAX_WEIGHTS) return QG_EBADINDEX;
    if (M <= 0) return QG_OK;
    if (nthreads <= 0) nthreads = qg_default_threads();
    if (isa == FDB_ISA_GENERIC) {
        for (int w = 0; w < nw; w++)
            if (Ns[w] > 0) spmm_generic(x__mk, M, K, blks[w], cptrs[w], Ns[w], &eps[w], nthreads);
        return QG_OK;
    }
    const qg_sparse_kernel *sk = sparse_kernel_for(isa);

    /* xt[mt][g][t][i] = x[mt*TM + t, 4g + i]: per token tile of TM tokens, its K*TM bytes
     * contiguous; zero past K and past M. The kernel walks it one K chunk (QG_SP_KC = 256 block
     * columns: 64 KB at TM = 64, all of K = 768) at a time, with the 8 KB accumulator tile T of a
     * 32-channel group. Fewer, longer runs beat an L1-sized chunk: each run costs its setup, its
     * accumulator reduction and a mispredicted loop exit (docs/kernels.md: chunk sizes tried).
     * Several weights reading the same x (Q, K and V) share one repack and one parallel region. */
    const int64_t TM = sk->tokens, Kg = (K + 3) / 4, n_mt = (M + TM - 1) / TM;
    const int64_t n_kc = qg_bsr_n_chunks(K);
    int64_t g_start[QG_SP_MAX_WEIGHTS + 1] = {0};   /* channel groups of weight w: [g_start[w], g_start[w+1]) */
    for (int w = 0; w < nw; w++) g_start[w + 1] = g_start[w] + (Ns[w] + QG_SP_GROUP - 1) / QG_SP_GROUP;
    const int64_t n_g = g_start[nw];
    if (n_g == 0) return QG_OK;
    const int64_t tile_bytes = Kg * TM * 4 * sk->xbytes;
    uint8_t *xt = aligned_alloc(64, (size_t)((n_mt * tile_bytes + 64 + 63) / 64 * 64));
    if (!xt) return QG_ENOMEM;

    const transpose_fn transpose = isa >= FDB_ISA_AVX512 ? transpose16_avx512
                                   : isa >= FDB_ISA_AVX2   ? transpose16_avx2
                                                          : transpose16_generic;
#define QG_SP_TASK(mt, g)                                                                        \
    do {                                                                                         \
        int w_ = 0;                                                                              \
        while ((g) >= g_start[w_ + 1]) w_++;                                                     \
        spmm_task(sk, xt, (mt), ((g) - g_start[w_]) * QG_SP_GROUP, M, Kg, TM, n_kc, blks[w_],    \
                  cptrs[w_], Ns[w_], &eps[w_], isa, transpose);                                  \
    } while (0)
#define QG_SP_REPACK(mt)                                                                         \
    do {                                                                                         \
        uint8_t *tile_ = xt + (mt) * tile_bytes;                                                 \
        repack_tile(x__mk, K, (mt) * TM, M - (mt) * TM < TM ? M - (mt) * TM : TM, TM, tile_,      \
                    transpose);                                                                  \
        if (sk->xbytes == 2) widen_tile(tile_, Kg * TM * 4);                                     \
    } while (0)
    /* One parallel region (each region start and barrier costs a wake-up of the sleeping workers:
     * tens of us on a VM with OMP_WAIT_POLICY=PASSIVE, as much as a whole M = 128 SpMM; fdbert's
     * default short spin hides most of it). When the
     * token tiles split evenly over the threads (M = 128, 2 threads: one tile each), every thread
     * repacks its own tiles and computes all their channel groups: no barrier at all. Otherwise
     * repack, barrier, then the (tile, group) tasks in token-major static order. */
    const int owner = n_mt >= nthreads && (n_mt % nthreads == 0 || n_mt >= 4 * nthreads);
#pragma omp parallel num_threads(nthreads)
    {
        if (owner) {
#pragma omp for schedule(static)
            for (int64_t mt = 0; mt < n_mt; mt++) {
                QG_SP_REPACK(mt);
                for (int64_t g = 0; g < n_g; g++) QG_SP_TASK(mt, g);
            }
        } else {
#pragma omp for schedule(static)
            for (int64_t mt = 0; mt < n_mt; mt++) QG_SP_REPACK(mt);
#pragma omp for schedule(static)
            for (int64_t t = 0; t < n_mt * n_g; t++) QG_SP_TASK(t / n_g, t % n_g);
        }
    }
#undef QG_SP_TASK
#undef QG_SP_REPACK
    free(xt);
    return QG_OK;
}
