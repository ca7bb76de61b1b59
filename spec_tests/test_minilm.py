"""The real all-MiniLM-L6-v2 (BERT, 6 layers, D=384): fdbert's sentence embeddings equal the torch
pipeline (sentence-transformers) on 200 real movie-review sentences, and so do its token ids.
"""

from __future__ import annotations

import numpy as np
import pytest

import fdbert
from tolerances import MINILM_MIN_COSINE, PACKING_ATOL, UNIT_NORM_ATOL

pytestmark = [pytest.mark.slow, pytest.mark.torch]


@pytest.fixture(scope="module")
def sbert(minilm_path):
    st = pytest.importorskip("sentence_transformers",
                             reason="sentence-transformers (the torch oracle) is not installed")
    return st.SentenceTransformer(str(minilm_path), device="cpu")


@pytest.fixture(scope="module")
def long_text(polarity_sentences):
    """A text longer than the model's 256-token window: truncation must match too."""
    return " ".join(polarity_sentences[:40])


def torch_embeddings(sbert, texts):
    return sbert.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)


def test_loads_as_a_normalised_mean_pooling_bert(minilm, sbert):
    c = minilm.config
    assert (c.model_type, c.n_layers, c.d_model, c.n_heads, c.d_ffn, c.vocab_size) == \
        ("bert", 6, 384, 12, 1536, 30522)
    assert (minilm.pooling.mode, minilm.pooling.normalize) == ("mean", True)
    assert minilm.tokenizer.max_length == sbert.max_seq_length
    assert minilm.unused_tensors == []


def test_token_ids_equal_the_hf_tokenizer(minilm, sbert, polarity_sentences, long_text):
    texts = [*polarity_sentences, long_text, "", "naïve café — ünïcödé 😀 tokens"]
    want = sbert.tokenizer(texts, truncation=True, max_length=sbert.max_seq_length)["input_ids"]
    packed = minilm.tokenizer(texts)
    cu = packed.cu_seqlens
    got = [packed.input_ids[cu[i]:cu[i + 1]].tolist() for i in range(len(texts))]
    assert got == want
    assert len(got[-3]) == sbert.max_seq_length  # the long text was truncated, keeping [SEP]
    assert got[-2] == [101, 102]                 # "" is [CLS] [SEP]


def test_sentence_embeddings_equal_sentence_transformers(minilm, sbert, polarity_sentences):
    want = torch_embeddings(sbert, polarity_sentences)  # [200, 384] unit vectors
    with fdbert.set_backend("reference", only=True):
        got = minilm.encode(polarity_sentences)         # the model's own pooling: mean, normalised
    assert got.shape == want.shape == (200, 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=0, atol=UNIT_NORM_ATOL)
    cos = (got * want).sum(axis=1) / np.linalg.norm(want, axis=1)
    worst = int(np.argmin(cos))
    assert cos.min() >= MINILM_MIN_COSINE, \
        f"sentence {worst} {polarity_sentences[worst]!r}: cosine {cos[worst]:.7f} < {MINILM_MIN_COSINE}"


def test_long_and_empty_texts_equal_sentence_transformers(minilm, sbert, long_text):
    texts = [long_text, "", "a"]
    want = torch_embeddings(sbert, texts)
    got = minilm.encode(texts)
    assert ((got * want).sum(axis=1) >= MINILM_MIN_COSINE).all()


def test_batching_does_not_change_embeddings(minilm, polarity_sentences):
    """The same sentences in one batch of 24, in batches of 7, and one by one (fp32, real weights)."""
    texts = polarity_sentences[:24]
    whole = minilm.encode(texts, batch_size=24, normalize=False)
    for batch_size in (7, 1):
        np.testing.assert_allclose(minilm.encode(texts, batch_size=batch_size, normalize=False), whole,
                                   rtol=0, atol=PACKING_ATOL, err_msg=f"batch_size={batch_size}")


def test_padded_token_ids_equal_text_in(minilm, polarity_sentences):
    """model(input_ids, attention_mask) on a left-padded [B, T] batch = the packed text path."""
    texts = polarity_sentences[:5]
    packed = minilm.tokenizer(texts)
    lengths = np.diff(packed.cu_seqlens)
    T = int(lengths.max()) + 2
    ids = np.zeros((5, T), np.int64)
    mask = np.zeros((5, T), np.int64)
    for b in range(5):
        ids[b, T - lengths[b]:] = packed.input_ids[packed.cu_seqlens[b]:packed.cu_seqlens[b + 1]]
        mask[b, T - lengths[b]:] = 1
    h = minilm(ids, mask)  # [5, T, 384]
    mean = (h * mask[..., None]).sum(axis=1) / lengths[:, None]
    want = minilm.encode(texts, normalize=False)
    np.testing.assert_allclose(mean, want, rtol=0, atol=PACKING_ATOL)


def test_runs_on_the_default_backend_too(minilm, sbert, polarity_sentences):
    """Whatever `auto` picks on this machine (native when built) gives the same embeddings."""
    texts = polarity_sentences[::20]
    with fdbert.set_backend("auto"):
        got = minilm.encode(texts)
    assert ((got * torch_embeddings(sbert, texts)).sum(axis=1) >= MINILM_MIN_COSINE).all()
