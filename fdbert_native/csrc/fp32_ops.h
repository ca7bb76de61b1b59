/* fp32_ops.h -- float32 row and pointwise kernels of the native backend (the twins of
 * fdbert/reference/layernorm.py, activations.py and the INT8 quantize / dequantize of fdbert/int8.py).
 *
 * reference: fdbert/reference/layernorm.py, fdbert/reference/activations.py, fdbert/int8.py (quantize_u8, dequantize_u8) · tests: spec_tests/test_native_layernorm.py, spec_tests/test_native_activations.py, spec_tests/test_native_int8.py, spec_tests/test_native_embeddings.py
 *
 *   layer_norm   y[r, :] = (x[r, :] - mean) * (1 / sqrt(var + eps)) * w + b   biased var, two passes
 *   softmax      y[r, :] = e / sum(e), e = exp(x[r, :] - max x[r, :])          over the last axis
 *   gelu         y = (0.5 x) (1 + erf(x / sqrt 2))                             exact (erf) GELU
 *   quantize_u8  q = u8(clip(rint(x / scale) + zp, 0, 255))                    float32, half-even
 *   dequantize   x = (float(q) - zp) * scale                                   float32
 *
 * Every kernel has three ISA paths: FDB_ISA_GENERIC (plain C; libm expf / erff / nearbyintf),
 * FDB_ISA_AVX2 (avx2 + fma: the AVX-512 arithmetic in 8-lane halves, bit-identical to it) and
 * FDB_ISA_AVX512 (avx512f/bw/vl/dq intrinsics; tails by masked loads and stores, so an element's
 * arithmetic never depends on its position in the row). The generic path mirrors the 16-lane
 * arithmetic -- sums accumulate in 16 lanes, folded 8+8, 4+4, 2+2, 1+1 -- so the paths agree
 * bit for bit except where the AVX-512 path uses its own exp / erf (fp32_vecmath.h, <= 1 ulp).
 * Quantize / dequantize are bit-identical to the reference on every path (the INT8 contract).
 *
 * Rows are split across `nthreads` OpenMP threads (schedule(static)); each row is computed by one
 * thread in a fixed order, so results do not depend on the thread count. nthreads <= 0 means 1.
 * Arrays are C-contiguous; the caller (fdbert_native/_fp32.pyx) checks shapes and dtypes.
 */
#ifndef FDBERT_FP32_OPS_H
#define FDBERT_FP32_OPS_H

#include <math.h>
#include <stdint.h>

#include "cpu_features.h"   /* the ISA paths */

/* ISA paths (cpu_features.h): FDB_ISA_GENERIC, FDB_ISA_AVX2 and FDB_ISA_AVX512. */

/* x, y f32 [n, D]; w, b f32 [D]. y may alias x. */
void fp_layer_norm(const float *x__nd, int64_t n, int64_t D, const float *w__d, const float *b__d,
                   float eps, float *y__nd, int isa, int nthreads);

/* fp_layer_norm into y, then fp_quantize_u8(y) into q u8 [n, D]: the same bits, one pass. */
void fp_layer_norm_u8(const float *x__nd, int64_t n, int64_t D, const float *w__d, const float *b__d,
                      float eps, float *y__nd, float scale, float zp, uint8_t *q__nd, int isa,
                      int nthreads);

/* x, y f32 [rows, L], L >= 1. y may alias x. */
void fp_softmax(const float *x__rl, int64_t rows, int64_t L, float *y__rl, int isa, int nthreads);

/* One row in place: s[0:L] <- softmax(s[0:L]), L >= 1 (attention.c's generic path calls the first). */
void fp_softmax_row_generic(float *s, int64_t L);
void fp_softmax_row_avx512(float *s, int64_t L);

/* Pointwise, x and y f32 [n] (y may alias x). fp_erf / fp_exp are test and benchmark hooks. */
void fp_gelu(const float *x, int64_t n, float *y, int isa, int nthreads);
void fp_erf(const float *x, int64_t n, float *y, int isa, int nthreads);
void fp_exp(const float *x, int64_t n, float *y, int isa, int nthreads);

/* One value of the INT8 contract's quantize, u8(clip(rint(x / scale) + zp, 0, 255)) in float32:
 * a true division, nearbyintf (round half to even in the default mode), the clip before the
 * conversion. The generic paths of fp_quantize_u8, of the attentions' u8 output and of the INT8
 * GEMM epilogue (qgemm.c). */
static inline uint8_t fp_quantize1(float x, float scale, float zp)
{
    float r = nearbyintf(x / scale) + zp;
    r = r < 0.0f ? 0.0f : r;
    r = r > 255.0f ? 255.0f : r;
    return (uint8_t)r;
}

/* q u8 [n] <- x f32 [n]; scale > 0 finite, zp an integer in [0, 255] given as a float. */
void fp_quantize_u8(const float *x, int64_t n, float scale, float zp, uint8_t *q, int isa,
                    int nthreads);
/* x f32 [n] <- q u8 [n]. */
void fp_dequantize_u8(const uint8_t *q, int64_t n, float scale, float zp, float *x, int isa,
                      int nthreads);

/* out[i, :] = table[ids[i], :]: ids int64 [n], table f32 [V, D], out f32 [n, D]. Returns 0, or -1
 * (nothing written) when an id lies outside [0, V). A row copy: no ISA paths. */
int fp_embedding(const int64_t *ids, int64_t n, const float *table__vd, int64_t V, int64_t D,
                 float *out__nd, int nthreads);

/* y f32 [M, N] += the outlier product of x's columns o (int32 [ko]) with w f32 [ko, N] (the outlier
 * weight transposed), each product and sum one float32 operation in j order (fp32_ops.c). x, y: rows
 * of stride ldx, ldy. reference: fdbert/reference/qlinear.py add_outlier_product. */
void fp_add_outlier_product(const float *x, int64_t ldx, const int32_t *o, int64_t ko, const float *w,
                            float *y, int64_t ldy, int64_t M, int64_t N, int isa, int nthreads);

#endif /* FDBERT_FP32_OPS_H */
