"""The model object users hold: weights + config + tokenizer, and the encoder's forward pass; its
doors onto files: :func:`from_pretrained`, :func:`load` and ``Encoder.save`` (fdbert's format is
:mod:`fdbert.serialization`; a Hugging Face checkpoint, :mod:`fdbert.loading`).

    x = Embeddings(ids, positions)             [n, D]   packed real tokens only
    x = EncoderLayer_l(x, cu_seqlens), l=1..L  [n, D]
    heads: mean pooling / [CLS] classifier / per-token QA logits

Inputs arrive padded ([B, T] + attention_mask, either padding side) or as text; internally every batch
is packed (:mod:`fdbert.packing`), so padding costs nothing.
"""

from __future__ import annotations

import numpy as np

from . import ops, serialization
from .blocks import heads
from .blocks.embeddings import embeddings
from .config import EncoderConfig, PoolingConfig
from .decoder_loading import is_decoder_path, load_decoder
from .errors import ArgumentError, DTypeError, FdbertError, ShapeError, TokenIdError
from .loading import build_weights, model_dir, read_config, read_tensors
from .packing import PackedBatch, pack, pass_groups, unpack
from .tokenizer import Tokenizer
from .weights import EncoderWeights


#: Tokens per forward pass (Encoder.max_tokens_per_pass). Intermediates of a pass grow with its
#: tokens (DistilBERT's FFN activations: 12 KB per token); past about 1,000 tokens they spill from
#: the caches, so a large batch runs faster as passes of at most this many tokens. The measurements
#: behind the choice are in docs/benchmarks.md.
MAX_TOKENS_PER_PASS = 1024


