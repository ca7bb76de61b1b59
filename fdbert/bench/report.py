"""Race results out: the machine description, a markdown table, a JSON file, a PNG plot."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from .engines import package_version

PACKAGES = ("fdbert", "numpy", "scipy", "torch", "transformers", "tokenizers", "onnx",
            "onnxruntime", "openvino", "nncf", "matplotlib", "threadpoolctl")
BUSY_LOAD = 0.5  # a 1-minute load average above this fraction of the CPUs taints the timings
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "amx_tile", "amx_int8", "amx_bf16")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The ISA flags that matter to these engines, as the kernel reports them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in CPU_FLAGS if flag in have]
    except OSError:
        pass
    return []


def native_cpu_features():
    """``fdbert_native.cpu_features()`` or the reason it is not available."""
    try:
        import fdbert_native

        features = fdbert_native.cpu_features()
        return dict(features) if isinstance(features, dict) else sorted(features)
    except Exception as exc:  # missing extension, or no cpu_features yet
        return {"unavailable": f"{type(exc).__name__}: {exc}"}


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: other processes on the machine make every timing slower."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def fdbert_git_revision() -> str | None:
    """``git describe --always --dirty`` of the source tree fdbert runs from, if it is one."""
    import subprocess

    root = Path(__file__).resolve().parent.parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def fdbert_version() -> str | None:
    """The installed distribution's version, else ``fdbert.__version__`` of a source checkout."""
    try:
        from fdbert import __version__
    except ImportError:
        __version__ = None
    return package_version("fdbert") or __version__


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "fdbert_git": fdbert_git_revision(),
        "fdbert_native_cpu_features": native_cpu_features(),
        "load_average_end": load_average(),
        "versions": {p: package_version(p) for p in PACKAGES} | {"fdbert": fdbert_version()},
        "thread_env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    }


def write_json(results: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return path


# ---- markdown --------------------------------------------------------------------------------


def _f(x, digits=1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _lat(stats) -> str:
    if not stats:
        return "–"
    return f"{stats['median_ms']:.1f} / {stats['p90_ms']:.1f} / {stats['p99_ms']:.1f}"


def markdown(results: dict) -> str:
    """The race table (one row per engine that ran), then the skipped engines with reasons."""
    opts = results["options"]
    n = opts["threads"]
    bound = opts["latency_bound_ms"]
    batches = opts["batch_sizes"]
    base = results.get("baseline")
    head = ["engine", "b1 latency 1T ms p50/p90/p99", f"b1 latency {n}T ms p50/p90/p99"]
    head += [f"seq/s B={b}" for b in batches]
    head += [f"best seq/s ≤{bound:g} ms (B)", f"b1 speed-up vs {base}",
             f"seq/s ratio B={max(batches)}", "cosine", "max abs diff"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rec in results["engines"].items():
        ratios = rec.get("ratios", {})
        best = rec.get("best_under_bound")
        fid = rec.get("fidelity") or {}
        row = [name, _lat(rec["latency_b1"].get("1")), _lat(rec["latency_b1"].get(str(n)))]
        row += [_f(rec["batches"].get(str(b), {}).get("throughput_seq_s")) for b in batches]
        row += [f"{best['throughput_seq_s']:.1f} ({best['batch']})" if best else "none",
                _f(ratios.get(f"b1_latency_speedup_{n}t"), 2) + "×",
                _f(ratios.get(f"throughput_ratio_b{max(batches)}"), 2) + "×",
                _f(fid.get("cosine_mean"), 5), _f(fid.get("max_abs_diff"), 6)]
        lines.append("| " + " | ".join(row) + " |")
    w = results.get("workload", {})
    mode = next((r["fidelity"]["mode"] for r in results["engines"].values() if r.get("fidelity")),
                "n/a")
    out = [
        (f"model {w.get('model')} ({w.get('layers')} layers, D {w.get('d_model')}), "
         f"T {w.get('seq_len')}, {n} threads, inputs: {w.get('token_source')}; "
         f"fidelity vs {results.get('reference_engine')} ({mode}); "
         f"load average at start {results.get('load_average_start')}"),
        "",
        *lines,
    ]
    load = results.get("load_average_start")
    cpus = (results.get("environment") or {}).get("cpu_count") or os.cpu_count() or 1
    if load and load[0] >= BUSY_LOAD * cpus:
        out[1:1] = ["", (f"WARNING: load average {load[0]} on {cpus} CPUs when the race "
                         "started: other processes competed for the cores; the timings are not "
                         "reliable.")]
    if results.get("ratios_note"):
        out += ["", results["ratios_note"]]
    if results.get("skipped"):
        out += ["", "Skipped:"]
        out += [f"- {name}: {reason}" for name, reason in results["skipped"].items()]
    return "\n".join(out) + "\n"


# ---- plot ------------------------------------------------------------------------------------


def plot(results: dict, path: str | os.PathLike) -> Path | None:
    """Throughput (seq/s) vs per-batch latency (ms), one curve per engine over batch sizes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for name, rec in results["engines"].items():
        pts = sorted((int(b), s["median_ms"], s["throughput_seq_s"])
                     for b, s in rec["batches"].items())
        style = "--" if rec["precision"] == "fp32" else "-"
        line, = ax.plot([p[1] for p in pts], [p[2] for p in pts], style, marker="o", label=name)
        for b, lat, thr in pts:
            ax.annotate(str(b), (lat, thr), textcoords="offset points", xytext=(4, 3),
                        fontsize=7, color=line.get_color())
    bound = results["options"]["latency_bound_ms"]
    ax.axvline(bound, color="grey", linestyle=":", linewidth=1)
    ax.text(bound, 0.01, f" {bound:g} ms bound", color="grey", fontsize=8, va="bottom",
            transform=ax.get_xaxis_transform())   # x in data, y in axes fraction: inside the plot
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency per batch call, median (ms)")
    ax.set_ylabel("throughput (sequences / s)")
    w = results.get("workload", {})
    ax.set_title(f"{w.get('model')}  T={w.get('seq_len')}  {results['options']['threads']} threads"
                 f"  ({results.get('environment', {}).get('cpu_model', '')})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
