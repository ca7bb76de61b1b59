"""fdbert's INT8 arithmetic, defined once: integer ranges, the rounding rule, quantize / dequantize,
and models of what each x86 dot-product instruction computes.

Scheme (Fast DistilBERT, Shen et al. 2022, sec. 3.2; docs/int8.md has the derivations):

    activations  static per-tensor asymmetric u8   q = clip(rint(x / s) + z, 0, 255),  x ~ (q - z) * s
    weights      symmetric per-output-channel s8    wq = clip(rint(W / s_w[n]), -127, 127)
    products     u8 x s8 accumulated in int32       acc[m, n] = sum_k xq[m, k] * wq[n, k]

ONE rounding rule everywhere: ``rint``, round half to even, applied to a float32 value. It is what
``np.rint`` does and what the x86 conversion ``cvtps2dq`` does under the default MXCSR mode; C's
``roundf`` (half away from zero) is NOT it (``roundf(2.5f) == 3``, ``rint(2.5f) == 2``).

The instruction models (:func:`dot_u8s8`) exist so tests can show exactly where a kernel that uses
a saturating instruction would disagree with the exact product (ONNX Runtime issues 5849, 6004).
"""

from __future__ import annotations

import numpy as np

from .errors import ArgumentError, ShapeError, expect_dtype

# ---- integer bounds (the table in docs/int8.md) ------------------------------------------------
U8_MIN, U8_MAX = 0, 255            # activation codes
S8_MIN, S8_MAX = -127, 127         # weight codes: -128 is never produced (symmetric range)
S16_MIN, S16_MAX = -(2 ** 15), 2 ** 15 - 1
S32_MIN, S32_MAX = -(2 ** 31), 2 ** 31 - 1
MAX_PRODUCT = U8_MAX * S8_MAX      # 32,385 = largest |u8 * s8| with weights in [-127, 127]
# Largest K for which every int32 accumulator sum_k xq*wq (and sum_k (xq - z)*wq) is exact:
K_MAX = S32_MAX // MAX_PRODUCT     # 66,311

F32_TINY = np.finfo(np.float32).tiny  # smallest normal float32; smaller scales count as zero
ROUNDING = "rint: round half to even (np.rint, cvtps2dq with default MXCSR); not C roundf"


def round_half_even(x):  # f32 [...] -> f32 [...]
    """rint(x): nearest integer, ties to even. The only rounding used by fdbert's INT8 path."""
    return np.rint(x)


