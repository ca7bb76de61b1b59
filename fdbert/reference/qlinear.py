"""Quantized linear layers, dense and block-sparse: u8 x s8 -> int32 accumulators -> fused epilogue.

    acc[m, n]  = sum_k xq[m, k] * wq[n, k]                       int32, exact (K <= int8.K_MAX)
    y[m, n]    = float32(acc[m, n] - comp[n]) * mult[n] + bias[n] float32, no fused multiply-add
    y          = GELU(y)                                          optional, exact erf GELU
    y          = y + residual                                     optional, float32
    out        = y  |  quantize_u8(y, out_scale, out_zero_point)  keep float32, or requantize

with comp[n] = x_zp * sum_k wq[n, k] (so acc - comp = sum_k (xq - x_zp) * wq, exactly) and
mult[n] = float32(x_scale * w_scale[n]), both precomputed when the layer is built. The integer part
is the contract every backend matches bit for bit (docs/int8.md); the float epilogue is matched
within a named tolerance. Fast DistilBERT (Shen et al. 2022) sec. 3.2, Fig. 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import int8
from ..blocksparse import BSRMatrix
from ..errors import ArgumentError, ShapeError, expect_dtype
from .activations import gelu as _gelu


@dataclass(eq=False)
class QuantizedLinear:
    weight: np.ndarray | BSRMatrix  # s8 [N, K] codes, dense or block-sparse
    w_scale: np.ndarray             # f32 [N]   per-output-channel weight scale
    bias: np.ndarray                # f32 [N]   (zeros when the float layer had none)
    x_scale: np.float32             # static per-tensor scale of the input activation
    x_zero_point: int               # its zero point, in [0, 255]
    comp: np.ndarray                # s32 [N]   x_zero_point * sum_k wq[n, k]
    mult: np.ndarray                # f32 [N]   float32(x_scale * w_scale[n])
    # Outlier input channels kept in float32 (LLM.int8(), Dettmers et al. 2022): their s8 codes are 0,
    # so qlinear ignores them; the encoder layer adds x[:, outliers] @ outlier_weight.T in float32.
    outliers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # int32 [k_o], sorted
    outlier_weight: np.ndarray | None = None  # f32 [N, k_o]: the float columns W[:, outliers]
    packed: dict = field(default_factory=dict, repr=False)  # backend name -> its layout of weight

    def __post_init__(self):
        if self.outlier_weight is None:
            self.outlier_weight = np.zeros((self.weight.shape[0], len(self.outliers)), np.float32)

    @property
    def shape(self):  # (N, K)
        return tuple(self.weight.shape)

    def __repr__(self):
        kind = repr(self.weight) if self.sparse else f"dense s8 {self.shape}"
        return (f"QuantizedLinear({kind}, x_scale={float(self.x_scale):.4g}, "
                f"x_zero_point={self.x_zero_point}, float_channels={len(self.outliers)})")

    @property
    def sparse(self) -> bool:
        return isinstance(self.weight, BSRMatrix)

    def dense_codes(self) -> np.ndarray:  # -> s8 [N, K]
        return self.weight.to_dense() if self.sparse else self.weight

    @classmethod
    def from_codes(cls, wq, w_scale, bias, x_scale, x_zero_point, outliers=None,
                   outlier_weight=None) -> "QuantizedLinear":
        """Build a layer from s8 codes (dense [N, K] or BSRMatrix): computes comp and mult."""
        x_scale = np.float32(x_scale)
        x_zero_point = int(x_zero_point)
        dense = wq.to_dense() if isinstance(wq, BSRMatrix) else wq
        expect_dtype("QuantizedLinear: weight codes", dense, np.int8)
        N = dense.shape[0]
        row_sums = dense.astype(np.int64).sum(axis=1)
        comp = (x_zero_point * row_sums).astype(np.int32)
        w_scale = np.ascontiguousarray(w_scale, np.float32)
        mult = (x_scale * w_scale).astype(np.float32)   # float32 x float32, rounded once
        bias = np.zeros(N, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
        outliers = np.zeros(0, np.int32) if outliers is None else np.ascontiguousarray(outliers, np.int32)
        if outlier_weight is None:
            outlier_weight = np.zeros((N, len(outliers)), np.float32)
        return cls(wq, w_scale, bias, x_scale, x_zero_point, comp, mult, outliers,
                   np.ascontiguousarray(outlier_weight, np.float32)).validate()

    @classmethod
    def from_float(cls, weight, bias, x_scale, x_zero_point, block=None,
                   outliers=None) -> "QuantizedLinear":
        """Quantize a float layer W [N, K] per output channel; ``block`` (R, C) stores it as BSR;
        the input channels ``outliers`` stay float32 (their columns are zeroed before quantizing)."""
        weight = np.ascontiguousarray(weight, np.float32)
        outliers = np.zeros(0, np.int32) if outliers is None else np.asarray(outliers, np.int32)
        outlier_weight = np.ascontiguousarray(weight[:, outliers])             # [N, k_o]
        if len(outliers):
            weight = weight.copy()
            weight[:, outliers] = 0
        wq, w_scale = int8.quantize_weight_s8(weight)
        codes = BSRMatrix.from_dense(wq, block) if block is not None else wq
        return cls.from_codes(codes, w_scale, bias, x_scale, x_zero_point, outliers, outlier_weight)

    def validate(self) -> "QuantizedLinear":
        """Check dtypes, shapes, ranges and the precomputed comp / mult; raise fdbert errors."""
        if self.sparse:
            self.weight.validate()
            expect_dtype("QuantizedLinear.weight.data", self.weight.data, np.int8)
        else:
            expect_dtype("QuantizedLinear.weight", self.weight, np.int8)
            if self.weight.ndim != 2:
                raise ShapeError(f"QuantizedLinear.weight: expected [N, K], got shape {self.weight.shape}")
        N, K = self.shape
        if K > int8.K_MAX:
            raise ShapeError(f"QuantizedLinear: K={K} > {int8.K_MAX} would overflow int32 accumulators")
        for name, dt in (("w_scale", np.float32), ("bias", np.float32), ("comp", np.int32),
                         ("mult", np.float32)):
            a = getattr(self, name)
            expect_dtype(f"QuantizedLinear.{name}", a, dt)
            if a.shape != (N,):
                raise ShapeError(f"QuantizedLinear.{name}: expected shape ({N},), got {a.shape}")
        int8.check_weight_codes(self.weight.data if self.sparse else self.weight, "QuantizedLinear.weight")
        int8.check_qparams("QuantizedLinear", self.x_scale, self.x_zero_point)
        if not np.all(np.isfinite(self.w_scale) & (self.w_scale > 0)):
            raise ArgumentError("QuantizedLinear.w_scale must be finite and > 0")
        o = self.outliers
        expect_dtype("QuantizedLinear.outliers", o, np.int32)
        if o.ndim != 1 or (len(o) and (o.min() < 0 or o.max() >= K or np.any(np.diff(o) <= 0))):
            raise ShapeError(f"QuantizedLinear.outliers must be sorted distinct channels in [0, {K})")
        expect_dtype("QuantizedLinear.outlier_weight", self.outlier_weight, np.float32)
        if self.outlier_weight.shape != (N, len(o)):
            raise ShapeError(f"QuantizedLinear.outlier_weight: expected shape {(N, len(o))}, "
                             f"got {self.outlier_weight.shape}")
        if len(o) and np.any(self.dense_codes()[:, o]):
            raise ArgumentError("QuantizedLinear: the s8 codes of outlier channels must be 0")
        return self


# ---- the dispatched ops (fdbert.ops has the public twins; backends implement the same names) -----
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
