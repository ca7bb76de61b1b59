"""The native fused INT8 encoder block (fdbert_native.ops.encoder_layer) vs the reference INT8 block.

The fused op calls the same native kernels in the same order as the reference block
(fdbert.blocks.encoder.encoder_layer_int8) composed from dispatched native ops, so the two agree
bit for bit, on every thread count. Against the pure NumPy reference the usual float rounding of
LayerNorm / attention / GELU can flip a u8 code downstream, so the comparison there is a cosine per
token. Layers it cannot run (float, float outlier channels, Q/K/V with different input
quantization) are declined, and the reference then defines the result. Float outlier channels are
added exactly where the reference block adds them.
"""

import numpy as np
import pytest

import fdbert
import native_ext
from fdbert.backend import Declined
from fdbert.packing import pack_sequences
from fdbert.blocks.encoder import encoder_layer_int8
from int8_models import sentences, tiny_text_model

pytestmark = pytest.mark.native_only
native_ext.load()
import fdbert_native.ops as nops  # noqa: E402
native_ext.load("_qgemm")
from tolerances import ENCODER_LAYER_MIN_TOKEN_COSINE  # noqa: E402

def _hidden(model, batch):  # f32 [n, D]: the input of layer 0
    from fdbert.blocks.embeddings import embeddings
    w, c = model.weights, model.config
    return embeddings(batch.input_ids, batch.positions, batch.token_type_ids, w.embeddings,
                      c.layer_norm_eps)


def _compare(model, batch, exact_threads=(1, 2, 3)):
    c = model.config
    x = _hidden(model, batch)
    for layer in model.weights.layers:
        with fdbert.set_backend("native"):
            composed = encoder_layer_int8(x, batch.cu_seqlens, layer, c)   # dispatched native ops
        for nt in exact_threads:
            prev = fdbert.get_num_threads()
            fdbert.set_num_threads(nt)
            try:
                fused = nops.encoder_layer(x, batch.cu_seqlens, layer, c)
            finally:
                fdbert.set_num_threads(prev)
            np.testing.assert_array_equal(fused, composed)
        with fdbert.set_backend("reference"):
            ref = encoder_layer_int8(x, batch.cu_seqlens, layer, c)
        cos = (fused * ref).sum(1) / (np.linalg.norm(fused, axis=1) * np.linalg.norm(ref, axis=1))
        assert cos.min() >= ENCODER_LAYER_MIN_TOKEN_COSINE, cos.min()
        x = fused


@pytest.fixture(scope="module")
def tiny():
    return tiny_text_model(seed=11, n_layers=2, n_heads=2, head_dim=8, d_ffn=40)


@pytest.mark.parametrize("attention", ["fp32", "int8"])
@pytest.mark.parametrize("qkv_fused_max", [0, 10**9], ids=["qkv-three-gemms", "qkv-one-gemm"])
@pytest.mark.parametrize("sparsity", [None, 0.8])
def test_fused_block_equals_the_composed_native_block(tiny, sparsity, qkv_fused_max, attention,
                                                      monkeypatch):
    """Q, K and V as three linears or as one stacked GEMM (nops.QKV_FUSED_MAX_TOKENS) alike; float32
    or INT8 attention (the fused block's u8-output attention_int8 == attention_int8 + quantize_u8)."""
    monkeypatch.setattr(nops, "QKV_FUSED_MAX_TOKENS", qkv_fused_max)
    texts = sentences(24, seed=5)
    model = fdbert.prune(tiny, sparsity) if sparsity else tiny
    q = fdbert.quantize(model, texts, progress=False, outlier_threshold=None, measure_error=False,
                        attention=attention)
    assert all(layer.attention == attention for layer in q.weights.layers)
    for batch in (q.tokenize(texts[:1]), q.tokenize(texts[:9]), pack_sequences([[3] * 16] * 5)):
        _compare(q, batch)


def test_fused_sparse_block_on_amx_equals_the_spmm_block(tiny):
    """From AMX_AUTO_MIN_M tokens the fused block runs sparse weights on the dense AMX GEMM, Q, K
    and V as three calls: the same bits as the SpMM block (AMX disabled)."""
    import fdbert_native
    import fdbert_native._qgemm as qgemm
    texts = sentences(24, seed=7)
    q = fdbert.quantize(fdbert.prune(tiny, 0.8), texts, progress=False, outlier_threshold=None,
                        measure_error=False)
    batch = q.tokenize(texts[:9])
    if not qgemm.amx_auto(batch.cu_seqlens[-1], 16, 16):
        pytest.skip("AMX-INT8 is not usable here")
    x = _hidden(q, batch)
    with fdbert_native.disabled_cpu_features({"amx_int8"}):
        spmm = [nops.encoder_layer(x, batch.cu_seqlens, layer, q.config) for layer in q.weights.layers]
    amx = [nops.encoder_layer(x, batch.cu_seqlens, layer, q.config) for layer in q.weights.layers]
    assert all("native-dense" in layer.q_lin.packed for layer in q.weights.layers)
    for a, b in zip(amx, spmm):
        np.testing.assert_array_equal(a, b)


