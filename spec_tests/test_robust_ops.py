"""Every public op checks its contract once, in fdbert.ops, whichever backend is selected
(fdbert/checks.py, docs/robustness.md): invalid input raises the same fdbert error on the reference,
on the native backend with the reference behind it, and on the native backend alone."""

import dataclasses

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fdbert
from fdbert import ops
from fdbert.errors import (ArgumentError, BackendError, DTypeError, FdbertError, ShapeError,
                           SparseFormatError, TokenIdError)
from fdbert.weights import QuantizedLinear
from int8_models import sentences, tiny_text_model
from strategies import offsets
from tolerances import LIST_INPUT_LINEAR_RTOL

SELECTIONS = [("reference", False), ("native", False), ("native", True)]


def selections():
    out = []
    for name, only in SELECTIONS:
        if name != "reference" and fdbert.available_backends().get(name) is not None:
            continue
        out.append(pytest.param(name, only, id=f"{name}{'-only' if only else ''}"))
    return out


def refused(error, fn, *args, **kwargs):
    """fn raises `error` (an fdbert error, never BackendError) on every backend selection."""
    for name, only in SELECTIONS:
        if name != "reference" and fdbert.available_backends().get(name) is not None:
            continue
        with fdbert.set_backend(name, only=only), pytest.raises(error) as e:
            fn(*args, **kwargs)
        assert isinstance(e.value, FdbertError) and not isinstance(e.value, BackendError), e.value


rng = np.random.default_rng(0)
X = rng.normal(size=(4, 8)).astype(np.float32)
W, B = rng.normal(size=(5, 8)).astype(np.float32), np.zeros(5, np.float32)
G, BETA = np.ones(8, np.float32), np.zeros(8, np.float32)
QKV = rng.normal(size=(5, 2, 4)).astype(np.float32)
CU = np.array([0, 3, 5], np.int32)
TABLE = rng.normal(size=(4, 3)).astype(np.float32)


def qlayer(**change):
    q = QuantizedLinear.from_float(rng.normal(size=(6, 8)).astype(np.float32), None, 0.05, 7)
    return dataclasses.replace(q, **change) if change else q


