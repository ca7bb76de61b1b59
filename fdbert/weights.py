"""Containers for a model's parameters, named like the DistilBERT checkpoint's modules.

Plain dataclasses of NumPy arrays: the maths in :mod:`fdbert.reference` unpacks them. A backend that
wants another memory layout (a native kernel's packed weights) caches it in ``packed``, keyed by the
backend's name, the first time it sees the layer, so weights are never repacked per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Linear:
    weight: np.ndarray                  # f32 [N, K]  (out, in), as torch.nn.Linear stores it
    bias: np.ndarray | None             # f32 [N]
    packed: dict = field(default_factory=dict, repr=False)  # backend name -> its layout of weight

    @property
    def shape(self):  # (N, K)
        return self.weight.shape


@dataclass(eq=False)
class LayerNorm:
    weight: np.ndarray                  # f32 [D], gamma
    bias: np.ndarray                    # f32 [D], beta


@dataclass(eq=False)
class EncoderLayerWeights:
    q_lin: Linear                       # [D, D]
    k_lin: Linear                       # [D, D]
    v_lin: Linear                       # [D, D]
    out_lin: Linear                     # [D, D]   attention output projection
    sa_layer_norm: LayerNorm            # [D]      after attention + residual
    lin1: Linear                        # [F, D]   FFN up
    lin2: Linear                        # [D, F]   FFN down
    output_layer_norm: LayerNorm        # [D]      after FFN + residual
    attention: str = "fp32"             # "fp32": ops.attention; "int8": ops.attention_int8

    LINEARS = ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2")
    ATTENTION_KINDS = ("fp32", "int8")

    def __post_init__(self):
        if self.attention not in self.ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {self.ATTENTION_KINDS}, got {self.attention!r}")


@dataclass(eq=False)
class EmbeddingWeights:
    word_embeddings: np.ndarray         # f32 [V, D]
    position_embeddings: np.ndarray     # f32 [P, D]
    token_type_embeddings: np.ndarray | None  # f32 [S, D] (BERT segments) or None (DistilBERT)
    layer_norm: LayerNorm               # [D]


@dataclass(eq=False)
class HeadWeights:
    """Task heads found in the checkpoint; each is None when absent."""
    pooler: Linear | None = None        # [D, D]  BERT: tanh(W h_[CLS] + b)
    pre_classifier: Linear | None = None  # [D, D] DistilBERT classification: relu(W h_[CLS] + b)
    classifier: Linear | None = None    # [C, D]  sequence classification logits
    qa_outputs: Linear | None = None    # [2, D]  start / end logits per token


@dataclass(eq=False)
class EncoderWeights:
    embeddings: EmbeddingWeights
    layers: list[EncoderLayerWeights]
    heads: HeadWeights = field(default_factory=HeadWeights)


# ---- decoders (fdbert/reference/llama.py, gpt2.py) ------------------------------------------------
@dataclass(eq=False)
class LlamaLayerWeights:
    input_layernorm: np.ndarray         # f32 [D]            RMSNorm weight before attention
    q_proj: Linear                      # [H Dh, D]
    k_proj: Linear                      # [Hkv Dh, D]
    v_proj: Linear                      # [Hkv Dh, D]
    o_proj: Linear                      # [D, H Dh]
    post_attention_layernorm: np.ndarray  # f32 [D]          RMSNorm weight before the MLP
    gate_proj: Linear                   # [F, D]
    up_proj: Linear                     # [F, D]
    down_proj: Linear                   # [D, F]

    LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(eq=False)
class GPT2LayerWeights:
    ln_1: LayerNorm                     # [D]
    c_attn: Linear                      # [3D, D]  attn.c_attn, transposed from Conv1D's [D, 3D]
    c_proj: Linear                      # [D, D]   attn.c_proj
    ln_2: LayerNorm                     # [D]
    c_fc: Linear                        # [F, D]   mlp.c_fc
    mlp_c_proj: Linear                  # [D, F]   mlp.c_proj

    LINEARS = ("c_attn", "c_proj", "c_fc", "mlp_c_proj")


@dataclass(eq=False)
class DecoderWeights:
    embed_tokens: np.ndarray            # f32 [V, D]  (GPT-2: wte; Llama: embed_tokens)
    positions: np.ndarray | None        # f32 [P, D]  GPT-2's wpe; None for Llama (RoPE)
    layers: list                        # LlamaLayerWeights or GPT2LayerWeights
    norm: object                        # final norm: LayerNorm (GPT-2 ln_f) or f32 [D] RMSNorm weight
    lm_head: Linear                     # [V, D], no bias; its weight is embed_tokens when tied
