"""GGUF: block dequantization (hand-made blocks with known values, and the `gguf` package's own
NumPy dequantizer as an independent implementation), the q/k row permutation, a tiny Llama written as
GGUF and read back, and one-line errors for missing, corrupt and unsupported files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fdbert
from decoder_models import random_decoder
from fdbert.errors import CorruptModelError, ModelNotFoundError, UnsupportedModelError
from fdbert.gguf import unpermute_rope_rows
from fdbert.gguf_quants import dequantize

gguf = pytest.importorskip("gguf")
T = gguf.GGMLQuantizationType


def f16_bytes(x):
    return np.array([x], np.float16).tobytes()


def test_q8_0_block():
    """x_j = d q_j"""
    q = np.arange(-128, 128, 8, dtype=np.int8)                      # 32 codes
    raw = f16_bytes(0.5) + q.tobytes()
    np.testing.assert_array_equal(dequantize(raw, "Q8_0", (32,)), 0.5 * q.astype(np.float32))


def test_q4_0_block():
    """x_j = d (q_j - 8), low nibbles first"""
    qs = np.full(16, 0x1F, np.uint8)                                # low nibble 15, high nibble 1
    x = dequantize(f16_bytes(2.0) + qs.tobytes(), "Q4_0", (1, 32))
    np.testing.assert_array_equal(x[0, :16], 14.0)
    np.testing.assert_array_equal(x[0, 16:], -14.0)


def test_q4_1_block():
    """x_j = d q_j + m"""
    qs = (np.arange(16, dtype=np.uint8) | (np.uint8(0xF0))).astype(np.uint8)   # low j, high 15
    x = dequantize(f16_bytes(0.25) + f16_bytes(-1.0) + qs.tobytes(), "Q4_1", (32,))
    np.testing.assert_array_equal(x[:16], 0.25 * np.arange(16) - 1.0)
    np.testing.assert_array_equal(x[16:], 0.25 * 15 - 1.0)


def test_f16_bf16_f32():
    assert dequantize(np.array([0x3F80, 0xC000], np.uint16).tobytes(), "BF16", (2,)).tolist() == [1.0, -2.0]
    assert dequantize(np.array([1.5, -0.25], np.float16).tobytes(), "F16", (2,)).tolist() == [1.5, -0.25]
    assert dequantize(np.array([3.0], np.float32).tobytes(), "F32", (1,)).tolist() == [3.0]


def test_wrong_size_is_refused():
    with pytest.raises(ValueError, match="Q8_0 tensor of shape"):
        dequantize(b"\0" * 33, "Q8_0", (32,))


@pytest.mark.parametrize("fmt", ["Q4_0", "Q4_1", "Q8_0", "F16", "BF16", "F32"])
@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 5), blocks=st.integers(1, 4), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1e-3, 1.0, 300.0]))
def test_dequantize_equals_gguf_package(fmt, rows, blocks, seed, scale):
    x = (np.random.default_rng(seed).standard_normal((rows, 32 * blocks)) * scale).astype(np.float32)
    raw = gguf.quants.quantize(x, T[fmt])
    want = gguf.quants.dequantize(raw, T[fmt]).astype(np.float32)
    np.testing.assert_array_equal(dequantize(raw, fmt, x.shape), want)


def permute_like_llama_cpp(w, n_head):  # convert_hf_to_gguf.py's LlamaModel.permute, written out
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llama_cpp_permute():
    w = np.arange(3 * 8 * 5, dtype=np.float32).reshape(24, 5)
    np.testing.assert_array_equal(unpermute_rope_rows(permute_like_llama_cpp(w, 3), 3), w)


# ---- a tiny Llama written as GGUF and read back ------------------------------------------------------
TOKENS = ["<unk>", "<s>", "</s>", *[chr(c) for c in range(ord("a"), ord("z") + 1)], "Ġ", "ab", "Ġa"]
MERGES = ["a b", "Ġ a"]


def write_tiny_gguf(path, lm, fmt="F32", arch="llama"):
    c = lm.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.n_layers)
    w.add_context_length(c.max_positions)
    w.add_embedding_length(c.d_model)
    w.add_feed_forward_length(c.d_ffn)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_rope_dimension_count(c.head_dim)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(TOKENS)
    w.add_token_types([3 if t.startswith("<") else 1 for t in TOKENS])
    w.add_token_merges(MERGES)
    w.add_eos_token_id(2)
    w.add_bos_token_id(1)
    w.add_chat_template("{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}")

    def put(name, a):
        a = np.ascontiguousarray(a, np.float32)
        if fmt != "F32" and a.ndim == 2:
            q = gguf.quants.quantize(a, T[fmt])
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=T[fmt])
        else:
            w.add_tensor(name, a)
    ws = lm.weights
    put("token_embd.weight", ws.embed_tokens)
    put("output_norm.weight", ws.norm)
    if not c.tie_word_embeddings:
        put("output.weight", ws.lm_head.weight)
    for i, l in enumerate(ws.layers):
        put(f"blk.{i}.attn_norm.weight", l.input_layernorm)
        put(f"blk.{i}.attn_q.weight", permute_like_llama_cpp(l.q_proj.weight, c.n_heads))
        put(f"blk.{i}.attn_k.weight", permute_like_llama_cpp(l.k_proj.weight, c.n_kv_heads))
        put(f"blk.{i}.attn_v.weight", l.v_proj.weight)
        put(f"blk.{i}.attn_output.weight", l.o_proj.weight)
        put(f"blk.{i}.ffn_norm.weight", l.post_attention_layernorm)
        put(f"blk.{i}.ffn_gate.weight", l.gate_proj.weight)
        put(f"blk.{i}.ffn_up.weight", l.up_proj.weight)
        put(f"blk.{i}.ffn_down.weight", l.down_proj.weight)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny_llama(tie=True):
    cfg = fdbert.DecoderConfig("llama", vocab_size=len(TOKENS), d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                               d_ffn=64, max_positions=32, rope_theta=500.0, tie_word_embeddings=tie)
    return random_decoder(cfg, 5)


@pytest.mark.parametrize("tie", [True, False])
def test_tiny_llama_gguf_round_trip(tmp_path, tie):
    lm = tiny_llama(tie)
    path = write_tiny_gguf(tmp_path / "tiny.gguf", lm)
    got = fdbert.from_pretrained(path)
    assert isinstance(got, fdbert.Decoder) and got.config.tie_word_embeddings == tie
    ids = [3, 5, 7, 30, 2, 9]
    # an F32 file holds the model's own float32 weights, and unpermuting the q/k rows is a permutation:
    # the same ops on the same numbers, so the same bits
    with fdbert.set_backend("reference", only=True):
        np.testing.assert_array_equal(got.logits(ids), lm.logits(ids))
    tok = got.tokenizer
    assert tok.encode("ab a") == [30, 31] and tok.decode([30, 31]) == "ab a"
    assert tok.encode("</s>") == [2] and tok.eos_token_id == 2
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "<s>hi</s>"


def test_quantized_tiny_llama_gguf_reads_the_dequantized_weights(tmp_path):
    lm = tiny_llama()
    got = fdbert.from_pretrained(write_tiny_gguf(tmp_path / "q.gguf", lm, fmt="Q8_0"))
    want = gguf.quants.dequantize(gguf.quants.quantize(lm.weights.layers[1].gate_proj.weight, T.Q8_0), T.Q8_0)
    np.testing.assert_array_equal(got.weights.layers[1].gate_proj.weight, want)


# ---- errors ----------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        fdbert.from_pretrained(tmp_path / "nope.gguf")


def test_not_a_gguf_file(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"PK\x03\x04 not gguf at all")
    with pytest.raises(CorruptModelError, match="not a GGUF file"):
        fdbert.from_pretrained(f)


def test_truncated_gguf(tmp_path):
    path = write_tiny_gguf(tmp_path / "t.gguf", tiny_llama())
    data = path.read_bytes()
    for cut in (10, len(data) // 3, len(data) - 100):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(CorruptModelError):
            fdbert.from_pretrained(tmp_path / "cut.gguf")


def test_unsupported_architecture(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "b.gguf"), "bert")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(UnsupportedModelError, match="architecture 'bert' is not supported"):
        fdbert.from_pretrained(tmp_path / "b.gguf")


def test_unsupported_tensor_format(tmp_path):
    lm = tiny_llama()
    lm.weights.layers[0].up_proj.weight = np.zeros((64, 256), np.float32)  # Q5_1 needs 32-column blocks
    with pytest.raises(UnsupportedModelError, match="Q5_1; supported formats"):
        fdbert.from_pretrained(write_tiny_gguf(tmp_path / "q5.gguf", lm, fmt="Q5_1"))
