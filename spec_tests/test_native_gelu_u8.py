"""GELU feeding a u8 requantization takes a cheap float32 erf first and falls back to the exact one
only where rint(gelu(y) / scale) could differ (csrc/qepilogue.c, gelu_rint_u8_avx512 and its 8-lane
AVX2 twin): in the INT8 GEMM's fused epilogue (FFN1 of the INT8 block) and in gelu_quantize_u8 (the
same FFN when it has float outlier channels). The u8 codes must be those of the exact path: compared
bit for bit with the generic C path (exact erf, scalar) and with float32 GELU on scipy's erf, on
millions of inputs, many of them placed right at rounding boundaries."""

import numpy as np
import pytest

import native_ext

pytestmark = pytest.mark.native_only
q = native_ext.load("_qgemm")
special = pytest.importorskip("scipy.special")
FAST = [isa for isa in q.supported_isas() if isa != "generic"]
if not FAST:
    pytest.skip("no SIMD path on this CPU", allow_module_level=True)


def gelu_f32(y):  # the contract's float32 GELU with the correctly rounded erf
    t = (y * np.float32(0.70710678118654752)).astype(np.float32)
    e = special.erf(t.astype(np.float64)).astype(np.float32)
    return ((np.float32(0.5) * y) * (np.float32(1) + e)).astype(np.float32)


def requant(g, scale, zp):
    return np.clip(np.rint(g / np.float32(scale)) + np.float32(zp), 0, 255).astype(np.uint8)


def boundary_inputs(rng, scale, n):
    """y values whose gelu(y) / scale lies within a few ulps of k + 0.5."""
    y = rng.uniform(-6, 12, n).astype(np.float32)
    for _ in range(3):   # Newton steps towards gelu(y) = (round(gelu/scale - .5) + .5) * scale
        g = gelu_f32(y).astype(np.float64)
        target = (np.floor(g / scale) + 0.5) * scale
        cdf = 0.5 * (1 + special.erf(y / np.sqrt(2)))
        slope = cdf + y * np.exp(-0.5 * y.astype(np.float64) ** 2) / np.sqrt(2 * np.pi)
        y = (y + (target - g) / np.where(np.abs(slope) > 1e-3, slope, 1e-3)).astype(np.float32)
    steps = rng.integers(-8, 9, n)
    return (y.view(np.int32) + steps.astype(np.int32)).view(np.float32)   # a few ulps either side


@pytest.mark.parametrize("isa", FAST)
@pytest.mark.parametrize("scale,zp", [(0.04, 5), (0.0123, 0), (0.5, 128), (1e-3, 17), (3.0, 250)])
def test_gelu_u8_codes_are_the_exact_paths(isa, scale, zp):
    rng = np.random.default_rng(int(scale * 1e4) + zp)
    y = np.concatenate([rng.normal(0, 2, 400_000), rng.uniform(-12, 12, 200_000),
                        boundary_inputs(rng, scale, 400_000),
                        [0.0, -0.0, 1e-30, -1e-30, 5.65685, -5.65685, np.inf, -np.inf]]
                       ).astype(np.float32)
    N = y.size
    x = np.zeros((1, 1), np.uint8)
    packed, _ = q.pack_dense(np.zeros((N, 1), np.int8))
    args = (x, packed, np.zeros(N, np.int32), np.zeros(N, np.float32), y, np.float32(scale), zp)
    fast = q.qgemm_u8(*args, np.empty((1, N), np.uint8), gelu=True, isa=isa)[0]
    exact = q.qgemm_u8(*args, np.empty((1, N), np.uint8), gelu=True, isa="generic")[0]
    np.testing.assert_array_equal(fast, exact)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = requant(gelu_f32(y), scale, zp)
    finite = np.isfinite(y)
    assert np.count_nonzero(fast[finite] != ref[finite]) <= N // 100_000   # erf ties (see kernels.md)


@pytest.mark.parametrize("isa", q.supported_isas())
@pytest.mark.parametrize("scale,zp", [(0.04, 5), (0.5, 128), (3.0, 250)])
def test_gelu_quantize_u8_is_gelu_then_quantize(isa, scale, zp):
    """_qgemm.gelu_quantize_u8 (the unfused FFN of INT8 blocks with float outlier channels) gives
    _fp32.gelu followed by _fp32.quantize_u8, bit for bit, NaN and infinities included; and on finite
    inputs the codes of float32 GELU on scipy's erf."""
    fp = native_ext.load("_fp32")
    rng = np.random.default_rng(int(scale * 100) + zp)
    n = 20_000 if isa == "generic" else 150_000
    y = np.concatenate([rng.normal(0, 2, n), rng.uniform(-12, 12, n // 2), boundary_inputs(rng, scale, n),
                        [0.0, -0.0, 1e-30, -1e-30, np.inf, -np.inf, np.nan, 3e38, -3e38]]
                       ).astype(np.float32)[:-1 - rng.integers(0, 16)]   # a ragged tail
    fused = q.gelu_quantize_u8(y, np.float32(scale), zp, np.empty(y.size, np.uint8), isa=isa)
    unfused = fp.quantize_u8(fp.gelu(y, np.empty_like(y)), np.float32(scale), zp,
                             np.empty(y.size, np.uint8))
    np.testing.assert_array_equal(fused, unfused)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = requant(gelu_f32(y), scale, zp)
    finite = np.isfinite(y)
    assert np.count_nonzero(fused[finite] != ref[finite]) <= y.size // 100_000   # erf ties


def test_gelu_quantize_u8_refuses_bad_parameters():
    x, out = np.zeros(4, np.float32), np.empty(4, np.uint8)
    with pytest.raises(ValueError, match="scale"):
        q.gelu_quantize_u8(x, 0.0, 0, out)
    with pytest.raises(ValueError, match="zero_point"):
        q.gelu_quantize_u8(x, 0.1, 256, out)
    with pytest.raises(ValueError):
        q.gelu_quantize_u8(x, 0.1, 0, np.empty(3, np.uint8))
