"""``fdbert compress MODEL_DIR OUT``: prune (optional) + INT8-quantize a model and save it.

    fdbert compress path/to/hf-model out-dir --sparsity 0.8 --block 1x4 \\
        --calibration texts.txt --method percentile

The calibration file holds one text per line (blank lines skipped); without ``--calibration`` the
Austen sentences shipped in fdbert/data/calibration.txt are used. The output is read back with
:func:`fdbert.load`.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from ..errors import FdbertError, UsageError

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
    parser.add_argument("--percentile", type=float, default=None,
                        help=f"with --method percentile: the percentile of |x| kept, in (0, 100] "
                             f"(default {DEFAULT_PERCENTILE})")
    parser.add_argument("--outlier-threshold", type=float, default=6.0,
                        help="input channels above this magnitude stay float32 (default 6.0); "
                             "0 disables (every channel INT8)")
    parser.add_argument("--attention", choices=("fp32", "int8"), default="fp32",
                        help="attention's two matmuls in float32 (default) or INT8 (dynamic per-token "
                             "codes; faster, slightly less accurate: docs/int8.md)")
    parser.add_argument("--no-quantize", action="store_true", help="prune only, keep float32")
    parser.add_argument("--no-progress", action="store_true")


DEFAULT_PERCENTILE = 99.99


def read_texts(path, limit=None, option="--calibration") -> list:
    """One text per non-blank line; :class:`UsageError` naming ``option`` and the file for anything
    unreadable (shared by ``fdbert compress --calibration`` and ``fdbert distill --texts``)."""
    f = Path(path)
    if not f.exists():
        raise UsageError(f"{option}: {path} does not exist")
    if not f.is_file():
        raise UsageError(f"{option}: {path} is not a file")
    try:
        lines = f.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UsageError(f"{option}: {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UsageError(f"{option}: cannot read {path} ({e.strerror})") from None
    texts = [t for t in (line.strip() for line in lines) if t]
    return texts[:limit] if limit else texts


def check_args(args) -> list:
    """Every argument and path, before the model is loaded; returns the calibration texts."""
    from ..blocksparse import parse_block
    from ..serialization import META_FILE, TENSOR_FILE, TOKENIZER_FILE
    model = Path(args.model_dir)
    if not model.is_dir():
        raise UsageError(f"MODEL_DIR {args.model_dir} " + ("is not a directory" if model.exists()
                                                            else "does not exist"))
    try:
        parse_block(args.block)
    except ValueError as e:
        raise UsageError(f"--block: {e}") from None
    if not 0.0 <= args.sparsity <= 1.0:   # NaN fails too
        raise UsageError(f"--sparsity must lie in [0, 1], got {args.sparsity}")
    if args.num_calibration < 1:
        raise UsageError(f"--num-calibration must be >= 1, got {args.num_calibration}")
    if args.percentile is not None:
        if not 0.0 < args.percentile <= 100.0:
            raise UsageError(f"--percentile must lie in (0, 100], got {args.percentile}")
        if args.method != "percentile":
            raise UsageError("--percentile applies to --method percentile only")
    if not (math.isfinite(args.outlier_threshold) and args.outlier_threshold >= 0):
        raise UsageError(f"--outlier-threshold must be a finite number >= 0 (0 disables), "
                         f"got {args.outlier_threshold}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"OUT {args.out} exists and is not a directory")
    if out.exists() and out.resolve() == model.resolve():
        raise UsageError(f"OUT {args.out} is MODEL_DIR: the model would be overwritten")
    clash = [n for n in (TENSOR_FILE, TOKENIZER_FILE) if (out / n).exists()] if out.is_dir() else []
    if clash and not (out / META_FILE).is_file():
        raise UsageError(f"OUT {args.out} holds {clash[0]} of another model (no {META_FILE}); "
                         "it would be overwritten")
    ancestor = _existing_ancestor(out.resolve())
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"OUT {args.out}: cannot write in {ancestor}")
    texts = []
    if not args.no_quantize:
        texts = read_texts(args.calibration or DEFAULT_CALIBRATION, args.num_calibration)
        if not texts:
            raise UsageError(f"--calibration: {args.calibration} holds no text (empty or blank lines only)")
    return texts


def _existing_ancestor(p: Path) -> Path:
    while not p.exists():
        p = p.parent
    return p


def main(args) -> int:
    from ..model import from_pretrained
    from .prune import prune
    from .quantize import quantize
    texts = check_args(args)   # UsageError -> "fdbert: error: ..." and exit 2 (fdbert.cli)
    src = Path(args.model_dir)
    model = from_pretrained(src)
    if args.sparsity > 0:
        model = prune(model, args.sparsity, args.block, args.scope)
        print(f"pruned {args.sparsity:.0%} of {args.block} blocks ({args.scope})", file=sys.stderr)
    if not args.no_quantize:
        model = quantize(model, texts, method=args.method,
                         percentile=DEFAULT_PERCENTILE if args.percentile is None else args.percentile,
                         progress=not args.no_progress,
                         outlier_threshold=args.outlier_threshold or None,
                         attention=args.attention)
        print(model.quantization_report)
    try:
        out = model.save(args.out)
    except OSError as e:
        raise FdbertError(f"cannot save to {args.out} ({e.strerror or e})") from None
    print(f"saved to {out}", file=sys.stderr)
    return 0
