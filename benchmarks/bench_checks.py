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

import numpy as np

import fdbert
from common import alternate, build_variants, spread, timings, token_ids
from fdbert import ops
from fdbert.backend import call
from fdbert.packing import pack_sequences

OPS = ("embedding", "linear", "layer_norm", "gelu", "softmax", "attention", "attention_int8",
       "encoder_layer", "quantize_u8", "dequantize_u8", "qlinear_s32", "qlinear")


def unchecked():
    """{op name: a function that dispatches without checking}."""
    def bind(name):
        return lambda *a, **k: call(name, *a, **k)
    return {name: bind(name) for name in OPS}


def main():
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
    print("| variant | batch | checked ms | unchecked ms | checked / unchecked per round | median (min-max) |")
    print("|---|---|---|---|---|---|")
    for variant, (model, backend) in models.items():
        for b in (1, 8):
            batch = pack_sequences(token_ids(b, seed=100 + b))
            reps = args.reps if b == 1 else max(5, args.reps // 4)

            def side(bound):  # -> median forward ms with every op of fdbert.ops bound to `bound`
                for name in OPS:
                    setattr(ops, name, bound[name])
                return float(np.median(timings(lambda: model.forward_packed(batch), reps=reps))) * 1e3

            with fdbert.set_backend(backend):
                times = alternate({"checked": lambda: side(checked), "unchecked": lambda: side(raw)},
                                  args.rounds)
            for name in OPS:
                setattr(ops, name, checked[name])
            c, u = times["checked"], times["unchecked"]
            ratios = [x / y for x, y in zip(c, u)]
            print(f"| {variant} | {b} | {np.median(c):.2f} | {np.median(u):.2f} | "
                  f"{', '.join(f'{r:.3f}' for r in ratios)} | {spread(ratios, '{:.3f}')} |", flush=True)


if __name__ == "__main__":
    main()
