"""The race: prepare every engine, check fp32 agreement, then time them all the same way.

Metrics (per engine, all engines on the same token ids, thread count and budget):
  * batch-1 latency median / p90 / p99 at 1 thread and at N threads;
  * throughput = B / median latency of one batch call, in sequences per second, per batch size;
  * best throughput under a latency bound L (Fast DistilBERT, Shen et al. 2022, Sec. 4: batch
    <= 8 and median per-batch latency <= L);
  * fidelity vs the fp32 reference (pytorch-fp32) on real sentences: cosine similarity (mean over
    real tokens; for a sentence model, of the normalised mean-pooled embeddings) and max |diff|;
    when no fp32 engine is raced, the reference still runs once, untimed, for this;
  * ratios against the fastest peer (a non-fdbert engine) on the same weights, round by round.
Repetitions are adaptive: each measurement runs for ``budget_s`` seconds (at least ``min_reps``
calls) after a warm-up, so slow engines take few samples and fast engines many. With several
rounds the engine order is reversed every other round; every round's numbers are kept.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .engines import ENGINES, Engine, Skip
from .load import LoadSampler
from .timing import MAX_TIME_FACTOR, MAX_WARMUP_CALLS, WARMUP_FRACTION, time_calls  # noqa: F401
from .workload import Workload

FP32_AGREEMENT_ATOL = 1e-4  # max |out - pytorch-fp32| on real tokens for an fp32 engine


# ---- statistics ------------------------------------------------------------------------------


def percentile(samples, q: float) -> float:
    """q-th percentile with linear interpolation between order statistics (NumPy's default).

    With sorted samples x[0..n-1], position p = q/100 * (n-1); result x[floor p] + frac(p) *
    (x[floor p + 1] - x[floor p]).
    """
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


def summarize(samples_s) -> dict[str, float]:
    """Median / p90 / p99 / mean / min of call durations, seconds in -> milliseconds out."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no samples")
    return {
        "n": int(ms.size),
        "median_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
    }


def throughput(batch_size: int, median_ms: float) -> float:
    """Sequences per second of back-to-back calls of ``batch_size`` sequences each."""
    return batch_size / (median_ms / 1e3)


def best_under_bound(
    latency_ms_by_batch: dict[int, float], bound_ms: float, max_batch: int = 8
) -> dict | None:
    """The batch size with the highest throughput among those with B <= max_batch and latency <=
    bound_ms; None when no batch size qualifies. Ties go to the smaller batch."""
    best = None
    for batch in sorted(latency_ms_by_batch):
        latency = latency_ms_by_batch[batch]
        if batch > max_batch or latency > bound_ms:
            continue
        seq_s = throughput(batch, latency)
        if best is None or seq_s > best["throughput_seq_s"]:
            best = {"batch": batch, "latency_ms": latency, "throughput_seq_s": seq_s}
    return best


# ---- fidelity --------------------------------------------------------------------------------


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normalised mean of real-token states: [B, T, D], [B, T] -> [B, D] (sentence-transformers)."""
    m = mask[..., None].astype(np.float64)  # [B, T, 1]
    pooled = (hidden.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1.0)  # [B, D]
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def fidelity(reference: np.ndarray, output: np.ndarray, mask: np.ndarray, sentence: bool) -> dict:
    """Cosine similarity and max |diff| of ``output`` vs ``reference`` on real tokens only.

    reference, output: float [B, T, D]; mask: int [B, T] (1 = real token). Token mode: cosine of
    each real token's state, averaged. Sentence mode: cosine of normalised mean-pooled embeddings.
    """
    real = mask.astype(bool)  # [B, T]
    ref = reference.astype(np.float64)
    out = output.astype(np.float64)
    if sentence:
        a, b = _mean_pool(ref, mask), _mean_pool(out, mask)  # [B, D]
    else:
        a, b = ref[real], out[real]  # [n, D]
    cos = (a * b).sum(-1) / np.maximum(
        np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30
    )
    return {
        "mode": "sentence (mean-pooled, normalised)" if sentence else "token (real tokens)",
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "max_abs_diff": float(np.abs(ref[real] - out[real]).max()),
    }


class DisagreementError(RuntimeError):
    """An fp32 engine does not compute the same function as the fp32 reference."""


def check_fp32_agreement(
    outputs: dict[str, np.ndarray], precisions: dict[str, str], reference: str,
    mask: np.ndarray, atol: float = FP32_AGREEMENT_ATOL,
) -> dict[str, float]:
    """max |out - ref| on real tokens for every fp32 engine; raise if any exceeds ``atol``."""
    real = mask.astype(bool)
    ref = outputs[reference]
    diffs, bad = {}, []
    for name, out in outputs.items():
        if precisions[name] != "fp32" or name == reference:
            continue
        if out.shape != ref.shape:
            bad.append(f"  {name}: output shape {out.shape} != {reference} {ref.shape}")
            continue
        diff = float(np.abs(out[real].astype(np.float64) - ref[real]).max())
        diffs[name] = diff
        if not diff <= atol:  # also catches NaN
            bad.append(f"  {name}: max |diff| = {diff:.3g} > {atol:g}")
    if bad:
        raise DisagreementError(
            f"refusing to time: fp32 engines disagree with {reference} on real tokens "
            f"(tolerance {atol:g}):\n" + "\n".join(bad)
            + "\nFix the engine or leave it out with --engines."
        )
    return diffs


# ---- the race --------------------------------------------------------------------------------


@dataclass
class RaceOptions:
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    bound_batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    threads: int = 2
    budget_s: float = 2.0
    min_reps: int = 3
    latency_bound_ms: float = 10.0
    max_bound_batch: int = 8
    baseline: str = "pytorch-fp32"
    reference: str = "pytorch-fp32"
    fp32_atol: float = FP32_AGREEMENT_ATOL
    rounds: int = 1  # passes over all engines, order reversed every other round

    def sweep(self) -> list[int]:
        """Every batch size timed at N threads: the table's plus the latency-bound candidates."""
        bound = [b for b in self.bound_batch_sizes if b <= self.max_bound_batch]
        return sorted(set(self.batch_sizes) | set(bound) | {1})  # B=1: the N-thread latency


