"""The ``fdbert`` command line: info, encode, demo, and (as they land) compress and bench."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _cmd_info(args) -> int:
    import fdbert
    fdbert.show_config()
    return 0


def _cmd_encode(args) -> int:
    import fdbert
    with fdbert.set_backend(args.backend or fdbert.get_backend()):  # an unknown name fails before loading
        model = fdbert.from_pretrained(args.model_dir)
        emb = model.encode(args.texts, normalize=True if args.normalize else None)
        print(f"{model!r} on backend {fdbert.get_backend()}")
    print(f"embeddings: {emb.shape[0]} x {emb.shape[1]}, norms "
          + " ".join(f"{x:.3f}" for x in np.linalg.norm(emb, axis=1)))
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    print(similarity_table(unit @ unit.T, args.texts))
    return 0


def similarity_table(sim, labels, width=40) -> str:
    """Cosine similarity matrix as a text table, rows labelled by (shortened) text."""
    short = [t if len(t) <= width else t[:width - 1] + "…" for t in labels]
    head = " " * (width + 6) + " ".join(f"{'#' + str(j):>6s}" for j in range(len(labels)))
    rows = [f"#{i:<3d} {short[i]:<{width}s} " + " ".join(f"{v:6.3f}" for v in sim[i])
            for i in range(len(labels))]
    return "\n".join([head, *rows])


def _cmd_demo(args) -> int:
    from .demo import main as demo_main
    return demo_main(args)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(prog="fdbert", description="Fast, verifiable transformer inference on CPUs")
    p.add_argument("--version", action="version", version=f"fdbert {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("info", help="version, backends, CPU features, threads, op dispatch")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("encode", help="sentence embeddings of TEXTs and their cosine similarity matrix")
    s.add_argument("model_dir", help="local Hugging Face model directory (distilbert or bert), or one "
                                     "saved by fdbert (e.g. by fdbert compress)")
    s.add_argument("texts", nargs="+", metavar="TEXT")
    s.add_argument("--backend", help="reference, native or auto")
    s.add_argument("--normalize", action="store_true", help="L2-normalise even if the model's config does not")
    s.set_defaults(func=_cmd_encode)

    s = sub.add_parser("demo", help="the main job on the embedded default: real all-MiniLM-L6-v2")
    s.set_defaults(func=_cmd_demo)

    for name, module, help_ in (("compress", "fdbert.compress.cli", "prune + quantize a model"),
                                ("distill", "fdbert.compress.distill_cli",
                                 "gradual block pruning + distillation + QAT (needs torch)"),
                                ("bench", "fdbert.bench", "race fdbert against other engines"),
                                ("serve", "fdbert.serve", "OpenAI-style HTTP server with dynamic batching")):
        try:
            mod = __import__(module, fromlist=["add_arguments"])
        except ImportError:
            continue
        s = sub.add_parser(name, help=help_)
        mod.add_arguments(s)
        s.set_defaults(func=mod.main)
    return p


def main(argv=None) -> int:
    from .errors import FdbertError
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FdbertError as e:
        print(f"fdbert: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
