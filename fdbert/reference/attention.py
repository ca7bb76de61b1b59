"""Scaled dot-product attention over a packed batch of variable-length sequences (EET, sec. 3), tiled
over queries and keys with an online softmax (FlashAttention, Dao et al. 2022).

A packed batch stores the real tokens of all sequences back to back; ``cu_seqlens`` (cumulative
sequence lengths, int32 [B+1]) says that sequence b owns rows ``cu[b]:cu[b+1]``. Attention runs within
each sequence, so padding never exists and costs nothing. Queries and keys have separate offsets so the
same function serves an encoder (q, k, v from the same tokens), and a decoder with a KV cache: there a
sequence has Lq new queries and Lk >= Lq keys (cache + new), and the causal mask is aligned at the end.

Long sequences: the scores of a sequence are never held whole (an 8,192-token prompt would need
[H, L, L] float32 = 2.4 GB for SmolLM2's 9 heads). A tile of BLOCK_Q queries visits the keys
BLOCK_K at a time and keeps per query row a running max m, a running sum l and the output o of the
keys seen so far, normalised by l (the online softmax; :func:`online_softmax_step`). Memory besides
the output, whatever L: a few score tiles [H, BLOCK_Q, BLOCK_K] (s, its mask, its exponentials) and
o [H, BLOCK_Q, Dh], 2.7 MB for SmolLM2 (H = 9, Dh = 64). The result equals softmax(s) v up to
float32 rounding (the sums run in another order); a sequence of at most BLOCK_K keys is one tile and
gets exactly the bits of softmax(s) v computed whole.
"""

import numpy as np

BLOCK_Q = 128   # queries per tile
BLOCK_K = 128   # keys per tile


def causal_mask(n_q, n_k):  # -> bool [Lq, Lk]
    """mask[i, j] = j <= i + (Lk - Lq): query i is the (Lk - Lq + i)-th position and sees its past."""
    return causal_tile_mask(0, n_q, 0, n_k, n_q, n_k)


def causal_tile_mask(i0, i1, j0, j1, n_q, n_k):  # -> bool [i1 - i0, j1 - j0]
    """mask[i - i0, j - j0] = j <= i + (Lk - Lq) for the queries i0:i1 and keys j0:j1 of one tile."""
    return np.arange(j0, j1)[None, :] <= np.arange(i0, i1)[:, None] + (n_k - n_q)


def visible_keys(i, n_q, n_k, causal):  # -> int
    """The keys query i sees: all Lk, or the first i + Lk - Lq + 1 when causal."""
    return n_k if not causal else min(i + n_k - n_q + 1, n_k)


def sequence_rows(cu_seqlens_q, cu_seqlens_k):  # -> iterator of (q0, q1, k0, k1)
    """The query rows q0:q1 and key rows k0:k1 of each sequence that has queries."""
    for b in range(len(cu_seqlens_q) - 1):
        q0, q1 = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
        if q1 > q0:
            yield q0, q1, int(cu_seqlens_k[b]), int(cu_seqlens_k[b + 1])


def online_softmax_step(m, l, o, s, v):  # [..., n, 1] x2, [..., n, Dh], [..., n, bk], [..., bk, Dh]
    """One key tile of the online softmax (Milakov & Gimelshein 2018; FlashAttention, Dao et al. 2022,
    Algorithm 1):

        m' = max(m, max_j s_j)          the running max over the keys seen so far
        l' = e^(m - m') l + sum_j e^(s_j - m')
        o' = (e^(m - m') l / l') o + sum_j (e^(s_j - m') / l') v_j

    so that o' = softmax(s) v over all keys seen so far, at every tile. A masked key has s_j = -inf
    and weighs 0. Starts from m = -inf, l = 0, o = 0 (then e^(m - m') = 0, and the first tile's o' is
    exactly softmax(s) v). The native kernel defers the division by l' to the last tile
    (FlashAttention-2): the same quantities, rounded differently.
    """
    m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
    alpha = np.exp(m - m_new)                           # rescales what the earlier tiles summed
    p = np.exp(s - m_new)                               # [..., n, bk]
    l_new = alpha * l + p.sum(axis=-1, keepdims=True)
    return m_new, l_new, (alpha * l / l_new) * o + (p / l_new) @ v


def sequence_attention(q, k, v, causal, scale, out):  # [Lq, H, Dh], [Lk, Hkv, Dh] x2 -> out [Lq, H, Dh]
    """out = softmax(q k^T * scale [masked]) v for one sequence, tiled, written into ``out``; query head
    h reads kv head h // G, G = H / Hkv (grouped-query attention, without copying k and v G times)."""
    Lq, H, Dh = q.shape
    Lk, Hkv, _ = k.shape
    G = H // Hkv
    for i0 in range(0, Lq, BLOCK_Q):
        i1 = min(i0 + BLOCK_Q, Lq)
        qt = q[i0:i1].reshape(i1 - i0, Hkv, G, Dh).transpose(1, 2, 0, 3)   # [n, H, Dh] -> [Hkv, G, n, Dh]
        m = np.full((Hkv, G, i1 - i0, 1), -np.inf, np.float32)
        l = np.zeros((Hkv, G, i1 - i0, 1), np.float32)
        o = np.zeros((Hkv, G, i1 - i0, Dh), np.float32)
        for j0 in range(0, visible_keys(i1 - 1, Lq, Lk, causal), BLOCK_K):   # keys past the last query's: unseen
            j1 = min(j0 + BLOCK_K, Lk)
            kt = k[j0:j1].transpose(1, 2, 0)[:, None]                      # [bk, Hkv, Dh] -> [Hkv, 1, Dh, bk]
            vt = v[j0:j1].transpose(1, 0, 2)[:, None]                      # [bk, Hkv, Dh] -> [Hkv, 1, bk, Dh]
            s = (qt @ kt) * scale                                          # [Hkv, G, n, bk]
            if causal:
                s = np.where(causal_tile_mask(i0, i1, j0, j1, Lq, Lk), s, np.float32(-np.inf))
            m, l, o = online_softmax_step(m, l, o, s, vt)
        out[i0:i1] = o.transpose(2, 0, 1, 3).reshape(i1 - i0, H, Dh)   # [Hkv, G, n, Dh] -> [n, H, Dh]


def attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None):
    """out_b = softmax(q_b k_b^T * scale [masked]) v_b for each sequence b, per head.

    q [nq, H, Dh]; k, v [nk, Hkv, Dh] with H % Hkv == 0 (Hkv = H: ordinary multi-head attention; the
    encoder's case); cu_seqlens_q, cu_seqlens_k [B+1] -> out [nq, H, Dh]. Rows outside every sequence
    are 0.
    """
    nq, H, Dh = q.shape
    scale = np.float32(1.0 / np.sqrt(Dh) if scale is None else scale)
    out = np.zeros_like(q)
    for q0, q1, k0, k1 in sequence_rows(cu_seqlens_q, cu_seqlens_k):
        sequence_attention(q[q0:q1], k[k0:k1], v[k0:k1], causal, scale, out[q0:q1])
    return out
