"""Benchmark the AMX-INT8 dense GEMM path against the avx512vnni path (fdbert_native._qgemm).

    python benchmarks/bench_amx.py                         # DistilBERT shapes, M 128/512/1024, 1 and 2 threads
    python benchmarks/bench_amx.py --M 32 64 --threads 1

Every (shape, path, thread count) is first VALIDATED exactly against the int64 NumPy product (first
`--check-rows` rows), then timed as in bench_kernels.py (common.best_time): minimum wall clock over
best-of-N runs, in `--rounds` passes over the whole table (the minimum filters out a shared machine's noise). Raw int32
outputs (qgemm_s32) and, in the last column, the u8-requantized output with GELU (FFN1's epilogue).
GMAC = 1e9 multiply-adds; speedup = vnni time / amx time.
"""
import argparse
import time

import numpy as np

import fdbert_native
from common import SHAPES, best_time, check_int_product, cpu_name, int8_operands
from fdbert_native import _qgemm as q


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--M", type=int, nargs="+", default=[128, 512, 1024])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--check-rows", type=int, default=256)
    ap.add_argument("--min-seconds", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    granted = fdbert_native.request_amx_permission()
    if not q.isa_supported("amx"):
        raise SystemExit(f"AMX is not usable here (permission granted: {granted}; "
                         f"usable: {q.supported_dense_isas()})")
    isas = ("avx512vnni", "amx")
    rng = np.random.default_rng(0)
    cases = []
    for M in args.M:   # build and VALIDATE everything before timing anything
        for N, K in SHAPES:
            x, w = int8_operands(rng, M, N, K)
            packed, colsum = q.pack_dense(w)
            out = np.empty((M, N), np.int32)
            for isa in isas:
                for nt in args.threads:
                    out[:] = -1
                    q.qgemm_s32(x, packed, out, isa=isa, num_threads=nt)
                    check_int_product(f"{isa} M={M} N={N} K={K} t={nt}", out, x, w, min(M, args.check_rows))
            cases.append((M, N, K, x, packed, colsum, out))

    times = {}
    for _ in range(args.rounds):
        for M, N, K, x, packed, colsum, out in cases:
            comp = (7 * colsum).astype(np.int32)
            mult = np.full(N, 1e-4, np.float32)
            bias = np.zeros(N, np.float32)
            u8 = np.empty((M, N), np.uint8)
            for nt in args.threads:
                for isa in isas:
                    ts = best_time(lambda: q.qgemm_s32(x, packed, out, isa=isa, num_threads=nt),
                                   min_seconds=args.min_seconds)
                    tg = best_time(lambda: q.qgemm_u8(x, packed, comp, mult, bias, 0.05, 128, u8,
                                                      gelu=True, isa=isa, num_threads=nt),
                                   min_seconds=args.min_seconds)
                    key = (M, N, K, nt, isa)
                    old = times.get(key, (np.inf, np.inf))
                    times[key] = (min(old[0], ts), min(old[1], tg))

    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  CPU: {cpu_name()}  "
          f"usable: {', '.join(q.supported_dense_isas())}; {args.rounds} rounds, min time\n")
    print("| M | N | K | threads | vnni ms | vnni GMAC/s | amx ms | amx GMAC/s | amx speedup "
          "| u8+GELU vnni ms | u8+GELU amx ms | u8+GELU speedup |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for M, N, K, *_ in cases:
        for nt in args.threads:
            (vs, vg), (as_, ag) = times[(M, N, K, nt, "avx512vnni")], times[(M, N, K, nt, "amx")]
            g = M * N * K / 1e9
            print(f"| {M} | {N} | {K} | {nt} | {vs * 1e3:.3f} | {g / vs:.0f} | {as_ * 1e3:.3f} "
                  f"| {g / as_:.0f} | {vs / as_:.2f}x | {vg * 1e3:.3f} | {ag * 1e3:.3f} "
                  f"| {vg / ag:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
