"""Tiny random text models for the INT8 / pruning / save-load tests (no torch, no downloads).

:func:`tiny_text_model` is :func:`strategies.random_encoder` plus an in-memory word-level tokenizer,
so ``model.encode(texts)``, calibration and ``model.save`` work on it. ``outlier_channel`` scales one
LayerNorm channel up 20x in every layer, imitating the outlier channels of real BERT models.
"""

from __future__ import annotations

import numpy as np

from fdbert.tokenizer import Tokenizer
from strategies import SmallConfig, random_encoder

WORDS = ("the a an of to in and or but she he it was is had have been not very much more most "
         "house garden letter sister brother father mother ball dance walk rain sun morning evening "
         "happy sad kind proud civil quiet lively").split()
SPECIALS = ["[PAD]", "[UNK]"]


def word_tokenizer(max_length):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    vocab = {w: i for i, w in enumerate(SPECIALS + list(WORDS))}
    tok = HFTokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return Tokenizer(tok, max_length)


def tiny_text_model(seed=0, n_layers=2, n_heads=2, head_dim=8, d_ffn=40, outlier_channel=None):
    cfg = SmallConfig("bert", n_layers=n_layers, n_heads=n_heads, head_dim=head_dim, d_ffn=d_ffn,
                      vocab_size=len(SPECIALS) + len(WORDS), max_positions=16, type_vocab_size=1,
                      layer_norm_eps=1e-12, seed=seed)
    model = random_encoder(cfg)
    if outlier_channel is not None:
        for ln in [model.weights.embeddings.layer_norm] + [l.output_layer_norm for l in model.weights.layers]:
            ln.weight[outlier_channel] *= 20.0
    model.tokenizer = word_tokenizer(cfg.max_positions)
    return model


def sentences(n, seed=0, max_words=12):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, max_words + 1))) for _ in range(n)]
