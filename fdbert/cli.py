"""The ``fdbert`` command line: info, encode, demo, generate, chat, and (as they land) compress and bench."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .errors import FdbertError, UsageError


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


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, ``fdbert: error: ...``, and exit status 2."""

    def error(self, message):
        self.exit(2, f"fdbert: error: {self.prog.removeprefix('fdbert').strip() + ': ' if self.prog != 'fdbert' else ''}"
                     f"{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = _Parser(prog="fdbert", description="Fast, verifiable transformer inference on CPUs",
                epilog="A mistake prints one line, 'fdbert: error: ...', and exits with 2 (a bad "
                       "argument, path or environment variable) or 1 (a failure while working); "
                       "--debug, anywhere on the line, shows the traceback instead.")
    p.add_argument("--version", action="version", version=f"fdbert {__version__}")
    p.add_argument("--debug", action="store_true", help="on an error, print the full traceback")
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

    from .generate_cli import register as register_generation
    register_generation(sub)   # fdbert generate, fdbert chat

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


def check_environment() -> None:
    """fdbert's environment variables, before any command runs: UsageError on a bad value."""
    from . import backend
    from .errors import BackendError, UsageError
    try:
        import fdbert_native  # noqa: F401  (parses FDBERT_DISABLE_CPU_FEATURES at import)
    except ImportError:
        pass
    except ValueError as e:   # an unknown feature name
        raise UsageError(str(e)) from None
    try:
        backend._check_name(backend._default)
    except BackendError as e:
        raise UsageError(f"FDBERT_BACKEND: {e}") from None


def main(argv=None) -> int:
    """Run one command; returns the exit status: 0, 1 (a failure while working), 2 (a usage error),
    130 (Ctrl-C). Errors print one line on stderr, ``fdbert: error: ...``; --debug re-raises."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        check_environment()
        return int(args.func(args) or 0)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        print("fdbert: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # `fdbert info | head`: the reader left; nothing to say
        return 1
    except Exception as e:
        if debug:
            raise
        usage = isinstance(e, UsageError)
        message = str(e) if isinstance(e, FdbertError) else _describe(e)
        print(f"fdbert: error: {' '.join(message.split())}", file=sys.stderr)
        return 2 if usage else 1


def _describe(e: BaseException) -> str:
    """An unexpected exception as one line: its type, its message, where it was raised."""
    import traceback
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return f"{type(e).__name__}: {e}{where} (rerun with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
