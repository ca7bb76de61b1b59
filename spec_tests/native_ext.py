"""The compiled extension, for the native tests, and what its absence means.

``native_ext.load("_qgemm")`` returns ``fdbert_native._qgemm``. Where the extension is not built,
does not import, or FDBERT_PURE_PYTHON=1 hides it, the calling test module is skipped with the
reason -- unless FDBERT_REQUIRE_NATIVE=1 (``make test``'s native pass sets it): then the import error
is raised, the module fails to collect, and the run fails. A broken build cannot pass as a sea of
skips. (conftest.py also refuses to start such a run, naming the reason once.)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

import fdbert_native

REQUIRE_ENV = "FDBERT_REQUIRE_NATIVE"
REQUIRED = os.environ.get(REQUIRE_ENV, "") == "1"


class NativeRequired(ImportError):
    """The native extension is missing or broken while FDBERT_REQUIRE_NATIVE=1."""


def problem(submodules=()):
    """Why the extension (and each of `submodules`) cannot be used here, or None."""
    if not fdbert_native.AVAILABLE:
        return f"native backend unavailable: {fdbert_native.UNAVAILABLE_REASON}"
    for name in submodules:
        try:
            importlib.import_module(f"fdbert_native.{name}")
        except ImportError as exc:
            return f"fdbert_native.{name} does not import: {exc}"
    return None


def compiled_modules():
    """The names of the extension's compiled modules: one per .pyx source (_cpu, _fp32, _qgemm, ...)."""
    return sorted(p.stem for p in Path(fdbert_native.__file__).resolve().parent.glob("_*.pyx"))


def unavailable(reason):
    """Skip the calling module with `reason`; with FDBERT_REQUIRE_NATIVE=1, raise instead."""
    if REQUIRED:
        raise NativeRequired(f"{reason} ({REQUIRE_ENV}=1: the native tests must run)")
    pytest.skip(reason, allow_module_level=True)


def load(submodule=None):
    """fdbert_native (or its compiled `submodule`), or skip / fail the calling module (see above)."""
    reason = problem([submodule] if submodule else [])
    if reason:
        unavailable(reason)
    return importlib.import_module(f"fdbert_native.{submodule}") if submodule else fdbert_native


def isa_params(paths, reason="the {isa} path cannot run here (CPU lacks it, or FDBERT_DISABLE_CPU_FEATURES)",
               isas=None):
    """pytest params, one per ISA path of `paths` (a compiled module with ISAS and isa_supported),
    each skipped with `reason` where this CPU cannot run it."""
    return [pytest.param(isa, marks=pytest.mark.skipif(not paths.isa_supported(isa), reason=reason.format(isa=isa)))
            for isa in (paths.ISAS if isas is None else isas)]
