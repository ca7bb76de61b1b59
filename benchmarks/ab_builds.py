"""Forward time of one bench_e2e model under two builds of fdbert, alternated: the A/B of a change.

These machines are shared and their speed drifts by 10-30% over minutes, so a before/after figure is
only worth something when the two builds run side by side. Each round runs every tree once, in its
own process (PYTHONPATH=TREE: a checkout with its extensions built in place, e.g.
`git worktree add /tmp/base HEAD~1 && (cd /tmp/base && python setup.py build_ext --inplace)`); a
process builds the model (common.build_variants, bench_e2e's variants), then times batch 1 and batch 8 forwards
(`forward_packed`, medians of `--reps` calls). The table gives each tree's median over rounds and
the ratio B/A per round. Each child imports its own tree's benchmarks/common.py, so both trees must
be from after that module was added.

    python benchmarks/ab_builds.py /tmp/base .                       # int8-sparse-80, 3 rounds
    FDBERT_DISABLE_CPU_FEATURES=avx512f python benchmarks/ab_builds.py /tmp/base . --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np


def child(variant, reps, threads):
    """In the tree's process: build the model and print {batch: median ms} as JSON."""
    sys.path.insert(0, os.path.join(os.environ["PYTHONPATH"], "benchmarks"))
    import fdbert
    from common import build_variants, timings, token_ids
    from fdbert.packing import pack_sequences

    fdbert.set_num_threads(threads)
    model, backend = build_variants([variant])[variant]
    out = {}
    with fdbert.set_backend(backend):
        for b, n in ((1, reps), (8, max(5, reps // 8))):
            batch = pack_sequences(token_ids(b, seed=100 + b))
            out[b] = float(np.median(timings(lambda: model.forward_packed(batch), reps=n))) * 1e3
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tree_a")
    ap.add_argument("tree_b")
    ap.add_argument("--variant", default="int8-sparse-80")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=150, help="batch-1 calls per round (batch 8: reps / 8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.variant, args.reps, args.threads)
    trees = {"A": os.path.abspath(args.tree_a), "B": os.path.abspath(args.tree_b)}
    for t in trees.values():
        if not os.path.isfile(os.path.join(t, "fdbert", "__init__.py")):
            raise SystemExit(f"{t} is not an fdbert checkout (no fdbert/__init__.py)")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import alternate, spread

    def run(name):  # -> {batch: median ms} of one child process on tree `name`
        env = dict(os.environ, PYTHONPATH=trees[name])
        res = subprocess.run([sys.executable, os.path.abspath(__file__), trees[name], trees[name],
                              "--child", "--variant", args.variant, "--reps", str(args.reps),
                              "--threads", str(args.threads)],
                             env=env, cwd="/", capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"tree {name} ({trees[name]}) failed:\n{res.stderr[-3000:]}")
        ms = {int(k): v for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}
        print(f"{name}: " + ", ".join(f"batch {b} {t:.2f} ms" for b, t in ms.items()), flush=True)
        return ms

    runs = alternate({"A": lambda: run("A"), "B": lambda: run("B")}, args.rounds)
    disabled = os.environ.get("FDBERT_DISABLE_CPU_FEATURES", "")
    print(f"\n{args.variant}, {args.threads} threads, {args.rounds} rounds, "
          f"FDBERT_DISABLE_CPU_FEATURES={disabled!r}; "
          f"A = {trees['A']}, B = {trees['B']}\n")
    print("| batch | A median ms | B median ms | B/A per round | B/A median (min-max) |")
    print("|---|---|---|---|---|")
    for b in (1, 8):
        a = [x[b] for x in runs["A"]]
        bb = [x[b] for x in runs["B"]]
        ratios = [y / x for x, y in zip(a, bb)]
        print(f"| {b} | {np.median(a):.2f} | {np.median(bb):.2f} | {', '.join(f'{r:.2f}' for r in ratios)} "
              f"| {spread(ratios)} |")


if __name__ == "__main__":
    main()
