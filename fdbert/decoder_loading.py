"""Loading a decoder: a GGUF file or a Hugging Face directory -> :class:`fdbert.Decoder`, and the
tables that turn checkpoint tensors into :class:`fdbert.weights.DecoderWeights`, for GPT-2 and Llama.

One table per architecture names every tensor fdbert reads (the checkpoint's own names) with the
shape the config implies; any other shape is refused with :class:`WeightShapeError`. GPT-2's
``Conv1D`` weights are stored [in, out] and are the only ones transposed (listed in
``GPT2_CONV1D``). GGUF files are first renamed to these HF names (fdbert.gguf).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .decoder import Decoder
from .decoder_config import DECODER_MODEL_TYPES, DecoderConfig
from .decoder_tokenizer import DecoderTokenizer
from .errors import CorruptModelError, WeightShapeError
from .gguf import config_from_gguf, dequantized_tensors, read_gguf
from .loading import model_dir, read_tensors
from .weights import DecoderWeights, GPT2LayerWeights, LayerNorm, Linear, LlamaLayerWeights

#: prefixes the base model may sit under in a *LMHeadModel / *ForCausalLM checkpoint
BASE_PREFIXES = {"gpt2": ("transformer.", ""), "llama": ("model.", "")}
#: GPT-2 Linears stored as Conv1D weight [in, out]: transposed to [out, in] on load
GPT2_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def llama_layer_shapes(c: DecoderConfig) -> dict:  # checkpoint module -> (field, weight shape)
    D, F, qd, kvd = c.d_model, c.d_ffn, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    return {"input_layernorm": ("input_layernorm", (D,)),
            "self_attn.q_proj": ("q_proj", (qd, D)), "self_attn.k_proj": ("k_proj", (kvd, D)),
            "self_attn.v_proj": ("v_proj", (kvd, D)), "self_attn.o_proj": ("o_proj", (D, qd)),
            "post_attention_layernorm": ("post_attention_layernorm", (D,)),
            "mlp.gate_proj": ("gate_proj", (F, D)), "mlp.up_proj": ("up_proj", (F, D)),
            "mlp.down_proj": ("down_proj", (D, F))}


def gpt2_layer_shapes(c: DecoderConfig) -> dict:  # checkpoint module -> (field, stored weight shape)
    D, F = c.d_model, c.d_ffn
    return {"ln_1": ("ln_1", (D,)), "attn.c_attn": ("c_attn", (D, 3 * D)), "attn.c_proj": ("c_proj", (D, D)),
            "ln_2": ("ln_2", (D,)), "mlp.c_fc": ("c_fc", (D, F)), "mlp.c_proj": ("mlp_c_proj", (F, D))}


class _Tensors:
    """Takes tensors by name, checking shapes and remembering which were used."""

    def __init__(self, tensors: dict, where: str):
        self.tensors, self.where, self.used = tensors, where, set()

    def get(self, key: str, shape: tuple) -> np.ndarray:
        if key not in self.tensors:
            raise CorruptModelError(f"{self.where}: tensor {key!r} is missing from the checkpoint")
        t = self.tensors[key]
        if tuple(t.shape) != tuple(shape):
            raise WeightShapeError(f"{self.where}: tensor {key!r} has shape {tuple(t.shape)}, expected "
                                   f"{tuple(shape)} from the config")
        self.used.add(key)
        return np.ascontiguousarray(t, dtype=np.float32)

    def maybe(self, key: str, shape: tuple):
        return self.get(key, shape) if key in self.tensors else None


def build_decoder_weights(tensors: dict, c: DecoderConfig, where: str = "checkpoint"):
    """Map checkpoint tensors (HF names) to DecoderWeights; returns (weights, unused keys)."""
    r = _Tensors(tensors, where)
    V, D = c.vocab_size, c.d_model
    emb_name = "wte.weight" if c.model_type == "gpt2" else "embed_tokens.weight"
    pre = next((p for p in BASE_PREFIXES[c.model_type] if p + emb_name in tensors), None)
    if pre is None:
        raise CorruptModelError(f"{where}: no {c.model_type} token embedding found (looked for "
                                f"{emb_name} under {BASE_PREFIXES[c.model_type]})")
    embed = r.get(pre + emb_name, (V, D))
    layers = []
    if c.model_type == "llama":
        for i in range(c.n_layers):
            lp = f"{pre}layers.{i}."
            mods = {}
            for module, (name, shape) in llama_layer_shapes(c).items():
                if len(shape) == 1:
                    mods[name] = r.get(lp + module + ".weight", shape)
                else:
                    has_bias = c.mlp_bias if module.startswith("mlp.") else c.attention_bias
                    bias = r.get(lp + module + ".bias", shape[:1]) if has_bias else None
                    mods[name] = Linear(r.get(lp + module + ".weight", shape), bias)
            layers.append(LlamaLayerWeights(**mods))
        norm, positions = r.get(pre + "norm.weight", (D,)), None
    else:
        for i in range(c.n_layers):
            lp = f"{pre}h.{i}."
            mods = {}
            for module, (name, shape) in gpt2_layer_shapes(c).items():
                if len(shape) == 1:
                    mods[name] = LayerNorm(r.get(lp + module + ".weight", shape), r.get(lp + module + ".bias", shape))
                else:  # Conv1D [in, out] -> Linear [out, in]
                    w = np.ascontiguousarray(r.get(lp + module + ".weight", shape).T)
                    mods[name] = Linear(w, r.get(lp + module + ".bias", shape[1:]))
            layers.append(GPT2LayerWeights(**mods))
        norm = LayerNorm(r.get(pre + "ln_f.weight", (D,)), r.get(pre + "ln_f.bias", (D,)))
        positions = r.get(pre + "wpe.weight", (c.max_positions, D))
    head = None if c.tie_word_embeddings else r.maybe("lm_head.weight", (V, D))
    if head is None and not c.tie_word_embeddings:
        raise CorruptModelError(f"{where}: tensor 'lm_head.weight' is missing and the config does not "
                                "tie the LM head to the embedding")
    if c.tie_word_embeddings and "lm_head.weight" in tensors:
        r.used.add("lm_head.weight")  # a tied checkpoint may store the same matrix twice
    weights = DecoderWeights(embed, positions, layers, norm, Linear(embed if head is None else head, None))
    unused = sorted(k for k in tensors if k not in r.used and not k.endswith((".attn.bias", ".masked_bias",
                                                                              "rotary_emb.inv_freq")))
    return weights, unused


# ---- files -> Decoder ----------------------------------------------------------------------------
def is_decoder_path(path) -> bool:
    """A .gguf file, or a directory whose config.json names a decoder model_type."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".gguf":
        return True
    cfg = p / "config.json"
    if p.is_dir() and cfg.is_file():
        try:
            config = json.loads(cfg.read_text())
        except (ValueError, UnicodeDecodeError):   # the encoder loader names what is wrong with it
            return False
        return isinstance(config, dict) and config.get("model_type") in DECODER_MODEL_TYPES
    return False


