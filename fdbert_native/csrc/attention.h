/* attention.h -- scaled dot-product attention over a packed batch of variable-length sequences.
 *
 * reference: fdbert/reference/attention.py · tests: spec_tests/test_native_attention.py
 *
 *   out[q0 + i, h, :] = sum_j p[i, j] v[k0 + j, h, :],  p[i, :] = softmax_j(scale * q[q0 + i, h, :] . k[k0 + j, h, :])
 *
 * for every sequence b (rows q0 = cu_q[b] .. cu_q[b+1] of q and out, k0 = cu_k[b] .. cu_k[b+1] of k and v)
 * and head h (k and v: its kv head). With `causal`, query i of a sequence with Lq queries and Lk keys sees keys
 * j <= i + Lk - Lq only (the mask is aligned at the end: a KV-cache decoder step has Lq = 1).
 * The twin of fdbert/reference/attention.py (EET, Li et al. 2021, sec. 3: no padding is computed).
 *
 * q, out f32 [nq, H, Dh]; k, v f32 [nk, Hkv, Dh] with H % Hkv == 0: query head h reads kv head
 * h / (H / Hkv) in place (grouped-query attention; Hkv = H for ordinary multi-head attention);
 * cu_q, cu_k int32 [B + 1]. Each row [H, Dh] or [Hkv, Dh] is contiguous; consecutive rows of q, k,
 * v and out lie rs[0], rs[1], rs[2], rs[3] >= H Dh (Hkv Dh for k, v) elements apart (H Dh when
 * C-contiguous; 3 H Dh when q, k and v are the thirds of one fused QKV GEMM's output [n, 3, H, Dh]).
 * The caller validates 0 <= cu[b] <= cu[b+1] <= n; rows outside every sequence are not written.
 *
 * Long sequences: the softmax is online over key tiles of KEY_TILE = 256 keys (FlashAttention-2,
 * Dao 2023, sec. 3.1; fdbert/reference/attention.py): per query row a running max m, sum l and
 * unnormalised output o, rescaled by e^(m - m') when a tile raises the max; out = o / l after the
 * last tile. No [Lq, Lk] array exists: memory per thread is K^T [Lk, Dh] and the V panel [Lk, Dh]
 * (the pair's K and V, packed once), <= 64 KB + 6 KEY_TILE floats of scores and the state of <= 2054
 * rows. A pair with Lk <= KEY_TILE is one tile, computed exactly as without tiling.
 *
 * Work: one (sequence, head) pair per OpenMP work item, schedule(static); a pair's arithmetic does
 * not depend on the thread that runs it, so results do not depend on the thread count, and a query
 * row's does not depend on the rows computed with it (a decoder step gives the bits of the same rows
 * of the full causal product).
 * FDB_ISA_AVX512 (fp32_ops.h): the pair's K is packed into 16-key column blocks of K^T (16x16 register transposes)
 * and V into a contiguous panel (its rows, H*Dh floats apart in the input, would all fall in a few L1
 * sets). Then, per chunk of queries (as many as 64 KB of scores hold: 64 rows of a full key tile,
 * Lq = 128 at once for Lk = 128) and key tile, two phases that each keep one panel in L1: all scores,
 * 6 queries x 64 keys at a time in 24 zmm accumulators; then per 6 queries the softmax numerators
 * e = exp(s - m') (6 rows side by side, to overlap the exp latency) and e V, 6 queries x 64 head
 * channels in 24 accumulators, each output row scaled once by 1 / l after its last tile.
 * FDB_ISA_AVX2 (AVX2 + FMA): the same panels and phases in 8 lanes (8-key blocks, 4 queries x 16 keys
 * and 4 queries x 16 channels per tile: AVX2 has 16 registers).
 * FDB_ISA_GENERIC: one query at a time, plain loops, the same key tiles; scratch KEY_TILE + Dh floats.
 */
#ifndef FDBERT_ATTENTION_H
#define FDBERT_ATTENTION_H

#include <stdint.h>

#include "cpu_features.h"   /* the ISA paths */

enum { FP_OK = 0, FP_ENOMEM = -2, FP_ENOKEYS = -4, FP_ENONFINITE = -5, FP_ETOOLONG = -6,
       FP_EOVERFLOW = -7 };

/* The quantization of a u8 output: outq = u8(clip(rint(out / scale) + zp, 0, 255)), exactly
 * fp_quantize_u8's arithmetic (the INT8 contract), so one call gives the bits of attention then
 * quantize_u8 -- without writing and re-reading the float32 output. */
typedef struct {
    float scale, zp;
} fp_attn_u8;

/* Writes out (f32), or when outq is not NULL outq u8 [nq, H, Dh] quantized with *qp instead (out is
 * then not touched and may be NULL). Returns FP_OK, FP_ENOMEM, or FP_ENOKEYS when a query would see
 * no key (Lk = 0 < Lq, or causal with Lk < Lq): its softmax is undefined, and nothing has been
 * written. */
int fp_attention(const float *q__nhd, const float *k__nhd, const float *v__nhd, const int32_t *cu_q,
                 const int32_t *cu_k, int64_t B, int64_t H, int64_t Hkv, int64_t Dh, int causal,
                 float scale, const int64_t rs[4], float *out__nhd, uint8_t *outq__nhd,
                 const fp_attn_u8 *qp, int isa, int nthreads);

/* INT8 attention (attention_int8.c; fdbert/reference/attention_int8.py): the same contract with
 * Hkv = H (no grouped-query heads, one pass over whole score rows), with q, k and v quantized per
 * (sequence, head) to s8 (symmetric, absmax / 127), exact int32 q k^T and P v, and u8 softmax
 * weights rint(255 exp(s - max s)) normalised by their integer row sum. Additionally returns
 * FP_ENONFINITE when q, k or v holds a NaN or inf, FP_EOVERFLOW when a score a query sees overflows
 * float32 (out is then unspecified in both cases) and FP_ETOOLONG for a sequence of more than
 * FP_I8_MAX_KEYS keys (checked before anything is written).
 * ISA paths: FDB_ISA_GENERIC (plain C) and FDB_ISA_AVX512VNNI (vpdpbusd). */
/* (FDB_ISA_GENERIC and FDB_ISA_AVX512VNNI: cpu_features.h) */
enum { FP_I8_MAX_KEYS = 65536 };

int fp_attention_int8(const float *q__nhd, const float *k__nhd, const float *v__nhd,
                      const int32_t *cu_q, const int32_t *cu_k, int64_t B, int64_t H, int64_t Dh,
                      int causal, float scale, const int64_t rs[4], float *out__nhd,
                      uint8_t *outq__nhd, const fp_attn_u8 *qp, int isa, int nthreads);

#endif /* FDBERT_ATTENTION_H */
