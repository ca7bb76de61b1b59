"""Time the native float32 ops against the NumPy reference at DistilBERT-base shapes.

A batch of 32 sequences x 128 tokens (n = 4096 packed tokens), D 768, H 12, Dh 64, F 3072:

    layer_norm     x [n, D]                    (twice per layer)
    softmax        scores [B*H*L, L]           (what attention normalises, as rows)
    gelu           h [n, F]                    (FFN hidden)
    attention      q, k, v [n, H, Dh], B sequences of L
    quantize_u8    x [n, D] -> u8              (INT8 GEMM inputs)
    dequantize_u8  u8 [n, D] -> x

Every op is validated against the reference first (|native - ref| <= atol + rtol |ref|; quantize
and dequantize exactly), then timed: the median of --repeats runs after one warm-up, for each ISA
path this CPU can run and each thread count. Kernel columns write into preallocated outputs; the
"op" column is the backend function fdbert.ops dispatches to (fdbert_native.ops, best path, default
threads), which allocates its output like the NumPy reference does -- on a fresh 50 MB array the
first-touch page faults can cost more than the kernel. The reference runs with the reference
backend selected (its attention calls fdbert.ops.softmax). Prints a Markdown table.

Usage: python benchmarks/bench_fp32_ops.py [--repeats 20] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np

import fdbert
import fdbert_native
import fdbert_native.ops as nops
from common import check_close, timings
from fdbert import int8
from fdbert import reference as ref
from fdbert_native import _fp32

B, L, D, H, F = 32, 128, 768, 12, 3072
Dh = D // H
n = B * L


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, D)).astype(np.float32)
    return {
        "x": x,
        "w": rng.normal(1, 0.1, D).astype(np.float32),
        "b": rng.normal(0, 0.1, D).astype(np.float32),
        "scores": rng.normal(0, 2, (B * H * L, L)).astype(np.float32),
        "h": rng.normal(0, 2, (n, F)).astype(np.float32),
        "q": rng.normal(0, 1, (n, H, Dh)).astype(np.float32),
        "k": rng.normal(0, 1, (n, H, Dh)).astype(np.float32),
        "v": rng.normal(0, 1, (n, H, Dh)).astype(np.float32),
        "cu": (np.arange(B + 1) * L).astype(np.int32),
        "xq": int8.quantize_u8(x, 0.05, 128),
        # preallocated, already touched outputs of the kernel columns
        "out_x": np.zeros((n, D), np.float32), "out_u8": np.zeros(n * D, np.uint8),
        "out_scores": np.zeros((B * H * L, L), np.float32), "out_h": np.zeros(n * F, np.float32),
        "out_q": np.zeros((n, H, Dh), np.float32),
    }


def ops(a):
    """name -> (reference thunk, native kernel thunk taking isa and num_threads, backend op thunk,
    (atol, rtol) or None = exact)."""
    return {
        "layer_norm [n, D]": (
            lambda: ref.layer_norm(a["x"], a["w"], a["b"], 1e-12),
            lambda isa, nt: _fp32.layer_norm(a["x"], a["w"], a["b"], 1e-12, a["out_x"],
                                             isa=isa, num_threads=nt),
            lambda: nops.layer_norm(a["x"], a["w"], a["b"], 1e-12),
            (1e-5, 1e-5)),
        "softmax [B*H*L, L]": (
            lambda: ref.softmax(a["scores"]),
            lambda isa, nt: _fp32.softmax(a["scores"], a["out_scores"], isa=isa, num_threads=nt),
            lambda: nops.softmax(a["scores"]),
            (1e-37, 2e-6)),
        "gelu [n, F]": (
            lambda: ref.gelu(a["h"]),
            lambda isa, nt: _fp32.gelu(a["h"].reshape(-1), a["out_h"], isa=isa,
                                       num_threads=nt).reshape(a["h"].shape),
            lambda: nops.gelu(a["h"]),
            (2e-6, 2e-6)),
        "attention [n, H, Dh]": (
            lambda: ref.attention(a["q"], a["k"], a["v"], a["cu"], a["cu"]),
            lambda isa, nt: _fp32.attention(a["q"], a["k"], a["v"], a["cu"], a["cu"], a["out_q"],
                                            isa=isa, num_threads=nt),
            lambda: nops.attention(a["q"], a["k"], a["v"], a["cu"], a["cu"]),
            (5e-6, 0.0)),
        "quantize_u8 [n, D]": (
            lambda: int8.quantize_u8(a["x"], 0.05, 128),
            lambda isa, nt: _fp32.quantize_u8(a["x"].reshape(-1), np.float32(0.05), 128,
                                              a["out_u8"], isa=isa,
                                              num_threads=nt).reshape(a["x"].shape),
            lambda: nops.quantize_u8(a["x"], 0.05, 128),
            None),
        "dequantize_u8 [n, D]": (
            lambda: int8.dequantize_u8(a["xq"], 0.05, 128),
            lambda isa, nt: _fp32.dequantize_u8(a["xq"].reshape(-1), np.float32(0.05), 128,
                                                a["out_x"].reshape(-1), isa=isa,
                                                num_threads=nt).reshape(a["xq"].shape),
            lambda: nops.dequantize_u8(a["xq"], 0.05, 128),
            None),
    }


def median_ms(fn, repeats):  # one warm-up call (page faults, OpenMP team creation), then `repeats`
    return 1e3 * float(np.median(timings(fn, reps=repeats)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()

    a = inputs()
    isas = _fp32.supported_isas()
    print(f"# {platform.processor() or platform.machine()}, {fdbert_native.get_num_threads()} threads "
          f"available, ISA paths {isas}, numpy {np.__version__}")
    cols = [f"{isa} {nt}T" for isa in isas for nt in args.threads]
    print("| op (DistilBERT shape) | max err | NumPy ref ms | " + " | ".join(f"{c} ms" for c in cols)
          + " | op ms | speed-up (best kernel) |")
    print("|---" * (5 + len(cols)) + "|")
    for name, (ref_fn, nat_fn, op_fn, tol) in ops(a).items():
        with fdbert.set_backend("reference"):
            want = ref_fn()
            t_ref = median_ms(ref_fn, args.repeats)
        err = "-"
        for isa in isas:
            for nt in args.threads:
                err = check_close(f"{name} {isa} {nt}T", want, nat_fn(isa, nt), tol)
        check_close(f"{name} op", want, op_fn(), tol)
        t_nat = [median_ms(lambda: nat_fn(isa, nt), args.repeats) for isa in isas for nt in args.threads]
        t_op = median_ms(op_fn, args.repeats)
        print(f"| {name} | {err} | {t_ref:.2f} | " + " | ".join(f"{t:.2f}" for t in t_nat)
              + f" | {t_op:.2f} | {t_ref / min(t_nat):.1f}x |")


if __name__ == "__main__":
    main()
