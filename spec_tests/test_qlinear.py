"""The reference quantized linear (fdbert.reference.qlinear) and its dispatched ops in fdbert.ops.

Integer accumulators are compared EXACTLY with the int64 product of the codes. The float epilogue is
compared with a float64 evaluation of the same equation within EPILOGUE_RTOL (tolerances.py).
"""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy.special import erf

import fdbert
from fdbert import int8, ops
from fdbert.blocksparse import BSRMatrix
from fdbert.errors import DTypeError, ShapeError
from fdbert.reference.qlinear import qlinear, qlinear_s32
from fdbert.weights import QuantizedLinear
from strategies import qlinear_cases
from tolerances import EPILOGUE_RTOL


def layers(w, block, x_scale, x_zp, seed=0):
    rng = np.random.default_rng(seed)
    N = w.shape[0]
    w_scale = rng.uniform(1e-3, 0.05, N).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    dense = QuantizedLinear.from_codes(w, w_scale, bias, x_scale, x_zp)
    sparse = QuantizedLinear.from_codes(BSRMatrix.from_dense(w, block), w_scale, bias, x_scale, x_zp)
    return dense, sparse


@given(qlinear_cases())
@example((np.full((1, 1), 255, np.uint8), np.full((1, 1), 127, np.int8), (1, 4), np.float32(0.1), 0))
@example((np.full((2, 5), 255, np.uint8), np.full((3, 5), -127, np.int8), (1, 4), np.float32(0.1), 255))
@example((np.zeros((2, 5), np.uint8), np.zeros((3, 5), np.int8), (1, 4), np.float32(0.1), 7))  # 100%
def test_accumulators_equal_the_int64_product(case):
    x, w, block, x_scale, x_zp = case
    dense, sparse = layers(w, block, x_scale, x_zp)
    want = x.astype(np.int64) @ w.astype(np.int64).T
    got_dense, got_sparse = qlinear_s32(x, dense), qlinear_s32(x, sparse)
    assert got_dense.dtype == got_sparse.dtype == np.int32
    assert np.array_equal(got_dense, want)
    assert np.array_equal(got_sparse, want)
    # comp: acc - comp is the exact product of (x - zp) and the codes
    centered = (x.astype(np.int64) - x_zp) @ w.astype(np.int64).T
    assert np.array_equal(got_dense.astype(np.int64) - dense.comp, centered)


@given(qlinear_cases())
def test_sparse_layer_equals_dense_layer_of_its_to_dense(case):
    x, w, block, x_scale, x_zp = case
    dense, sparse = layers(w, block, x_scale, x_zp)
    assert np.array_equal(sparse.weight.to_dense(), w)
    for kw in ({}, {"gelu": True}, {"out_scale": np.float32(0.05), "out_zero_point": 3}):
        assert np.array_equal(qlinear(x, sparse, **kw), qlinear(x, dense, **kw))


def epilogue64(x, layer, gelu=False, residual=None):
    w = layer.dense_codes().astype(np.float64)
    y = (x.astype(np.float64) - layer.x_zero_point) @ w.T * (np.float64(layer.x_scale) * layer.w_scale) \
        + layer.bias
    if gelu:
        y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
    if residual is not None:
        y = y + residual
    return y


@given(qlinear_cases(), st.booleans(), st.booleans())
def test_epilogue_matches_float64(case, gelu, with_residual):
    x, w, block, x_scale, x_zp = case
    dense, _ = layers(w, block, x_scale, x_zp)
    rng = np.random.default_rng(1)
    residual = rng.standard_normal((x.shape[0], w.shape[0])).astype(np.float32) if with_residual else None
    got = qlinear(x, dense, gelu=gelu, residual=residual)
    want = epilogue64(x, dense, gelu, residual)
    assert got.dtype == np.float32
    scale = np.abs(epilogue64(x, dense)).max() + np.abs(dense.bias).max() + (
        np.abs(residual).max() if residual is not None else 0) + 1e-30
    assert np.abs(got - want).max() <= EPILOGUE_RTOL * scale * 4


