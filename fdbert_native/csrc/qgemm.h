/* qgemm.h -- INT8 dense GEMM and 1x4 block-sparse SpMM with a fused epilogue.
 *
 * reference: fdbert/reference/qlinear.py, fdbert/int8.py (matmul_u8s8_s32) · tests: spec_tests/test_native_qgemm.py, spec_tests/test_native_qlinear.py
 *
 *   acc[m, n] = sum_k int32(x[m, k]) * int32(w[n, k])          x u8 [M, K], w s8 [N, K]
 *   y[m, n]   = epilogue(acc[m, n])                              (see qg_epilogue below)
 *
 * This is the native twin of the INT8 contract in the fdbert reference (Fast DistilBERT,
 * Shen et al. 2022, sec. 3): integer sums are exact in int32 for K < 66,000, so every ISA
 * path and every thread count returns the same bits.
 *
 * Axes: M rows (tokens), K reduction (input channels), N output channels; W is torch-style
 * [N, K]. Kernels never split K across threads.
 *
 * Files: qgemm.c (dense: packing, per-ISA register tiles, the driver), qgemm_amx.c (dense on
 * AMX tiles), qspmm.c (1x4 BSR), qepilogue.c (the epilogue all of them share), and the templates
 * qgemm_dense.inc / qspmm_tile.inc over qgemm_simd.inc (one tile body compiled once per ISA).
 */
#ifndef FDBERT_QGEMM_H
#define FDBERT_QGEMM_H

#include <stdint.h>

/* ISA paths (cpu_features.h), lowest to highest; tests force each one. Every SIMD path returns the
 * exact int32 sums: the non-VNNI ones widen both operands to int16 for vpmaddwd (see qgemm.c). The
 * caller checks the CPU can run the path (Python: fdbert_native._cpu's usable-feature mask).
 *   FDB_ISA_GENERIC      plain C int32 loops; also the tail of every SIMD loop
 *   FDB_ISA_AVX2         256-bit vpmaddwd on int16-widened operands
 *   FDB_ISA_AVX2_VNNI    256-bit VEX vpdpbusd (AVX-VNNI)
 *   FDB_ISA_AVX512       512-bit vpmaddwd on int16-widened operands
 *   FDB_ISA_AVX512VNNI   512-bit EVEX vpdpbusd
 *   FDB_ISA_AMX          AMX-INT8 tiles: the dense GEMM only (qgemm_amx.h) */
#include "cpu_features.h"

/* Error codes (0 = ok). */
enum { QG_OK = 0, QG_EBADISA = -1, QG_ENOMEM = -2, QG_EBADINDEX = -3 };

/* Dense packed weights ("VNNI layout"): W s8 [N, K] ->
 *   packed s8 [Nb = ceil(N/16)][Kg = ceil(K/4)][16][4],  packed[b][g][c][i] = W[16b + c, 4g + i]
 * zero where 16b + c >= N or 4g + i >= K. One 64-byte row packed[b][g] is exactly the
 * operand of one 512-bit vpdpbusd: 16 output channels x 4 consecutive k. */
#define QG_NBLOCK 16
#define QG_KGROUP 4

int64_t qg_packed_dense_size(int64_t N, int64_t K); /* bytes */
/* colsum[n] = sum_k W[n, k] (int32; the zero-point compensation is x_zp * colsum[n]). */
void qg_pack_dense(const int8_t *w__nk, int64_t N, int64_t K, int8_t *packed, int32_t *colsum);

/* Output kinds of the fused epilogue. */
enum { QG_OUT_S32 = 0, QG_OUT_F32 = 1, QG_OUT_U8 = 2 };

/* The epilogue, float32, in this order, no fused multiply-add (the INT8 contract):
 *   y = float32(acc - comp[n]) * mult[n] + bias[n]         (bias may be NULL: no add; the
 *                                                           subtraction wraps in int32, exact)
 *   y = y + p[m, n]                                        if ko > 0: the float share of outlier
 *       p = xo[m, o_0] * wo_t[0, n], then p + xo[m, o_j] * wo_t[j, n], j = 1 .. ko - 1 in order
 *       (fdbert/reference/qlinear.py add_outlier_product; xo rows of stride ldxo, wo_t [ko, N])
 *   y = (0.5f * y) * (1.0f + erf(y * 0.70710677f))        if gelu (fp32_vecmath.h's erf, the
 *                                                          one erf of the native kernels)
 *   y = y + residual[m, n]                                 if residual (f32 [M, N], row-major)
 *   out = y                                                if out_kind == QG_OUT_F32
 *   out = u8(clip(rint(y / out_scale) + out_zp, 0, 255))  if out_kind == QG_OUT_U8
 * With out_kind == QG_OUT_S32 the raw acc is written and every other field is ignored. */
typedef struct {
    int out_kind;
    const int32_t *comp;     /* [N] (NULL = zeros) */
    const float *mult;       /* [N] */
    const float *bias;       /* [N] or NULL */
    int gelu;
    const float *residual;   /* [M, N] or NULL */
    float out_scale, out_zp; /* QG_OUT_U8 only */
    void *out;               /* [M, N]: int32, float32 or uint8 by out_kind */
    const float *xo;         /* [M, ldxo] the float input whose columns xo_idx are outliers (ko > 0) */
    int64_t ldxo;
    const int32_t *xo_idx;   /* [ko] */
    int64_t ko;              /* 0: no outlier share */
    const float *wo_t;       /* [ko, N] the outlier weight transposed */
} qg_epilogue;

