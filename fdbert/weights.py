"""Containers for a model's parameters, named like the DistilBERT checkpoint's modules.

Plain dataclasses of NumPy arrays: the blocks (:mod:`fdbert.blocks`) unpack them into the ops. A backend that
wants another memory layout (a native kernel's packed weights) caches it in ``packed``, keyed by the
backend's name, the first time it sees the layer, so weights are never repacked per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import int8
from .blocksparse import BSRMatrix
from .errors import ArgumentError, ShapeError, expect_dtype


@dataclass(eq=False)
class Linear:
    weight: np.ndarray                  # f32 [N, K]  (out, in), as torch.nn.Linear stores it
    bias: np.ndarray | None             # f32 [N]
    packed: dict = field(default_factory=dict, repr=False)  # backend name -> its layout of weight

    @property
    def shape(self):  # (N, K)
        return self.weight.shape


@dataclass(eq=False)
class QuantizedLinear:
    """An INT8 Linear [N, K]: s8 weight codes (dense or 1x4 BSR), per-channel scales, the static u8
    quantization of its input, and comp / mult precomputed for the epilogue. Its maths (qlinear_s32,
    the epilogue) is :mod:`fdbert.reference.qlinear`; docs/int8.md explains the scheme."""
    weight: np.ndarray | BSRMatrix  # s8 [N, K] codes, dense or block-sparse
    w_scale: np.ndarray             # f32 [N]   per-output-channel weight scale
    bias: np.ndarray                # f32 [N]   (zeros when the float layer had none)
    x_scale: np.float32             # static per-tensor scale of the input activation
    x_zero_point: int               # its zero point, in [0, 255]
    comp: np.ndarray                # s32 [N]   x_zero_point * sum_k wq[n, k]
    mult: np.ndarray                # f32 [N]   float32(x_scale * w_scale[n])
    # Outlier input channels kept in float32 (LLM.int8(), Dettmers et al. 2022): their s8 codes are 0,
    # so qlinear ignores them; the encoder layer adds x[:, outliers] @ outlier_weight.T in float32.
    outliers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # int32 [k_o], sorted
    outlier_weight: np.ndarray | None = None  # f32 [N, k_o]: the float columns W[:, outliers]
    packed: dict = field(default_factory=dict, repr=False)  # backend name -> its layout of weight

    def __post_init__(self):
        if self.outlier_weight is None:
            self.outlier_weight = np.zeros((self.weight.shape[0], len(self.outliers)), np.float32)

    @property
    def shape(self):  # (N, K)
        return tuple(self.weight.shape)

    def __repr__(self):
        kind = repr(self.weight) if self.sparse else f"dense s8 {self.shape}"
        return (f"QuantizedLinear({kind}, x_scale={float(self.x_scale):.4g}, "
                f"x_zero_point={self.x_zero_point}, float_channels={len(self.outliers)})")

    @property
    def sparse(self) -> bool:
        return isinstance(self.weight, BSRMatrix)

    def dense_codes(self) -> np.ndarray:  # -> s8 [N, K]
        return self.weight.to_dense() if self.sparse else self.weight

    @classmethod
    def from_codes(cls, wq, w_scale, bias, x_scale, x_zero_point, outliers=None,
                   outlier_weight=None) -> "QuantizedLinear":
        """Build a layer from s8 codes (dense [N, K] or BSRMatrix): computes comp and mult."""
        x_scale = np.float32(x_scale)
        x_zero_point = int(x_zero_point)
        dense = wq.to_dense() if isinstance(wq, BSRMatrix) else wq
        expect_dtype("QuantizedLinear: weight codes", dense, np.int8)
        N = dense.shape[0]
        row_sums = dense.astype(np.int64).sum(axis=1)
        comp = (x_zero_point * row_sums).astype(np.int32)
        w_scale = np.ascontiguousarray(w_scale, np.float32)
        mult = (x_scale * w_scale).astype(np.float32)   # float32 x float32, rounded once
        bias = np.zeros(N, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
        outliers = np.zeros(0, np.int32) if outliers is None else np.ascontiguousarray(outliers, np.int32)
        if outlier_weight is None:
            outlier_weight = np.zeros((N, len(outliers)), np.float32)
        return cls(wq, w_scale, bias, x_scale, x_zero_point, comp, mult, outliers,
                   np.ascontiguousarray(outlier_weight, np.float32)).validate()

    @classmethod
    def from_float(cls, weight, bias, x_scale, x_zero_point, block=None,
                   outliers=None) -> "QuantizedLinear":
        """Quantize a float layer W [N, K] per output channel; ``block`` (R, C) stores it as BSR;
        the input channels ``outliers`` stay float32 (their columns are zeroed before quantizing)."""
        weight = np.ascontiguousarray(weight, np.float32)
        outliers = np.zeros(0, np.int32) if outliers is None else np.asarray(outliers, np.int32)
        outlier_weight = np.ascontiguousarray(weight[:, outliers])             # [N, k_o]
        if len(outliers):
            weight = weight.copy()
            weight[:, outliers] = 0
        wq, w_scale = int8.quantize_weight_s8(weight)
        codes = BSRMatrix.from_dense(wq, block) if block is not None else wq
        return cls.from_codes(codes, w_scale, bias, x_scale, x_zero_point, outliers, outlier_weight)

    def validate(self) -> "QuantizedLinear":
        """Check dtypes, shapes, ranges and the precomputed comp / mult; raise fdbert errors."""
        if self.sparse:
            self.weight.validate()
            expect_dtype("QuantizedLinear.weight.data", self.weight.data, np.int8)
        else:
            expect_dtype("QuantizedLinear.weight", self.weight, np.int8)
            if self.weight.ndim != 2:
                raise ShapeError(f"QuantizedLinear.weight: expected [N, K], got shape {self.weight.shape}")
        N, K = self.shape
        if K > int8.K_MAX:
            raise ShapeError(f"QuantizedLinear: K={K} > {int8.K_MAX} would overflow int32 accumulators")
        for name, dt in (("w_scale", np.float32), ("bias", np.float32), ("comp", np.int32),
                         ("mult", np.float32)):
            a = getattr(self, name)
            expect_dtype(f"QuantizedLinear.{name}", a, dt)
            if a.shape != (N,):
                raise ShapeError(f"QuantizedLinear.{name}: expected shape ({N},), got {a.shape}")
        int8.check_weight_codes(self.weight.data if self.sparse else self.weight, "QuantizedLinear.weight")
        int8.check_qparams("QuantizedLinear", self.x_scale, self.x_zero_point)
        if not np.all(np.isfinite(self.w_scale) & (self.w_scale > 0)):
            raise ArgumentError("QuantizedLinear.w_scale must be finite and > 0")
        o = self.outliers
        expect_dtype("QuantizedLinear.outliers", o, np.int32)
        if o.ndim != 1 or (len(o) and (o.min() < 0 or o.max() >= K or np.any(np.diff(o) <= 0))):
            raise ShapeError(f"QuantizedLinear.outliers must be sorted distinct channels in [0, {K})")
        expect_dtype("QuantizedLinear.outlier_weight", self.outlier_weight, np.float32)
        if self.outlier_weight.shape != (N, len(o)):
            raise ShapeError(f"QuantizedLinear.outlier_weight: expected shape {(N, len(o))}, "
                             f"got {self.outlier_weight.shape}")
        if len(o) and np.any(self.dense_codes()[:, o]):
            raise ArgumentError("QuantizedLinear: the s8 codes of outlier channels must be 0")
        return self


@dataclass(eq=False)
class LayerNorm:
    weight: np.ndarray                  # f32 [D], gamma
    bias: np.ndarray                    # f32 [D], beta


@dataclass(eq=False)
class EncoderLayerWeights:
    # the six Linears are all Linear (float32) or all QuantizedLinear (INT8)
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


# ---- decoders (fdbert/blocks/llama.py, gpt2.py) ----------------------------------------------------
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
    # Built here, not passed: the linears that read the same input, stored as one matrix so that a
    # decode step runs one GEMV instead of three (two). q/k/v_proj and gate/up_proj become row views
    # of these; each output is its own dot product, so the values are those of the separate linears.
    qkv_proj: Linear = field(init=False, repr=False)      # [(H + 2 Hkv) Dh, D] = [q; k; v]
    gate_up_proj: Linear = field(init=False, repr=False)  # [2F, D] = [gate; up]

    LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    def __post_init__(self):
        self.qkv_proj = _stack_rows(self, ("q_proj", "k_proj", "v_proj"))
        self.gate_up_proj = _stack_rows(self, ("gate_proj", "up_proj"))


def _stack_rows(owner, names) -> Linear:
    """One Linear [sum N_i, K] of owner's Linears ``names`` (same K), which become views of its rows."""
    parts = [getattr(owner, n) for n in names]
    weight = np.concatenate([p.weight for p in parts])
    bias = None
    if any(p.bias is not None for p in parts):   # a missing bias is a zero bias
        bias = np.concatenate([p.bias if p.bias is not None else np.zeros(p.weight.shape[0], p.weight.dtype)
                               for p in parts])
    start = 0
    for n, p in zip(names, parts):
        stop = start + p.weight.shape[0]
        setattr(owner, n, Linear(weight[start:stop], None if p.bias is None else bias[start:stop]))
        start = stop
    return Linear(weight, bias)


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
