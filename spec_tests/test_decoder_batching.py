"""Batching and the KV cache: EET's properties, checked against the unbatched, uncached computation.

- batched greedy output, packed and pre-padded, equals each prompt generated alone, token for token;
- cached decode equals full recomputation of the whole sequence at every step (logits within CACHE_*);
- pads are never attended: changing what sits in the pad columns changes no real token's output;
- finished, cancelled or newly joined sequences do not change the others;
- generation stops at the model's position limit (finish_reason "length"), a longer prompt is refused;
- seeded sampling is reproducible and independent of the batch around it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fdbert
from decoder_models import random_decoder
from fdbert.errors import ShapeError
from fdbert.kv_cache import PrePaddedKVCache
from strategies import decoder_configs, prompt_lists
from tolerances import CACHE_ATOL, CACHE_RTOL

BACKENDS = ["reference", "auto"]


def alone(lm, prompt, params):
    return lm.generate([prompt], params)[0].token_ids


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding", ["packed", "pre"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_batched_greedy_equals_each_alone(padding, backend, data):
    cfg = data.draw(decoder_configs(), label="config")
    lm = random_decoder(cfg, data.draw(st.integers(0, 2**16), label="seed"))
    prompts = data.draw(prompt_lists(cfg.vocab_size), label="prompts")
    params = fdbert.SamplingParams(max_new_tokens=data.draw(st.integers(1, 8), label="max_new_tokens"))
    with fdbert.set_backend(backend):
        got = lm.generate(prompts, params, padding=padding)
        for p, completion in zip(prompts, got):
            assert completion.token_ids == alone(lm, p, params), p
            assert completion.finish_reason == "length"


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_cached_decode_equals_recomputation(backend, data):
    cfg = data.draw(decoder_configs(), label="config")
    lm = random_decoder(cfg, data.draw(st.integers(0, 2**16), label="seed"))
    prompts = data.draw(prompt_lists(cfg.vocab_size, max_len=8, max_batch=3), label="prompts")
    steps = data.draw(st.integers(1, 6), label="steps")
    with fdbert.set_backend(backend):
        cache = lm.new_cache()
        seqs = [list(p) for p in prompts]
        for b, p in enumerate(prompts):
            cache.add(b)
        new = [list(p) for p in prompts]         # first step: the prompts (prefill), then one token each
        for _ in range(steps):
            cu = cache.begin(range(len(seqs)), [len(n) for n in new])
            pos = np.concatenate([np.arange(len(s) - len(n), len(s)) for s, n in zip(seqs, new)])
            h = lm.forward(np.concatenate(new).astype(np.int64), pos, cache.layer)
            cache.commit()
            logits = lm.lm_head(h[cu[1:] - 1])
            for b, s in enumerate(seqs):
                want = lm.logits(s)[-1]
                np.testing.assert_allclose(logits[b], want, atol=CACHE_ATOL, rtol=CACHE_RTOL)
            new = [[int(np.argmax(row))] for row in logits]
            for s, n in zip(seqs, new):
                s.extend(n)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@given(data=st.data())
@settings(max_examples=20, deadline=None)
def test_pads_are_never_attended(model_type, data):
    """Pad columns filled with other token ids give the same real-token outputs, bit for bit."""
    cfg = data.draw(decoder_configs(model_type), label="config")
    lm = random_decoder(cfg)
    prompts = data.draw(prompt_lists(cfg.vocab_size, max_len=6), label="prompts")
    pad_ids = data.draw(st.lists(st.integers(0, cfg.vocab_size - 1), min_size=2, max_size=2), label="pad ids")
    T = max(map(len, prompts))
    n_pad = np.array([T - len(p) for p in prompts])
    outs = []
    with fdbert.set_backend("reference", only=True):
        for pad in pad_ids:
            ids = np.array([[pad] * n + p for n, p in zip(n_pad, prompts)], np.int64)
            pos = np.maximum(np.arange(T)[None] - n_pad[:, None], 0)
            cache = PrePaddedKVCache(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, n_pad, T)
            h = lm.forward(ids.reshape(-1), pos.reshape(-1), cache.layer).reshape(len(prompts), T, -1)
            outs.append(h)
    for b, n in enumerate(n_pad):
        np.testing.assert_array_equal(outs[0][b, n:], outs[1][b, n:])


def test_prepadded_attention_ignores_pad_keys():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 3, 4, 8), dtype=np.float32)
    k = rng.standard_normal((2, 5, 2, 8), dtype=np.float32)
    v = rng.standard_normal((2, 5, 2, 8), dtype=np.float32)
    n_pad = np.array([2, 0])
    k2, v2 = k.copy(), v.copy()
    k2[0, :2], v2[0, :2] = 1e3, -1e3
    a = fdbert.ops.prepadded_attention(q, k, v, n_pad)
    b = fdbert.ops.prepadded_attention(q, k2, v2, n_pad)
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_leaving_and_joining_do_not_change_the_others(backend):
    """Continuous batching: cancel one request mid-way, add one later; the rest are as alone."""
    cfg = fdbert.DecoderConfig("llama", vocab_size=40, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2,
                               d_ffn=24, max_positions=64)
    lm = random_decoder(cfg, 7)
    p = fdbert.SamplingParams(max_new_tokens=10)
    short = fdbert.SamplingParams(max_new_tokens=2)
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10], [11, 12]]
    with fdbert.set_backend(backend):
        gen = fdbert.Generator(lm, max_batch_tokens=64)
        a = gen.add(prompts[0], p)
        b = gen.add(prompts[1], p)
        c = gen.add(prompts[2], short)          # finishes early and leaves
        tokens = {a: [], b: [], c: []}
        late = None
        for step in range(12):
            for e in gen.step():
                if e.token_id is not None:
                    tokens.setdefault(e.request_id, []).append(e.token_id)
            if step == 3:
                assert gen.cancel(b)
                assert gen.live == 1            # c finished after 2 tokens, b has just left
                late = gen.add(prompts[3], p)   # joins at the next step
        events = gen.step()
        assert tokens[a] == alone(lm, prompts[0], p)
        assert tokens[c] == alone(lm, prompts[2], short)
        assert tokens[b] == alone(lm, prompts[1], p)[:4]
        assert tokens[late] == alone(lm, prompts[3], p)[:len(tokens[late])] and len(tokens[late]) >= 7
        assert gen.live <= 1 and not any(e.finish_reason == "cancelled" for e in events)


def test_cancel_reports_cancelled_and_frees_the_cache():
    cfg = fdbert.DecoderConfig("gpt2", vocab_size=20, d_model=8, n_layers=1, n_heads=2, d_ffn=8, max_positions=32)
    gen = fdbert.Generator(random_decoder(cfg), max_batch_tokens=16)
    rid = gen.add([1, 2, 3], fdbert.SamplingParams(max_new_tokens=5))
    gen.step()
    assert gen.cache.nbytes > 0
    assert gen.cancel(rid) and not gen.cancel(rid)
    assert gen.live == 0 and gen.cache.nbytes == 0
    assert gen.step() == [fdbert.Event(rid, None, "", "cancelled")]


@pytest.mark.parametrize("padding", ["packed", "pre"])
def test_stops_at_the_position_limit(padding):
    cfg = fdbert.DecoderConfig("gpt2", vocab_size=20, d_model=8, n_layers=1, n_heads=2, d_ffn=8, max_positions=8)
    lm = random_decoder(cfg, 1)
    got = lm.generate([[1, 2, 3, 4, 5], [3]], max_new_tokens=20, padding=padding)
    assert [len(c.token_ids) for c in got] == [4, 8] and all(c.finish_reason == "length" for c in got)
    with pytest.raises(ShapeError, match="more than the model's limit of 8"):
        lm.generate([[1] * 9], max_new_tokens=1, padding=padding)


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_seeded_sampling_is_reproducible_and_batch_independent(data):
    cfg = data.draw(decoder_configs(), label="config")
    lm = random_decoder(cfg, 3)
    prompts = data.draw(prompt_lists(cfg.vocab_size), label="prompts")
    params = fdbert.SamplingParams(max_new_tokens=6, temperature=data.draw(st.sampled_from([0.5, 1.0, 2.0])),
                                   top_k=data.draw(st.integers(0, 5)), top_p=data.draw(st.sampled_from([1.0, 0.9, 0.5])),
                                   seed=data.draw(st.integers(0, 2**32 - 1)))
    with fdbert.set_backend("reference", only=True):
        batched = lm.generate(prompts, params)
        for p, completion in zip(prompts, batched):
            assert completion.token_ids == alone(lm, p, params)
        assert [c.token_ids for c in lm.generate(prompts, params, padding="pre")] == [c.token_ids for c in batched]
