"""Causal self-attention of a decoder over its KV cache, with grouped-query heads (packed rows, EET sec. 3).

Grouped-query attention (GQA; Ainslie et al. 2023): H query heads share Hkv key/value heads in groups
of G = H / Hkv, query head h reading kv head h // G (HF's ``repeat_kv``). Hkv = H is ordinary
multi-head attention (GPT-2), Hkv = 1 multi-query attention.

The cache of sequence b is rows ``cu_seqlens_k[b]:cu_seqlens_k[b+1]`` of k and v, the new tokens rows
``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` of q; the new tokens are the sequence's last Lq positions, so
query i sees keys j <= i + Lk - Lq. A prefill has Lq = Lk, a decode step Lq = 1. The pre-padded
scheme (EET sec. 4) is the block :mod:`fdbert.blocks.prepadded_attention`.
"""

import numpy as np

from .attention import attention


def repeat_kv(k, n_heads):  # [nk, Hkv, Dh] -> [nk, H, Dh]
    """kv head h // G serves query head h, G = H / Hkv (HF ``repeat_kv``)."""
    return k if k.shape[1] == n_heads else np.repeat(k, n_heads // k.shape[1], axis=1)


def decoder_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, scale=None):
    """out_b = softmax(q_b k_b^T * scale, causal, aligned at the end) v_b per sequence b and head.

    q [nq, H, Dh]; k, v [nk, Hkv, Dh] with H % Hkv == 0; cu_seqlens_q, cu_seqlens_k int32 [B+1]
    -> out [nq, H, Dh]
    """
    H = q.shape[1]
    return attention(q, repeat_kv(k, H), repeat_kv(v, H), cu_seqlens_q, cu_seqlens_k,
                     causal=True, scale=scale)
