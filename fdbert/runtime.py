"""What this process runs on: CPU features, thread counts, and which backend serves each op."""

from __future__ import annotations

import os
import platform


def _native():
    try:
        import fdbert_native
    except ImportError:
        return None
    return fdbert_native if getattr(fdbert_native, "AVAILABLE", False) else None


def cpu_features() -> frozenset:
    """CPU features usable now (cpuid AND OS support, minus FDBERT_DISABLE_CPU_FEATURES); empty
    without the native extension."""
    native = _native()
    return frozenset(native.cpu_features()) if native else frozenset()


def set_num_threads(n: int) -> None:
    """Threads for fdbert's native kernels (OpenMP) and, when threadpoolctl is installed, NumPy's BLAS."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        from .errors import ArgumentError
        raise ArgumentError(f"set_num_threads: expected an integer >= 1, got {n!r}")
    native = _native()
    if native:
        native.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:
        pass
    global _threads
    _threads = n


_threads = None


def get_num_threads() -> int:
    native = _native()
    if native:
        return native.get_num_threads()
    return _threads or os.cpu_count() or 1


def show_config(file=None) -> dict:
    """Print (and return) version, backends, CPU features, threads and the backend of each op."""
    from . import __version__, backend, ops
    op_names = [n for n in dir(ops) if not n.startswith("_") and callable(getattr(ops, n))
                and n not in ("call",)]
    native = _native()
    # op_paths first: it asks for the AMX permission the first packed weight would ask for, so the
    # feature line below says what the kernels will use (amx_* included)
    native_paths = native.op_paths() if native and hasattr(native, "op_paths") else None
    info = {
        "fdbert": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "backend": backend.get_backend(),
        "backends": backend.available_backends(),
        "cpu_features": sorted(cpu_features()),
        "threads": get_num_threads(),
        "ops": {name: backend.resolve(name) for name in op_names},
    }
    if native_paths is not None:
        info["native_paths"] = native_paths
    if file is not False:
        import sys
        out = file or sys.stdout
        print(f"fdbert {info['fdbert']} (Python {info['python']}, {info['machine']})", file=out)
        print(f"current backend: {info['backend']}", file=out)
        for name, why in info["backends"].items():
            print(f"  {name:10s} {'available' if why is None else 'unavailable: ' + why}", file=out)
        print(f"cpu features: {' '.join(info['cpu_features']) or '(none detected: native extension missing)'}",
              file=out)
        print(f"threads: {info['threads']}", file=out)
        paths = info.get("native_paths", {})
        for name, where in info["ops"].items():
            extra = f" [{paths[name]}]" if where == "native" and name in paths else ""
            print(f"  op {name:14s} -> {where}{extra}", file=out)
    return info