class Progress:
    """One stderr line per step: ``[ 3/28] 12s onnxruntime-int8: B=8 N threads``."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream, self.t0 = total, 0, stream, time.perf_counter()

    def step(self, message: str) -> None:
        self.done += 1
        width = len(str(self.total))
        elapsed = time.perf_counter() - self.t0
        print(f"[{self.done:{width}d}/{self.total}] {elapsed:5.0f}s {message}",
              file=self.stream, flush=True)

    def note(self, message: str) -> None:
        print(f"        {message}", file=self.stream, flush=True)


def prepare_engines(
    names: list[str], workload: Workload, work_dir: Path, threads: int, progress: Progress,
    registry: dict[str, type[Engine]] = ENGINES,
) -> tuple[dict[str, Engine], dict[str, str], dict[str, float], dict[str, list[str]]]:
    """Instantiate + prepare each engine; a missing package or any failure skips it with a reason.

    Returns (ready engines, skip reasons, prepare seconds, warnings raised while preparing)."""
    ready, skipped, seconds, warned = {}, {}, {}, {}
    for name in names:
        progress.step(f"{name}: prepare")
        t0 = time.perf_counter()
        engine = None
        try:
            engine = registry[name](workload, work_dir)
            engine.check_requirements()
            # exporters warn a lot: keep the warnings for the JSON, off the progress lines; and
            # quantizers' progress bars (NNCF) go to stderr, keeping stdout for the table
            with warnings.catch_warnings(record=True) as caught, \
                    contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("always")
                engine.prepare()
                engine.set_threads(threads)
            warned[name] = sorted({f"{w.category.__name__}: {w.message}".splitlines()[0]
                                   for w in caught})
        except Skip as exc:
            skipped[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - an engine that fails is skipped, not fatal
            skipped[name] = f"failed to prepare: {type(exc).__name__}: {exc}".splitlines()[0]
        else:
            ready[name] = engine
            seconds[name] = time.perf_counter() - t0
        if name in skipped:
            if engine is not None:
                engine.close()
            progress.note(f"skipped {name}: {skipped[name]}")
    return ready, skipped, seconds, warned


def run_race(
    workload: Workload, names: list[str], options: RaceOptions, work_dir: Path,
    progress_stream=sys.stderr, registry: dict[str, type[Engine]] = ENGINES,
) -> dict:
    """Prepare, check agreement (raises DisagreementError), time; return the raw results.

    The machine's load is sampled all along (``load.LoadSampler``): ``results["load"]``."""
    ready: dict[str, Engine] = {}
    try:
        with LoadSampler() as sampler:
            results = _race(workload, names, options, work_dir, progress_stream, registry, ready,
                            sampler)
        results["load"] = sampler.summary()
        return results
    finally:
        for engine in ready.values():
            engine.close()


