"""The native float32 attention over packed sequences (fdbert_native._fp32) against the reference
(fdbert/reference/attention.py): every ISA path this machine can run, 1-4 threads (bit-identical
across thread counts), drawn packed batches (empty sequences, Lq < Lk, causal or not), long sequences
past the kernel's score block and across its key tiles (the online softmax), grouped-query heads read
in place, the fused quantized output and row-strided q, k, v read in place,
within tolerances.ATTN_ATOL and its conditioning term (fp32_checks.assert_attention_close).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fdbert.backend import Declined

import native_ext

pytestmark = [pytest.mark.native_only,
              # the reference's own x / scale and (q - zp) * scale overflow to inf on purpose
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

_fp32 = native_ext.load("_fp32")
import fdbert_native.ops as nops  # noqa: E402
from fp32_checks import assert_attention_close, rng_of  # noqa: E402
from strategies import packed_batches, seeds  # noqa: E402
from subproc import run_python  # noqa: E402
from thread_checks import run_all_threads  # noqa: E402

ISA_PARAMS = native_ext.isa_params(_fp32)

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- attention ----------------------------------------------------------------------------------------------
@SETTINGS
@given(batch=packed_batches())
@example(batch=(np.ones((1, 1, 1), np.float32), np.ones((1, 1, 1), np.float32),
                np.full((1, 1, 1), 2, np.float32), np.array([0, 1], np.int32), np.array([0, 1], np.int32),
                True, None))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_vs_reference(isa, batch):
    q, k, v, cu_q, cu_k, causal, scale = batch
    got = run_all_threads(lambda nt: _fp32.attention(q, k, v, cu_q, cu_k, np.zeros_like(q), causal=causal,
                                                     scale=scale, isa=isa, num_threads=nt))
    assert_attention_close(got, q, k, v, cu_q, cu_k, causal, scale)


@SETTINGS
@given(batch=packed_batches(causal=True), n_new=st.integers(1, 9))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_decoder_step_equals_full_causal_rows(isa, batch, n_new):
    """KV cache: the last n_new queries alone (Lq < Lk, mask aligned at the end) give the same bits as
    the same rows of the full causal attention -- a row never depends on the rows computed with it."""
    q, k, v, _, cu_k, _, scale = batch
    full = _fp32.attention(k, k, v, cu_k, cu_k, np.zeros_like(k), causal=True, scale=scale, isa=isa)
    lk = np.diff(cu_k)
    lq = np.minimum(lk, n_new)
    rows = np.concatenate([np.arange(e - m, e) for e, m in zip(cu_k[1:], lq)]).astype(np.int64)
    cu_q = np.concatenate([[0], np.cumsum(lq)]).astype(np.int32)
    step = _fp32.attention(np.ascontiguousarray(k[rows]), k, v, cu_q, cu_k,
                           np.zeros((len(rows),) + k.shape[1:], np.float32), causal=True, scale=scale, isa=isa)
    assert step.tobytes() == full[rows].tobytes()


@SETTINGS
@given(batch=packed_batches(), xscale=st.sampled_from([1e-3, 0.01, 0.05]), zp=st.integers(0, 255))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_quantized_output_is_attention_then_quantize(isa, batch, xscale, zp):
    """quantize=(scale, zp) gives the bytes of quantize_u8 applied to the float32 output of the same
    path (the fused block's attention -> u8 input of the O projection), for 1-4 threads; rows
    outside every sequence are left untouched in both."""
    q, k, v, cu_q, cu_k, causal, scale = batch
    s32 = np.float32(xscale)
    a = _fp32.attention(q, k, v, cu_q, cu_k, np.zeros_like(q), causal=causal, scale=scale, isa=isa)
    want = _fp32.quantize_u8(a.reshape(-1), s32, zp, np.empty(a.size, np.uint8), isa=isa).reshape(a.shape)
    outside = np.ones(len(q), bool)
    for b in range(len(cu_q) - 1):
        outside[cu_q[b]:cu_q[b + 1]] = False
    want[outside] = 7   # the sentinel the untouched rows keep
    got = run_all_threads(lambda nt: _fp32.attention(
        q, k, v, cu_q, cu_k, np.full(q.shape, 7, np.uint8), causal=causal, scale=scale, isa=isa,
        num_threads=nt, quantize=(s32, zp)))
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(batch=packed_batches(causal=False), quantized=st.booleans())
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_reads_row_strided_qkv_in_place(isa, batch, quantized):
    """q, k, v as the thirds of one fused QKV output [n, 3, H, Dh] (row-strided views, read without a
    copy) give the bytes of their C-contiguous copies, f32 and u8 outputs, 1-4 threads."""
    q, k, v, cu_q, cu_k, causal, scale = batch
    n = max(len(q), len(k))
    qkv = np.full((n, 3) + q.shape[1:], np.nan, np.float32)   # rows past an input stay NaN: unread
    qkv[:len(q), 0], qkv[:len(k), 1], qkv[:len(k), 2] = q, k, v
    views = qkv[:len(q), 0], qkv[:len(k), 1], qkv[:len(k), 2]
    assert not any(a.flags.c_contiguous for a in views if len(a) > 1)
    kw = dict(causal=causal, scale=scale, isa=isa)
    if quantized:
        kw["quantize"] = (np.float32(0.01), 100)
    empty = (lambda: np.zeros(q.shape, np.uint8)) if quantized else (lambda: np.zeros_like(q))
    want = _fp32.attention(q, k, v, cu_q, cu_k, empty(), **kw)
    got = run_all_threads(lambda nt: _fp32.attention(*views, cu_q, cu_k, empty(), num_threads=nt, **kw))
    assert got.tobytes() == want.tobytes()


def test_attention_refuses_overlapping_or_strided_rows():
    a = np.ones((4, 2, 8), np.float32)
    cu = np.array([0, 4], np.int32)
    for bad in (a[:, :, ::2], a[:, ::-1], np.lib.stride_tricks.as_strided(a, (4, 2, 8), (32, 32, 4))):
        with pytest.raises(ValueError, match="C-contiguous, non-overlapping rows"):
            _fp32.attention(bad, bad, bad, cu, cu, np.zeros(bad.shape, np.float32))


def test_attention_quantize_arguments_are_checked():
    q = np.ones((2, 1, 4), np.float32)
    cu = np.array([0, 2], np.int32)
    with pytest.raises(TypeError, match="out must have dtype uint8, got float32"):
        _fp32.attention(q, q, q, cu, cu, np.zeros_like(q), quantize=(0.1, 0))
    with pytest.raises(ValueError, match="scale must be"):
        _fp32.attention(q, q, q, cu, cu, np.zeros(q.shape, np.uint8), quantize=(0.0, 0))
    with pytest.raises(ValueError, match="zero_point must be"):
        _fp32.attention(q, q, q, cu, cu, np.zeros(q.shape, np.uint8), quantize=(0.1, 256))


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_distilbert_shape_threads(isa):
    rng = rng_of(21)
    lengths = rng.integers(1, 129, 6)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    q, k, v = (rng.normal(size=(int(cu[-1]), 12, 64)).astype(np.float32) for _ in range(3))
    got = run_all_threads(lambda nt: _fp32.attention(q, k, v, cu, cu, np.zeros_like(q), isa=isa,
                                                     num_threads=nt))
    assert_attention_close(got, q, k, v, cu, cu, False, None)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("lq, lk, H, Dh, causal", [
    ([300, 5, 0, 257], [300, 9, 3, 300], 2, 65, False),
    ([300, 5, 0, 257], [300, 9, 3, 300], 2, 64, True),
    ([1000], [1000], 1, 16, True),
    ([7, 1], [9000, 1], 1, 3, True),
])
def test_attention_long_sequences(isa, lq, lk, H, Dh, causal):
    """Sequences whose scores overflow the kernel's 64 KB score block (attention.c computes a
    pair's scores for as many queries as fit, then softmax and P V, then the next queries): vs the
    reference, the same bits for 1-4 threads, and for causal self-attention the last rows alone
    (a decoder step) equal the same rows of the full product."""
    rng = rng_of(lq[0] + Dh)
    cu_q, cu_k = (np.concatenate([[0], np.cumsum(n)]).astype(np.int32) for n in (lq, lk))
    q = rng.normal(size=(int(cu_q[-1]), H, Dh)).astype(np.float32)
    k, v = (rng.normal(size=(int(cu_k[-1]), H, Dh)).astype(np.float32) for _ in range(2))
    got = run_all_threads(lambda nt: _fp32.attention(q, k, v, cu_q, cu_k, np.zeros_like(q),
                                                     causal=causal, isa=isa, num_threads=nt))
    assert_attention_close(got, q, k, v, cu_q, cu_k, causal, None)
    if causal and lq == lk:
        full = _fp32.attention(k, k, v, cu_k, cu_k, np.zeros_like(k), causal=True, isa=isa)
        n = np.minimum(np.diff(cu_k), 5)
        rows = np.concatenate([np.arange(e - m, e) for e, m in zip(cu_k[1:], n)]).astype(np.int64)
        cu_step = np.concatenate([[0], np.cumsum(n)]).astype(np.int32)
        step = _fp32.attention(np.ascontiguousarray(k[rows]), k, v, cu_step, cu_k,
                               np.zeros((len(rows), H, Dh), np.float32), causal=True, isa=isa)
        assert step.tobytes() == full[rows].tobytes()


@SETTINGS
@given(batch=packed_batches(), G=st.integers(1, 3), seed=seeds)
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_grouped_query_heads_read_kv_head_in_place(isa, batch, G, seed):
    """k, v with Hkv heads and q with H = G Hkv: query head h reads kv head h // G in place -- the bytes
    of the same kernel on k and v repeated to H heads (HF's repeat_kv copies), 1-4 threads, and within
    the reference's bound."""
    _, k, v, cu_q, cu_k, causal, scale = batch
    nq, Hkv, Dh = int(cu_q[-1]) + 1, k.shape[1], k.shape[2]
    q = rng_of(seed).normal(0, 1, (nq, G * Hkv, Dh)).astype(np.float32)
    got = run_all_threads(lambda nt: _fp32.attention(q, k, v, cu_q, cu_k, np.zeros_like(q), causal=causal,
                                                     scale=scale, isa=isa, num_threads=nt))
    kr, vr = np.repeat(k, G, axis=1), np.repeat(v, G, axis=1)   # [nk, Hkv, Dh] -> [nk, H, Dh]
    want = _fp32.attention(q, kr, vr, cu_q, cu_k, np.zeros_like(q), causal=causal, scale=scale, isa=isa)
    assert got.tobytes() == want.tobytes()
    assert_attention_close(got, q, k, v, cu_q, cu_k, causal, scale)


def _rising_keys(L, H, Dh, rng, rising=True):  # -> k [L, H, Dh]
    """Keys whose scores against a query of ones grow (or shrink) along the sequence: every key tile of
    the online softmax raises the running max (alpha < 1), or none after the first does (alpha = 1)."""
    ramp = np.linspace(0.0, 3.0, L, dtype=np.float32)
    ramp = ramp if rising else ramp[::-1]
    return (ramp[:, None, None] + 0.1 * rng.normal(size=(L, H, Dh))).astype(np.float32)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("lq, lk, H, Hkv, Dh, causal, keys", [
    ([700], [700], 6, 2, 64, True, "normal"),                 # a GQA prefill over 3 key tiles (KEY_TILE 256)
    ([1, 1, 1], [1, 600, 257], 3, 1, 32, True, "normal"),     # decode steps (Lq = 1) over 1-3 tiles
    ([40, 300], [777, 300], 4, 4, 17, False, "normal"),       # encoder rows, Lq < Lk, an odd Dh
    ([520], [520], 2, 1, 16, True, "rising"),                 # every tile raises the max
    ([9, 520], [530, 520], 2, 2, 16, True, "falling"),        # the max never moves after tile 0
])
def test_attention_online_softmax_across_key_tiles(isa, lq, lk, H, Hkv, Dh, causal, keys):
    """Sequences longer than one key tile (csrc/attention.c's KEY_TILE = 256 keys): vs the reference,
    1-4 threads with the same bits, GQA included; causal self-attention's last rows alone (a decoder
    step over its cache) give the bits of the same rows of the full product."""
    rng = rng_of(sum(lk) + Dh)
    cu_q, cu_k = (np.concatenate([[0], np.cumsum(n)]).astype(np.int32) for n in (lq, lk))
    if keys == "normal":
        q = rng.normal(size=(int(cu_q[-1]), H, Dh)).astype(np.float32)
        k = rng.normal(size=(int(cu_k[-1]), Hkv, Dh)).astype(np.float32)
    else:
        q = np.ones((int(cu_q[-1]), H, Dh), np.float32)
        k = _rising_keys(int(cu_k[-1]), Hkv, Dh, rng, rising=keys == "rising")
    v = rng.normal(size=(int(cu_k[-1]), Hkv, Dh)).astype(np.float32)
    got = run_all_threads(lambda nt: _fp32.attention(q, k, v, cu_q, cu_k, np.zeros_like(q),
                                                     causal=causal, isa=isa, num_threads=nt))
    assert_attention_close(got, q, k, v, cu_q, cu_k, causal, None)
    if causal and lq == lk:
        n = np.minimum(np.diff(cu_k), 5)
        rows = np.concatenate([np.arange(e - m, e) for e, m in zip(cu_k[1:], n)]).astype(np.int64)
        cu_step = np.concatenate([[0], np.cumsum(n)]).astype(np.int32)
        step = _fp32.attention(np.ascontiguousarray(q[rows]), k, v, cu_step, cu_k,
                               np.zeros((len(rows), H, Dh), np.float32), causal=True, isa=isa)
        assert step.tobytes() == got[rows].tobytes()


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_memory_does_not_grow_with_lq_lk(isa):
    """A causal L = 4096 self-attention, 2 threads, in a fresh interpreter: the RSS high-water mark
    grows by far less than one [L, L] float32 score matrix (64 MiB) -- the kernel's scratch is the
    packed K and V (O(L Dh)) and a few key tiles of scores per thread."""
    L = 4096
    done = run_python(f"""
        import resource
        import numpy as np
        from fdbert_native import _fp32
        rng = np.random.default_rng(0)
        q, k, v = (rng.standard_normal(({L}, 1, 16)).astype(np.float32) for _ in range(3))
        out, cu = np.zeros_like(q), np.array([0, {L}], np.int32)
        small = np.array([0, 64], np.int32)   # warm up: the thread pool and the kernel's first pages
        _fp32.attention(q[:64], k[:64], v[:64], small, small, out[:64], causal=True, isa="{isa}", num_threads=2)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _fp32.attention(q, k, v, cu, cu, out, causal=True, isa="{isa}", num_threads=2)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert np.isfinite(out).all()
        print((after - before) * 1024)   # ru_maxrss is in KiB on Linux
    """)
    assert done.returncode == 0, done.stderr
    grown = int(done.stdout.split()[-1])
    assert grown < 4 * L * L / 8, f"RSS grew by {grown} bytes"


def test_attention_kv_heads_must_divide_query_heads():
    q, k = np.ones((2, 3, 4), np.float32), np.ones((2, 2, 4), np.float32)
    cu = np.array([0, 2], np.int32)
    with pytest.raises(ValueError, match="k has 2 heads, which must divide q's 3"):
        _fp32.attention(q, k, k, cu, cu, np.zeros_like(q))
    with pytest.raises(ValueError, match="grouped-query heads are float32 only"):
        _fp32.attention_int8(q, np.ones((2, 1, 4), np.float32), np.ones((2, 1, 4), np.float32), cu, cu,
                             np.zeros_like(q))
    k1 = np.ones((2, 1, 4), np.float32)
    with pytest.raises(Declined, match="must both be"):
        nops.attention(q, k1, k1, cu, cu)   # the encoder's op: Hkv = H
    assert nops.decoder_attention(q, k1, k1, cu, cu).shape == q.shape


def test_attention_query_without_keys_is_refused():
    q = np.ones((2, 1, 4), np.float32)
    cu_q, cu_k = np.array([0, 2], np.int32), np.array([0, 1], np.int32)
    with pytest.raises(ValueError, match="sees no key"):
        _fp32.attention(q, q, q, cu_q, cu_k, np.zeros_like(q), causal=True)
    with pytest.raises(Declined, match="sees no key"):
        nops.attention(q, q, q, cu_q, cu_k, causal=True)
    with pytest.raises(Declined, match="sees no key"):
        nops.attention(q, q[:0], q[:0], cu_q, np.array([0, 0], np.int32))
