/* qgemm_amx.c -- the dense INT8 GEMM on AMX-INT8 tiles (Sapphire Rapids and later).
 *
 * reference: fdbert/reference/qlinear.py, fdbert/int8.py (matmul_u8s8_s32) · tests: spec_tests/test_native_qgemm_amx.py
 *
 *   out[m, n] = epilogue( sum_k x[m, k] * W[n, k] )      x u8 [M, K], W s8 [N, K] (see qgemm.h)
 *
 * One `tdpbusd tmm_c, tmm_a, tmm_b` adds a 16 x 64 u8 tile A times a 64 x 16 s8 tile B into a
 * 16 x 16 int32 tile C (16,384 exact multiply-adds). B is stored "VNNI style": 16 rows of
 * 16 columns x 4 consecutive k, row kk = k in [4kk, 4kk + 4). That is exactly one 16-channel panel
 * of qg_pack_dense's layout, packed[b][g][c][i] = W[16b + c, 4g + i]: the 16 k-groups g0..g0+15 of
 * panel b are 16 consecutive 64-byte rows. So B tiles load straight from the existing packed
 * weights (stride 64 bytes) -- no second packing -- and A tiles straight from x (stride K).
 *
 * Register blocking: 32 rows x 32 channels = C tiles tmm0..3 (2 x 2), A tiles tmm4..5 (rows 0-15,
 * 16-31), B tiles tmm6..7 (two panels); 4 tdpbusd per 2 A + 2 B loads. Every tile is configured
 * 16 rows x 64 bytes once per thread (palette 1); partial blocks never shrink a tile.
 *
 * A packing: each 32-row block of x is first copied into a 64-byte-aligned per-thread buffer in
 * tile order, a[k / 64][h][r][0:64] = x[m + 16h + r, k : k + 64] (rows past M zero), so an A tile
 * is 1 KB contiguous. x rows of an arbitrary NumPy array start anywhere: a 64-byte tile row that
 * straddles two cache lines costs two, and unaligned A and B made this kernel more than twice as
 * slow (docs/kernels.md). The copy costs a few % of the block's tdpbusd;
 * the packed weights are 64-byte aligned by their allocator (fdbert_native._qgemm.pack_dense).
 * Loop order inside a thread's (M chunk, N chunk): 32-row blocks outer (the packed A block stays
 * in L1), 32-channel blocks inner (the weight chunk, <= 1 MB, stays in L2).
 *   * M tail (< 32 rows): the packed block's missing rows are zero; their results are dropped.
 *   * N tail: packed panels are zero-padded to 16 channels; a missing second panel re-reads the
 *     first (dropped). Only the valid columns reach the epilogue.
 *   * K tail (K % 64 columns): AMX covers k < K64 = 64 floor(K/64); the rest is added to the
 *     stored int32 tile with 512-bit vpdpbusd (k-groups of 4) and plain C (K % 4), reading x in
 *     bounds. Integer addition in any order gives the same int32, so the sums stay exact.
 * The stored 32 x 32 int32 tile then goes through qg_epilogue_rows with the avx512vnni isa: the
 * very code the avx512vnni path runs on its accumulators, column chunks aligned alike (both start
 * at multiples of 16 channels), so float32 and u8 outputs are bit-identical to that path's.
 *
 * Epilogue overlap: with GELU the epilogue of a 32 x 32 block takes longer than its tdpbusd, and
 * the tile unit idles meanwhile. So blocks are stored into two alternating buffers and the GELU
 * epilogue of the previous block runs in row slices between the tdpbusd of the current one (the
 * tile unit and the vector units work at the same time). Cheap epilogues (no GELU) gained nothing
 * that way and run whole.
 *
 * Threads: the same (M chunk, N chunk) static schedule as qg_gemm; each OpenMP thread loads the
 * tile configuration at the start of the parallel region and releases the tiles at its end.
 * K is never split, so every thread count gives the same bits.
 *
 * The inline-asm tile intrinsics of gcc 12 declare no memory operands, so the compiler is told
 * about the memory they read and write with explicit barriers (QG_AMX_BARRIER).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "qgemm.h"
#include "qgemm_amx.h"
#include "qgemm_internal.h"

#define QG_AMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni")))
#define QG_AMX_BARRIER() __asm__ __volatile__("" ::: "memory")

enum {
    QG_AMX_MR = 32,   /* rows per register block: 2 A tiles of 16 rows */
    QG_AMX_NB = 2,    /* 16-channel panels per register block: 2 B tiles */
    QG_AMX_KT = 64,   /* k per tdpbusd */
};

/* A stored 32 x 32 int32 block (row stride 32) whose epilogue has run for rows < done. */
typedef struct {
    const int32_t *tile;
    int64_t m, n0, ncols;
    int rows, done;
} amx_pending;

