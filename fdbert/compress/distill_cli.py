"""``fdbert distill MODEL OUT``: gradual block pruning + distillation + QAT, saved in fdbert's format.

    fdbert distill path/to/hf-model out-dir --sparsity 0.8 --block 1x4 --texts train.txt \\
        [--steps N] [--batch-size B] [--seed S] [--resume] [--overwrite]

Every argument and path is checked before the model loads; a mistake prints one line
``fdbert: error: ...`` and exits with 2. The training state is checkpointed into OUT/checkpoints every
``--checkpoint-every`` steps and on Ctrl-C; ``--resume`` continues a stopped run to the result the
uninterrupted run would have given. The word-embedding table stays the teacher's (frozen); when
MODEL lies inside an installed package, OUT references the package's tensor by SHA-256 instead of
copying it. OUT receives the model (``fdbert.load(OUT)``) and distill.json
(the configuration, the loss history, the time taken and the command line); the checkpoints are
removed once the model is saved, unless ``--keep-checkpoints``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from .distill import CHECKPOINT, PRECISIONS, SCORES, DistillConfig

CHECKPOINTS = "checkpoints"
REPORT = "distill.json"


from ..errors import UsageError  # a bad argument or path, found before any heavy work (exit 2)


def add_arguments(parser) -> None:
    d = DistillConfig()
    parser.add_argument("model", help="the float32 teacher: a Hugging Face directory or one saved by fdbert")
    parser.add_argument("out", help="output directory (fdbert format)")
    parser.add_argument("--texts", nargs="+", required=True, metavar="FILE",
                        help="training texts, one per line (blank lines skipped)")
    parser.add_argument("--init", default=None, metavar="DIR",
                        help="start the student from this fdbert model (e.g. a distilled one, INT8 or float) "
                             "instead of the teacher: a second stage; the ramp starts at its sparsity")
    parser.add_argument("--sparsity", type=float, default=d.sparsity,
                        help=f"fraction of blocks pruned, in [0, 1) (default {d.sparsity})")
    parser.add_argument("--block", default="1x4", help="pruning block RxC (default 1x4)")
    parser.add_argument("--scope", choices=("global", "layer"), default=d.scope,
                        help="rank blocks across all Linears (global, default) or per matrix (layer)")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--max-length", type=int, default=d.max_length, help="tokens per training text")
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--warmup", type=float, default=d.warmup, help="fraction of steps of lr warm-up")
    parser.add_argument("--ramp-end", type=float, default=d.ramp_end,
                        help="fraction of steps at which the target sparsity is reached")
    parser.add_argument("--mask-interval", type=int, default=d.mask_interval,
                        help="steps between mask updates during the ramp")
    parser.add_argument("--qat-start", type=float, default=d.qat_start,
                        help="fraction of steps after which training is quantization-aware")
    parser.add_argument("--score", choices=SCORES, default=d.score,
                        help="block score: l2 (||W||) or l2-act (||W * rms(x)||, Wanda-style)")
    parser.add_argument("--w-emb", type=float, default=d.w_emb, help="weight of the embedding loss")
    parser.add_argument("--w-hidden", type=float, default=d.w_hidden, help="weight of the hidden-state loss")
    parser.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                        help="bf16: prune and fine-tune under bfloat16 autocast (QAT stays float32)")
    parser.add_argument("--no-quantize", action="store_true", help="no QAT phase: export float32 (pruned)")
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    parser.add_argument("--threads", type=int, default=None, help="torch and fdbert threads (default: all)")
    parser.add_argument("--resume", action="store_true", help="continue the run checkpointed in OUT")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--copy-embeddings", action="store_true",
                        help="store the (frozen) word-embedding table in OUT even when MODEL lies in an "
                             "installed package (default: reference it there by SHA-256)")
    parser.add_argument("--no-progress", action="store_true")


def read_texts(files) -> list[str]:
    """One text per non-blank line of each file; UsageError naming the file for anything unreadable
    or empty."""
    from .cli import read_texts as read_file
    texts = []
    for name in files:
        got = read_file(name, option="--texts")
        if not got:
            raise UsageError(f"--texts: {name} holds no text (empty or blank lines only)")
        texts += got
    return texts


def check_args(args) -> tuple[DistillConfig, list[str]]:
    """Everything that can be checked without loading the model."""
    from ..blocksparse import parse_block
    model = Path(args.model)
    if not model.is_dir():
        raise UsageError(f"MODEL {args.model} is not a directory" if model.exists()
                         else f"MODEL {args.model} does not exist")
    if args.init is not None and not Path(args.init).is_dir():
        raise UsageError(f"--init {args.init} is not a directory" if Path(args.init).exists()
                         else f"--init {args.init} does not exist")
    try:
        block = parse_block(args.block)
    except ValueError as e:
        raise UsageError(f"--block: {e}") from None
    try:
        cfg = DistillConfig(sparsity=args.sparsity, block=block, scope=args.scope, steps=args.steps,
                            batch_size=args.batch_size, max_length=args.max_length, lr=args.lr,
                            seed=args.seed, quantize=not args.no_quantize, warmup=args.warmup,
                            ramp_end=args.ramp_end, mask_interval=args.mask_interval,
                            qat_start=args.qat_start, score=args.score, w_emb=args.w_emb,
                            w_hidden=args.w_hidden, precision=args.precision,
                            checkpoint_every=args.checkpoint_every).validate()
    except ValueError as e:
        raise UsageError(str(e).replace("sparsity must", "--sparsity must")) from None
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"OUT {args.out} exists and is not a directory")
    if args.resume:
        if not (out / CHECKPOINTS / CHECKPOINT).is_file():
            raise UsageError(f"--resume: no checkpoint in {out / CHECKPOINTS}")
    elif out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"OUT {args.out} exists; pass --overwrite to replace it, or --resume to continue")
    parent = out.resolve().parent
    if not out.exists() and not os.access(_existing_ancestor(parent), os.W_OK):
        raise UsageError(f"OUT {args.out}: cannot create it (no write permission in {_existing_ancestor(parent)})")
    if out.exists() and not os.access(out, os.W_OK):
        raise UsageError(f"OUT {args.out} is not writable")
    return cfg, read_texts(args.texts)


def _existing_ancestor(p: Path) -> Path:
    while not p.exists():
        p = p.parent
    return p


def _note_bf16_speed() -> None:
    """One line when bfloat16 would run emulated: on an AVX2-only AMD EPYC, 15.8 s per step against
    2.0 s in fp32 (the MiniLM recipe of docs/accuracy.md, one thread, 2026-12-07)."""
    import torch
    try:
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):   # a torch without the probe: say nothing
        return
    if not native:
        print("fdbert: note: this CPU has no native bfloat16 (AVX512-BF16 or AMX); --precision bf16 "
              "runs emulated, several times slower than --precision fp32", file=sys.stderr)


def main(args) -> int:
    try:
        cfg, texts = check_args(args)
    except UsageError as e:
        print(f"fdbert: error: {e}", file=sys.stderr)
        return 2
    import fdbert
    from .distill import Interrupted, check_block_divides, check_init, distill
    from ..errors import FdbertError, ShapeError
    teacher = fdbert.from_pretrained(args.model)
    init = None
    if args.init is not None:
        try:
            init = fdbert.load(args.init)
            check_init(init, teacher, cfg.block)
        except FdbertError as e:
            print(f"fdbert: error: --init: {e}", file=sys.stderr)
            return 2
    try:
        check_block_divides(teacher, cfg.block)
    except ShapeError as e:
        print(f"fdbert: error: --block: {e}", file=sys.stderr)
        return 2
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
        fdbert.set_num_threads(args.threads)
    if cfg.precision == "bf16":
        _note_bf16_speed()
    out = Path(args.out)
    if args.overwrite and not args.resume and out.exists():
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    try:
        model = distill(teacher, texts, config=cfg, checkpoint_dir=out / CHECKPOINTS, resume=args.resume,
                        progress=not args.no_progress, init=init)
    except Interrupted as e:
        print(f"fdbert: {e}", file=sys.stderr)
        return 130

    external = {}
    if not args.copy_embeddings:
        from ..serialization import package_tensor
        ref = package_tensor(args.model, teacher.weights.embeddings.word_embeddings)
        if ref is not None:
            external["embeddings.word_embeddings"] = ref
    model.save(out, external=external)
    report = model.distill_report.as_dict()
    report["command"] = "fdbert distill " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["distill"] else sys.argv[1:])
    report["texts"] = {"files": list(args.texts), "count": len(texts)}
    if args.init is not None:
        report["init"] = {"path": str(args.init), "distillation": (init.compression or {}).get("distillation")}
    tmp = out / (REPORT + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / REPORT)
    if not args.keep_checkpoints:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    r = model.distill_report
    last = r.history[-1] if r.history else {}
    print(f"distilled {cfg.steps} steps in {r.seconds / 60:.1f} min: block sparsity {r.block_sparsity:.4f}, "
          f"final loss {last.get('loss', float('nan')):.4f}; saved to {out}", file=sys.stderr)
    return 0

