"""Every mistake a user can make gets its own exception type and a message naming what was expected
and what was found. Each test asserts the type AND the message's key words.

Checkpoints are damaged copies of a real (tiny, random) DistilBERT saved by transformers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import fdbert

pytest.importorskip("safetensors")
from safetensors.numpy import load_file, save_file  # noqa: E402

# the tiny checkpoints: V = 50 words, 16 positions, D = 16 (conftest.tiny_config)
V, P, D = 50, 16, 16


def edit_config(d, **changes):
    f = d / "config.json"
    cfg = json.loads(f.read_text())
    cfg.update(changes)
    f.write_text(json.dumps(cfg))


def edit_tensors(d, fn):
    f = d / "model.safetensors"
    tensors = load_file(str(f))
    fn(tensors)
    save_file(tensors, str(f))


@pytest.fixture(scope="module")
def model(tiny_hf_models):
    return fdbert.from_pretrained(tiny_hf_models["distilbert"][1])


# ---- the model directory -------------------------------------------------------------------------
def test_missing_directory(tmp_path):
    with pytest.raises(fdbert.ModelNotFoundError, match=r"model directory .*nowhere.* does not exist") as e:
        fdbert.from_pretrained(tmp_path / "nowhere")
    assert isinstance(e.value, FileNotFoundError)  # generic handlers keep working


def test_a_file_instead_of_a_directory(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    with pytest.raises(fdbert.ModelNotFoundError, match="is not a directory"):
        fdbert.from_pretrained(f)


def test_no_config_json(tiny_model_dir):
    (tiny_model_dir / "config.json").unlink()
    with pytest.raises(fdbert.ModelNotFoundError, match="no config.json"):
        fdbert.from_pretrained(tiny_model_dir)


def test_config_json_that_is_not_json(tiny_model_dir):
    (tiny_model_dir / "config.json").write_text("{'model_type': distilbert")
    with pytest.raises(fdbert.CorruptModelError, match="config.json: not valid JSON"):
        fdbert.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("model_type", ["t5", "roberta", None])
def test_unsupported_model_type_names_the_supported_ones(tiny_model_dir, model_type):
    edit_config(tiny_model_dir, model_type=model_type)
    with pytest.raises(fdbert.UnsupportedModelError,
                       match=rf"model_type {model_type!r} is not supported; supported: distilbert, bert") as e:
        fdbert.from_pretrained(tiny_model_dir)
    assert isinstance(e.value, ValueError)


def test_decoder_model_type_with_encoder_weights(tiny_model_dir):
    """gpt2 is a decoder now: a DistilBERT checkpoint relabelled gpt2 is missing its tensors."""
    edit_config(tiny_model_dir, model_type="gpt2", n_embd=16, n_layer=2, n_head=4, n_positions=16, vocab_size=50)
    with pytest.raises(fdbert.CorruptModelError, match="no gpt2 token embedding found"):
        fdbert.from_pretrained(tiny_model_dir)


def test_unsupported_activation(tiny_model_dir):
    edit_config(tiny_model_dir, activation="relu")
    with pytest.raises(fdbert.UnsupportedModelError, match="activation 'relu' is not supported; supported: gelu"):
        fdbert.from_pretrained(tiny_model_dir)


def test_width_not_a_multiple_of_heads(tiny_model_dir):
    edit_config(tiny_model_dir, n_heads=3)
    with pytest.raises(fdbert.UnsupportedModelError, match="d_model 16 is not a multiple of n_heads 3"):
        fdbert.from_pretrained(tiny_model_dir)


def test_bert_relative_positions_are_unsupported(tiny_hf_models, tmp_path):
    import shutil
    d = tmp_path / "bert"
    shutil.copytree(tiny_hf_models["bert"][1], d)
    edit_config(d, position_embedding_type="relative_key")
    with pytest.raises(fdbert.UnsupportedModelError, match="position_embedding_type 'relative_key'.*absolute"):
        fdbert.from_pretrained(d)


# ---- the weights file ----------------------------------------------------------------------------
def test_missing_weights_file(tiny_model_dir):
    (tiny_model_dir / "model.safetensors").unlink()
    with pytest.raises(fdbert.ModelNotFoundError, match="no weights found.*model.safetensors"):
        fdbert.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("keep", [0.5, 0.99, 4])
def test_truncated_safetensors_file(tiny_model_dir, keep):
    """A real file cut short: in the tensor data, in its last bytes, and inside the header length."""
    f = tiny_model_dir / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:keep] if isinstance(keep, int) else data[:int(len(data) * keep)])
    with pytest.raises(fdbert.CorruptModelError, match="cannot read safetensors file.*truncated or corrupt"):
        fdbert.from_pretrained(tiny_model_dir)


def test_garbage_safetensors_file(tiny_model_dir):
    (tiny_model_dir / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(fdbert.CorruptModelError, match="truncated or corrupt"):
        fdbert.from_pretrained(tiny_model_dir)


def test_a_tensor_with_the_wrong_shape(tiny_model_dir):
    key = "transformer.layer.1.ffn.lin1.weight"  # [F, D] = [24, 16]

    def transpose(t):
        t[key] = np.ascontiguousarray(t[key].T)

    edit_tensors(tiny_model_dir, transpose)
    with pytest.raises(fdbert.WeightShapeError,
                       match=rf"tensor '{key}' has shape \(16, 24\), expected \(24, 16\) from config.json"):
        fdbert.from_pretrained(tiny_model_dir)


def test_a_config_that_disagrees_with_the_tensors(tiny_model_dir):
    edit_config(tiny_model_dir, vocab_size=V + 1)
    with pytest.raises(fdbert.WeightShapeError,
                       match=rf"'embeddings.word_embeddings.weight' has shape \({V}, {D}\), expected \({V + 1}, {D}\)"):
        fdbert.from_pretrained(tiny_model_dir)


def test_a_missing_tensor(tiny_model_dir):
    edit_tensors(tiny_model_dir, lambda t: t.pop("transformer.layer.0.attention.v_lin.bias"))
    with pytest.raises(fdbert.CorruptModelError,
                       match=r"tensor transformer.layer.0.attention.v_lin.bias is missing from the checkpoint"):
        fdbert.from_pretrained(tiny_model_dir)


def test_a_missing_layer(tiny_model_dir):
    edit_config(tiny_model_dir, n_layers=3)
    with pytest.raises(fdbert.CorruptModelError, match=r"transformer.layer.2.attention.q_lin.weight is missing"):
        fdbert.from_pretrained(tiny_model_dir)


def test_no_embeddings_at_all(tiny_model_dir):
    edit_tensors(tiny_model_dir, lambda t: t.pop("embeddings.word_embeddings.weight"))
    with pytest.raises(fdbert.CorruptModelError, match="no distilbert embeddings found"):
        fdbert.from_pretrained(tiny_model_dir)


# ---- inputs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-1, V, V + 1000])
def test_token_ids_out_of_range(model, bad):
    ids = np.array([[1, 2, bad, 3]])
    with pytest.raises(fdbert.TokenIdError,
                       match=rf"token id {bad} is out of range: expected 0 <= id < vocab_size {V}"):
        model(ids)


def test_out_of_range_ids_under_the_padding_are_ignored(model):
    """Padding is not looked up, so its ids may be anything (e.g. -100, a common ignore index)."""
    out = model(np.array([[1, 2, -100]]), np.array([[1, 1, 0]]))
    np.testing.assert_array_equal(out[:, :2], model(np.array([[1, 2]])))


def test_token_type_ids_out_of_range(tiny_hf_models):
    bert = fdbert.from_pretrained(tiny_hf_models["bert"][1])  # type_vocab_size 2
    with pytest.raises(fdbert.TokenIdError, match=r"token_type_ids must lie in \[0, 2\), found 2"):
        bert(np.array([[1, 2, 3]]), None, np.array([[0, 1, 2]]))


@pytest.mark.parametrize("mask_shape", [(2, 5), (1, 4), (4,)])
def test_input_ids_and_attention_mask_shapes_disagree(model, mask_shape):
    with pytest.raises(fdbert.ShapeError, match=r"attention_mask: expected the shape of input_ids \(2, 4\)"):
        model(np.ones((2, 4), np.int64), np.ones(mask_shape, np.int64))


def test_input_ids_and_token_type_ids_shapes_disagree(model):
    with pytest.raises(fdbert.ShapeError, match=r"token_type_ids: expected the shape of input_ids \(2, 4\)"):
        model(np.ones((2, 4), np.int64), None, np.zeros((2, 3), np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_, np.complex64])
def test_input_ids_of_a_non_integer_dtype(model, dtype):
    with pytest.raises(fdbert.DTypeError, match=rf"input_ids: expected a signed integer dtype or an unsigned "
                                                rf"integer dtype, got dtype {np.dtype(dtype)}") as e:
        model(np.ones((1, 4), dtype))
    assert isinstance(e.value, TypeError)


def test_attention_mask_of_a_float_dtype(model):
    with pytest.raises(fdbert.DTypeError, match="attention_mask: expected .*got dtype float32"):
        model(np.ones((1, 4), np.int64), np.ones((1, 4), np.float32))


@pytest.mark.parametrize("shape", [(4,), (), (1, 2, 4)])
def test_input_ids_that_are_not_2d(model, shape):
    with pytest.raises(fdbert.ShapeError, match=rf"input_ids: expected a 2-D array \[batch, seq_len\], got shape "
                                                rf"{re_escape(shape)}"):
        model(np.ones(shape, np.int64))


def re_escape(shape):
    import re
    return re.escape(str(tuple(shape)))


def test_a_sequence_longer_than_max_positions(model):
    with pytest.raises(fdbert.ShapeError, match=rf"a sequence has {P + 1} tokens, more than the model's "
                                                rf"max_position_embeddings {P}"):
        model(np.ones((2, P + 1), np.int64), np.array([[1] * 3 + [0] * (P - 2), [1] * (P + 1)]))


def test_padding_does_not_count_towards_max_positions(model):
    """T may exceed the position table when the real tokens fit: positions count real tokens only."""
    T = P + 5
    out = model(np.ones((1, T), np.int64), np.array([[0] * 5 + [1] * P]))
    assert out.shape == (1, T, D)


def test_encode_without_a_tokenizer(model):
    assert model.tokenizer is None  # transformers' save_pretrained of a model writes no tokenizer
    with pytest.raises(fdbert.FdbertError, match="no tokenizer"):
        model.encode(["hello"])


def test_every_error_is_an_fdbert_error():
    for cls in (fdbert.BackendError, fdbert.CorruptModelError, fdbert.DTypeError, fdbert.ModelNotFoundError,
                fdbert.ShapeError, fdbert.TokenIdError, fdbert.UnsupportedModelError, fdbert.WeightShapeError):
        assert issubclass(cls, fdbert.FdbertError)
