"""Benchmark the native INT8 dense GEMM and 1x4 block-sparse SpMM (fdbert_native._qgemm).

    python benchmarks/bench_kernels.py                  # DistilBERT shapes, 1 and 2 threads
    python benchmarks/bench_kernels.py --M 128 --threads 1 --isa avx512

Order of work (llm.c habit): every kernel x shape is first VALIDATED exactly against the int64
NumPy product (on the first `--check-rows` rows for big M), then timed. Timing is the minimum
wall clock over best-of-N runs repeated in `--rounds` passes over the whole table (the minimum
filters out time lost to other processes on a shared machine).

Reported per shape: dense GMAC/s as % of the vpdpbusd peak (a register-only loop of 24
independent vpdpbusd zmm, single thread, x threads for the multi-thread rows): of the highest peak
seen during the run, and (median over rounds) of the peak probed right next to that timing; the
sparse kernel's speedup over dense (median over rounds) and its "dense-equivalent" GMAC/s
(M*N*K / time). GMAC = 1e9 multiply-adds.
"""
import argparse
import time

import numpy as np

from common import SHAPES, best_time, check_int_product, cpu_name, int8_operands, sparse_weight
from fdbert_native import _qgemm as q


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--M", type=int, nargs="+", default=[128, 512, 1024, 4096])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--density", type=float, default=0.2, help="kept fraction of 1x4 blocks")
    ap.add_argument("--isa", default="auto", choices=("auto",) + q.ISAS)
    ap.add_argument("--check-rows", type=int, default=256)
    ap.add_argument("--min-seconds", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epilogue-M", type=int, default=512,
                    help="M of the fused-epilogue table (0: skip it)")
    args = ap.parse_args()

    isa = q.best_isa() if args.isa == "auto" else args.isa
    rng = np.random.default_rng(0)
    has_vnni = q.isa_supported("avx512vnni")
    peak = max(q.vnni_peak_gmacs(3_000_000) for _ in range(25)) if has_vnni else float("nan")
    cases = []
    for M in args.M:   # build and VALIDATE everything before timing anything
        for N, K in SHAPES:
            x, w = int8_operands(rng, M, N, K)
            packed, _ = q.pack_dense(w)
            wm, bsr = sparse_weight(rng, w, args.density)
            out = np.empty((M, N), np.int32)
            rows = min(M, args.check_rows)
            for nt in args.threads:
                out[:] = -1
                q.qgemm_s32(x, packed, out, isa=isa, num_threads=nt)
                check_int_product(f"dense M={M} N={N} K={K} t={nt}", out, x, w, rows)
                out[:] = -1
                q.qspmm_s32(x, bsr, out, isa=isa, num_threads=nt)
                check_int_product(f"sparse M={M} N={N} K={K} t={nt}", out, x, wm, rows)
            cases.append((M, N, K, x, packed, bsr, out))
    # The machine may be shared: its speed changes by 2x within seconds (another process on the
    # sibling hyperthread). So each row is timed next to a fresh peak probe, and the ratios
    # (efficiency = dense GMAC/s / that local peak; speedup = dense time / sparse time, same
    # round) are the median over rounds; absolute times are the minimum over rounds.
    probe = (lambda: max(q.vnni_peak_gmacs(2_000_000) for _ in range(5))) if has_vnni else (lambda: np.nan)
    rows_out = {}
    for r in range(args.rounds):
        for M, N, K, x, packed, bsr, out in cases:
            for nt in args.threads:
                p0 = probe()
                td = best_time(lambda: q.qgemm_s32(x, packed, out, isa=isa, num_threads=nt),
                               min_seconds=args.min_seconds)
                ts = best_time(lambda: q.qspmm_s32(x, bsr, out, isa=isa, num_threads=nt),
                               min_seconds=args.min_seconds)
                local = max(p0, probe())
                peak = max(peak, local)
                rows_out.setdefault((M, N, K, nt), []).append((td, ts, local))

    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  CPU: {cpu_name()}  isa: {isa}  "
          f"supported: {', '.join(q.supported_isas())}")
    print(f"# vpdpbusd zmm peak, 1 thread: max seen {peak:.0f} GMAC/s; sparse: {args.density:.0%} of 1x4 "
          f"blocks kept ({1 - args.density:.0%} sparse); {args.rounds} rounds\n")
    print("| M | N | K | threads | dense ms | dense GMAC/s | % of peak x threads | % of local peak x threads "
          "| sparse ms | sparse speedup | sparse dense-equiv GMAC/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (M, N, K, nt), runs in rows_out.items():
        macs = M * N * K
        td, ts = min(r[0] for r in runs), min(r[1] for r in runs)
        eff = float(np.median([macs / r[0] / 1e9 / (r[2] * nt) for r in runs]))
        speedup = float(np.median([r[0] / r[1] for r in runs]))
        print(f"| {M} | {N} | {K} | {nt} | {td * 1e3:.3f} | {macs / td / 1e9:.0f} "
              f"| {100 * macs / td / 1e9 / (peak * nt):.0f}% | {100 * eff:.0f}% "
              f"| {ts * 1e3:.3f} | {speedup:.2f}x | {macs / ts / 1e9:.0f} |", flush=True)
    if args.epilogue_M:
        epilogue_table(rng, args.epilogue_M, isa, args.density, args.min_seconds)


def epilogue_table(rng, M, isa, density, min_seconds):
    """Cost of the fused epilogue: one thread, N=3072, K=768 (FFN up, where GELU runs)."""
    N, K = 3072, 768
    x, w = int8_operands(rng, M, N, K)
    packed, colsum = q.pack_dense(w)
    _, bsr = sparse_weight(rng, w, density)
    comp = (7 * colsum).astype(np.int32)
    mult = np.full(N, 1e-4, np.float32)
    bias = rng.normal(0, 1, N).astype(np.float32)
    residual = rng.normal(0, 1, (M, N)).astype(np.float32)
    f32, u8, s32 = np.empty((M, N), np.float32), np.empty((M, N), np.uint8), np.empty((M, N), np.int32)
    variants = {
        "s32 (raw)": (lambda w_: (q.qgemm_s32 if w_ is packed else q.qspmm_s32)(x, w_, s32, isa=isa, num_threads=1)),
        "f32 + bias": (lambda w_: (q.qgemm_f32 if w_ is packed else q.qspmm_f32)(
            x, w_, comp, mult, bias, f32, isa=isa, num_threads=1)),
        "f32 + bias + residual": (lambda w_: (q.qgemm_f32 if w_ is packed else q.qspmm_f32)(
            x, w_, comp, mult, bias, f32, residual=residual, isa=isa, num_threads=1)),
        "u8 requant": (lambda w_: (q.qgemm_u8 if w_ is packed else q.qspmm_u8)(
            x, w_, comp, mult, bias, 0.05, 128, u8, isa=isa, num_threads=1)),
        "u8 requant + GELU": (lambda w_: (q.qgemm_u8 if w_ is packed else q.qspmm_u8)(
            x, w_, comp, mult, bias, 0.05, 128, u8, gelu=True, isa=isa, num_threads=1)),
    }
    print(f"\n# fused epilogue, M={M} N={N} K={K}, 1 thread (ms, best of N)\n")
    print("| output | dense ms | sparse ms |")
    print("|---|---|---|")
    for name, fn in variants.items():
        td = best_time(lambda: fn(packed), min_seconds=min_seconds)
        ts = best_time(lambda: fn(bsr), min_seconds=min_seconds)
        print(f"| {name} | {td * 1e3:.3f} | {ts * 1e3:.3f} |", flush=True)


if __name__ == "__main__":
    main()
