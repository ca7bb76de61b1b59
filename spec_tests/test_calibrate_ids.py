"""Calibration without a tokenizer: token-id lists and PackedBatches calibrate exactly like the texts
they came from (benchmarks with random weights have no tokenizer)."""

import numpy as np
import pytest

import fdbert
from fdbert.compress.calibrate import calibrate
from fdbert.packing import pack_sequences
from int8_models import sentences, tiny_text_model


@pytest.fixture(scope="module")
def model():
    return tiny_text_model(seed=3, outlier_channel=5)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k].lo, a[k].hi) == (b[k].lo, b[k].hi), k
        np.testing.assert_array_equal(a[k].channel_lo, b[k].channel_lo)
        np.testing.assert_array_equal(a[k].channel_hi, b[k].channel_hi)
        np.testing.assert_array_equal(a[k].outliers, b[k].outliers)


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_token_ids_and_packed_batches_calibrate_like_texts(model, method):
    texts = sentences(10, seed=1)
    batch = model.tokenize(texts)
    cu = batch.cu_seqlens
    ids = [batch.input_ids[cu[i]:cu[i + 1]].tolist() for i in range(len(texts))]
    by_text = calibrate(model, texts, method, outlier_threshold=6.0, batch_size=4, progress=False)
    by_ids = calibrate(model, ids, method, outlier_threshold=6.0, batch_size=4, progress=False)
    # the same passes as batch_size=4 (4, 4, 2 sequences): NumPy's BLAS may round a row differently
    # at another M (OpenBLAS on AVX2 does), and the float model runs on it
    by_packed = calibrate(model, [pack_sequences(ids[i:i + 4]) for i in range(0, len(ids), 4)], method,
                          outlier_threshold=6.0, progress=False)
    _same(by_text, by_ids)
    _same(by_text, by_packed)
    assert any(len(c.outliers) for c in by_ids.values())  # the outlier channel is seen through ids


def test_quantize_from_token_ids_without_a_tokenizer(model):
    texts = sentences(8, seed=2)
    batch = model.tokenize(texts)
    cu = batch.cu_seqlens
    ids = [batch.input_ids[cu[i]:cu[i + 1]].tolist() for i in range(len(texts))]
    q_text = fdbert.quantize(model, texts, progress=False, measure_error=False)
    bare = fdbert.Encoder(model.config, model.weights)      # no tokenizer
    q_ids = fdbert.quantize(bare, ids, progress=False, measure_error=False)
    for lt, li in zip(q_text.weights.layers, q_ids.weights.layers):
        for name in ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"):
            a, b = getattr(lt, name), getattr(li, name)
            assert (a.x_scale, a.x_zero_point) == (b.x_scale, b.x_zero_point)
            np.testing.assert_array_equal(a.outliers, b.outliers)


def test_mixed_samples_are_rejected(model):
    with pytest.raises(TypeError, match="all texts"):
        calibrate(model, ["the sun", [2, 3, 4]], progress=False)
