"""Hypothesis strategies of fdbert's spec tests, all of them: small encoder and decoder configs, padded
and packed batches, INT8 operands and GEMM problems, block-sparse matrices, damaged model files, and
the arrays of the native op tests.

Every strategy draws shapes that are consistent with each other (a batch fits its model's vocabulary
and position table), so tests never filter. Random weights come from a drawn seed, so a failing example
is reproduced exactly by Hypothesis' shrinker and database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

import fdbert
from fdbert.decoder_config import DecoderConfig
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


# ---- block-sparse matrices (test_blocksparse.py) -----------------------------------------------------
BSR_BLOCKS = [(1, 4), (4, 1), (2, 1), (1, 16), (2, 2), (3, 5), (1, 1)]


@st.composite
def block_sparse_dense(draw):
    """(dense [N, K] int8 or float32 with whole R x C blocks zeroed, blocksize)."""
    R, C = draw(st.sampled_from(BSR_BLOCKS))
    N, K = draw(st.integers(0, 13)), draw(st.integers(0, 21))
    dtype = draw(st.sampled_from([np.int8, np.float32]))
    density = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    nb, kb = -(-N // R), -(-K // C)
    keep = rng.random((nb, kb)) < density
    mask = np.repeat(np.repeat(keep, R, 0), C, 1)[:N, :K]
    if dtype == np.int8:
        vals = rng.choice(np.array([-127, -1, 1, 127], np.int8), (N, K))
    else:
        vals = rng.standard_normal((N, K)).astype(np.float32)
        vals[vals == 0] = 1.0
    return np.where(mask, vals, 0).astype(dtype), (R, C)


# ---- INT8 operands (test_int8.py) --------------------------------------------------------------------
@st.composite
def u8_s8_operands(draw, max_m=3, max_n=3, max_k=19):
    M, N, K = draw(st.integers(1, max_m)), draw(st.integers(1, max_n)), draw(st.integers(1, max_k))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    mode = draw(st.sampled_from(["uniform", "extreme", "max"]))
    if mode == "uniform":
        x = rng.integers(0, 256, (M, K)).astype(np.uint8)
        w = rng.integers(-127, 128, (N, K)).astype(np.int8)
    elif mode == "extreme":
        x = rng.choice(np.array([0, 255], np.uint8), (M, K))
        w = rng.choice(np.array([-127, 127], np.int8), (N, K))
    else:
        x = np.full((M, K), 255, np.uint8)
        w = np.full((N, K), 127, np.int8)
    return x, w


# ---- quantized linear layers (test_qlinear.py) -------------------------------------------------------
QLINEAR_BLOCKS = [(1, 4), (4, 1), (2, 1), (1, 16), (3, 5)]


@st.composite
def qlinear_cases(draw):
    """(x u8 [M, K], codes s8 [N, K] with whole blocks zero, blocksize, x_scale, x_zp)."""
    M, N, K = draw(st.integers(1, 7)), draw(st.integers(1, 9)), draw(st.integers(1, 23))
    block = draw(st.sampled_from(QLINEAR_BLOCKS))
    sparsity = draw(st.sampled_from([0.0, 0.3, 0.8, 1.0]))
    mode = draw(st.sampled_from(["uniform", "extreme"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if mode == "uniform":
        x = rng.integers(0, 256, (M, K)).astype(np.uint8)
        w = rng.integers(-127, 128, (N, K)).astype(np.int8)
    else:
        x = rng.choice(np.array([0, 255], np.uint8), (M, K))
        w = rng.choice(np.array([-127, 127], np.int8), (N, K))
    R, C = block
    keep = rng.random((-(-N // R), -(-K // C))) >= sparsity
    w = np.where(np.repeat(np.repeat(keep, R, 0), C, 1)[:N, :K], w, 0).astype(np.int8)
    x_zp = draw(st.integers(0, 255))
    return x, w, block, np.float32(rng.uniform(1e-3, 0.1)), x_zp


# ---- padded id batches with empty rows (test_robust_heads.py) ----------------------------------------
@st.composite
def masked_batches(draw, T, vocab=50):
    """(ids [B, T], mask [B, T]) with 1-5 rows, each 0-T real tokens (right padding), at least one
    row empty in most draws."""
    lengths = draw(st.lists(st.integers(0, T), min_size=1, max_size=5))
    if draw(st.booleans()):
        lengths[draw(st.integers(0, len(lengths) - 1))] = 0
    ids = np.array(draw(st.lists(st.lists(st.integers(2, vocab - 1), min_size=T, max_size=T),
                                 min_size=len(lengths), max_size=len(lengths))), np.int64)
    mask = (np.arange(T)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    return ids, mask


# ---- damaged model files (test_robust_loading.py) ----------------------------------------------------
DIGITS = re.compile(rb"[0-9]")


@st.composite
def damage(draw, data: bytes, header_only=False):
    """(new bytes, description): a truncation, a byte flip or a digit edit of data. header_only keeps
    flips and digit edits in a safetensors file's JSON header (its first 8 + length bytes)."""
    end = len(data)
    if header_only:
        end = 8 + int.from_bytes(data[:8], "little")
    how = draw(st.sampled_from(["truncate", "flip", "digit"]))
    if how == "truncate":
        n = draw(st.integers(0, len(data) - 1))
        return data[:n], f"truncated to {n}"
    if how == "flip":
        i = draw(st.integers(0, end - 1))
        bit = draw(st.integers(1, 255))
        b = bytearray(data)
        b[i] ^= bit
        return bytes(b), f"byte {i} ^= {bit}"
    spots = [m.start() for m in DIGITS.finditer(data[:end])]
    i = draw(st.sampled_from(spots))
    new = draw(st.sampled_from([c for c in b"0123456789-." if c != data[i]]))
    b = bytearray(data)
    b[i] = new
    return bytes(b), f"byte {i}: {chr(data[i])} -> {chr(new)}"


