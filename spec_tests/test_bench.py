"""``fdbert bench``: statistics, the fp32 agreement gate, skipping, and the report files.

Most tests drive the harness with fake NumPy engines (no torch needed); the last ones run the real
PyTorch / ONNX Runtime adapters on a tiny DistilBERT (2 layers, D 32) for a fraction of a second.
Expected numbers are worked out by hand in the comments, never by the code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fdbert.bench import harness, report
from fdbert.bench.engines import Engine, Skip
from fdbert.bench.harness import (DisagreementError, RaceOptions, best_under_bound,
                                  check_fp32_agreement, fidelity, percentile, run_race, summarize,
                                  time_calls)
from fdbert.bench.workload import Batch, Workload

# ---- statistics on synthetic timings --------------------------------------------------------


def test_percentiles_interpolate_linearly_between_order_statistics():
    samples_s = [k / 1000 for k in range(100, 0, -1)]  # 100 ms .. 1 ms, unsorted
    stats = summarize(samples_s)
    assert stats["n"] == 100
    # sorted x[i] = i + 1 ms; p-th percentile at position p/100 * 99
    assert stats["median_ms"] == pytest.approx(50.5)  # 49.5 -> x[49] + 0.5 (x[50] - x[49])
    assert stats["p90_ms"] == pytest.approx(90.1)  # 89.1 -> 90 + 0.1
    assert stats["p99_ms"] == pytest.approx(99.01)  # 98.01 -> 99 + 0.01
    assert stats["min_ms"] == pytest.approx(1.0)
    assert stats["mean_ms"] == pytest.approx(50.5)
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        summarize([])


def test_best_under_bound_picks_highest_throughput_within_latency_and_batch_limits():
    latency_ms = {1: 5.0, 2: 8.0, 4: 12.0, 8: 9.5, 16: 9.0}
    best = best_under_bound(latency_ms, bound_ms=10.0, max_batch=8)
    # B=1: 200 seq/s, B=2: 250, B=4 too slow (12 ms), B=8: 8 / 9.5 ms = 842.1, B=16 batch too big
    assert best["batch"] == 8
    assert best["throughput_seq_s"] == pytest.approx(8 / 0.0095)
    assert best["latency_ms"] == 9.5
    assert best_under_bound(latency_ms, bound_ms=4.9) is None  # nothing fits
    assert best_under_bound({1: 10.0}, bound_ms=10.0)["batch"] == 1  # the bound is inclusive
    # equal throughput (1 / 2 ms = 2 / 4 ms = 500 seq/s): the smaller batch wins
    assert best_under_bound({1: 2.0, 2: 4.0}, bound_ms=10.0)["batch"] == 1


def test_best_round_keeps_the_fastest_round_and_every_median():
    rounds = [{"median_ms": 10.0, "n": 3}, {"median_ms": 7.0, "n": 5}, {"median_ms": 9.0, "n": 4}]
    best = harness.best_round(rounds)
    assert best["n"] == 5 and best["median_ms"] == 7.0
    assert best["round_medians_ms"] == [10.0, 7.0, 9.0]
    assert "round_medians_ms" not in rounds[1]  # the inputs are left alone


class FakeClock:
    """A clock that only moves when the timed function runs: ``step`` seconds per call."""

    def __init__(self, step):
        self.now, self.step, self.calls = 0.0, step, 0

    def __call__(self):
        return self.now

    def fn(self):
        self.calls += 1
        self.now += self.step


def test_time_calls_spends_the_budget_after_a_warm_up():
    clock = FakeClock(step=0.01)
    samples = time_calls(clock.fn, budget_s=1.0, min_reps=3, clock=clock)
    # warm-up: 15 calls (0.15 s = WARMUP_FRACTION of the budget); then 100 calls fill 1.0 s
    assert len(samples) == 100
    assert clock.calls == 115
    assert samples == pytest.approx([0.01] * 100)


def test_time_calls_keeps_min_reps_unless_the_hard_cap_is_reached():
    clock = FakeClock(step=2.0)  # budget 1 s, cap 5 s: 3 calls end at 6 s, min_reps reached
    samples = time_calls(clock.fn, budget_s=1.0, min_reps=3, clock=clock)
    assert len(samples) == 3 and clock.calls == 4  # one warm-up call (2 s > 0.15 s), then 3
    clock = FakeClock(step=0.3)  # 3 calls = 0.9 s < budget: a 4th call
    assert len(time_calls(clock.fn, budget_s=1.0, min_reps=3, clock=clock)) == 4
    clock = FakeClock(step=6.0)  # one call is past the 5 s cap: a single sample
    assert len(time_calls(clock.fn, budget_s=1.0, min_reps=3, clock=clock)) == 1
    clock = FakeClock(step=1e-6)
    assert len(time_calls(clock.fn, budget_s=1.0, max_reps=50, clock=clock)) == 50


def test_time_calls_with_a_fixed_warm_up_and_count():
    """What benchmarks/common.timings asks for: k warm-up calls, then exactly n timed calls."""
    clock = FakeClock(step=0.01)
    samples = time_calls(clock.fn, budget_s=0.0, min_reps=7, max_reps=7, clock=clock,
                         max_time_s=float("inf"), warmup_calls=2)
    assert len(samples) == 7 and clock.calls == 9
    clock = FakeClock(step=0.25)  # no warm-up at all; the budget still rules past min_reps
    samples = time_calls(clock.fn, budget_s=1.0, min_reps=3, clock=clock, warmup_calls=0)
    assert len(samples) == 4 and clock.calls == 4


# ---- fidelity and the fp32 gate -------------------------------------------------------------

B, T, D = 3, 5, 4
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=np.int64)  # [B, T]


def fake_hidden(input_ids, attention_mask):  # int64 [B, T] x2 -> f32 [B, T, D]
    """A deterministic stand-in for an encoder: sin of ids and positions."""
    pos = np.arange(input_ids.shape[1])[None, :, None]
    ch = np.arange(D)[None, None, :]
    return np.sin(input_ids[..., None] * 0.1 + pos * 0.3 + ch).astype(np.float32)


def test_fidelity_is_one_for_a_copy_and_ignores_padding():
    ids = np.arange(B * T).reshape(B, T)
    ref = fake_hidden(ids, MASK)
    out = ref.copy()
    out[1, 4] += 100.0  # a padding position: not compared
    f = fidelity(ref, out, MASK, sentence=False)
    assert f["cosine_mean"] == pytest.approx(1.0, abs=1e-12)
    assert f["max_abs_diff"] == 0.0
    out[0, 0] *= 2.0  # a real token, scaled: cosine stays 1, diff = |ref[0, 0]|
    f = fidelity(ref, out, MASK, sentence=False)
    assert f["cosine_mean"] == pytest.approx(1.0, abs=1e-12)
    assert f["max_abs_diff"] == pytest.approx(np.abs(ref[0, 0]).max(), rel=1e-6)
    out = ref.copy()
    out[2, 0] = -out[2, 0]  # one of 10 real tokens reversed: token cosines 9 x 1 and 1 x -1
    assert fidelity(ref, out, MASK, sentence=False)["cosine_mean"] == pytest.approx(0.8)


def test_fidelity_sentence_mode_compares_normalised_mean_pooled_embeddings():
    ref = np.zeros((1, 3, 2), np.float32)  # one sentence, 2 real tokens + 1 pad
    ref[0, 0], ref[0, 1], ref[0, 2] = [1, 0], [0, 1], [9, 9]
    out = ref.copy()
    out[0, 1] = [0, 3]  # pooled (0.5, 0.5) vs (0.5, 1.5): cos = 1 / (sqrt(0.5) sqrt(2.5))
    f = fidelity(ref, out, np.array([[1, 1, 0]]), sentence=True)
    assert f["cosine_mean"] == pytest.approx(1 / np.sqrt(0.5 * 2.5))
    assert f["max_abs_diff"] == 2.0


def test_fp32_agreement_refuses_a_perturbed_engine_and_ignores_int8_and_padding():
    ids = np.arange(B * T).reshape(B, T)
    ref = fake_hidden(ids, MASK)
    padded_noise = ref.copy()
    padded_noise[2, 3] += 1.0  # padding: allowed
    close = ref + np.float32(5e-5)
    outputs = {"ref": ref, "close": close, "pad": padded_noise, "int8": ref + 0.5}
    precisions = {"ref": "fp32", "close": "fp32", "pad": "fp32", "int8": "int8"}
    diffs = check_fp32_agreement(outputs, precisions, "ref", MASK, atol=1e-4)
    assert set(diffs) == {"close", "pad"}  # int8 engines are not held to the fp32 bound
    assert diffs["pad"] == 0.0
    assert diffs["close"] == pytest.approx(5e-5, rel=1e-2)

    bad = ref.copy()
    bad[1, 2, 3] += 1e-3  # one real-token element off by 10x the tolerance
    with pytest.raises(DisagreementError, match=r"bad: max \|diff\| = 0\.001"):
        check_fp32_agreement({**outputs, "bad": bad}, {**precisions, "bad": "fp32"}, "ref", MASK)
    nan = ref.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(DisagreementError, match="nan"):
        check_fp32_agreement({"ref": ref, "nan": nan}, {"ref": "fp32", "nan": "fp32"}, "ref", MASK)


# ---- the race loop with fake engines ----------------------------------------------------------


def fake_workload(tmp_path) -> Workload:
    rng = np.random.default_rng(0)
    return Workload(
        model_dir=tmp_path, model_name="fake", seq_len=T, vocab_size=50, sentence_model=False,
        token_source="random", text_source=None,
        timing_ids=rng.integers(0, 50, (8, T)), fidelity=Batch(rng.integers(0, 50, (B, T)), MASK),
    )


class FakeEngine(Engine):
    name = "fake-ref"

    def prepare(self):
        self.threads = None

    def set_threads(self, n):
        self.threads = n

    def run(self, input_ids, attention_mask):
        return fake_hidden(input_ids, attention_mask)


class FakePerturbed(FakeEngine):
    name = "fake-perturbed"

    def run(self, input_ids, attention_mask):
        return fake_hidden(input_ids, attention_mask) + np.float32(1e-3)


class FakeInt8(FakePerturbed):
    name = "fake-int8"
    precision = "int8"


class FakeMissing(FakeEngine):
    name = "fake-missing"
    requires = (("fdbert_no_such_module_xyz", "no-such-dist"),)


class FakeBroken(FakeEngine):
    name = "fake-broken"

    def prepare(self):
        raise RuntimeError("compiler exploded\nsecond line")


class FakeDeclines(FakeEngine):
    name = "fake-declines"

    def prepare(self):
        raise Skip("feature X does not exist yet")


class FakeCrashesAtB4(FakeEngine):
    name = "fake-crashes"

    def run(self, input_ids, attention_mask):
        if input_ids.shape[0] == 4:
            raise MemoryError("out of memory at B=4")
        return fake_hidden(input_ids, attention_mask)


REGISTRY = {cls.name: cls for cls in (FakeEngine, FakePerturbed, FakeInt8, FakeMissing, FakeBroken,
                                      FakeDeclines, FakeCrashesAtB4)}
FAST = RaceOptions(batch_sizes=[1, 4], bound_batch_sizes=[2], threads=2, budget_s=0.01,
                   min_reps=2, baseline="fake-ref", reference="fake-ref", rounds=2)


def test_race_refuses_before_timing_when_an_fp32_engine_disagrees(tmp_path, capsys):
    with pytest.raises(DisagreementError, match="fake-perturbed"):
        run_race(fake_workload(tmp_path), ["fake-ref", "fake-perturbed"], FAST, tmp_path,
                 registry=REGISTRY)
    assert "B=1" not in capsys.readouterr().err  # nothing was timed


def test_race_skips_missing_broken_and_declining_engines_with_reasons(tmp_path):
    names = ["fake-ref", "fake-int8", "fake-missing", "fake-broken", "fake-declines",
             "fake-crashes"]
    results = run_race(fake_workload(tmp_path), names, FAST, tmp_path, registry=REGISTRY)
    assert list(results["engines"]) == ["fake-ref", "fake-int8"]
    skipped = results["skipped"]
    assert skipped["fake-missing"] == ("package 'no-such-dist' is not installed "
                                       "(pip install no-such-dist)")
    assert skipped["fake-broken"] == "failed to prepare: RuntimeError: compiler exploded"
    assert skipped["fake-declines"] == "feature X does not exist yet"
    assert skipped["fake-crashes"] == "failed while timing: MemoryError: out of memory at B=4"
    rec = results["engines"]["fake-int8"]
    assert sorted(rec["batches"], key=int) == ["1", "2", "4"]  # table sizes + bound sizes
    assert set(rec["latency_b1"]) == {"1", "2"}  # 1 thread and N threads
    assert rec["latency_b1"]["2"] is rec["batches"]["1"]
    assert rec["fidelity"]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert results["engines"]["fake-ref"]["ratios"]["throughput_ratio_b4"] == 1.0
    for stats in rec["batches"].values():
        assert stats["n"] == len(stats["samples_ms"]) >= FAST.min_reps
        assert len(stats["round_medians_ms"]) == FAST.rounds
        assert stats["median_ms"] == min(stats["round_medians_ms"])


def test_a_subset_race_still_measures_fidelity_against_float32(tmp_path):
    """No fp32 engine among the raced ones: the reference runs once, untimed, for fidelity."""
    results = run_race(fake_workload(tmp_path), ["fake-int8"], FAST, tmp_path, registry=REGISTRY)
    assert results["reference_engine"] == "fake-ref (fidelity only, not timed)"
    assert list(results["engines"]) == ["fake-int8"]
    assert results["engines"]["fake-int8"]["fidelity"]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert "load" in results  # sampled during the race


def test_unknown_engine_names_are_rejected_with_the_list():
    import argparse

    from fdbert.bench import add_arguments

    parser = add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--engines", "pytorch-fp32,onnxruntime-int8", "--batch-sizes", "1,2"])
    assert args.engines == ["pytorch-fp32", "onnxruntime-int8"] and args.batch_sizes == [1, 2]
    with pytest.raises(SystemExit):
        parser.parse_args(["--engines", "tensorflow"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--batch-sizes", "1,0"])


# ---- report files from hand-made results -------------------------------------------------------


def hand_results():
    def stats(median, p90, p99, batch):
        return {"n": 5, "median_ms": median, "p90_ms": p90, "p99_ms": p99, "mean_ms": median,
                "min_ms": median, "samples_ms": [median] * 5,
                "throughput_seq_s": batch / median * 1e3}

    base = {"precision": "fp32", "fidelity": {"mode": "token (real tokens)", "cosine_mean": 1.0,
                                               "max_abs_diff": 0.0},
            "latency_b1": {"1": stats(50, 55, 60, 1), "2": stats(40, 41, 42, 1)},
            "batches": {"1": stats(40, 41, 42, 1), "8": stats(200, 210, 220, 8)},
            "best_under_bound": None, "ratios": {"b1_latency_speedup_2t": 1.0,
                                                 "throughput_ratio_b8": 1.0}}
    fast = {"precision": "int8", "weights": "pruned 80% 1x4", "fidelity": {"mode": "token (real tokens)", "cosine_mean": 0.99912,
                                               "max_abs_diff": 0.25},
            "latency_b1": {"1": stats(20, 21, 22, 1), "2": stats(8, 9, 12.5, 1)},
            "batches": {"1": stats(8, 9, 12.5, 1), "8": stats(50, 51, 52, 8)},
            "best_under_bound": {"batch": 1, "latency_ms": 8, "throughput_seq_s": 125.0},
            "ratios": {"b1_latency_speedup_2t": 5.0, "throughput_ratio_b8": 4.0}}
    return {"options": {"threads": 2, "latency_bound_ms": 10.0, "batch_sizes": [1, 8]},
            "baseline": "torch", "reference_engine": "torch", "load_average_start": [0.1, 0.2, 0.3],
            "workload": {"model": "m", "layers": 2, "d_model": 32, "seq_len": 16,
                         "token_source": "random"},
            "engines": {"torch": base, "fast": fast},
            "skipped": {"ov": "package 'openvino' is not installed"}}


def test_markdown_table_rows_and_skipped_list():
    text = report.markdown(hand_results())
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| engine"))
    assert "b1 latency 2T ms p50/p90/p99" in header and "seq/s B=8" in header
    # the bound column is computed from the median latency (harness.best_under_bound): it says so
    assert "best seq/s with median ≤10 ms (B)" in header
    # fast: 2T latency 8/9/12.5 ms; 1000/8 = 125 seq/s at B=1, 8/50 ms = 160 seq/s at B=8; no
    # peer (every engine here is a peer of the other, but their weights differ)
    assert ("| fast | ⚑ pruned 80% 1x4 | 0.99912 | 20.0 / 21.0 / 22.0 | 8.0 / 9.0 / 12.5 | 125.0 "
            "| 160.0 | 125.0 (1) | – | – | 5.00× | 4.00× | 0.250000 |") in lines
    assert ("| torch | given | 1.00000 | 50.0 / 55.0 / 60.0 | 40.0 / 41.0 / 42.0 | 25.0 | 40.0 "
            "| none |") in text
    assert "⚑ other weights than the given model's" in text
    assert "- ov: package 'openvino' is not installed" in lines


def test_markdown_warns_when_the_machine_was_busy():
    results = hand_results()
    assert "WARNING" not in report.markdown(results)  # load 0.1 on any machine
    results["load_average_start"] = [2.5, 1.0, 1.0]
    results["environment"] = {"cpu_count": 4}  # 2.5 >= 0.5 * 4
    assert "WARNING: load average 2.5 on 4 CPUs" in report.markdown(results)


def test_markdown_warns_when_others_took_cpu_during_the_run():
    """A quiet start does not hide a busy run: the sampled CPU of other processes counts."""
    from fdbert.bench.load import summarize_load

    results = hand_results()
    # 4 samples: 0.0, 0.1, 0.5, 0.6 CPUs -> mean 0.3 >= 0.25, median (0.1 + 0.5) / 2 = 0.3, max 0.6
    results["load"] = summarize_load([0.0, 0.5, 0.1, 0.6], [0.2, 1.4], 0.5)
    text = report.markdown(results)
    assert ("other processes used 0.30 CPUs on average (median 0.30, max 0.60; 4 samples, every "
            "0.5 s)") in text
    assert "0.2-1.4 during the run" in text
    assert "WARNING: other processes took 0.30 CPUs on average during the run" in text
    results["load"] = summarize_load([0.0, 0.1, 0.2], [0.2], 0.5)  # mean 0.1: quiet enough
    assert "WARNING" not in report.markdown(results)


def test_load_sampler_counts_its_own_process_as_its_own(tmp_path):
    """Busy-looping in this process for ~0.6 s must not show as other processes' CPU."""
    import time

    from fdbert.bench.load import LoadSampler, machine_busy_s

    if machine_busy_s() is None:
        pytest.skip("no /proc/stat")
    with LoadSampler(interval_s=0.1) as sampler:
        end = time.perf_counter() + 0.6
        while time.perf_counter() < end:
            pass
    summary = sampler.summary()
    assert summary["samples"] >= 3
    assert 0.0 <= summary["others_cpus_mean"] <= (__import__("os").cpu_count() or 1)


