"""Packed variable-length batches: padding tokens cost nothing (EET, Li et al. 2021).

A batch of B sequences is stored as its n real tokens back to back, plus ``cu_seqlens`` (int32 [B+1],
``cu_seqlens[b]:cu_seqlens[b+1]`` are sequence b's rows). Linear layers, LayerNorm and the FFN see an
[n, D] matrix; only attention looks at ``cu_seqlens``. :func:`pack` turns the familiar padded
``input_ids [B, T]`` + ``attention_mask [B, T]`` (right or left padding) into this form, and
:func:`unpack` puts per-token outputs back in the padded layout.

Positions count from 0 at each sequence's first real token, whatever the padding side: a sequence's
output does not depend on how much padding surrounds it or where.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ShapeError, expect_dtype


@dataclass(frozen=True)
class PackedBatch:
    input_ids: np.ndarray       # int64 [n]
    token_type_ids: np.ndarray  # int64 [n]
    positions: np.ndarray       # int64 [n], 0 at each sequence's first token
    cu_seqlens: np.ndarray      # int32 [B+1]
    rows: np.ndarray            # int64 [n], index of each token's sequence (b)
    cols: np.ndarray            # int64 [n], column of each token in the padded [B, T] layout
    padded_shape: tuple         # (B, T)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:  # [B]
        return np.diff(self.cu_seqlens)


def _check_ids(name, a):
    a = np.asarray(a)
    if a.ndim != 2:
        raise ShapeError(f"{name}: expected a 2-D array [batch, seq_len], got shape {a.shape}")
    expect_dtype(name, a, "i", "u")
    return a


def pack(input_ids, attention_mask=None, token_type_ids=None) -> PackedBatch:
    """Padded [B, T] ids + mask -> PackedBatch. Each mask row must be one run of ones (either side)."""
    ids = _check_ids("input_ids", input_ids)
    B, T = ids.shape
    if attention_mask is None:
        mask = np.ones((B, T), dtype=bool)
    else:
        mask = np.asarray(attention_mask)
        if mask.shape != ids.shape:
            raise ShapeError(f"attention_mask: expected the shape of input_ids {ids.shape}, "
                             f"got {mask.shape}")
        if mask.dtype != bool:
            expect_dtype("attention_mask", mask, "i", "u", "b")
            if mask.size and not np.isin(mask, (0, 1)).all():
                raise ShapeError("attention_mask: expected only 0 and 1, got values "
                                 f"{sorted(set(np.unique(mask).tolist()) - {0, 1})[:5]}")
        mask = mask.astype(bool)
    if token_type_ids is None:
        tt = np.zeros((B, T), dtype=np.int64)
    else:
        tt = _check_ids("token_type_ids", token_type_ids)
        if tt.shape != ids.shape:
            raise ShapeError(f"token_type_ids: expected the shape of input_ids {ids.shape}, "
                             f"got {tt.shape}")
    lengths = mask.sum(axis=1)
    # one contiguous run per row: the number of 0->1 / 1->0 edges is at most 2 (left+right padding)
    edges = np.diff(mask.astype(np.int8), axis=1, prepend=0, append=0)
    bad = np.flatnonzero((edges != 0).sum(axis=1) > 2)
    if len(bad):
        raise ShapeError(f"attention_mask row {bad[0]} has holes: each row must be one contiguous run "
                         "of ones (left or right padding)")
    rows, cols = np.nonzero(mask)  # row-major: sequence by sequence, tokens in order
    cu = np.zeros(B + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    starts = np.repeat(cols[cu[:-1][lengths > 0]], lengths[lengths > 0]) if len(rows) else cols
    return PackedBatch(input_ids=ids[rows, cols].astype(np.int64),
                       token_type_ids=tt[rows, cols].astype(np.int64),
                       positions=(cols - starts).astype(np.int64), cu_seqlens=cu,
                       rows=rows.astype(np.int64), cols=cols.astype(np.int64), padded_shape=(B, T))


def pack_sequences(sequences, token_type_ids=None) -> PackedBatch:
    """A list of B token-id lists (any lengths) -> PackedBatch; padded layout is right padding."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    B, T = len(sequences), int(lengths.max(initial=0))
    cu = np.zeros(B + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    n = int(cu[-1])
    rows = np.repeat(np.arange(B), lengths)
    positions = np.arange(n) - np.repeat(cu[:-1], lengths)
    ids = np.fromiter((t for s in sequences for t in s), dtype=np.int64, count=n)
    tt = (np.zeros(n, np.int64) if token_type_ids is None else
          np.fromiter((t for s in token_type_ids for t in s), dtype=np.int64, count=n))
    return PackedBatch(input_ids=ids, token_type_ids=tt, positions=positions.astype(np.int64),
                       cu_seqlens=cu, rows=rows, cols=positions.astype(np.int64), padded_shape=(B, T))


def pass_groups(cu_seqlens, max_tokens) -> list[tuple[int, int]]:
    """Split B packed sequences into consecutive groups [i, j) of at most ``max_tokens`` tokens each
    (a longer sequence forms a group alone); ``max_tokens`` None: one group. Empty batch: []."""
    cu = np.asarray(cu_seqlens, dtype=np.int64)
    B = len(cu) - 1
    if max_tokens is None:
        return [(0, B)] if B > 0 else []
    groups, i = [], 0
    while i < B:
        j = i + 1
        while j < B and cu[j + 1] - cu[i] <= max_tokens:
            j += 1
        groups.append((i, j))
        i = j
    return groups


def unpack(x, packed: PackedBatch, fill=0.0):  # [n, ...] -> [B, T, ...]
    """Scatter per-token rows back to the padded layout; padding positions hold ``fill``."""
    out = np.full(packed.padded_shape + x.shape[1:], fill, dtype=x.dtype)
    out[packed.rows, packed.cols] = x
    return out