# ---- cu_seqlens offsets, valid or not (test_robust_ops.py) -------------------------------------------
@st.composite
def offsets(draw, n):
    return np.array(draw(st.lists(st.integers(-2, n + 2), min_size=0, max_size=5)), np.int32)


# ---- decoder configs and prompts (decoder_models.py, hf_decoder_oracle.py) ---------------------------
@st.composite
def decoder_configs(draw, model_type=None, max_positions=48):
    mt = model_type or draw(st.sampled_from(["gpt2", "llama"]), label="model_type")
    H = draw(st.integers(1, 4))
    Hkv = draw(st.sampled_from([d for d in range(1, H + 1) if H % d == 0])) if mt == "llama" else H
    Dh = draw(st.sampled_from([2, 4, 8]))
    return DecoderConfig(mt, vocab_size=draw(st.integers(4, 40)), d_model=H * Dh, n_layers=draw(st.integers(1, 2)),
                         n_heads=H, d_ffn=draw(st.integers(1, 24)), max_positions=max_positions, n_kv_heads=Hkv,
                         head_dim=Dh, tie_word_embeddings=draw(st.booleans()) if mt == "llama" else True)


@st.composite
def prompt_lists(draw, vocab_size, max_len=12, max_batch=4):
    """A batch of prompts of mixed lengths, length 1 included often."""
    n = draw(st.integers(1, max_batch))
    return [draw(st.lists(st.integers(0, vocab_size - 1), min_size=1, max_size=max_len)) for _ in range(n)]


@dataclass(frozen=True)
class SmallDecoderConfig:
    """A GPT-2 or Llama shape small enough to build in torch per Hypothesis example
    (hf_decoder_oracle.build)."""
    model_type: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ffn: int
    vocab_size: int
    max_positions: int
    rope_theta: float = 10000.0
    rope_scaling: tuple | None = None      # sorted items of HF's rope_scaling dict
    tie: bool = True
    attention_bias: bool = False
    seed: int = 0

    @property
    def d_model(self):
        return self.n_heads * self.head_dim


@st.composite
def small_decoder_configs(draw, model_type):
    H = draw(st.integers(1, 4), label="n_heads")
    if model_type == "llama":
        Hkv = draw(st.sampled_from([d for d in range(1, H + 1) if H % d == 0]), label="n_kv_heads")
        Dh = draw(st.sampled_from([2, 4, 8, 16]), label="head_dim")
        scaling = draw(st.sampled_from([None, (("factor", 2.0), ("rope_type", "linear")),
                                        (("factor", 8.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
                                         ("original_max_position_embeddings", 16), ("rope_type", "llama3"))]))
        return SmallDecoderConfig("llama", draw(st.integers(1, 3)), H, Hkv, Dh, draw(st.integers(1, 40)),
                                  draw(st.integers(5, 60)), 64, draw(st.sampled_from([10000.0, 500.0])),
                                  scaling, draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 2**16)))
    Dh = draw(st.sampled_from([2, 4, 8, 16]))
    return SmallDecoderConfig("gpt2", draw(st.integers(1, 3)), H, H, Dh, draw(st.integers(1, 40)),
                              draw(st.integers(5, 60)), 64, seed=draw(st.integers(0, 2**16)))


# ---- INT8 GEMM problems (test_native_qgemm*.py, test_native_linear.py) -------------------------------
@st.composite
def qgemm_cases(draw):
    """One INT8 GEMM / SpMM problem: M, N, K around the kernels' tiles, value extremes, block density,
    empty rows, thread count, seed (test_native_qgemm.py builds the operands)."""
    M = draw(st.sampled_from([1, 2, 5, 6, 7, 13, 16, 17, 31, 64, 65, 97, 128, 131, 251, 300]))
    N = draw(st.sampled_from([1, 3, 15, 16, 17, 33, 63, 64, 65, 100, 131, 257, 300]))
    K = draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 63, 64, 67, 128, 131, 256, 293, 300]))
    return dict(M=M, N=N, K=K,
                xmode=draw(st.sampled_from(["uniform", "extreme", "max"])),
                wmode=draw(st.sampled_from(["uniform", "extreme", "max", "min"])),
                density=draw(st.sampled_from([0.0, 0.05, 0.2, 0.5, 0.9, 1.0])),
                empty_rows=draw(st.integers(0, 3)),
                threads=draw(st.integers(1, 4)),
                seed=draw(st.integers(0, 2**32 - 1)))


@st.composite
def epilogue_cases(draw):
    return dict(M=draw(st.sampled_from([1, 3, 16, 17, 70])),
                N=draw(st.sampled_from([1, 15, 16, 17, 40, 100])),
                K=draw(st.sampled_from([1, 5, 32, 67])),
                gelu=draw(st.booleans()), bias=draw(st.booleans()),
                residual=draw(st.booleans()), sparse=draw(st.booleans()),
                out=draw(st.sampled_from(["f32", "u8"])),
                threads=draw(st.integers(1, 3)), seed=draw(st.integers(0, 2**32 - 1)))


# M, N, K of the AMX tests: around the 32-row block, the 16-row tile and 16-channel / 64-byte K steps
AMX_SIZES = st.one_of(st.integers(1, 300),
                      st.sampled_from([1, 2, 3, 4, 5, 7, 13, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65,
                                       127, 128, 129, 191, 251, 256, 257, 293, 300]))

# M, N, K of the float32 GEMM tests
sgemm_dims = st.integers(1, 300)
