"""fdbert.int8: the integer bounds, the one rounding rule, quantize/dequantize, and the instruction models.

Expected values are written by hand or computed independently in int64 / float64; integer results
are compared exactly. The one float tolerance (QDQ_SLACK) is named in tolerances.py with its reason.
"""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fdbert import int8
from fdbert.errors import DTypeError, ShapeError
from strategies import u8_s8_operands

from tolerances import QDQ_SLACK


def test_bounds_table():
    assert (int8.U8_MIN, int8.U8_MAX, int8.S8_MIN, int8.S8_MAX) == (0, 255, -127, 127)
    assert int8.MAX_PRODUCT == 32385
    assert int8.K_MAX * 32385 <= 2 ** 31 - 1 < (int8.K_MAX + 1) * 32385
    assert int8.K_MAX == 66311


def test_rounding_is_half_to_even_not_half_away():
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5], np.float32)
    assert int8.round_half_even(x).tolist() == [0, 2, 2, 4, -0, -2, -2]
    # quantize_u8 with scale 1 and zero point 10 shows the same ties
    q = int8.quantize_u8(x, 1.0, 10)
    assert q.tolist() == [10, 12, 12, 14, 10, 8, 8]


def test_quantize_clips_in_float_before_the_cast():
    x = np.array([-1e30, -np.inf, 1e30, np.inf, 3e9, -3e9], np.float32)
    assert int8.quantize_u8(x, 0.5, 7).tolist() == [0, 0, 255, 255, 255, 0]


def test_activation_qparams_cases():
    # all-zero range: scale 1, zero point 0 (never divides by zero)
    assert int8.activation_qparams(0.0, 0.0) == (np.float32(1.0), 0)
    # the range is widened to contain 0: a positive-only range gets zero point 0
    s, z = int8.activation_qparams(1.0, 2.55)
    assert z == 0 and s == np.float32(2.55 / 255)
    # a negative-only range gets zero point 255
    s, z = int8.activation_qparams(-5.1, -1.0)
    assert z == 255 and s == np.float32(5.1 / 255)
    # [-1, 3]: s = 4/255, z = rint(255/4) = rint(63.75) = 64
    s, z = int8.activation_qparams(-1.0, 3.0)
    assert z == 64 and s == np.float32(4 / 255)
    with pytest.raises(ValueError, match="finite"):
        int8.activation_qparams(-np.inf, 1.0)


def test_zero_is_exactly_representable():
    for lo, hi in [(-1.0, 3.0), (-0.17, 24.7), (-7.3, 0.2), (0.0, 1.0)]:
        s, z = int8.activation_qparams(lo, hi)
        q = int8.quantize_u8(np.zeros(3, np.float32), s, z)
        assert (q == z).all()
        assert (int8.dequantize_u8(q, s, z) == 0).all()


@given(st.floats(-100, 0), st.floats(0, 100), st.integers(0, 2 ** 32 - 1))
@example(-1.0, 3.0, 0)
@example(0.0, 0.0, 1)
@example(-0.17, 24.69, 2)
@example(-1.401298464324817e-45, 0.0, 0)   # a subnormal range: scale would underflow to 0
def test_quantize_dequantize_error_within_half_a_step(lo, hi, seed):
    s, z = int8.activation_qparams(lo, hi)
    rng = np.random.default_rng(seed)
    x = rng.uniform(lo, hi, 200).astype(np.float32)
    x = np.concatenate([x, np.array([lo, hi, 0.0], np.float32)])
    err = np.abs(int8.dequantize_u8(int8.quantize_u8(x, s, z), s, z).astype(np.float64) - x)
    assert err.max() <= float(s) / 2 * (1 + QDQ_SLACK) + np.abs(x).max() * QDQ_SLACK


def test_qparams_are_checked():
    x = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="scale"):
        int8.quantize_u8(x, 0.0, 0)
    with pytest.raises(ValueError, match="zero_point"):
        int8.quantize_u8(x, 1.0, 256)


@pytest.mark.parametrize("fn, arg, expected", [
    (lambda a: int8.quantize_u8(a, 1.0, 0), np.zeros(2, np.float64), "float32"),
    (lambda a: int8.dequantize_u8(a, 1.0, 0), np.zeros(2, np.int8), "uint8"),
    (int8.quantize_weight_s8, np.zeros((2, 2), np.float64), "float32"),
    (lambda a: int8.dot_u8s8(a, np.zeros((1, 2), np.int8)), np.zeros((1, 2), np.int32), "uint8"),
])
def test_dtype_errors_name_expected_and_actual(fn, arg, expected):
    with pytest.raises(DTypeError, match=expected) as e:
        fn(arg)
    assert str(arg.dtype) in str(e.value)


@given(st.integers(1, 9), st.integers(1, 13), st.integers(0, 2 ** 32 - 1))
def test_weight_quantization(N, K, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((N, K)) * rng.uniform(1e-3, 10)).astype(np.float32)
    w[0] = 0                                        # an all-zero row
    wq, s = int8.quantize_weight_s8(w)
    assert wq.dtype == np.int8 and s.dtype == np.float32
    assert s[0] == 1.0 and (wq[0] == 0).all()
    assert wq.min(initial=0) >= -127 and wq.max(initial=0) <= 127
    nonzero = np.abs(w).max(axis=1, initial=0) > 0
    assert (np.abs(wq[nonzero]).max(axis=1) == 127).all()   # the largest weight maps to +-127
    err = np.abs(int8.dequantize_weight_s8(wq, s).astype(np.float64) - w)
    assert (err <= s[:, None].astype(np.float64) / 2 * (1 + QDQ_SLACK) + np.abs(w) * QDQ_SLACK).all()


