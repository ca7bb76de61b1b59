"""fdbert_native CPU feature detection and disabling (csrc/cpu_features.c via fdbert_native).

The oracles are independent of the code under test: /proc/cpuinfo (the kernel's own cpuid + XCR0
reading), the dependency table written out by hand in the package docstring, and a closure
computed here by recursion rather than by the C loop.
"""
import json
import platform
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fdbert_native
from subproc import run_python
from fdbert_native import FEATURE_NAMES

needs_native = pytest.mark.skipif(not fdbert_native.AVAILABLE,
                                  reason=f"fdbert_native unavailable: {fdbert_native.UNAVAILABLE_REASON}")
AMX = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
AVX512 = frozenset(name for name in FEATURE_NAMES if name.startswith("avx512"))
PACKAGE_ROOT = Path(fdbert_native.__file__).resolve().parent


@pytest.fixture(autouse=True)
def restore_disabled_features():
    previous = fdbert_native.disabled_features()
    yield
    fdbert_native.set_disabled_features(previous)


def requires_table():
    """{name: frozenset of direct prerequisites}, read from the build."""
    masks = fdbert_native._cpu.feature_requires()
    return {name: fdbert_native._to_names(mask) for name, mask in zip(FEATURE_NAMES, masks)}


def all_prerequisites(name, table):
    """`name` and everything it requires, transitively (recursion, not the C single pass)."""
    out = {name}
    for required in table[name]:
        out |= all_prerequisites(required, table)
    return out


def expected_usable(detected, disabled, amx_granted, table):
    """A feature is usable iff it and all its prerequisites are detected and none is disabled."""
    usable = set()
    for name in FEATURE_NAMES:
        chain = all_prerequisites(name, table)
        if chain <= detected and not chain & disabled and (amx_granted or not chain & AMX):
            usable.add(name)
    return frozenset(usable)


# --- the table ---

@needs_native
def test_feature_names_match_the_c_enum():
    assert fdbert_native._cpu.feature_names() == FEATURE_NAMES


@needs_native
def test_prerequisites_come_before_their_dependents():
    # the C closure loops are single passes in bit order; they are right only if this holds
    for bit, mask in enumerate(fdbert_native._cpu.feature_requires()):
        assert mask < (1 << bit), FEATURE_NAMES[bit]


@needs_native
def test_docstring_table_is_the_c_table():
    doc = fdbert_native.__doc__
    rows = doc[doc.index("feature      requires"):].splitlines()[1:]
    documented = {}
    for row in rows:
        if not row.strip():
            break
        name, *required = row.split()
        documented[name] = frozenset(r for r in required if r != "-")
    assert documented == requires_table()


# --- detection ---

@needs_native
def test_detected_is_a_superset_of_usable():
    assert fdbert_native.cpu_features() <= fdbert_native.cpu_features_detected()


@needs_native
def test_nothing_disabled_usable_is_detected_closed_over_requires():
    fdbert_native.set_disabled_features(())
    expected = expected_usable(fdbert_native.cpu_features_detected(), frozenset(),
                               fdbert_native._cpu.amx_granted(), requires_table())
    assert fdbert_native.cpu_features() == expected


