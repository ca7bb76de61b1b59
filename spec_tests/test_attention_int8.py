"""INT8 attention (fdbert.ops.attention_int8): the reference's properties, then native == reference.

The reference (fdbert/reference/attention_int8.py) is checked against what its equations promise:
close to the float attention within a derived bound, each output a convex combination of the
dequantized v codes, tokens independent of each other, errors on bad input. The native kernels
(csrc/attention_int8.c, every ISA path, 1-4 threads) must give the reference's result; the only
freedom is the exponential, which may round a u8 softmax weight to the neighbouring integer.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fdbert
import fdbert_native
from fdbert import reference as ref
from fdbert.reference.attention_int8 import MAX_KEYS, symmetric_codes
from strategies import packed_batches
from thread_checks import run_all_threads
from tolerances import INT8_ATTENTION_MAX_WEIGHT_FLIPS

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def sequences(cu):
    return [(int(a), int(b)) for a, b in zip(cu[:-1], cu[1:])]


def v_scales(v, cu_k):  # -> f32 [nk, H, 1]: each key row's (sequence, head) scale sv
    sv = np.ones(v.shape[:2] + (1,), np.float32)
    for k0, k1 in sequences(cu_k):
        if k1 > k0:
            _, s = symmetric_codes(v[k0:k1].transpose(1, 0, 2), (1, 2))   # [H, 1, 1]
            sv[k0:k1] = s.transpose(1, 0, 2)
    return sv


# ---- the native paths this machine can run (the native tests below are parametrized over them) -----
native = pytest.mark.native_only
if fdbert_native.AVAILABLE:
    from fdbert_native import _fp32
    import fdbert_native.ops as nops
    ISAS = _fp32.INT8_ATTENTION_ISAS
    supported = _fp32.INT8_ATTENTION_PATHS.isa_supported
else:
    ISAS, supported = ("generic",), (lambda isa: False)
ISA_PARAMS = [pytest.param(isa, marks=[native, pytest.mark.skipif(
    not supported(isa), reason=f"the {isa} path cannot run here (no native build, the CPU lacks it, "
                               "or FDBERT_DISABLE_CPU_FEATURES)")]) for isa in ISAS]


# ---- the reference --------------------------------------------------------------------------------
@SETTINGS
@given(batch=packed_batches())
def test_reference_is_close_to_float_attention(batch):
    """|int8 - float| <= sv/2 + max|v| (2 (exp(2 delta) - 1) + Lk / 255): v's rounding, every weight
    changed by a factor within exp(+-2 delta) by score errors of at most delta (the q and k codes'
    rounding, half a step each), and the u8 weights' rounding (half a unit of 255 e each, over a sum
    of at least 255)."""
    q, k, v, cu_q, cu_k, causal, scale = batch
    got = ref.attention_int8(q, k, v, cu_q, cu_k, causal=causal, scale=scale)
    want = ref.attention(q, k, v, cu_q, cu_k, causal=causal, scale=scale)
    sc = np.float32(1.0 / np.sqrt(q.shape[2]) if scale is None else scale)
    for (q0, q1), (k0, k1) in zip(sequences(cu_q), sequences(cu_k)):
        if q1 == q0:
            continue
        aq = np.abs(q[q0:q1]).max(axis=2)                          # [Lq, H] per token and head
        ak = np.abs(k[k0:k1]).max(axis=2)                          # [Lk, H]
        # |q.k - q8.k8 sq sk| <= Dh (|q| sk/2 + |k| sq/2 + sq sk/4), sq = max|q|/127
        delta = float(sc) * q.shape[2] * (aq.max(0) * ak.max(0) / 127 * (1 + 1 / 508)).max()
        av = np.abs(v[k0:k1]).max()
        bound = av / 127 / 2 + av * (2 * np.expm1(2 * delta) + (k1 - k0) / 255) + 1e-6
        np.testing.assert_array_less(np.abs(got[q0:q1] - want[q0:q1]), bound)


@SETTINGS
@given(batch=packed_batches())
def test_reference_outputs_are_convex_combinations_of_v_codes(batch):
    """Each output lies between the smallest and largest dequantized v code of its channel (the
    u8 weights sum to exactly their normaliser); rows outside every sequence stay 0."""
    q, k, v, cu_q, cu_k, causal, scale = batch
    got = ref.attention_int8(q, k, v, cu_q, cu_k, causal=causal, scale=scale).astype(np.float64)
    inside = np.zeros(len(q), bool)
    for (q0, q1), (k0, k1) in zip(sequences(cu_q), sequences(cu_k)):
        inside[q0:q1] = True
        if q1 == q0:
            continue
        v8, sv = symmetric_codes(v[k0:k1].transpose(1, 0, 2), (1, 2))     # [H, Lk, Dh], [H, 1, 1]
        deq = (v8 * sv.astype(np.float64)).transpose(1, 0, 2)             # [Lk, H, Dh]
        tol = 1e-6 * np.abs(deq).max(initial=0) + 1e-30
        assert np.all(got[q0:q1] >= deq.min(axis=0) - tol) and np.all(got[q0:q1] <= deq.max(axis=0) + tol)
    assert not got[~inside].any()


def test_reference_one_key_returns_its_dequantized_v():
    """With one key every weight is 255 and the normaliser 255: out = float32(255 v8) * (sv / 255)."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.normal(size=(1, 3, 8)).astype(np.float32) for _ in range(3))
    cu = np.array([0, 1], np.int32)
    v8, sv = symmetric_codes(v.transpose(1, 0, 2), (1, 2))
    want = (np.float32(255) * v8.astype(np.float32)) * (sv / np.float32(255))
    got = ref.attention_int8(q, k, v, cu, cu)
    assert got.tobytes() == want.transpose(1, 0, 2).astype(np.float32).tobytes()


