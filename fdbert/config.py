"""Model hyper-parameters, read from a Hugging Face ``config.json``; sentence-transformers' pooling."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import ConfigError, CorruptModelError, UnsupportedModelError

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
        for f in fields(self):   # every field: its type and range (FIELD_RULES), ConfigError naming it
            check_field(f.name, getattr(self, f.name))
        if self.pad_token_id >= self.vocab_size:
            raise ConfigError(f"pad_token_id {self.pad_token_id} is not a token id: expected "
                              f"0 <= pad_token_id < vocab_size {self.vocab_size}")
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
    def from_hf(cls, cfg: dict, where: str = "config.json") -> "EncoderConfig":
        """Translate a Hugging Face config dict (DistilBertConfig or BertConfig).

        A missing key or a value of the wrong type or range raises :class:`CorruptModelError`
        naming ``where`` (the file) and the Hugging Face key."""
        if not isinstance(cfg, dict):
            raise CorruptModelError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
        try:
            return cls._from_hf(cfg)
        except KeyError as e:
            raise CorruptModelError(f"{where}: missing key {e.args[0]!r}") from None
        except UnsupportedModelError as e:
            raise UnsupportedModelError(f"{where}: {e}") from None
        except ConfigError as e:
            field = e.field
            hf = _HF_NAMES.get(cfg.get("model_type"), {}).get(field, field)
            raise CorruptModelError(f"{where}: field {hf!r}: {e}") from None

    @classmethod
    def _from_hf(cls, cfg: dict) -> "EncoderConfig":
        model_type = cfg.get("model_type")
        if model_type == "distilbert":
            return cls(model_type, vocab_size=cfg["vocab_size"], d_model=cfg["dim"],
                       n_layers=cfg["n_layers"], n_heads=cfg["n_heads"], d_ffn=cfg["hidden_dim"],
                       max_positions=cfg["max_position_embeddings"], type_vocab_size=0,
                       layer_norm_eps=1e-12,  # hard-coded in HF's modeling_distilbert
                       activation=cfg.get("activation", "gelu"),
                       pad_token_id=_or_zero(cfg.get("pad_token_id", 0)))
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
                       pad_token_id=_or_zero(cfg.get("pad_token_id", 0)))
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported; supported: "
            + ", ".join(SUPPORTED_MODEL_TYPES))

    def to_dict(self) -> dict:
        return asdict(self)


def _or_zero(v):  # HF writes "pad_token_id": null for "none"; 0 is then as good as any
    return 0 if v is None else v


# Hugging Face's name of each field, per model type (for error messages about config.json).
_HF_NAMES = {
    "distilbert": {"d_model": "dim", "n_layers": "n_layers", "n_heads": "n_heads", "d_ffn": "hidden_dim",
                   "max_positions": "max_position_embeddings"},
    "bert": {"d_model": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
             "d_ffn": "intermediate_size", "max_positions": "max_position_embeddings",
             "activation": "hidden_act"},
}

#: field -> (type, smallest allowed value): what a config may hold, checked for every field of every
#: EncoderConfig however it is made (code, config.json, fdbert.json). bool is not an int here.
FIELD_RULES = {
    "model_type": (str, None), "activation": (str, None),
    "vocab_size": (int, 1), "d_model": (int, 1), "n_layers": (int, 0), "n_heads": (int, 1),
    "d_ffn": (int, 1), "max_positions": (int, 1), "type_vocab_size": (int, 0), "pad_token_id": (int, 0),
    "layer_norm_eps": (float, 0.0),
}
#: Largest value of an int field: a table with more rows or a width beyond this is no real model
#: (it guards the size computations against a digit-edited 10^18).
INT_MAX = 2 ** 31 - 1


def check_field(name: str, value) -> None:
    """Raise :class:`ConfigError` unless ``value`` has the type and range FIELD_RULES give ``name``."""
    kind, lo = FIELD_RULES[name]
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer, got {value!r}", name)
        if not lo <= value <= INT_MAX:
            raise ConfigError(f"{name} must lie in [{lo}, {INT_MAX}], got {value}", name)
    elif kind is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}", name)
        if not (math.isfinite(value) and value > lo):
            raise ConfigError(f"{name} must be finite and > {lo}, got {value!r}", name)
    elif not isinstance(value, kind):
        raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}", name)


# ---- sentence-transformers' pooling (modules.json + the Pooling module's config.json) ---------
@dataclass(frozen=True)
class PoolingConfig:
    mode: str = "mean"         # "mean" (over real tokens) or "cls"
    normalize: bool = False    # L2-normalise sentence embeddings

    @classmethod
    def from_dir(cls, path: Path) -> "PoolingConfig":
        """sentence-transformers' modules.json + Pooling config, if present; else mean, unnormalised."""
        modules_f = path / "modules.json"
        if not modules_f.is_file():
            return cls()
        modules = _read_json(modules_f)
        if not isinstance(modules, list) or not all(isinstance(m, dict) and isinstance(m.get("type", ""), str)
                                                    and isinstance(m.get("path", ""), str) for m in modules):
            raise CorruptModelError(f"{modules_f}: expected a list of modules, each with a string "
                                    "'type' and 'path'")
        normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
        mode = "mean"
        for m in modules:
            if m.get("type", "").endswith("Pooling"):
                pf = path / m.get("path", "") / "config.json"
                if pf.is_file():
                    mode = _pooling_mode(pf, _read_json(pf))
        return cls(mode, normalize)

    def __post_init__(self):
        if self.mode not in POOLING_MODES:
            raise ConfigError(f"pooling mode must be one of {POOLING_MODES}, got {self.mode!r}", "mode")
        if not isinstance(self.normalize, bool):
            raise ConfigError(f"pooling normalize must be True or False, got {self.normalize!r}", "normalize")


POOLING_MODES = ("mean", "cls")


def _read_json(f: Path):
    try:
        return json.loads(f.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CorruptModelError(f"{f}: not valid JSON ({e})") from None


def _pooling_mode(pf: Path, pc) -> str:
    """sentence-transformers' Pooling config -> "mean" or "cls"; any other (or combined) mode is refused,
    never treated as mean."""
    if not isinstance(pc, dict):
        raise CorruptModelError(f"{pf}: expected a JSON object")
    on = sorted(k for k, v in pc.items() if k.startswith("pooling_mode_") and v)
    if not on and "pooling_mode_mean_tokens" not in pc:
        return "mean"        # sentence-transformers' default
    if on == ["pooling_mode_cls_token"]:
        return "cls"
    if on == ["pooling_mode_mean_tokens"]:
        return "mean"
    raise UnsupportedModelError(f"{pf}: pooling {', '.join(on) or 'none'}: only one of "
                                "pooling_mode_mean_tokens and pooling_mode_cls_token is supported")
