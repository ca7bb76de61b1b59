"""The native backend's contract (fdbert_native/ops.py): the same signatures as fdbert.ops, the path
each op runs under disabled CPU features (and its bits), the inputs it declines (the reference runs
instead; with only=True that is an error), empty and 0-d shapes.

The ops themselves are compared with their references in test_native_<op>.py, one file per
fdbert/reference module.
"""

from __future__ import annotations

import numpy as np
import pytest

import inspect

import fdbert
import fdbert.ops
import fdbert_native
from fdbert import int8
from fdbert import reference as ref
from fdbert.backend import Declined
from fdbert.errors import BackendError, FdbertError

import native_ext

pytestmark = [pytest.mark.native_only,
              # the reference's own x / scale and (q - zp) * scale overflow to inf on purpose
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

_fp32 = native_ext.load("_fp32")
_decoder = native_ext.load("_decoder")
import fdbert_native.ops as nops  # noqa: E402
from fp32_checks import rng_of  # noqa: E402

ISA_PARAMS = native_ext.isa_params(_fp32)


# ---- the backend contract --------------------------------------------------------------------------------
@pytest.mark.parametrize("op", nops.__all__[:-1])   # every op but op_paths
def test_signatures_match_fdbert_ops(op):
    assert inspect.signature(getattr(nops, op)) == inspect.signature(getattr(fdbert.ops, op))


def test_op_paths_follow_disabled_features():
    def fp32_paths():
        return {op: path for op, path in nops.op_paths().items() if op in nops.FP32_OPS}

    def expected(path):
        return {op: path for op in nops.FP32_OPS}

    best = _fp32.best_isa()
    assert fp32_paths() == expected(best)
    with fdbert_native.disabled_cpu_features({"avx512f"}):
        avx2 = "avx2" if _fp32.isa_supported("avx2") else "generic"
        assert fp32_paths() == expected(avx2)
        assert _fp32.supported_isas() == (("generic", "avx2") if avx2 == "avx2" else ("generic",))
        with pytest.raises(ValueError, match="cannot run"):
            _fp32.gelu(np.zeros(3, np.float32), np.zeros(3, np.float32), isa="avx512")
        with pytest.raises(ValueError, match="cannot run"):
            _fp32.attention(*(np.ones((1, 1, 8), np.float32),) * 3, *(np.array([0, 1], np.int32),) * 2,
                            np.zeros((1, 1, 8), np.float32), isa="avx512")
    with fdbert_native.disabled_cpu_features({"avx512f", "fma"}):
        assert fp32_paths() == expected("generic")
        assert _fp32.supported_isas() == ("generic",)
    assert fp32_paths() == expected(best)


# which features to disable so that "auto" runs each path
FORCE = {"avx512": set(), "avx2": {"avx512f"}, "generic": {"avx512f", "avx2"}}


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_backend_attention_runs_the_forced_path(isa):
    """nops.attention runs the path the enabled CPU features allow, and gives its bytes."""
    rng = rng_of(5)
    q, k, v = (rng.normal(size=(40, 3, 24)).astype(np.float32) for _ in range(3))
    cu = np.array([0, 17, 40], np.int32)
    with fdbert_native.disabled_cpu_features(FORCE[isa]):
        assert nops.op_paths()["attention"] == isa
        got = nops.attention(q, k, v, cu, cu, causal=True)
    want = _fp32.attention(q, k, v, cu, cu, np.zeros_like(q), causal=True, isa=isa)
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_backend_functions_run_the_forced_path(isa):
    """With features disabled, the backend functions give the bits of the path that remains."""
    x = rng_of(3).normal(0, 3, (33, 77)).astype(np.float32)
    w, b = np.linspace(-1, 2, 77, dtype=np.float32), np.linspace(1, 0, 77, dtype=np.float32)
    with fdbert_native.disabled_cpu_features(FORCE[isa]):
        assert nops.op_paths()["softmax"] == isa
        got = [nops.layer_norm(x, w, b, 1e-5), nops.softmax(x), nops.gelu(x)]
    want = [_fp32.layer_norm(x, w, b, 1e-5, np.empty_like(x), isa=isa),
            _fp32.softmax(x, np.empty_like(x), isa=isa),
            _fp32.gelu(x.reshape(-1), np.empty(x.size, np.float32), isa=isa).reshape(x.shape)]
    for g, w_ in zip(got, want):
        assert g.tobytes() == w_.tobytes()


# ---- declines: the reference runs instead; with only=True it is an error ---------------------------------------
def _declined_calls():
    rng = rng_of(0)
    x = rng.normal(size=(4, 20)).astype(np.float32)
    w, b = np.ones(20, np.float32), np.zeros(20, np.float32)
    qkv = rng.normal(size=(6, 2, 8)).astype(np.float32)
    cu = np.array([0, 2, 6], np.int32)
    return [
        ("layer_norm", (x.astype(np.float64), w, b, 1e-5), {}, "dtype float64"),
        ("layer_norm", (x[:, ::2], w[:10], b[:10], 1e-5), {}, "not C-contiguous"),
        ("layer_norm", (x, np.ones(19, np.float32), b, 1e-5), {}, "must both be"),
        ("layer_norm", (x, w.astype(np.float16), b, 1e-5), {}, "dtype float16"),
        ("softmax", (x.T,), {}, "not C-contiguous"),
        ("softmax", (x.astype(np.float16),), {}, "dtype float16"),
        ("softmax", (x[:, :0],), {}, "L = 0"),
        ("gelu", (x.astype(np.float64),), {}, "dtype float64"),
        ("gelu", (x[::2],), {}, "not C-contiguous"),
        ("gelu", ([1.0, 2.0],), {}, "not a numpy.ndarray"),
        ("quantize_u8", (x.astype(np.float64), 0.1, 3), {}, "dtype float64"),
        ("quantize_u8", (x[:, 1:], 0.1, 3), {}, "not C-contiguous"),
        ("dequantize_u8", (np.arange(10, dtype=np.int8), 0.1, 3), {}, "dtype int8"),
        ("attention", (qkv, qkv, qkv, cu.astype(np.int64), cu), {}, "dtype int64"),
        ("attention", (qkv[:, :, ::2], qkv[:, :, ::2], qkv[:, :, ::2], cu, cu), {}, "not C-contiguous"),
        ("attention", (qkv.astype(np.float64), qkv, qkv, cu, cu), {}, "dtype float64"),
        ("attention", (qkv, qkv, qkv, cu, cu[:2]), {}, "differ in B"),
        ("attention", (qkv, qkv, qkv, cu, np.array([0, 4, 7], np.int32)), {}, "non-decreasing"),
        ("attention", (qkv, qkv, qkv, np.array([0, 4, 2], np.int32), cu), {}, "non-decreasing"),
    ]


@pytest.mark.parametrize("op, args, kwargs, reason", _declined_calls(),
                         ids=[f"{c[0]}-{c[3]}" for c in _declined_calls()])
def test_declines_fall_back_to_reference(op, args, kwargs, reason):
    with pytest.raises(Declined, match=reason):
        getattr(nops, op)(*args, **kwargs)
    try:
        with fdbert.set_backend("reference", only=True):
            getattr(fdbert.ops, op)(*args, **kwargs)
    except FdbertError as e:   # issue 15: invalid input, refused by fdbert.ops before any backend
        for only in (False, True):
            with fdbert.set_backend("native", only=only), pytest.raises(type(e)):
                getattr(fdbert.ops, op)(*args, **kwargs)
        return
    want = getattr(ref, op)(*[np.asarray(a) if isinstance(a, list) else a for a in args], **kwargs)
    if True:
        with fdbert.set_backend("native"):
            got = getattr(fdbert.ops, op)(*args, **kwargs)
        assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True)
    with fdbert.set_backend("native", only=True):
        with pytest.raises(BackendError, match="declined"):
            getattr(fdbert.ops, op)(*args, **kwargs)


