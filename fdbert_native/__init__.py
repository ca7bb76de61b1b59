"""fdbert_native: the compiled backend's shared runtime -- which CPU features kernels may use, and threads.

The kernels live in sibling extension modules; this package holds the state they share, once per
process, in the extension module ``fdbert_native._cpu`` (C: csrc/cpu_features.c, csrc/threads.c).

A feature is usable when the CPU reports it (cpuid), the OS saves its registers (XCR0), all it
requires is usable, the user has not disabled it, and -- AMX only -- Linux has granted this process
the tile-data permission (``request_amx_permission()``).

Without the compiled extension (not built, or FDBERT_PURE_PYTHON=1) this package still imports:
``AVAILABLE`` is False, ``UNAVAILABLE_REASON`` says why, ``cpu_features()`` is empty, one thread.

Environment variables, read once at import:
    FDBERT_PURE_PYTHON=1                  do not load the extension; the reference backend runs.
    FDBERT_DISABLE_CPU_FEATURES="a, b c"  treat features as absent, to test lower ISA paths on a newer
                                          CPU (numpy's NPY_DISABLE_CPU_FEATURES). Comma and/or space
                                          separated, any case; an unknown name raises ValueError.
    OMP_WAIT_POLICY, GOMP_SPINCOUNT       unless the user set either, idle OpenMP workers spin for
                                          DEFAULT_SPIN_COUNT iterations (~0.6 ms) and then sleep (see
                                          the comment at the import); OMP_WAIT_POLICY=PASSIVE: sleep at
                                          once, ACTIVE: spin forever.

Disabling a feature also disables every feature that requires it, directly or not:

    feature      requires
    sse4_2       -
    avx2         sse4_2
    fma          sse4_2
    f16c         sse4_2
    avx512f      avx2 fma f16c
    avx512bw     avx512f
    avx512vl     avx512f
    avx512dq     avx512f
    avx512vnni   avx512bw avx512vl
    avx512bf16   avx512bw avx512vl
    avx_vnni     avx2
    amx_tile     avx512f
    amx_int8     amx_tile
    amx_bf16     amx_tile

So disabling avx512vnni leaves the avx512 path, avx512bw leaves AVX2, avx512f removes every
avx512* and amx*, avx2 removes those and avx_vnni.
"""

import contextlib
import operator
import os
import re

__all__ = [
    "AVAILABLE", "UNAVAILABLE_REASON", "FEATURE_NAMES",
    "cpu_features", "cpu_features_detected", "set_disabled_features", "disabled_features",
    "disabled_cpu_features", "request_amx_permission",
    "get_num_threads", "set_num_threads", "openmp_enabled", "op_paths",
]

# Bit order of the C enum fdb_feature (csrc/cpu_features.h); checked against the build at import.
FEATURE_NAMES = (
    "sse4_2", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni", "avx512bf16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
)

DISABLE_ENV = "FDBERT_DISABLE_CPU_FEATURES"
PURE_PYTHON_ENV = "FDBERT_PURE_PYTHON"


def _unknown_names_error(source, unknown):
    """ValueError naming the unknown features, a likely intended name, and every valid name."""
    squashed = {name.replace("_", ""): name for name in FEATURE_NAMES}
    hints = [f"{bad!r} -> {squashed[bad.replace('_', '')]!r}" for bad in unknown
             if bad.replace("_", "") in squashed]  # /proc/cpuinfo spells avx512_vnni
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    return ValueError(f"{source}: unknown CPU feature name(s) {', '.join(map(repr, unknown))}{hint}; "
                      f"valid names are: {', '.join(FEATURE_NAMES)}")


def _parse_feature_names(words, source):
    """['AVX512VNNI ', 'avx2'] -> frozenset({'avx512vnni', 'avx2'}); ValueError on an unknown name."""
    names = {word.strip().lower() for word in words}
    names.discard("")
    unknown = sorted(names - set(FEATURE_NAMES))
    if unknown:
        raise _unknown_names_error(source, unknown)
    return frozenset(names)


def _parse_feature_list(text, source):
    """'avx512vnni, AVX512BW  avx2' -> the set of names; commas and/or whitespace separate."""
    return _parse_feature_names(re.split(r"[\s,]+", text), source)


def _to_mask(names):
    return sum(1 << FEATURE_NAMES.index(name) for name in names)


def _to_names(mask):
    return frozenset(name for bit, name in enumerate(FEATURE_NAMES) if mask >> bit & 1)


# Parsed before the extension loads, so a typo fails the same way whether or not it is built.
_env_disabled = _parse_feature_list(os.environ.get(DISABLE_ENV, ""), DISABLE_ENV)


#: Spins of an idle OpenMP worker before it sleeps, unless the user set OMP_WAIT_POLICY or
#: GOMP_SPINCOUNT (libgomp's GOMP_SPINCOUNT; ~0.6 ms on the development VM).
DEFAULT_SPIN_COUNT = 30000


