"""The contract of every public op, checked once, in :mod:`fdbert.ops`, before any backend runs.

A backend therefore sees only valid input: the native backend may still *decline* (a dtype or a
layout its kernels do not take) and the reference then runs, but never on input that breaks the
contract. Each check raises the fdbert error for the problem -- :class:`ShapeError`,
:class:`DTypeError`, :class:`TokenIdError`, :class:`ArgumentError` -- naming the op and the argument.

Costs: O(1) per array (dtype, rank, extents), plus O(B) for ``cu_seqlens`` and O(n) for token ids,
never a pass over float data. A layer (a :class:`QuantizedLinear`, an encoder block) is validated the
first time an op sees it and remembered by the identity of its arrays, so a forward pass pays a few
microseconds per op (docs/robustness.md). Arrays changed in place after that are not re-checked.

Array-likes: a list or tuple is converted with ``np.asarray`` (a float list becomes float64, which
the float ops accept and the native kernels decline); anything else that is not an array is refused.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .config import EncoderConfig
from .errors import ArgumentError, DTypeError, ShapeError, TokenIdError
from .weights import EncoderLayerWeights, Linear, QuantizedLinear

_KINDS = {"f": "a float dtype", "iu": "an integer dtype"}


def array(name, a):  # -> np.ndarray (or the numpy / Python scalar itself)
    """``a`` if it is an array or a scalar; a list or tuple converted; anything else refused."""
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, (list, tuple)):
        try:
            out = np.asarray(a)
        except ValueError as e:   # ragged nesting
            raise ShapeError(f"{name}: cannot be read as an array ({e})") from None
        if out.dtype == object:
            raise DTypeError(f"{name}: cannot be read as an array of numbers")
        return out
    if isinstance(a, (np.generic, numbers.Real)):
        return a
    raise DTypeError(f"{name}: expected a numpy array, got {type(a).__name__}")


def _dtype(a):
    return a.dtype if isinstance(a, (np.ndarray, np.generic)) else np.asarray(a).dtype


def typed(name, a, kinds, *, ndim=None, min_ndim=0):  # -> array
    """:func:`array`, then its dtype kind (``"f"`` or ``"iu"``; bool is not an integer) and rank."""
    if type(a) is np.ndarray and a.dtype.kind in kinds and (a.ndim == ndim if ndim is not None
                                                             else a.ndim >= min_ndim):
        return a   # the common case, in a few attribute reads (bool's kind is "b")
    a = array(name, a)
    dt = _dtype(a)
    if dt.kind not in kinds or dt == np.bool_:
        raise DTypeError(f"{name}: expected {_KINDS[kinds]}, got dtype {dt}")
    nd = np.ndim(a)
    if (ndim is not None and nd != ndim) or nd < min_ndim:
        want = f"{ndim}-d" if ndim is not None else f"at least {min_ndim}-d"
        raise ShapeError(f"{name}: expected a {want} array, got shape {np.shape(a)}")
    return a


def exact(name, a, dtype, shape):  # -> array
    """:func:`array`, of exactly ``dtype`` and ``shape`` (None: any extent)."""
    a = array(name, a)
    if _dtype(a) != dtype:
        raise DTypeError(f"{name}: expected {np.dtype(dtype)}, got dtype {_dtype(a)}")
    got = np.shape(a)
    if len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
        want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ")"
        raise ShapeError(f"{name}: expected shape {want}, got {got}")
    return a


def number(name, v, *, lo=None, finite=True):
    """A real number (not bool), finite, >= lo."""
    if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating, np.integer)):
        raise ArgumentError(f"{name}: expected a number, got {v!r}")
    if (finite and not math.isfinite(float(v))) or (lo is not None and not float(v) >= lo):
        raise ArgumentError(f"{name}: expected a finite number{f' >= {lo}' if lo is not None else ''}, "
                            f"got {v!r}")
    return v


def token_ids(name, ids, V):  # -> int array with every value in [0, V)
    ids = typed(name, ids, "iu")
    a = np.asarray(ids)
    if a.size and (a.min() < 0 or a.max() >= V):
        bad = a[(a < 0) | (a >= V)].flat[0]
        raise TokenIdError(f"{name}: id {bad} is outside [0, {V}) (the table has {V} rows)")
    return ids


def cu_seqlens(name, cu, n, *, whole=False):  # -> int array [B+1]
    """Sequence offsets: 1-d integers, non-decreasing, within [0, n]; ``whole``: from 0 to n exactly."""
    cu = typed(name, cu, "iu", ndim=1)
    if len(cu) < 1:
        raise ShapeError(f"{name}: expected [B+1] offsets (at least one), got shape {cu.shape}")
    if len(cu) > 1 and (cu[1:] < cu[:-1]).any():
        i = int(np.argmax(cu[1:] < cu[:-1]))
        raise ShapeError(f"{name}: offsets must be non-decreasing; {name}[{i + 1}] = {cu[i + 1]} < "
                         f"{name}[{i}] = {cu[i]}")
    if cu[0] < 0 or cu[-1] > n or (whole and (cu[0] != 0 or cu[-1] != n)):
        span = f"run from 0 to n = {n}" if whole else f"lie within [0, n = {n}]"
        raise ShapeError(f"{name}: offsets must {span}, got {cu[0]} .. {cu[-1]}")
    return cu


# ---- layers: validated once per object ---------------------------------------------------------------
def _arrays_key(obj, names):
    return tuple(id(getattr(obj, n)) for n in names)


def _qkey(q):
    """What a QuantizedLinear's validation depends on: its arrays (by identity) and scalars."""
    w = q.weight
    return (_arrays_key(q, ("weight", "w_scale", "bias", "comp", "mult", "outliers", "outlier_weight")),
            repr(q.x_scale), repr(q.x_zero_point),
            _arrays_key(w, ("data", "indices", "indptr")) + (repr(w.blocksize), repr(w.shape))
            if q.sparse else None)