CASES = [
    # issue 15's examples
    ("attention, cu_seqlens [0, 3, 2, 5]", ShapeError, ops.attention,
     (QKV, QKV, QKV, np.array([0, 3, 2, 5], np.int32), np.array([0, 3, 2, 5], np.int32)), {}),
    ("embedding([-1])", TokenIdError, ops.embedding, (np.array([-1]), TABLE), {}),
    ("layer_norm, weight (1,)", ShapeError, ops.layer_norm, (X, np.ones(1, np.float32), BETA, 1e-5), {}),
    ("qlinear_s32, a list", DTypeError, ops.qlinear_s32, ([[1] * 8], qlayer()), {}),
    # the same classes, other members
    ("embedding, id V", TokenIdError, ops.embedding, ([0, 4], TABLE), {}),
    ("embedding, float ids", DTypeError, ops.embedding, (np.array([0.0]), TABLE), {}),
    ("embedding, bool ids", DTypeError, ops.embedding, (np.array([True]), TABLE), {}),
    ("embedding, 1-d table", ShapeError, ops.embedding, ([0], TABLE[0]), {}),
    ("linear, K mismatch", ShapeError, ops.linear, (X, W[:, :7]), {}),
    ("linear, bias (3,)", ShapeError, ops.linear, (X, W, B[:3]), {}),
    ("linear, int x", DTypeError, ops.linear, (X.astype(np.int32), W, B), {}),
    ("linear, a string", DTypeError, ops.linear, ("x", W, B), {}),
    ("linear, ragged list", ShapeError, ops.linear, ([[1.0], [1.0, 2.0]], W, B), {}),
    ("layer_norm, bias (16,)", ShapeError, ops.layer_norm, (X, G, np.zeros(16, np.float32), 1e-5), {}),
    ("layer_norm, D = 0", ShapeError, ops.layer_norm, (X[:, :0], G[:0], BETA[:0], 1e-5), {}),
    ("layer_norm, eps < 0", ArgumentError, ops.layer_norm, (X, G, BETA, -1.0), {}),
    ("layer_norm, eps NaN", ArgumentError, ops.layer_norm, (X, G, BETA, float("nan")), {}),
    ("layer_norm, eps a string", ArgumentError, ops.layer_norm, (X, G, BETA, "1e-5"), {}),
    ("softmax, L = 0", ShapeError, ops.softmax, (X[:, :0],), {}),
    ("softmax, 0-d", ShapeError, ops.softmax, (np.float32(1),), {}),
    ("gelu, int", DTypeError, ops.gelu, (np.arange(3),), {}),
    ("attention, cu beyond n", ShapeError, ops.attention, (QKV, QKV, QKV, np.array([0, 6]), np.array([0, 6])), {}),
    ("attention, cu < 0", ShapeError, ops.attention, (QKV, QKV, QKV, np.array([-1, 5]), np.array([-1, 5])), {}),
    ("attention, float cu", DTypeError, ops.attention, (QKV, QKV, QKV, CU.astype(float), CU), {}),
    ("attention, 2-d cu", ShapeError, ops.attention, (QKV, QKV, QKV, CU[None], CU[None]), {}),
    ("attention, empty cu", ShapeError, ops.attention, (QKV, QKV, QKV, CU[:0], CU[:0]), {}),
    ("attention, B differs", ShapeError, ops.attention, (QKV, QKV, QKV, CU, CU[:2]), {}),
    ("attention, k heads", ShapeError, ops.attention, (QKV, QKV[:, :1], QKV[:, :1], CU, CU), {}),
    ("attention, v shape", ShapeError, ops.attention, (QKV, QKV, QKV[:4], CU, CU), {}),
    ("attention, 2-d q", ShapeError, ops.attention, (QKV[0], QKV, QKV, CU, CU), {}),
    ("attention, no keys", ShapeError, ops.attention, (QKV, QKV[:0], QKV[:0], CU, np.zeros(3, np.int32)), {}),
    ("attention, causal Lk < Lq", ShapeError, ops.attention,
     (QKV, QKV[:4], QKV[:4], CU, np.array([0, 2, 4], np.int32)), {"causal": True}),
    ("attention, scale inf", ArgumentError, ops.attention, (QKV, QKV, QKV, CU, CU), {"scale": np.inf}),
    ("attention, causal 'yes'", ArgumentError, ops.attention, (QKV, QKV, QKV, CU, CU), {"causal": "yes"}),
    ("attention_int8, cu [0, 3, 2, 5]", ShapeError, ops.attention_int8,
     (QKV, QKV, QKV, np.array([0, 3, 2, 5], np.int32), np.array([0, 3, 2, 5], np.int32)), {}),
    ("quantize_u8, float64", DTypeError, ops.quantize_u8, (X.astype(np.float64), 0.1, 3), {}),
    ("quantize_u8, scale 0", ArgumentError, ops.quantize_u8, (X, 0.0, 3), {}),
    ("quantize_u8, zero point 256", ArgumentError, ops.quantize_u8, (X, 0.1, 256), {}),
    ("quantize_u8, zero point 1.5", ArgumentError, ops.quantize_u8, (X, 0.1, 1.5), {}),
    ("dequantize_u8, int8", DTypeError, ops.dequantize_u8, (np.zeros(3, np.int8), 0.1, 3), {}),
    ("dequantize_u8, scale NaN", ArgumentError, ops.dequantize_u8, (np.zeros(3, np.uint8), np.nan, 3), {}),
    ("qlinear, K mismatch", ShapeError, ops.qlinear, (np.zeros((2, 7), np.uint8), qlayer()), {}),
    ("qlinear, int8 x", DTypeError, ops.qlinear, (np.zeros((2, 8), np.int8), qlayer()), {}),
    ("qlinear, 1-d x", ShapeError, ops.qlinear, (np.zeros(8, np.uint8), qlayer()), {}),
    ("qlinear, a float Linear", DTypeError, ops.qlinear,
     (np.zeros((2, 8), np.uint8), fdbert.weights.Linear(W, B)), {}),
    ("qlinear, residual shape", ShapeError, ops.qlinear, (np.zeros((2, 8), np.uint8), qlayer()),
     {"residual": np.zeros((2, 5), np.float32)}),
    ("qlinear, residual float64", DTypeError, ops.qlinear, (np.zeros((2, 8), np.uint8), qlayer()),
     {"residual": np.zeros((2, 6))}),
    ("qlinear, out scale -1", ArgumentError, ops.qlinear, (np.zeros((2, 8), np.uint8), qlayer()),
     {"out_scale": -1.0}),
    ("qlinear, zero point alone", ArgumentError, ops.qlinear, (np.zeros((2, 8), np.uint8), qlayer()),
     {"out_zero_point": 3}),
    # layers built by bypassing validate(): never reach a kernel
    ("qlinear, x_zero_point 300", ArgumentError, ops.qlinear, (np.zeros((2, 8), np.uint8), qlayer(x_zero_point=300)), {}),
    ("qlinear, x_scale 0", ArgumentError, ops.qlinear_s32, (np.zeros((2, 8), np.uint8), qlayer(x_scale=np.float32(0))), {}),
    ("qlinear, code -128", ArgumentError, ops.qlinear_s32,
     (np.zeros((2, 8), np.uint8), qlayer(weight=np.full((6, 8), -128, np.int8))), {}),
    ("qlinear, comp int64", DTypeError, ops.qlinear, (np.zeros((2, 8), np.uint8), qlayer(comp=np.zeros(6, np.int64))), {}),
    ("qlinear, w_scale (5,)", ShapeError, ops.qlinear, (np.zeros((2, 8), np.uint8), qlayer(w_scale=np.ones(5, np.float32))), {}),
    ("qlinear_s32, K > K_MAX", ShapeError, ops.qlinear_s32,
     (np.zeros((1, 70000), np.uint8), qlayer(weight=np.ones((6, 70000), np.int8))), {}),
    # the decoder's ops (docs/decoder.md) keep the same rule
    ("rms_norm, weight (1,)", ShapeError, ops.rms_norm, (X, np.ones(1, np.float32), 1e-5), {}),
    ("rms_norm, eps -1", ArgumentError, ops.rms_norm, (X, G, -1.0), {}),
    ("rms_norm, int x", DTypeError, ops.rms_norm, (np.ones((4, 8), np.int32), G, 1e-5), {}),
    ("rope, odd head width", ShapeError, ops.rope,
     (np.ones((5, 2, 3), np.float32), np.ones((5, 1), np.float32), np.ones((5, 1), np.float32)), {}),
    ("rope, cos of other rows", ShapeError, ops.rope,
     (QKV, np.ones((4, 2), np.float32), np.ones((5, 2), np.float32)), {}),
    ("silu_mul, up of another shape", ShapeError, ops.silu_mul, (X, X[:, :4]), {}),
    ("gelu_tanh, list of str", (DTypeError, ArgumentError), ops.gelu_tanh, (["a"],), {}),
    ("decoder_attention, cu_seqlens [0, 3, 2, 5]", ShapeError, ops.decoder_attention,
     (QKV, QKV, QKV, np.array([0, 3, 2, 5], np.int32), np.array([0, 3, 2, 5], np.int32)), {}),
    ("decoder_attention, 3 kv heads for 2 query heads", ShapeError, ops.decoder_attention,
     (QKV, np.ones((5, 3, 4), np.float32), np.ones((5, 3, 4), np.float32), CU, CU), {}),
    ("decoder_attention, more queries than keys", ShapeError, ops.decoder_attention,
     (QKV, QKV[:4], QKV[:4], CU, np.array([0, 2, 4], np.int32)), {}),
    ("prepadded_attention, n_pad beyond Tk", ShapeError, ops.prepadded_attention,
     (QKV[None], QKV[None], QKV[None], np.array([6])), {}),
]


