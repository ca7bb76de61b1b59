"""The native float32 linear (fdbert_native._sgemm) vs NumPy's BLAS, per GEMM and end to end.

Part 1: y = x @ W.T + b at DistilBERT-base shapes (M = 1, 128, 1024 tokens; W 768x768, 3072x768,
768x3072), 1 and 2 threads, GFLOP/s (2 M N K / best time) of each; the native result is first
checked against float64 (the spec test's bound) so nothing wrong is ever timed.
Part 2: a DistilBERT-base fp32 forward (random weights, seq 128, batch 1 and 8) on the native
backend, with linear on the native kernel vs on NumPy (the native linear forced to decline), 1 and 2
threads. NumPy's BLAS threads follow fdbert.set_num_threads (threadpoolctl).
Usage: python benchmarks/bench_sgemm.py [--repeats 5] [--skip-e2e]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform

import numpy as np

import fdbert
import fdbert_native.ops as nops
from fdbert.backend import Declined
from common import DISTILBERT_BASE, random_encoder, timings
from fdbert.packing import pack_sequences
from fdbert_native import _sgemm

SHAPES = [(M, N, K) for M in (1, 128, 1024) for N, K in ((768, 768), (3072, 768), (768, 3072))]


def check(x, w, b, y):
    K = x.shape[1]
    exact = x.astype(np.float64) @ w.astype(np.float64).T + b
    bound = (K + 2) * 2.0**-24 * (np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T + np.abs(b))
    assert np.all(np.abs(y - exact) <= bound), "native linear outside its error bound"


def gemm_table(repeats):
    """Per thread count, every native GEMM first, then every NumPy one: OpenBLAS's workers busy-wait
    after each call and would steal the second core from a native call timed right after."""
    rng = np.random.default_rng(0)
    ops = []
    for M, N, K in SHAPES:
        x = rng.standard_normal((M, K), dtype=np.float32)
        w = rng.standard_normal((N, K), dtype=np.float32)
        b = rng.standard_normal(N, dtype=np.float32)
        out = np.empty((M, N), np.float32)
        check(x, w, b, _sgemm.linear(x, w, b, out))
        ops.append(((M, N, K), lambda x=x, w=w, b=b, out=out: _sgemm.linear(x, w, b, out),
                    lambda x=x, w=w, b=b: x @ w.T + b))
    print("| M | N | K | threads | native GFLOP/s | NumPy GFLOP/s | native / NumPy |")
    print("|---|---|---|---|---|---|---|")
    for nt in (1, 2):
        fdbert.set_num_threads(nt)   # ours and (threadpoolctl) OpenBLAS's
        t_nat = [timings(native, reps=repeats).min() for _, native, _ in ops]
        t_np = [timings(numpy, reps=repeats).min() for _, _, numpy in ops]
        for ((M, N, K), _, _), tn, tb in zip(ops, t_nat, t_np):
            gf = 2 * M * N * K / 1e9
            print(f"| {M} | {N} | {K} | {nt} | {gf / tn:.1f} | {gf / tb:.1f} | {tb / tn:.2f} |")


@contextlib.contextmanager
def numpy_linear():
    """Make the native linear decline, so the reference (NumPy's BLAS) runs every GEMM."""
    saved = nops.linear

    def declined(*args, **kwargs):
        raise Declined("benchmark: NumPy linear")
    nops.linear = declined
    try:
        yield
    finally:
        nops.linear = saved


def e2e_table(repeats):
    cfg = DISTILBERT_BASE
    model = random_encoder(cfg)
    rng = np.random.default_rng(0)
    batches = {B: pack_sequences([rng.integers(1000, cfg.vocab_size, size=128).tolist() for _ in range(B)])
               for B in (1, 8)}
    print("| batch x seq | threads | linear on native sgemm (ms) | linear on NumPy BLAS (ms) |")
    print("|---|---|---|---|")
    with fdbert.set_backend("native"):
        for nt in (1, 2):   # every native run first, then every NumPy one (see gemm_table)
            fdbert.set_num_threads(nt)
            t_nat = {B: timings(lambda: model.forward_packed(batch), reps=repeats).min()
                     for B, batch in batches.items()}
            with numpy_linear():
                t_np = {B: timings(lambda: model.forward_packed(batch), reps=repeats).min()
                        for B, batch in batches.items()}
            for B in batches:
                print(f"| {B} x 128 | {nt} | {t_nat[B] * 1e3:.1f} | {t_np[B] * 1e3:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, fdbert {fdbert.__version__}, "
          f"numpy {np.__version__}, sgemm path {_sgemm.best_isa()}, {platform.machine()}")
    gemm_table(args.repeats)
    if not args.skip_e2e:
        e2e_table(args.repeats)


if __name__ == "__main__":
    main()
