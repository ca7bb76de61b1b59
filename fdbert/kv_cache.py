"""Key/value caches of a decoder: what attention of later tokens needs from earlier ones.

Each layer's attention stores the k and v rows of this step's tokens and attends over everything its
sequence has stored. Memory: 2 (k and v) x n_layers x Hkv x Dh x 4 bytes per cached token; SmolLM2-135M
(30 layers, Hkv = 3, Dh = 64): 46 KB per token, 377 MB (360 MiB) for one sequence of 8,192 tokens.

:class:`PackedKVCache` (the default, EET sec. 3): one cache per sequence, no padding anywhere. A step
runs any mix of sequences, each with any number of new tokens (a prefill of its prompt, or one
decoded token), as packed rows described by ``cu_seqlens_q``. The caches of all sequences share one
arena per layer, each sequence a slot of rows in it: a step appends its rows in place and attention
reads the arena as it is (``cu_seqlens_k`` walks it; the rows between the step's sequences are
segments without queries), so no step copies a cache. Sequences join and leave between steps.

:class:`PrePaddedKVCache` (EET sec. 4, ``padding="pre"``): one dense [B, T] block, every prompt
left-padded to the longest, so every step's new tokens share a column. Pads are never attended.
"""

from __future__ import annotations

import numpy as np

from . import ops


def _decode_attention(q, k, v, cu_seqlens_q, cu_seqlens_k):  # [n, H, Dh], [nk, Hkv, Dh] x2 -> [n, H, Dh]
    """decoder_attention of a step where each sequence has one query (or none), without repeating k, v.

    A single query sees all its sequence's keys, so the causal mask drops out; and the G = H / Hkv
    query heads that share kv head g are G query rows of one head-g attention. So q [n, Hkv G, Dh]
    becomes [n G, Hkv, Dh] (a copy of the n new rows), sequence b has G query rows, and
    ``ops.attention`` reads the cache's [nk, Hkv, Dh] rows as they are: no [nk, H, Dh] copy of the cache.
    """
    n, H, Dh = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    qg = np.ascontiguousarray(q.reshape(n, Hkv, G, Dh).transpose(0, 2, 1, 3)).reshape(n * G, Hkv, Dh)
    #    [n, H, Dh] -> [n, Hkv, G, Dh] -> [n, G, Hkv, Dh] -> [n G, Hkv, Dh]
    out = ops.attention(qg, k, v, cu_seqlens_q * np.int32(G), cu_seqlens_k)      # [n G, Hkv, Dh]
    return np.ascontiguousarray(out.reshape(n, G, Hkv, Dh).transpose(0, 2, 1, 3)).reshape(n, H, Dh)
    #    [n G, Hkv, Dh] -> [n, G, Hkv, Dh] -> [n, Hkv, G, Dh] -> [n, H, Dh]


class _Slot:
    """Where one sequence lives in the arena: rows ``start : start + capacity``, the first ``length`` used."""
    __slots__ = ("start", "capacity", "length")

    def __init__(self, start, capacity):
        self.start, self.capacity, self.length = start, capacity, 0


