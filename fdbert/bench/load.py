"""How busy the machine was while the race ran: a thread samples /proc every ``interval_s``.

The 1-minute load average lags by a minute and counts the race itself, so the sampler also reads,
every 0.5 s, the CPU time all processes used (/proc/stat) minus the CPU time of this process and
of the engines' worker subprocesses (/proc/PID/stat): the CPUs that *other* processes took from the
race. Linux only; elsewhere the samples are empty and the report says so.
"""

from __future__ import annotations

import os
import threading
import time

INTERVAL_S = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_s() -> float | None:
    """Seconds of CPU time all CPUs spent busy since boot (/proc/stat: all but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0  # the hypervisor's: not run by anyone here
    return (sum(fields[:8]) - idle - steal) / CLK_TCK


def process_cpu_s(pid: int | str = "self") -> float:
    """User + system CPU seconds of one process, all its threads (/proc/PID/stat fields 14, 15)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def load_average_1m() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


class LoadSampler:
    """``with LoadSampler() as s: ...``; then ``s.summary()``. ``watch(pid)`` adds a subprocess
    whose CPU time is the race's own (an engine's worker)."""

    def __init__(self, interval_s: float = INTERVAL_S):
        self.interval_s = interval_s
        self.pids: set[int] = set()
        self.others_cpus: list[float] = []  # CPUs used by other processes, per interval
        self.load_1m: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fdbert-load-sampler", daemon=True)

    def watch(self, pid: int) -> None:
        self.pids.add(pid)

    def _own_s(self) -> float:
        return process_cpu_s() + sum(process_cpu_s(p) for p in list(self.pids))

    def _loop(self) -> None:
        busy, own, t = machine_busy_s(), self._own_s(), time.monotonic()
        if busy is None:
            return
        while not self._stop.wait(self.interval_s):
            busy2, own2, t2 = machine_busy_s(), self._own_s(), time.monotonic()
            others = max(0.0, (busy2 - busy) - (own2 - own)) / max(t2 - t, 1e-9)
            self.others_cpus.append(round(others, 3))
            load = load_average_1m()
            if load is not None:
                self.load_1m.append(load)
            busy, own, t = busy2, own2, t2

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        return summarize_load(self.others_cpus, self.load_1m, self.interval_s)


def summarize_load(others_cpus: list[float], load_1m: list[float], interval_s: float) -> dict:
    """Mean / median / max of the CPUs other processes used, and the range of the 1-min average."""
    out: dict = {"interval_s": interval_s, "samples": len(others_cpus)}
    if others_cpus:
        s = sorted(others_cpus)
        out["others_cpus_mean"] = round(sum(s) / len(s), 3)
        out["others_cpus_median"] = s[len(s) // 2] if len(s) % 2 else round((s[len(s) // 2 - 1] + s[len(s) // 2]) / 2, 3)
        out["others_cpus_max"] = s[-1]
        out["others_cpus"] = others_cpus
    if load_1m:
        out["load_1m_min"], out["load_1m_max"] = min(load_1m), max(load_1m)
    return out
