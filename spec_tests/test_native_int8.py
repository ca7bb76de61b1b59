"""The native quantize_u8 / dequantize_u8 (fdbert_native._fp32) against fdbert.int8, the reference of
the one rounding rule: bit for bit, on every ISA path this machine can run and for 1-4 threads, ties
(round half to even), overflow to the u8 range, invalid quantization parameters.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fdbert
import fdbert.ops
from fdbert import int8

import native_ext

pytestmark = [pytest.mark.native_only,
              # the reference's own x / scale and (q - zp) * scale overflow to inf on purpose
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

_fp32 = native_ext.load("_fp32")
import fdbert_native.ops as nops  # noqa: E402
from fp32_checks import rng_of  # noqa: E402
from strategies import scales, zero_points  # noqa: E402
from thread_checks import run_all_threads  # noqa: E402

ISA_PARAMS = native_ext.isa_params(_fp32)

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# A size above the kernels' one-thread cutoff (fp32_ops.c PARALLEL_MIN), with a 16-lane tail.
BIG = 70_001


# ---- quantize / dequantize: bit-exact with fdbert.int8 ------------------------------------------------------


def _ties(scale):  # x with x / scale exactly k + 1/2 (scale a power of two): both parities, both signs
    k = np.arange(-300, 300, dtype=np.float32)
    return ((k + np.float32(0.5)) * np.float32(scale)).astype(np.float32)


@SETTINGS
@given(x=hnp.arrays(np.float32, st.integers(0, 200), elements=st.floats(width=32, allow_nan=False)),
       scale=scales, zero_point=zero_points)
@example(x=_ties(0.25), scale=0.25, zero_point=128)
@example(x=_ties(1.0), scale=1.0, zero_point=0)
@example(x=_ties(2.0**-10), scale=2.0**-10, zero_point=255)
@example(x=np.array([-0.0, 0.0, -1e-45, 1e-45, 127.5, 128.5, -0.5, 0.5, 1.5, 2.5, 254.5, 255.5, 1e9,
                     -1e9, np.inf, -np.inf, 3.4e38, -3.4e38], np.float32), scale=1.0, zero_point=0)
@example(x=np.array([2.0**23, 2.0**23 + 1, 2.0**24, -(2.0**23) - 1], np.float32), scale=1.0, zero_point=128)
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_quantize_u8_bit_exact(isa, x, scale, zero_point):
    want = int8.quantize_u8(x, scale, zero_point)
    got = _fp32.quantize_u8(x, np.float32(scale), zero_point, np.empty(x.shape, np.uint8), isa=isa)
    assert np.array_equal(got, want)
    with fdbert.set_backend("native", only=True):
        assert np.array_equal(fdbert.ops.quantize_u8(x, scale, zero_point), want)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_quantize_ties_round_half_even(isa):
    """x / s = k + 0.5 exactly: rint picks the even k (roundf, half-away, would not)."""
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, 100.5, 101.5], np.float32)
    got = _fp32.quantize_u8(x, np.float32(1.0), 10, np.empty(8, np.uint8), isa=isa)
    assert got.tolist() == [10, 12, 12, 14, 10, 8, 110, 112]


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_quantize_large_threads(isa):
    x = rng_of(4).normal(0, 5, BIG).astype(np.float32)
    want = int8.quantize_u8(x, 0.037, 113)
    got = run_all_threads(lambda nt: _fp32.quantize_u8(x, np.float32(0.037), 113, np.empty(BIG, np.uint8),
                                                       isa=isa, num_threads=nt))
    assert np.array_equal(got, want)


@SETTINGS
@given(scale=st.one_of(scales, st.floats(2.0**-126, 2.0**126, width=32)), zero_point=zero_points,
       reps=st.integers(1, 3))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_dequantize_u8_bit_exact(isa, scale, zero_point, reps):
    q = np.tile(np.arange(256, dtype=np.uint8), reps)[: 256 * reps - reps]  # every code, a tail
    want = int8.dequantize_u8(q, scale, zero_point)
    got = _fp32.dequantize_u8(q, np.float32(scale), zero_point, np.empty(q.shape, np.float32), isa=isa)
    assert got.tobytes() == want.tobytes()
    big = np.resize(q, BIG)
    got = run_all_threads(lambda nt: _fp32.dequantize_u8(big, np.float32(scale), zero_point,
                                                         np.empty(BIG, np.float32), isa=isa, num_threads=nt))
    assert got.tobytes() == int8.dequantize_u8(big, scale, zero_point).tobytes()


def test_quantize_invalid_qparams_raise_like_the_reference():
    x = np.zeros(4, np.float32)
    for scale, zp in ((0.0, 0), (-1.0, 0), (np.inf, 0), (1.0, 256), (1.0, -1), (1.0, 1.5)):
        with pytest.raises(ValueError):
            nops.quantize_u8(x, scale, zp)
        with pytest.raises(ValueError):
            int8.quantize_u8(x, scale, zp)
