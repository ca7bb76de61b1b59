"""fdbert.prune, fdbert.quantize (calibration, report), the INT8 encoder layer and `fdbert compress`.

The tiny models come from int8_models.py (random weights, a word-level tokenizer, no torch). The last
test runs the real all-MiniLM-L6-v2 and checks the accuracy target of docs/accuracy.md.
"""

import argparse
import csv

import numpy as np
import pytest

import fdbert
from fdbert.blocksparse import BSRMatrix
from fdbert.compress import calibrate
from fdbert.compress.calibrate import percentile_range
from fdbert.compress.prune import block_scores
from fdbert.blocks.embeddings import embeddings
from fdbert.weights import QuantizedLinear
from int8_models import sentences, tiny_text_model
from conftest import SHARED_DATA
from tolerances import (COMPRESS_MINILM_ATTENTION_MEAN_COSINE, COMPRESS_MINILM_MEAN_COSINE, COMPRESS_TINY_MEAN_COSINE,
                        COMPRESS_TINY_MIN_COSINE)

LINEARS = ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2")


@pytest.fixture(scope="module")
def model():
    return tiny_text_model(seed=3, outlier_channel=5)


@pytest.fixture(scope="module")
def texts():
    return sentences(48, seed=1)


@pytest.mark.parametrize("block", [(1, 4), (4, 1), (2, 2)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8, 1.0])
def test_prune_layer_scope(model, block, sparsity):
    pruned = fdbert.prune(model, sparsity, block, scope="layer")
    for old, new in zip(model.weights.layers, pruned.weights.layers):
        for name in LINEARS:
            w, p = getattr(old, name).weight, getattr(new, name).weight
            s_old, s_new = block_scores(w, block), block_scores(p, block)
            zero = s_new == 0
            assert zero.sum() == int(np.floor(sparsity * zero.size))   # random weights: no zero blocks
            if zero.any() and (~zero).any():
                assert s_old[zero].max() <= s_old[~zero].min()          # the smallest blocks went
            kept = np.repeat(np.repeat(~zero, block[0], 0), block[1], 1)[:w.shape[0], :w.shape[1]]
            assert np.array_equal(p[kept], w[kept])                      # the rest is untouched
            assert np.array_equal(getattr(new, name).bias, getattr(old, name).bias)
    assert pruned.compression["pruning"] == {"method": "one-shot block magnitude (L2)",
                                             "sparsity": sparsity, "block": list(block), "scope": "layer"}
    assert "pruning" not in model.compression          # the input model is not modified


def test_prune_global_scope(model):
    pruned = fdbert.prune(model, 0.6, "1x4", scope="global")
    old = np.concatenate([block_scores(getattr(l, n).weight, (1, 4)).ravel()
                          for l in model.weights.layers for n in LINEARS])
    new = np.concatenate([block_scores(getattr(l, n).weight, (1, 4)).ravel()
                          for l in pruned.weights.layers for n in LINEARS])
    zero = new == 0
    assert zero.sum() == int(np.floor(0.6 * zero.size))
    assert old[zero].max() <= old[~zero].min()


def test_prune_rejects_bad_arguments(model):
    with pytest.raises(ValueError, match="sparsity"):
        fdbert.prune(model, 1.5)
    with pytest.raises(ValueError, match="scope"):
        fdbert.prune(model, 0.5, scope="row")
    with pytest.raises(ValueError, match="block"):
        fdbert.prune(model, 0.5, block="1x")


