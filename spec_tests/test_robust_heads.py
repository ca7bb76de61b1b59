"""Heads and pooling on batches with empty rows (an all-zero attention_mask row).

The rule (fdbert/blocks/heads.py, docs/robustness.md): an empty row's last hidden state is 0
(model(...)), its pooled embedding is 0 in every pooling mode, normalised or not, its classification
logits are 0, and its QA logits are -inf everywhere; the other rows get exactly what they get in a
batch without the empty rows.
"""

import numpy as np
import pytest
from hypothesis import given, settings

import fdbert
from fdbert.model import PoolingConfig
from fdbert.packing import pack
from fdbert.blocks import heads
from int8_models import tiny_text_model
from strategies import masked_batches
from tolerances import MEAN_POOL_ATOL

T = 6


def nonempty_alone(fn, ids, mask):
    """fn on the non-empty rows only, scattered back ([B, ...] with the empty rows left as None)."""
    keep = mask.sum(axis=1) > 0
    return fn(ids[keep], mask[keep]) if keep.any() else None, keep


_MODELS = {}


def load(tiny_hf_models, name):
    if name not in _MODELS:
        _MODELS[name] = fdbert.from_pretrained(tiny_hf_models[name][1])
    return _MODELS[name]


EXAMPLES = [(np.arange(2 * T).reshape(2, T) % 40 + 2, np.array([[1] * T, [0] * T])),   # last row
            (np.arange(3 * T).reshape(3, T) % 40 + 2, np.array([[1] * 3 + [0] * 3, [0] * T, [1] * T])),
            (np.full((2, T), 5), np.zeros((2, T), np.int64))]                            # every row


@pytest.mark.parametrize("name", ["distilbert-cls", "bert-cls"])
@settings(max_examples=25, deadline=None)
@given(batch=masked_batches(T))
def test_classify_with_empty_rows(tiny_hf_models, name, batch):
    model = load(tiny_hf_models, name)
    for ids, mask in [batch] + EXAMPLES:
        logits = model.classify(ids, mask)
        keep = mask.sum(axis=1) > 0
        assert logits.shape == (len(ids), 3) and logits.dtype == np.float32
        assert np.all(logits[~keep] == 0)
        if keep.any():
            # an empty row adds no token: the packed batch, so every GEMM, is the same, and so are the bits
            np.testing.assert_array_equal(logits[keep], model.classify(ids[keep], mask[keep]))
        h = model(ids, mask)
        assert np.all(h[~keep] == 0)   # the encoder's own convention for an empty row


@pytest.mark.parametrize("name", ["distilbert-qa", "bert-qa"])
@settings(max_examples=25, deadline=None)
@given(batch=masked_batches(T))
def test_question_answering_with_empty_rows(tiny_hf_models, name, batch):
    model = load(tiny_hf_models, name)
    for ids, mask in [batch] + EXAMPLES:
        start, end = model.question_answering(ids, mask)
        keep = mask.sum(axis=1) > 0
        for x in (start, end):
            assert x.shape == ids.shape
            assert np.all(np.isneginf(x[mask == 0])) and np.all(np.isfinite(x[mask == 1]))
        if keep.any():
            s2, e2 = model.question_answering(ids[keep], mask[keep])
            np.testing.assert_array_equal(start[keep], s2)   # the same packed batch: the same bits
            np.testing.assert_array_equal(end[keep], e2)


@pytest.mark.parametrize("mode", ["mean", "cls"])
@pytest.mark.parametrize("normalize", [False, True])
@settings(max_examples=20, deadline=None)
@given(batch=masked_batches(T, vocab=36))
def test_every_pooling_mode_with_empty_rows(mode, normalize, batch):
    model = tiny_text_model(seed=5)
    model.pooling = PoolingConfig(mode, normalize)
    for ids, mask in [batch] + EXAMPLES:
        b = pack(ids % model.config.vocab_size, mask)
        e = model.embed_packed(b)
        keep = mask.sum(axis=1) > 0
        assert e.shape == (len(ids), model.config.d_model)
        assert np.all(e[~keep] == 0)
        h = model(ids % model.config.vocab_size, mask)
        if keep.any():
            ref = h[keep, 0] if mode == "cls" else h[keep].sum(1) / mask[keep].sum(1, keepdims=True)
            if normalize:
                ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
            np.testing.assert_allclose(e[keep], ref, rtol=0, atol=MEAN_POOL_ATOL)


def test_first_token_and_mean_pool_of_empty_sequences():
    h = np.arange(12, dtype=np.float32).reshape(4, 3)
    for cu in ([0, 2, 2, 4], [0, 4, 4], [0, 0], [0, 0, 0], [0, 1, 2, 3, 4, 4]):
        cu = np.array(cu, np.int32)
        n = cu[-1]
        f, m = heads.first_token(h[:n], cu), heads.mean_pool(h[:n], cu)
        for b in range(len(cu) - 1):
            if cu[b] == cu[b + 1]:
                assert np.all(f[b] == 0) and np.all(m[b] == 0)
            else:
                assert np.array_equal(f[b], h[cu[b]])
                np.testing.assert_array_equal(m[b], h[cu[b]:cu[b + 1]].mean(0))   # integer sums, one division
    assert np.all(heads.l2_normalize(np.zeros((2, 3), np.float32)) == 0)
