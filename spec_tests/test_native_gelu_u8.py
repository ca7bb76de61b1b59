"""GELU feeding a u8 requantization (FFN1 of the INT8 block) takes a cheap float32 erf first and
falls back to the exact one only where rint(gelu(y) / scale) could differ (qgemm.c,
gelu16_rint_for_u8_avx512 and its 8-lane AVX2 twin). The u8 codes must be those of the exact path: compared bit for bit with
the generic C path (exact erf, scalar) and with float32 GELU on scipy's erf, on millions of inputs,
many of them placed right at rounding boundaries."""

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