def test_native_backend_serves_these_ops():
    x = np.ones((2, 3), np.float32)
    with fdbert.set_backend("native", only=True):
        for op in nops.FP32_OPS:
            assert fdbert.backend.resolve(op) == "native"
        assert np.array_equal(fdbert.ops.softmax(x), np.full((2, 3), np.float32(1) / 3))
        assert fdbert.ops.gelu(np.ones((), np.float32)).shape == ()  # a 0-d array; a numpy scalar declines


@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0, 4), ()])
def test_empty_and_scalar_shapes(shape):
    x = np.ones(shape, np.float32)
    if len(shape) >= 1 and shape[-1] != 0:
        assert nops.softmax(x).shape == shape
        assert nops.layer_norm(x, np.ones(shape[-1], np.float32), np.zeros(shape[-1], np.float32), 1e-5).shape == shape
    assert nops.gelu(x).shape == shape
    assert np.array_equal(nops.quantize_u8(x, 0.5, 1), int8.quantize_u8(x, 0.5, 1))


def test_fma_peak_probe_measures_and_refuses_without_avx512():
    """The benchmark ceiling (benchmarks/roofline.py)."""
    if _fp32.isa_supported("avx512"):
        assert _fp32.fma_peak_gmacs(1000) > 0
    with fdbert_native.disabled_cpu_features(["avx512f"]):
        with pytest.raises(RuntimeError, match="avx512 path is not usable"):
            _fp32.fma_peak_gmacs(1000)


# ---- the decoder ops (fdbert_native._decoder) ---------------------------------------------------------------
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