# /proc/cpuinfo spelling of our names, where it differs
CPUINFO_NAME = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16"}
# flags whose cpuinfo name a kernel may not know yet (added after Linux 5.10): checked one way only
RECENT = {"avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "avx512bf16"}


def cpuinfo_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else None


@needs_native
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 only")
def test_detection_agrees_with_proc_cpuinfo():
    flags = cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags")
    detected = fdbert_native.cpu_features_detected()
    for name in FEATURE_NAMES:
        in_cpuinfo = CPUINFO_NAME.get(name, name) in flags
        if name in RECENT:
            assert not in_cpuinfo or name in detected, name
        else:
            assert in_cpuinfo == (name in detected), name


@pytest.mark.skipif(platform.machine() in ("x86_64", "AMD64"), reason="non-x86 only")
def test_other_architectures_detect_nothing():
    assert fdbert_native.cpu_features_detected() == frozenset()


# --- disabling ---

@needs_native
@settings(deadline=None, max_examples=200)
@given(st.frozensets(st.sampled_from(FEATURE_NAMES)))
@example(frozenset())
@example(frozenset({"avx512f"}))
@example(frozenset({"sse4_2"}))
def test_usable_is_detected_minus_everything_requiring_a_disabled_feature(disabled):
    previous = fdbert_native.set_disabled_features(disabled)
    usable = fdbert_native.cpu_features()
    assert fdbert_native.disabled_features() == disabled
    assert usable == expected_usable(fdbert_native.cpu_features_detected(), disabled,
                                     fdbert_native._cpu.amx_granted(), requires_table())
    # the C API kernels dispatch on says the same, bit by bit
    assert [fdbert_native._cpu.has_feature(bit) for bit in range(len(FEATURE_NAMES))] == \
        [name in usable for name in FEATURE_NAMES]
    assert fdbert_native.set_disabled_features(previous) == disabled


@needs_native
def test_has_feature_out_of_range_is_false():
    for bit in (-1, len(FEATURE_NAMES), 63):
        assert fdbert_native._cpu.has_feature(bit) is False


def detected_or_skip(*names):
    detected = fdbert_native.cpu_features_detected()
    missing = [n for n in names if n not in detected]
    if missing:
        pytest.skip(f"CPU lacks {missing}")


# hand-written consequences of the documented table: the ISA paths a tester wants to force
@needs_native
def test_disabling_avx512f_leaves_the_avx2_path():
    detected_or_skip("avx2", "fma", "f16c", "avx512f")
    fdbert_native.set_disabled_features({"avx512f"})
    usable = fdbert_native.cpu_features()
    assert not usable & (AVX512 | AMX)
    assert {"sse4_2", "avx2", "fma", "f16c"} <= usable


@needs_native
def test_disabling_avx512vnni_leaves_the_avx512bw_path():
    detected_or_skip("avx512bw", "avx512vnni")
    fdbert_native.set_disabled_features({"avx512vnni"})
    usable = fdbert_native.cpu_features()
    assert "avx512vnni" not in usable
    assert {"avx512f", "avx512bw", "avx512vl"} <= usable


@needs_native
def test_disabling_avx512bw_removes_vnni_and_bf16():
    detected_or_skip("avx512bw")
    fdbert_native.set_disabled_features({"avx512bw"})
    assert not fdbert_native.cpu_features() & {"avx512bw", "avx512vnni", "avx512bf16"}


@needs_native
def test_disabling_avx2_removes_avx_vnni_and_avx512():
    detected_or_skip("avx2")
    fdbert_native.set_disabled_features({"avx2"})
    assert not fdbert_native.cpu_features() & ({"avx2", "avx_vnni"} | AVX512 | AMX)


@needs_native
def test_disabling_amx_tile_removes_all_amx():
    fdbert_native.set_disabled_features({"amx_tile"})
    assert not fdbert_native.cpu_features() & AMX


@needs_native
def test_disabling_sse4_2_leaves_nothing():
    fdbert_native.set_disabled_features({"sse4_2"})
    assert fdbert_native.cpu_features() == frozenset()


def test_set_disabled_features_returns_previous_and_round_trips():
    fdbert_native.set_disabled_features({"avx512vnni"})
    assert fdbert_native.set_disabled_features("AVX512BW, avx2") == {"avx512vnni"}
    assert fdbert_native.disabled_features() == {"avx512bw", "avx2"}
    assert fdbert_native.set_disabled_features([]) == {"avx512bw", "avx2"}
    assert fdbert_native.disabled_features() == frozenset()


def test_set_disabled_features_rejects_unknown_names_listing_valid_ones():
    before = fdbert_native.disabled_features()
    with pytest.raises(ValueError) as info:
        fdbert_native.set_disabled_features({"avx512vnni", "avx1024"})
    message = str(info.value)
    assert "'avx1024'" in message
    assert all(name in message for name in FEATURE_NAMES)
    assert fdbert_native.disabled_features() == before  # nothing half-applied


def test_cpuinfo_spelling_gets_a_hint():
    with pytest.raises(ValueError, match=r"'avx512_vnni' -> 'avx512vnni'"):
        fdbert_native.set_disabled_features(["avx512_vnni"])


def test_set_disabled_features_rejects_non_strings():
    with pytest.raises(TypeError):
        fdbert_native.set_disabled_features([4])


def test_disabled_cpu_features_context_adds_and_restores():
    fdbert_native.set_disabled_features({"amx_tile"})
    with pytest.raises(RuntimeError):
        with fdbert_native.disabled_cpu_features({"avx512vnni"}) as usable:
            assert fdbert_native.disabled_features() == {"amx_tile", "avx512vnni"}
            assert usable == fdbert_native.cpu_features()
            assert "avx512vnni" not in usable
            raise RuntimeError("the block fails")
    assert fdbert_native.disabled_features() == {"amx_tile"}


# --- FDBERT_DISABLE_CPU_FEATURES, parsed at import (fresh interpreters) ---

PRINT_DISABLED = """
    import fdbert_native
    print(",".join(sorted(fdbert_native.disabled_features())))
    print(",".join(sorted(fdbert_native.cpu_features())))
"""


@pytest.mark.parametrize("value, expected", [
    ("avx512vnni,avx512bw", {"avx512vnni", "avx512bw"}),
    ("avx512vnni avx512bw", {"avx512vnni", "avx512bw"}),
    ("  AVX512VNNI ,\tAvx512BW\n", {"avx512vnni", "avx512bw"}),
    ("avx512vnni,,avx512bw,", {"avx512vnni", "avx512bw"}),
    ("amx_tile", {"amx_tile"}),
    ("", set()),
    (" , ", set()),
])
def test_disable_env_var_is_parsed(value, expected):
    result = run_python(PRINT_DISABLED, FDBERT_DISABLE_CPU_FEATURES=value)
    assert result.returncode == 0, result.stderr
    disabled_line, usable_line = result.stdout.splitlines()
    assert set(filter(None, disabled_line.split(","))) == expected
    assert not set(usable_line.split(",")) & expected


@pytest.mark.parametrize("pure", ["", "1"])
def test_disable_env_var_unknown_name_fails_at_import_listing_valid_names(pure):
    result = run_python("import fdbert_native", FDBERT_DISABLE_CPU_FEATURES="avx512vnni, sse5",
                        FDBERT_PURE_PYTHON=pure)
    assert result.returncode != 0
    assert "ValueError" in result.stderr
    assert "FDBERT_DISABLE_CPU_FEATURES" in result.stderr and "'sse5'" in result.stderr
    assert all(name in result.stderr for name in FEATURE_NAMES)


# --- without the extension ---

PRINT_FALLBACK = """
    import fdbert_native as f
    print(f.AVAILABLE)
    print(f.UNAVAILABLE_REASON)
    print(f.cpu_features() == frozenset() and f.cpu_features_detected() == frozenset())
    print(f.get_num_threads(), f.openmp_enabled(), f.request_amx_permission())
    print(sorted(f.set_disabled_features({"avx2"})), sorted(f.disabled_features()))
"""


def test_pure_python_env_var_makes_the_extension_unavailable():
    result = run_python(PRINT_FALLBACK, FDBERT_PURE_PYTHON="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "False", "FDBERT_PURE_PYTHON=1 is set", "True", "1 False False", "[] ['avx2']"]


@needs_native
def test_pure_python_0_means_not_set():
    result = run_python("import fdbert_native as f; print(f.AVAILABLE)", FDBERT_PURE_PYTHON="0")
    assert result.stdout.split() == ["True"], result.stderr


def test_missing_extension_falls_back_with_a_reason():
    blocker = """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "fdbert_native._cpu":
                    raise ImportError("simulated: no compiled module")
        sys.meta_path.insert(0, Block())
    """
    result = run_python(textwrap.dedent(blocker) + textwrap.dedent(PRINT_FALLBACK))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "False"
    assert "fdbert_native._cpu" in lines[1] and "simulated: no compiled module" in lines[1]
    assert lines[2:] == ["True", "1 False False", "[] ['avx2']"]


# --- AMX permission (per process: fresh interpreters) ---

@needs_native
def test_amx_is_usable_only_after_the_permission_is_granted():
    result = run_python("""
        import json
        import fdbert_native as f
        amx = {"amx_tile", "amx_int8", "amx_bf16"}
        out = {"before": sorted(f.cpu_features() & amx), "granted_before": f._cpu.amx_granted()}
        out["request"] = [f.request_amx_permission(), f.request_amx_permission()]
        out["granted_after"] = f._cpu.amx_granted()
        out["after"] = sorted(f.cpu_features() & amx)
        out["detected"] = sorted(f.cpu_features_detected() & amx)
        print(json.dumps(out))
    """)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["before"] == [] and out["granted_before"] is False  # a fresh process holds no grant
    granted = out["request"][0]
    assert out["request"] == [granted, granted] and out["granted_after"] is granted  # idempotent
    if "amx_tile" in out["detected"]:
        # XCR0 enables XTILEDATA only on kernels (5.16+) that implement the permission request
        assert granted
        assert out["after"] == out["detected"]
    else:
        assert not granted and out["after"] == []


# --- build hygiene ---

def test_only_cpu_compiles_the_shared_state():
    """A second copy of cpu_features.c/threads.c would hold its own disabled mask and thread count,
    which set_disabled_features / set_num_threads never reach."""
    owners = []
    for pyx in sorted(PACKAGE_ROOT.glob("_*.pyx")):
        for line in pyx.read_text().splitlines():
            if line.startswith("# distutils: sources") and re.search(r"csrc/(cpu_features|threads)\.c", line):
                owners.append(pyx.name)
    assert owners == ["_cpu.pyx"]


VECTOR_REGISTER = re.compile(r"%[yz]mm\d+|%k[0-7]\b")


def functions_using_vector_registers(so_path):
    """{function name: count of instructions naming a ymm/zmm/opmask register}, from objdump -d."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(so_path)], capture_output=True,
                             text=True, check=True).stdout
    counts, function = {}, None
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if header:
            function = header.group(1)
        elif function and VECTOR_REGISTER.search(line):
            counts[function] = counts.get(function, 0) + 1
    return counts


@needs_native
@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs binutils objdump")
def test_baseline_code_has_no_avx():
    """Code that runs on every CPU -- all of _cpu, and every module's Cython glue -- stays x86-64
    baseline: no -march=native, SIMD only inside target-attributed kernel functions."""
    modules = sorted(PACKAGE_ROOT.glob("_*.so"))
    assert modules
    for so in modules:
        used = functions_using_vector_registers(so)
        if so.name.startswith("_cpu."):
            assert used == {}, so.name
        glue = {f: n for f, n in used.items() if f.startswith(("__pyx_", "PyInit_"))}
        assert glue == {}, so.name


def show_config_amx(**env):
    """(the INT8 ops' path, the usable features, the detected features) of show_config / `fdbert info`
    in a fresh process (no AMX grant yet: show_config asks for it), with `env` set."""
    r = run_python("""
        import json, fdbert, fdbert_native
        info = fdbert.show_config(file=False)
        print(json.dumps([info["native_paths"]["qlinear"], sorted(info["cpu_features"]),
                          sorted(fdbert_native.cpu_features_detected())]))
    """, **env)
    assert r.returncode == 0, r.stderr
    qpath, features, detected = json.loads(r.stdout)
    return qpath, set(features), set(detected)


@needs_native
def test_show_config_lists_the_amx_features_the_int8_ops_use():
    """Where AMX-INT8 is usable, the INT8 ops run on it above a row threshold, and show_config's
    feature line lists it. Skipped, with the reason, on a CPU without AMX-INT8 or where Linux refuses
    the tile data (test_show_config_lists_no_amx_where_it_is_disabled covers those machines)."""
    qpath, features, detected = show_config_amx()
    if "amx_int8" not in detected:
        pytest.skip("this CPU has no AMX-INT8 (cpuid): the AMX path cannot run here")
    if "amx_int8" not in features:
        pytest.skip("the CPU has AMX-INT8 but it is not usable (Linux refused the tile-data permission, "
                    "or FDBERT_DISABLE_CPU_FEATURES)")
    assert "amx from" in qpath, qpath
    assert AMX <= features, features


@needs_native
def test_show_config_lists_no_amx_where_it_is_disabled():
    """With amx_int8 disabled -- what a CPU without AMX looks like -- neither the INT8 ops' path nor the
    feature line claims AMX-INT8; the detected features still do where the CPU has it."""
    qpath, features, detected = show_config_amx(FDBERT_DISABLE_CPU_FEATURES="amx_int8")
    assert "amx" not in qpath, qpath
    assert "amx_int8" not in features, features
    assert features <= detected
