"""Causal self-attention of a decoder over its KV cache, with grouped-query heads (packed rows, EET sec. 3).

Grouped-query attention (GQA; Ainslie et al. 2023): H query heads share Hkv key/value heads in groups
of G = H / Hkv, query head h reading kv head h // G (HF's ``repeat_kv``, here an
index instead of a copy). Hkv = H is ordinary multi-head attention (GPT-2), Hkv = 1 multi-query
attention.

The cache of sequence b is rows ``cu_seqlens_k[b]:cu_seqlens_k[b+1]`` of k and v, the new tokens rows
``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` of q; the new tokens are the sequence's last Lq positions, so
query i sees keys j <= i + Lk - Lq. A prefill has Lq = Lk, a decode step Lq = 1. The pre-padded
scheme (EET sec. 4) is the block :mod:`fdbert.blocks.prepadded_attention`.
"""

from .attention import attention


def decoder_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, *, scale=None):
    """out_b = softmax(q_b k_b^T * scale, causal, aligned at the end) v_b per sequence b and head.

    q [nq, H, Dh]; k, v [nk, Hkv, Dh] with H % Hkv == 0; cu_seqlens_q, cu_seqlens_k int32 [B+1]
    -> out [nq, H, Dh]. Query head h reads kv head h // G in place (no [nk, H, Dh] copy), tiled over
    keys with an online softmax (:func:`fdbert.reference.attention.sequence_attention`): memory does
    not grow with Lq Lk.
    """
    return attention(q, k, v, cu_seqlens_q, cu_seqlens_k, causal=True, scale=scale)