/* Run the epilogue of p's rows done .. upto - 1 (no-op when there are none). */
static void amx_pending_run(amx_pending *p, int upto, int64_t N, const qg_epilogue *ep)
{
    if (upto > p->rows) upto = p->rows;
    if (upto <= p->done) return;
    qg_epilogue_rows(p->tile + p->done * 32, 32, p->m + p->done, upto - p->done, p->n0, p->ncols,
                     N, ep, FDB_ISA_AVX512VNNI);
    p->done = upto;
}

/* tile[r][c] (row stride 32) = sum_{k < K64} a[r][k] * W[n0 + c, k], r < 32, c < 32:
 * a the packed A block (see above), w0 / w1 the two packed panels (stride 64 bytes per k-group).
 * pf0 / pf1 (or NULL): the next block's panels, prefetched into L2 step by step. On the first
 * 32-row block of a weight chunk the panels come from L3 (in a forward pass nothing of a layer's
 * weights is in L2 yet), and the tile loads -- tile registers are not renamed -- wait for them
 * (figures: docs/benchmarks.md).
 * Between k-steps it runs slices of the previous block's epilogue (`prev`, finished on return):
 * the tile unit and the vector units work at the same time, instead of the tile unit idling
 * through every epilogue (the GELU->u8 one takes longer than the block's tdpbusd). */
QG_AMX_TARGET
static void amx_block(const uint8_t *a, int64_t K64, const int8_t *w0, const int8_t *w1,
                      int32_t *tile, amx_pending *prev, int64_t N, const qg_epilogue *ep,
                      const int8_t *pf0, const int8_t *pf1)
{
    QG_AMX_BARRIER();   /* a was just written by amx_pack_a */
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const int64_t steps = K64 / QG_AMX_KT;
    if (!ep->gelu) amx_pending_run(prev, prev->rows, N, ep);   /* cheap: no need to interleave */
    for (int64_t s = 0, k = 0; s < steps; s++, k += QG_AMX_KT) {
        /* A tiles of step k: 2 KB at a + 32 k; k-groups k/4 .. k/4 + 15 of a panel: byte 16 k */
        _tile_loadd(4, a + 32 * k, 64);
        _tile_loadd(5, a + 32 * k + 1024, 64);
        _tile_loadd(6, w0 + 16 * k, 64);
        _tile_loadd(7, w1 + 16 * k, 64);
        if (pf0)   /* the next block's panels, step k, into L2 */
            for (int l = 0; l < 1024; l += 64) {
                _mm_prefetch((const char *)pf0 + 16 * k + l, _MM_HINT_T1);
                _mm_prefetch((const char *)pf1 + 16 * k + l, _MM_HINT_T1);
            }
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 7);
        if (ep->gelu) amx_pending_run(prev, (int)((2 * s + 1) * prev->rows / (2 * steps)), N, ep);
        _tile_dpbusd(2, 5, 6);
        _tile_dpbusd(3, 5, 7);
        if (ep->gelu) amx_pending_run(prev, (int)((2 * s + 2) * prev->rows / (2 * steps)), N, ep);
    }
    amx_pending_run(prev, prev->rows, N, ep);
    QG_AMX_BARRIER();   /* the epilogue has read prev's tile: tile may be that buffer next time */
    _tile_stored(0, tile, 32 * sizeof(int32_t));
    _tile_stored(1, tile + 16, 32 * sizeof(int32_t));
    _tile_stored(2, tile + 16 * 32, 32 * sizeof(int32_t));
    _tile_stored(3, tile + 16 * 32 + 16, 32 * sizeof(int32_t));
    QG_AMX_BARRIER();   /* the tile is read next */
}

/* a[k / 64][h][r][0:64] = x[16h + r, k : k + 64] for k < K64, rows r + 16h >= rows zero. */
static void amx_pack_a(const uint8_t *x, int64_t K, int64_t K64, int rows, uint8_t *a)
{
    for (int64_t k = 0; k < K64; k += QG_AMX_KT)
        for (int r = 0; r < QG_AMX_MR; r++) {
            uint8_t *dst = a + 32 * k + 64 * r;   /* (h, r % 16) = row r of the 32 */
            if (r < rows) memcpy(dst, x + r * K + k, QG_AMX_KT);
            else memset(dst, 0, QG_AMX_KT);
        }
}

