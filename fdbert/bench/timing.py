"""The project's one timing loop, with nothing but the standard library.

``fdbert bench`` times every engine with :func:`time_calls`, in its own process or, for an engine
that lives in another venv (DeepSparse: ``fdbert/bench/worker.py``), inside that engine's
subprocess, which imports this file by path. Keep it free of fdbert and NumPy imports.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WARMUP_FRACTION = 0.15  # warm-up keeps calling until this fraction of the budget is spent
MAX_WARMUP_CALLS = 20
MAX_TIME_FACTOR = 5.0  # a measurement stops after this many budgets even below min_reps


def time_calls(
    fn: Callable[[], object], budget_s: float, min_reps: int = 3, max_reps: int = 10_000,
    clock: Callable[[], float] = time.perf_counter, max_time_s: float | None = None,
    warmup_calls: int | None = None,
) -> list[float]:
    """Durations (s) of repeated ``fn()`` calls: warm-up first, then until the budget is spent.

    Warm-up: ``warmup_calls`` calls when given (0: none), else calls until ``WARMUP_FRACTION`` of
    the budget is spent (at most ``MAX_WARMUP_CALLS``). Stops once ``budget_s`` has elapsed and
    ``min_reps`` calls are done, or at ``max_reps`` calls, or (with at least one call) once
    ``max_time_s`` (default ``MAX_TIME_FACTOR * budget_s``) has elapsed: a call that takes many
    seconds is timed fewer than ``min_reps`` times. ``budget_s=0, min_reps=max_reps=n,
    max_time_s=math.inf`` times exactly n calls. This is the project's one timing loop: the race,
    its subprocess engines and the scripts of benchmarks/ (benchmarks/common.py) all time with it.
    """
    max_time_s = MAX_TIME_FACTOR * budget_s if max_time_s is None else max_time_s
    if warmup_calls is None:
        start = clock()
        for _ in range(MAX_WARMUP_CALLS):
            fn()
            if clock() - start >= WARMUP_FRACTION * budget_s:
                break
    else:
        for _ in range(warmup_calls):
            fn()
    samples: list[float] = []
    start = clock()
    while len(samples) < max_reps:
        t0 = clock()
        fn()
        samples.append(clock() - t0)
        elapsed = clock() - start
        if elapsed >= max_time_s or (elapsed >= budget_s and len(samples) >= min_reps):
            break
    return samples
