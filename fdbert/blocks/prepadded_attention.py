"""EET's pre-padded causal attention (Li et al. 2021, sec. 4): a left-padded batch over its KV cache.

Every sequence of the batch is left-padded to one length, so the new tokens of a step share a column;
sequence b's first ``n_pad[b]`` columns are pads, which no query ever sees. Query head h reads kv
head h // (H / Hkv) (grouped-query heads, as in :mod:`fdbert.reference.decoder_attention`).

This is the op ``fdbert.ops.prepadded_attention`` of the reference backend. No backend fuses it: it
is NumPy products around the dispatched ``ops.softmax``, so its softmax runs on the selected backend.
"""

import numpy as np

from .. import ops


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
