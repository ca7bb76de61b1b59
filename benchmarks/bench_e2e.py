"""End to end (issue 4): the DistilBERT-base shape, 80% 1x4-sparse INT8, native, 2 threads, seq 128.

Random weights (6 layers, D 768, H 12, F 3072, V 30522; N(0, 0.02), seed 0) are built with NumPy, so
nothing is downloaded. Variants, each validated against the reference before it is timed (cosine of
the last hidden states of a 4 x 128 batch):

  fp32-reference     the float model on the NumPy reference backend
  fp32-native        the float model on the native backend
  int8-dense         fdbert.quantize (min-max, calibrated on 8 random 128-token sequences), native
  int8-sparse-80     fdbert.prune(0.8, (1, 4)) then fdbert.quantize, native  (the issue's target)
  int8-sparse-80-qattn   the same with attention="int8" (INT8 q k^T and P v, docs/int8.md)

For each: batch-1 latency median / p90 / p99, throughput (sequences/s) at batch 8 and 32, and the best
throughput whose batch latency p99 stays <= 10 ms over batch sizes 1..32. Every sequence has 128
tokens (ids uniform in [1000, V)).
Usage: python benchmarks/bench_e2e.py [--threads 2] [--variants all|a,b] [--budget 3] [--docs]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import numpy as np

import fdbert
from fdbert.config import EncoderConfig
from fdbert.model import Encoder
from fdbert.packing import pack_sequences
from fdbert.weights import EmbeddingWeights, EncoderLayerWeights, EncoderWeights, LayerNorm, Linear

SEQ = 128
TARGETS = "batch-1 latency <= 5 ms, throughput >= 250 seq/s"
VARIANTS = ("fp32-reference", "fp32-native", "int8-dense", "int8-sparse-80", "int8-sparse-80-qattn")
CONFIG = EncoderConfig("distilbert", vocab_size=30522, d_model=768, n_layers=6, n_heads=12, d_ffn=3072,
                       max_positions=512)


def random_encoder(cfg: EncoderConfig = CONFIG, seed: int = 0) -> Encoder:
    rng = np.random.default_rng(seed)

    def lin(n, k):
        return Linear(rng.normal(0, 0.02, (n, k)).astype(np.float32),
                      rng.normal(0, 0.02, n).astype(np.float32))

    def ln(d):
        return LayerNorm(np.ones(d, np.float32), np.zeros(d, np.float32))

    D, F = cfg.d_model, cfg.d_ffn
    emb = EmbeddingWeights(rng.normal(0, 0.02, (cfg.vocab_size, D)).astype(np.float32),
                           rng.normal(0, 0.02, (cfg.max_positions, D)).astype(np.float32), None, ln(D))
    layers = [EncoderLayerWeights(lin(D, D), lin(D, D), lin(D, D), lin(D, D), ln(D), lin(F, D),
                                  lin(D, F), ln(D)) for _ in range(cfg.n_layers)]
    return Encoder(cfg, EncoderWeights(emb, layers))


def token_ids(n_seqs, seed):  # -> list of n_seqs lists of SEQ ids
    rng = np.random.default_rng(seed)
    return rng.integers(1000, CONFIG.vocab_size, size=(n_seqs, SEQ)).tolist()


def build_variants(names):
    """name -> (model, backend). Quantized models calibrate on token ids (no tokenizer)."""
    base = random_encoder()
    calib = token_ids(8, seed=1)
    out = {}
    for name in names:
        if name.startswith("fp32"):
            out[name] = (base, name.split("-")[1])
        elif name == "int8-dense":
            out[name] = (fdbert.quantize(base, calib, progress=False, measure_error=False), "native")
        elif name in ("int8-sparse-80", "int8-sparse-80-qattn"):
            pruned = fdbert.prune(base, sparsity=0.8, block=(1, 4))
            attention = "int8" if name.endswith("-qattn") else "fp32"
            out[name] = (fdbert.quantize(pruned, calib, progress=False, measure_error=False,
                                         attention=attention), "native")
        else:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return out


def cosine(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def validate(model, backend, batch):
    """min over tokens of cos(native row, reference row) for the same model, and the whole-output cosine."""
    with fdbert.set_backend("reference"):
        ref = model.forward_packed(batch)
    with fdbert.set_backend(backend):
        got = model.forward_packed(batch)
    num = np.einsum("nd,nd->n", ref.astype(np.float64), got.astype(np.float64))
    den = np.linalg.norm(ref.astype(np.float64), axis=1) * np.linalg.norm(got.astype(np.float64), axis=1)
    return float((num / den).min()), cosine(ref, got)


def sample_times(fn, budget_s, min_reps, max_reps=2000):  # -> seconds [reps]
    fn()  # warm-up (packs weights, faults pages in)
    times, t_end = [], time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < t_end and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.array(times)


def measure(model, backend, budget_s, bound_ms=10.0, max_batch=32):
    batches = {b: pack_sequences(token_ids(b, seed=100 + b)) for b in range(1, max_batch + 1)}
    res = {}
    with fdbert.set_backend(backend):
        def timed(b, budget, min_reps):
            return sample_times(lambda: model.forward_packed(batches[b]), budget, min_reps)

        t1 = timed(1, budget_s, 20) * 1e3
        res["lat_median"], res["lat_p90"], res["lat_p99"] = np.percentile(t1, [50, 90, 99])
        for b in (8, 32):
            t = timed(b, budget_s, 3)
            res[f"tput_{b}"] = b / np.median(t)
        best = (None, 0.0, None)  # (batch, seq/s, p99 ms)
        for b in range(1, max_batch + 1):
            t = (t1 / 1e3) if b == 1 else timed(b, budget_s / 3, 10)
            p99 = float(np.percentile(t, 99)) * 1e3
            if np.median(t) * 1e3 > bound_ms:  # latency grows with b: no larger batch can qualify
                break
            if p99 <= bound_ms and b / np.median(t) > best[1]:
                best = (b, b / np.median(t), p99)
        res["bound"] = best
    return res


def table(results, threads):
    lines = [f"| variant | backend | cos vs reference (min token / all) | batch-1 median ms | p90 ms | p99 ms "
             f"| seq/s @8 | seq/s @32 | best seq/s with p99 <= 10 ms (batch, p99) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, (backend, cos, r) in results.items():
        b, tput, p99 = r["bound"]
        bound = f"{tput:.0f} (b={b}, {p99:.1f} ms)" if b else "none"
        lines.append(f"| {name} | {backend} | {cos[0]:.6f} / {cos[1]:.6f} | {r['lat_median']:.2f} | "
                     f"{r['lat_p90']:.2f} | {r['lat_p99']:.2f} | {r['tput_8']:.1f} | {r['tput_32']:.1f} | "
                     f"{bound} |")
    return "\n".join(lines)


def header(threads):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        from fdbert_native.ops import op_paths
        isa = op_paths()["qlinear"]
    except Exception:  # noqa: BLE001 - the native backend may be absent
        isa = "n/a"
    import os
    wait = ", ".join(f"{v}={os.environ[v]}" for v in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                     if os.environ.get(v)) or "fdbert's default wait (spin ~0.6 ms, then sleep)"
    return (f"{now}; fdbert {fdbert.__version__}; {threads} threads; {wait}; "
            f"numpy {np.__version__}; {platform.processor() or platform.machine()}; int8 path {isa}; "
            f"seq {SEQ}; 1-min load average {os.getloadavg()[0]:.2f} at the end")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="all")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per measurement")
    ap.add_argument("--docs", action="store_true",
                    help="append the table to docs/benchmarks.md under '## End to end (issue 4)'")
    ap.add_argument("--label", default="", help="a label for the docs entry (e.g. 'before')")
    args = ap.parse_args(argv)
    names = VARIANTS if args.variants == "all" else tuple(args.variants.split(","))
    fdbert.set_num_threads(args.threads)
    variants = build_variants(names)
    check = pack_sequences(token_ids(4, seed=7))
    results = {}
    for name, (model, backend) in variants.items():
        cos = validate(model, backend, check)
        print(f"{name}: cosine vs reference min token {cos[0]:.6f}, all {cos[1]:.6f}", file=sys.stderr)
        if cos[0] < 0.999:
            raise SystemExit(f"{name}: the {backend} output does not match the reference (cos {cos[0]})")
        budget = min(args.budget, 1.0) if backend == "reference" else args.budget
        results[name] = (backend, cos, measure(model, backend, budget))
        print(f"{name}: done", file=sys.stderr)
    cmd = "python benchmarks/bench_e2e.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = f"{header(args.threads)}\n\n{table(results, args.threads)}\n\nCommand: `{cmd.strip()}`\n"
    print(text)
    if args.docs:
        append_docs(text, args.label)


def append_docs(text, label):
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    title = "## End to end (issue 4)"
    entry = f"\n### {label or 'run'}\n\n{text}"
    if title not in doc:
        doc = doc.rstrip("\n") + f"\n\n{title}\n\nTargets: {TARGETS}; 80%-sparse SpMM >= 3x dense INT8.\n"
    # the section runs to the next '## ' heading or the end; entries go at its end
    start = doc.index(title)
    nxt = doc.find("\n## ", start + len(title))
    end = len(doc) if nxt < 0 else nxt
    doc = doc[:end].rstrip("\n") + "\n" + entry + doc[end:]
    path.write_text(doc)


if __name__ == "__main__":
    main()
