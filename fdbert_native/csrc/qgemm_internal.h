/* qgemm_internal.h -- what qgemm.c and qspmm.c share and Python never sees.
 *
 * reference: fdbert/reference/qlinear.py · tests: spec_tests/test_native_qgemm.py
 */
#ifndef FDBERT_QGEMM_INTERNAL_H
#define FDBERT_QGEMM_INTERNAL_H

#include <stdint.h>

/* The SIMD paths of the INT8 tile templates, lowest last: X(suffix, enum fdb_isa id). qgemm_isas.inc
 * compiles each template once per row (in this order); qgemm.c and qspmm.c build their kernel
 * tables from it. The generic path is plain C, outside the templates. */
#define QG_SIMD_PATHS(X)            \
    X(avx512vnni, AVX512VNNI)       \
    X(avx512, AVX512)               \
    X(avx2_vnni, AVX2_VNNI)         \
    X(avx2, AVX2)

#define QG_PASTE2(a, b) a##b
#define QG_PASTE(a, b) QG_PASTE2(a, b)   /* QG_PASTE(QG_DENSE_MR_, SFX) -> QG_DENSE_MR_avx512vnni */

#define QG_MAX_MR 8    /* largest register-tile row count of any ISA */
#define QG_MAX_NBLK 4  /* largest register-tile 16-channel block count of any ISA */

/* A dense register tile: tile[r][c] (row stride nblk*16) = x rows xr[0..mr) times the nblk
 * packed 16-channel weight panels wb[0..nblk), over the full K. */
typedef void (*qg_tile_fn)(const uint8_t *const *xr, int64_t K, const int8_t *const *wb,
                           int32_t *tile);
typedef struct {
    qg_tile_fn fn;
    int mr, nblk;
} qg_tile_kernel;

/* A sparse register tile: T[c][t] (+)= (row stride `tokens`) for nch <= 16 channels whose block
 * runs are blk[2*runs[c*stride] : 2*runs[c*stride + 1]], over the `tokens` tokens of one
 * repacked activation tile xt [Kg][tokens][4]: u8 on the VNNI paths (xbytes = 1), int16 on the
 * others (xbytes = 2; see qspmm_tile.inc). */
typedef void (*qg_sparse_fn)(const uint8_t *xt, const int32_t *blk, const int32_t *runs,
                             int64_t stride, int nch, int accumulate, int32_t *T);
typedef struct {
    qg_sparse_fn fn;
    int tokens, lanes;   /* tokens per tile = vectors per tile * lanes */
    int unroll;          /* blocks per inner step: each channel's run is padded to a multiple */
    int xbytes;          /* bytes per activation in xt: 1 (u8) or 2 (widened to int16) */
} qg_sparse_kernel;

int qg_default_threads(void);

/* The dense GEMMs' (M chunk, N chunk) tiling, shared by qg_gemm and qg_gemm_amx. Chunk limits:
 * x chunk ~256 KB and weight chunk ~1 MB (both in L2); at least 2 tasks per thread (N is split
 * further when M gives too few); and chunks of equal size (to mr rows / nb 16-channel panels) whose
 * count divides among the threads where M allows it -- with the limits alone M = 1024, K = 768 gave
 * row chunks of 320, 320, 320, 64 and 2 threads 640 and 384 rows. Writes MC rows and NCB panels
 * per chunk; the chunk counts are ceil(M / MC) and ceil(Nb / NCB). */
static inline void qg_dense_chunks(int64_t M, int64_t K, int64_t Nb, int64_t wstride, int mr, int nb,
                                   int nthreads, int64_t *MC, int64_t *NCB)
{
    int64_t mc_max = (256 * 1024 / (K > 0 ? K : 1)) / mr * mr, nc_max;
    if (mc_max < mr) mc_max = mr;
    nc_max = (1024 * 1024 / (wstride > 0 ? wstride : 1)) / nb * nb;
    if (nc_max < nb) nc_max = nb;
    const int64_t m_blocks = (M + mr - 1) / mr, n_blocks = (Nb + nb - 1) / nb;
    int64_t n_mc = (M + mc_max - 1) / mc_max, n_nc = (Nb + nc_max - 1) / nc_max;
    while (n_mc * n_nc < 2 * nthreads && n_nc < n_blocks) n_nc++;          /* enough tasks */
    while ((n_mc * n_nc) % nthreads && n_mc < m_blocks) n_mc++;             /* a multiple of threads */
    *MC = ((M + n_mc - 1) / n_mc + mr - 1) / mr * mr;                     /* equal, whole blocks */
    *NCB = ((Nb + n_nc - 1) / n_nc + nb - 1) / nb * nb;
}

static inline int32_t qg_load_i32(const void *p)   /* unaligned 4-byte load without UB */
{
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

#endif
