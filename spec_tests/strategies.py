"""Hypothesis strategies of fdbert's spec tests: small encoder configs, padded batches, and the
packed q, k, v batches of the attention ops.

Every strategy draws shapes that are consistent with each other (a batch fits its model's vocabulary
and position table), so tests never filter. Random weights come from a drawn seed, so a failing example
is reproduced exactly by Hypothesis' shrinker and database.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

import fdbert
from fdbert.model import Encoder
from fdbert.weights import EmbeddingWeights, EncoderLayerWeights, EncoderWeights, LayerNorm, Linear

MODEL_TYPES = ("distilbert", "bert")
PADDING_SIDES = ("left", "right")


@dataclass(frozen=True)
class SmallConfig:
    """An encoder shape small enough to build in torch per Hypothesis example."""
    model_type: str
    n_layers: int         # 1-3
    n_heads: int          # H, 1-4
    head_dim: int         # Dh, 1-16
    d_ffn: int            # F
    vocab_size: int       # V
    max_positions: int
    type_vocab_size: int  # 0 for DistilBERT
    layer_norm_eps: float
    seed: int             # torch.manual_seed / numpy seed of the random weights

    @property
    def d_model(self) -> int:  # D = H * Dh
        return self.n_heads * self.head_dim

    def to_fdbert(self) -> fdbert.EncoderConfig:
        return fdbert.EncoderConfig(self.model_type, vocab_size=self.vocab_size, d_model=self.d_model,
                                    n_layers=self.n_layers, n_heads=self.n_heads, d_ffn=self.d_ffn,
                                    max_positions=self.max_positions,
                                    type_vocab_size=self.type_vocab_size,
                                    layer_norm_eps=self.layer_norm_eps)


@st.composite
def small_configs(draw, model_type=None, max_layers=3, max_heads=4, max_head_dim=16):
    """A SmallConfig: layers 1-3, heads 1-4, head size 1-16, FFN 1-64, vocab 2-64, positions 1-24."""
    model_type = draw(st.sampled_from(MODEL_TYPES)) if model_type is None else model_type
    bert = model_type == "bert"
    return SmallConfig(
        model_type=model_type,
        n_layers=draw(st.integers(1, max_layers)),
        n_heads=draw(st.integers(1, max_heads)),
        head_dim=draw(st.integers(1, max_head_dim)),
        d_ffn=draw(st.integers(1, 64)),
        vocab_size=draw(st.integers(2, 64)),
        max_positions=draw(st.integers(1, 24)),
        type_vocab_size=draw(st.integers(1, 3)) if bert else 0,
        # DistilBERT's eps is hard-coded to 1e-12 in HF; BERT reads layer_norm_eps from config.json
        layer_norm_eps=draw(st.sampled_from([1e-12, 1e-5, 1e-3])) if bert else 1e-12,
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@dataclass(frozen=True)
class PaddedBatch:
    input_ids: np.ndarray       # int64 [B, T]
    attention_mask: np.ndarray  # int64 [B, T], one run of ones per row
    token_type_ids: np.ndarray  # int64 [B, T]
    lengths: tuple              # [B]
    side: str                   # "left" or "right"

    def sequence(self, b):  # -> ids [L], token types [L] of sequence b's real tokens
        m = self.attention_mask[b].astype(bool)
        return self.input_ids[b, m], self.token_type_ids[b, m]


def mask_for(lengths, T, side) -> np.ndarray:  # [B], T -> int64 [B, T]
    """attention_mask with each row's ones at the end (left padding) or the start (right padding)."""
    cols = np.arange(T)[None, :]
    L = np.asarray(lengths)[:, None]
    return ((cols >= T - L) if side == "left" else (cols < L)).astype(np.int64)


@st.composite
def padded_batches(draw, vocab_size, max_len, type_vocab_size=0, min_length=1, max_batch=4,
                   max_extra_padding=3, side=None):
    """B in 1..max_batch sequences of lengths min_length..max_len, padded to T = max length + extra
    (T <= max_len) on one side; padding slots hold random ids too, so a leak of padding shows."""
    B = draw(st.integers(1, max_batch))
    lengths = draw(st.lists(st.integers(min_length, max_len), min_size=B, max_size=B))
    T = min(max(lengths) + draw(st.integers(0, max_extra_padding)), max_len)
    side = draw(st.sampled_from(PADDING_SIDES)) if side is None else side
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, size=(B, T), dtype=np.int64)
    tt = rng.integers(0, max(type_vocab_size, 1), size=(B, T), dtype=np.int64)
    return PaddedBatch(ids, mask_for(lengths, T, side), tt, tuple(lengths), side)


