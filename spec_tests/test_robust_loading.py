"""fdbert.load and fdbert.from_pretrained either return exactly the model that was saved, or raise an
fdbert error naming the file and the field (docs/robustness.md).

The examples first (each edit of issue 15 that used to load as another model or fail with a raw
Python error), then a Hypothesis fuzzer: truncations, byte flips and digit edits of fdbert.json,
model.safetensors and, on the Hugging Face path, config.json and its safetensors file, with and
without recomputed checksums.
"""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fdbert
from fdbert.errors import ConfigError, CorruptModelError, FdbertError
from fdbert.serialization import META_FILE, TENSOR_FILE, _meta_checksum
from int8_models import sentences, tiny_text_model
from strategies import damage


@pytest.fixture(scope="module")
def texts():
    return sentences(12, seed=4)


@pytest.fixture(scope="module")
def saved_models(texts, tmp_path_factory):
    """kind -> (model, directory): a float BERT with a tokenizer, and an INT8 1x4-sparse one with
    outlier channels and INT8 attention."""
    base = tiny_text_model(seed=11, outlier_channel=1)
    q = fdbert.quantize(fdbert.prune(base, 0.6, (1, 4)), texts, progress=False, measure_error=False,
                        attention="int8")
    out = {}
    for kind, m in (("float", base), ("int8-sparse", q)):
        d = tmp_path_factory.mktemp(kind)
        m.save(d)
        out[kind] = (m, d)
    return out


@pytest.fixture
def saved(saved_models, tmp_path):
    """A private copy of the saved INT8 sparse model, free to damage."""
    d = tmp_path / "m"
    shutil.copytree(saved_models["int8-sparse"][1], d)
    return d


def edit_meta(d, fn, rehash=True):
    """Apply fn to fdbert.json's dict and write it back; rehash: recompute the metadata checksum, as a
    careful forger would (only the schema and shape checks stand between the edit and a load)."""
    meta = json.loads((d / META_FILE).read_text())
    fn(meta)
    if rehash:
        meta["checksum"] = _meta_checksum(meta)
    (d / META_FILE).write_text(json.dumps(meta))


def rehash_files(d):
    """Recompute every SHA-256 of fdbert.json (files, then the metadata's own), if it still parses."""
    try:
        meta = json.loads((d / META_FILE).read_bytes())
        if isinstance(meta.get("files"), dict):
            meta["files"] = {k: hashlib.sha256((d / k).read_bytes()).hexdigest() if (d / k).is_file() else v
                             for k, v in meta["files"].items()}
        meta["checksum"] = _meta_checksum(meta)
    except Exception:   # not a JSON object any more: nothing to recompute
        return
    (d / META_FILE).write_text(json.dumps(meta))


def edit_tensors(d, fn):
    """Apply fn to the dict of model.safetensors' tensors, write it back and recompute the checksums."""
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(d / TENSOR_FILE))
    fn(tensors)
    save_file(tensors, str(d / TENSOR_FILE), metadata={"format": "np"})
    rehash_files(d)


def assert_same_model(r, m, texts):
    assert r.config == m.config and r.pooling == m.pooling and r.name == m.name
    with fdbert.set_backend("reference"):
        assert np.array_equal(r.encode(texts), m.encode(texts))


