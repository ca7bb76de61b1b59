"""fdbert_native's decoder ops (rms_norm, rope, silu_mul, decoder_attention) equal the reference:
on every ISA path the CPU can run, at 1 and 2 threads, Hypothesis-drawn shapes with 16-lane tails."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fdbert
import fdbert_native
from fdbert import reference as ref
from fdbert.reference.rope import rope_angles

pytestmark = [pytest.mark.native_only]

if not fdbert_native.AVAILABLE:
    pytest.skip(f"native backend unavailable: {fdbert_native.UNAVAILABLE_REASON}", allow_module_level=True)
_decoder = pytest.importorskip("fdbert_native._decoder", reason="fdbert_native._decoder is not built")
import fdbert_native.ops as nops  # noqa: E402

# ---- named tolerances -------------------------------------------------------------------------------
# rms_norm: the sum of squares runs in 16 lanes (NumPy sums pairwise); one rounding of sum / D and of
# the sqrt differ at most by a few ulp of d, which every output inherits: RMS_RTOL ~ 8 ulp.
RMS_RTOL = 1e-6
# silu_mul: the AVX-512 exp is within 1 ulp (fp32_vecmath.h), NumPy's within 3; 1 + e, the division
# and the product add one rounding each: 8 ulp relative. The atol covers results that underflow.
SILU_RTOL = 1e-6
SILU_ATOL = 1e-30
# decoder_attention is the float32 attention kernel on repeated heads: test_native_fp32's bound,
# here with |q|, |k|, |v| ~ 1 and Dh <= 32 (scores of a few units).
ATTN_ATOL = 2e-5

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ISA_PARAMS = [pytest.param(isa, marks=pytest.mark.skipif(not _decoder.isa_supported(isa),
              reason=f"the {isa} path cannot run here")) for isa in _decoder.ISAS]
THREADS = [1, 2]
widths = st.one_of(st.integers(1, 40), st.sampled_from([15, 16, 17, 33, 576, 1536]))
seeds = st.integers(0, 2**32 - 1)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISA_PARAMS)
@SETTINGS
@given(n=st.integers(0, 9), D=widths, seed=seeds, eps=st.sampled_from([1e-6, 1e-5]),
       scale=st.sampled_from([1e-3, 1.0, 100.0]))
@example(n=70, D=576, seed=0, eps=1e-5, scale=1.0)   # past the one-thread cutoff (32,768 elements)
def test_rms_norm_vs_reference(isa, threads, n, D, seed, eps, scale):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, D)) * scale).astype(np.float32)
    w = (1 + 0.2 * rng.standard_normal(D)).astype(np.float32)
    got = _decoder.rms_norm(x, w, eps, np.empty_like(x), isa=isa, num_threads=threads)
    want = ref.rms_norm(x, w, eps)
    np.testing.assert_allclose(got, want, rtol=RMS_RTOL, atol=0)


def test_rms_norm_paths_agree_bit_for_bit():
    if not _decoder.isa_supported("avx512"):
        pytest.skip("no AVX-512 here")
    x = np.random.default_rng(1).standard_normal((7, 1001)).astype(np.float32)
    w = np.ones(1001, np.float32)
    a = _decoder.rms_norm(x, w, 1e-5, np.empty_like(x), isa="generic")
    b = _decoder.rms_norm(x, w, 1e-5, np.empty_like(x), isa="avx512")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISA_PARAMS)
@SETTINGS
@given(n=st.integers(0, 9), H=st.integers(1, 5), half=st.one_of(st.integers(1, 20), st.just(32)), seed=seeds)
@example(n=300, H=9, half=32, seed=0)
def test_rope_is_the_reference_bit_for_bit(isa, threads, n, H, half, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, H, 2 * half)).astype(np.float32)
    cos, sin = rope_angles(rng.integers(0, 8192, n), np.float32(0.7) ** np.arange(half, dtype=np.float32))
    got = _decoder.rope(x, cos, sin, np.empty_like(x), isa=isa, num_threads=threads)
    np.testing.assert_array_equal(got, ref.rope(x, cos, sin))


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISA_PARAMS)
@SETTINGS
@given(n=widths, seed=seeds, scale=st.sampled_from([0.1, 3.0, 40.0]))
@example(n=70_001, seed=0, scale=3.0)
def test_silu_mul_vs_reference(isa, threads, n, seed, scale):
    rng = np.random.default_rng(seed)
    g = (rng.standard_normal(n) * scale).astype(np.float32)
    u = rng.standard_normal(n).astype(np.float32)
    got = _decoder.silu_mul(g, u, np.empty_like(g), isa=isa, num_threads=threads)
    with np.errstate(over="ignore"):
        want = ref.silu_mul(g, u)
    np.testing.assert_allclose(got, want, rtol=SILU_RTOL, atol=SILU_ATOL)


def test_silu_mul_extremes():
    g = np.array([-200, -100, -88, 0, 88, 100, 200], np.float32)
    got = nops.silu_mul(g, np.ones_like(g))
    np.testing.assert_allclose(got, [0, -100 * np.exp(-100), -88 * np.exp(-88), 0, 88, 100, 200], atol=1e-30, rtol=1e-6)


@SETTINGS
@given(data=st.data())
def test_decoder_attention_vs_reference(data):
    Hkv = data.draw(st.integers(1, 3))
    H = Hkv * data.draw(st.integers(1, 3))
    Dh = data.draw(st.sampled_from([1, 4, 16, 32]))
    Lk = data.draw(st.lists(st.integers(1, 20), min_size=1, max_size=4))
    Lq = [data.draw(st.integers(1, k)) for k in Lk]
    rng = np.random.default_rng(data.draw(seeds))
    cu_q = np.concatenate([[0], np.cumsum(Lq)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(Lk)]).astype(np.int32)
    q = rng.standard_normal((cu_q[-1], H, Dh)).astype(np.float32)
    k = rng.standard_normal((cu_k[-1], Hkv, Dh)).astype(np.float32)
    v = rng.standard_normal((cu_k[-1], Hkv, Dh)).astype(np.float32)
    got = nops.decoder_attention(q, k, v, cu_q, cu_k)
    np.testing.assert_allclose(got, ref.decoder_attention(q, k, v, cu_q, cu_k), atol=ATTN_ATOL, rtol=0)


def test_the_backend_runs_the_native_ops():
    x = np.ones((2, 4, 8), np.float32)
    cos = np.ones((2, 4), np.float32)
    with fdbert.set_backend("native", only=True):
        fdbert.ops.rope(x, cos, cos)
        fdbert.ops.rms_norm(x.reshape(8, 8), np.ones(8, np.float32), 1e-5)
        fdbert.ops.silu_mul(x, x)
    paths = nops.op_paths()
    assert {paths[op] for op in nops.DECODER_OPS} <= set(_decoder.ISAS)


def test_native_declines_what_it_cannot_take():
    with fdbert.set_backend("native", only=True):
        with pytest.raises(fdbert.BackendError, match="rope: x has dtype float64"):
            fdbert.ops.rope(np.ones((1, 1, 2)), np.ones((1, 1), np.float32), np.ones((1, 1), np.float32))
    with fdbert.set_backend("native"):   # falls back to the reference
        assert fdbert.ops.rms_norm(np.ones((1, 4)), np.ones(4), 0.0).dtype == np.float64