def quantized_linear(name, q):
    """A :class:`QuantizedLinear` whose ``validate()`` has passed (run the first time it is seen)."""
    if not isinstance(q, QuantizedLinear):
        raise DTypeError(f"{name}: expected a QuantizedLinear, got {type(q).__name__}")
    key = _qkey(q)
    if q.__dict__.get("_validated") != key:
        try:
            q.validate()
        except (ShapeError, DTypeError, ArgumentError):
            raise
        except (ValueError, TypeError) as e:   # SparseFormatError and the like: name the op
            raise ArgumentError(f"{name}: {e}") from None
        q.__dict__["_validated"] = key
    return q


def linear_layer(name, lin, shape):
    """A float Linear ([N, K] weight, [N] bias or None) or a valid QuantizedLinear of ``shape``."""
    if isinstance(lin, Linear):
        typed(f"{name}.weight", lin.weight, "f", ndim=2)
        if lin.bias is not None:
            typed(f"{name}.bias", lin.bias, "f", ndim=1)
            if lin.bias.shape != lin.weight.shape[:1]:
                raise ShapeError(f"{name}.bias: expected shape ({lin.weight.shape[0]},), got {lin.bias.shape}")
    else:
        quantized_linear(name, lin)
    if tuple(lin.shape) != tuple(shape):
        raise ShapeError(f"{name}: expected shape {tuple(shape)} from the config, got {tuple(lin.shape)}")


def encoder_layer(layer, config):
    """An EncoderLayerWeights consistent with an EncoderConfig (checked once per layer and config)."""
    if not isinstance(config, EncoderConfig):
        raise DTypeError(f"encoder_layer: config must be an EncoderConfig, got {type(config).__name__}")
    if not isinstance(layer, EncoderLayerWeights):
        raise DTypeError(f"encoder_layer: layer must be an EncoderLayerWeights, got {type(layer).__name__}")
    parts = [getattr(layer, n) for n in EncoderLayerWeights.LINEARS + ("sa_layer_norm", "output_layer_norm")]
    key = (id(config), layer.attention, tuple(map(id, parts)),
           tuple(id(p.weight) for p in parts), tuple(id(getattr(p, "bias", None)) for p in parts),
           tuple(_qkey(q) for q in parts if isinstance(q, QuantizedLinear)))
    if layer.__dict__.get("_validated") == key:
        return
    if layer.attention not in EncoderLayerWeights.ATTENTION_KINDS:
        raise ArgumentError(f"encoder_layer: layer.attention must be one of "
                            f"{EncoderLayerWeights.ATTENTION_KINDS}, got {layer.attention!r}")
    qkv = [layer.q_lin, layer.k_lin, layer.v_lin]
    if all(isinstance(q, QuantizedLinear) for q in qkv) and any(
            (q.x_scale, q.x_zero_point) != (qkv[0].x_scale, qkv[0].x_zero_point) for q in qkv[1:]):
        raise ArgumentError("q_lin, k_lin and v_lin share their input: their x_scale and x_zero_point "
                            "must be equal")
    D, F = config.d_model, config.d_ffn
    shapes = {"q_lin": (D, D), "k_lin": (D, D), "v_lin": (D, D), "out_lin": (D, D), "lin1": (F, D),
              "lin2": (D, F)}
    for n, shape in shapes.items():
        linear_layer(f"encoder_layer: layer.{n}", getattr(layer, n), shape)
    for n in ("sa_layer_norm", "output_layer_norm"):
        ln = getattr(layer, n)
        exact_kind(f"encoder_layer: layer.{n}.weight", ln.weight, (D,))
        exact_kind(f"encoder_layer: layer.{n}.bias", ln.bias, (D,))
    layer.__dict__["_validated"] = key


def exact_kind(name, a, shape, kinds="f"):
    """:func:`typed` of ``kinds`` and exactly ``shape``."""
    a = typed(name, a, kinds)
    if np.shape(a) != tuple(shape):
        raise ShapeError(f"{name}: expected shape {tuple(shape)}, got {np.shape(a)}")
    return a


def exact_dtype(name, a, dtype):  # -> array of exactly dtype, any shape
    a = array(name, a)
    if _dtype(a) != dtype:
        raise DTypeError(f"{name}: expected {np.dtype(dtype)}, got dtype {_dtype(a)}")
    return a
