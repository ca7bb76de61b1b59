"""The AMX-INT8 path of the native dense INT8 GEMM (fdbert_native._qgemm, isa="amx"; csrc/qgemm_amx.c).

The int32 accumulators must EXACTLY equal the int64 NumPy product, for drawn shapes that cut the
AMX blocking everywhere (M around the 32-row block and 16-row tile, N around the 16-channel
panel and 32-channel block, K around the 64-byte tile depth and the 4-byte k-group), value
extremes and thread counts. The fused epilogue reuses the avx512vnni path's code on the stored
accumulators, so float32 and u8 outputs must be bit-identical to that path's (GELU included).

This module asks Linux for the AMX tile-data permission (fdbert_native.request_amx_permission())
and skips, with the reason, where AMX is not usable.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fdbert_native
import native_ext
from int8_data import exact, make_w, make_x
from strategies import AMX_SIZES
from subproc import run_python

pytestmark = pytest.mark.native_only
q = native_ext.load("_qgemm")
GRANTED = fdbert_native.request_amx_permission()
if not q.isa_supported("amx"):
    pytest.skip("AMX-INT8 is not usable here (CPU lacks amx_int8, Linux refused the tile-data "
                f"permission, or it is disabled); permission granted: {GRANTED}; usable dense "
                f"paths: {q.supported_dense_isas()}", allow_module_level=True)

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(M=AMX_SIZES, N=AMX_SIZES, K=AMX_SIZES, xmode=st.sampled_from(["uniform", "extreme", "max"]),
       wmode=st.sampled_from(["uniform", "extreme", "max", "min"]), threads=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
@example(M=300, N=300, K=300, xmode="max", wmode="max", threads=4, seed=0)   # largest sums
@example(M=300, N=300, K=300, xmode="max", wmode="min", threads=3, seed=1)   # most negative
@example(M=1, N=1, K=1, xmode="max", wmode="min", threads=1, seed=2)
@example(M=33, N=17, K=63, xmode="uniform", wmode="uniform", threads=2, seed=3)   # no full K tile
@example(M=64, N=32, K=128, xmode="uniform", wmode="uniform", threads=2, seed=4)  # no tails
@example(M=97, N=49, K=131, xmode="extreme", wmode="extreme", threads=4, seed=5)  # every tail
def test_s32_exact(M, N, K, xmode, wmode, threads, seed):
    rng = np.random.default_rng(seed)
    x, w = make_x(rng, M, K, xmode), make_w(rng, N, K, wmode)
    packed, colsum = q.pack_dense(w)
    out = np.full((M, N), -1, np.int32)   # every element must be written
    q.qgemm_s32(x, packed, out, isa="amx", num_threads=threads)
    np.testing.assert_array_equal(out, exact(x, w))
    np.testing.assert_array_equal(colsum, w.sum(axis=1, dtype=np.int64))


@SETTINGS
@given(M=AMX_SIZES, N=AMX_SIZES, K=AMX_SIZES, gelu=st.booleans(), residual=st.booleans(),
       threads=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
@example(M=65, N=33, K=67, gelu=True, residual=True, threads=3, seed=0)
@example(M=128, N=96, K=768, gelu=True, residual=False, threads=2, seed=1)   # FFN1-like: GELU -> u8
def test_epilogue_bits_identical_to_avx512vnni(M, N, K, gelu, residual, threads, seed):
    """f32 and u8 outputs of "amx" equal the avx512vnni path's, bit for bit."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (M, K), dtype=np.uint8)
    w = rng.integers(-127, 128, (N, K), dtype=np.int8)   # the INT8 contract's weight range
    packed, colsum = q.pack_dense(w)
    comp = (int(rng.integers(0, 256)) * colsum).astype(np.int32)
    mult = rng.uniform(1e-5, 1e-3, N).astype(np.float32)
    bias = rng.normal(0, 1, N).astype(np.float32)
    res = rng.normal(0, 1, (M, N)).astype(np.float32) if residual else None
    out_scale, out_zp = float(rng.uniform(0.01, 0.2)), float(rng.integers(0, 256))
    for kind in ("f32", "u8"):
        outs = {}
        for isa, nt in (("avx512vnni", 1), ("amx", threads)):
            if kind == "f32":
                out = np.empty((M, N), np.float32)
                q.qgemm_f32(x, packed, comp, mult, bias, out, residual=res, gelu=gelu, isa=isa,
                            num_threads=nt)
                outs[isa] = out.view(np.int32)
            else:
                out = np.empty((M, N), np.uint8)
                q.qgemm_u8(x, packed, comp, mult, bias, out_scale, out_zp, out, residual=res,
                           gelu=gelu, isa=isa, num_threads=nt)
                outs[isa] = out
        np.testing.assert_array_equal(outs["amx"], outs["avx512vnni"], err_msg=kind)