def test_the_model_runs_the_fused_block(tiny):
    texts = sentences(16, seed=6)
    q = fdbert.quantize(fdbert.prune(tiny, 0.8), texts, progress=False, outlier_threshold=None,
                        measure_error=False)
    batch = q.tokenize(texts)
    calls = []
    real = nops.encoder_layer

    def spy(*a, **k):
        out = real(*a, **k)
        calls.append(1)
        return out

    nops.encoder_layer = spy
    try:
        with fdbert.set_backend("native", only=True):   # every op of the forward pass is native
            got = q.forward_packed(batch)
    finally:
        nops.encoder_layer = real
    assert len(calls) == q.config.n_layers
    with fdbert.set_backend("reference"):
        ref = q.forward_packed(batch)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= ENCODER_LAYER_MIN_TOKEN_COSINE


@pytest.mark.parametrize("sparsity", [None, 0.8])
def test_passes_change_no_bit_on_the_native_backend(tiny, sparsity):
    """Native kernels compute each row independently of the others: splitting a batch into passes
    (Encoder.max_tokens_per_pass) gives the same bits."""
    texts = sentences(24, seed=8)
    model = fdbert.prune(tiny, sparsity) if sparsity else tiny
    q = fdbert.quantize(model, texts, progress=False, outlier_threshold=None, measure_error=False)
    batch = q.tokenize(texts[:12])
    with fdbert.set_backend("native"):
        q.max_tokens_per_pass = None
        whole = q.forward_packed(batch)
        q.max_tokens_per_pass = 25
        split = q.forward_packed(batch)
    np.testing.assert_array_equal(split, whole)


def test_layers_it_cannot_run_are_declined(tiny):
    texts = sentences(16, seed=7)
    batch = tiny.tokenize(texts[:3])
    x = _hidden(tiny, batch)
    c = tiny.config
    with pytest.raises(Declined, match="float layer"):
        nops.encoder_layer(x, batch.cu_seqlens, tiny.weights.layers[0], c)
    q2 = fdbert.quantize(tiny, texts, progress=False, outlier_threshold=None, measure_error=False)
    layer = q2.weights.layers[0]
    with pytest.raises(Declined, match="C-contiguous"):
        nops.encoder_layer(np.asfortranarray(x), batch.cu_seqlens, layer, c)
    with pytest.raises(Declined, match="cu_seqlens"):
        nops.encoder_layer(x, batch.cu_seqlens[:-1], layer, c)
    import dataclasses
    k_lin = dataclasses.replace(layer.k_lin, x_zero_point=(layer.k_lin.x_zero_point + 1) % 256)
    odd = dataclasses.replace(layer, k_lin=k_lin)
    with pytest.raises(Declined, match="different input quantization"):
        nops.encoder_layer(x, batch.cu_seqlens, odd, c)
    with fdbert.set_backend("native"), pytest.raises(ValueError, match="share their input"):
        fdbert.ops.encoder_layer(x, batch.cu_seqlens, odd, c)


@pytest.mark.parametrize("attention", ["fp32", "int8"])
@pytest.mark.parametrize("sparsity", [None, 0.8])
def test_fused_block_with_float_outlier_channels(sparsity, attention):
    texts = sentences(24, seed=8)
    model = tiny_text_model(seed=12, n_layers=2, n_heads=2, head_dim=8, d_ffn=40, outlier_channel=3)
    if sparsity:
        model = fdbert.prune(model, sparsity)
    q = fdbert.quantize(model, texts, progress=False, outlier_threshold=6.0, measure_error=False,
                        attention=attention)
    layers = q.weights.layers
    assert any(len(getattr(l, n).outliers) for l in layers for n in ("q_lin", "k_lin", "v_lin"))
    assert any(len(getattr(l, n).outliers) for l in layers for n in ("lin1", "lin2", "out_lin"))
    _compare(q, q.tokenize(texts[:7]))


@pytest.mark.slow
def test_fused_block_on_minilm(minilm, polarity_sentences):
    """Real all-MiniLM-L6-v2, INT8 dense and 80% 1x4 sparse, with and without float outlier channels:
    every layer bit-identical to the composed native block, cosine to the reference."""
    from pathlib import Path
    calib = Path(fdbert.__file__).parent.joinpath("data", "calibration.txt").read_text().splitlines()[:32]
    batch = minilm.tokenize(polarity_sentences[:8])
    for model, threshold in ((minilm, None), (fdbert.prune(minilm, 0.8), None), (minilm, 6.0),
                             (fdbert.prune(minilm, 0.8), 6.0)):
        q = fdbert.quantize(model, calib, progress=False, outlier_threshold=threshold,
                            measure_error=False)
        c = q.config
        x = _hidden(q, batch)
        for layer in q.weights.layers:
            with fdbert.set_backend("native"):
                composed = encoder_layer_int8(x, batch.cu_seqlens, layer, c)
            fused = nops.encoder_layer(x, batch.cu_seqlens, layer, c)
            np.testing.assert_array_equal(fused, composed)
            with fdbert.set_backend("reference"):
                ref = encoder_layer_int8(x, batch.cu_seqlens, layer, c)
            cos = (fused * ref).sum(1) / (np.linalg.norm(fused, axis=1) * np.linalg.norm(ref, axis=1))
            assert cos.min() >= ENCODER_LAYER_MIN_TOKEN_COSINE, cos.min()
            x = fused
