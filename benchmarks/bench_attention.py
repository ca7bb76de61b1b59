"""Float32 vs INT8 attention kernels (fdbert_native._fp32.attention / attention_int8).

    python benchmarks/bench_attention.py                      # batch 1 and 8, 1 and 2 threads
    python benchmarks/bench_attention.py --batches 1 --threads 2 --seq 128 384

DistilBERT-base heads (12 x 64), every sequence `--seq` tokens, q, k, v the thirds of one fused QKV
output (row-strided views, as the fused INT8 block passes them), u8 output for the O projection (the
block's `quantize=`). Each kernel is first validated against its reference (fdbert.reference
attention / attention_int8), then timed: the minimum wall time over repeated calls. The INT8 rows
also report how far INT8 attention is from the float one on this random data (max |diff|).
"""

from __future__ import annotations

import argparse
import datetime
import platform

import numpy as np

from common import best_time
from fdbert import reference as ref
from fdbert.int8 import quantize_u8
from fdbert_native import _fp32

H, DH = 12, 64
QPARAMS = (0.02, 128)   # the u8 output's (scale, zero point)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seq", type=int, nargs="+", default=[128])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.machine()}  "
          f"float32 path {_fp32.best_isa()}, INT8 path {_fp32.INT8_ATTENTION_PATHS.best_isa()}; "
          f"H {H}, Dh {DH}, u8 output")
    print("| batch x seq | threads | float32 ms | INT8 ms | float32 / INT8 | max abs(INT8 - float32) |")
    print("|---|---|---|---|---|---|")
    for L in args.seq:
        for B in args.batches:
            n = B * L
            cu = (np.arange(B + 1) * L).astype(np.int32)
            qkv = rng.normal(0, 1, (n, 3, H, DH)).astype(np.float32)
            q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
            out = np.empty((n, H, DH), np.uint8)
            # validate before timing: u8 outputs equal quantize_u8 of the references (a code may
            # differ by one where the float paths round differently; report, don't hide)
            f32_ref = ref.attention(q, k, v, cu, cu)
            i8_ref = ref.attention_int8(q, k, v, cu, cu)
            for name, fn, want in (("float32", _fp32.attention, f32_ref), ("INT8", _fp32.attention_int8, i8_ref)):
                got = fn(q, k, v, cu, cu, np.empty((n, H, DH), np.uint8), quantize=QPARAMS)
                off = np.abs(got.astype(int) - quantize_u8(want, *QPARAMS).astype(int)).max()
                if off > 1:
                    raise SystemExit(f"VALIDATION FAILED: {name} attention is {off} codes from its reference")
            gap = float(np.abs(i8_ref - f32_ref).max())
            for nt in args.threads:
                tf = best_time(lambda: _fp32.attention(q, k, v, cu, cu, out, quantize=QPARAMS, num_threads=nt),
                               max_reps=10_000)
                ti = best_time(lambda: _fp32.attention_int8(q, k, v, cu, cu, out, quantize=QPARAMS,
                                                            num_threads=nt), max_reps=10_000)
                print(f"| {B} x {L} | {nt} | {tf * 1e3:.3f} | {ti * 1e3:.3f} | {tf / ti:.2f} | {gap:.4f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
