"""The fp32 reference encoder equals transformers' torch DistilBertModel and BertModel.

Random weights (see hf_oracle.randomize_), Hypothesis-drawn small configs, batches, lengths and both
padding sides; compared on real-token positions only (HF leaves garbage in padding rows).

Left padding: fdbert's positions count from 0 at each sequence's first real token (EET pre-padding
semantics: the output does not depend on padding); HF uses absolute columns unless given
``position_ids``, so left-padded batches are compared against HF called with
``position_ids = cumsum(mask) - 1`` clipped at 0 (hf_oracle.hf_position_ids).
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
from strategies import padded_batches, small_configs  # noqa: E402
from tolerances import FP32_CONDITIONING_FACTOR, FP32_MIN_D, HF_FP32_ATOL, HF_FP64_ATOL  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def max_error_on_real_tokens(ours, theirs, mask):  # [B, T, D], [B, T, D], [B, T] -> float
    real = mask.astype(bool)
    return float(np.abs(ours[real] - theirs[real]).max(initial=0.0))


@pytest.mark.parametrize("model_type", ["distilbert", "bert"])
@settings(max_examples=50, deadline=None)  # ~0.05 s each: a torch model built and saved
@given(data=st.data())
def test_reference_equals_hf_encoder(model_type, data):
    cfg = data.draw(small_configs(model_type).filter(lambda c: c.d_model >= FP32_MIN_D), label="config")
    batch = data.draw(padded_batches(cfg.vocab_size, cfg.max_positions, cfg.type_vocab_size),
                      label="batch")
    hf = hf_oracle.build(cfg)
    ours = hf_oracle.load_with_fdbert(hf)
    with fdbert.set_backend("reference", only=True):
        got = ours(batch.input_ids, batch.attention_mask,
                   batch.token_type_ids if model_type == "bert" else None)
    want = hf_oracle.run(hf, batch)
    assert got.shape == want.shape == (*batch.input_ids.shape, cfg.d_model)
    assert got.dtype == np.float32
    err = max_error_on_real_tokens(got, want, batch.attention_mask)
    if err <= HF_FP32_ATOL:
        return
    # above the bound: allowed only as far as this drawn model amplifies float32 rounding itself
    sens = hf_oracle.float32_sensitivity(hf_oracle.as_float64(ours), batch)
    assert err <= FP32_CONDITIONING_FACTOR * sens, \
        f"max |fdbert - HF| = {err:.3g} on real tokens ({batch.side} padding); float32 rounding alone moves " \
        f"this model by {sens:.3g}"


@pytest.mark.parametrize("model_type", ["distilbert", "bert"])
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_reference_in_float64_equals_hf_in_float64(model_type, data):
    """The same maths without float32 rounding, on every width D >= 1 (float32 draws need D >= 8)."""
    cfg = data.draw(small_configs(model_type), label="config")
    batch = data.draw(padded_batches(cfg.vocab_size, cfg.max_positions, cfg.type_vocab_size),
                      label="batch")
    hf = hf_oracle.build(cfg)
    ours = hf_oracle.as_float64(hf_oracle.load_with_fdbert(hf))
    with fdbert.set_backend("reference", only=True):
        got = ours(batch.input_ids, batch.attention_mask,
                   batch.token_type_ids if model_type == "bert" else None)
    want = hf_oracle.run(hf.double(), batch)
    assert got.dtype == want.dtype == np.float64
    err = max_error_on_real_tokens(got, want, batch.attention_mask)
    assert err <= HF_FP64_ATOL, f"max |fdbert - HF| = {err:.3g} in float64 ({batch.side} padding)"


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("model_type", ["distilbert", "bert"])
def test_tiny_checkpoint_equals_hf(tiny_hf_models, model_type, side, backend):
    """A fixed case always run: lengths 1, full, and in between, with token types for BERT; on the
    reference alone and on whatever `auto` picks here (native when built, reference for its gaps)."""
    from strategies import PaddedBatch, mask_for
    hf, path = tiny_hf_models[model_type]
    rng = np.random.default_rng(7)
    lengths = (1, 16, 9)
    ids = rng.integers(0, 50, size=(3, 16))
    tt = rng.integers(0, 2, size=(3, 16))
    batch = PaddedBatch(ids, mask_for(lengths, 16, side), tt, lengths, side)
    ours = fdbert.from_pretrained(path)
    with fdbert.set_backend(backend, only=backend == "reference"):
        got = ours(ids, batch.attention_mask, tt if model_type == "bert" else None)
    want = hf_oracle.run(hf, batch)
    assert max_error_on_real_tokens(got, want, batch.attention_mask) <= HF_FP32_ATOL


def test_bert_token_types_matter(tiny_hf_models):
    """The comparison above would not notice if both sides ignored token_type_ids; HF does not."""
    hf, path = tiny_hf_models["bert"]
    ours = fdbert.from_pretrained(path)
    ids = np.arange(1, 9)[None, :]
    a = ours(ids, None, np.zeros_like(ids))
    b = ours(ids, None, np.ones_like(ids))
    assert np.abs(a - b).max() > 1e-2


def test_bert_without_token_type_ids_means_segment_zero(tiny_hf_models):
    hf, path = tiny_hf_models["bert"]
    ours = fdbert.from_pretrained(path)
    ids = np.arange(1, 9)[None, :]
    np.testing.assert_array_equal(ours(ids), ours(ids, None, np.zeros_like(ids)))
