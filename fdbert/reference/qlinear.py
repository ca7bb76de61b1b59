"""Quantized linear layers, dense and block-sparse: u8 x s8 -> int32 accumulators -> fused epilogue.

    acc[m, n]  = sum_k xq[m, k] * wq[n, k]                       int32, exact (K <= int8.K_MAX)
    y[m, n]    = float32(acc[m, n] - comp[n]) * mult[n] + bias[n] float32, no fused multiply-add
    y          = GELU(y)                                          optional, exact erf GELU
    y          = y + residual                                     optional, float32
    out        = y  |  quantize_u8(y, out_scale, out_zero_point)  keep float32, or requantize

and, for a layer with float32 outlier input channels o (their s8 codes are 0), the float share that
the INT8 block adds to the result (add_outlier_product):

    p[m, n]    = x[m, o_0] W_o[n, 0] + x[m, o_1] W_o[n, 1] + ...  float32, summed in channel order
    y          = y + p

with comp[n] = x_zp * sum_k wq[n, k] (so acc - comp = sum_k (xq - x_zp) * wq, exactly) and
mult[n] = float32(x_scale * w_scale[n]), both precomputed when the layer is built. The integer part
is the contract every backend matches bit for bit (docs/int8.md); the float epilogue is matched
within a named tolerance. Fast DistilBERT (Shen et al. 2022) sec. 3.2, Fig. 3. The layer's codes,
scales and precomputed comp / mult are a :class:`fdbert.weights.QuantizedLinear`.
"""

from __future__ import annotations

import numpy as np

from .. import int8
from ..errors import ShapeError, expect_dtype
from .activations import gelu as _gelu


# ---- the ops (fdbert.ops has the public twins; backends implement the same names) ---------------
def quantize_u8(x, scale, zero_point):  # f32 [...] -> u8 [...]
    """q = clip(rint(x / scale) + zero_point, 0, 255) (see fdbert.int8.quantize_u8)."""
    return int8.quantize_u8(x, scale, zero_point)


def dequantize_u8(q, scale, zero_point):  # u8 [...] -> f32 [...]
    """x = (q - zero_point) * scale (see fdbert.int8.dequantize_u8)."""
    return int8.dequantize_u8(q, scale, zero_point)


def qlinear_s32(x_u8, qweight):  # u8 [M, K], QuantizedLinear [N, K] -> s32 [M, N]
    """acc[m, n] = sum_k x[m, k] * wq[n, k], exact in int32: the integer result every backend matches.

    Dense and block-sparse weights give identical accumulators (the skipped blocks are zeros).
    Both are computed as float64 products, exact because every partial sum is an integer < 2^53.
    """
    expect_dtype("qlinear: x", x_u8, np.uint8)
    N, K = qweight.shape
    if x_u8.ndim != 2 or x_u8.shape[1] != K:
        raise ShapeError(f"qlinear: expected x of shape (M, {K}), got {x_u8.shape}")
    if not qweight.sparse:
        return int8.matmul_u8s8_s32(x_u8, qweight.weight)
    return _bsr_matmul_s32(x_u8, qweight.weight)


def _bsr_matmul_s32(x, w):  # u8 [M, K], BSR s8 [N, K] -> s32 [M, N]
    """acc = x @ W.T over the stored blocks only; x is zero-padded to the padded K, never read beyond."""
    import scipy.sparse
    M, K = x.shape
    N = w.shape[0]
    (n_brows, n_bcols), (R, C) = w.grid, w.blocksize
    xp = np.zeros((M, n_bcols * C), np.float64)                          # [M, Kp]
    xp[:, :K] = x
    wf = scipy.sparse.bsr_matrix((w.data.astype(np.float64), w.indices, w.indptr),
                                 shape=(n_brows * R, n_bcols * C))       # [Np, Kp]
    acc = np.asarray(wf @ xp.T).T                                        # [Np, M] -> [M, Np]
    return np.ascontiguousarray(acc[:, :N]).astype(np.int32)


def qlinear_epilogue(acc, qweight, *, gelu=False, residual=None, out_scale=None,
                     out_zero_point=None):  # s32 [M, N] -> f32 | u8 [M, N]
    """y = float32(acc - comp) * mult + bias; [GELU]; [+ residual]; [requantize to u8]."""
    expect_dtype("qlinear_epilogue: acc", acc, np.int32)
    y = (acc - qweight.comp).astype(np.float32) * qweight.mult   # int32 wrap-around: exact (docs/int8.md)
    y = y + qweight.bias
    if gelu:
        y = _gelu(y)
    if residual is not None:
        expect_dtype("qlinear: residual", residual, np.float32)
        if residual.shape != y.shape:
            raise ShapeError(f"qlinear: residual must have shape {y.shape}, got {residual.shape}")
        y = y + residual
    if out_scale is None:
        return y
    return int8.quantize_u8(y, out_scale, 0 if out_zero_point is None else out_zero_point)


def qlinear(x_u8, qweight, *, gelu=False, residual=None, out_scale=None,
            out_zero_point=None):  # u8 [M, K] -> f32 | u8 [M, N]
    """The fused quantized linear: :func:`qlinear_s32` then :func:`qlinear_epilogue`."""
    acc = qlinear_s32(x_u8, qweight)
    return qlinear_epilogue(acc, qweight, gelu=gelu, residual=residual, out_scale=out_scale,
                            out_zero_point=out_zero_point)


def add_outlier_product(y, x, qweight):  # f32 [M, N], f32 [M, K], QuantizedLinear [N, K] -> f32 [M, N]
    """y + x[:, o] @ W_o.T for the layer's float32 outlier input channels o (LLM.int8()'s float share,
    docs/int8.md), in a fixed order: p = x[:, o_0] * W_o[:, 0], then p = p + x[:, o_j] * W_o[:, j]
    for j = 1, 2, ..., every product and sum one float32 operation (no fused multiply-add); then y + p.
    x is the Linear's whole float32 input; only its outlier columns are read."""
    o, w = qweight.outliers, qweight.outlier_weight                    # int32 [k], f32 [N, k]
    if not len(o):
        return y + np.float32(0)                                       # a new array, y's values
    p = x[:, o[0], None] * w[None, :, 0]                               # [M, 1] * [1, N] -> [M, N]
    for j in range(1, len(o)):
        p = p + x[:, o[j], None] * w[None, :, j]
    return y + p
