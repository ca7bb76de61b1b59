"""model.save(path) / fdbert.load(path): bit-identical round trips; damaged files refused clearly."""

import json
import subprocess
import sys

import numpy as np
import pytest

import fdbert
from fdbert.errors import CorruptModelError, ModelNotFoundError
from fdbert.serialization import FORMAT_VERSION, META_FILE, TENSOR_FILE, TOKENIZER_FILE, _meta_checksum
from int8_models import sentences, tiny_text_model

KINDS = ("float", "pruned", "int8", "int8-sparse", "int8-sparse-int8-attention")


@pytest.fixture(scope="module")
def texts():
    return sentences(24, seed=2)


@pytest.fixture(scope="module")
def models(texts):
    base = tiny_text_model(seed=7, outlier_channel=2)
    pruned = fdbert.prune(base, 0.7, (1, 4))
    return {"float": base, "pruned": pruned,
            "int8": fdbert.quantize(base, texts, progress=False, measure_error=False),
            "int8-sparse": fdbert.quantize(pruned, texts, method="percentile", progress=False,
                                           measure_error=False),
            "int8-sparse-int8-attention": fdbert.quantize(pruned, texts, progress=False,
                                                          measure_error=False, attention="int8")}


@pytest.fixture
def saved(models, tmp_path):
    d = tmp_path / "int8-sparse"
    models["int8-sparse"].save(d)
    return d


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_is_bit_identical(models, texts, tmp_path, kind):
    m = models[kind]
    m.save(tmp_path / kind)
    r = fdbert.load(tmp_path / kind)
    assert r.config == m.config and r.pooling == m.pooling and r.name == m.name
    assert r.compression == json.loads(json.dumps(m.compression))
    batch = m.tokenize(texts)
    assert np.array_equal(r.tokenize(texts).input_ids, batch.input_ids)
    for backend in ("reference", "auto"):
        with fdbert.set_backend(backend):
            assert np.array_equal(r.forward_packed(batch), m.forward_packed(batch))
    for old, new in zip(m.weights.layers, r.weights.layers):
        assert new.attention == old.attention
        for name in old.LINEARS:
            a, b = getattr(old, name), getattr(new, name)
            assert type(a) is type(b)
            if kind.startswith("int8"):
                assert np.array_equal(a.dense_codes(), b.dense_codes())
                for f in ("w_scale", "bias", "comp", "mult", "outliers", "outlier_weight"):
                    assert np.array_equal(getattr(a, f), getattr(b, f)), f
                assert (a.x_scale, a.x_zero_point) == (b.x_scale, b.x_zero_point)
                assert type(a.x_scale) is type(b.x_scale)
            else:
                assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)


def test_int8_attention_is_saved_per_layer_and_checked(models, tmp_path):
    m = models["int8-sparse-int8-attention"]
    assert [layer.attention for layer in m.weights.layers] == ["int8"] * m.config.n_layers
    d = m.save(tmp_path / "m")
    meta = json.loads((d / META_FILE).read_text())
    assert meta["attention"] == ["int8"] * m.config.n_layers
    meta["attention"] = ["int4"] * m.config.n_layers
    (d / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CorruptModelError, match="'attention' must list one of"):
        fdbert.load(d)
    del meta["attention"]   # a model saved before INT8 attention existed: float32 attention
    (d / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CorruptModelError, match="checksum"):   # an edit, not an old save
        fdbert.load(d)
    meta["checksum"] = _meta_checksum(meta)                    # as an intact old save would be
    (d / META_FILE).write_text(json.dumps(meta))
    assert [layer.attention for layer in fdbert.load(d).weights.layers] == ["fp32"] * m.config.n_layers


def test_files_and_metadata(saved):
    assert sorted(p.name for p in saved.iterdir()) == sorted([META_FILE, TENSOR_FILE, TOKENIZER_FILE])
    meta = json.loads((saved / META_FILE).read_text())
    assert meta["format"] == "fdbert" and meta["format_version"] == FORMAT_VERSION
    assert meta["linears"]["layers.0.lin1."]["kind"] == "int8_bsr"
    assert meta["linears"]["layers.0.lin1."]["blocksize"] == [1, 4]


def test_loads_without_torch(saved):
    code = ("import sys; sys.modules['torch'] = None; import fdbert; "
            f"m = fdbert.load({str(saved)!r}); print(type(m.weights.layers[0].q_lin).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "QuantizedLinear"


def test_refuses_a_flipped_byte(saved):
    f = saved / TENSOR_FILE
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptModelError, match="SHA-256"):
        fdbert.load(saved)


def test_refuses_a_truncated_file(saved):
    f = saved / TENSOR_FILE
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(CorruptModelError, match="truncated"):
        fdbert.load(saved)


def _rewrite_meta(d, **changes):
    meta = json.loads((d / META_FILE).read_text())
    meta.update(changes)
    (d / META_FILE).write_text(json.dumps(meta))
    return meta


def test_refuses_a_truncated_file_even_with_a_matching_checksum(saved):
    """A checksum written after the damage (say, by a buggy tool) still cannot pass safetensors."""
    import hashlib
    f = saved / TENSOR_FILE
    f.write_bytes(f.read_bytes()[:1000])
    meta = json.loads((saved / META_FILE).read_text())
    _rewrite_meta(saved, files={**meta["files"], TENSOR_FILE: hashlib.sha256(f.read_bytes()).hexdigest()})
    with pytest.raises(CorruptModelError, match="cannot read safetensors"):
        fdbert.load(saved)