def test_minus_128_never_produced_and_rejected():
    w = np.array([[-1.0, 0.5, 1.0], [-3.0, 0.0, 0.0]], np.float32)
    wq, _ = int8.quantize_weight_s8(w)
    assert wq.tolist() == [[-127, 64, 127], [-127, 0, 0]]   # 63.5 rounds to even 64
    with pytest.raises(ValueError, match="-128"):
        int8.check_weight_codes(np.array([[-128]], np.int8))


# ---- the instruction models -----------------------------------------------------------------------


def exact_i64(x, w):
    return x.astype(np.int64) @ w.astype(np.int64).T


@given(u8_s8_operands())
def test_exact_and_wrapping_models_equal_the_int64_product(xw):
    x, w = xw
    want = exact_i64(x, w)
    for ins in ("exact", "vpdpbusd", "vpdpbusds", "vpmaddwd"):   # K <= 19: nothing overflows int32
        assert (int8.dot_u8s8(x, w, instruction=ins) == want).all(), ins
    assert (int8.matmul_u8s8_s32(x, w) == want).all()


@given(u8_s8_operands())
def test_vpmaddubsw_is_exact_iff_no_int16_pair_saturates(xw):
    x, w = xw
    K = x.shape[1]
    Kp = -(-K // 4) * 4
    xp = np.zeros((x.shape[0], Kp), np.int64)
    xp[:, :K] = x
    wp = np.zeros((w.shape[0], Kp), np.int64)
    wp[:, :K] = w
    pairs = (xp[:, None, :] * wp[None, :, :]).reshape(x.shape[0], w.shape[0], Kp // 2, 2).sum(-1)
    high, low = (pairs > 32767).any(axis=-1), (pairs < -32768).any(axis=-1)   # [M, N]
    got = int8.dot_u8s8(x, w, instruction="vpmaddubsw")
    want = exact_i64(x, w)
    fits = ~high & ~low
    assert (got[fits] == want[fits]).all()
    # saturation only pulls a pair toward zero: with all saturated pairs of one sign, the sum moves
    assert (got[high & ~low] < want[high & ~low]).all()
    assert (got[low & ~high] > want[low & ~high]).all()


def test_vpmaddubsw_hand_examples():
    x = np.array([[255, 255, 255, 255]], np.uint8)
    w = np.array([[127, 127, 127, 127]], np.int8)
    assert int8.dot_u8s8(x, w, instruction="exact")[0, 0] == 129540
    assert int8.dot_u8s8(x, w, instruction="vpmaddubsw")[0, 0] == 2 * 32767   # both pairs saturate
    assert int8.dot_u8s8(x, -w, instruction="vpmaddubsw")[0, 0] == 2 * -32768  # -64770 per pair
    # one product per pair (the other operand 0) always fits: 255 * 127 = 32385 <= 32767
    x1 = np.array([[255, 0, 255, 0]], np.uint8)
    assert int8.dot_u8s8(x1, w, instruction="vpmaddubsw")[0, 0] == 2 * 32385


@given(st.integers(1, 40), st.integers(0, 2 ** 32 - 1))
def test_vpmaddubsw_is_exact_with_7_bit_activations(K, seed):
    """The known fix: activations in [0, 127] keep every pair within int16 (2*127*127 = 32,258)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 128, (2, K)).astype(np.uint8)
    w = rng.choice(np.array([-127, 127], np.int8), (3, K))
    assert (int8.dot_u8s8(x, w, instruction="vpmaddubsw") == exact_i64(x, w)).all()


def test_int32_overflow_wraps_saturates_or_raises():
    x = np.array([[255, 255, 255, 255]], np.uint8)
    w = np.array([[127, 127, 127, 127]], np.int8)
    acc = np.array([[2 ** 31 - 100]], np.int32)
    true = 2 ** 31 - 100 + 129540
    assert int8.dot_u8s8(x, w, instruction="vpdpbusd", acc=acc)[0, 0] == true - 2 ** 32
    assert int8.dot_u8s8(x, w, instruction="vpdpbusds", acc=acc)[0, 0] == 2 ** 31 - 1
    with pytest.raises(OverflowError):
        int8.dot_u8s8(x, w, instruction="exact", acc=acc)


def test_saturating_order_matters_wrapping_does_not():
    """vpdpbusds saturates on the way up and then comes down: the result is not the exact sum even
    though the exact sum fits in int32; vpdpbusd's wrap-around gets it right."""
    x = np.array([[255] * 8], np.uint8)
    w = np.array([[127] * 4 + [-127] * 4], np.int8)
    acc = np.array([[2 ** 31 - 1000]], np.int32)
    assert int8.dot_u8s8(x, w, instruction="vpdpbusd", acc=acc)[0, 0] == 2 ** 31 - 1000
    assert int8.dot_u8s8(x, w, instruction="vpdpbusds", acc=acc)[0, 0] == 2 ** 31 - 1 - 129540


def test_large_k_overflows_int32_only_past_k_max():
    K = int8.K_MAX + 1
    x = np.full((1, K), 255, np.uint8)
    w = np.full((1, K), 127, np.int8)
    with pytest.raises(ValueError, match="K_MAX"):
        int8.matmul_u8s8_s32(x, w)
    ok = int8.matmul_u8s8_s32(x[:, :-1], w[:, :-1])
    assert ok[0, 0] == int8.K_MAX * 32385


def test_shape_errors():
    with pytest.raises(ShapeError, match="K=3"):
        int8.dot_u8s8(np.zeros((1, 3), np.uint8), np.zeros((1, 4), np.int8))
    with pytest.raises(ValueError, match="instruction"):
        int8.dot_u8s8(np.zeros((1, 4), np.uint8), np.zeros((1, 4), np.int8), instruction="vpdpwssd")
