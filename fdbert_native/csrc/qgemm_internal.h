/* qgemm_internal.h -- what qgemm.c and qspmm.c share and Python never sees. */
#ifndef FDBERT_QGEMM_INTERNAL_H
#define FDBERT_QGEMM_INTERNAL_H

#include <stdint.h>

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
 * repacked activation tile xt [Kg][tokens][4] (see qspmm_tile.inc). */
typedef void (*qg_sparse_fn)(const uint8_t *xt, const int32_t *blk, const int32_t *runs,
                             int64_t stride, int nch, int accumulate, int32_t *T);
typedef struct {
    qg_sparse_fn fn;
    int tokens, lanes;   /* tokens per tile = vectors per tile * lanes */
    int unroll;          /* blocks per inner step: each channel's run is padded to a multiple */
} qg_sparse_kernel;

int qg_default_threads(void);

static inline int32_t qg_load_i32(const void *p)   /* unaligned 4-byte load without UB */
{
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

#endif