def load_decoder(path) -> Decoder:
    """A Decoder from a GGUF file or a Hugging Face directory (config.json + safetensors / bin)."""
    p = Path(path)
    if p.suffix.lower() == ".gguf" or p.is_file():
        return load_gguf(p)
    p = model_dir(p)
    raw = json.loads((p / "config.json").read_text())
    try:
        config = DecoderConfig.from_hf(raw)
    except (KeyError, TypeError) as e:
        raise CorruptModelError(f"{p / 'config.json'}: {raw.get('model_type')} config lacks or garbles {e}") from None
    weights, unused = build_decoder_weights(read_tensors(p), config, where=str(p))
    lm = Decoder(config, weights, DecoderTokenizer.from_dir(p), name=p.name)
    lm.unused_tensors = unused
    return lm


def load_gguf(path) -> Decoder:
    """A Decoder from a GGUF file (fdbert.gguf): weights dequantized to float32, tokenizer and chat
    template from its metadata."""
    p = Path(path)
    meta, tensors = read_gguf(p)
    meta["_tensor_names"] = tuple(tensors)
    config = config_from_gguf(meta, str(p))
    weights, _ = build_decoder_weights(dequantized_tensors(tensors, config, str(p)), config, where=str(p))
    name = meta.get("general.name") or p.stem
    lm = Decoder(config, weights, DecoderTokenizer.from_gguf(meta, str(p)), name=str(name))
    lm.gguf_metadata = {k: v for k, v in meta.items() if not k.startswith("tokenizer.ggml.")}
    return lm