# ---- activations: static per-tensor asymmetric u8 ----------------------------------------------
def activation_qparams(lo, hi):  # (float, float) -> (f32 scale, int zero_point)
    """s = (hi' - lo') / 255, z = clip(rint(-lo' / s), 0, 255), with [lo', hi'] = [min(lo,0), max(hi,0)].

    The range is widened to contain 0 so that x = 0 (padding, ReLU/GELU zeros) is exactly the code z.
    All-zero range (lo' == hi' == 0), or one so narrow that s would be subnormal or 0 in float32:
    s = 1.0, z = 0, so quantize never divides by zero.
    Computed in float64 then rounded to float32 once; these are calibration results, stored, never
    recomputed by a kernel.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ArgumentError(f"calibration range must be finite, got [{lo}, {hi}]")
    scale = np.float32((hi - lo) / U8_MAX)
    if scale < F32_TINY:  # all-zero (or subnormally narrow) range: nothing to resolve
        return np.float32(1.0), 0
    zero_point = int(np.clip(np.rint(-lo / np.float64(scale)), U8_MIN, U8_MAX))
    return scale, zero_point


def quantize_u8(x, scale, zero_point):  # f32 [...] -> u8 [...]
    """q = clip(rint(x / s) + z, 0, 255), every step in float32, then cast to uint8.

    ``x / s`` is one IEEE float32 division (not a multiplication by 1/s, which rounds differently).
    The clip happens in float, before the cast: a kernel that converts to int32 first must do the
    same, because cvtps2dq maps values beyond int32 to INT32_MIN. NaN inputs are not supported.
    """
    expect_dtype("quantize_u8: x", x, np.float32)
    check_qparams("quantize_u8", scale, zero_point)
    q = round_half_even(x / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, np.float32(U8_MIN), np.float32(U8_MAX)).astype(np.uint8)


def dequantize_u8(q, scale, zero_point):  # u8 [...] -> f32 [...]
    """x = (q - z) * s, in float32 ((q - z) is an exact small integer)."""
    expect_dtype("dequantize_u8: q", q, np.uint8)
    check_qparams("dequantize_u8", scale, zero_point)
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def check_qparams(where, scale, zero_point):
    """Raise ArgumentError (a ValueError) unless scale is a finite float32 > 0 and zero_point an integer in [0, 255]."""
    try:
        s = np.float32(scale)
    except (TypeError, ValueError):
        s = np.float32(np.nan)
    if isinstance(scale, bool) or np.size(scale) != 1 or not (np.isfinite(s) and s > 0):
        raise ArgumentError(f"{where}: scale must be a finite float32 > 0, got {scale!r}")
    try:
        ok = int(zero_point) == zero_point and U8_MIN <= int(zero_point) <= U8_MAX
    except (TypeError, ValueError, OverflowError):
        ok = False
    if isinstance(zero_point, bool) or np.size(zero_point) != 1 or not ok:
        raise ArgumentError(f"{where}: zero_point must be an integer in [0, 255], got {zero_point!r}")


# ---- weights: symmetric per-output-channel s8 --------------------------------------------------
def weight_scales(w):  # f32 [N, K] -> f32 [N]
    """s_w[n] = max_k |W[n, k]| / 127 in float32; an all-zero row (or one whose s_w would be
    subnormal) gets s_w = 1.0, and then codes 0."""
    expect_dtype("weight_scales: W", w, np.float32)
    _expect_ndim("weight_scales: W", w, 2)
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = amax / np.float32(S8_MAX)
    return np.where(scale >= F32_TINY, scale, np.float32(1.0)).astype(np.float32)


def quantize_weight_s8(w, scales=None):  # f32 [N, K] (, f32 [N]) -> (s8 [N, K], f32 [N])
    """wq = clip(rint(W / s_w[:, None]), -127, 127) as int8, with s_w from :func:`weight_scales`."""
    expect_dtype("quantize_weight_s8: W", w, np.float32)
    _expect_ndim("quantize_weight_s8: W", w, 2)
    scales = weight_scales(w) if scales is None else np.asarray(scales, np.float32)
    q = np.clip(round_half_even(w / scales[:, None]), np.float32(S8_MIN), np.float32(S8_MAX))
    return q.astype(np.int8), scales


def dequantize_weight_s8(wq, scales):  # s8 [N, K], f32 [N] -> f32 [N, K]
    """W ~ wq * s_w[:, None]"""
    expect_dtype("dequantize_weight_s8: wq", wq, np.int8)
    return wq.astype(np.float32) * np.asarray(scales, np.float32)[:, None]


def check_weight_codes(wq, where="weight"):
    """Raise ArgumentError (a ValueError) if an s8 weight holds -128 (outside the symmetric range [-127, 127])."""
    expect_dtype(f"{where}", wq, np.int8)
    if wq.size and int(wq.min()) < S8_MIN:
        raise ArgumentError(f"{where}: s8 weight codes must lie in [-127, 127]; found -128")


def _expect_ndim(name, a, ndim):
    if a.ndim != ndim:
        raise ShapeError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")


# ---- the u8 x s8 dot product, exact and as each instruction computes it ------------------------
INSTRUCTIONS = ("exact", "vpdpbusd", "vpdpbusds", "vpmaddubsw", "vpmaddwd")


def _wrap32(v):  # int64 -> int64 in [-2^31, 2^31): two's-complement wrap-around
    return (v + 2 ** 31) % 2 ** 32 - 2 ** 31


def _sat(v, lo, hi):
    return np.clip(v, lo, hi)


def dot_u8s8(x, w, *, instruction="exact", acc=None):  # u8 [M, K], s8 [N, K] (, s32 [M, N]) -> s32 [M, N]
    """acc[m, n] + sum_k x[m, k] * w[n, k], computed the way ``instruction`` computes it.

    ``acc`` is the int32 accumulator the instruction starts from (zeros by default). K runs in groups
    of 4 (2 for the int16 pair step); a K that is not a multiple of 4 is zero-padded, as kernels pad.
    One accumulator per (m, n), groups added in increasing k (a real kernel spreads k over 16 lanes
    and sums them at the end; wrap-around results do not depend on that order, saturating ones can).

    exact       the mathematical sum; raises OverflowError if it leaves int32 (never for K <= K_MAX).
    vpdpbusd    AVX-512 VNNI: acc += sum of 4 u8*s8 products, exactly, in int32 that WRAPS on overflow.
    vpdpbusds   the same but the int32 add SATURATES to [-2^31, 2^31 - 1].
    vpmaddubsw  AVX2/AVX-512BW: t16 = sat16(x[2j]*w[2j] + x[2j+1]*w[2j+1]) (saturating int16 pair sum,
                wrong when a pair exceeds 32,767, e.g. 255*127 + 255*127), then vpmaddwd(t16, 1) adds
                int16 pairs into int32 and vpaddd wraps. The naive non-VNNI path of ONNX Runtime 5849/6004.
    vpmaddwd    the safe fallback: widen x (vpmovzxbw) and w (vpmovsxbw) to int16, vpmaddwd sums int16
                products pairwise into int32 exactly (|pair| <= 64,770), vpaddd wraps. Equals vpdpbusd.
    """
    expect_dtype("dot_u8s8: x", x, np.uint8)
    expect_dtype("dot_u8s8: w", w, np.int8)
    _expect_ndim("dot_u8s8: x", x, 2)
    _expect_ndim("dot_u8s8: w", w, 2)
    if x.shape[1] != w.shape[1]:
        raise ShapeError(f"dot_u8s8: x has K={x.shape[1]} columns but w has K={w.shape[1]}")
    if instruction not in INSTRUCTIONS:
        raise ArgumentError(f"dot_u8s8: instruction must be one of {INSTRUCTIONS}, got {instruction!r}")
    M, K = x.shape
    N = w.shape[0]
    acc0 = np.zeros((M, N), np.int64) if acc is None else np.asarray(acc, np.int32).astype(np.int64)
    if acc0.shape != (M, N):
        raise ShapeError(f"dot_u8s8: acc must have shape {(M, N)}, got {acc0.shape}")
    Kp = -(-K // 4) * 4
    xp = np.zeros((M, Kp), np.int64)
    xp[:, :K] = x
    wp = np.zeros((N, Kp), np.int64)
    wp[:, :K] = w
    # products[m, n, k] in int64: exact, |p| <= 255 * 128
    if instruction == "exact":
        total = acc0 + xp @ wp.T
        if total.size and (total.min() < S32_MIN or total.max() > S32_MAX):
            raise OverflowError("dot_u8s8: the exact sum leaves int32 (K too large or acc too close to "
                                "the int32 bounds)")
        return total.astype(np.int32)
    prods = xp[:, None, :] * wp[None, :, :]                            # [M, N, Kp]
    if instruction in ("vpdpbusd", "vpdpbusds"):
        quads = prods.reshape(M, N, Kp // 4, 4).sum(axis=3)            # exact: |quad| <= 130,560
    elif instruction == "vpmaddubsw":
        pairs = _sat(prods.reshape(M, N, Kp // 2, 2).sum(axis=3), S16_MIN, S16_MAX)  # int16, saturated
        quads = pairs.reshape(M, N, Kp // 4, 2).sum(axis=3)            # vpmaddwd with ones: exact
    else:  # vpmaddwd: widened int16 operands, pair sums exact in int32
        pairs = prods.reshape(M, N, Kp // 2, 2).sum(axis=3)
        quads = pairs.reshape(M, N, Kp // 4, 2).sum(axis=3)
    out = acc0.copy()
    for g in range(Kp // 4):                                           # one instruction per group
        if instruction == "vpdpbusds":
            out = _sat(out + quads[:, :, g], S32_MIN, S32_MAX)
        else:
            out = _wrap32(out + quads[:, :, g])
    return out.astype(np.int32)


def matmul_u8s8_s32(x, w):  # u8 [M, K], s8 [N, K] -> s32 [M, N]
    """acc = x @ w.T, exact, in int32: the accumulators of every quantized linear.

    Computed as a float64 BLAS product: every partial sum is an integer of magnitude
    <= K * 32,640 < 2^53, so float64 arithmetic is exact in any summation order. Requires
    K <= K_MAX so that the result (and acc - comp) is exact in int32.
    """
    expect_dtype("matmul_u8s8_s32: x", x, np.uint8)
    expect_dtype("matmul_u8s8_s32: w", w, np.int8)
    _expect_ndim("matmul_u8s8_s32: x", x, 2)
    _expect_ndim("matmul_u8s8_s32: w", w, 2)
    if x.shape[1] != w.shape[1]:
        raise ShapeError(f"matmul_u8s8_s32: x has K={x.shape[1]} columns but w has K={w.shape[1]}")
    if x.shape[1] > K_MAX:
        raise ShapeError(f"matmul_u8s8_s32: K={x.shape[1]} > K_MAX={K_MAX}: int32 could overflow")
    return (x.astype(np.float64) @ w.astype(np.float64).T).astype(np.int32)


__all__ = ["U8_MIN", "U8_MAX", "S8_MIN", "S8_MAX", "S16_MIN", "S16_MAX", "S32_MIN", "S32_MAX",
           "MAX_PRODUCT", "K_MAX", "F32_TINY", "ROUNDING", "INSTRUCTIONS", "round_half_even", "activation_qparams",
           "quantize_u8", "dequantize_u8", "weight_scales", "quantize_weight_s8", "dequantize_weight_s8",
           "check_weight_codes", "check_qparams", "dot_u8s8", "matmul_u8s8_s32"]

