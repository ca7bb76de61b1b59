"""Backend selection and op dispatch: every op the model runs goes through :func:`call`.

A *backend* is a namespace (module or object) holding functions named like the ops in
:mod:`fdbert.ops`, with the same signatures. ``"reference"`` (:mod:`fdbert.reference`, NumPy/SciPy,
with the blocks of :mod:`fdbert.blocks` for the ops that are whole blocks) implements every op and is the oracle; ``"native"`` (:mod:`fdbert_native`, Cython + C SIMD) implements
the hot ones. A backend function may *decline* an input it cannot take by returning
``NotImplemented`` or raising :class:`Declined`; the next backend in the chain then runs it. The chain
is the selected backend followed by ``"reference"``, or the selected backend alone with ``only=True``,
in which case a decline is an error that lists every backend tried and why it declined.

The selection lives in a :class:`contextvars.ContextVar`, so it is private to a thread or an asyncio
task and ``with fdbert.set_backend(...)`` restores the previous choice even when the block raises.
Threads that never called ``set_backend`` use the process default: the ``FDBERT_BACKEND`` environment
variable (``auto`` when unset: native if it is available, else reference), changeable with
:func:`set_default_backend`. ``FDBERT_PURE_PYTHON=1`` makes the native backend unavailable.

This is the shape of SciPy's ``scipy.fft`` backend API (``set_backend``, ``only=True``, an error naming
every backend tried) without the uarray dependency.
"""

from __future__ import annotations

import contextvars
import importlib
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

from .errors import BackendError, Declined

__all__ = ["Declined", "call", "set_backend", "set_default_backend", "get_backend",
           "available_backends", "register_backend", "unregister_backend", "backend_chain", "resolve"]


@dataclass(frozen=True)
class _Selection:
    name: str
    only: bool


def _load_reference():
    """The primitives of fdbert.reference, and for the ops that are whole blocks (encoder_layer, ...)
    their composites in fdbert.blocks. A backend that declines a fused block falls back to the
    composite, which dispatches its parts again: the one intended re-entry into dispatch."""
    reference = importlib.import_module("fdbert.reference")
    blocks = importlib.import_module("fdbert.blocks")
    ops = {name: getattr(reference, name) for name in reference.__all__}
    ops.update({name: getattr(blocks, name) for name in blocks.BLOCK_OPS})
    return SimpleNamespace(**ops)


def _load_native():
    native = importlib.import_module("fdbert_native")
    if not getattr(native, "AVAILABLE", False):
        raise ImportError(getattr(native, "UNAVAILABLE_REASON", "fdbert_native is not built"))
    try:
        return importlib.import_module("fdbert_native.ops")
    except ModuleNotFoundError as e:
        if e.name != "fdbert_native.ops":
            raise
        return SimpleNamespace()  # built, but no op kernels yet: every op falls through to reference


# name -> loader returning the backend namespace or raising ImportError with the reason.
_LOADERS: dict[str, Callable[[], Any]] = {"reference": _load_reference, "native": _load_native}
_LOADED: dict[str, Any] = {}
_FAILED: dict[str, str] = {}

_default = os.environ.get("FDBERT_BACKEND", "auto").strip().lower() or "auto"
_selection: contextvars.ContextVar[_Selection | None] = contextvars.ContextVar(
    "fdbert_backend", default=None)


def register_backend(name: str, namespace: Any = None, *, loader: Callable[[], Any] | None = None) -> None:
    """Add (or replace) a backend: a namespace of op functions, or a ``loader`` returning one.

    A loader may raise ``ImportError`` with the reason the backend is unavailable.
    """
    if name == "auto":
        raise BackendError("'auto' is reserved: it means native when available, else reference")
    if (namespace is None) == (loader is None):
        raise BackendError("register_backend takes exactly one of namespace= and loader=")
    _LOADERS[name] = loader if loader is not None else (lambda: namespace)
    _LOADED.pop(name, None)
    _FAILED.pop(name, None)


def unregister_backend(name: str) -> None:
    """Remove a backend added with :func:`register_backend`; the built-in ones cannot be removed."""
    if name in ("reference", "native"):
        raise BackendError(f"the built-in backend {name!r} cannot be unregistered")
    if name not in _LOADERS:
        raise BackendError(f"no backend named {name!r} is registered")
    del _LOADERS[name]
    _LOADED.pop(name, None)
    _FAILED.pop(name, None)


