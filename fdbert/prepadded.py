"""EET's pre-padded batched generation (Li et al. 2021, sec. 4), kept to teach the scheme and to compare
it with packing (``lm.generate(..., padding="pre")``).

    prompts          pads    real tokens          step 1   step 2
    "a b c d"       [         a  b  c  d ]        e        f
    "x y"           [ _  _    x  y       ]        z        w

Every prompt is left-padded to the longest, so the batch is a dense [B, T] block and every step's new
tokens share a column. Positions count from each sequence's first real token (pads take position 0),
and attention masks the pad columns (fdbert.blocks.prepadded_attention), so the
tokens are those of each prompt generated alone. The pads cost their share of every Linear in the
prefill and of the attention at every step; packing spends nothing on them. A finished sequence
leaves the block (its row is dropped) and costs nothing more.
"""

from __future__ import annotations

import numpy as np

from .errors import ShapeError
from .kv_cache import PrePaddedKVCache
from .sampling import sample


def generate_prepadded(lm, prompts, params):  # list of id lists -> list of (token_ids, text, finish_reason)
    """Each prompt's generated tokens, their text (cut before a stop string) and why it finished."""
    c = lm.config
    B, T = len(prompts), max(len(p) for p in prompts)
    if T > lm.max_seq_len:
        raise ShapeError(f"a prompt has {T} tokens, more than the model's limit of {lm.max_seq_len}")
    pad_id = next(iter(lm.eos_token_ids), 0)
    n_pad = np.array([T - len(p) for p in prompts], np.int64)                  # [B]
    ids = np.full((B, T), pad_id, np.int64)                                    # [B, T], pads on the left
    for b, p in enumerate(prompts):
        ids[b, n_pad[b]:] = p
    positions = np.maximum(np.arange(T)[None, :] - n_pad[:, None], 0)          # [B, T]
    capacity = T + params.max_new_tokens
    cache = PrePaddedKVCache(c.n_layers, c.n_kv_heads, c.head_dim, n_pad, capacity)
    rngs = [np.random.default_rng(params.seed) for _ in prompts]
    generated = [[] for _ in prompts]
    finish = [None] * B
    rows = np.arange(B)                          # original index of each row still in the block
    step_ids, step_pos = ids.reshape(-1), positions.reshape(-1)                # [B T] packed as a dense block
    while len(rows):
        h = lm.forward(step_ids, step_pos, cache.layer)                        # [B' Tq, D]
        Tq = len(step_ids) // len(rows)
        cache.commit(Tq)
        logits = lm.lm_head(h.reshape(len(rows), Tq, -1)[:, -1])               # [B', V]: last column
        keep = []
        for r, (b, row) in enumerate(zip(rows, logits)):
            token = sample(row, params, rngs[b])
            if token in lm.eos_token_ids:
                finish[b] = "stop"
                continue
            generated[b].append(token)
            text = lm.tokenizer.decode(generated[b], skip_special_tokens=True) if lm.tokenizer else ""
            if any(s in text for s in params.stop):
                finish[b] = "stop"
            elif len(generated[b]) >= params.max_new_tokens or cache.length - cache.n_pad[r] >= lm.max_seq_len:
                finish[b] = "length"
            else:
                keep.append(r)
        if len(keep) < len(rows):
            cache.keep(keep)                                                   # finished rows leave
            rows = rows[keep]
        step_ids = np.array([generated[b][-1] for b in rows], np.int64)        # [B', 1] as [B']
        step_pos = cache.length - cache.n_pad                                  # positions from the first real token
    out = []
    for b in range(B):
        text = lm.tokenizer.decode(generated[b], skip_special_tokens=True) if lm.tokenizer else ""
        cuts = [text.find(s) for s in params.stop if s in text]
        out.append((generated[b], text[:min(cuts)] if cuts else text, finish[b]))
    return out