# ---- class 1 examples: fdbert.json edits with a recomputed checksum ---------------------------------
@pytest.mark.parametrize("field, value, match", [
    ("n_heads", 0, r"config\.n_heads"),
    ("n_heads", -2, r"config\.n_heads"),
    ("n_heads", 3, "not a multiple of n_heads"),
    ("n_heads", 2.0, r"config\.n_heads.*integer"),
    ("n_heads", True, r"config\.n_heads.*integer"),
    ("vocab_size", 0, r"config\.vocab_size"),
    ("d_model", 10 ** 30, r"config\.d_model"),
    ("layer_norm_eps", 0, r"config\.layer_norm_eps"),
    ("layer_norm_eps", "1e-12", r"config\.layer_norm_eps"),
    ("max_positions", 0, r"config\.max_positions"),
    ("pad_token_id", 10 ** 6, "pad_token_id"),
    ("model_type", "gpt2", "not supported"),
    ("activation", "relu", "not supported"),
    ("n_layers", 3, "field 'attention'"),
    ("n_layers", 1, "field 'attention'"),
    ("type_vocab_size", 0, "unexpected tensor 'embeddings.token_type_embeddings'"),
    ("type_vocab_size", 3, "token_type_embeddings.*expected float32 \\(3, 16\\)"),
    ("max_positions", 8, "position_embeddings.*expected float32 \\(8, 16\\)"),
])
def test_a_config_field_edit_names_the_field(saved, field, value, match):
    edit_meta(saved, lambda m: m["config"].__setitem__(field, value))
    with pytest.raises(FdbertError, match=match) as e:
        fdbert.load(saved)
    assert str(saved / META_FILE) in str(e.value) or str(saved / TENSOR_FILE) in str(e.value)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.__setitem__("linears", []), "field 'linears': expected a JSON object"),
    (lambda m: m.__setitem__("linears", {}), "no entry for 'layers.0.q_lin.'"),
    (lambda m: m["linears"]["layers.0.lin1."].__setitem__("blocksize", [1, 0]), r"blocksize"),
    (lambda m: m["linears"]["layers.0.lin1."].__setitem__("blocksize", [1, 8]), r"lin1\.data"),
    (lambda m: m["linears"]["layers.0.lin1."].__setitem__("kind", "int4"), r"lin1\.kind"),
    (lambda m: m["linears"]["layers.0.lin1."].__setitem__("shape", [40, 8]), r"lin1\.shape"),
    (lambda m: m["linears"]["layers.0.lin1."].__setitem__("extra", 1), "unknown key"),
    (lambda m: m["linears"].__setitem__("heads.pre_classifier.", {"kind": "float", "shape": [16, 16],
                                                                  "bias": True}), "unexpected entry"),
    (lambda m: m["pooling"].__setitem__("mode", "max"), r"pooling\.mode.*'max'"),
    (lambda m: m["pooling"].__setitem__("normalize", "yes"), r"pooling\.normalize"),
    (lambda m: m["pooling"].__setitem__("extra", 1), "unknown key"),
    (lambda m: m.__setitem__("attention", ["int8"]), "attention"),
    (lambda m: m.__setitem__("attention", ["fp16", "int8"]), "attention"),
    (lambda m: m.__setitem__("surprise", 1), "unknown key"),
    (lambda m: m.pop("config"), "missing key 'config'"),
    (lambda m: m.__setitem__("tokenizer_max_length", 0), "tokenizer_max_length"),
    (lambda m: m.__setitem__("tokenizer_max_length", None), "tokenizer_max_length"),
    (lambda m: m["files"].__setitem__("model.safetensors", "00"), r"files\.model\.safetensors"),
    (lambda m: m["files"].__setitem__("other.bin", "0" * 64), "'files'"),
    (lambda m: m.__setitem__("compression", []), "compression"),
    (lambda m: m.__setitem__("external", {"embeddings.word_embeddings": {"package": "x"}}), "external"),
])
def test_a_metadata_edit_names_the_field(saved, edit, match):
    edit_meta(saved, edit)
    with pytest.raises(CorruptModelError, match=match):
        fdbert.load(saved)


@pytest.mark.parametrize("edit", [
    lambda m: m["config"].__setitem__("n_heads", 1),            # 2 -> 1: valid, another model
    lambda m: m["config"].__setitem__("layer_norm_eps", 1e-5),
    lambda m: m["pooling"].__setitem__("mode", "cls"),
    lambda m: m["pooling"].__setitem__("normalize", True),
    lambda m: m.__setitem__("attention", ["fp32", "fp32"]),
    lambda m: m.__setitem__("name", "another"),
    lambda m: m["compression"].__setitem__("note", 1),
])
def test_a_valid_edit_without_the_checksum_is_refused(saved, edit):
    """The edits that used to load silently as another model: only the metadata checksum sees them."""
    edit_meta(saved, edit, rehash=False)
    with pytest.raises(CorruptModelError, match="field 'checksum'"):
        fdbert.load(saved)


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.__setitem__("embeddings.position_embeddings", t["embeddings.position_embeddings"][:8]),
     "position_embeddings.*expected float32 \\(16, 16\\)"),
    (lambda t: t.__setitem__("embeddings.layer_norm.weight", np.ones(1, np.float32)), "layer_norm.weight"),
    (lambda t: t.__setitem__("layers.0.sa_layer_norm.bias", np.ones((16, 1), np.float32)), "sa_layer_norm"),
    (lambda t: t.pop("embeddings.token_type_embeddings"), "token_type_embeddings' is missing"),
    (lambda t: t.pop("layers.1.lin2.x_scale"), "x_scale' is missing"),
    (lambda t: t.__setitem__("layers.0.extra", np.ones(1, np.float32)), "unexpected tensor 'layers.0.extra'"),
    (lambda t: t.__setitem__("layers.0.q_lin.x_zero_point", np.array([300], np.int32)), "zero_point"),
    (lambda t: t.__setitem__("layers.0.q_lin.x_scale", np.array([0], np.float32)), "scale"),
    (lambda t: t.__setitem__("layers.0.q_lin.w_scale", -t["layers.0.q_lin.w_scale"]), "w_scale"),
    (lambda t: t["layers.0.lin1.indices"].__setitem__(0, 99), "indices"),
    (lambda t: t["layers.0.lin1.indptr"].__setitem__(1, -1), "indptr"),
    (lambda t: t["layers.0.lin1.data"].__setitem__((0, 0, 0), -128), "-128"),
    (lambda t: t["embeddings.word_embeddings"].__setitem__((3, 1), np.nan), "NaN"),
    (lambda t: t.__setitem__("embeddings.word_embeddings", t["embeddings.word_embeddings"].astype(np.float64)),
     "word_embeddings.*float64"),
    (lambda t: t.__setitem__("layers.0.lin2.outliers", np.zeros(0, np.int32)), "outlier"),
])
def test_a_tensor_that_disagrees_with_the_config_is_refused_before_building(saved, edit, match):
    edit_tensors(saved, edit)
    with pytest.raises(CorruptModelError, match=match):
        fdbert.load(saved)


