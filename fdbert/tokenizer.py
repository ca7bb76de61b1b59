"""Text -> token ids with the checkpoint's own ``tokenizer.json`` (Hugging Face ``tokenizers``)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import CorruptModelError
from .packing import PackedBatch, pack_sequences


class Tokenizer:
    """Wraps a ``tokenizers.Tokenizer``: no padding (batches are packed), truncation to ``max_length``."""

    def __init__(self, tok, max_length: int):
        self._tok = tok
        self.max_length = max_length
        tok.no_padding()
        tok.enable_truncation(max_length)

    @classmethod
    def from_dir(cls, path: Path, max_positions: int) -> "Tokenizer | None":
        """The tokenizer of a model directory, or None if it has no tokenizer.json."""
        f = path / "tokenizer.json"
        if not f.is_file():
            return None
        from tokenizers import Tokenizer as HFTokenizer
        try:
            tok = HFTokenizer.from_file(str(f))
        except Exception as e:
            raise CorruptModelError(f"{f}: cannot read tokenizer ({e})") from None
        return cls(tok, max_length=_max_length(path, max_positions))

    def to_str(self) -> str:
        return self._tok.to_str()

    @classmethod
    def from_str(cls, s: str, max_length: int) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTokenizer
        return cls(HFTokenizer.from_str(s), max_length)

    def __call__(self, texts) -> PackedBatch:
        """texts -> PackedBatch of their token ids (with the model's special tokens)."""
        if isinstance(texts, str):
            texts = [texts]
        encs = self._tok.encode_batch(list(texts))
        return pack_sequences([e.ids for e in encs], [e.type_ids for e in encs])

    def tokens(self, text: str) -> list[str]:
        return self._tok.encode(text).tokens


def _max_length(path: Path, max_positions: int) -> int:
    """sentence-transformers' max_seq_length if present, else the tokenizer's model_max_length, capped
    by the position table."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"),
                      ("tokenizer_config.json", "model_max_length")):
        f = path / name
        if f.is_file():
            try:
                cfg = json.loads(f.read_bytes().decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
                raise CorruptModelError(f"{f}: not valid JSON ({e})") from None
            value = cfg.get(key) if isinstance(cfg, dict) else None
            if value is None:
                continue
            # tokenizer_config.json writes int(1e30) for "no limit": a huge int is fine, min() caps it
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
                raise CorruptModelError(f"{f}: field {key!r}: expected a positive integer, got {value!r}")
            return min(int(value), max_positions) if value < 1e300 else max_positions
    return max_positions
