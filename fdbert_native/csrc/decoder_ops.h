/* decoder_ops.h -- float32 row and pointwise kernels of the decoders (the twins of
 * fdbert/reference/rmsnorm.py, rope.py and activations.py's silu_mul).
 *
 * reference: fdbert/reference/rmsnorm.py, fdbert/reference/rope.py, fdbert/reference/activations.py (silu_mul, gelu_tanh) · tests: spec_tests/test_native_rmsnorm.py, spec_tests/test_native_rope.py, spec_tests/test_native_activations.py
 *
 *   rms_norm   y[r, :] = x[r, :] / sqrt(sum(x[r, :]^2) / D + eps) * w          (LlamaRMSNorm)
 *   rope       y[r, h, c]        = x[r, h, c] cos[r, c] - x[r, h, c + Dh/2] sin[r, c]
 *              y[r, h, c + Dh/2] = x[r, h, c + Dh/2] cos[r, c] + x[r, h, c] sin[r, c]   c < Dh/2
 *   silu_mul   y = g / (1 + exp(-g)) * u                                        (SwiGLU's product)
 *   gelu_tanh  y = x/2 (1 + tanh(z)) = x / (1 + exp(-2 z)), z = sqrt(2/pi) (x + 0.044715 x^3)
 *                                                                          (GPT-2's gelu_new)
 *
 * Three ISA paths each: FDB_ISA_GENERIC (plain C, libm expf), FDB_ISA_AVX2 (avx2 + fma intrinsics, 8
 * lanes, masked loads and stores for the tails) and FDB_ISA_AVX512 (avx512f, 16 lanes, masked tails).
 * rms_norm's sum of squares runs in 16 lanes folded 8+8, 4+4, 2+2, 1+1 on every path (AVX2 holds the
 * 16 in two registers), and rope is multiplies and adds in the reference's order (no fma:
 * -ffp-contract=off), so both are bit-identical across paths (rope also to NumPy). silu_mul and
 * gelu_tanh use fp32_vecmath.h's exp on the SIMD paths (<= 1 ulp from expf; its AVX2 and AVX-512
 * twins give the same bits, so do these two paths) and libm's expf on the generic one.
 *
 * Rows are split across `nthreads` OpenMP threads (schedule(static)) when there are enough of them;
 * a row is computed by one thread in a fixed order, so results do not depend on the thread count.
 * Arrays are C-contiguous; the caller (fdbert_native/_decoder.pyx) checks shapes and dtypes.
 */
#ifndef FDBERT_DECODER_OPS_H
#define FDBERT_DECODER_OPS_H

#include <stdint.h>

#include "cpu_features.h"   /* the ISA paths */

/* ISA paths (cpu_features.h): FDB_ISA_GENERIC, FDB_ISA_AVX2 and FDB_ISA_AVX512. */

/* x, y f32 [n, D]; w f32 [D]. y may alias x. */
void dec_rms_norm(const float *x__nd, int64_t n, int64_t D, const float *w__d, float eps, float *y__nd,
                  int isa, int nthreads);

/* x, y f32 [n, H, Dh] (Dh even); cos, sin f32 [n, Dh/2]. y must not alias x. */
void dec_rope(const float *x__nhd, int64_t n, int64_t H, int64_t Dh, const float *cos__nc,
              const float *sin__nc, float *y__nhd, int isa, int nthreads);

/* g, u, y f32 [n]. y may alias g or u. */
void dec_silu_mul(const float *g, const float *u, int64_t n, float *y, int isa, int nthreads);

/* x, y f32 [n]. y may alias x. */
void dec_gelu_tanh(const float *x, int64_t n, float *y, int isa, int nthreads);

#endif /* FDBERT_DECODER_OPS_H */
