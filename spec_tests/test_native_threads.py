"""fdbert_native thread control: set_num_threads is honoured exactly, idle workers sleep.

The oracle for the thread count is OpenMP itself: _cpu.omp_team_size() opens a region the way every
kernel does (num_threads(fdbert_native.get_num_threads())) and reports omp_get_num_threads().
"""
import threading
from pathlib import Path

import pytest

import fdbert_native
from subproc import run_python

needs_openmp = pytest.mark.skipif(
    not fdbert_native.openmp_enabled(),
    reason=f"needs fdbert_native built with OpenMP ({fdbert_native.UNAVAILABLE_REASON or 'built without'})")
PACKAGE_ROOT = Path(fdbert_native.__file__).resolve().parent


@pytest.fixture(autouse=True)
def restore_num_threads():
    previous = fdbert_native.get_num_threads()
    yield
    fdbert_native.set_num_threads(previous)


@needs_openmp
@pytest.mark.parametrize("n", [1, 2, 3, 5])  # more threads than this machine's 2 cores is legal
def test_set_num_threads_is_honoured_exactly(n):
    fdbert_native.set_num_threads(n)
    assert fdbert_native.get_num_threads() == n
    assert fdbert_native._cpu.omp_team_size() == n


@needs_openmp
def test_set_num_threads_returns_the_previous_count():
    fdbert_native.set_num_threads(3)
    assert fdbert_native.set_num_threads(1) == 3
    assert fdbert_native.get_num_threads() == 1


def team_size_in_another_thread():
    sizes = []
    worker = threading.Thread(target=lambda: sizes.append(fdbert_native._cpu.omp_team_size()))
    worker.start()
    worker.join()
    return sizes[0]


@needs_openmp
@pytest.mark.parametrize("n", [1, 3])
def test_the_count_reaches_kernels_run_from_other_python_threads(n):
    # omp_set_num_threads alone would only change the calling thread's default
    fdbert_native.set_num_threads(n)
    assert team_size_in_another_thread() == n


@needs_openmp
def test_a_count_set_in_another_python_thread_reaches_this_one():
    worker = threading.Thread(target=fdbert_native.set_num_threads, args=(3,))
    worker.start()
    worker.join()
    assert fdbert_native.get_num_threads() == 3
    assert fdbert_native._cpu.omp_team_size() == 3


@pytest.mark.parametrize("n", [0, -1, -(2**40)])
def test_counts_below_one_are_rejected(n):
    before = fdbert_native.get_num_threads()
    with pytest.raises(ValueError, match=f"n must be >= 1, got {n}"):
        fdbert_native.set_num_threads(n)
    assert fdbert_native.get_num_threads() == before


@pytest.mark.parametrize("n", [2.0, "2", None, True])
def test_non_integer_counts_are_rejected(n):
    with pytest.raises(TypeError):
        fdbert_native.set_num_threads(n)


@needs_openmp
def test_default_count_follows_omp_num_threads():
    result = run_python("""
        import fdbert_native as f
        print(f.get_num_threads(), f._cpu.omp_team_size())
    """, OMP_NUM_THREADS="3")
    assert result.stdout.split() == ["3", "3"], result.stderr


@needs_openmp
def test_counts_above_omp_thread_limit_are_rejected():
    result = run_python("""
        import fdbert_native as f
        f.set_num_threads(2)
        try:
            f.set_num_threads(3)
        except ValueError as exc:
            print("ValueError", "OMP_THREAD_LIMIT" in str(exc), f.get_num_threads())
    """, OMP_THREAD_LIMIT="2")
    assert result.stdout.split() == ["ValueError", "True", "2"], result.stderr


def test_without_the_extension_there_is_one_thread():
    result = run_python("""
        import fdbert_native as f
        print(f.get_num_threads(), f.set_num_threads(4), f.get_num_threads(), f.openmp_enabled())
        try:
            f.set_num_threads(0)
        except ValueError:
            print("rejected")
    """, FDBERT_PURE_PYTHON="1")
    assert result.stdout.split() == ["1", "1", "1", "False", "rejected"], result.stderr


# --- OMP_WAIT_POLICY / GOMP_SPINCOUNT ---

SHOW_POLICY = """
    import os, fdbert_native
    print("after import:", repr(os.environ.get("OMP_WAIT_POLICY")), repr(os.environ.get("GOMP_SPINCOUNT")))
"""


@needs_openmp
@pytest.mark.parametrize("user_env, runtime", [
    ({}, {"GOMP_SPINCOUNT": "30000"}),                            # our default: spin ~0.6 ms, sleep
    ({"OMP_WAIT_POLICY": ""}, {"GOMP_SPINCOUNT": "30000"}),       # empty is unset (libgomp rejects it)
    ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "ACTIVE"}),   # the user's choice stands
    ({"GOMP_SPINCOUNT": "1000"}, {"GOMP_SPINCOUNT": "1000"}),
])
def test_openmp_runtime_spins_briefly_unless_the_user_chose(user_env, runtime):
    import fdbert_native
    assert fdbert_native.DEFAULT_SPIN_COUNT == 30000   # the value the first two cases expect
    env = {"OMP_DISPLAY_ENV": "VERBOSE", **user_env}   # libgomp prints its settings when it loads
    result = run_python(SHOW_POLICY, **env)
    for var, value in runtime.items():
        assert f"{var} = '{value}'" in result.stderr, result.stderr
    # the process environment is put back: child processes and later libraries see the user's
    seen = (user_env.get("OMP_WAIT_POLICY"), user_env.get("GOMP_SPINCOUNT"))
    assert result.stdout.strip() == f"after import: {seen[0]!r} {seen[1]!r}"


IDLE_CPU = """
    import time, fdbert_native as f
    f.set_num_threads(2)
    for _ in range(200):
        f._cpu.omp_team_size()
    cpu, wall = time.process_time(), time.monotonic()
    time.sleep(0.5)
    while time.process_time() - cpu < MIN_CPU and time.monotonic() - wall < 20:
        time.sleep(0.1)
    print(time.process_time() - cpu, time.monotonic() - wall)
"""


def idle_cpu(min_cpu, **env):
    """(CPU seconds, wall seconds) of a process whose OpenMP workers idle while its main thread
    sleeps: 0.5 s, then on until the process has used min_cpu seconds of CPU (at most 20 s)."""
    cpu, wall = run_python(IDLE_CPU.replace("MIN_CPU", repr(min_cpu)), **env).stdout.split()
    return float(cpu), float(wall)


@needs_openmp
def test_idle_workers_sleep_instead_of_spinning():
    passive, passive_wall = idle_cpu(0.0)
    # the control shows the measurement can see spinning: a busy-waiting worker burns CPU time while
    # the main thread sleeps. On a loaded machine it gets only a share of a core, so the control runs
    # until it has burnt 0.1 s, and the idle process is held to a quarter of the CPU share it got.
    active, active_wall = idle_cpu(0.1, OMP_WAIT_POLICY="ACTIVE")
    assert active >= 0.1, f"control: spinning workers used only {active:.3f} s of CPU in {active_wall:.1f} s"
    assert passive < 0.05, f"{passive:.3f} s of CPU in {passive_wall:.2f} s of idling"
    assert passive / passive_wall < 0.25 * active / active_wall, \
        f"{passive:.3f} s of CPU in {passive_wall:.2f} s of idling; spinning: {active:.3f} s in {active_wall:.2f} s"
