"""Roofline of fdbert's hot native kernels: achieved GMAC/s against this machine's measured ceilings.

    python benchmarks/roofline.py                     # 2 threads, 128 and 1,024 tokens
    python benchmarks/roofline.py --out docs/roofline.png

Ceilings, measured here by register-only loops on one core (x threads): the AMX-INT8 tile unit
(`tdpbusd`, _qgemm.amx_peak_gmacs), AVX-512 VNNI (`vpdpbusd`, _qgemm.vnni_peak_gmacs) and float32
FMA (`vfmadd231ps`, _fp32.fma_peak_gmacs); memory: the bandwidth of large array copies, one per
thread (read + write bytes). A kernel's point: x = arithmetic intensity (MACs per byte of its
compulsory traffic: inputs, weights, outputs, read or written once), y = achieved GMAC/s, at the
DistilBERT-base shapes of the fused INT8 block with its real epilogues:

    QKV    [M, 768] x [768, 2304], f32 out            (AMX; one stacked GEMM)
    FFN1   [M, 768] x [768, 3072], GELU -> u8 out     (AMX; and the VNNI dense GEMM and the 80%-sparse
                                                       SpMM that CPUs without AMX run)
    FFN2   [M, 3072] x [3072, 768], f32 out + residual (AMX)
    attn   12 heads x Dh 64 over sequences of 128, fp32, u8 out (MACs: 2 L^2 Dh per sequence, head)
    attn8  the same, INT8 (attention_int8: VNNI ceiling; validated as its spec test: within 3 sv
           of fdbert's NumPy reference)

For the SpMM, MACs are the useful ones (nonzero blocks), bytes its block stream (8 per 1x4 block).
Every kernel is validated before it is timed (GEMMs: the int32 sums equal the int64 NumPy product
exactly; attention: within 1e-4 of fdbert's NumPy reference). Timing: the minimum over repeats
(benchmarks/common.best_time). Prints a markdown table and writes the plot.
"""
import argparse
import datetime
import platform
import sys
import threading
import time

import numpy as np

import fdbert_native
from common import best_time, check_int_product, cpu_name, int8_operands, sparse_weight
from fdbert.reference.attention import attention as ref_attention
from fdbert.reference.attention_int8 import attention_int8 as ref_attention_int8
from fdbert_native import _fp32, _qgemm as q


def copy_bandwidth_gbs(threads, mib=256):
    """Read + write GB/s of `threads` concurrent copies of mib MiB each (NumPy releases the GIL)."""
    n = mib * 2**20 // 4
    pairs = [(np.ones(n, np.float32), np.empty(n, np.float32)) for _ in range(threads)]
    best = 0.0
    for _ in range(5):
        workers = [threading.Thread(target=np.copyto, args=(dst, src)) for src, dst in pairs]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, 2 * threads * n * 4 / (time.perf_counter() - t) / 1e9)
    return best