def test_reference_scales_are_per_token_for_q_and_k():
    """Scaling one query (key) by 8 changes nothing for the other queries (only its own scale): the
    codes are per token."""
    rng = np.random.default_rng(6)
    q, k, v = (rng.normal(size=(10, 2, 16)).astype(np.float32) for _ in range(3))
    cu = np.array([0, 10], np.int32)
    base = ref.attention_int8(q, k, v, cu, cu)
    q2 = q.copy()
    q2[3] *= 8
    np.testing.assert_array_equal(np.delete(ref.attention_int8(q2, k, v, cu, cu), 3, 0), np.delete(base, 3, 0))


@pytest.mark.parametrize("isa", ["reference", *ISAS])
def test_tiny_and_huge_rows(isa):
    """A token whose q or k is all below 2^-120 gets zero codes (127 / max|x| would overflow);
    3e38-sized values quantize like any others; every path gives the reference's bytes."""
    if isa != "reference" and not supported(isa):
        pytest.skip(f"the {isa} path cannot run here")
    rng = np.random.default_rng(9)
    q, k, v = (rng.normal(size=(6, 2, 8)).astype(np.float32) for _ in range(3))
    q[1], k[2], v[:, 1] = 1e-40, -2e-38, 1e-39        # subnormal / tiny rows and a tiny head of v
    q[3, 0] *= np.float32(1e38)
    cu = np.array([0, 6], np.int32)
    want = ref.attention_int8(q, k, v, cu, cu)
    assert np.all(np.isfinite(want))
    if isa != "reference":
        got = _fp32.attention_int8(q, k, v, cu, cu, np.zeros_like(q), isa=isa)
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("where", ["q", "k", "v"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_raises(where, bad):
    x = {n: np.ones((3, 1, 4), np.float32) for n in "qkv"}
    x[where][1, 0, 2] = bad
    cu = np.array([0, 3], np.int32)
    with fdbert.set_backend("reference"), pytest.raises(ValueError, match="finite"):
        fdbert.ops.attention_int8(x["q"], x["k"], x["v"], cu, cu)
    if fdbert_native.AVAILABLE:
        with fdbert.set_backend("native", only=True), pytest.raises(ValueError, match="finite"):
            fdbert.ops.attention_int8(x["q"], x["k"], x["v"], cu, cu)


@pytest.mark.parametrize("causal", [False, True])
def test_overflowing_scores_raise(causal):
    """|q| |k| beyond float32 (each finite): an overflowing score a query sees raises in both
    backends; with causal, the same product among masked keys only does not."""
    q = np.ones((3, 1, 4), np.float32)
    k = np.ones((3, 1, 4), np.float32)
    v = np.ones((3, 1, 4), np.float32)
    q[0], k[2] = 3e19, 3e19          # query 0 x key 2: 4 * 9e38 overflows; masked when causal
    cu = np.array([0, 3], np.int32)
    backends = ["reference"] + (["native"] if fdbert_native.AVAILABLE else [])
    for backend in backends:
        with fdbert.set_backend(backend, only=True):
            if causal:
                out = fdbert.ops.attention_int8(q, k, v, cu, cu, causal=True)
                assert np.all(np.isfinite(out))
            else:
                with pytest.raises(ValueError, match="overflows float32"):
                    fdbert.ops.attention_int8(q, k, v, cu, cu)


def test_too_many_keys_raise():
    n = MAX_KEYS + 1
    q = np.ones((1, 1, 1), np.float32)
    kv = np.ones((n, 1, 1), np.float32)
    cu_q, cu_k = np.array([0, 1], np.int32), np.array([0, n], np.int32)
    with fdbert.set_backend("reference"), pytest.raises(ValueError, match="keys"):
        fdbert.ops.attention_int8(q, kv, kv, cu_q, cu_k)
    if fdbert_native.AVAILABLE:
        with fdbert.set_backend("native", only=True), pytest.raises(ValueError, match="keys"):
            fdbert.ops.attention_int8(q, kv, kv, cu_q, cu_k)


# ---- native == reference ----------------------------------------------------------------------------
def assert_matches_reference(got, q, k, v, cu_q, cu_k, causal, scale):
    """got == the reference except for up to INT8_ATTENTION_MAX_WEIGHT_FLIPS u8 weights per row (each
    moves an output by at most its sequence and head's sv); rows outside every sequence untouched (0)."""
    want = ref.attention_int8(q, k, v, cu_q, cu_k, causal=causal, scale=scale)
    bound = np.zeros(q.shape[:2] + (1,), np.float32)   # rows outside every sequence: exactly 0
    sv = v_scales(v, cu_k)
    for (q0, q1), (k0, _) in zip(sequences(cu_q), sequences(cu_k)):
        if q1 > q0:
            bound[q0:q1] = INT8_ATTENTION_MAX_WEIGHT_FLIPS * sv[k0]
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= bound), f"worst excess {np.max(err - bound)}"


def call(isa, q, k, v, cu_q, cu_k, causal, scale, nt=1, out=None, quantize=None):
    out = np.zeros(q.shape, np.float32 if quantize is None else np.uint8) if out is None else out
    return _fp32.attention_int8(q, k, v, cu_q, cu_k, out, causal=causal, scale=scale, isa=isa,
                                num_threads=nt, quantize=quantize)


@SETTINGS
@given(batch=packed_batches())
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_native_vs_reference(isa, batch):
    got = run_all_threads(lambda nt: call(isa, *batch, nt=nt))
    assert_matches_reference(got, *batch)


@SETTINGS
@given(batch=packed_batches(), xscale=st.sampled_from([1e-3, 0.01, 0.05]), zp=st.integers(0, 255))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_native_quantized_output_is_attention_int8_then_quantize(isa, batch, xscale, zp):
    """quantize=(scale, zp) gives the bytes of quantize_u8 on the same path's float output (the
    fused block feeds the O projection this way); untouched rows keep their sentinel."""
    q, k, v, cu_q, cu_k, causal, scale = batch
    s32 = np.float32(xscale)
    a = call(isa, *batch)
    want = _fp32.quantize_u8(a.reshape(-1), s32, zp, np.empty(a.size, np.uint8)).reshape(a.shape)
    inside = np.zeros(len(q), bool)
    for q0, q1 in sequences(cu_q):
        inside[q0:q1] = True
    want[~inside] = 7
    got = run_all_threads(lambda nt: call(isa, *batch, nt=nt, out=np.full(q.shape, 7, np.uint8),
                                          quantize=(s32, zp)))
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(batch=packed_batches(causal=False))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_native_reads_row_strided_qkv_in_place(isa, batch):
    q, k, v, cu_q, cu_k, causal, scale = batch
    n = max(len(q), len(k))
    qkv = np.full((n, 3) + q.shape[1:], np.nan, np.float32)   # rows past an input stay NaN: unread
    qkv[:len(q), 0], qkv[:len(k), 1], qkv[:len(k), 2] = q, k, v
    views = qkv[:len(q), 0], qkv[:len(k), 1], qkv[:len(k), 2]
    want = call(isa, *batch)
    got = call(isa, *views, cu_q, cu_k, causal, scale)
    assert got.tobytes() == want.tobytes()


@SETTINGS
@given(batch=packed_batches(causal=True), n_new=st.integers(1, 9))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_native_decoder_step_equals_full_causal_rows(isa, batch, n_new):
    """Per-token q codes: the last n_new queries alone (a KV-cache step over the same keys) give the
    bytes of the same rows of the full causal product."""
    _, k, v, _, cu_k, _, scale = batch
    full = call(isa, k, k, v, cu_k, cu_k, True, scale)
    lq = np.minimum(np.diff(cu_k), n_new)
    rows = np.concatenate([np.arange(e - m, e) for e, m in zip(cu_k[1:], lq)]).astype(np.int64)
    cu_q = np.concatenate([[0], np.cumsum(lq)]).astype(np.int32)
    step = call(isa, np.ascontiguousarray(k[rows]), k, v, cu_q, cu_k, True, scale)
    assert step.tobytes() == full[rows].tobytes()


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("lens, H, Dh, causal", [
    ([128, 77, 1, 128], 12, 64, False),   # DistilBERT's heads
    ([300, 5, 257], 2, 65, True),         # key blocks and channels past 64, tails
    ([20], 1, 1100, False),               # a wide head: 18 64-channel blocks, a tail of 12
])
def test_native_long_and_wide(isa, lens, H, Dh, causal):
    rng = np.random.default_rng(sum(lens) + Dh)
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    q, k, v = (rng.normal(size=(int(cu[-1]), H, Dh)).astype(np.float32) for _ in range(3))
    got = run_all_threads(lambda nt: call(isa, q, k, v, cu, cu, causal, None, nt=nt))
    assert_matches_reference(got, q, k, v, cu, cu, causal, None)


@native
@pytest.mark.skipif(not fdbert_native.AVAILABLE, reason="native backend unavailable")
def test_op_paths_follow_disabled_features():
    best = _fp32.INT8_ATTENTION_PATHS.best_isa()
    assert nops.op_paths()["attention_int8"] == best
    with fdbert_native.disabled_cpu_features({"avx512vnni"}):
        assert nops.op_paths()["attention_int8"] == "generic"
        with pytest.raises(ValueError, match="cannot run"):
            call("avx512vnni", *[np.ones((1, 1, 4), np.float32)] * 3, np.array([0, 1], np.int32),
                 np.array([0, 1], np.int32), False, None)
    assert nops.op_paths()["attention_int8"] == best


@native
@pytest.mark.skipif(not fdbert_native.AVAILABLE, reason="native backend unavailable")
def test_native_declines_what_the_kernel_cannot_take():
    q = np.ones((2, 1, 4), np.float32)
    cu_q, cu_k = np.array([0, 2], np.int32), np.array([0, 1], np.int32)
    from fdbert.backend import Declined
    with pytest.raises(Declined, match="sees no key"):
        nops.attention_int8(q, q, q, cu_q, cu_k, causal=True)
    with pytest.raises(Declined, match="dtype float64"):
        nops.attention_int8(q.astype(np.float64), q, q, cu_q, cu_q)
