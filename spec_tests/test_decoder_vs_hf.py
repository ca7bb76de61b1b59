"""The fp32 reference decoders equal transformers' GPT2LMHeadModel and LlamaForCausalLM.

Random weights (hf_decoder_oracle.randomize_), Hypothesis-drawn small configs: GQA (Hkv dividing H),
head_dim apart from D / H, rope_theta, linear and llama3 rope_scaling, tied and untied heads, q/k/v/o
biases. Logits at every position of a prompt, and a greedy continuation against HF's generate (its own
KV cache) token for token.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="the [torch] extra (torch, transformers) is not installed")
pytest.importorskip("transformers", reason="the [torch] extra (torch, transformers) is not installed")

import fdbert  # noqa: E402
import hf_decoder_oracle as oracle  # noqa: E402
from strategies import SmallDecoderConfig, small_decoder_configs  # noqa: E402
from tolerances import DECODER_HF_ATOL, DECODER_HF_RTOL  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def assert_logits_close(got, want, what):
    assert got.shape == want.shape and got.dtype == np.float32
    row_scale = np.maximum(np.abs(want).max(axis=-1, keepdims=True), 1.0)   # [T, 1]
    bound = DECODER_HF_ATOL * row_scale + DECODER_HF_RTOL * np.abs(want)
    excess = np.abs(got - want) - bound
    assert excess.max() <= 0, (f"{what}: max |fdbert - HF| = {np.abs(got - want).max():.3g} "
                               f"(bound {DECODER_HF_ATOL} max(1, max |HF| of the row) + "
                               f"{DECODER_HF_RTOL} |HF|)")


@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_logits_equal_hf(model_type, backend, data):
    cfg = data.draw(small_decoder_configs(model_type), label="config")
    ids = data.draw(st.lists(st.integers(0, cfg.vocab_size - 1), min_size=1, max_size=20), label="ids")
    hf = oracle.build(cfg)
    lm = oracle.to_fdbert(hf)
    with fdbert.set_backend(backend):
        got = lm.logits(ids)
    assert_logits_close(got, oracle.hf_logits(hf, ids), f"{cfg}")


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_greedy_equals_hf_generate(model_type):
    cfg = SmallDecoderConfig(model_type, n_layers=2, n_heads=4, n_kv_heads=2 if model_type == "llama" else 4,
                                    head_dim=8, d_ffn=48, vocab_size=64, max_positions=64, seed=3)
    hf = oracle.build(cfg)
    lm = oracle.to_fdbert(hf)
    lm.eos_token_ids = frozenset()  # random weights: run the full 12 tokens, as HF with eos_token_id=None
    prompts = [[5], [1, 2, 3, 4, 5, 6, 7], [60, 3, 9]]
    got = lm.generate(prompts, max_new_tokens=12)
    for prompt, completion in zip(prompts, got):
        assert completion.token_ids == oracle.hf_greedy(hf, prompt, 12), prompt
        assert completion.finish_reason == "length"


def test_llama_config_translation():
    """DecoderConfig.from_hf reads the fields HF writes (rope_parameters of transformers 5)."""
    cfg = SmallDecoderConfig("llama", 1, 4, 2, 8, 16, 20, 64, rope_theta=500.0,
                                    rope_scaling=(("factor", 2.0), ("rope_type", "linear")))
    c = fdbert.DecoderConfig.from_hf(oracle.hf_config(cfg).to_dict())
    assert (c.n_heads, c.n_kv_heads, c.head_dim, c.rope_theta) == (4, 2, 8, 500.0)
    assert c.rope_scaling["rope_type"] == "linear" and c.rope_scaling["factor"] == 2.0


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("safe", [True, False])
def test_checkpoint_directory(tmp_path, model_type, safe):
    """save_pretrained (safetensors or pytorch_model.bin) -> fdbert.from_pretrained -> the same logits."""
    cfg = SmallDecoderConfig(model_type, 2, 4, 2 if model_type == "llama" else 4, 8, 24, 50, 32, tie=False
                                    if model_type == "llama" else True, seed=9)
    hf = oracle.build(cfg)
    try:
        hf.save_pretrained(tmp_path, safe_serialization=safe)
    except TypeError:
        pytest.skip("this transformers writes safetensors only")
    lm = fdbert.from_pretrained(tmp_path)
    assert isinstance(lm, fdbert.Decoder) and lm.tokenizer is None and lm.unused_tensors == []
    ids = [1, 2, 3, 40]
    with fdbert.set_backend("reference", only=True):
        assert_logits_close(lm.logits(ids), oracle.hf_logits(hf, ids), "checkpoint")


def test_checkpoint_config_missing_a_field(tmp_path):
    import json
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(fdbert.CorruptModelError, match="config lacks"):
        fdbert.from_pretrained(tmp_path)