def test_calibration_minmax_sees_the_layer_inputs(model, texts):
    cal = calibrate(model, texts, progress=False, batch_size=len(texts))  # one batch, as below
    # independently: the input of layer 0's Q/K/V is the embedding output of every calibration token
    batch = model.tokenize(texts)
    c = model.config
    with fdbert.set_backend("reference"):   # calibration runs the reference ops
        x0 = embeddings(batch.input_ids, batch.positions, batch.token_type_ids, model.weights.embeddings,
                        c.layer_norm_eps)
    for name in ("q_lin", "k_lin", "v_lin"):
        assert np.array_equal(cal[(0, name)].channel_lo, x0.min(axis=0))
        assert np.array_equal(cal[(0, name)].channel_hi, x0.max(axis=0))
        assert cal[(0, name)].lo == x0.min() and cal[(0, name)].hi == x0.max()
    assert set(cal) == {(i, n) for i in range(c.n_layers) for n in LINEARS}


def test_calibrations_in_parallel_threads_do_not_collide(model, texts):
    """Each calibration registers its own recording backend (a per-run name), selected in its own
    context: two threads calibrating at once get what each gets alone."""
    from concurrent.futures import ThreadPoolExecutor
    halves = (texts[: len(texts) // 2], texts[len(texts) // 2:])
    alone = [calibrate(model, h, progress=False) for h in halves]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda h: calibrate(model, h, progress=False), halves * 3))
    for got, want in zip(together, alone * 3):
        assert got.keys() == want.keys()
        for key in want:
            assert (got[key].lo, got[key].hi) == (want[key].lo, want[key].hi), key
    assert not [n for n in fdbert.available_backends() if n.startswith("fdbert-calibration")]


def test_percentile_range_on_a_hand_made_histogram():
    hist = np.array([1] + [0] * 8 + [9998] + [0] * 89 + [1])  # 100 bins over [0, 100], 10,000 values
    # p = 99.99: the CDF first reaches .9999 in bin 9 -> hi = its right edge 10; counted from the top,
    # it reaches .9999 in bin 9 too -> lo = its left edge 9. The two lone values are clipped.
    assert percentile_range(hist, 0.0, 100.0, 99.99) == (9.0, 10.0)
    # p = 99.995 keeps both lone values: the CDF reaches .99995 only in the last bin
    assert percentile_range(hist, 0.0, 100.0, 99.995) == (0.0, 100.0)
    assert percentile_range(np.zeros(10, np.int64), -1.0, 1.0, 99.0) == (-1.0, 1.0)


def test_outlier_channels_are_found_and_kept_float(model, texts):
    cal = calibrate(model, texts, outlier_threshold=6.0, progress=False)
    assert 5 in cal[(0, "q_lin")].outliers.tolist()        # the channel scaled up 20x
    assert 5 not in calibrate(model, texts, progress=False)[(0, "q_lin")].outliers.tolist()
    q = fdbert.quantize(model, texts, progress=False, outlier_threshold=6.0)
    lin = q.weights.layers[0].q_lin
    assert 5 in lin.outliers.tolist() and not lin.dense_codes()[:, 5].any()


