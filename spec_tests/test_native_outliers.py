"""add_outlier_product, the float32 share of an INT8 Linear's outlier input channels: the native kernel
(fdbert_native._fp32.add_outlier_product, fp32_ops.c) against the reference
(fdbert/reference/qlinear.py), bit for bit on every ISA path this machine can run and for 1-4 threads,
in place on strided rows as the fused INT8 block calls it; and the order of the sum, which the
reference fixes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fdbert
import fdbert.ops
from fdbert import reference as ref
from fdbert.weights import QuantizedLinear

import native_ext

pytestmark = pytest.mark.native_only

_fp32 = native_ext.load("_fp32")
from thread_checks import run_all_threads  # noqa: E402

ISA_PARAMS = native_ext.isa_params(_fp32)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _layer(rng, N, K, ko):
    outliers = np.sort(rng.choice(K, size=ko, replace=False)).astype(np.int32)
    w = (rng.standard_normal((N, K)) * 0.3).astype(np.float32)
    return QuantizedLinear.from_float(w, None, 0.05, 128, outliers=outliers)


@st.composite
def cases(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    M, N, K = draw(st.integers(0, 40)), draw(st.integers(1, 70)), draw(st.integers(1, 24))
    ko = draw(st.integers(1, min(K, 7)))
    lin = _layer(rng, N, K, ko)
    x = (rng.standard_normal((M, K)) * rng.choice([1.0, 30.0], size=K)).astype(np.float32)
    y = rng.standard_normal((M, N)).astype(np.float32)
    return y, x, lin


@pytest.mark.parametrize("isa", ISA_PARAMS)
@SETTINGS
@given(case=cases())
def test_native_equals_the_reference_bit_for_bit(isa, case):
    y, x, lin = case
    want = ref.add_outlier_product(y, x, lin)
    wt = np.ascontiguousarray(lin.outlier_weight.T)
    got = run_all_threads(lambda nt: _fp32.add_outlier_product(x, lin.outliers, wt, y.copy(), isa=isa,
                                                                num_threads=nt))
    assert got.dtype == np.float32 and np.array_equal(got, want)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_in_place_on_strided_rows_touches_only_its_columns(isa):
    rng = np.random.default_rng(3)
    M, N, K = 300, 48, 32          # M * N above the one-thread cutoff
    lin = _layer(rng, N, K, 3)
    x = rng.standard_normal((M, K)).astype(np.float32)
    buf = rng.standard_normal((M, 3, N)).astype(np.float32)   # as the fused Q/K/V output
    before = buf.copy()
    view = buf[:, 1]
    _fp32.add_outlier_product(x, lin.outliers, np.ascontiguousarray(lin.outlier_weight.T), view, isa=isa)
    assert np.array_equal(buf[:, 1], ref.add_outlier_product(before[:, 1], x, lin))
    assert np.array_equal(buf[:, 0], before[:, 0]) and np.array_equal(buf[:, 2], before[:, 2])


def test_the_reference_sums_in_channel_order_with_float32_roundings():
    # three products whose float32 sum depends on the order: 1e8 + 1 - 1e8
    lin = QuantizedLinear.from_float(np.array([[1e8, 1.0, -1e8, 0.5]], np.float32), None, 0.05, 128,
                                     outliers=np.array([0, 1, 2], np.int32))
    x = np.ones((1, 4), np.float32)
    y = np.zeros((1, 1), np.float32)
    # ((1e8 + 1) - 1e8) in float32 is 0 (1e8 + 1 rounds to 1e8); the exact sum is 1
    assert ref.add_outlier_product(y, x, lin)[0, 0] == 0.0
    with fdbert.set_backend("native", only=True):
        assert fdbert.ops.add_outlier_product(y, x, lin)[0, 0] == 0.0


def test_the_op_checks_its_arguments_on_every_backend():
    rng = np.random.default_rng(0)
    lin = _layer(rng, 6, 8, 2)
    x = np.ones((3, 8), np.float32)
    y = np.ones((3, 6), np.float32)
    for backend in ("reference", "native"):
        with fdbert.set_backend(backend, only=backend == "native"):
            with pytest.raises(fdbert.ShapeError, match="add_outlier_product: x"):
                fdbert.ops.add_outlier_product(y, np.ones((3, 7), np.float32), lin)
            with pytest.raises(fdbert.ShapeError, match="add_outlier_product: y"):
                fdbert.ops.add_outlier_product(np.ones((2, 6), np.float32), x, lin)
            with pytest.raises(fdbert.DTypeError, match="add_outlier_product: x"):
                fdbert.ops.add_outlier_product(y, x.astype(np.float64), lin)
            out = fdbert.ops.add_outlier_product(y, x, lin)
            assert out is not y and np.array_equal(y, np.ones((3, 6), np.float32))   # y untouched


def test_the_kernel_refuses_what_it_cannot_take():
    wt = np.ones((1, 4), np.float32)
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="outliers must be channels"):
        _fp32.add_outlier_product(x, np.array([3], np.int32), wt, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="contiguous rows"):
        _fp32.add_outlier_product(x, np.array([0], np.int32), wt, np.zeros((4, 2), np.float32).T)
    with pytest.raises(ValueError, match="writeable"):
        ro = np.zeros((2, 4), np.float32)
        ro.flags.writeable = False
        _fp32.add_outlier_product(x, np.array([0], np.int32), wt, ro)


# ---- the same share inside the INT8 GEMM epilogue (csrc/qgemm.h), before GELU --------------------------
_qgemm = native_ext.load("_qgemm")
import fdbert_native.ops as nops  # noqa: E402
from tolerances import GELU_U8_ATOL  # noqa: E402

GEMM_PATHS = [(isa, False) for isa in _qgemm.DENSE_ISAS] + [(isa, True) for isa in _qgemm.ISAS]


def _gemm_params():
    nops._request_amx_once()   # as the first packed weight would: Linux's tile-data permission
    out = []
    for isa, sparse in GEMM_PATHS:
        ok = (_qgemm.AMX in _qgemm.supported_dense_isas()) if isa == _qgemm.AMX else _qgemm.isa_supported(isa)
        out.append(pytest.param(isa, sparse, id=f"{'spmm' if sparse else 'gemm'}-{isa}",
                                marks=pytest.mark.skipif(not ok, reason=f"the {isa} path cannot run here")))
    return out


@pytest.mark.parametrize("isa, sparse", _gemm_params())
@pytest.mark.parametrize("M, N, K, ko", [(5, 33, 40, 3), (70, 48, 64, 1), (130, 20, 24, 5)])
def test_the_epilogue_adds_the_outlier_share_as_the_reference(isa, sparse, M, N, K, ko):
    rng = np.random.default_rng(M * N + K)
    o = np.sort(rng.choice(K, size=ko, replace=False)).astype(np.int32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    if sparse:
        w *= np.repeat(rng.random((N, -(-K // 4))) < 0.4, 4, axis=1)[:, :K]
    lin = QuantizedLinear.from_float(w, rng.standard_normal(N).astype(np.float32), 0.03, 121,
                                     block=(1, 4) if sparse else None, outliers=o)
    xf = (rng.standard_normal((M, K)) * 4).astype(np.float32)
    xq = rng.integers(0, 256, (M, K), dtype=np.uint8)
    res = rng.standard_normal((M, N)).astype(np.float32)
    packed = nops._packed(lin)
    if not sparse and isinstance(packed, _qgemm.PackedBSR):
        pytest.skip("dense layer packed as BSR")
    outl = (xf, lin.outliers, np.ascontiguousarray(lin.outlier_weight.T))
    f32 = _qgemm.qspmm_f32 if sparse else _qgemm.qgemm_f32
    u8 = _qgemm.qspmm_u8 if sparse else _qgemm.qgemm_u8
    ep = (lin.comp, lin.mult, lin.bias)
    with fdbert.set_backend("reference"):
        y = ref.add_outlier_product(fdbert.ops.qlinear(xq, lin), xf, lin)     # epilogue, then the share
        want_f32 = y + res
        want_u8 = fdbert.ops.quantize_u8(ref.gelu(y), 0.05, 7)
    got = f32(xq, packed, *ep, np.empty((M, N), np.float32), residual=res, isa=isa, outliers=outl)
    assert np.array_equal(got, want_f32)
    got = u8(xq, packed, *ep, 0.05, 7, np.empty((M, N), np.uint8), gelu=True, isa=isa, outliers=outl)
    assert np.abs(got.astype(int) - want_u8.astype(int)).max() <= GELU_U8_ATOL
