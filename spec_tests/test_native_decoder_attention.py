"""The native decoder_attention (grouped-query attention over packed sequences, fdbert_native.ops)
against the reference (fdbert/reference/decoder_attention.py), within tolerances.DECODER_ATTN_ATOL: drawn
small batches, and a long GQA prefill and decode step across the kernel's key tiles.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdbert import reference as ref

import native_ext

pytestmark = [pytest.mark.native_only]

_decoder = native_ext.load("_decoder")
import fdbert_native.ops as nops  # noqa: E402
from strategies import seeds  # noqa: E402
from tolerances import DECODER_ATTN_ATOL  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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
    np.testing.assert_allclose(got, ref.decoder_attention(q, k, v, cu_q, cu_k), atol=DECODER_ATTN_ATOL, rtol=0)


def test_decoder_attention_long_prefill_and_decode_vs_reference():
    """A SmolLM2-shaped GQA prefill (H = 9 query heads on Hkv = 3, Dh = 64) of 600 tokens, past the
    kernel's 256-key tiles, and a decode step over it: the kv heads are read in place, no copy."""
    rng = np.random.default_rng(16)
    L = 600
    q = rng.standard_normal((L + 1, 9, 64)).astype(np.float32)
    k, v = (rng.standard_normal((L + 1, 3, 64)).astype(np.float32) for _ in range(2))
    cu_pre, cu_step = np.array([0, L], np.int32), np.array([0, 1], np.int32)
    got = nops.decoder_attention(q[:L], k[:L], v[:L], cu_pre, cu_pre)
    np.testing.assert_allclose(got, ref.decoder_attention(q[:L], k[:L], v[:L], cu_pre, cu_pre),
                               atol=DECODER_ATTN_ATOL, rtol=0)
    cu_k = np.array([0, L + 1], np.int32)
    step = nops.decoder_attention(q[L:], k, v, cu_step, cu_k)
    np.testing.assert_allclose(step, ref.decoder_attention(q[L:], k, v, cu_step, cu_k),
                               atol=DECODER_ATTN_ATOL, rtol=0)


@SETTINGS
@given(data=st.data())
def test_prepadded_attention_vs_reference(data):
    """EET's pre-padded attention (fdbert/blocks/prepadded_attention.py) on the packed kernel: prefill
    (Tq = Tk) and decode steps (Tq = 1), pads of every count including none and all, GQA."""
    from fdbert.blocks.prepadded_attention import prepadded_attention as oracle
    Hkv = data.draw(st.integers(1, 3))
    H = Hkv * data.draw(st.integers(1, 3))
    Dh = data.draw(st.sampled_from([1, 4, 16, 64]))
    B, Tk = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 24))
    Tq = data.draw(st.sampled_from(sorted({1, Tk, max(1, Tk // 2)})))
    n_pad = np.array([data.draw(st.integers(0, Tk)) for _ in range(B)])
    rng = np.random.default_rng(data.draw(seeds))
    q = rng.standard_normal((B, Tq, H, Dh)).astype(np.float32)
    k, v = (rng.standard_normal((B, Tk, Hkv, Dh)).astype(np.float32) for _ in range(2))
    got = nops.prepadded_attention(q, k, v, n_pad)
    want = oracle(q, k, v, n_pad)
    np.testing.assert_allclose(got, want, atol=DECODER_ATTN_ATOL, rtol=0)
    pad_query = np.arange(Tq)[None, :] < np.maximum(0, n_pad - (Tk - Tq))[:, None]
    assert not got[pad_query].any()                      # a pad query's output is exactly 0
    k2, v2 = k.copy(), v.copy()                          # pad keys: never read by a real query
    for b in range(B):
        k2[b, :n_pad[b]], v2[b, :n_pad[b]] = np.nan, np.inf
    np.testing.assert_array_equal(nops.prepadded_attention(q, k2, v2, n_pad), got)


def test_prepadded_attention_reads_a_cache_view_in_place():
    """k, v as the first Tk columns of a [B, capacity, Hkv, Dh] cache (PrePaddedKVCache): the same
    result as contiguous copies, and the unused columns after Tk are never read."""
    from fdbert.blocks.prepadded_attention import prepadded_attention as oracle
    rng = np.random.default_rng(7)
    B, cap, Tk, Hkv, H, Dh = 3, 20, 11, 3, 9, 16
    kc, vc = (rng.standard_normal((B, cap, Hkv, Dh)).astype(np.float32) for _ in range(2))
    kc[:, Tk:], vc[:, Tk:] = np.nan, np.inf                  # unused capacity
    n_pad = np.array([0, 4, 10])
    for Tq in (1, Tk):
        q = rng.standard_normal((B, Tq, H, Dh)).astype(np.float32)
        got = nops.prepadded_attention(q, kc[:, :Tk], vc[:, :Tk], n_pad)
        k, v = np.ascontiguousarray(kc[:, :Tk]), np.ascontiguousarray(vc[:, :Tk])
        np.testing.assert_array_equal(got, nops.prepadded_attention(q, k, v, n_pad))
        np.testing.assert_allclose(got, oracle(q, k, v, n_pad), atol=DECODER_ATTN_ATOL, rtol=0)
