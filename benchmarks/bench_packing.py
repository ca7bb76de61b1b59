"""Padding costs nothing: time a packed variable-length batch against the same batch padded.

A batch of 32 sequences with lengths drawn uniformly from 8..128 (seed 0) runs through a DistilBERT-base
shaped encoder (random weights, common.random_encoder; 6 layers, D 768, H 12, F 3072) three ways:
  packed  - fdbert's normal path: only the real tokens (sum of lengths) go through the layers;
  padded  - every sequence padded to 128 and all 32 x 128 positions computed (what a padded engine pays);
  singles - each sequence alone, one call per sequence, summed.
Usage: python benchmarks/bench_packing.py [--backend reference] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np

import fdbert
from common import DISTILBERT_BASE, random_encoder, timings
from fdbert.packing import pack_sequences


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="reference")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    fdbert.set_num_threads(args.threads)
    fdbert.set_backend(args.backend)
    cfg = DISTILBERT_BASE
    model = random_encoder(cfg)
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 129, size=args.batch)
    seqs = [rng.integers(1000, cfg.vocab_size, size=L).tolist() for L in lengths]
    packed = pack_sequences(seqs)
    padded = pack_sequences([s + [0] * (128 - len(s)) for s in seqs])  # 128 real-looking tokens each
    singles = [pack_sequences([s]) for s in seqs]

    model.forward_packed(packed)  # warm-up
    t_packed = timings(lambda: model.forward_packed(packed), reps=args.repeats, warmup=0).min()
    t_padded = timings(lambda: model.forward_packed(padded), reps=args.repeats, warmup=0).min()
    t_single = timings(lambda: [model.forward_packed(s) for s in singles], reps=args.repeats, warmup=0).min()
    n_real, n_pad = int(lengths.sum()), args.batch * 128
    print(f"fdbert {fdbert.__version__}, backend {fdbert.get_backend()}, {args.threads} threads, "
          f"numpy {np.__version__}, {platform.processor() or platform.machine()}")
    print(f"batch {args.batch}, lengths 8..128 uniform (seed 0): {n_real} real tokens vs {n_pad} padded "
          f"(real/padded = {n_real / n_pad:.3f})")
    print("| path | time (s) | ratio to packed |")
    print("|---|---|---|")
    for name, t in (("packed (fdbert)", t_packed), ("padded to 128", t_padded),
                    ("sum of single sequences", t_single)):
        print(f"| {name} | {t:.3f} | {t / t_packed:.2f} |")
    print(f"packed/padded = {t_packed / t_padded:.3f}; packed/singles = {t_packed / t_single:.3f}")


if __name__ == "__main__":
    main()
