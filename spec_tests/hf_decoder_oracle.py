"""The torch side of the decoder tests: random-weight GPT2LMHeadModel / LlamaForCausalLM, and fdbert
Decoders built from the same weights (through fdbert's own loader tables)."""

from __future__ import annotations

import math

import numpy as np
import torch
import transformers

from fdbert.decoder import Decoder
from fdbert.decoder_config import DecoderConfig
from fdbert.decoder_loading import build_decoder_weights
from strategies import SmallDecoderConfig

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()


def hf_config(c: SmallDecoderConfig):
    if c.model_type == "gpt2":
        return transformers.GPT2Config(vocab_size=c.vocab_size, n_positions=c.max_positions, n_embd=c.d_model,
                                       n_layer=c.n_layers, n_head=c.n_heads, n_inner=c.d_ffn,
                                       attn_implementation="eager")
    kw = {}
    if c.rope_scaling:
        kw["rope_scaling"] = dict(c.rope_scaling)
    return transformers.LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ffn,
                                    num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
                                    num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim,
                                    max_position_embeddings=c.max_positions, rope_theta=c.rope_theta,
                                    tie_word_embeddings=c.tie, attention_bias=c.attention_bias,
                                    attn_implementation="eager", **kw)


@torch.no_grad()
def randomize_(model, seed):
    """Weights that make mistakes visible: Linear ~ N(0, (1.5/sqrt K)^2), embeddings ~ N(0, 1), biases
    ~ N(0, 0.2^2), norm weights ~ 1 + N(0, 0.2^2)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
        if "norm" in name or ".ln_" in name:
            p.copy_(1 + 0.2 * noise if name.endswith("weight") else 0.2 * noise)
        elif name.endswith("bias"):
            p.copy_(0.2 * noise)
        elif "wte" in name or "wpe" in name or "embed" in name:
            p.copy_(noise)
        else:
            K = p.shape[0] if model.config.model_type == "gpt2" and "lm_head" not in name else p.shape[1]
            p.copy_(noise * (1.5 / math.sqrt(K)))
    return model


def build(c: SmallDecoderConfig):
    cfg = hf_config(c)
    cls = transformers.GPT2LMHeadModel if c.model_type == "gpt2" else transformers.LlamaForCausalLM
    return randomize_(cls(cfg), c.seed).eval()


def to_fdbert(hf) -> Decoder:
    """An fdbert Decoder of the same weights, through fdbert's loader table (as from a checkpoint)."""
    tensors = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    config = DecoderConfig.from_hf(hf.config.to_dict())
    weights, unused = build_decoder_weights(tensors, config, "hf model")
    assert not unused, unused
    return Decoder(config, weights)


@torch.no_grad()
def hf_logits(hf, ids) -> np.ndarray:  # [T] -> [T, V]
    return hf(torch.tensor([ids])).logits[0].numpy()


@torch.no_grad()
def hf_greedy(hf, ids, n_new) -> list:
    """HF's greedy continuation with its own KV cache (generate(do_sample=False))."""
    out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                      max_new_tokens=n_new, do_sample=False, eos_token_id=None, pad_token_id=0,
                      min_new_tokens=n_new)
    return out[0, len(ids):].tolist()