/* Dense: x u8 [M, K] row-major, packed from qg_pack_dense(N, K). nthreads <= 0: OpenMP default.
 * Returns QG_OK or an error code. Releases nothing: call without the GIL. */
int qg_gemm(const uint8_t *x__mk, int64_t M, int64_t K, const int8_t *packed, int64_t N,
            const qg_epilogue *ep, int isa, int nthreads);

/* Block-sparse 1x4 (SciPy BSR vocabulary in): data s8 [nnz][4] (block b holds W[n, 4j..4j+3]
 * for the row n with indptr[n] <= b < indptr[n+1] and j = indices[b]), indices int32 [nnz],
 * indptr int32 [N + 1]. qg_bsr_validate checks indptr runs monotonically from 0 to nnz and every
 * index is in [0, ceil(K/4)); pack only validated input.
 *
 * Packed ("block stream", built once at load time): blocks grouped by (channel n, K chunk kc of
 * QG_SP_KC block columns), each run padded with zero blocks to a multiple of QG_SP_UNROLL:
 *   blk  int32 [nblk][2]   (block column j, the 4 weight bytes as one little-endian int32)
 *   cptr int32 [N*S + 1]   S = n_kc + 1, n_kc = ceil(ceil(K/4) / QG_SP_KC);
 *                          run (n, kc) = blk[cptr[n*S + kc] : cptr[n*S + kc + 1]]
 * Weight bytes past K in the last block column must be zero (SciPy pads with zeros); kernels
 * read x through a zero-padded private copy, never out of bounds. */
#define QG_SP_KC 256
#define QG_SP_UNROLL 2

int qg_bsr_validate(const int32_t *indices, const int32_t *indptr, int64_t N, int64_t K, int64_t nnz);
int64_t qg_bsr_n_chunks(int64_t K);
/* Fills cptr [N*S + 1]; returns nblk (the padded block count). */
int64_t qg_bsr_pack_cptr(const int32_t *indices, const int32_t *indptr, int64_t N, int64_t K,
                         int32_t *cptr);
/* Fills blk [nblk][2] (zeroed by the caller: zeros are the padding). Returns QG_OK/QG_ENOMEM. */
int qg_bsr_pack_blk(const int8_t *data, const int32_t *indices, const int32_t *indptr, int64_t N,
                    int64_t K, const int32_t *cptr, int32_t *blk);

/* Sparse: x u8 [M, K] times the packed weight -> epilogue. Same contract as qg_gemm. */
int qg_spmm(const uint8_t *x__mk, int64_t M, int64_t K, const int32_t *blk, const int32_t *cptr,
            int64_t N, const qg_epilogue *ep, int isa, int nthreads);

/* nw (1..8) sparse weights reading the same x (e.g. Q, K and V): weight w is (blks[w], cptrs[w]),
 * N = Ns[w], with its own epilogue eps[w]. One repack of x and one parallel region for all; each
 * output equals what qg_spmm gives for that weight alone, bit for bit. */
int qg_spmm_multi(const uint8_t *x__mk, int64_t M, int64_t K, int nw, const int32_t *const *blks,
                  const int32_t *const *cptrs, const int64_t *Ns, const qg_epilogue *eps, int isa,
                  int nthreads);

/* ---- the epilogue (qepilogue.c) */

/* The epilogue applied to one row segment acc[0:len] holding columns n0..n0+len of row m.
 * Shared by the dense and sparse drivers; picks the AVX-512 body when isa >= FDB_ISA_AVX512. */
void qg_epilogue_row(const int32_t *acc, int64_t m, int64_t n0, int64_t len, int64_t N,
                     const qg_epilogue *ep, int isa);
/* The same for `rows` rows: row r of acc (stride lda) holds columns n0..n0+len of row m0 + r. */
void qg_epilogue_rows(const int32_t *acc, int64_t lda, int64_t m0, int64_t rows, int64_t n0,
                      int64_t len, int64_t N, const qg_epilogue *ep, int isa);

/* The epilogue on a channel-major tile (qspmm.c), in place: row c of T (stride ldt) holds the
 * accumulators of channel n0 + c for ntok tokens; each becomes the float bits of y before any
 * residual (f32 outputs) or the u8 code as int32 (u8 outputs). Returns 0 without touching T where
 * it does not apply (isa below FDB_ISA_AVX512, s32 outputs, u8 with a residual, ntok not a multiple of
 * 16): the caller then takes the row path. */
int qg_epilogue_channels(int32_t *T, int64_t ldt, int64_t n0, int64_t nch, int64_t ntok,
                         const qg_epilogue *ep, int isa);

/* q[j] = u8(clip(rint(gelu(x[j]) / scale) + zp, 0, 255)) for j < n: fp_gelu then fp_quantize_u8
 * (fp32_ops.h), the same bits, in one pass with the epilogue's cheap-first GELU. scale > 0.
 * nthreads <= 0: OpenMP default. */
void qg_gelu_quantize_u8(const float *x, int64_t n, float scale, float zp, uint8_t *q, int isa,
                         int nthreads);


#endif
