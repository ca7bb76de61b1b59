"""The INT8 FFN's GELU -> u8 step on float32 input (blocks with float outlier channels), two ways.

    gelu+quantize     _fp32.gelu into a float32 [n, F], then _fp32.quantize_u8 (two passes)
    gelu_quantize_u8  _qgemm.gelu_quantize_u8: one pass, the fused epilogue's cheap-first GELU

h [4096, 1536] ~ N(0, 1.5^2) (MiniLM at B=32 x 128), scale 0.02, zero point 10, 1 thread. The codes
are checked equal first. Each round times every side once (order alternated), as the thread CPU
time of one call (robust to other processes on a shared machine); prints the median per side and
the per-round ratio's spread. A build without gelu_quantize_u8 (before it existed) times the first
side only: run this script with each build's Python to compare builds.

Usage: python benchmarks/bench_gelu_u8.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import alternate, cpu_name, spread

from fdbert_native import _fp32, _qgemm


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
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