@pytest.mark.parametrize("what, error, fn, args, kwargs", CASES, ids=[c[0] for c in CASES])
def test_an_op_refuses_invalid_input_on_every_backend(what, error, fn, args, kwargs):
    refused(error, fn, *args, **kwargs)


def test_a_bsr_layer_built_without_validate_is_refused():
    q = QuantizedLinear.from_float(rng.normal(size=(6, 8)).astype(np.float32), None, 0.05, 7, block=(1, 4))
    w = dataclasses.replace(q.weight, indices=q.weight.indices + 5)   # block columns beyond K
    refused((ArgumentError, SparseFormatError), ops.qlinear_s32, np.zeros((2, 8), np.uint8),
            dataclasses.replace(q, weight=w))


def test_lists_are_converted():
    with fdbert.set_backend("reference"):
        np.testing.assert_array_equal(ops.embedding([2, 0], TABLE), TABLE[[2, 0]])
        np.testing.assert_allclose(ops.linear(X.tolist(), W, B), X.astype(np.float64) @ W.T + B,
                                   rtol=LIST_INPUT_LINEAR_RTOL)
        np.testing.assert_array_equal(ops.qlinear_s32(np.ones((1, 8), np.uint8).tolist() and
                                                      np.ones((1, 8), np.uint8), qlayer()).shape, (1, 6))