def test_refuses_a_missing_tensor(saved):
    import hashlib

    from safetensors.numpy import load_file, save_file
    f = saved / TENSOR_FILE
    tensors = load_file(str(f))
    del tensors["layers.1.lin2.w_scale"]
    save_file(tensors, str(f))
    meta = json.loads((saved / META_FILE).read_text())
    _rewrite_meta(saved, files={**meta["files"], TENSOR_FILE: hashlib.sha256(f.read_bytes()).hexdigest()})
    with pytest.raises(CorruptModelError, match="layers.1.lin2.w_scale.*missing"):
        fdbert.load(saved)


def test_refuses_another_version(saved):
    _rewrite_meta(saved, format_version=FORMAT_VERSION + 1)
    with pytest.raises(CorruptModelError, match=f"format version {FORMAT_VERSION + 1}.*version {FORMAT_VERSION}"):
        fdbert.load(saved)


def test_refuses_another_format(saved):
    _rewrite_meta(saved, format="onnx")
    with pytest.raises(CorruptModelError, match="'onnx'"):
        fdbert.load(saved)


def test_refuses_garbled_metadata(saved):
    (saved / META_FILE).write_text('{"format": "fdbert", "format_ver')
    with pytest.raises(CorruptModelError, match="not valid JSON"):
        fdbert.load(saved)


def test_refuses_a_changed_tokenizer(saved):
    f = saved / TOKENIZER_FILE
    f.write_text(f.read_text().replace("garden", "gardon"))
    with pytest.raises(CorruptModelError, match=TOKENIZER_FILE):
        fdbert.load(saved)


def test_missing_files(saved, tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist|not a directory"):
        fdbert.load(tmp_path / "nowhere")
    (saved / TOKENIZER_FILE).unlink()
    with pytest.raises(ModelNotFoundError, match="tokenizer.json is missing"):
        fdbert.load(saved)
    (saved / META_FILE).unlink()
    with pytest.raises(ModelNotFoundError, match="no fdbert.json"):
        fdbert.load(saved)


def test_errors_are_fdbert_errors():
    assert issubclass(CorruptModelError, fdbert.FdbertError)


def test_from_pretrained_and_the_cli_open_a_saved_model(tmp_path, capsys):
    """fdbert.from_pretrained (and so `fdbert encode`) takes a directory written by model.save."""
    from fdbert.cli import main
    model = tiny_text_model(seed=3)
    q = fdbert.quantize(model, sentences(16), progress=False, measure_error=False)
    q.save(tmp_path / "fast")
    again = fdbert.from_pretrained(tmp_path / "fast")
    texts = sentences(4, seed=9)
    np.testing.assert_array_equal(again.encode(texts), q.encode(texts))
    assert main(["encode", str(tmp_path / "fast"), *texts[:2]]) == 0
    assert "embeddings: 2 x" in capsys.readouterr().out


# ---- tensors referenced in an installed package ----------------------------------------------------
@pytest.fixture
def fake_package(models, tmp_path, monkeypatch):
    """An importable package `fdbert_test_pkg` whose model/ directory holds the tiny model's word
    embeddings in model.safetensors, as a model package from PyPI would."""
    from safetensors.numpy import save_file
    root = tmp_path / "site"
    pkg = root / "fdbert_test_pkg"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('fdbert must never import this package')\n")
    table = models["int8-sparse"].weights.embeddings.word_embeddings
    save_file({"other": np.zeros((2, 3), np.float32), "emb.word.weight": table}, str(pkg / "model" / TENSOR_FILE))
    monkeypatch.syspath_prepend(str(root))
    return pkg


def test_a_referenced_tensor_round_trips_and_is_not_copied(models, texts, fake_package, tmp_path):
    from fdbert.serialization import package_tensor
    m = models["int8-sparse"]
    ref = package_tensor(fake_package / "model", m.weights.embeddings.word_embeddings)
    assert (ref.package, ref.file, ref.tensor) == ("fdbert_test_pkg", "model/model.safetensors", "emb.word.weight")
    m.save(tmp_path / "m", external={"embeddings.word_embeddings": ref})
    meta = json.loads((tmp_path / "m" / META_FILE).read_text())
    assert meta["external"]["embeddings.word_embeddings"]["tensor"] == "emb.word.weight"
    from safetensors import safe_open
    with safe_open(str(tmp_path / "m" / TENSOR_FILE), "np") as f:
        assert "embeddings.word_embeddings" not in f.keys()
    r = fdbert.load(tmp_path / "m")
    assert np.array_equal(r.encode(texts), m.encode(texts))
    assert package_tensor(tmp_path / "m", m.weights.embeddings.word_embeddings) is None  # not a package


def test_a_changed_or_missing_referenced_tensor_is_refused(models, fake_package, tmp_path, monkeypatch):
    from safetensors.numpy import save_file
    from fdbert.serialization import package_tensor
    m = models["int8-sparse"]
    ref = package_tensor(fake_package / "model", m.weights.embeddings.word_embeddings)
    m.save(tmp_path / "m", external={"embeddings.word_embeddings": ref})
    table = m.weights.embeddings.word_embeddings.copy()
    table[3, 1] += 1e-3                                    # one number of the package's table changes
    save_file({"emb.word.weight": table}, str(fake_package / "model" / TENSOR_FILE))
    with pytest.raises(CorruptModelError, match="differs from the one this model was saved with"):
        fdbert.load(tmp_path / "m")
    save_file({"something.else": table}, str(fake_package / "model" / TENSOR_FILE))
    with pytest.raises(CorruptModelError, match="cannot read external tensor"):
        fdbert.load(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / META_FILE).read_text())
    meta["external"]["embeddings.word_embeddings"]["package"] = "fdbert_no_such_package"
    (tmp_path / "m" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelNotFoundError, match="not installed"):
        fdbert.load(tmp_path / "m")
