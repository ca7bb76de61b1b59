"""The native backend's ``qlinear`` / ``qlinear_s32`` ops (fdbert_native/ops.py) vs the reference ops,
through ``fdbert.ops`` dispatch, on every ISA path: the layer objects the model holds
(QuantizedLinear, dense or 1x4 BSR), packed once and cached, and a whole Fast encoder.

Integer accumulators: exact. Float32 outputs without GELU: exact (same IEEE operations in the same
order, no FMA). With GELU: the native backend's one erf (csrc/fp32_vecmath.h) and the reference's
scipy.special.erf are both the correctly rounded float32 erf except within ~1e-15 of a rounding tie,
so they may differ by an ulp on rare inputs (observed: never, here), and test_native_qgemm.py's
bounds apply: GELU_F32_ULPS ulp(ref) + GELU_ERF_ATOL |y before GELU| for float32, GELU_U8_ATOL for u8.
"""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fdbert
import fdbert_native
import native_ext
from fdbert.weights import QuantizedLinear

pytestmark = pytest.mark.native_only
_qgemm = native_ext.load("_qgemm")

from tolerances import GELU_ERF_ATOL, GELU_F32_ULPS, GELU_U8_ATOL, INT8_MINILM_BACKENDS_MIN_COSINE  # noqa: E402

# ISA paths, each forced by disabling the features of the paths above it.
ISA_DISABLE = {"avx512vnni": set(), "avx512": {"avx512vnni", "avx_vnni"},
               "avx2_vnni": {"avx512f"}, "avx2": {"avx512f", "avx_vnni"}, "generic": {"avx2"}}


