"""Key/value caches of a decoder: what attention of later tokens needs from earlier ones.

Each layer's attention stores the k and v rows of this step's tokens and attends over everything its
sequence has stored. Memory: 2 (k and v) x n_layers x Hkv x Dh x 4 bytes per cached token; SmolLM2-135M
(30 layers, Hkv = 3, Dh = 64): 46 KB per token, 369 MB for one sequence of 8,192 tokens.

:class:`PackedKVCache` (the default, EET sec. 3): one cache per sequence, no padding anywhere. A step
runs any mix of sequences, each with any number of new tokens (a prefill of its prompt, or one
decoded token), as packed rows described by ``cu_seqlens_q``; the attention reads each sequence's
cache as packed rows described by ``cu_seqlens_k``. Sequences join and leave between steps.

:class:`PrePaddedKVCache` (EET sec. 4, ``padding="pre"``): one dense [B, T] block, every prompt
left-padded to the longest, so every step's new tokens share a column. Pads are never attended.
"""

from __future__ import annotations

import numpy as np

from . import ops


class _Sequence:
    """The cache of one sequence: per layer, k and v rows [capacity, Hkv, Dh], the first ``length`` used."""

    def __init__(self, n_layers, n_kv_heads, head_dim, capacity):
        shape = (max(capacity, 1), n_kv_heads, head_dim)
        self.k = [np.empty(shape, np.float32) for _ in range(n_layers)]
        self.v = [np.empty(shape, np.float32) for _ in range(n_layers)]
        self.length = 0

    def reserve(self, n):
        """Make room for ``n`` more tokens (doubling, so appends cost O(1) amortised)."""
        need = self.length + n
        if need > self.k[0].shape[0]:
            cap = max(need, 2 * self.k[0].shape[0])
            for kv in (self.k, self.v):
                for i, a in enumerate(kv):
                    grown = np.empty((cap, *a.shape[1:]), np.float32)
                    grown[:self.length] = a[:self.length]
                    kv[i] = grown

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.k + self.v)


class PackedKVCache:
    """Per-sequence caches addressed by a sequence id; a step is a packed batch of some of them.

        cache.begin(seq_ids, n_new)       this step: n_new[b] new tokens of sequence seq_ids[b]
        attend = cache.layer(i)           attend(q [n, H, Dh], k, v [n, Hkv, Dh]) -> [n, H, Dh]
        cache.commit()                    the step's tokens become part of the cache
        cache.drop(seq_id)                frees a finished or cancelled sequence
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int):
        self.n_layers, self.n_kv_heads, self.head_dim = n_layers, n_kv_heads, head_dim
        self.seqs: dict = {}
        self._step = None

    def add(self, seq_id, capacity: int = 0) -> None:
        self.seqs[seq_id] = _Sequence(self.n_layers, self.n_kv_heads, self.head_dim, capacity)

    def drop(self, seq_id) -> None:
        self.seqs.pop(seq_id, None)

    def length(self, seq_id) -> int:
        return self.seqs[seq_id].length

    def begin(self, seq_ids, n_new) -> np.ndarray:
        """Start a step; returns cu_seqlens_q int32 [B+1] of its packed rows."""
        n_new = [int(n) for n in n_new]
        for sid, n in zip(seq_ids, n_new):
            self.seqs[sid].reserve(n)
        cu_q = np.zeros(len(n_new) + 1, np.int32)
        np.cumsum(n_new, out=cu_q[1:])
        lengths = [self.seqs[sid].length + n for sid, n in zip(seq_ids, n_new)]
        cu_k = np.zeros(len(n_new) + 1, np.int32)
        np.cumsum(lengths, out=cu_k[1:])
        self._step = (list(seq_ids), n_new, cu_q, cu_k)
        return cu_q

    def layer(self, i: int):
        """attend(q, k, v) for layer i of the current step."""
        return lambda q, k, v: self._attend(i, q, k, v)

    def _attend(self, i, q, k, v):  # [n, H, Dh], [n, Hkv, Dh] x2 -> [n, H, Dh]
        seq_ids, n_new, cu_q, cu_k = self._step
        ks, vs = [], []
        for b, sid in enumerate(seq_ids):
            s, q0, q1 = self.seqs[sid], cu_q[b], cu_q[b + 1]
            s.k[i][s.length:s.length + n_new[b]] = k[q0:q1]
            s.v[i][s.length:s.length + n_new[b]] = v[q0:q1]
            ks.append(s.k[i][:s.length + n_new[b]])
            vs.append(s.v[i][:s.length + n_new[b]])
        # the keys of all sequences as packed rows (one sequence: its cache itself, no copy)
        k_all = ks[0] if len(ks) == 1 else np.concatenate(ks)   # [nk, Hkv, Dh]
        v_all = vs[0] if len(vs) == 1 else np.concatenate(vs)
        return ops.decoder_attention(q, k_all, v_all, cu_q, cu_k)

    def commit(self) -> None:
        seq_ids, n_new, _, _ = self._step
        for sid, n in zip(seq_ids, n_new):
            self.seqs[sid].length += n
        self._step = None

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.seqs.values())


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
