"""Long sequences in the reference attention (fdbert/reference/attention.py; issue 16, item 5).

- The tiled reference (queries and keys in tiles, online softmax) equals a dense float64 softmax
  written here, for tiles small enough that every drawn sequence crosses several of them: causal
  or not, Lq < Lk (a KV cache), Lq = 1 (a decode step), grouped-query heads, empty sequences; and a
  sequence that fits one tile gets the bits of the untiled float32 computation.
- Its memory does not grow with Lq Lk: tracemalloc's peak at L = 2048 stays far below one [L, L]
  float32 score matrix.
- SmolLM2's position limit is the GGUF's 8,192: a prompt of 8,193 tokens is refused with a clear
  message before any work (the 8,192-token prefill itself runs in benchmarks/bench_longseq.py).
"""

from __future__ import annotations

import importlib
import tracemalloc
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fdbert.errors import ShapeError
from fdbert.reference import decoder_attention
from fdbert.reference import softmax as ref_softmax

from fp32_checks import assert_close
from strategies import seeds
from tolerances import ATTN_ATOL

attention_module = importlib.import_module("fdbert.reference.attention")   # the package exports its function

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def dense_attention_f64(q, k, v, cu_q, cu_k, causal, scale):  # [nq, H, Dh], [nk, Hkv, Dh] x2 -> f64 [nq, H, Dh]
    """The textbook definition in float64: all scores of a sequence at once, kv heads repeated."""
    H, Dh = q.shape[1], q.shape[2]
    sc = 1.0 / np.sqrt(Dh) if scale is None else float(np.float32(scale))
    out = np.zeros(q.shape, np.float64)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        if q1 == q0:
            continue
        qb = q[q0:q1].astype(np.float64)
        kb = np.repeat(k[k0:k1].astype(np.float64), H // k.shape[1], axis=1)
        vb = np.repeat(v[k0:k1].astype(np.float64), H // k.shape[1], axis=1)
        s = np.einsum("ihd,jhd->hij", qb, kb) * sc
        if causal:
            i, j = np.arange(q1 - q0)[:, None], np.arange(k1 - k0)[None, :]
            s = np.where(j <= i + (k1 - k0) - (q1 - q0), s, -np.inf)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        out[q0:q1] = np.einsum("hij,jhd->ihd", p / p.sum(axis=-1, keepdims=True), vb)
    return out


@st.composite
def long_batches(draw):
    """(q, k, v, cu_q, cu_k, causal, scale): B <= 3 sequences of <= 30 keys, Lq <= Lk, H = G Hkv."""
    causal = draw(st.booleans())
    Hkv, G = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    Dh = draw(st.sampled_from([1, 3, 8, 16]))
    lk = draw(st.lists(st.integers(0, 30), min_size=1, max_size=3))
    lq = [draw(st.one_of(st.just(L), st.integers(0, L), st.just(min(L, 1)))) for L in lk]
    cu_q = np.concatenate([[0], np.cumsum(lq)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lk)]).astype(np.int32)
    rng = np.random.default_rng(draw(seeds))
    sd = draw(st.sampled_from([0.3, 1.0, 2.0]))
    q = rng.normal(0, sd, (int(cu_q[-1]), G * Hkv, Dh)).astype(np.float32)
    k = rng.normal(0, sd, (int(cu_k[-1]), Hkv, Dh)).astype(np.float32)
    v = rng.normal(0, 1, k.shape).astype(np.float32)
    scale = draw(st.one_of(st.none(), st.sampled_from([0.125, 1.0])))
    return q, k, v, cu_q, cu_k, causal, scale


@SETTINGS
@given(batch=long_batches(), block_q=st.integers(1, 7), block_k=st.integers(1, 7))
@example(batch=(np.ones((1, 2, 4), np.float32), np.ones((9, 1, 4), np.float32),
                np.arange(36, dtype=np.float32).reshape(9, 1, 4), np.array([0, 1], np.int32),
                np.array([0, 9], np.int32), True, None), block_q=1, block_k=2)   # decode step, GQA, 5 tiles
def test_tiled_reference_equals_dense_softmax(batch, block_q, block_k):
    """Whatever the tile sizes, the online softmax gives softmax(q k^T * scale) v within ATTN_ATOL and
    its conditioning term (float32 against float64: one rounding of each score and sum)."""
    q, k, v, cu_q, cu_k, causal, scale = batch
    with mock.patch.object(attention_module, "BLOCK_Q", block_q), \
         mock.patch.object(attention_module, "BLOCK_K", block_k):
        got = attention_module.attention(q, k, v, cu_q, cu_k, causal=causal, scale=scale)
    want = dense_attention_f64(q, k, v, cu_q, cu_k, causal, scale)
    Dh = q.shape[2]
    sc = 1.0 / np.sqrt(Dh) if scale is None else scale
    S = sc * float(np.abs(q).max(initial=0)) * float(np.abs(k).max(initial=0)) * Dh   # >= any |score| sum
    bound = max(1.0, float(np.abs(v).max(initial=0))) * (ATTN_ATOL + 2 * Dh * 2.0**-24 * S)
    assert got.dtype == np.float32
    assert_close(got.astype(np.float64), want, atol=bound, what="tiled reference attention")


def untiled_attention(q, k, v, cu_q, cu_k, causal, scale):  # f32, as before tiling -> f32 [nq, H, Dh]
    """All scores of a sequence at once in float32, softmax, then the product with v (kv heads repeated)."""
    H, Dh = q.shape[1], q.shape[2]
    sc = np.float32(1.0 / np.sqrt(Dh) if scale is None else scale)
    out = np.zeros_like(q)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        if q1 == q0:
            continue
        kb = np.repeat(k[k0:k1], H // k.shape[1], axis=1).transpose(1, 2, 0)   # [Lk, H, Dh] -> [H, Dh, Lk]
        vb = np.repeat(v[k0:k1], H // k.shape[1], axis=1).transpose(1, 0, 2)   # [Lk, H, Dh] -> [H, Lk, Dh]
        s = (q[q0:q1].transpose(1, 0, 2) @ kb) * sc                             # [H, Lq, Lk]
        if causal:
            i, j = np.arange(q1 - q0)[:, None], np.arange(k1 - k0)[None, :]
            s = np.where(j <= i + (k1 - k0) - (q1 - q0), s, np.float32(-np.inf))
        out[q0:q1] = (ref_softmax(s) @ vb).transpose(1, 0, 2)                   # [H, Lq, Dh] -> [Lq, H, Dh]
    return out


@SETTINGS
@given(batch=long_batches())
def test_one_tile_gives_the_bits_of_the_untiled_softmax(batch):
    """Sequences of at most BLOCK_K = 128 keys are one key tile, and the normalised online softmax's
    first tile is softmax(s) v itself: the encoder's reference (H = Hkv) keeps its bits at T <= 128.
    (With GQA, NumPy's broadcast matmul may round the last bit differently from a repeated copy.)"""
    q, k, v, cu_q, cu_k, causal, scale = batch
    q = np.ascontiguousarray(q[:, :k.shape[1]])   # H = Hkv
    got = attention_module.attention(q, k, v, cu_q, cu_k, causal=causal, scale=scale)
    assert got.tobytes() == untiled_attention(q, k, v, cu_q, cu_k, causal, scale).tobytes()


def test_decoder_attention_is_causal_attention_with_grouped_heads():
    """decoder_attention = attention(causal=True) with kv head h // G, without repeat_kv copies."""
    rng = np.random.default_rng(5)
    q = rng.normal(size=(7, 6, 8)).astype(np.float32)
    k, v = (rng.normal(size=(12, 2, 8)).astype(np.float32) for _ in range(2))
    cu_q, cu_k = np.array([0, 3, 7], np.int32), np.array([0, 5, 12], np.int32)
    got = decoder_attention(q, k, v, cu_q, cu_k)
    want = dense_attention_f64(q, k, v, cu_q, cu_k, True, None)
    assert_close(got.astype(np.float64), want, atol=1e-5, what="decoder_attention")


@pytest.mark.parametrize("causal", [False, True])
def test_reference_attention_memory_does_not_grow_with_lq_lk(causal):
    """At L = 2048 one [L, L] float32 score matrix is 16 MiB (the untiled reference held it, its
    exponentials and its softmax at once); the tiled one holds a [H, 128, 128] tile: the traced peak,
    output included, stays under an eighth of one matrix."""
    L, Dh = 2048, 64
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((L, 1, Dh)).astype(np.float32) for _ in range(3))
    cu = np.array([0, L], np.int32)
    tracemalloc.start()
    try:
        out = attention_module.attention(q, k, v, cu, cu, causal=causal)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.isfinite(out).all()
    assert peak < 4 * L * L / 8, f"peak {peak} bytes"


def test_smollm2_position_limit_is_the_gguf_context_length(smollm2):
    """SmolLM2's llama.context_length is 8,192 positions: an 8,192-token prompt fits (it is admitted),
    one more token is refused up front with the model's limit in the message."""
    import fdbert

    assert smollm2.max_seq_len == 8192
    gen = fdbert.Generator(smollm2)
    gen.add([1] * 8192, fdbert.SamplingParams(max_new_tokens=1))
    with pytest.raises(ShapeError, match="the prompt has 8193 tokens, more than the model's limit of 8192"):
        gen.add([1] * 8193)
    with pytest.raises(ShapeError, match="position 8192 is past the model's limit of 8192 tokens"):
        smollm2.forward(np.ones(1, np.int64), np.array([8192]), smollm2.new_cache().layer)