/* Add the K tail k in [K64, K) to tile rows r < rows (row r of x at xr[r], full K). */
QG_AMX_TARGET
static void amx_block_ktail(const uint8_t *const *xr, int rows, int64_t K64, int64_t K,
                            const int8_t *const *wb, int32_t *tile)
{
    const int64_t kfull = K & ~(int64_t)3;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < QG_AMX_NB; j++) {
            int32_t *t = tile + r * 32 + j * 16;
            __m512i acc = _mm512_loadu_si512(t);
            for (int64_t k = K64; k < kfull; k += 4)   /* packed[b][k/4] at byte 16 k */
                acc = _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(qg_load_i32(xr[r] + k)),
                                          _mm512_loadu_si512(wb[j] + 16 * k));
            _mm512_storeu_si512(t, acc);
            for (int64_t k = kfull; k < K; k++) {     /* K % 4, as dense_tile_cols_generic */
                const int32_t xv = xr[r][k];
                const int8_t *w = wb[j] + (k / 4) * 64 + (k % 4);
                for (int c = 0; c < 16; c++) t[c] += xv * (int32_t)w[4 * c];
            }
        }
}

QG_AMX_TARGET
static void amx_begin(void)
{
    _tile_loadconfig(&QG_AMX_CFG);
}

QG_AMX_TARGET
static void amx_end(void)
{
    _tile_release();
}

static int amx_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int qg_gemm_amx(const uint8_t *x__mk, int64_t M, int64_t K, const int8_t *packed, int64_t N,
                const qg_epilogue *ep, int nthreads)
{
    if (M <= 0 || N <= 0) return QG_OK;
    const int mr = QG_AMX_MR, nb = QG_AMX_NB;
    const int64_t Nb = (N + 15) / 16, wstride = ((K + 3) / 4) * 64;
    const int64_t K64 = K / QG_AMX_KT * QG_AMX_KT;
    if (nthreads <= 0) nthreads = qg_default_threads();
    /* The chunking of qg_gemm (qg_dense_chunks) */
    int64_t MC, NCB;
    qg_dense_chunks(M, K, Nb, wstride, mr, nb, nthreads, &MC, &NCB);
    const int64_t n_mc = (M + MC - 1) / MC, n_nc = (Nb + NCB - 1) / NCB;

    /* Per-thread packed A blocks: 32 rows x K64 bytes, 64-byte aligned. */
    const int64_t padsize = ((int64_t)mr * (K64 > 0 ? K64 : 1) + 63) / 64 * 64;
    uint8_t *pads = (uint8_t *)aligned_alloc(64, (size_t)(padsize * nthreads));
    if (!pads) return QG_ENOMEM;

#pragma omp parallel num_threads(nthreads)
    {
        uint8_t *apack = pads + padsize * amx_thread_num();
        /* two stored blocks: the one being computed and the one whose epilogue runs meanwhile */
        int32_t tiles[2][QG_AMX_MR * QG_AMX_NB * 16] __attribute__((aligned(64)));
        amx_pending prev = {tiles[1], 0, 0, 0, 0, 0};   /* nothing pending yet */
        int cur = 0;
        amx_begin();
#pragma omp for schedule(static)
        for (int64_t t = 0; t < n_mc * n_nc; t++) {
            const int64_t mc = t % n_mc;
            const int64_t bbeg = (t / n_mc) * NCB;
            const int64_t bend = bbeg + NCB < Nb ? bbeg + NCB : Nb;
            const int64_t mend = (mc + 1) * MC < M ? (mc + 1) * MC : M;
            for (int64_t m = mc * MC; m < mend; m += mr) {   /* 32-row blocks */
                const int rows = mend - m < mr ? (int)(mend - m) : mr;
                amx_pack_a(x__mk + m * K, K, K64, rows, apack);
                for (int64_t b0 = bbeg; b0 < bend; b0 += nb) {   /* 32-channel blocks */
                    const int64_t nvalid = bend - b0 < nb ? bend - b0 : nb;
                    const int64_t n0 = b0 * 16, ncols = N - n0 < nvalid * 16 ? N - n0 : nvalid * 16;
                    const int8_t *wb[QG_AMX_NB];
                    for (int j = 0; j < nb; j++)   /* a missing panel repeats the last; dropped */
                        wb[j] = packed + (b0 + (j < nvalid ? j : nvalid - 1)) * wstride;
                    /* first pass over this weight chunk: fetch the next panels from L3 meanwhile */
                    const int fetch = m == mc * MC && b0 + 2 * nb <= bend;
                    amx_block(apack, K64, wb[0], wb[1], tiles[cur], &prev, N, ep,
                              fetch ? packed + (b0 + nb) * wstride : NULL,
                              fetch ? packed + (b0 + nb + 1) * wstride : NULL);
                    if (K64 < K) {
                        const uint8_t *xr[QG_AMX_MR];
                        for (int r = 0; r < rows; r++) xr[r] = x__mk + (m + r) * K;
                        amx_block_ktail(xr, rows, K64, K, wb, tiles[cur]);
                    }
                    prev = (amx_pending){tiles[cur], m, n0, ncols, rows, 0};   /* runs during the next */
                    cur ^= 1;
                }
            }
        }
        amx_pending_run(&prev, prev.rows, N, ep);   /* the thread's last block */
        amx_end();
    }
    free(pads);
    return QG_OK;
}
