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
OTHERS_BUSY_CPUS = 0.25  # so do other processes using this many CPUs on average during the run
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


def _spread(stats) -> str:
    """'median (min-max)' of the per-round seq/s of one measurement."""
    if not stats:
        return "–"
    r = stats.get("rounds_throughput_seq_s")
    if not r or len(r["rounds"]) == 1:
        return _f(stats.get("throughput_seq_s"))
    return f"{r['median']:.1f} ({r['min']:.1f}-{r['max']:.1f})"


def _vs_peer(vs) -> str:
    if vs is None:
        return "no peer on these weights"
    if len(vs["rounds"]) == 1:
        return f"{vs['median']:.2f}× {vs['peer']}"
    return f"{vs['median']:.2f}× ({vs['min']:.2f}-{vs['max']:.2f}) {vs['peer']}"


def weights_label(rec: dict) -> str:
    """'given' for the workload's model; anything else (pruned, distilled) is flagged with ⚑."""
    w = rec.get("weights", "as given")
    return "given" if w == "as given" else f"⚑ {w}"


def bound_header(bound_ms: float) -> str:
    """The latency-bound column: the batch (<= max) with the most seq/s whose *median* per-batch
    latency is <= L (harness.best_under_bound)."""
    return f"best seq/s with median ≤{bound_ms:g} ms (B)"


def load_lines(results: dict) -> list[str]:
    """What the machine did during the run, and a warning when others competed for the cores."""
    cpus = (results.get("environment") or {}).get("cpu_count") or os.cpu_count() or 1
    start = results.get("load_average_start")
    load = results.get("load") or {}
    text = f"load average (1 min) at start {start[0] if start else 'n/a'}"
    if "load_1m_min" in load:
        text += f", {load['load_1m_min']}-{load['load_1m_max']} during the run"
    if "others_cpus_mean" in load:
        text += (f"; other processes used {load['others_cpus_mean']:.2f} CPUs on average "
                 f"(median {load['others_cpus_median']:.2f}, max {load['others_cpus_max']:.2f}; "
                 f"{load['samples']} samples, every {load['interval_s']:g} s)")
    else:
        text += "; load during the run not sampled (no /proc/stat)"
    lines = [text]
    reasons = []
    if start and start[0] >= BUSY_LOAD * cpus:
        reasons.append(f"load average {start[0]} on {cpus} CPUs when the race started")
    if load.get("others_cpus_mean", 0.0) >= OTHERS_BUSY_CPUS:
        reasons.append(f"other processes took {load['others_cpus_mean']:.2f} CPUs on average "
                       "during the run")
    if reasons:
        lines += ["", "WARNING: " + "; ".join(reasons) + ": other processes competed for the "
                  "cores; the timings are not reliable (compare ratios within the run)."]
    return lines