def random_encoder(cfg: SmallConfig, dtype=np.float32) -> Encoder:
    """An fdbert Encoder with random weights built without torch (for tests that compare fdbert with
    itself, e.g. packing). Weights are scaled so attention is far from uniform and biases nonzero.

    The reference computes in the weights' dtype, so ``dtype=np.float64`` runs the same maths with
    rounding too small to show (used to separate packing bugs from BLAS summation order).
    """
    rng = np.random.default_rng(cfg.seed)
    D, F = cfg.d_model, cfg.d_ffn

    def normal(*shape, std=1.0):
        return (rng.standard_normal(shape) * std).astype(dtype)

    def linear(N, K):
        return Linear(normal(N, K, std=2.0 / np.sqrt(K)), normal(N, std=0.2))

    def layer_norm():
        return LayerNorm(1 + normal(D, std=0.2), normal(D, std=0.2))

    emb = EmbeddingWeights(normal(cfg.vocab_size, D), normal(cfg.max_positions, D),
                           normal(cfg.type_vocab_size, D) if cfg.type_vocab_size else None, layer_norm())
    layers = [EncoderLayerWeights(linear(D, D), linear(D, D), linear(D, D), linear(D, D), layer_norm(),
                                  linear(F, D), linear(D, F), layer_norm())
              for _ in range(cfg.n_layers)]
    return Encoder(cfg.to_fdbert(), EncoderWeights(emb, layers))


@st.composite
def packed_batches(draw, causal=None):
    """(q, k, v, cu_q, cu_k, causal, scale): B sequences, Lq <= Lk (Lq < Lk half the time), empties."""
    causal = draw(st.booleans()) if causal is None else causal
    B = draw(st.integers(1, 4))
    H = draw(st.integers(1, 3))
    Dh = draw(st.one_of(st.integers(1, 20), st.sampled_from([16, 32, 64, 65])))
    lk = draw(st.lists(st.integers(0, 40), min_size=B, max_size=B))
    lq = [draw(st.one_of(st.just(L), st.integers(0, L), st.just(min(L, 1)))) for L in lk]
    lead_q, lead_k = draw(st.integers(0, 2)), draw(st.integers(0, 2))  # rows before cu[0]: stay 0
    cu_q = (lead_q + np.concatenate([[0], np.cumsum(lq)])).astype(np.int32)
    cu_k = (lead_k + np.concatenate([[0], np.cumsum(lk)])).astype(np.int32)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sd = draw(st.sampled_from([0.3, 1.0, 2.0]))
    q = rng.normal(0, sd, (int(cu_q[-1]) + draw(st.integers(0, 2)), H, Dh)).astype(np.float32)
    k = rng.normal(0, sd, (int(cu_k[-1]) + draw(st.integers(0, 2)), H, Dh)).astype(np.float32)
    v = rng.normal(0, 1, k.shape).astype(np.float32)
    scale = draw(st.one_of(st.none(), st.sampled_from([0.05, 0.125, 1.0])))
    return q, k, v, cu_q, cu_k, causal, scale


# ---- arrays of the native op tests (test_native_*.py) ----------------------------------------------
seeds = st.integers(0, 2**32 - 1)
# row widths of the float32 ops: small, and around the 16-lane (AVX-512) and 8-lane (AVX2) tails
widths = st.one_of(st.integers(1, 40), st.sampled_from([15, 16, 17, 31, 33, 64, 768]))
# the decoder ops' widths: tails, and SmolLM2-135M's d_model (576) and FFN width (1536)
decoder_widths = st.one_of(st.integers(1, 40), st.sampled_from([15, 16, 17, 33, 576, 1536]))
# quantization parameters: powers of two (exact ties), tiny and huge scales, every edge zero point
scales = st.one_of(st.sampled_from([1.0, 0.5, 0.25, 2.0**-10, 0.1, 0.037, 3.0, 1e-30, 1e30]),
                   st.floats(2.0**-20, 1024.0, width=32))
zero_points = st.one_of(st.sampled_from([0, 1, 128, 254, 255]), st.integers(0, 255))
