"""Task heads equal Hugging Face's: *ForQuestionAnswering start/end logits and
*ForSequenceClassification logits, DistilBERT and BERT, random weights.

HF's sequence classifiers pool column 0 of the padded batch ([CLS] only under right padding), while
fdbert pools each sequence's first real token; so classification is compared with HF on right-padded
batches, and left padding is checked to give fdbert the same logits as right padding.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="the [torch] extra (torch, transformers) is not installed")
pytest.importorskip("transformers", reason="the [torch] extra (torch, transformers) is not installed")

import fdbert  # noqa: E402
import hf_oracle  # noqa: E402
from strategies import PaddedBatch, mask_for, padded_batches, small_configs  # noqa: E402
from tolerances import FP32_MIN_D, HF_HEADS_ATOL, HF_HEADS_RTOL  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def type_ids(ours, batch):
    return batch.token_type_ids if ours.config.model_type == "bert" else None


def as_side(batch, side):
    """The same sequences re-padded on ``side``."""
    B, T = batch.input_ids.shape
    ids, tt = np.zeros_like(batch.input_ids), np.zeros_like(batch.token_type_ids)
    mask = mask_for(batch.lengths, T, side)
    for b in range(B):
        seq_ids, seq_tt = batch.sequence(b)
        ids[b, mask[b].astype(bool)], tt[b, mask[b].astype(bool)] = seq_ids, seq_tt
    return PaddedBatch(ids, mask, tt, batch.lengths, side)


@pytest.mark.parametrize("model_type", ["distilbert", "bert"])
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_question_answering_logits_equal_hf(model_type, data):
    cfg = data.draw(small_configs(model_type).filter(lambda c: c.d_model >= FP32_MIN_D), label="config")
    batch = data.draw(padded_batches(cfg.vocab_size, cfg.max_positions, cfg.type_vocab_size), label="batch")
    hf = hf_oracle.build(cfg, "qa")
    ours = hf_oracle.load_with_fdbert(hf)
    with fdbert.set_backend("reference", only=True):
        start, end = ours.question_answering(batch.input_ids, batch.attention_mask, type_ids(ours, batch))
    want_start, want_end = hf_oracle.run(hf, batch, "qa")
    real = batch.attention_mask.astype(bool)
    assert start.shape == end.shape == batch.input_ids.shape
    np.testing.assert_allclose(start[real], want_start[real], rtol=HF_HEADS_RTOL, atol=HF_HEADS_ATOL)
    np.testing.assert_allclose(end[real], want_end[real], rtol=HF_HEADS_RTOL, atol=HF_HEADS_ATOL)
    assert np.all(start[~real] == -np.inf) and np.all(end[~real] == -np.inf), \
        "padding positions must never win a span argmax"


@pytest.mark.parametrize("model_type", ["distilbert", "bert"])
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_classification_logits_equal_hf(model_type, data):
    cfg = data.draw(small_configs(model_type).filter(lambda c: c.d_model >= FP32_MIN_D), label="config")
    n_labels = data.draw(st.integers(1, 5), label="num_labels")
    batch = data.draw(padded_batches(cfg.vocab_size, cfg.max_positions, cfg.type_vocab_size,
                                     side="right"), label="batch")
    hf = hf_oracle.build(cfg, "cls", num_labels=n_labels)
    ours = hf_oracle.load_with_fdbert(hf)
    with fdbert.set_backend("reference", only=True):
        got = ours.classify(batch.input_ids, batch.attention_mask, type_ids(ours, batch))
        got_left = ours.classify(*_args(ours, as_side(batch, "left")))
    want = hf_oracle.run(hf, batch, "cls")
    assert got.shape == want.shape == (len(batch.lengths), n_labels)
    np.testing.assert_allclose(got, want, rtol=HF_HEADS_RTOL, atol=HF_HEADS_ATOL)
    np.testing.assert_allclose(got_left, got, rtol=HF_HEADS_RTOL, atol=HF_HEADS_ATOL)


def _args(ours, batch):
    return batch.input_ids, batch.attention_mask, type_ids(ours, batch)


@pytest.mark.parametrize("name", ["distilbert-qa", "bert-qa", "distilbert-cls", "bert-cls"])
def test_tiny_head_checkpoints_equal_hf(tiny_hf_models, name):
    hf, path = tiny_hf_models[name]
    ours = fdbert.from_pretrained(path)
    rng = np.random.default_rng(3)
    lengths = (16, 1, 7)
    batch = PaddedBatch(rng.integers(0, 50, (3, 16)), mask_for(lengths, 16, "right"),
                        rng.integers(0, 2, (3, 16)), lengths, "right")
    if name.endswith("qa"):
        got = ours.question_answering(*_args(ours, batch))
        want = hf_oracle.run(hf, batch, "qa")
        real = batch.attention_mask.astype(bool)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g[real], w[real], rtol=HF_HEADS_RTOL, atol=HF_HEADS_ATOL)
    else:
        got = ours.classify(*_args(ours, batch))
        assert got.shape == (3, 3)
        np.testing.assert_allclose(got, hf_oracle.run(hf, batch, "cls"), rtol=HF_HEADS_RTOL, atol=HF_HEADS_ATOL)


def test_missing_head_is_a_clear_error(tiny_hf_models):
    ours = fdbert.from_pretrained(tiny_hf_models["distilbert"][1])
    ids = np.ones((1, 4), dtype=np.int64)
    with pytest.raises(fdbert.FdbertError, match="no qa_outputs head"):
        ours.question_answering(ids)
    with pytest.raises(fdbert.FdbertError, match="no pre_classifier head"):
        ours.classify(ids)