def _layer(rng, N, K, density, sparse, x_zp):
    W = rng.normal(size=(N, K)).astype(np.float32)
    if density < 1.0:
        keep = rng.random((N, -(-K // 4))) < density
        W *= np.repeat(keep, 4, axis=1)[:, :K]
    return QuantizedLinear.from_float(W, rng.normal(size=N).astype(np.float32), np.float32(0.03), x_zp,
                                      block=(1, 4) if sparse else None)


@settings(max_examples=60, deadline=None)
@given(M=st.integers(1, 70), N=st.integers(1, 90), K=st.integers(1, 150),
       density=st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0]), sparse=st.booleans(),
       x_zp=st.integers(0, 255), seed=st.integers(0, 2**31 - 1),
       isa=st.sampled_from(sorted(ISA_DISABLE)))
@example(M=1, N=1, K=1, density=1.0, sparse=False, x_zp=0, seed=0, isa="avx512vnni")
@example(M=3, N=17, K=67, density=0.0, sparse=True, x_zp=255, seed=1, isa="avx512vnni")  # empty rows
@example(M=64, N=16, K=131, density=1.0, sparse=True, x_zp=128, seed=2, isa="avx2")      # full rows
def test_qlinear_native_equals_reference(M, N, K, density, sparse, x_zp, seed, isa):
    rng = np.random.default_rng(seed)
    q = _layer(rng, N, K, density, sparse, x_zp)
    x = rng.choice(np.array([0, 255], np.uint8), size=(M, K)) if seed % 3 == 0 else \
        rng.integers(0, 256, (M, K), dtype=np.uint8)
    res = rng.normal(size=(M, N)).astype(np.float32)
    calls = [dict(), dict(residual=res), dict(out_scale=0.07, out_zero_point=11),
             dict(gelu=True), dict(gelu=True, residual=res, out_scale=0.05, out_zero_point=3)]
    with fdbert.set_backend("reference"):
        ref_acc = fdbert.ops.qlinear_s32(x, q)
        refs = [fdbert.ops.qlinear(x, q, **kw) for kw in calls]
    with fdbert_native.disabled_cpu_features(ISA_DISABLE[isa]), fdbert.set_backend("native", only=True):
        acc = fdbert.ops.qlinear_s32(x, q)
        outs = [fdbert.ops.qlinear(x, q, **kw) for kw in calls]
    np.testing.assert_array_equal(acc, ref_acc)
    exact = (x.astype(np.int64) @ q.dense_codes().astype(np.int64).T)
    np.testing.assert_array_equal(acc.astype(np.int64), exact)
    pre_gelu = refs[0]                                  # y = float32(acc - comp) * mult + bias
    for kw, got, ref in zip(calls, outs, refs):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        if not kw.get("gelu"):
            np.testing.assert_array_equal(got, ref, err_msg=str(kw))
        elif ref.dtype == np.uint8:
            assert np.abs(got.astype(int) - ref).max(initial=0) <= GELU_U8_ATOL, kw
        else:
            bound = GELU_F32_ULPS * np.spacing(np.abs(ref)) + GELU_ERF_ATOL * np.abs(pre_gelu)
            assert np.all(np.abs(got - ref) <= bound), (kw, np.max(np.abs(got - ref) - bound))


@pytest.mark.parametrize("M, N, K", [(64, 16, 64), (100, 37, 131), (128, 96, 768)])
def test_sparse_weights_on_amx_give_the_spmm_bits(M, N, K):
    """With AMX a block-sparse weight runs on the dense AMX GEMM from AMX_AUTO_MIN_M rows
    (fdbert_native.ops._dense_on_amx): the same accumulators and outputs as the SpMM."""
    rng = np.random.default_rng(M + N + K)
    q = _layer(rng, N, K, 0.2, True, 7)
    x = rng.integers(0, 256, (M, K), dtype=np.uint8)
    res = rng.normal(size=(M, N)).astype(np.float32)
    calls = [dict(), dict(residual=res), dict(out_scale=0.07, out_zero_point=11),
             dict(gelu=True, out_scale=0.05, out_zero_point=3)]
    with fdbert.set_backend("native", only=True):
        with fdbert_native.disabled_cpu_features({"amx_int8"}):   # the SpMM
            spmm = [fdbert.ops.qlinear_s32(x, q)] + [fdbert.ops.qlinear(x, q, **kw) for kw in calls]
        assert "native-dense" not in q.packed
        got = [fdbert.ops.qlinear_s32(x, q)] + [fdbert.ops.qlinear(x, q, **kw) for kw in calls]
    if not _qgemm.amx_auto(M, N, K):
        pytest.skip("AMX-INT8 is not usable here: both runs took the SpMM")
    assert "native-dense" in q.packed
    for a, b in zip(got, spmm):
        np.testing.assert_array_equal(a, b)


def test_weights_are_packed_once_and_cached():
    rng = np.random.default_rng(0)
    q = _layer(rng, 32, 64, 0.2, True, 5)
    x = rng.integers(0, 256, (4, 64), dtype=np.uint8)
    with fdbert.set_backend("native", only=True):
        fdbert.ops.qlinear(x, q)
        packed = q.packed["native"]
        fdbert.ops.qlinear(x, q)
    assert q.packed["native"] is packed


def test_inputs_the_kernels_cannot_take_are_declined_not_coerced():
    rng = np.random.default_rng(0)
    q = _layer(rng, 8, 12, 1.0, False, 0)
    x = rng.integers(0, 256, (4, 24), dtype=np.uint8)[:, ::2]   # non-contiguous view
    with fdbert.set_backend("native", only=True), pytest.raises(fdbert.BackendError, match="C-contiguous"):
        fdbert.ops.qlinear(x, q)
    with fdbert.set_backend("native"):  # falls back to the reference, which accepts the view
        np.testing.assert_array_equal(fdbert.ops.qlinear_s32(x, q),
                                      x.astype(np.int64) @ q.weight.astype(np.int64).T)
    wide = QuantizedLinear.from_float(rng.normal(size=(8, 12)).astype(np.float32), None, 0.1, 0,
                                      block=(4, 1))
    with fdbert.set_backend("native", only=True), pytest.raises(fdbert.BackendError, match="blocksize"):
        fdbert.ops.qlinear(np.ascontiguousarray(x), wide)


@pytest.mark.slow
def test_fast_minilm_native_equals_reference(minilm, polarity_sentences):
    """A whole Fast (80% 1x4 sparse, INT8) and a dense INT8 all-MiniLM-L6-v2 on the native backend vs
    the reference. The integer ops agree exactly, but native LayerNorm/attention differ from NumPy's
    by float rounding, which can flip a u8 code downstream; so the comparison is at the embedding level:
    cosine >= INT8_MINILM_BACKENDS_MIN_COSINE for every sentence."""
    from pathlib import Path
    calib = Path(fdbert.__file__).parent.joinpath("data", "calibration.txt").read_text().splitlines()[:64]
    texts = polarity_sentences[:64]
    for model in (fdbert.quantize(minilm, calib, progress=False, measure_error=False),
                  fdbert.quantize(fdbert.prune(minilm, 0.8), calib, progress=False, measure_error=False)):
        with fdbert.set_backend("reference"):
            ref = model.encode(texts)
        with fdbert.set_backend("native"):
            got = model.encode(texts)
        assert (ref * got).sum(axis=1).min() >= INT8_MINILM_BACKENDS_MIN_COSINE
