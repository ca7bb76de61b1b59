"""Small random GPT-2 and Llama decoders built without torch (so the pure-Python pass runs them too),
through fdbert's own loader table from tensors named as in a HF checkpoint (their configs and prompts:
strategies.decoder_configs, strategies.prompt_lists)."""

from __future__ import annotations

import numpy as np

from fdbert.decoder import Decoder
from fdbert.decoder_config import DecoderConfig
from fdbert.decoder_loading import gpt2_layer_shapes, llama_layer_shapes, build_decoder_weights


def random_decoder(config: DecoderConfig, seed: int = 0) -> Decoder:
    """Weights that make mistakes visible: Linear ~ N(0, (1.5/sqrt K)^2), embeddings ~ N(0, 1),
    biases ~ N(0, 0.2^2), norm weights ~ 1 + N(0, 0.2^2)."""
    rng = np.random.default_rng(seed)
    c = config

    def t(shape, kind):
        x = rng.standard_normal(shape).astype(np.float32)
        if kind == "norm":
            return 1 + np.float32(0.2) * x
        if kind == "bias":
            return np.float32(0.2) * x
        if kind == "emb":
            return x
        return x * np.float32(1.5 / np.sqrt(shape[0] if c.model_type == "gpt2" else shape[1]))

    tensors = {}
    if c.model_type == "llama":
        tensors["model.embed_tokens.weight"] = t((c.vocab_size, c.d_model), "emb")
        tensors["model.norm.weight"] = t((c.d_model,), "norm")
        for i in range(c.n_layers):
            for module, (_, shape) in llama_layer_shapes(c).items():
                p = f"model.layers.{i}.{module}"
                tensors[p + ".weight"] = t(shape, "norm" if len(shape) == 1 else "w")
                bias = c.mlp_bias if module.startswith("mlp.") else c.attention_bias
                if len(shape) == 2 and bias:
                    tensors[p + ".bias"] = t(shape[:1], "bias")
        if not c.tie_word_embeddings:
            tensors["lm_head.weight"] = t((c.vocab_size, c.d_model), "emb") * np.float32(1 / np.sqrt(c.d_model))
    else:
        tensors["transformer.wte.weight"] = t((c.vocab_size, c.d_model), "emb")
        tensors["transformer.wpe.weight"] = t((c.max_positions, c.d_model), "emb")
        tensors["transformer.ln_f.weight"] = t((c.d_model,), "norm")
        tensors["transformer.ln_f.bias"] = t((c.d_model,), "bias")
        for i in range(c.n_layers):
            for module, (_, shape) in gpt2_layer_shapes(c).items():
                p = f"transformer.h.{i}.{module}"
                tensors[p + ".weight"] = t(shape, "norm" if len(shape) == 1 else "w")
                tensors[p + ".bias"] = t(shape[-1:], "bias")
    weights, unused = build_decoder_weights(tensors, c, "random")
    assert not unused, unused
    return Decoder(c, weights)