def test_zero_sized_and_empty_k():
    """M = 0 and N = 0 write nothing; K = 0 gives zeros (no tile load reads x)."""
    packed, _ = q.pack_dense(np.zeros((5, 0), np.int8))
    out = np.full((3, 5), -1, np.int32)
    q.qgemm_s32(np.zeros((3, 0), np.uint8), packed, out, isa="amx")
    np.testing.assert_array_equal(out, 0)
    q.qgemm_s32(np.zeros((0, 8), np.uint8), q.pack_dense(np.ones((5, 8), np.int8))[0],
                np.zeros((0, 5), np.int32), isa="amx")


def test_amx_is_a_dense_only_path():
    """"amx" is in DENSE_ISAS, not in ISAS (the ladder the sparse kernels share): qspmm rejects it."""
    assert q.DENSE_ISAS == q.ISAS + ("amx",)
    assert q.supported_dense_isas() == q.supported_isas() + ("amx",)
    bsr = q.pack_bsr(np.ones((1, 4), np.int8), np.zeros(1, np.int32), np.array([0, 1], np.int32),
                     (1, 4))
    with pytest.raises(ValueError, match="isa must be"):
        q.qspmm_s32(np.ones((1, 4), np.uint8), bsr, np.zeros((1, 1), np.int32), isa="amx")


def test_auto_picks_amx_only_above_the_threshold(monkeypatch):
    monkeypatch.setattr(q, "AMX_AUTO_MIN_M", 64)
    assert q.amx_auto(64, 16, 64) and not q.amx_auto(63, 16, 64)
    monkeypatch.setattr(q, "AMX_AUTO_MIN_M", None)
    assert not q.amx_auto(10**6, 16, 64)


def test_disabling_amx_int8_turns_the_path_off():
    with fdbert_native.disabled_cpu_features(["amx_int8"]):
        assert not q.isa_supported("amx")
        assert not q.amx_auto(10**6, 768, 768)
        with pytest.raises(ValueError, match="not supported"):
            q.qgemm_s32(np.zeros((1, 4), np.uint8), q.pack_dense(np.zeros((1, 4), np.int8))[0],
                        np.zeros((1, 1), np.int32), isa="amx")
    assert q.isa_supported("amx")


def test_environment_variable_and_missing_grant_turn_the_path_off():
    """FDBERT_DISABLE_CPU_FEATURES=amx_int8 at start-up, or no permission request: no AMX path."""
    r = run_python("""
        import fdbert_native
        from fdbert_native import _qgemm as q
        before = q.isa_supported("amx")
        print(before, fdbert_native.request_amx_permission(), q.isa_supported("amx"))
    """, FDBERT_DISABLE_CPU_FEATURES="amx_int8")
    assert r.returncode == 0, r.stderr
    before, granted, after = r.stdout.split()
    assert (before, after) == ("False", "False")


def test_amx_peak_probe_measures_and_refuses_without_amx():
    """The benchmark ceiling (benchmarks/roofline.py): a positive rate, and a RuntimeError naming the
    usable paths when AMX is switched off."""
    assert q.amx_peak_gmacs(1000) > 0
    with fdbert_native.disabled_cpu_features(["amx_int8"]):
        with pytest.raises(RuntimeError, match="amx path is not usable"):
            q.amx_peak_gmacs(1000)