@given(qlinear_cases(), st.booleans())
def test_requantized_output_is_quantize_of_float_output(case, gelu):
    x, w, block, x_scale, x_zp = case
    dense, _ = layers(w, block, x_scale, x_zp)
    s, z = np.float32(0.07), 11
    got = qlinear(x, dense, gelu=gelu, out_scale=s, out_zero_point=z)
    assert got.dtype == np.uint8
    assert np.array_equal(got, int8.quantize_u8(qlinear(x, dense, gelu=gelu), s, z))


def test_from_float_quantizes_per_channel_and_keeps_outliers_float():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 10)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    layer = QuantizedLinear.from_float(w, b, 0.02, 128, outliers=[3, 7])
    assert layer.outliers.tolist() == [3, 7]
    assert np.array_equal(layer.outlier_weight, w[:, [3, 7]])
    assert not layer.dense_codes()[:, [3, 7]].any()
    w0 = w.copy()
    w0[:, [3, 7]] = 0
    codes, scales = int8.quantize_weight_s8(w0)
    assert np.array_equal(layer.dense_codes(), codes) and np.array_equal(layer.w_scale, scales)
    assert layer.mult.dtype == np.float32 and np.array_equal(layer.mult, np.float32(0.02) * scales)
    assert np.array_equal(layer.comp, 128 * codes.astype(np.int64).sum(1))
    sparse = QuantizedLinear.from_float(w, b, 0.02, 128, block=(1, 4), outliers=[3, 7])
    assert sparse.sparse and np.array_equal(sparse.dense_codes(), codes)


def test_validate_rejects_bad_layers():
    layer = QuantizedLinear.from_float(np.ones((2, 4), np.float32), None, 0.1, 0)
    layer.weight = layer.weight.copy()
    layer.weight[0, 0] = -128
    with pytest.raises(ValueError, match="-128"):
        layer.validate()
    layer = QuantizedLinear.from_float(np.ones((2, 4), np.float32), None, 0.1, 0)
    layer.comp = layer.comp.astype(np.int64)
    with pytest.raises(DTypeError, match="int32"):
        layer.validate()
    layer = QuantizedLinear.from_float(np.ones((2, 4), np.float32), None, 0.1, 0)
    layer.mult = layer.mult[:1]
    with pytest.raises(ShapeError, match=r"\(2,\)"):
        layer.validate()
    layer = QuantizedLinear.from_float(np.ones((2, 4), np.float32), None, 0.1, 0, outliers=[1])
    layer.weight = np.ones((2, 4), np.int8)
    with pytest.raises(ValueError, match="outlier"):
        layer.validate()


def test_input_checks():
    layer = QuantizedLinear.from_float(np.ones((2, 4), np.float32), None, 0.1, 0)
    with pytest.raises(DTypeError, match="uint8.*float32|float32"):
        qlinear(np.zeros((3, 4), np.float32), layer)
    with pytest.raises(ShapeError, match=r"\(M, 4\)"):
        qlinear(np.zeros((3, 5), np.uint8), layer)
    with pytest.raises(ShapeError, match="residual"):
        qlinear(np.zeros((3, 4), np.uint8), layer, residual=np.zeros((3, 3), np.float32))


def test_ops_dispatch_to_the_reference():
    rng = np.random.default_rng(0)
    layer = QuantizedLinear.from_float(rng.standard_normal((5, 9)).astype(np.float32), None, 0.05, 9,
                                       block=(1, 4))
    x = rng.integers(0, 256, (4, 9)).astype(np.uint8)
    with fdbert.set_backend("reference"):
        assert np.array_equal(ops.qlinear_s32(x, layer), qlinear_s32(x, layer))
        assert np.array_equal(ops.qlinear(x, layer, gelu=True), qlinear(x, layer, gelu=True))
        xf = rng.standard_normal((3, 3)).astype(np.float32)
        assert np.array_equal(ops.quantize_u8(xf, 0.1, 3), int8.quantize_u8(xf, 0.1, 3))
        q = ops.quantize_u8(xf, 0.1, 3)
        assert np.array_equal(ops.dequantize_u8(q, 0.1, 3), int8.dequantize_u8(q, 0.1, 3))
    assert layer.packed == {}   # a cache for backends, empty on the reference