def _texts(texts) -> list:
    """A str or an iterable of str -> list of str; DTypeError naming the first item that is not text."""
    if isinstance(texts, str):
        return [texts]
    try:
        texts = list(texts)
    except TypeError:
        raise DTypeError(f"texts: expected a string or a list of strings, got {type(texts).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DTypeError(f"texts[{i}]: expected a string, got {type(t).__name__}")
    return texts


class Encoder:
    """A DistilBERT/BERT encoder. Build with :func:`fdbert.from_pretrained`.

    ``max_tokens_per_pass`` (default :data:`MAX_TOKENS_PER_PASS`; None = no limit): a packed batch
    with more tokens runs as consecutive groups of whole sequences of at most this many tokens.
    Sequences never interact, so the results are the same rows (bit for bit on the native backend,
    whose kernels compute each row independently of the others; the NumPy reference's BLAS may
    round a row differently for another row count, within the float tolerances).
    """

    def __init__(self, config: EncoderConfig, weights: EncoderWeights, tokenizer: Tokenizer | None = None,
                 pooling: PoolingConfig = PoolingConfig(), name: str = ""):
        self.config, self.weights, self.tokenizer, self.pooling, self.name = \
            config, weights, tokenizer, pooling, name
        self.compression = {}  # what fdbert.prune / fdbert.quantize did (saved with the model)
        self.max_tokens_per_pass = MAX_TOKENS_PER_PASS

    def __repr__(self) -> str:
        c = self.config
        return (f"<fdbert.Encoder {self.name or c.model_type}: {c.n_layers} layers, D={c.d_model}, "
                f"H={c.n_heads}, F={c.d_ffn}, V={c.vocab_size}>")

    def save(self, path, external=None):
        """Write the model (float, pruned or INT8) to directory ``path``; read it with :func:`fdbert.load`.
        ``external``: tensors to reference in an installed package instead of copying (fdbert.serialization)."""
        return serialization.save(self, path, external)

    # ---- the forward pass on a packed batch --------------------------------------------------
    def forward_packed(self, batch: PackedBatch) -> np.ndarray:  # -> [n, D]
        """Last hidden state of every real token of a packed batch."""
        self._check_tokens(batch)
        cu = batch.cu_seqlens
        groups = pass_groups(cu, self.max_tokens_per_pass)
        if len(groups) <= 1:
            return self._forward(batch.input_ids, batch.positions, batch.token_type_ids, cu)
        outs = []
        for i, j in groups:
            a, b = int(cu[i]), int(cu[j])
            outs.append(self._forward(batch.input_ids[a:b], batch.positions[a:b],
                                      batch.token_type_ids[a:b], (cu[i:j + 1] - cu[i]).astype(np.int32)))
        return np.concatenate(outs)

    def _forward(self, ids, positions, token_type_ids, cu_seqlens):  # one pass -> [n, D]
        c, w = self.config, self.weights
        x = embeddings(ids, positions, token_type_ids, w.embeddings, c.layer_norm_eps)
        for layer in w.layers:
            x = ops.encoder_layer(x, cu_seqlens, layer, c)
        return x

    def _check_tokens(self, batch: PackedBatch) -> None:
        c = self.config
        ids = batch.input_ids
        if len(ids) and (ids.min() < 0 or ids.max() >= c.vocab_size):
            bad = ids[(ids < 0) | (ids >= c.vocab_size)][0]
            raise TokenIdError(f"token id {bad} is out of range: expected 0 <= id < vocab_size "
                               f"{c.vocab_size}")
        if len(batch.lengths) and batch.lengths.max() > c.max_positions:
            raise ShapeError(f"a sequence has {batch.lengths.max()} tokens, more than the model's "
                             f"max_position_embeddings {c.max_positions}")
        tt = batch.token_type_ids
        n_types = max(c.type_vocab_size, 1)
        if len(tt) and (tt.min() < 0 or tt.max() >= n_types):
            raise TokenIdError(f"token_type_ids must lie in [0, {n_types}), found {tt.max()}")

    # ---- padded in, padded out ---------------------------------------------------------------
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        """last_hidden_state f32 [B, T, D] for padded input_ids [B, T]; padding positions are 0."""
        batch = pack(input_ids, attention_mask, token_type_ids)
        return unpack(self.forward_packed(batch), batch)

    def question_answering(self, input_ids, attention_mask=None, token_type_ids=None):
        """(start_logits, end_logits), each f32 [B, T]; padding positions (so every position of an
        empty row) are -inf."""
        qa = self._head("qa_outputs")
        batch = pack(input_ids, attention_mask, token_type_ids)
        start, end = heads.question_answering(self.forward_packed(batch), qa)
        return unpack(start, batch, -np.inf), unpack(end, batch, -np.inf)

    def classify(self, input_ids, attention_mask=None, token_type_ids=None) -> np.ndarray:
        """Sequence-classification logits f32 [B, C] from the [CLS] token; zeros for a row with no
        real token (an all-zero attention_mask row)."""
        if self.config.model_type == "distilbert":
            pre, clf = self._head("pre_classifier"), self._head("classifier")

            def head(cls):
                return heads.distilbert_classifier(cls, pre, clf)
        else:
            pooler, clf = self._head("pooler"), self._head("classifier")

            def head(cls):
                return heads.bert_classifier(cls, pooler, clf)
        batch = pack(input_ids, attention_mask, token_type_ids)
        cls = heads.first_token(self.forward_packed(batch), batch.cu_seqlens)
        return heads.per_sequence(head, cls, batch.cu_seqlens, clf.shape[0])

    def _head(self, name):
        head = getattr(self.weights.heads, name)
        if head is None:
            raise FdbertError(f"this checkpoint has no {name} head (load a *ForQuestionAnswering / "
                              "*ForSequenceClassification checkpoint)")
        return head

    # ---- text in -------------------------------------------------------------------------------
    def tokenize(self, texts) -> PackedBatch:
        if self.tokenizer is None:
            raise FdbertError("this model has no tokenizer (no tokenizer.json in its directory); "
                              "call it with token ids instead")
        return self.tokenizer(_texts(texts))

    def embed_packed(self, batch: PackedBatch, normalize: bool | None = None) -> np.ndarray:  # -> [B, D]
        """Sentence embeddings of a packed batch with the model's pooling; zeros for an empty sequence
        (mean and cls pooling, normalised or not)."""
        h = self.forward_packed(batch)
        pooled = (heads.first_token(h, batch.cu_seqlens) if self.pooling.mode == "cls"
                  else heads.mean_pool(h, batch.cu_seqlens))
        normalize = self.pooling.normalize if normalize is None else normalize
        return heads.l2_normalize(pooled) if normalize else pooled

    def encode(self, texts, batch_size: int = 32, normalize: bool | None = None,
               progress: bool = False) -> np.ndarray:
        """Sentence embeddings f32 [N, D] of N texts (pooling and normalisation as the model's
        sentence-transformers config says unless ``normalize`` is given)."""
        texts = _texts(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ArgumentError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        out = np.zeros((len(texts), self.config.d_model), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        if progress:
            from .progress import progress_bar
            starts = progress_bar(starts, total=len(starts), desc="encode")
        for s in starts:
            out[s:s + batch_size] = self.embed_packed(self.tokenize(texts[s:s + batch_size]), normalize)
        return out


def from_pretrained(path):
    """Load a local Hugging Face directory (config.json + model.safetensors or pytorch_model.bin
    [+ tokenizer.json]) of model type ``distilbert`` or ``bert``, or a directory written by
    ``model.save`` (fdbert's format, e.g. a compressed model): an :class:`Encoder`. A ``.gguf`` file,
    or a directory of model type ``gpt2`` or ``llama``: a :class:`fdbert.Decoder`. Never downloads
    anything."""
    if is_decoder_path(path):
        return load_decoder(path)
    p = model_dir(path)
    if (p / serialization.META_FILE).is_file():
        return load(p)
    config = EncoderConfig.from_hf(read_config(p), where=str(p / "config.json"))
    tensors = read_tensors(p)
    weights, unused = build_weights(tensors, config, where=str(p))
    model = Encoder(config, weights, Tokenizer.from_dir(p, config.max_positions), PoolingConfig.from_dir(p),
                    name=p.name)
    model.unused_tensors = unused
    return model


def load(path) -> Encoder:
    """Read a model written by ``model.save(path)`` (float, pruned or INT8): an :class:`Encoder`.

    Returns exactly the model that was saved, or raises an :class:`fdbert.FdbertError` (mostly
    :class:`CorruptModelError`) naming the file and the field: see docs/robustness.md."""
    saved = serialization.read(path)
    model = Encoder(saved.config, saved.weights, saved.tokenizer, saved.pooling, name=saved.name)
    model.compression = saved.compression
    return model
