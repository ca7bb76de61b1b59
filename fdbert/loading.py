"""Load a local Hugging Face checkpoint directory (config.json + weights [+ tokenizer.json]).

Every tensor fdbert reads is named in one table below, with the shape the config implies; a tensor of
any other shape is refused with :class:`WeightShapeError`. Linear weights keep torch's [out, in] layout,
so no transposes are needed for DistilBERT and BERT (GPT-2's Conv1D will be the first).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import EncoderConfig, SUPPORTED_MODEL_TYPES
from .errors import CorruptModelError, ModelNotFoundError, UnsupportedModelError, WeightShapeError
from .weights import EmbeddingWeights, EncoderLayerWeights, EncoderWeights, HeadWeights, LayerNorm, Linear

# canonical name (fdbert.weights) -> checkpoint module name, per model type
EMBEDDING_KEYS = {
    #  canonical                distilbert                            bert
    "word_embeddings":       ("embeddings.word_embeddings",       "embeddings.word_embeddings"),
    "position_embeddings":   ("embeddings.position_embeddings",   "embeddings.position_embeddings"),
    "token_type_embeddings": (None,                               "embeddings.token_type_embeddings"),
    "layer_norm":            ("embeddings.LayerNorm",             "embeddings.LayerNorm"),
}
LAYER_PREFIX = {"distilbert": "transformer.layer.{i}.", "bert": "encoder.layer.{i}."}
LAYER_KEYS = {
    "q_lin":             ("attention.q_lin",   "attention.self.query"),
    "k_lin":             ("attention.k_lin",   "attention.self.key"),
    "v_lin":             ("attention.v_lin",   "attention.self.value"),
    "out_lin":           ("attention.out_lin", "attention.output.dense"),
    "sa_layer_norm":     ("sa_layer_norm",     "attention.output.LayerNorm"),
    "lin1":              ("ffn.lin1",          "intermediate.dense"),
    "lin2":              ("ffn.lin2",          "output.dense"),
    "output_layer_norm": ("output_layer_norm", "output.LayerNorm"),
}
# heads: (module name, inside the base-model prefix?)
HEAD_KEYS = {
    "pooler":         {"bert": ("pooler.dense", True)},
    "pre_classifier": {"distilbert": ("pre_classifier", False)},
    "classifier":     {"distilbert": ("classifier", False), "bert": ("classifier", False)},
    "qa_outputs":     {"distilbert": ("qa_outputs", False), "bert": ("qa_outputs", False)},
}
BASE_PREFIXES = {"distilbert": ("", "distilbert."), "bert": ("", "bert.")}
# Old TF-converted BERT checkpoints call LayerNorm's parameters gamma/beta.
_ALIASES = {"weight": ("weight", "gamma"), "bias": ("bias", "beta")}


def layer_shapes(cfg: EncoderConfig) -> dict[str, tuple]:
    """canonical layer module -> weight shape ([N, K] for Linear, [D] for LayerNorm)."""
    D, F = cfg.d_model, cfg.d_ffn
    return {"q_lin": (D, D), "k_lin": (D, D), "v_lin": (D, D), "out_lin": (D, D),
            "sa_layer_norm": (D,), "lin1": (F, D), "lin2": (D, F), "output_layer_norm": (D,)}


def read_config(path: Path) -> dict:
    f = path / "config.json"
    if not f.is_file():
        raise ModelNotFoundError(f"{path}: no config.json (expected a Hugging Face model directory)")
    try:
        cfg = json.loads(f.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CorruptModelError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CorruptModelError(f"{f}: expected a JSON object, got {type(cfg).__name__}")
    if cfg.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{f}: model_type {cfg.get('model_type')!r} is not supported; supported: "
            + ", ".join(SUPPORTED_MODEL_TYPES) + " (encoders), gpt2, llama (decoders)")
    return cfg


def _load_safetensors(f: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    try:
        return load_file(str(f))
    except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError on bad files
        raise CorruptModelError(f"{f}: cannot read safetensors file ({type(e).__name__}: {e}); "
                                "the file is truncated or corrupt") from None


def _load_torch_bin(f: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ModelNotFoundError(f"{f.parent}: only pytorch_model.bin found, which needs torch to read; "
                                 "install fdbert[torch] or convert it to model.safetensors") from None
    try:
        sd = torch.load(str(f), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CorruptModelError(f"{f}: cannot read torch checkpoint ({type(e).__name__}: {e})") from None
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint directory: model.safetensors, sharded safetensors, or pytorch_model.bin."""
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
        return _load_safetensors(single)
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_bytes().decode("utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AttributeError, TypeError) as e:
            raise CorruptModelError(f"{index}: not a safetensors index ({type(e).__name__}: {e})") from None
        tensors = {}
        for shard in shards:
            if not isinstance(shard, str) or not shard or Path(shard).is_absolute() or ".." in Path(shard).parts:
                raise CorruptModelError(f"{index}: field 'weight_map': {shard!r} is not a file name in {path}")
            if not (path / shard).is_file():
                raise ModelNotFoundError(f"{path}: shard {shard} named in {index.name} is missing")
            tensors.update(_load_safetensors(path / shard))
        return tensors
    if (path / "pytorch_model.bin").is_file():
        return _load_torch_bin(path / "pytorch_model.bin")
    raise ModelNotFoundError(f"{path}: no weights found (expected model.safetensors, "
                             "model.safetensors.index.json or pytorch_model.bin)")


class _Reader:
    """Takes tensors out of a checkpoint by module name, checking shapes and remembering what was used."""

    def __init__(self, tensors: dict, where: str):
        self.tensors, self.where, self.used = tensors, where, set()

    def has(self, module: str) -> bool:
        return any(f"{module}.{a}" in self.tensors for a in _ALIASES["weight"])

    def get(self, module: str, param: str, shape: tuple) -> np.ndarray:
        for alias in _ALIASES[param]:
            key = f"{module}.{alias}"
            if key in self.tensors:
                t = self.tensors[key]
                if tuple(t.shape) != tuple(shape):
                    raise WeightShapeError(f"{self.where}: tensor {key!r} has shape {tuple(t.shape)}, "
                                           f"expected {tuple(shape)} from config.json")
                if t.dtype.kind != "f":
                    raise CorruptModelError(f"{self.where}: tensor {key!r} has dtype {t.dtype}, "
                                            "expected a float dtype")
                t = np.ascontiguousarray(t, dtype=np.float32)
                if not np.isfinite(t).all():
                    raise CorruptModelError(f"{self.where}: tensor {key!r} holds NaN or infinity")
                self.used.add(key)
                return t
        raise CorruptModelError(f"{self.where}: tensor {module}.{param} is missing from the checkpoint")

    def linear(self, module: str, shape: tuple) -> Linear:
        return Linear(self.get(module, "weight", shape), self.get(module, "bias", shape[:1]))

    def layer_norm(self, module: str, dim: int) -> LayerNorm:
        return LayerNorm(self.get(module, "weight", (dim,)), self.get(module, "bias", (dim,)))


def build_weights(tensors: dict, cfg: EncoderConfig, where: str = "checkpoint") -> tuple[EncoderWeights, list]:
    """Map checkpoint tensors to fdbert's weights through the tables above; returns (weights, unused keys)."""
    col = SUPPORTED_MODEL_TYPES.index(cfg.model_type)
    r = _Reader(tensors, where)
    word = EMBEDDING_KEYS["word_embeddings"][col]
    prefixes = [p for p in BASE_PREFIXES[cfg.model_type] if f"{p}{word}.weight" in tensors]
    if not prefixes:
        raise CorruptModelError(f"{where}: no {cfg.model_type} embeddings found (looked for "
                                f"{word}.weight with prefixes {BASE_PREFIXES[cfg.model_type]})")
    pre = prefixes[0]
    D = cfg.d_model

    def emb(name, rows):
        return r.get(pre + EMBEDDING_KEYS[name][col], "weight", (rows, D))

    embeddings = EmbeddingWeights(
        word_embeddings=emb("word_embeddings", cfg.vocab_size),
        position_embeddings=emb("position_embeddings", cfg.max_positions),
        token_type_embeddings=emb("token_type_embeddings", cfg.type_vocab_size) if cfg.type_vocab_size else None,
        layer_norm=r.layer_norm(pre + EMBEDDING_KEYS["layer_norm"][col], D))
    shapes = layer_shapes(cfg)
    layers = []
    for i in range(cfg.n_layers):
        lp = pre + LAYER_PREFIX[cfg.model_type].format(i=i)
        mods = {name: (r.linear(lp + keys[col], shapes[name]) if len(shapes[name]) == 2
                       else r.layer_norm(lp + keys[col], D))
                for name, keys in LAYER_KEYS.items()}
        layers.append(EncoderLayerWeights(**mods))
    heads = HeadWeights()
    for name, per_type in HEAD_KEYS.items():
        if cfg.model_type in per_type:
            module, inside = per_type[cfg.model_type]
            module = (pre if inside else "") + module
            if r.has(module):
                n_out = tensors.get(f"{module}.weight", np.empty((D, D))).shape[0]
                setattr(heads, name, r.linear(module, (n_out, D)))
    unused = sorted(k for k in tensors if k not in r.used and not k.endswith("position_ids"))
    # A tensor of the encoder itself that the config does not use (a layer beyond n_layers, a
    # token-type table with type_vocab_size 0) means config.json and the weights disagree: refuse
    # rather than run another model. Other extras (an MLM head, ...) are listed in unused_tensors.
    ours = [k for k in unused if k.startswith(pre + "embeddings.")
            or k.startswith(pre + LAYER_PREFIX[cfg.model_type].split("{")[0])]
    if ours:
        raise CorruptModelError(f"{where}: tensor {ours[0]!r} is not used by config.json "
                                f"(n_layers {cfg.n_layers}, type_vocab_size {cfg.type_vocab_size}); "
                                "the config and the weights disagree")
    return EncoderWeights(embeddings, layers, heads), unused


def model_dir(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise ModelNotFoundError(f"model directory {str(p)!r} does not exist")
    if not p.is_dir():
        raise ModelNotFoundError(f"{str(p)!r} is not a directory (expected a Hugging Face model directory)")
    return p
