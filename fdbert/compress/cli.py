"""``fdbert compress MODEL_DIR OUT``: prune (optional) + INT8-quantize a model and save it.

    fdbert compress path/to/hf-model out-dir --sparsity 0.8 --block 1x4 \\
        --calibration texts.txt --method percentile

The calibration file holds one text per line (blank lines skipped); without ``--calibration`` the
Austen sentences shipped in fdbert/data/calibration.txt are used. The output is read back with
:func:`fdbert.load`.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_CALIBRATION = Path(__file__).resolve().parent.parent / "data" / "calibration.txt"


def add_arguments(parser) -> None:
    parser.add_argument("model_dir", help="a Hugging Face model directory, or one saved by fdbert")
    parser.add_argument("out", help="output directory (fdbert format)")
    parser.add_argument("--sparsity", type=float, default=0.0,
                        help="fraction of weight blocks to prune before quantizing (default 0: dense)")
    parser.add_argument("--block", default="1x4", help="pruning block RxC (default 1x4)")
    parser.add_argument("--scope", choices=("layer", "global"), default="layer",
                        help="rank blocks per weight matrix (layer) or across all (global)")
    parser.add_argument("--calibration", metavar="FILE", default=None,
                        help=f"calibration texts, one per line (default: {DEFAULT_CALIBRATION.name})")
    parser.add_argument("--num-calibration", type=int, default=512,
                        help="use the first N calibration texts (default 512)")
    parser.add_argument("--method", choices=("minmax", "percentile"), default="minmax",
                        help="activation range: min-max (default) or percentile")
    parser.add_argument("--percentile", type=float, default=99.99)
    parser.add_argument("--outlier-threshold", type=float, default=6.0,
                        help="input channels above this magnitude stay float32 (default 6.0); "
                             "0 disables (every channel INT8)")
    parser.add_argument("--attention", choices=("fp32", "int8"), default="fp32",
                        help="attention's two matmuls in float32 (default) or INT8 (dynamic per-token "
                             "codes; faster, slightly less accurate: docs/int8.md)")
    parser.add_argument("--no-quantize", action="store_true", help="prune only, keep float32")
    parser.add_argument("--no-progress", action="store_true")


def read_texts(path, limit=None) -> list:
    texts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    texts = [t for t in texts if t]
    return texts[:limit] if limit else texts


def main(args) -> int:
    from ..model import from_pretrained
    from .prune import prune
    from .quantize import quantize
    from ..blocksparse import parse_block
    try:
        parse_block(args.block)
        if not 0.0 <= args.sparsity <= 1.0:
            raise ValueError(f"--sparsity must lie in [0, 1], got {args.sparsity}")
    except ValueError as e:
        print(f"fdbert compress: {e}", file=sys.stderr)
        return 2
    src = Path(args.model_dir)
    model = from_pretrained(src)
    if args.sparsity > 0:
        model = prune(model, args.sparsity, args.block, args.scope)
        print(f"pruned {args.sparsity:.0%} of {args.block} blocks ({args.scope})", file=sys.stderr)
    if not args.no_quantize:
        texts = read_texts(args.calibration or DEFAULT_CALIBRATION, args.num_calibration)
        if not texts:
            print(f"fdbert compress: no texts in {args.calibration}", file=sys.stderr)
            return 2
        model = quantize(model, texts, method=args.method, percentile=args.percentile,
                         progress=not args.no_progress,
                         outlier_threshold=args.outlier_threshold or None,
                         attention=args.attention)
        print(model.quantization_report)
    out = model.save(args.out)
    print(f"saved to {out}", file=sys.stderr)
    return 0