def test_table_shows_the_spread_of_rounds():
    results = hand_results()
    stats = results["engines"]["fast"]["batches"]["8"]
    # three rounds of B=8 at 150, 160, 130 seq/s: median 150, range 130-160
    stats["rounds_throughput_seq_s"] = harness.round_spread([150.0, 160.0, 130.0])
    assert "| 150.0 (130.0-160.0) |" in report.markdown(results)


def test_peer_ratios_compare_only_engines_on_the_same_weights_round_by_round():
    def rec(weights, seq_s_by_round):
        spread = harness.round_spread(seq_s_by_round)
        return {"weights": weights, "batches": {"32": {"rounds_throughput_seq_s": spread}}}

    results = {"engines": {
        "fdbert-sparse": rec("pruned 80% 1x4", [120.0, 100.0, 110.0]),
        "deepsparse": rec("pruned 80% 1x4", [100.0, 100.0, 100.0]),
        "openvino-int8": rec("as given", [300.0, 300.0, 300.0]),  # faster, but another model
        "onnxruntime-int8": rec("as given", [200.0, 250.0, 150.0]),
        "fdbert-dense": rec("as given", [150.0, 150.0, 150.0]),
        "fdbert-distilled": rec("distilled", [500.0, 500.0, 500.0]),
    }}
    harness.add_peer_ratios(results, RaceOptions())
    e = results["engines"]
    vs = e["fdbert-sparse"]["vs_peer"]["b32"]
    assert vs["peer"] == "deepsparse"  # the only peer on the pruned weights
    assert vs["rounds"] == [1.2, 1.0, 1.1] and vs["median"] == 1.1 and vs["min"] == 1.0
    vs = e["fdbert-dense"]["vs_peer"]["b32"]
    assert vs["peer"] == "openvino-int8"  # the fastest peer (median 300 vs 200) on these weights
    assert vs["median"] == pytest.approx(0.5)
    assert e["fdbert-distilled"]["vs_peer"]["b32"] is None  # no peer runs the distilled model
    assert e["openvino-int8"]["vs_peer"]["b32"]["peer"] == "onnxruntime-int8"  # not itself
    assert report._vs_peer(None) == "no peer on these weights"
    assert report._vs_peer(e["fdbert-sparse"]["vs_peer"]["b32"]) == "1.10× (1.00-1.20) deepsparse"


