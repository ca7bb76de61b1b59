"""``fdbert bench``: race fdbert against PyTorch, ONNX Runtime, OpenVINO and DeepSparse on one model.

    fdbert bench [MODEL] [--seq-len 128] [--batch-sizes 1,8,32] [--threads 2] [--engines ...]
                 [--baseline pytorch-fp32] [--out DIR] [--latency-bound-ms 10] [--budget-s 2]

Every engine gets the same weights, token ids, thread count and warm-up; fp32 engines must agree
with pytorch-fp32 (max |diff| <= 1e-4 on real tokens) before anything is timed. An engine that runs
other weights (the 80 % pruned model of fdbert-native-int8-sparse and deepsparse-int8-sparse) is
flagged in every row and the plot, shows its cosine to float32 beside its speed, and is compared
only with peers on the same weights. DeepSparse pins onnx < 1.15 and numpy < 2: ``make
bench-deepsparse`` builds .venv-deepsparse, and the race runs it in a subprocess
(``worker.py``) that times with the same loop (``timing.py``); without that venv it is skipped
with one line. The machine's load is sampled during the run (``load.py``). Output: a markdown
table on stdout, and ``bench.md``, ``bench.json`` (raw timings, every round, load samples,
versions, CPU) and ``bench.png`` (throughput vs latency) in ``--out``.

The CLI wires ``add_arguments`` to a sub-parser and calls ``main(args)``; ``main`` also takes an
argv list (``benchmarks/run_bench.py`` does that).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import tempfile
from pathlib import Path

from . import report
from .engines import ENGINES, Skip, set_thread_environment
from .harness import DisagreementError, RaceOptions, run_race
from .workload import DEFAULT_MODEL, build_workload

__all__ = ["ENGINES", "RaceOptions", "Skip", "add_arguments", "main", "run_race"]

EXIT_OK = 0
EXIT_NO_ENGINE = 1  # nothing could run
EXIT_DISAGREEMENT = 3  # an fp32 engine disagrees with the reference: refuse to time


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    values = _int_list(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one positive integer, got {text!r}")
    return values[0]


def _engine_list(text: str) -> list[str]:
    if text == "all":
        return list(ENGINES)
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown engine(s) {unknown}; choose from: all, {', '.join(ENGINES)}"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``fdbert bench`` options to ``parser`` (a sub-parser of the fdbert CLI)."""
    p = parser
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                   help=f"local Hugging Face directory, or {DEFAULT_MODEL!r} (default): the "
                        "DistilBERT-base shape with random weights, seed 0, built offline")
    p.add_argument("--seq-len", type=_positive_int, default=128,
                   help="T of every timed batch (default 128)")
    p.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 32],
                   help="batch sizes of the throughput columns (default 1,8,32)")
    p.add_argument("--bound-batch-sizes", type=_int_list, default=[1, 2, 4, 8],
                   help="extra batch sizes tried for the latency-bound metric (default 1,2,4,8)")
    p.add_argument("--threads", type=_positive_int, default=2,
                   help="N intra-op threads (default 2)")
    p.add_argument("--engines", type=_engine_list, default=list(ENGINES),
                   help="comma-separated engine names or 'all' (default all): "
                        + ", ".join(ENGINES))
    p.add_argument("--baseline", default="pytorch-fp32", choices=list(ENGINES), metavar="ENGINE",
                   help="engine of the 'vs BASELINE' columns, shown when it ran, for engines on "
                        "its weights (default pytorch-fp32); the 'vs fastest peer' columns are "
                        "always there")
    p.add_argument("--out", default="bench-results",
                   help="output directory (default bench-results)")
    p.add_argument("--latency-bound-ms", type=float, default=10.0,
                   help="L of the best-throughput-under-latency-bound metric: batch <= "
                        "--max-bound-batch with median latency <= L (default 10)")
    p.add_argument("--max-bound-batch", type=int, default=8,
                   help="largest batch allowed under the latency bound (default 8)")
    p.add_argument("--budget-s", type=float, default=2.0,
                   help="seconds of timed calls per measurement, after warm-up (default 2)")
    p.add_argument("--rounds", type=_positive_int, default=1,
                   help="passes over all engines, the order reversed every other round; latencies "
                        "from the best round, seq/s and peer ratios as median (min-max) over "
                        "rounds (default 1; use 3 on a machine shared with others)")
    p.add_argument("--min-reps", type=int, default=3, help="at least this many timed calls (3)")
    p.add_argument("--fp32-atol", type=float, default=1e-4,
                   help="max |diff| on real tokens allowed for an fp32 engine (default 1e-4)")
    p.add_argument("--texts", default=None,
                   help="real sentences (.tsv with a 'sentence' column, or one per line); "
                        "default: fdbert/data/calibration.txt, else shared austen_sentences.tsv")
    p.add_argument("--keep-artifacts", action="store_true",
                   help="keep the ONNX exports in OUT/artifacts instead of a temporary directory")
    return p


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fdbert bench", description=__doc__.split("\n")[0])
    return add_arguments(parser).parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Ranges and paths, before the workload is built; :class:`fdbert.errors.UsageError` if wrong."""
    import math
    import os

    from ..errors import UsageError
    for name, lo in (("latency_bound_ms", 0.0), ("budget_s", 0.0), ("fp32_atol", None)):
        v = getattr(args, name)
        if not math.isfinite(v) or (v <= lo if lo is not None else v < 0):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number "
                             f"{'> 0' if lo is not None else '>= 0'}, got {v}")
    for name in ("min_reps", "max_bound_batch"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a directory")
    p = out.resolve()
    while not p.exists():
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"--out {args.out}: cannot write in {p}")
    if args.texts is not None:
        t = Path(args.texts)
        if not t.is_file():
            raise UsageError(f"--texts {args.texts} " + ("is not a file" if t.exists() else "does not exist"))


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """Run the race; print the table; write bench.{md,json,png}. Returns the exit code."""
    if isinstance(args, argparse.Namespace):  # from the fdbert CLI: argv is 'bench ...'
        command = shlex.join(["fdbert", *sys.argv[1:]])
    else:
        argv = sys.argv[1:] if args is None else list(args)
        command = shlex.join(["fdbert", "bench", *argv])
        args = _parse(argv)
    check_args(args)   # before any heavy work: UsageError -> one line, exit 2 (fdbert.cli)
    set_thread_environment(args.threads)  # before torch / onnxruntime / openvino load
    options = RaceOptions(
        batch_sizes=args.batch_sizes, bound_batch_sizes=args.bound_batch_sizes,
        threads=args.threads, budget_s=args.budget_s, min_reps=args.min_reps,
        latency_bound_ms=args.latency_bound_ms, max_bound_batch=args.max_bound_batch,
        baseline=args.baseline, fp32_atol=args.fp32_atol, rounds=args.rounds,
    )
    out = Path(args.out)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = report.load_average()
    print(f"fdbert bench: preparing workload {args.model} (T={args.seq_len})", file=sys.stderr)
    workload = build_workload(args.model, seq_len=args.seq_len,
                              max_batch=max(options.sweep()), texts_path=args.texts)
    config = json.loads((workload.model_dir / "config.json").read_text())
    with tempfile.TemporaryDirectory(prefix="fdbert-bench-") as tmp:
        work_dir = out / "artifacts" if args.keep_artifacts else Path(tmp)
        try:
            results = run_race(workload, args.engines, options, work_dir)
        except DisagreementError as exc:
            print(f"fdbert bench: {exc}", file=sys.stderr)
            return EXIT_DISAGREEMENT
    results.update(
        load_average_start=load_start,
        command=command,
        date_utc=started.isoformat(timespec="seconds"),
        duration_s=(datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
        environment=report.environment(),
        workload={
            "model": workload.model_name, "model_dir": str(workload.model_dir),
            "model_type": config.get("model_type"),
            "layers": config.get("n_layers", config.get("num_hidden_layers")),
            "d_model": config.get("dim", config.get("hidden_size")),
            "vocab_size": workload.vocab_size, "seq_len": workload.seq_len,
            "sentence_model": workload.sentence_model, "token_source": workload.token_source,
            "text_source": workload.text_source,
        },
    )
    table = report.markdown(results)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.md").write_text(table)
    report.write_json(results, out / "bench.json")
    png = report.plot(results, out / "bench.png")
    print(f"fdbert bench: wrote {out / 'bench.json'}, {out / 'bench.md'}"
          + (f", {png}" if png else " (no plot: matplotlib is not installed)"), file=sys.stderr)
    if not results["engines"]:
        print("fdbert bench: no engine could run", file=sys.stderr)
        return EXIT_NO_ENGINE
    return EXIT_OK