def _race(workload, names, options, work_dir, progress_stream, registry, ready, sampler) -> dict:
    sweep = options.sweep()
    timing_steps = 1 + options.rounds * ((options.threads != 1) + len(sweep))  # fidelity, timing
    progress = Progress(len(names) * (1 + timing_steps), progress_stream)
    prepared, skipped, prepare_s, prepare_warnings = prepare_engines(
        names, workload, work_dir, options.threads, progress, registry
    )
    ready.update(prepared)
    for engine in ready.values():  # a worker subprocess's CPU time is the race's own
        if getattr(engine, "proc", None) is not None:
            sampler.watch(engine.proc.pid)
    progress.total = len(names) + len(ready) * timing_steps

    # 1. fidelity run on real sentences; fp32 agreement before any timing
    fid = workload.fidelity
    outputs = {}
    for name in list(ready):
        progress.step(f"{name}: fidelity run on {fid.shape[0]} real sentences")
        try:
            out = np.asarray(ready[name].run(fid.input_ids, fid.attention_mask))
        except Exception as exc:  # noqa: BLE001
            skipped[name] = f"failed to run: {type(exc).__name__}: {exc}".splitlines()[0]
            progress.note(f"skipped {name}: {skipped[name]}")
            ready.pop(name).close()
            continue
        outputs[name] = out
    precisions = {name: ready[name].precision for name in ready}
    reference = options.reference if options.reference in ready else next(
        (n for n in ready if precisions[n] == "fp32" and ready[n].weights == "as given"), None
    )
    reference_output = outputs.get(reference)
    if reference is None and ready:  # a subset race: fidelity against float32 all the same
        reference, reference_output = _untimed_reference(workload, work_dir, options, registry,
                                                         progress)
    results: dict = {"reference_engine": reference, "baseline": options.baseline,
                     "skipped": skipped, "engines": {}}
    if reference in outputs:
        results["fp32_max_abs_diff"] = check_fp32_agreement(
            outputs, precisions, reference, fid.attention_mask, options.fp32_atol
        )

    # 2. timing: ``rounds`` passes over the engines, the order reversed every other round
    timed: dict[str, list[dict]] = {name: [] for name in ready}
    for r in range(options.rounds):
        for name in (list(ready) if r % 2 == 0 else list(ready)[::-1]):
            if name in skipped:
                continue
            try:
                timed[name].append(_time_engine(name, ready[name], workload, options, progress))
            except Exception as exc:  # noqa: BLE001 - a crash mid-race skips this engine only
                skipped[name] = f"failed while timing: {type(exc).__name__}: {exc}".splitlines()[0]
                progress.note(f"skipped {name}: {skipped[name]}")
    for name, engine in ready.items():
        if name in skipped:
            continue
        record: dict = {"precision": engine.precision, "weights": engine.weights,
                        "prepare_s": prepare_s[name],
                        "prepare_warnings": prepare_warnings[name], "versions": engine.versions(),
                        "info": dict(engine.info)}
        if reference_output is not None:
            record["fidelity"] = fidelity(
                reference_output, outputs[name], fid.attention_mask, workload.sentence_model
            )
        record.update(merge_rounds(timed[name], options))
        results["engines"][name] = record
    add_ratios(results, options)
    add_peer_ratios(results, options)
    results["options"] = asdict(options)
    return results


def _untimed_reference(workload, work_dir, options, registry, progress):
    """(name, output) of the float32 reference on the fidelity batch, run only for fidelity;
    (None, None) when it cannot run (the reason is printed)."""
    name = options.reference
    progress.note(f"{name}: fidelity reference only (not timed)")
    engine = None
    try:
        engine = registry[name](workload, work_dir)
        engine.check_requirements()
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            engine.prepare()
            engine.set_threads(options.threads)
        fid = workload.fidelity
        return f"{name} (fidelity only, not timed)", np.asarray(
            engine.run(fid.input_ids, fid.attention_mask))
    except Exception as exc:  # noqa: BLE001
        progress.note(f"no fidelity reference: {name}: {type(exc).__name__}: {exc}".splitlines()[0])
        return None, None
    finally:
        if engine is not None:
            engine.close()


def round_spread(values: list[float]) -> dict:
    """Median and range of one quantity over rounds."""
    v = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
            "rounds": [float(x) for x in v]}


def best_round(rounds: list[dict]) -> dict:
    """The round with the lowest median of one measurement (other processes only ever slow a
    round down), with every round's median kept in ``round_medians_ms`` and their spread in
    ``rounds_median_ms`` (median, min, max) and ``rounds_throughput_seq_s``."""
    best = dict(min(rounds, key=lambda stats: stats["median_ms"]))
    best["round_medians_ms"] = [stats["median_ms"] for stats in rounds]
    best["rounds_median_ms"] = round_spread(best["round_medians_ms"])
    if all("throughput_seq_s" in stats for stats in rounds):
        best["rounds_throughput_seq_s"] = round_spread([s["throughput_seq_s"] for s in rounds])
    return best