def gemm_points(M, threads, rng, has_amx):
    """(label, GMAC, bytes, seconds) of the block's GEMMs at M tokens, each validated first."""
    out = []
    for label, N, K, kind in (("QKV", 2304, 768, "f32"), ("FFN1", 3072, 768, "gelu-u8"),
                              ("FFN2", 768, 3072, "f32+res")):
        x, w = int8_operands(rng, M, N, K)
        packed, colsum = q.pack_dense(w)
        comp = (128 * colsum).astype(np.int32)
        mult = np.full(N, 2e-5, np.float32)
        bias = rng.normal(0, 0.1, N).astype(np.float32)
        res = rng.normal(0, 1, (M, N)).astype(np.float32) if kind == "f32+res" else None
        s32 = np.empty((M, N), np.int32)
        f32, u8 = np.empty((M, N), np.float32), np.empty((M, N), np.uint8)
        out_bytes = M * N * (1 if kind == "gelu-u8" else 4) + (M * N * 4 if res is not None else 0)

        def run(isa, packed=packed):
            if kind == "gelu-u8":
                return lambda: q.qgemm_u8(x, packed, comp, mult, bias, 0.05, 3, u8, gelu=True, isa=isa,
                                          num_threads=threads)
            return lambda: q.qgemm_f32(x, packed, comp, mult, bias, f32, residual=res, isa=isa,
                                       num_threads=threads)
        isas = (["amx"] if has_amx else []) + (["avx512vnni"] if label == "FFN1" else [])
        for isa in isas:
            q.qgemm_s32(x, packed, s32, isa=isa, num_threads=threads)
            check_int_product(f"{isa} {label} M={M}", s32, x, w, M)
            out.append((f"{isa} {label}", M * N * K / 1e9, M * K + N * K + out_bytes, best_time(run(isa))))
        if label == "FFN1":   # the 80%-sparse SpMM on the same shape: useful MACs, block-stream bytes
            ws, bsr = sparse_weight(rng, w, 0.2)
            q.qspmm_s32(x, bsr, s32, isa="avx512vnni", num_threads=threads)
            check_int_product(f"spmm {label} M={M}", s32, x, ws, M)
            nnz_macs = int(np.count_nonzero(ws.reshape(N, K // 4, 4).any(axis=2))) * 4
            fn = lambda: q.qspmm_u8(x, bsr, comp, mult, bias, 0.05, 3, u8, gelu=True,  # noqa: E731
                                    isa="avx512vnni", num_threads=threads)
            out.append(("spmm80 FFN1", M * nnz_macs / 1e9, M * K + bsr.blk.nbytes + out_bytes,
                        best_time(fn)))
    return out


def attention_point(batch, threads, rng, int8=False):
    L, H, Dh = 128, 12, 64
    n = batch * L
    cu = np.arange(0, n + 1, L, dtype=np.int32)
    qkv = rng.normal(0, 1, (3, n, H, Dh)).astype(np.float32)
    op, ref = (_fp32.attention_int8, ref_attention_int8) if int8 else (_fp32.attention, ref_attention)
    a = op(*qkv, cu, cu, np.zeros((n, H, Dh), np.float32), num_threads=threads)
    # INT8: a u8 softmax weight may round the other way (docs/int8.md): 3 of them move <= 3 sv
    atol = 3 * float(np.abs(qkv[2]).max()) / 127 if int8 else 1e-4
    np.testing.assert_allclose(a, ref(*qkv, cu, cu), atol=atol, rtol=0)
    aq = np.empty((n, H, Dh), np.uint8)
    fn = lambda: op(*qkv, cu, cu, aq, num_threads=threads, quantize=(0.01, 128))  # noqa: E731
    return (batch * H * 2 * L * L * Dh / 1e9, 3 * n * H * Dh * 4 + n * H * Dh, best_time(fn))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--M", type=int, nargs="+", default=[128, 1024], help="tokens (multiples of 128)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="roofline.png")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    has_amx = fdbert_native.request_amx_permission() and q.isa_supported("amx")
    nt = args.threads
    peaks = {"VNNI (vpdpbusd)": max(q.vnni_peak_gmacs(3_000_000) for _ in range(5)) * nt,
             "fp32 FMA": max(_fp32.fma_peak_gmacs(3_000_000) for _ in range(5)) * nt}
    if has_amx:
        peaks["AMX-INT8 (tdpbusd)"] = max(q.amx_peak_gmacs(300_000) for _ in range(5)) * nt
    bw = copy_bandwidth_gbs(nt)
    points = []
    for M in args.M:
        points += [(f"{label} M={M}", *rest) for label, *rest in gemm_points(M, nt, rng, has_amx)]
        points.append((f"attention M={M}", *attention_point(M // 128, nt, rng)))
        points.append((f"attention-int8 M={M}", *attention_point(M // 128, nt, rng, int8=True)))

    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  CPU: {cpu_name()}  "
          f"{nt} threads  numpy {np.__version__}  {platform.machine()}")
    print("# ceilings (x threads): " + ", ".join(f"{k} {v:,.0f} GMAC/s" for k, v in peaks.items())
          + f"; copy bandwidth {bw:.1f} GB/s")
    print("| kernel | GMAC | MAC/byte | ms | GMAC/s | % of its compute ceiling | bandwidth bound GMAC/s |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for label, gmac, nbytes, sec in points:
        ceiling = (peaks.get("AMX-INT8 (tdpbusd)") if label.startswith("amx") else
                   peaks["fp32 FMA"] if label.startswith("attention ") else peaks["VNNI (vpdpbusd)"])
        ai = gmac * 1e9 / nbytes
        rate = gmac / sec
        rows.append((label, ai, rate))
        print(f"| {label} | {gmac:.3f} | {ai:.1f} | {sec * 1e3:.3f} | {rate:,.0f} | "
              f"{100 * rate / ceiling:.0f}% | {bw * ai:,.0f} |")
    print("\nCommand: `" + " ".join(["python", "benchmarks/roofline.py", *sys.argv[1:]]) + "`")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5.5))
    x = np.logspace(0, 3, 200)
    for (name, peak), style in zip(peaks.items(), ("-", "--", ":")):
        ax.plot(x, np.minimum(peak, bw * x), "k" + style, lw=1, label=f"{name}: {peak:,.0f} GMAC/s")
    colors = {"amx": "tab:blue", "avx512vnni": "tab:orange", "spmm80": "tab:green", "attention": "tab:red",
              "attention-int8": "tab:purple"}
    small = f"M={args.M[0]}"
    for label, ai, rate in rows:
        c = colors[label.split()[0]]
        first = label.endswith(small)   # the smallest M: open markers, labels to the left
        ax.plot(ai, rate, "o", color=c, ms=7, mfc="none" if first else c)
        ax.annotate(label.rsplit(" M=", 1)[0], (ai, rate), fontsize=7, color=c,
                    xytext=(-5, -9) if first else (5, 3), textcoords="offset points",
                    ha="right" if first else "left")
    ax.set_xlim(1, 1000)
    ax.set_ylim(50, 2 * max(peaks.values()))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (MACs per byte of compulsory traffic)")
    ax.set_ylabel("GMAC/s")
    ax.set_title(f"fdbert native kernels, {nt} threads, DistilBERT-base shapes "
                 f"(open: {args.M[0]} tokens, filled: {args.M[-1]})\n"
                 f"memory roof: {bw:.0f} GB/s (array copies); {cpu_name()}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