@pytest.mark.parametrize("method", ["minmax", "percentile"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_quantize_end_to_end(model, texts, method, sparsity):
    src = fdbert.prune(model, sparsity, (1, 4)) if sparsity else model
    q = fdbert.quantize(src, texts, method=method, percentile=99.9, progress=False)
    for layer in q.weights.layers:
        for name in LINEARS:
            lin = getattr(layer, name)
            assert isinstance(lin, QuantizedLinear)
            assert isinstance(lin.weight, BSRMatrix) == bool(sparsity)
        assert (layer.q_lin.x_scale, layer.q_lin.x_zero_point) == (layer.k_lin.x_scale, layer.k_lin.x_zero_point)
    e32 = src.encode(texts, normalize=True)
    e8 = q.encode(texts, normalize=True)
    cos = (e32 * e8).sum(axis=1)
    assert cos.mean() >= COMPRESS_TINY_MEAN_COSINE and cos.min() >= COMPRESS_TINY_MIN_COSINE
    rep = q.quantization_report
    assert len(rep.rows) == 6 * model.config.n_layers
    assert all(0 <= r.rel_err < 0.1 for r in rep.rows)
    if sparsity:
        assert all(r.block_sparsity >= sparsity for r in rep.rows)
    table = str(rep)
    assert "q_lin" in table and "rel err" in table and method in table
    assert rep.as_dicts()[0]["name"] == "q_lin"
    assert q.compression["quantization"]["method"] == method
    assert "quantization" not in src.compression


def test_quantize_refuses_a_quantized_model(model, texts):
    q = fdbert.quantize(model, texts[:4], progress=False, measure_error=False)
    with pytest.raises(ValueError, match="already quantized"):
        fdbert.quantize(q, texts[:4], progress=False)
    with pytest.raises(ValueError, match="already quantized"):
        fdbert.prune(q, 0.5)


def test_progress_without_tqdm_prints_to_stderr(model, texts, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    fdbert.quantize(model, texts[:8], progress=True, measure_error=False, batch_size=4)
    assert "calibrate" in capsys.readouterr().err


def test_cli_compress(model, texts, tmp_path):
    from fdbert.compress import cli
    src = tmp_path / "src"
    model.save(src)
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(texts[:16]) + "\n\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([str(src), str(tmp_path / "out"), "--sparsity", "0.5", "--block", "1x4",
                              "--calibration", str(calib), "--method", "percentile", "--no-progress"])
    assert cli.main(args) == 0
    out = fdbert.load(tmp_path / "out")
    assert out.compression["pruning"]["sparsity"] == 0.5
    assert out.compression["quantization"]["n_texts"] == 16
    assert isinstance(out.weights.layers[0].lin1.weight, BSRMatrix)
    assert [layer.attention for layer in out.weights.layers] == ["fp32"] * out.config.n_layers
    args = parser.parse_args([str(src), str(tmp_path / "out8"), "--calibration", str(calib),
                              "--attention", "int8", "--no-progress"])
    assert cli.main(args) == 0
    out8 = fdbert.load(tmp_path / "out8")
    assert [layer.attention for layer in out8.weights.layers] == ["int8"] * out8.config.n_layers
    assert out8.compression["quantization"]["attention"] == "int8"


def test_embedded_calibration_text_exists():
    from fdbert.compress.cli import DEFAULT_CALIBRATION, read_texts
    lines = read_texts(DEFAULT_CALIBRATION)
    assert len(lines) >= 2000 and all(lines)


@pytest.mark.slow
def test_minilm_int8_cosine_to_fp32(minilm, polarity_sentences):
    """docs/accuracy.md: dense INT8 normalised embeddings, mean cosine >= 0.995 to float32 (calibrated
    here on 128 Austen sentences to keep the test short; benchmarks/accuracy.py uses 512)."""
    f = SHARED_DATA / "austen_sentences.tsv"
    if not f.is_file():
        pytest.skip(f"{f} is absent")
    with open(f, newline="", encoding="utf-8") as fh:
        austen = [r["sentence"] for r in csv.DictReader(fh, delimiter="\t")]
    q = fdbert.quantize(minilm, austen[:128], progress=False, measure_error=False)
    e32 = minilm.encode(polarity_sentences, normalize=True)
    e8 = q.encode(polarity_sentences, normalize=True)
    cos = (e32 * e8).sum(axis=1)
    assert cos.mean() >= COMPRESS_MINILM_MEAN_COSINE, (cos.mean(), cos.min())


@pytest.mark.slow
def test_minilm_int8_attention_cosine_to_fp32(minilm, polarity_sentences):
    """docs/accuracy.md: float linears with INT8 attention (per-token codes, no calibration) keep
    the normalised embeddings within COMPRESS_MINILM_ATTENTION_MEAN_COSINE of float32."""
    from fdbert.compress._model import with_attention
    e32 = minilm.encode(polarity_sentences, normalize=True)
    e8 = with_attention(minilm, "int8").encode(polarity_sentences, normalize=True)
    cos = (e32 * e8).sum(axis=1)
    assert cos.mean() >= COMPRESS_MINILM_ATTENTION_MEAN_COSINE, (cos.mean(), cos.min())