def merge_rounds(rounds: list[dict], options: RaceOptions) -> dict:
    """One record from the ``_time_engine`` results of several rounds: best round per key, every
    round's median and their spread kept."""
    latency = {n: best_round([r["latency_b1"][n] for r in rounds]) for n in rounds[0]["latency_b1"]}
    batches = {b: best_round([r["batches"][b] for r in rounds]) for b in rounds[0]["batches"]}
    latency[str(options.threads)] = batches["1"]  # the sweep always holds B=1
    best = best_under_bound({int(b): s["median_ms"] for b, s in batches.items()},
                            options.latency_bound_ms, options.max_bound_batch)
    return {"latency_b1": latency, "batches": batches, "best_under_bound": best}


def _time_engine(name: str, engine: Engine, workload: Workload, options: RaceOptions,
                 progress: Progress) -> dict:
    """Batch-1 latency at 1 thread, then the batch-size sweep at N threads."""
    latency = {}
    if options.threads != 1:
        progress.step(f"{name}: B=1, 1 thread")
        engine.set_threads(1)
        latency["1"] = _measure(engine, workload.timing_batch(1), options, progress)
        engine.set_threads(options.threads)
    batches = {}
    for batch_size in options.sweep():
        progress.step(f"{name}: B={batch_size}, {options.threads} threads")
        batches[str(batch_size)] = _measure(
            engine, workload.timing_batch(batch_size), options, progress
        )
    latency[str(options.threads)] = batches["1"]  # the sweep always holds B=1
    return {"latency_b1": latency, "batches": batches}


def _measure(engine: Engine, batch, options: RaceOptions, progress: Progress) -> dict:
    samples = engine.time(batch.input_ids, batch.attention_mask, options.budget_s,
                          options.min_reps)
    stats = summarize(samples)
    stats["throughput_seq_s"] = throughput(batch.shape[0], stats["median_ms"])
    stats["samples_ms"] = [round(s * 1e3, 4) for s in samples]
    progress.note(f"{stats['median_ms']:9.2f} ms median, {stats['throughput_seq_s']:8.1f} seq/s "
                  f"(n={stats['n']})")
    return stats


def add_ratios(results: dict, options: RaceOptions) -> None:
    """Speed-ups vs the baseline engine of the same run (> 1 = faster than the baseline), for the
    engines that run the same weights as the baseline only."""
    base = results["engines"].get(options.baseline)
    if base is None:
        results["ratios_note"] = f"baseline {options.baseline!r} did not run: no ratios to it"
        return
    for record in results["engines"].values():
        ratios = {}
        record["ratios"] = ratios
        if record.get("weights") != base.get("weights"):
            continue  # another model: its speed next to its fidelity, no ratio to the baseline
        for n, stats in record["latency_b1"].items():
            base_stats = base["latency_b1"].get(n)
            if stats and base_stats:
                ratios[f"b1_latency_speedup_{n}t"] = base_stats["median_ms"] / stats["median_ms"]
        for b, stats in record["batches"].items():
            if b in base["batches"]:
                ratios[f"throughput_ratio_b{b}"] = (
                    stats["throughput_seq_s"] / base["batches"][b]["throughput_seq_s"]
                )
        mine, theirs = record["best_under_bound"], base["best_under_bound"]
        if mine and theirs:
            ratios["bound_throughput_ratio"] = mine["throughput_seq_s"] / theirs["throughput_seq_s"]


def is_peer(name: str) -> bool:
    """A peer is any engine that is not fdbert."""
    return not name.startswith("fdbert")


def add_peer_ratios(results: dict, options: RaceOptions) -> None:
    """Each engine against the fastest peer that ran the same weights, round by round.

    For a measurement (b1 latency at N threads, or seq/s at batch B): the peer is the non-fdbert
    engine on the same ``weights`` with the highest median-over-rounds throughput; the ratio of
    round r is (engine's seq/s in round r) / (peer's seq/s in round r), > 1 = faster than the peer;
    ``vs_peer[key]`` holds the peer's name and the ratios' median, min, max. None when no peer on the
    same weights ran (the table says so).
    """
    engines = results["engines"]
    for name, record in engines.items():
        vs = {}
        for key in [f"b{b}" for b in sorted(record["batches"], key=int)]:
            stats = record["batches"][key[1:]]
            peers = [p for p, r in engines.items() if is_peer(p) and p != name
                     and r.get("weights") == record.get("weights") and key[1:] in r["batches"]]
            if not peers:
                vs[key] = None
                continue
            best = max(peers, key=lambda p: engines[p]["batches"][key[1:]]
                       ["rounds_throughput_seq_s"]["median"])
            mine = stats["rounds_throughput_seq_s"]["rounds"]
            theirs = engines[best]["batches"][key[1:]]["rounds_throughput_seq_s"]["rounds"]
            vs[key] = {"peer": best, **round_spread([a / b for a, b in zip(mine, theirs)])}
        record["vs_peer"] = vs
