"""The packed KV cache (fdbert/kv_cache.py) against a plain model of it: per sequence, the list of its
k and v rows. Random programs of joins (with or without a capacity hint), steps over any subset of
the live sequences in any order (prefills and single tokens mixed), and leaves; after each step every
sequence's attention output equals the reference decoder_attention over that sequence's rows alone
(tolerances.DECODER_ATTN_ATOL). This drives slots that grow in place, move, reuse freed rows, and an
arena that doubles, and steps whose order differs from the arena's.

And the point of the layout: a step copies no cache. The attention receives the arena itself (a view
sharing its memory), a decode step leaves the arena where it was, and joins and leaves do not move
the other sequences' rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fdbert
from fdbert import ops
from fdbert import reference as ref
from fdbert.kv_cache import PackedKVCache
from tolerances import DECODER_ATTN_ATOL

# "native" runs with only=True: an op of the cache's that the native backend declined (a non-contiguous
# view, say) fails here instead of falling back to the reference unseen.
BACKENDS = ["reference", pytest.param("native", marks=pytest.mark.native_only)]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def oracle_step(rows_k, rows_v, q):  # one sequence: its rows (cache + new) [Lk, Hkv, Dh], q [Lq, H, Dh]
    Lq, Lk = len(q), len(rows_k)
    cu_q, cu_k = np.array([0, Lq], np.int32), np.array([0, Lk], np.int32)
    return ref.decoder_attention(q, rows_k, rows_v, cu_q, cu_k)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(data=st.data())
def test_random_programs_match_per_sequence_attention(backend, data):
    Hkv = data.draw(st.integers(1, 2), label="Hkv")
    H = Hkv * data.draw(st.integers(1, 3), label="G")
    Dh, L = 4, 2
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    cache = PackedKVCache(L, Hkv, Dh)
    model: dict = {}                         # seq id -> (per layer k rows, per layer v rows)
    next_id = 0
    with fdbert.set_backend(backend, only=True):
        for _ in range(data.draw(st.integers(1, 12), label="ops")):
            action = data.draw(st.sampled_from(["join", "step", "step", "leave"]) if model else st.just("join"))
            if action == "join":
                cache.add(next_id, data.draw(st.integers(0, 12), label="capacity hint"))
                model[next_id] = ([[] for _ in range(L)], [[] for _ in range(L)])
                next_id += 1
            elif action == "leave":
                sid = data.draw(st.sampled_from(sorted(model)), label="leaves")
                cache.drop(sid)
                del model[sid]
            else:
                ids = data.draw(st.permutations(sorted(model)), label="order")
                ids = ids[:data.draw(st.integers(1, len(ids)), label="how many step")]
                n_new = [1 if model[s][0][0] else data.draw(st.integers(1, 5), label="prefill")
                         if data.draw(st.booleans(), label="prefill?") else 1 for s in ids]
                cu = cache.begin(ids, n_new)
                assert cu.tolist() == np.concatenate([[0], np.cumsum(n_new)]).tolist()
                n = int(cu[-1])
                for layer in range(L):
                    q, k, v = (rng.standard_normal((n, h, Dh)).astype(np.float32) for h in (H, Hkv, Hkv))
                    got = cache.layer(layer)(q, k, v)
                    assert got.shape == (n, H, Dh)
                    for b, sid in enumerate(ids):
                        mk, mv = model[sid][0][layer], model[sid][1][layer]
                        mk.extend(k[cu[b]:cu[b + 1]])
                        mv.extend(v[cu[b]:cu[b + 1]])
                        want = oracle_step(np.array(mk), np.array(mv), q[cu[b]:cu[b + 1]])
                        np.testing.assert_allclose(got[cu[b]:cu[b + 1]], want, atol=DECODER_ATTN_ATOL, rtol=0)
                cache.commit()
            for sid, (mk, _) in model.items():
                assert cache.length(sid) == len(mk[0])
    for sid in list(model):
        cache.drop(sid)
    assert cache.nbytes == 0


def _arena_steps(cache, ids, n_new, H, Hkv, Dh, rng):
    cache.begin(ids, n_new)
    n = sum(n_new)
    for layer in range(cache.n_layers):
        q, k, v = (rng.standard_normal((n, h, Dh)).astype(np.float32) for h in (H, Hkv, Hkv))
        cache.layer(layer)(q, k, v)
    cache.commit()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("G", [1, 3])
def test_a_step_copies_no_cache(backend, G, monkeypatch):
    """The attention op gets views of the arena (prefill and decode steps alike); decode steps, a leave
    and a join that fits in the freed rows keep the arena and every other sequence's slot in place."""
    Hkv, Dh = 2, 8
    H = G * Hkv
    rng = np.random.default_rng(0)
    cache = PackedKVCache(2, Hkv, Dh)
    seen = []
    for name in ("attention", "decoder_attention"):
        real = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda q, k, v, *a, _real=real, **kw:
                            (seen.append((k, v)), _real(q, k, v, *a, **kw))[1])
    with fdbert.set_backend(backend, only=True):
        for sid, (prompt, cap) in enumerate([(5, 20), (3, 20), (7, 20)]):
            cache.add(sid, cap)
        _arena_steps(cache, [0, 1, 2], [5, 3, 7], H, Hkv, Dh, rng)          # prefill
        arena, starts = cache.k, {s: cache.seqs[s].start for s in cache.seqs}
        for _ in range(4):
            _arena_steps(cache, [0, 1, 2], [1, 1, 1], H, Hkv, Dh, rng)      # decode
        cache.drop(1)
        cache.add(3, 10)                                                    # fits in 1's freed slot
        _arena_steps(cache, [0, 3, 2], [1, 4, 1], H, Hkv, Dh, rng)
        _arena_steps(cache, [2, 3, 0], [1, 1, 1], H, Hkv, Dh, rng)          # another order
    assert cache.k is arena
    assert {s: cache.seqs[s].start for s in (0, 2)} == {0: starts[0], 2: starts[2]}
    assert cache.seqs[3].start == starts[1]
    assert len(seen) == 2 * 7
    for k, v in seen:
        assert np.shares_memory(k, cache.k) and np.shares_memory(v, cache.v)


def test_a_slot_that_outgrows_its_rows_moves_alone():
    """No capacity hint: the last slot grows in place; one in the middle moves (its own rows only)."""
    rng = np.random.default_rng(1)
    cache = PackedKVCache(1, 1, 4)
    for sid in range(3):
        cache.add(sid)                                  # one row each
    _arena_steps(cache, [0, 1, 2], [1, 1, 1], 1, 1, 4, rng)
    before = {s: cache.k[0, cache.seqs[s].start].copy() for s in range(3)}
    starts = {s: cache.seqs[s].start for s in range(3)}
    _arena_steps(cache, [1], [2], 1, 1, 4, rng)         # 1 sits between 0 and 2: it moves
    assert cache.seqs[0].start == starts[0] and cache.seqs[2].start == starts[2]
    assert cache.seqs[1].start != starts[1] and cache.seqs[1].length == 3
    _arena_steps(cache, [2, 0], [1, 1], 1, 1, 4, rng)   # 2 (now followed by free rows / 1) and 0 grow
    for s in range(3):
        np.testing.assert_array_equal(cache.k[0, cache.seqs[s].start], before[s])


def test_a_sequence_twice_in_a_step_is_refused():
    cache = PackedKVCache(1, 1, 4)
    cache.add("a", 4)
    with pytest.raises(ValueError, match="twice"):
        cache.begin(["a", "a"], [1, 1])
    with pytest.raises(ValueError, match="already in the cache"):
        cache.add("a")