def test_plot_styles_are_distinct_and_the_title_has_no_path():
    pytest.importorskip("matplotlib")
    names = [f"engine-{i}" for i in range(20)]
    styles = report.engine_styles(names)
    assert len(set(c for c, _ in styles.values())) == 20  # a colour of its own each
    assert len(set(styles.values())) == 20
    results = hand_results()
    results["workload"]["model"] = "/home/someone/models/all-MiniLM-L6-v2"
    results["environment"] = {"cpu_model": "AMD EPYC"}
    title = report.plot_title(results)
    assert "/" not in title and title.startswith("all-MiniLM-L6-v2  T=16  2 threads")


def test_json_round_trips_and_plot_is_a_png(tmp_path):
    results = hand_results()
    path = report.write_json(results, tmp_path / "sub" / "bench.json")
    assert json.loads(path.read_text()) == results
    env = report.environment()
    assert env["python"].count(".") == 2 and "numpy" in env["versions"]
    pytest.importorskip("matplotlib")
    png = report.plot(results, tmp_path / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- real adapters on a tiny DistilBERT -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from fdbert.bench.workload import build_random_model

    return build_random_model(tmp_path_factory.mktemp("tiny-distilbert"), texts=None, n_layers=2,
                              dim=32, n_heads=2, hidden_dim=64, vocab_size=1200,
                              max_position_embeddings=64)


@pytest.fixture
def thread_env(monkeypatch):
    """main() sets OMP/MKL/OpenBLAS thread variables: give them back after the test."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "1")


def test_tiny_race_end_to_end_writes_table_json_and_plot(tiny_dir, tmp_path, capsys, thread_env):
    from fdbert.bench import main

    out = tmp_path / "out"
    engines = "pytorch-fp32,pytorch-int8-dynamic,onnxruntime-fp32,fdbert-reference"
    code = main([str(tiny_dir), "--seq-len", "16", "--batch-sizes", "1,2", "--bound-batch-sizes",
                 "1", "--budget-s", "0.02", "--engines", engines, "--out", str(out)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "| pytorch-fp32 |" in stdout
    results = json.loads((out / "bench.json").read_text())
    ran = set(results["engines"])
    assert "pytorch-fp32" in ran and results["reference_engine"] == "pytorch-fp32"
    assert ran | set(results["skipped"]) == set(engines.split(","))
    for name, diff in results["fp32_max_abs_diff"].items():
        assert diff <= harness.FP32_AGREEMENT_ATOL, name
    assert results["workload"]["token_source"].startswith("random ids in [1000, V)")
    assert (out / "bench.md").read_text() in stdout


def test_main_refuses_a_perturbed_fp32_engine(tiny_dir, tmp_path, monkeypatch, capsys, thread_env):
    from fdbert.bench import EXIT_DISAGREEMENT, engines, main

    class Perturbed(engines.PyTorchFP32):
        def run(self, input_ids, attention_mask):
            return super().run(input_ids, attention_mask) + np.float32(1e-3)

    monkeypatch.setitem(engines.ENGINES, "onnxruntime-fp32", Perturbed)
    code = main([str(tiny_dir), "--seq-len", "16", "--engines", "pytorch-fp32,onnxruntime-fp32",
                 "--budget-s", "0.01", "--out", str(tmp_path / "out")])
    assert code == EXIT_DISAGREEMENT
    err = capsys.readouterr().err
    assert "refusing to time" in err and "onnxruntime-fp32: max |diff|" in err
    assert not (tmp_path / "out" / "bench.json").exists()
