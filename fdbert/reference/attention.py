"""Scaled dot-product attention over a packed batch of variable-length sequences (EET, sec. 3).

A packed batch stores the real tokens of all sequences back to back; ``cu_seqlens`` (cumulative
sequence lengths, int32 [B+1]) says that sequence b owns rows ``cu[b]:cu[b+1]``. Attention runs within
each sequence, so padding never exists and costs nothing. Queries and keys have separate offsets so the
same function serves an encoder (q, k, v from the same tokens), and a decoder with a KV cache: there a
sequence has Lq new queries and Lk >= Lq keys (cache + new), and the causal mask is aligned at the end.
"""

import numpy as np

from .activations import softmax


def causal_mask(n_q, n_k):  # -> bool [Lq, Lk]
    """mask[i, j] = j <= i + (Lk - Lq): query i is the (Lk - Lq + i)-th position and sees its past."""
    return np.arange(n_k)[None, :] <= np.arange(n_q)[:, None] + (n_k - n_q)


def sequence_rows(cu_seqlens_q, cu_seqlens_k):  # -> iterator of (q0, q1, k0, k1)
    """The query rows q0:q1 and key rows k0:k1 of each sequence that has queries."""
    for b in range(len(cu_seqlens_q) - 1):
        q0, q1 = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
        if q1 > q0:
            yield q0, q1, int(cu_seqlens_k[b]), int(cu_seqlens_k[b + 1])


def attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None):
    """out_b = softmax(q_b k_b^T * scale [masked]) v_b for each sequence b, per head.

    q [nq, H, Dh]; k, v [nk, H, Dh]; cu_seqlens_q, cu_seqlens_k [B+1] -> out [nq, H, Dh]
    """
    nq, H, Dh = q.shape
    scale = np.float32(1.0 / np.sqrt(Dh) if scale is None else scale)
    out = np.zeros_like(q)
    for q0, q1, k0, k1 in sequence_rows(cu_seqlens_q, cu_seqlens_k):
        qb = q[q0:q1].transpose(1, 0, 2)                 # [Lq, H, Dh] -> [H, Lq, Dh]
        kb = k[k0:k1].transpose(1, 2, 0)                 # [Lk, H, Dh] -> [H, Dh, Lk]
        vb = v[k0:k1].transpose(1, 0, 2)                 # [Lk, H, Dh] -> [H, Lk, Dh]
        scores = (qb @ kb) * scale                       # [H, Lq, Lk]
        if causal:
            scores = np.where(causal_mask(q1 - q0, k1 - k0), scores, np.float32(-np.inf))
        out[q0:q1] = (softmax(scores) @ vb).transpose(1, 0, 2)      # [H, Lq, Dh] -> [Lq, H, Dh]
    return out