def _namespace(name: str) -> Any:
    """The loaded namespace of backend ``name``; raises ImportError with the reason if unavailable."""
    if name in _LOADED:
        return _LOADED[name]
    if name in _FAILED:
        raise ImportError(_FAILED[name])
    try:
        ns = _LOADERS[name]()
    except ImportError as e:
        _FAILED[name] = str(e) or type(e).__name__
        raise ImportError(_FAILED[name]) from None
    _LOADED[name] = ns
    return ns


def _check_name(name: str) -> str:
    if not isinstance(name, str):
        raise BackendError(f"backend name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key != "auto" and key not in _LOADERS:
        known = ", ".join(["auto", *sorted(_LOADERS)])
        raise BackendError(f"unknown backend {name!r}; known backends: {known}")
    return key


def available_backends() -> dict[str, str | None]:
    """Map every known backend name to ``None`` if it can run, else the reason it cannot."""
    out: dict[str, str | None] = {}
    for name in sorted(_LOADERS):
        try:
            _namespace(name)
            out[name] = None
        except ImportError as e:
            out[name] = str(e)
    return out


def _resolve_auto() -> str:
    try:
        _namespace("native")
        return "native"
    except ImportError:
        return "reference"


class _BackendContext:
    """What :func:`set_backend` returns: the setting is already made; ``with`` undoes it on exit."""

    def __init__(self, token: contextvars.Token, name: str):
        self._token = token
        self.name = name

    def __enter__(self) -> "_BackendContext":
        return self

    def __exit__(self, *exc) -> None:
        _selection.reset(self._token)

    def __repr__(self) -> str:
        return f"<fdbert backend {self.name!r}>"


def set_backend(name: str, *, only: bool = False) -> _BackendContext:
    """Select the backend for this thread / asyncio task. Use as a statement or a context manager.

    >>> with fdbert.set_backend("native", only=True):   # no silent fallback to the reference
    ...     model(input_ids)

    Raises :class:`BackendError` for an unknown name and ``RuntimeError`` if the backend is known but
    unavailable on this machine (the message says why).
    """
    key = _check_name(name)
    if key == "auto":
        key = _resolve_auto()
    try:
        _namespace(key)
    except ImportError as e:
        raise BackendError(f"backend {key!r} is unavailable: {e}") from None
    token = _selection.set(_Selection(key, only))
    return _BackendContext(token, key)


def set_default_backend(name: str) -> None:
    """Change the process-wide default used by threads/tasks that never called :func:`set_backend`."""
    global _default
    _default = _check_name(name)


def _current() -> _Selection:
    sel = _selection.get()
    if sel is not None:
        return sel
    try:
        key = _check_name(_default)
    except BackendError as e:
        raise BackendError(f"{e} (the default comes from FDBERT_BACKEND or set_default_backend)") from None
    return _Selection(_resolve_auto() if key == "auto" else key, False)


def get_backend() -> str:
    """The name of the backend the current thread/task dispatches to first."""
    return _current().name


def backend_chain() -> list[str]:
    """Backends tried, in order, for an op called now."""
    sel = _current()
    return [sel.name] if sel.only or sel.name == "reference" else [sel.name, "reference"]


def resolve(op: str) -> str:
    """Name of the backend whose implementation of ``op`` would be tried first now (for introspection)."""
    for name in backend_chain():
        if getattr(_namespace(name), op, None) is not None:
            return name
    return "none"


def call(op: str, *args, **kwargs):
    """Run ``op`` on the first backend of the chain that has it and does not decline."""
    reasons = []
    for name in backend_chain():
        fn = getattr(_namespace(name), op, None)
        if fn is None:
            reasons.append(f"{name}: has no op {op!r}")
            continue
        try:
            out = fn(*args, **kwargs)
        except Declined as e:
            reasons.append(f"{name}: declined ({e})")
            continue
        if out is NotImplemented:
            reasons.append(f"{name}: declined")
            continue
        return out
    raise BackendError(f"no backend could run op {op!r}; tried " + "; ".join(reasons))
