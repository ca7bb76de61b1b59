"""Hyper-parameters of a causal LM, read from a Hugging Face ``config.json`` or GGUF metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UnsupportedModelError

DECODER_MODEL_TYPES = ("gpt2", "llama")


@dataclass(frozen=True)
class DecoderConfig:
    model_type: str            # "gpt2" or "llama"
    vocab_size: int            # V, rows of the token embedding and of the LM head
    d_model: int               # D, width of the residual stream (HF: n_embd / hidden_size)
    n_layers: int              # decoder blocks (HF: n_layer / num_hidden_layers)
    n_heads: int               # H query heads
    d_ffn: int                 # F, hidden width of the MLP (HF: n_inner or 4 D / intermediate_size)
    max_positions: int         # longest sequence: GPT-2's position table, Llama's max_position_embeddings
    n_kv_heads: int = 0        # Hkv key/value heads (GQA); 0 means H
    head_dim: int = 0          # Dh; 0 means D / H
    norm_eps: float = 1e-5     # LayerNorm (GPT-2) or RMSNorm (Llama) epsilon
    rope_theta: float = 10000.0
    rope_scaling: dict | None = field(default=None, hash=False)  # HF's rope_scaling dict, or None
    tie_word_embeddings: bool = True   # LM head = token embedding
    attention_bias: bool = False       # Llama q/k/v/o_proj biases (GPT-2 always has them)
    mlp_bias: bool = False             # Llama gate/up/down_proj biases
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self):
        if self.model_type not in DECODER_MODEL_TYPES:
            raise UnsupportedModelError(f"model_type {self.model_type!r} is not a supported decoder; "
                                        "supported: " + ", ".join(DECODER_MODEL_TYPES))
        if not self.n_kv_heads:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if not self.head_dim:
            if self.d_model % self.n_heads:
                raise UnsupportedModelError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise UnsupportedModelError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.model_type == "llama" and self.head_dim % 2:
            raise UnsupportedModelError(f"RoPE needs an even head_dim, got {self.head_dim}")

    @classmethod
    def from_hf(cls, cfg: dict) -> "DecoderConfig":
        """Translate a Hugging Face GPT2Config or LlamaConfig dict."""
        t = cfg.get("model_type")
        eos = cfg.get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) and eos else eos
        if t == "gpt2":
            if cfg.get("scale_attn_by_inverse_layer_idx") or cfg.get("reorder_and_upcast_attn"):
                raise UnsupportedModelError("gpt2 with scale_attn_by_inverse_layer_idx or "
                                            "reorder_and_upcast_attn is not supported")
            if cfg.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
                raise UnsupportedModelError(f"gpt2 activation_function {cfg['activation_function']!r} "
                                            "is not supported; supported: gelu_new")
            D = cfg["n_embd"]
            return cls(t, vocab_size=cfg["vocab_size"], d_model=D, n_layers=cfg["n_layer"],
                       n_heads=cfg["n_head"], d_ffn=cfg.get("n_inner") or 4 * D,
                       max_positions=cfg["n_positions"], norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
                       tie_word_embeddings=cfg.get("tie_word_embeddings", True), attention_bias=True,
                       mlp_bias=True, bos_token_id=cfg.get("bos_token_id"), eos_token_id=eos)
        if t == "llama":
            if cfg.get("hidden_act", "silu") != "silu":
                raise UnsupportedModelError(f"llama hidden_act {cfg['hidden_act']!r} is not supported; "
                                            "supported: silu")
            rope = cfg.get("rope_parameters") or {}
            scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
            return cls(t, vocab_size=cfg["vocab_size"], d_model=cfg["hidden_size"],
                       n_layers=cfg["num_hidden_layers"], n_heads=cfg["num_attention_heads"],
                       d_ffn=cfg["intermediate_size"], max_positions=cfg["max_position_embeddings"],
                       n_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
                       head_dim=cfg.get("head_dim") or 0, norm_eps=cfg.get("rms_norm_eps", 1e-6),
                       rope_theta=cfg.get("rope_theta", rope.get("rope_theta", 10000.0)),
                       rope_scaling=scaling, tie_word_embeddings=cfg.get("tie_word_embeddings", False),
                       attention_bias=cfg.get("attention_bias", False), mlp_bias=cfg.get("mlp_bias", False),
                       bos_token_id=cfg.get("bos_token_id"), eos_token_id=eos)
        raise UnsupportedModelError(f"model_type {t!r} is not a supported decoder; supported: "
                                    + ", ".join(DECODER_MODEL_TYPES))
