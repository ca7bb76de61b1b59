"""The distilled models shipped in fdbert/data/models: what they claim to be, and the fidelity that
docs/accuracy.md states for them, on held-out text they were never trained on."""

import json

import numpy as np
import pytest

import fdbert
from fdbert.blocksparse import BSRMatrix
from fdbert.compress._model import linear_names
from fdbert.compress.fidelity import compare
from tolerances import SHIPPED_BACKENDS_MEDIAN_COSINE, SHIPPED_BACKENDS_MIN_COSINE

# name -> (sparsity, on the 200 held-out polarity sentences against the float32 teacher: the floor of
# the mean cosine, the floor of the min cosine, the floor of the pairwise-similarity Spearman). The
# floors are docs/accuracy.md's stated figures rounded down, not read from the models.
SHIPPED = {
    "minilm-l6-sparse80-int8": (0.8, 0.88, 0.70, 0.87),
    "minilm-l6-sparse50-int8": (0.5, 0.94, 0.85, 0.94),
}


@pytest.fixture(scope="module")
def polarity():
    from fdbert.compress.corpus import polarity_texts
    return polarity_texts()


def test_the_shipped_models_are_the_documented_ones():
    assert sorted(fdbert.shipped_models()) == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_model_is_1x4_block_sparse_int8_at_its_sparsity(name, minilm_path):
    sparsity = SHIPPED[name][0]
    m = fdbert.load_shipped(name)
    record = fdbert.shipped.shipped_record(name)
    assert record["config"]["sparsity"] == sparsity and record["config"]["block"] == [1, 4]
    assert m.compression["pruning"]["sparsity"] == sparsity
    kept = total = 0
    for layer in m.weights.layers:
        for n in linear_names():
            w = getattr(layer, n).weight
            assert isinstance(w, BSRMatrix) and w.blocksize == (1, 4) and w.data.dtype == np.int8
            nb, kb = w.grid
            kept += w.nnz_blocks
            total += nb * kb
    # layer scope: every matrix keeps ceil((1 - s) * blocks) blocks, so the whole is s to 1e-4
    assert abs((1 - kept / total) - sparsity) < 1e-4
    # the frozen word embeddings are the installed teacher's, referenced rather than copied
    meta = json.loads((fdbert.shipped_models()[name] / "fdbert.json").read_text())
    assert "embeddings.word_embeddings" in meta["external"]
    teacher = fdbert.from_pretrained(minilm_path)
    np.testing.assert_array_equal(m.weights.embeddings.word_embeddings, teacher.weights.embeddings.word_embeddings)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_model_keeps_its_documented_fidelity_on_held_out_sentences(name, minilm, polarity):
    _, mean, lo, rho = SHIPPED[name]
    f = compare(fdbert.load_shipped(name).encode(polarity), minilm.encode(polarity))
    assert f.mean >= mean and f.min >= lo and f.spearman >= rho, f


@pytest.mark.native_only
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_model_agrees_on_both_backends(name, polarity):
    # the int32 accumulators are exact on both; the float ops between them round differently
    # (tolerances.py says what that does on the real model)
    m = fdbert.load_shipped(name)
    with fdbert.set_backend("native", only=True):
        native = m.encode(polarity[:32])
    with fdbert.set_backend("reference"):
        ref = m.encode(polarity[:32])
    cos = np.sum(native * ref, axis=1)
    assert np.median(cos) >= SHIPPED_BACKENDS_MEDIAN_COSINE and cos.min() >= SHIPPED_BACKENDS_MIN_COSINE, cos