def test_minilm_with_n_heads_6_is_refused(minilm, tmp_path, texts):
    """Issue 15's first example, on the real model: n_heads 12 -> 6 loaded as another model."""
    d = minilm.save(tmp_path / "minilm")
    assert_same_model(fdbert.load(d), minilm, texts[:3])
    edit_meta(d, lambda m: m["config"].__setitem__("n_heads", 6), rehash=False)
    with pytest.raises(CorruptModelError, match="checksum"):
        fdbert.load(d)


def test_no_metadata_checksum_is_refused(saved):
    edit_meta(saved, lambda m: m.pop("checksum"), rehash=False)
    with pytest.raises(CorruptModelError, match="missing key 'checksum'"):
        fdbert.load(saved)
    edit_meta(saved, lambda m: m.__setitem__("checksum", "x"), rehash=False)
    with pytest.raises(CorruptModelError, match="field 'checksum'"):
        fdbert.load(saved)


def test_the_error_names_the_file(saved):
    edit_meta(saved, lambda m: m["config"].__setitem__("n_heads", 0))
    with pytest.raises(CorruptModelError) as e:
        fdbert.load(saved)
    assert str(e.value).startswith(str(saved / META_FILE) + ": field 'config.n_heads'")


def test_an_external_entry_that_leaves_the_package_is_refused(saved):
    def external(m):
        m["external"] = {"embeddings.word_embeddings": {
            "package": "fdbert", "file": "../../etc/passwd", "tensor": "x", "sha256": "0" * 64,
            "shape": [1], "dtype": "float32"}}
    edit_meta(saved, external)
    with pytest.raises(CorruptModelError, match=r"external\.embeddings\.word_embeddings\.file"):
        fdbert.load(saved)


def test_config_objects_refuse_invalid_fields():
    good = dict(model_type="bert", vocab_size=10, d_model=8, n_layers=1, n_heads=2, d_ffn=4, max_positions=4)
    fdbert.EncoderConfig(**good)
    for field, bad in (("n_heads", 0), ("vocab_size", -1), ("d_ffn", 1.5), ("layer_norm_eps", float("nan")),
                       ("type_vocab_size", -1), ("pad_token_id", 10), ("model_type", 1)):
        with pytest.raises(FdbertError, match=field):
            fdbert.EncoderConfig(**{**good, field: bad})
    with pytest.raises(ConfigError):
        fdbert.model.PoolingConfig("max")


# ---- the fuzzer (strategies.damage) ------------------------------------------------------------------
def run_forward(model, texts):
    """A loaded (possibly different) model must run valid input without a raw Python error."""
    try:
        with fdbert.set_backend("reference"):
            model.encode(texts[:2])
        model.encode(texts[:2])
    except FdbertError:
        pass