def _load_extension():
    """Import fdbert_native._cpu -> (module or None, reason it is unavailable or None)."""
    pure = os.environ.get(PURE_PYTHON_ENV, "")
    if pure not in ("", "0"):
        return None, f"{PURE_PYTHON_ENV}={pure} is set"
    # Idle OpenMP workers should sleep, not spin -- but not at the first gap. By default libgomp
    # busy-waits ~300,000 spins (~6 ms here) after every parallel region and Intel's runtime 200 ms,
    # so that the next region starts sooner; with regions in a steady stream that keeps every core
    # at 100% while the process only waits for requests -- the complaint users file against other
    # inference engines -- and steals the cores from the rest of the program. Sleeping at once
    # (OMP_WAIT_POLICY=PASSIVE) costs a futex wake-up, tens of us on a VM, at each of the ~30
    # regions of a forward pass: a batch-1 forward ~25% slower (docs/benchmarks.md). So a
    # worker spins DEFAULT_SPIN_COUNT iterations (~0.6 ms) -- long enough
    # to bridge the gaps inside a forward pass, short enough that an idle process uses no CPU --
    # and then sleeps. libgomp reads the variables once, when it is loaded, which importing _cpu
    # does; afterwards we put the environment back so child processes and libraries loaded later
    # see only the user's settings. A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT stands. (If another
    # module loaded libgomp before us, its settings stand.)
    user = {var: os.environ.get(var) for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if not any((value or "").strip() for value in user.values()):  # unset or empty (libgomp rejects "")
        os.environ.pop("OMP_WAIT_POLICY", None)
        os.environ["GOMP_SPINCOUNT"] = str(DEFAULT_SPIN_COUNT)
    try:
        from fdbert_native import _cpu
    except ImportError as exc:
        return None, (f"the compiled extension fdbert_native._cpu did not import ({exc}); "
                      f"build it with `pip install -e . --no-build-isolation`")
    finally:
        for var, value in user.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    if _cpu.feature_names() != FEATURE_NAMES:
        return None, (f"fdbert_native._cpu is stale: it knows features {_cpu.feature_names()}, this "
                      f"package {FEATURE_NAMES}; rebuild it")
    return _cpu, None


_cpu, UNAVAILABLE_REASON = _load_extension()
AVAILABLE = _cpu is not None
_fallback_disabled = _env_disabled  # the disabled set when the extension is unavailable
if AVAILABLE:
    _cpu.set_disabled_mask(_to_mask(_env_disabled))


def cpu_features():
    """Features kernels may use now (after disabling): frozenset of FEATURE_NAMES; empty without
    the extension."""
    return _to_names(_cpu.usable_mask()) if AVAILABLE else frozenset()


def cpu_features_detected():
    """Features the CPU reports and the OS enables (cpuid + XCR0), before requires, disabling and
    the AMX permission; empty without the extension."""
    return _to_names(_cpu.detected_mask()) if AVAILABLE else frozenset()


def set_disabled_features(features):
    """Treat `features` (and all that require them) as absent from now on; returns the previous set.

    features: an iterable of names, or one string in the FDBERT_DISABLE_CPU_FEATURES syntax.
    Replaces (does not add to) the current set, so set_disabled_features(previous) restores it.
    Raises ValueError naming the valid names on an unknown one.
    """
    global _fallback_disabled
    if isinstance(features, str):
        names = _parse_feature_list(features, "set_disabled_features")
    else:
        words = list(features)
        bad = [word for word in words if not isinstance(word, str)]
        if bad:
            raise TypeError(f"set_disabled_features: feature names must be str, got {bad!r}")
        names = _parse_feature_names(words, "set_disabled_features")
    if not AVAILABLE:
        previous, _fallback_disabled = _fallback_disabled, names
        return previous
    return _to_names(_cpu.set_disabled_mask(_to_mask(names)))


def disabled_features():
    """The set last given to set_disabled_features (or by the environment variable)."""
    return _to_names(_cpu.get_disabled_mask()) if AVAILABLE else _fallback_disabled


@contextlib.contextmanager
def disabled_cpu_features(features):
    """`with disabled_cpu_features({"avx512vnni"}):` -- also disable `features` inside the block."""
    extra = _parse_feature_list(features, "disabled_cpu_features") if isinstance(features, str) \
        else frozenset(features)
    previous = set_disabled_features(disabled_features() | extra)
    try:
        yield cpu_features()
    finally:
        set_disabled_features(previous)


def request_amx_permission():
    """Ask Linux for the AMX tile-data permission (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA).

    Returns True if this process may now use AMX (amx_* then join cpu_features() unless disabled).
    Not done at import: the grant is process-wide and raises the signal-stack size every thread
    needs by the 8 KiB of tile data, which can break code with small sigaltstacks.
    """
    return _cpu.amx_request() if AVAILABLE else False


def openmp_enabled():
    """True if the extension was built with OpenMP."""
    return _cpu.openmp_enabled() if AVAILABLE else False


def get_num_threads():
    """Threads every native parallel region uses: the last set_num_threads(n), else OMP_NUM_THREADS
    or the CPU count; 1 without the extension or OpenMP."""
    return _cpu.get_num_threads() if AVAILABLE else 1


def set_num_threads(n):
    """Use exactly `n` >= 1 threads in every native parallel region, from any Python thread;
    returns the previous count. Without the extension or OpenMP, n is checked and ignored.
    (OMP_DYNAMIC=true lets the OpenMP runtime give fewer.)"""
    if isinstance(n, bool):
        raise TypeError("set_num_threads: n must be an int, got a bool")
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    if not AVAILABLE:
        return 1
    limit = _cpu.omp_thread_limit()
    if openmp_enabled() and n > limit:
        raise ValueError(f"set_num_threads: n={n} exceeds the OpenMP thread limit {limit} "
                         f"(OMP_THREAD_LIMIT)")
    return _cpu.set_num_threads(n)


def op_paths():
    """Map each op the native backend implements to the ISA path it runs now (see fdbert_native.ops)."""
    if not AVAILABLE:
        return {}
    from .ops import op_paths as _op_paths
    return _op_paths()