class PackedKVCache:
    """Per-sequence caches in one arena per layer, addressed by a sequence id; a step is a packed batch.

        cache.add(seq_id, capacity)       reserve rows for a new sequence (a hint; it grows if needed)
        cache.begin(seq_ids, n_new)       this step: n_new[b] new tokens of sequence seq_ids[b]
        attend = cache.layer(i)           attend(q [n, H, Dh], k, v [n, Hkv, Dh]) -> [n, H, Dh]
        cache.commit()                    the step's tokens become part of the cache
        cache.drop(seq_id)                frees a finished or cancelled sequence

    Layout: ``k``, ``v`` [L, R, Hkv, Dh] hold every live sequence; sequence s owns rows
    ``start_s : start_s + capacity_s`` (its slot), the first ``length_s`` filled. A step writes its
    new k and v rows in place after each sequence's last row, and the attention reads the arena
    itself: ``cu_seqlens_k`` walks the arena in row order, a sequence of the step is a segment over its
    used rows, and every stretch in between (free rows, unused capacity, sequences not in this step)
    is a segment with no queries, which attention skips. So a step copies no cache row, whatever the
    batch: its cost is the new rows alone.

    Slots are allocated first fit from a free list (freed slots coalesce and are reused by newcomers).
    A sequence that outgrows its slot grows in place when the rows after it are free, else moves to a
    slot of twice the size (a copy of its own rows, O(1) amortised per token). The arena doubles when
    no slot fits (a copy of the used rows, also amortised); the Generator sizes each slot from the
    prompt and max_new_tokens, so neither happens in ordinary generation. An empty cache frees the arena.
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int):
        self.n_layers, self.n_kv_heads, self.head_dim = n_layers, n_kv_heads, head_dim
        self.k = self.v = np.empty((n_layers, 0, n_kv_heads, head_dim), np.float32)   # [L, R, Hkv, Dh]
        self.seqs: dict = {}     # seq_id -> _Slot
        self._free = []          # sorted [start, size] of free rows below self._top
        self._top = 0            # rows at and after _top are free
        self._step = None

    # ---- slots -------------------------------------------------------------------------------------
    def add(self, seq_id, capacity: int = 0) -> None:
        if seq_id in self.seqs:
            raise ValueError(f"sequence {seq_id!r} is already in the cache")
        capacity = max(int(capacity), 1)
        self.seqs[seq_id] = _Slot(self._alloc(capacity), capacity)

    def drop(self, seq_id) -> None:
        s = self.seqs.pop(seq_id, None)
        if s is None:
            return
        self._release(s.start, s.capacity)
        if not self.seqs:                        # nothing live: give the memory back
            self.k = self.v = self.k[:, :0].copy()
            self._free, self._top = [], 0

    def length(self, seq_id) -> int:
        return self.seqs[seq_id].length

    def _alloc(self, n) -> int:  # -> start of n free rows
        for i, (start, size) in enumerate(self._free):           # first fit
            if size >= n:
                if size == n:
                    del self._free[i]
                else:
                    self._free[i] = [start + n, size - n]
                return start
        start = self._top
        self._grow_arena(start + n)
        self._top = start + n
        return start

    def _release(self, start, n) -> None:
        free = self._free
        free.append([start, n])
        free.sort()
        merged = []
        for blk in free:                                          # coalesce neighbours
            if merged and merged[-1][0] + merged[-1][1] == blk[0]:
                merged[-1][1] += blk[1]
            else:
                merged.append(blk)
        if merged and merged[-1][0] + merged[-1][1] == self._top:  # free rows at the top lower it
            self._top = merged.pop()[0]
        self._free = merged

    def _grow_arena(self, rows) -> None:
        R = self.k.shape[1]
        if rows <= R:
            return
        cap = max(rows, 2 * R)
        for name in ("k", "v"):
            old = getattr(self, name)
            new = np.empty((self.n_layers, cap, self.n_kv_heads, self.head_dim), np.float32)
            new[:, :self._top] = old[:, :self._top]
            setattr(self, name, new)

    def _reserve(self, s: _Slot, n) -> None:
        """Make room in slot ``s`` for ``n`` more rows (in place if it can, else move it)."""
        need = s.length + n
        if need <= s.capacity:
            return
        end = s.start + s.capacity
        if end == self._top:                                      # the last slot: extend it
            self._grow_arena(s.start + need)
            self._top = s.start + need
            s.capacity = need
            return
        if self._free and self._free[0][0] <= end:                # the rows after it may be free
            for i, (start, size) in enumerate(self._free):
                if start == end and size >= need - s.capacity:
                    take = need - s.capacity
                    if size == take:
                        del self._free[i]
                    else:
                        self._free[i] = [start + take, size - take]
                    s.capacity = need
                    return
        cap = max(need, 2 * s.capacity)                           # move: copies this sequence only
        start = self._alloc(cap)
        self.k[:, start:start + s.length] = self.k[:, s.start:s.start + s.length]
        self.v[:, start:start + s.length] = self.v[:, s.start:s.start + s.length]
        self._release(s.start, s.capacity)
        s.start, s.capacity = start, cap

    # ---- a step ------------------------------------------------------------------------------------
    def begin(self, seq_ids, n_new) -> np.ndarray:
        """Start a step; returns cu_seqlens_q int32 [B+1] of its packed rows (in the order given)."""
        seq_ids, n_new = list(seq_ids), [int(n) for n in n_new]
        if len(set(seq_ids)) != len(seq_ids):
            raise ValueError("a sequence appears twice in one step")
        slots = [self.seqs[sid] for sid in seq_ids]
        for s, n in zip(slots, n_new):
            self._reserve(s, n)
        cu_q = np.zeros(len(n_new) + 1, np.int32)
        np.cumsum(n_new, out=cu_q[1:])
        # rows of the arena this step writes, in the step's row order
        dst = np.concatenate([np.arange(s.start + s.length, s.start + s.length + n, dtype=np.int64)
                              for s, n in zip(slots, n_new)] + [np.empty(0, np.int64)])
        # the attention's segments: the step's sequences in arena order, no-query segments between them
        order = sorted(range(len(slots)), key=lambda b: slots[b].start)
        seg_q, seg_k, at = [], [], 0
        for b in order:
            s = slots[b]
            if s.start > at:
                seg_q.append(0)
                seg_k.append(s.start - at)
            seg_q.append(n_new[b])
            seg_k.append(s.length + n_new[b])
            at = s.start + s.length + n_new[b]
        att_cu_q = np.zeros(len(seg_q) + 1, np.int32)
        att_cu_k = np.zeros(len(seg_k) + 1, np.int32)
        np.cumsum(seg_q, out=att_cu_q[1:])
        np.cumsum(seg_k, out=att_cu_k[1:])
        # the step's q rows in arena order (None: they already are)
        perm = None
        if order != sorted(order):
            perm = np.concatenate([np.arange(cu_q[b], cu_q[b + 1]) for b in order])
        decode = all(n == 1 for n in n_new)                      # one new token each: _decode_attention
        self._step = (seq_ids, n_new, dst, att_cu_q, att_cu_k, perm, at, decode)
        return cu_q

    def layer(self, i: int):
        """attend(q, k, v) for layer i of the current step."""
        return lambda q, k, v: self._attend(i, q, k, v)

    def _attend(self, i, q, k, v):  # [n, H, Dh], [n, Hkv, Dh] x2 -> [n, H, Dh]
        _, _, dst, cu_q, cu_k, perm, end, decode = self._step
        self.k[i][dst] = k                                        # append in place
        self.v[i][dst] = v
        if perm is not None:
            q = q[perm]
        k_all, v_all = self.k[i, :end], self.v[i, :end]          # [end, Hkv, Dh]: the arena, no copy
        if decode:
            out = _decode_attention(q, k_all, v_all, cu_q, cu_k)
        else:
            out = ops.decoder_attention(q, k_all, v_all, cu_q, cu_k)
        if perm is not None:
            out[perm] = out.copy()
        return out

    def commit(self) -> None:
        seq_ids, n_new = self._step[:2]
        for sid, n in zip(seq_ids, n_new):
            self.seqs[sid].length += n
        self._step = None

    @property
    def nbytes(self) -> int:
        """Bytes the arena holds (k and v, all layers)."""
        return self.k.nbytes + self.v.nbytes


class PrePaddedKVCache:
    """EET's pre-padded cache: per layer, k and v [B, capacity, Hkv, Dh]; columns < n_pad[b] are pads.

        attend = cache.layer(i)           q [B Tq, H, Dh], k, v [B Tq, Hkv, Dh] -> [B Tq, H, Dh]
        cache.commit(Tq)                  the step's Tq columns become part of the cache
        cache.keep(rows)                  finished sequences leave the batch
    """

    def __init__(self, n_layers, n_kv_heads, head_dim, n_pad, capacity):
        B = len(n_pad)
        self.n_pad = np.asarray(n_pad, np.int64)                     # [B]
        self.k = [np.zeros((B, capacity, n_kv_heads, head_dim), np.float32) for _ in range(n_layers)]
        self.v = [np.zeros((B, capacity, n_kv_heads, head_dim), np.float32) for _ in range(n_layers)]
        self.length = 0                                               # columns filled, pads included

    def layer(self, i: int):
        return lambda q, k, v: self._attend(i, q, k, v)

    def _attend(self, i, q, k, v):
        B, T = len(self.n_pad), self.length
        Tq = q.shape[0] // B
        self.k[i][:, T:T + Tq] = k.reshape(B, Tq, *k.shape[1:])        # [B Tq, Hkv, Dh] -> [B, Tq, Hkv, Dh]
        self.v[i][:, T:T + Tq] = v.reshape(B, Tq, *v.shape[1:])
        out = ops.prepadded_attention(q.reshape(B, Tq, *q.shape[1:]),  # [B Tq, H, Dh] -> [B, Tq, H, Dh]
                                      self.k[i][:, :T + Tq], self.v[i][:, :T + Tq], self.n_pad)
        return out.reshape(q.shape)                                    # [B, Tq, H, Dh] -> [B Tq, H, Dh]

    def commit(self, n_columns: int) -> None:
        self.length += n_columns

    def keep(self, rows) -> None:
        rows = np.asarray(rows, np.int64)
        self.n_pad = self.n_pad[rows]
        self.k = [a[rows] for a in self.k]
        self.v = [a[rows] for a in self.v]
