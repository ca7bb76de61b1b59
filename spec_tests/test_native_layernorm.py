"""The native layer_norm and its fused layer_norm -> quantize_u8 (fdbert_native._fp32) against the
reference (fdbert/reference/layernorm.py): every ISA path this machine can run (the ``isa=``
argument), 1-4 threads (bit-identical across thread counts), drawn shapes with 16-lane tails, within
tolerances.LN_*; the fused kernel bit for bit with its two parts.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import native_ext

pytestmark = [pytest.mark.native_only,
              # the reference's own x / scale and (q - zp) * scale overflow to inf on purpose
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

_fp32 = native_ext.load("_fp32")
from fp32_checks import assert_layer_norm_close, rng_of  # noqa: E402
from strategies import seeds, widths  # noqa: E402
from thread_checks import run_all_threads  # noqa: E402

ISA_PARAMS = native_ext.isa_params(_fp32)

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- layer_norm ------------------------------------------------------------------------------------------
@SETTINGS
@given(n=st.integers(0, 9), D=widths, seed=seeds, eps=st.sampled_from([1e-12, 1e-5]))
@example(n=8, D=9, seed=932598, eps=1e-12)  # mean 9.5, std 0.15: the conditioning term matters
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_layer_norm_vs_reference(isa, n, D, seed, eps):
    rng = rng_of(seed)
    x = (rng.normal(0, rng.uniform(0.1, 10), (n, D)) + rng.uniform(-10, 10, (n, 1))).astype(np.float32)
    w, b = rng.normal(size=D).astype(np.float32), rng.normal(size=D).astype(np.float32)
    got = run_all_threads(lambda nt: _fp32.layer_norm(x, w, b, eps, np.empty_like(x), isa=isa,
                                                      num_threads=nt))
    assert_layer_norm_close(got, x, w, b, eps)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_layer_norm_constant_rows_give_bias(isa):
    """var = 0: every x - mean is exactly 0 when the sums are exact (small integers), so y = bias."""
    x = np.full((3, 37), 3.0, np.float32)
    w, b = np.full(37, 2.0, np.float32), np.arange(37, dtype=np.float32)
    got = _fp32.layer_norm(x, w, b, 1e-12, np.empty_like(x), isa=isa)
    assert np.array_equal(got, np.broadcast_to(b, x.shape))


def test_layer_norm_paths_agree_bit_for_bit():
    """The generic twin mirrors the 16-lane sums (AVX2 as two 8-lane halves): every path gives the
    same bits (no exp/erf here)."""
    paths = _fp32.supported_isas()
    if len(paths) < 2:
        pytest.skip("this CPU runs the generic path only")
    rng = rng_of(7)
    for D in (1, 7, 8, 9, 15, 16, 17, 24, 100, 768, 1000):
        x = rng.normal(2, 5, (50, D)).astype(np.float32)
        w, b = rng.normal(size=D).astype(np.float32), rng.normal(size=D).astype(np.float32)
        a = _fp32.layer_norm(x, w, b, 1e-5, np.empty_like(x), isa="generic")
        for isa in paths[1:]:
            c = _fp32.layer_norm(x, w, b, 1e-5, np.empty_like(x), isa=isa)
            assert a.tobytes() == c.tobytes(), (isa, D)


@SETTINGS
@given(n=st.integers(0, 9), D=widths, seed=seeds, xscale=st.sampled_from([1e-3, 0.02, 0.3]),
       zp=st.integers(0, 255))
@example(n=3, D=768, seed=0, xscale=0.02, zp=128)
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_layer_norm_quantize_is_layer_norm_then_quantize(isa, n, D, seed, xscale, zp):
    """The fused kernel returns the bytes of layer_norm and of quantize_u8 of its output (same
    path), for 1-4 threads; the f32 output is the layer_norm one."""
    rng = rng_of(seed)
    x = rng.normal(0, 3, (n, D)).astype(np.float32)
    w, b = rng.normal(1, 0.5, D).astype(np.float32), rng.normal(0, 1, D).astype(np.float32)
    s32 = np.float32(xscale)
    y = _fp32.layer_norm(x, w, b, 1e-12, np.empty_like(x), isa=isa)
    yq = _fp32.quantize_u8(y.reshape(-1), s32, zp, np.empty(y.size, np.uint8), isa=isa).reshape(y.shape)
    got = run_all_threads(lambda nt: np.concatenate([a.reshape(-1).view(np.uint8) for a in
                                                     _fp32.layer_norm_quantize_u8(
        x, w, b, 1e-12, np.empty_like(x), s32, zp, np.empty(x.shape, np.uint8), isa=isa,
        num_threads=nt)]))
    np.testing.assert_array_equal(got, np.concatenate([y.reshape(-1).view(np.uint8), yq.reshape(-1)]))


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_layer_norm_many_rows_threads(isa):
    rng = rng_of(11)
    x = rng.normal(size=(200, 771)).astype(np.float32)   # n * D above the one-thread cutoff
    w, b = rng.normal(size=771).astype(np.float32), rng.normal(size=771).astype(np.float32)
    got = run_all_threads(lambda nt: _fp32.layer_norm(x, w, b, 1e-12, np.empty_like(x), isa=isa,
                                                      num_threads=nt))
    assert_layer_norm_close(got, x, w, b, 1e-12)