@pytest.mark.parametrize("name, only", selections())
def test_valid_edge_cases_still_run(name, only):
    """What the contract allows, at its edges: empty batches, empty sequences, Lk > Lq causal."""
    with fdbert.set_backend(name, only=only):
        assert ops.attention(QKV, QKV, QKV, np.array([0, 0, 5], np.int32), np.array([0, 0, 5], np.int32)).shape == QKV.shape
        assert ops.attention(QKV[:2], QKV, QKV, np.array([0, 2], np.int32), np.array([0, 5], np.int32),
                             causal=True).shape == (2, 2, 4)
        assert ops.attention(QKV[:0], QKV[:0], QKV[:0], np.zeros(1, np.int32), np.zeros(1, np.int32)).shape == (0, 2, 4)
        assert ops.embedding(np.zeros(0, np.int64), TABLE).shape == (0, 3)
        assert ops.layer_norm(X[:0], G, BETA, 0.0).shape == (0, 8)


def test_encoder_layer_contract():
    m = tiny_text_model(seed=2)
    q = fdbert.quantize(m, sentences(8), progress=False, measure_error=False)
    x = np.zeros((5, m.config.d_model), np.float32)
    for model in (m, q):
        layer, c = model.weights.layers[0], model.config
        refused(ShapeError, ops.encoder_layer, x, np.array([0, 3, 2, 5], np.int32), layer, c)
        refused(ShapeError, ops.encoder_layer, x, np.array([0, 4], np.int32), layer, c)   # not up to n
        refused(ShapeError, ops.encoder_layer, x[:, :3], np.array([0, 5], np.int32), layer, c)
        refused(DTypeError, ops.encoder_layer, x, np.array([0, 5], np.int32), layer, "config")
        bad = dataclasses.replace(layer, lin1=layer.lin2)                  # [D, F] where [F, D] belongs
        refused(ShapeError, ops.encoder_layer, x, np.array([0, 5], np.int32), bad, c)
        short = dataclasses.replace(layer, sa_layer_norm=fdbert.weights.LayerNorm(np.ones(1, np.float32),
                                                                                  np.zeros(1, np.float32)))
        refused(ShapeError, ops.encoder_layer, x, np.array([0, 5], np.int32), short, c)
    bad_q = dataclasses.replace(q.weights.layers[0],
                                out_lin=dataclasses.replace(q.weights.layers[0].out_lin, x_zero_point=999))
    refused(ArgumentError, ops.encoder_layer, x, np.array([0, 5], np.int32), bad_q, q.config)


def valid_pair(cq, ck, nq, nk, causal):   # an independent statement of the contract
    if len(cq) < 1 or len(cq) != len(ck):
        return False
    for cu, n in ((cq, nq), (ck, nk)):
        if any(b < a for a, b in zip(cu, cu[1:])) or cu[0] < 0 or cu[-1] > n:
            return False
    for b in range(len(cq) - 1):
        Lq, Lk = cq[b + 1] - cq[b], ck[b + 1] - ck[b]
        if Lq > 0 and (Lk == 0 or (causal and Lk < Lq)):
            return False
    return True


@pytest.mark.parametrize("name, only", selections())
@settings(max_examples=60, deadline=None)
@given(cq=offsets(5), ck=offsets(5), causal=st.booleans())
@example(cq=np.array([0, 3, 2, 5], np.int32), ck=np.array([0, 3, 2, 5], np.int32), causal=False)
def test_attention_runs_exactly_the_valid_offsets(name, only, cq, ck, causal):
    with fdbert.set_backend(name, only=only):
        if valid_pair(cq.tolist(), ck.tolist(), 5, 5, causal):
            out = ops.attention(QKV, QKV, QKV, cq, ck, causal=causal)
            assert np.all(np.isfinite(out))
        else:
            with pytest.raises(ShapeError):
                ops.attention(QKV, QKV, QKV, cq, ck, causal=causal)


def test_encoder_text_arguments():
    m = tiny_text_model(seed=3)
    for bad in (123, [b"bytes"], ["ok", None]):
        with pytest.raises(DTypeError):
            m.encode(bad)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ArgumentError):
            m.encode(["a"], batch_size=bad)
    with pytest.raises(ArgumentError):
        fdbert.set_num_threads(0)
