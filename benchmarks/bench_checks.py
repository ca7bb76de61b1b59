"""What the op contract checks (fdbert/checks.py) cost a forward pass: the same model, in the same
process, with fdbert.ops checking (as shipped) and with every op bound straight to dispatch (no
checks), alternated round by round so that the machine's drift hits both alike.

    python benchmarks/bench_checks.py [--variants int8-sparse-80,fp32-native] [--rounds 6] [--reps 40]

Prints, per variant and batch size, the median forward time of each side and the ratio
checked / unchecked per round; the checks are O(1) per array (O(n) for token ids), so the ratio
should be 1 within the noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fdbert  # noqa: E402
from fdbert import ops  # noqa: E402
from fdbert.backend import call  # noqa: E402

OPS = ("embedding", "linear", "layer_norm", "gelu", "softmax", "attention", "attention_int8",
       "encoder_layer", "quantize_u8", "dequantize_u8", "qlinear_s32", "qlinear")


def unchecked():
    """{op name: a function that dispatches without checking}."""
    def bind(name):
        return lambda *a, **k: call(name, *a, **k)
    return {name: bind(name) for name in OPS}


def main():
    from bench_e2e import build_variants, token_ids
    from fdbert.packing import pack_sequences
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="int8-sparse-80,fp32-native")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    fdbert.set_num_threads(args.threads)
    checked = {name: getattr(ops, name) for name in OPS}
    raw = unchecked()
    models = build_variants(args.variants.split(","))
    print("| variant | batch | checked ms | unchecked ms | checked / unchecked per round |")
    print("|---|---|---|---|---|")
    for variant, (model, backend) in models.items():
        for b in (1, 8):
            batch = pack_sequences(token_ids(b, seed=100 + b))
            times = {"checked": [], "unchecked": []}
            with fdbert.set_backend(backend):
                for r in range(args.rounds):
                    for side in (("checked", "unchecked") if r % 2 == 0 else ("unchecked", "checked")):
                        for name in OPS:
                            setattr(ops, name, (checked if side == "checked" else raw)[name])
                        model.forward_packed(batch)
                        ts = []
                        for _ in range(args.reps if b == 1 else max(5, args.reps // 4)):
                            t = time.perf_counter()
                            model.forward_packed(batch)
                            ts.append(time.perf_counter() - t)
                        times[side].append(float(np.median(ts)) * 1e3)
            for name in OPS:
                setattr(ops, name, checked[name])
            c, u = times["checked"], times["unchecked"]
            ratios = ", ".join(f"{x / y:.3f}" for x, y in zip(c, u))
            print(f"| {variant} | {b} | {np.median(c):.2f} | {np.median(u):.2f} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
