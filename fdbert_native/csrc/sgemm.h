/* sgemm.h -- the float32 linear of the native backend (the twin of fdbert/reference/linear.py).
 *
 * reference: fdbert/reference/linear.py · tests: spec_tests/test_native_linear.py
 *
 *   sg_linear   y[m, n] = (sum_k x[m, k] * w[n, k]) + b[n]      x f32 [M, K], w f32 [N, K] (torch
 *                                                                layout), b f32 [N] or NULL, y [M, N]
 *
 * Arithmetic, identical on every ISA path: each y[m, n] is one float32 accumulator that starts at 0
 * and takes fma(x[m, k], w[n, k], acc) for k = 0, 1, ..., K-1 in order (one rounding per step), then
 * one float32 add of b[n] (as the reference adds the bias after the product). So the AVX-512, AVX2
 * and generic paths agree bit for bit, a row's result does not depend on M or on the row's position,
 * and the thread count never changes a bit (K is never split across threads).
 *
 * Layout (BLIS-style): the work is split into tasks of (a block of MC rows) x (a panel of NR output
 * columns), distributed over `nthreads` OpenMP threads with schedule(static). A task walks K in
 * chunks of KC: it packs the chunk's KC x NR slice of W^T into a contiguous buffer on its stack (its
 * "B panel", L1-resident), then runs an MR x NR register-blocked micro-kernel down its rows, carrying
 * the partial sums through y between chunks (a float32 store and reload is exact). W is thus packed
 * on the fly, O(N K) work per call per row block, against O(M N K) multiply-adds.
 *
 * Cost: 2 M N K flops; the AVX-512 micro-kernel is 8 x 32 (16 zmm accumulators), AVX2 6 x 16.
 * Arrays are C-contiguous; the caller (fdbert_native/_sgemm.pyx) checks shapes and dtypes.
 */
#ifndef FDBERT_SGEMM_H
#define FDBERT_SGEMM_H

#include <stdint.h>

#include "cpu_features.h"   /* the ISA paths */

/* ISA paths (cpu_features.h): FDB_ISA_GENERIC, FDB_ISA_AVX2 and FDB_ISA_AVX512. */

/* x f32 [M, K]; w f32 [N, K]; b f32 [N] or NULL (no bias); y f32 [M, N], must not alias x, w, b.
 * K = 0 gives y = b (or 0). nthreads <= 0 means 1. */
void sg_linear(const float *x__mk, const float *w__nk, const float *b__n, int64_t M, int64_t N,
               int64_t K, float *y__mn, int isa, int nthreads);

/* The same y from a weight packed once, for the AVX-512 and AVX2 paths (decode steps: at M = 1 the
 * per-call packing of sg_linear is most of the work). wp [ceil(N / 32), K, 32] holds each 32-column
 * panel of w^T (zeros past N), written by sg_pack_weight; wp must be 64-byte aligned. The AVX-512
 * path runs its 8 x 32 micro-kernel on the panels; the AVX2 path runs blocks of 6 rows with its 6 x 16
 * kernel on each half of a panel, and the remaining rows with a 2 x 32 one (four FMA chains per row
 * at M = 1). The arithmetic is sg_linear's, so the bits are too. Returns 0, or -1 (nothing done) on
 * the generic path. */
enum { SG_PACK_NR = 32 };
int64_t sg_packed_size(int64_t N, int64_t K);   /* floats of wp */
void sg_pack_weight(const float *w__nk, int64_t N, int64_t K, float *wp);
int sg_linear_packed(const float *x__mk, const float *wp, const float *b__n, int64_t M, int64_t N,
                     int64_t K, float *y__mn, int isa, int nthreads);

#endif /* FDBERT_SGEMM_H */