def markdown(results: dict) -> str:
    """The race table (one row per engine that ran), then the skipped engines with reasons.

    Latencies are the best round's p50 / p90 / p99; seq/s and the ratios to the fastest peer on
    the same weights are the median over rounds (min-max). An engine that runs other weights than
    the workload's (pruned, distilled) is flagged ⚑, and its cosine to float32 sits in its row.
    """
    opts = results["options"]
    n = opts["threads"]
    bound = opts["latency_bound_ms"]
    batches = opts["batch_sizes"]
    rounds = opts.get("rounds", 1)
    base = results.get("baseline")
    base_ran = base in results["engines"]
    head = ["engine", "weights", "cosine to fp32", "b1 latency 1T ms p50/p90/p99",
            f"b1 latency {n}T ms p50/p90/p99"]
    head += [f"seq/s B={b}" for b in batches]
    head += [bound_header(bound), "b1 vs fastest peer", f"seq/s B={max(batches)} vs fastest peer"]
    if base_ran:
        head += [f"b1 speed-up vs {base}", f"seq/s ratio B={max(batches)} vs {base}"]
    head += ["max abs diff"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rec in results["engines"].items():
        ratios = rec.get("ratios", {})
        best = rec.get("best_under_bound")
        fid = rec.get("fidelity") or {}
        vs = rec.get("vs_peer") or {}
        row = [name, weights_label(rec), _f(fid.get("cosine_mean"), 5),
               _lat(rec["latency_b1"].get("1")), _lat(rec["latency_b1"].get(str(n)))]
        row += [_spread(rec["batches"].get(str(b))) for b in batches]
        row += [f"{best['throughput_seq_s']:.1f} ({best['batch']})" if best else "none",
                _vs_peer(vs.get("b1")) if "b1" in vs else "–",
                _vs_peer(vs.get(f"b{max(batches)}")) if f"b{max(batches)}" in vs else "–"]
        if base_ran:
            row += [_f(ratios.get(f"b1_latency_speedup_{n}t"), 2) + "×",
                    _f(ratios.get(f"throughput_ratio_b{max(batches)}"), 2) + "×"]
        row += [_f(fid.get("max_abs_diff"), 6)]
        lines.append("| " + " | ".join(row) + " |")
    w = results.get("workload", {})
    mode = next((r["fidelity"]["mode"] for r in results["engines"].values() if r.get("fidelity")),
                "n/a")
    out = [
        (f"model {w.get('model')} ({w.get('layers')} layers, D {w.get('d_model')}), "
         f"T {w.get('seq_len')}, {n} threads, inputs: {w.get('token_source')}; "
         f"fidelity vs {results.get('reference_engine')} ({mode}); {rounds} round(s): latencies "
         f"from the best round, seq/s and peer ratios median (min-max) over rounds"),
        *load_lines(results),
        "",
        *lines,
    ]
    if any(r.get("weights", "as given") != "as given" for r in results["engines"].values()):
        out += ["", "⚑ other weights than the given model's: compare its speed only with engines "
                "on the same weights (the peer columns do), and read its cosine to fp32."]
    if results.get("ratios_note"):
        out += ["", results["ratios_note"]]
    if results.get("skipped"):
        out += ["", "Skipped:"]
        out += [f"- {name}: {reason}" for name, reason in results["skipped"].items()]
    return "\n".join(out) + "\n"


# ---- plot ------------------------------------------------------------------------------------

MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p", "d", "H", "8")


def engine_styles(names: list[str]) -> dict[str, tuple[str, str]]:
    """A distinct (colour, marker) per engine: tab20's colours and MARKERS, in engine order."""
    from matplotlib import colormaps

    colours = colormaps["tab20"].colors
    return {name: (colours[(2 * i) % 20 + (2 * i) // 20 % 2], MARKERS[i % len(MARKERS)])
            for i, name in enumerate(names)}


def plot_title(results: dict) -> str:
    """Model (its directory's name only: no path of this machine), T, threads, CPU."""
    w = results.get("workload", {})
    model = Path(str(w.get("model"))).name or str(w.get("model"))
    return (f"{model}  T={w.get('seq_len')}  {results['options']['threads']} threads"
            f"  ({results.get('environment', {}).get('cpu_model', '')})")


def plot(results: dict, path: str | os.PathLike) -> Path | None:
    """Throughput (seq/s) vs per-batch latency (ms), one curve per engine over batch sizes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    styles = engine_styles(list(results["engines"]))
    for name, rec in results["engines"].items():
        pts = sorted((int(b), s["median_ms"], s["throughput_seq_s"])
                     for b, s in rec["batches"].items())
        colour, marker = styles[name]
        style = "--" if rec["precision"] == "fp32" else "-"
        label = name
        if rec.get("weights", "as given") != "as given":
            cos = (rec.get("fidelity") or {}).get("cosine_mean")
            label += f" [⚑ {rec['weights']}" + (f", cosine {cos:.3f}]" if cos is not None else "]")
        ax.plot([p[1] for p in pts], [p[2] for p in pts], style, marker=marker, color=colour,
                label=label)
        for b, lat, thr in pts:
            ax.annotate(str(b), (lat, thr), textcoords="offset points", xytext=(4, 3),
                        fontsize=7, color=colour)
    bound = results["options"]["latency_bound_ms"]
    ax.axvline(bound, color="grey", linestyle=":", linewidth=1)
    ax.text(bound, 0.01, f" {bound:g} ms bound", color="grey", fontsize=8, va="bottom",
            transform=ax.get_xaxis_transform())   # x in data, y in axes fraction: inside the plot
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency per batch call, median (ms)")
    ax.set_ylabel("throughput (sequences / s)")
    ax.set_title(plot_title(results), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    if results["engines"]:  # outside the axes: it hides neither a curve nor the bound label
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
