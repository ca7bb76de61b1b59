"""fdbert's exceptions: one class per kind of mistake, each message says what was expected and found.

Every error class derives from :class:`FdbertError`, so ``except fdbert.FdbertError`` catches them all,
and from the matching builtin (``ValueError``, ``FileNotFoundError``, ...), so generic handlers keep
working. :class:`Declined` is not an error: a backend op raises it to pass the op on (fdbert.backend).
"""

from __future__ import annotations


class FdbertError(Exception):
    """Base class of every error fdbert raises on purpose."""


class ModelNotFoundError(FdbertError, FileNotFoundError):
    """A model directory or one of its required files does not exist."""


class UnsupportedModelError(FdbertError, ValueError):
    """The checkpoint's ``model_type`` (or architecture) is not one fdbert implements."""


class CorruptModelError(FdbertError, ValueError):
    """A weight or metadata file exists but cannot be read: truncated, garbled, or of another version."""


class ConfigError(FdbertError, ValueError):
    """A model configuration field has the wrong type or lies outside its range (``field`` names it)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class WeightShapeError(FdbertError, ValueError):
    """A checkpoint tensor's shape differs from what the config implies."""


class ShapeError(FdbertError, ValueError):
    """An input array has the wrong rank or size, or two inputs disagree."""


class DTypeError(FdbertError, TypeError):
    """An input array has the wrong dtype."""


class TokenIdError(FdbertError, ValueError):
    """A token id lies outside ``[0, vocab_size)``."""


class ArgumentError(FdbertError, ValueError):
    """An op's argument has a valid type but an invalid value: a scale, eps, zero point, a flag."""


class UsageError(FdbertError, ValueError):
    """A command-line argument, path or environment variable is wrong (the CLI exits with 2)."""


class BackendError(FdbertError, ValueError):
    """An unknown backend name, or an op that no backend in the chain could run."""


class SparseFormatError(FdbertError, ValueError):
    """A block-sparse (BSR) matrix is malformed: a field has the wrong dtype, size, order or range."""


class Declined(Exception):
    """Raised by a backend op that cannot take this input; the next backend in the chain runs it."""


def expect_dtype(name: str, array, *dtypes) -> None:
    """Raise :class:`DTypeError` unless ``array.dtype`` is one of ``dtypes`` (numpy dtypes or kinds).

    A dtype given as a one-letter string is a numpy kind: ``"i"`` signed, ``"u"`` unsigned integer,
    ``"f"`` floating, ``"b"`` boolean.
    """
    dt = array.dtype
    for want in dtypes:
        if (isinstance(want, str) and len(want) == 1 and dt.kind == want) or dt == want:
            return
    names = {"i": "a signed integer dtype", "u": "an unsigned integer dtype", "f": "a float dtype",
             "b": "bool"}
    wanted = " or ".join(names.get(w, str(w)) if isinstance(w, str) else str(w) for w in dtypes)
    raise DTypeError(f"{name}: expected {wanted}, got dtype {dt}")


def expect_shape(name: str, array, shape: tuple) -> None:
    """Raise :class:`ShapeError` unless ``array.shape`` matches ``shape`` (``None`` matches any size)."""
    got = tuple(array.shape)
    if len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
        want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ")"
        raise ShapeError(f"{name}: expected shape {want}, got {got}")
