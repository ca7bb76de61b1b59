"""Causal self-attention of a decoder over its KV cache, packed (EET sec. 3) or pre-padded (EET sec. 4).

Grouped-query attention (GQA; Ainslie et al. 2023): H query heads share Hkv key/value heads in groups
of G = H / Hkv, query head h reading kv head h // G (HF's ``repeat_kv``). Hkv = H is ordinary
multi-head attention (GPT-2), Hkv = 1 multi-query attention.

Packed: the cache of sequence b is rows ``cu_seqlens_k[b]:cu_seqlens_k[b+1]`` of k and v, the new
tokens rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` of q; the new tokens are the sequence's last Lq
positions, so query i sees keys j <= i + Lk - Lq. A prefill has Lq = Lk, a decode step Lq = 1.

Pre-padded: every sequence of the batch is left-padded to one length, so the new tokens of a step
share a column; sequence b's first ``n_pad[b]`` columns are pads, which no query ever sees.
"""

import numpy as np

from .. import ops


def repeat_kv(k, n_heads):  # [nk, Hkv, Dh] -> [nk, H, Dh]
    """kv head h // G serves query head h, G = H / Hkv (HF ``repeat_kv``)."""
    return k if k.shape[1] == n_heads else np.repeat(k, n_heads // k.shape[1], axis=1)


def decoder_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, scale=None):
    """out_b = softmax(q_b k_b^T * scale, causal, aligned at the end) v_b per sequence b and head.

    q [nq, H, Dh]; k, v [nk, Hkv, Dh] with H % Hkv == 0; cu_seqlens_q, cu_seqlens_k int32 [B+1]
    -> out [nq, H, Dh]
    """
    H = q.shape[1]
    return ops.attention(q, repeat_kv(k, H), repeat_kv(v, H), cu_seqlens_q, cu_seqlens_k,
                         causal=True, scale=scale)


def prepadded_attention(q, k, v, n_pad, *, scale=None):
    """out[b, i] = softmax(q[b, i] k[b]^T * scale over keys n_pad[b] <= j <= i + Tk - Tq) v[b].

    q [B, Tq, H, Dh]; k, v [B, Tk, Hkv, Dh]; n_pad int [B] -> out [B, Tq, H, Dh]. A query that is
    itself a pad sees no key; its output is 0.
    """
    B, Tq, H, Dh = q.shape
    Tk = k.shape[1]
    scale = np.float32(1.0 / np.sqrt(Dh) if scale is None else scale)
    kh = np.repeat(k, H // k.shape[2], axis=2).transpose(0, 2, 3, 1)   # [B, Tk, H, Dh] -> [B, H, Dh, Tk]
    vh = np.repeat(v, H // v.shape[2], axis=2).transpose(0, 2, 1, 3)   # [B, Tk, H, Dh] -> [B, H, Tk, Dh]
    scores = (q.transpose(0, 2, 1, 3) @ kh) * scale                    # [B, H, Tq, Tk]
    j, i = np.arange(Tk)[None, None, :], np.arange(Tq)[None, :, None]
    visible = (j >= np.asarray(n_pad)[:, None, None]) & (j <= i + (Tk - Tq))  # [B, Tq, Tk]
    scores = np.where(visible[:, None], scores, np.float32(-np.inf))
    sees_any = visible.any(axis=-1)[:, None, :, None]                  # [B, 1, Tq, 1]
    p = ops.softmax(np.where(sees_any, scores, np.float32(0)))          # pad queries: a harmless row
    out = np.where(sees_any, p @ vh, np.float32(0))                    # [B, H, Tq, Dh]
    return out.transpose(0, 2, 1, 3).astype(np.float32)                # [B, Tq, H, Dh]