FUZZ = settings(max_examples=70, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("kind", ["float", "int8-sparse"])
@pytest.mark.parametrize("target", [META_FILE, TENSOR_FILE])
@FUZZ
@given(st.data(), st.booleans())
def test_fuzz_the_fdbert_loader(saved_models, texts, kind, target, data, rehash):
    model, src = saved_models[kind]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "m"
        shutil.copytree(src, d)
        original = (d / target).read_bytes()
        header = target == TENSOR_FILE and data.draw(st.booleans(), label="header only")
        new, what = data.draw(damage(original, header_only=header), label="damage")
        (d / target).write_bytes(new)
        if rehash:
            rehash_files(d)
        try:
            r = fdbert.load(d)
        except FdbertError as e:
            assert str(d) in str(e), f"{what}: the error does not name the file: {e}"
            return
        if not rehash:   # untouched checksums: only an edit that changes nothing may load
            assert_same_model(r, model, texts)
        else:
            run_forward(r, texts)


@pytest.mark.parametrize("target", ["config.json", "model.safetensors"])
@FUZZ
@given(st.data())
def test_fuzz_the_hugging_face_loader(tiny_hf_models, texts, target, data):
    """No checksum on this path: an edit may load another model, but never a raw Python error."""
    src = tiny_hf_models["bert-cls"][1]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "m"
        shutil.copytree(src, d)
        original = (d / target).read_bytes()
        new, what = data.draw(damage(original, header_only=target.endswith("safetensors")), label="damage")
        (d / target).write_bytes(new)
        try:
            r = fdbert.from_pretrained(d)
        except FdbertError as e:
            assert str(d) in str(e), f"{what}: the error does not name the file: {e}"
            return
        ids = np.array([[1, 2, 3, 0], [4, 5, 0, 0]]) % r.config.vocab_size
        mask = (np.arange(4) < np.array([[3], [2]])).astype(np.int64)
        try:
            h = r(ids, mask)
            assert h.shape == (2, 4, r.config.d_model)
            if r.weights.heads.classifier is not None:
                r.classify(ids, mask)
        except FdbertError:
            pass


# ---- the Hugging Face path's other files -------------------------------------------------------------
@pytest.fixture
def hf_dir(tiny_hf_models, tmp_path):
    d = tmp_path / "hf"
    shutil.copytree(tiny_hf_models["bert"][1], d)
    return d


@pytest.mark.parametrize("files, error, match", [
    ({"config.json": "[1, 2]"}, CorruptModelError, "expected a JSON object"),
    ({"modules.json": "{"}, CorruptModelError, "modules.json: not valid JSON"),
    ({"modules.json": '{"a": 1}'}, CorruptModelError, "modules.json: expected a list"),
    ({"modules.json": '[{"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]',
      "1_Pooling/config.json": '{"pooling_mode_max_tokens": true, "pooling_mode_mean_tokens": false}'},
     fdbert.UnsupportedModelError, "pooling_mode_max_tokens"),
    ({"modules.json": '[{"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]',
      "1_Pooling/config.json": '{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}'},
     fdbert.UnsupportedModelError, "only one of"),
    ({"sentence_bert_config.json": '{"max_seq_length": -5}', "tokenizer.json": None},
     CorruptModelError, "max_seq_length"),
    ({"model.safetensors.index.json": '{"weight_map": {"a": "../../etc/passwd"}}', "model.safetensors": None},
     CorruptModelError, "weight_map"),
])
def test_hugging_face_side_files(hf_dir, tiny_hf_models, files, error, match):
    for name, text in files.items():
        f = hf_dir / name
        if text is None:   # a file this case needs from elsewhere, or one to remove
            if name == "tokenizer.json":
                from int8_models import word_tokenizer
                f.write_text(word_tokenizer(16).to_str())
            else:
                f.unlink()
            continue
        f.parent.mkdir(exist_ok=True)
        f.write_text(text)
    with pytest.raises(error, match=match):
        fdbert.from_pretrained(hf_dir)


def test_a_hugging_face_config_missing_a_key_or_with_a_bad_value(hf_dir):
    cfg = json.loads((hf_dir / "config.json").read_text())
    for key, value, match in (("num_attention_heads", 0, "'num_attention_heads'"),
                              ("hidden_size", "16", "'hidden_size'"),
                              ("vocab_size", None, "missing key 'vocab_size'"),
                              ("num_hidden_layers", 1, "not used by config.json")):
        bad = dict(cfg)
        if value is None:
            del bad[key]
        else:
            bad[key] = value
        (hf_dir / "config.json").write_text(json.dumps(bad))
        with pytest.raises(CorruptModelError, match=match) as e:
            fdbert.from_pretrained(hf_dir)
        assert str(hf_dir) in str(e.value)


def test_add_checksum_to_a_model_saved_before_checksums(saved_models, tmp_path, texts):
    """A model saved by an fdbert without the metadata checksum: refused, until add_checksum, which
    checks everything else first."""
    import subprocess
    import sys
    from fdbert.serialization import add_checksum
    model, src = saved_models["float"]
    d = tmp_path / "old"
    shutil.copytree(src, d)
    edit_meta(d, lambda m: m.pop("checksum"), rehash=False)
    with pytest.raises(CorruptModelError, match="missing key 'checksum'"):
        fdbert.load(d)
    r = subprocess.run([sys.executable, "-m", "fdbert.serialization", "add-checksum", str(d)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert_same_model(fdbert.load(d), model, texts)
    with pytest.raises(FdbertError, match="already has a checksum"):
        add_checksum(d)
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    edit_meta(bad, lambda m: (m.pop("checksum"), m["config"].__setitem__("n_heads", 0)), rehash=False)
    with pytest.raises(CorruptModelError, match="n_heads"):
        add_checksum(bad)
    assert "checksum" not in json.loads((bad / META_FILE).read_text())
