"""Model hyper-parameters, read from a Hugging Face ``config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import UnsupportedModelError

SUPPORTED_MODEL_TYPES = ("distilbert", "bert")
SUPPORTED_ACTIVATIONS = ("gelu",)


@dataclass(frozen=True)
class EncoderConfig:
    model_type: str            # "distilbert" or "bert"
    vocab_size: int            # V, rows of the word embedding
    d_model: int               # D, width of the residual stream (HF: dim / hidden_size)
    n_layers: int              # transformer blocks (HF: n_layers / num_hidden_layers)
    n_heads: int               # H; head width Dh = D / H
    d_ffn: int                 # F, hidden width of the feed-forward block (HF: hidden_dim / intermediate_size)
    max_positions: int         # rows of the position embedding: the longest sequence
    type_vocab_size: int = 0   # rows of the token-type (segment) embedding; 0 for DistilBERT
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"   # exact erf GELU
    pad_token_id: int = 0

    @property
    def head_dim(self) -> int:  # Dh
        return self.d_model // self.n_heads

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"model_type {self.model_type!r} is not supported; supported: "
                + ", ".join(SUPPORTED_MODEL_TYPES))
        if self.activation not in SUPPORTED_ACTIVATIONS:
            raise UnsupportedModelError(
                f"activation {self.activation!r} is not supported; supported: "
                + ", ".join(SUPPORTED_ACTIVATIONS))
        if self.d_model % self.n_heads:
            raise UnsupportedModelError(
                f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")

    @classmethod
    def from_hf(cls, cfg: dict) -> "EncoderConfig":
        """Translate a Hugging Face config dict (DistilBertConfig or BertConfig)."""
        model_type = cfg.get("model_type")
        if model_type == "distilbert":
            return cls(model_type, vocab_size=cfg["vocab_size"], d_model=cfg["dim"],
                       n_layers=cfg["n_layers"], n_heads=cfg["n_heads"], d_ffn=cfg["hidden_dim"],
                       max_positions=cfg["max_position_embeddings"], type_vocab_size=0,
                       layer_norm_eps=1e-12,  # hard-coded in HF's modeling_distilbert
                       activation=cfg.get("activation", "gelu"),
                       pad_token_id=cfg.get("pad_token_id", 0) or 0)
        if model_type == "bert":
            if cfg.get("position_embedding_type", "absolute") != "absolute":
                raise UnsupportedModelError(
                    f"bert position_embedding_type {cfg['position_embedding_type']!r} is not "
                    "supported; supported: absolute")
            return cls(model_type, vocab_size=cfg["vocab_size"], d_model=cfg["hidden_size"],
                       n_layers=cfg["num_hidden_layers"], n_heads=cfg["num_attention_heads"],
                       d_ffn=cfg["intermediate_size"],
                       max_positions=cfg["max_position_embeddings"],
                       type_vocab_size=cfg.get("type_vocab_size", 2),
                       layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
                       activation=cfg.get("hidden_act", "gelu"),
                       pad_token_id=cfg.get("pad_token_id", 0) or 0)
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported: "
            + ", ".join(SUPPORTED_MODEL_TYPES))

    def to_dict(self) -> dict:
        return asdict(self)
