"""The causal LM users hold: weights + config + tokenizer, the forward pass and generation.

    x = E[ids] (+ P[positions] for GPT-2)                 [n, D]  packed rows of this step's tokens
    x = Block_l(x, attend_l), l = 1..L                     [n, D]  attend_l: the layer's KV cache
    logits = Norm(x)[last row of each sequence] W_head^T   [B, V]

One forward serves a prefill (all prompt tokens), a decode step (one token per live sequence) and
any mix of the two (continuous batching, :class:`fdbert.Generator`). Packed rows are the default;
``padding="pre"`` runs EET's pre-padded scheme (:class:`fdbert.kv_cache.PrePaddedKVCache`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .blocks.gpt2 import gpt2_embeddings, gpt2_final_norm, gpt2_layer
from .blocks.heads import lm_head
from .blocks.llama import llama_embeddings, llama_final_norm, llama_layer
from .decoder_config import DecoderConfig
from .errors import ShapeError, TokenIdError
from .generator import Generator
from .kv_cache import PackedKVCache
from .prepadded import generate_prepadded
from .reference.rope import rope_angles, rope_inv_freq
from .sampling import SamplingParams, sample

PADDING_MODES = ("packed", "pre")


@dataclass(frozen=True)
class Completion:
    """One generated continuation."""
    token_ids: list            # the generated tokens (EOS not included)
    text: str                  # their text, cut before a stop string
    finish_reason: str         # "stop" (EOS or a stop string) or "length" (max_new_tokens, or the position limit)
    prompt_tokens: int = 0


class Decoder:
    """A GPT-2 or Llama-family causal LM. Build with :func:`fdbert.from_pretrained` (the loaders:
    :mod:`fdbert.decoder_loading`)."""

    def __init__(self, config: DecoderConfig, weights, tokenizer=None, name: str = "", max_seq_len=None):
        self.config, self.weights, self.tokenizer, self.name = config, weights, tokenizer, name
        self.max_seq_len = int(max_seq_len or config.max_positions)   # the position limit
        self.inv_freq = (rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)
                         if config.model_type == "llama" else None)
        eos = config.eos_token_id if config.eos_token_id is not None else getattr(tokenizer, "eos_token_id", None)
        self.eos_token_ids = frozenset([] if eos is None else [int(eos)])
        self.unused_tensors = []

    def __repr__(self) -> str:
        c = self.config
        return (f"<fdbert.Decoder {self.name or c.model_type}: {c.model_type}, {c.n_layers} layers, "
                f"D={c.d_model}, H={c.n_heads}, Hkv={c.n_kv_heads}, F={c.d_ffn}, V={c.vocab_size}>")

    # ---- the forward pass ------------------------------------------------------------------------
    def new_cache(self) -> PackedKVCache:
        c = self.config
        return PackedKVCache(c.n_layers, c.n_kv_heads, c.head_dim)

    def forward(self, ids, positions, attend_of) -> np.ndarray:  # [n], [n] -> [n, D]
        """Final-normed hidden states of n packed tokens; ``attend_of(l)`` is layer l's attention."""
        c, w = self.config, self.weights
        self._check_ids(ids)
        if len(positions) and int(np.max(positions)) >= self.max_seq_len:
            raise ShapeError(f"position {int(np.max(positions))} is past the model's limit of "
                             f"{self.max_seq_len} tokens")
        if c.model_type == "gpt2":
            x = gpt2_embeddings(ids, positions, w)                     # [n, D]
            for i, layer in enumerate(w.layers):
                x = gpt2_layer(x, attend_of(i), layer, c)
            return gpt2_final_norm(x, w, c)
        x = llama_embeddings(ids, w)                                   # [n, D]
        cos, sin = rope_angles(positions, self.inv_freq)               # [n, Dh/2] each, shared by all layers
        for i, layer in enumerate(w.layers):
            x = llama_layer(x, cos, sin, attend_of(i), layer, c)
        return llama_final_norm(x, w, c)

    def lm_head(self, h) -> np.ndarray:  # [m, D] -> [m, V]
        """logits = h W_head^T"""
        return lm_head(h, self.weights.lm_head.weight)

    def logits(self, token_ids) -> np.ndarray:  # [T] -> [T, V]
        """Logits at every position of one sequence, from scratch (no cache kept): the oracle of tests."""
        ids = np.asarray(token_ids, np.int64)
        cache = self.new_cache()
        cache.add(0, len(ids))
        cache.begin([0], [len(ids)])
        h = self.forward(ids, np.arange(len(ids), dtype=np.int64), cache.layer)
        return self.lm_head(h)

    def _check_ids(self, ids) -> None:
        V = self.config.vocab_size
        if len(ids) and (ids.min() < 0 or ids.max() >= V):
            bad = ids[(ids < 0) | (ids >= V)][0]
            raise TokenIdError(f"token id {bad} is out of range: expected 0 <= id < vocab_size {V}")

    # ---- generation --------------------------------------------------------------------------------
    def _prompt_ids(self, prompt) -> list:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ShapeError("this model has no tokenizer; pass token ids instead of text")
            return self.tokenizer.encode(prompt)
        ids = [int(t) for t in prompt]
        if not ids:
            raise ShapeError("a prompt must have at least one token")
        return ids

    def _params(self, params, kw) -> SamplingParams:
        if params is None:
            return SamplingParams(**kw)
        if kw:
            from dataclasses import replace
            return replace(params, **kw)
        return params

    def generate(self, prompts, params: SamplingParams | None = None, padding: str = "packed",
                 **kw) -> list[Completion]:
        """Completions of ``prompts`` (texts, or lists of token ids), one per prompt, in order.

        ``params`` (or its fields as keywords: max_new_tokens=..., temperature=..., seed=...) apply to
        every prompt; each prompt draws from its own generator seeded with ``seed``, so a prompt's
        completion does not depend on the others. ``padding``: "packed" (default, no padding) or "pre"
        (EET's left-padded batch; the same tokens, for teaching and comparison).
        """
        if isinstance(prompts, str) or (len(prompts) and isinstance(prompts[0], (int, np.integer))):
            raise ShapeError("generate takes a list of prompts; wrap a single prompt in a list")
        params = self._params(params, kw)
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        ids = [self._prompt_ids(p) for p in prompts]
        if padding == "pre":
            return [Completion(tokens, text, finish, len(p))
                    for (tokens, text, finish), p in zip(generate_prepadded(self, ids, params), ids)]
        gen = Generator(self)
        rids = [gen.add(p, params) for p in ids]
        tokens = {r: [] for r in rids}
        finish = {}
        while gen.live or gen.waiting:
            for e in gen.step():
                if e.token_id is not None and not (e.finish_reason == "stop" and e.token_id in self.eos_token_ids):
                    tokens[e.request_id].append(e.token_id)
                if e.finish_reason:
                    finish[e.request_id] = e.finish_reason
        return [Completion(tokens[r], gen.text_of(r), finish[r], len(p)) for r, p in zip(rids, ids)]

    def stream(self, prompt, params: SamplingParams | None = None, **kw):
        """Yield the text of ``prompt``'s completion piece by piece as tokens come."""
        gen = Generator(self)
        gen.add(self._prompt_ids(prompt), self._params(params, kw))
        while gen.live or gen.waiting:
            for e in gen.step():
                if e.text:
                    yield e.text

    def chat(self, messages, params: SamplingParams | None = None, **kw) -> Completion:
        """The assistant's reply to ``messages`` ([{"role": ..., "content": ...}]) with the model's chat template."""
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return self.generate([self.tokenizer.encode(prompt)], params, **kw)[0]
