"""Text <-> token ids for causal LMs, and the chat template, on Hugging Face ``tokenizers`` + Jinja2.

From a model directory: ``tokenizer.json`` (+ ``tokenizer_config.json`` for the chat template and the
special tokens). From a GGUF file: the ``tokenizer.ggml.*`` metadata (vocabulary, merges, token
types, BOS/EOS ids, the pre-tokenizer's name) and ``tokenizer.chat_template``, rebuilt as the same
byte-level BPE that the model was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import CorruptModelError, UnsupportedModelError

# GGUF token types (llama.cpp's llama_token_type)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# tokenizer.ggml.pre -> does the pre-tokenizer split digits one by one before GPT-2's regex split?
# (llama.cpp's llama-vocab.cpp: "smollm" puts \p{N} in front of the GPT-2 pattern.)
GGUF_BPE_PRE = {"default": False, "gpt2": False, "gpt-2": False, "smollm": True}


class DecoderTokenizer:
    """encode(str) -> list[int], decode(list[int]) -> str, eos_token_id, apply_chat_template(messages)."""

    def __init__(self, tok, eos_token_id=None, bos_token_id=None, chat_template=None, add_bos=False):
        self._tok = tok
        tok.no_padding()
        tok.no_truncation()
        self.eos_token_id, self.bos_token_id = eos_token_id, bos_token_id
        self.chat_template, self.add_bos = chat_template, add_bos

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (a BOS in front only if the model's tokenizer adds one)."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if self.add_bos and self.bos_token_id is not None and (not ids or ids[0] != self.bos_token_id):
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token(self, i: int) -> str | None:
        return self._tok.id_to_token(i)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` ([{"role": ..., "content": ...}]), rendered by the model's
        Jinja2 chat template as transformers renders it (trim_blocks, lstrip_blocks, sandboxed)."""
        if not self.chat_template:
            raise UnsupportedModelError("this model has no chat template (no tokenizer.chat_template "
                                        "in its GGUF metadata or tokenizer_config.json)")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise ValueError(f"chat template: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        special = {name: (self._tok.id_to_token(i) if i is not None else "")
                   for name, i in (("bos_token", self.bos_token_id), ("eos_token", self.eos_token_id))}
        return env.from_string(self.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **special)

    # ---- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: Path) -> "DecoderTokenizer | None":
        """tokenizer.json (+ tokenizer_config.json) of a HF model directory, or None without tokenizer.json."""
        f = path / "tokenizer.json"
        if not f.is_file():
            return None
        from tokenizers import Tokenizer
        try:
            tok = Tokenizer.from_file(str(f))
        except Exception as e:
            raise CorruptModelError(f"{f}: cannot read tokenizer ({e})") from None
        conf = {}
        if (path / "tokenizer_config.json").is_file():
            try:
                conf = json.loads((path / "tokenizer_config.json").read_text())
            except (ValueError, UnicodeDecodeError) as e:
                raise CorruptModelError(f"{path / 'tokenizer_config.json'}: not valid JSON ({e})") from None

        def special(name):
            v = conf.get(name)
            v = v.get("content") if isinstance(v, dict) else v
            return tok.token_to_id(v) if isinstance(v, str) else None

        return cls(tok, special("eos_token"), special("bos_token"), conf.get("chat_template"),
                   add_bos=bool(conf.get("add_bos_token", False)))

    @classmethod
    def from_gguf(cls, meta: dict, where: str) -> "DecoderTokenizer":
        """A byte-level BPE rebuilt from GGUF metadata (``tokenizer.ggml.model`` == "gpt2")."""
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
        model = meta.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise UnsupportedModelError(f"{where}: tokenizer.ggml.model {model!r} is not supported; "
                                        "supported: gpt2 (byte-level BPE)")
        pre = meta.get("tokenizer.ggml.pre", "default")
        if pre not in GGUF_BPE_PRE:
            raise UnsupportedModelError(f"{where}: tokenizer.ggml.pre {pre!r} is not supported; supported: "
                                        + ", ".join(GGUF_BPE_PRE))
        try:
            tokens = list(meta["tokenizer.ggml.tokens"])
            merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
            types = list(meta.get("tokenizer.ggml.token_type", [TOKEN_NORMAL] * len(tokens)))
        except (KeyError, ValueError) as e:
            raise CorruptModelError(f"{where}: tokenizer metadata incomplete ({e})") from None
        tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, ignore_merges=False))
        split = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        if GGUF_BPE_PRE[pre]:
            split.insert(0, pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"))
        tok.pre_tokenizer = pre_tokenizers.Sequence(split)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, ty in zip(tokens, types) if ty == TOKEN_CONTROL])
        tok.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, ty in zip(tokens, types) if ty == TOKEN_USER_DEFINED])
        return cls(tok, meta.get("tokenizer.ggml.eos_token_id"), meta.get("tokenizer.ggml.bos_token_id"),
                   meta.get("tokenizer.chat_template"), add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)))
