"""Engines in another venv (DeepSparse): the pipe protocol of fdbert/bench/worker.py, driven with
its NumPy fake adapter under this interpreter, and the one-line skip when the venv is missing.
No deepsparse needed. Expected outputs are the fake's formula, written out here."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

from fdbert.bench import engines, worker
from fdbert.bench.engines import RemoteEngine, Skip
from fdbert.bench.harness import RaceOptions, run_race
from fdbert.bench.workload import Batch, Workload

B, T = 3, 5
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=np.int64)


def fake_out(ids):  # out[b, t, c] = sin(0.1 id + 0.3 t + c): FakeAdapter's formula, D = 4
    t = np.arange(ids.shape[1])[None, :, None]
    c = np.arange(4)[None, None, :]
    return np.sin(ids[..., None] * 0.1 + t * 0.3 + c).astype(np.float32)


def workload(tmp_path) -> Workload:
    rng = np.random.default_rng(0)
    return Workload(model_dir=tmp_path, model_name="fake", seq_len=T, vocab_size=50,
                    sentence_model=False, token_source="random", text_source=None,
                    timing_ids=rng.integers(0, 50, (8, T)),
                    fidelity=Batch(rng.integers(0, 50, (B, T)), MASK))


class LocalFake(engines.Engine):
    """The same function in this process: the fidelity reference of the race below."""

    name = "local-fake"

    def prepare(self):
        pass

    def set_threads(self, n):
        pass

    def run(self, input_ids, attention_mask):
        return fake_out(input_ids)


class RemoteFake(RemoteEngine):
    name = "remote-fake"
    precision = "int8"
    adapter = "fake"

    def python(self):  # this interpreter: the fake adapter needs only NumPy
        return Path(sys.executable)

    def model_path(self):
        return "fake-model"


class RemoteRefuses(RemoteFake):
    name = "remote-refuses"

    def model_path(self):
        return "refuse"  # FakeAdapter.prepare raises Skip, as DeepSparse refusing a CPU would


REGISTRY = {cls.name: cls for cls in (LocalFake, RemoteFake, RemoteRefuses)}
FAST = RaceOptions(batch_sizes=[1, 4], bound_batch_sizes=[2], threads=2, budget_s=0.01,
                   min_reps=2, baseline="local-fake", reference="local-fake", rounds=2)


def test_messages_round_trip_with_arrays_as_npy():
    buf = io.BytesIO()
    ids = np.arange(6, dtype=np.int64).reshape(2, 3)
    worker.send(buf, {"cmd": "run", "x": 1}, {"input_ids": ids, "f": np.float32([1.5])})
    worker.send(buf, {"cmd": "quit"})
    buf.seek(0)
    header, arrays = worker.receive(buf)
    assert header == {"cmd": "run", "x": 1}
    assert arrays["input_ids"].dtype == np.int64 and np.array_equal(arrays["input_ids"], ids)
    assert arrays["f"].tolist() == [1.5]
    assert worker.receive(buf) == ({"cmd": "quit"}, {})
    with pytest.raises(EOFError):
        worker.receive(buf)


def test_a_remote_engine_races_through_the_pipe_with_the_same_timing_loop(tmp_path):
    results = run_race(workload(tmp_path), ["local-fake", "remote-fake", "remote-refuses"], FAST,
                       tmp_path, registry=REGISTRY)
    assert results["skipped"] == {"remote-refuses": "this CPU is not supported (fake)"}
    rec = results["engines"]["remote-fake"]
    assert rec["fidelity"]["max_abs_diff"] == 0.0  # the worker computed exactly fake_out
    assert rec["versions"] == {"numpy": np.__version__}
    assert rec["info"] == {"model": "fake-model"}  # what the worker's prepare reported
    for stats in rec["batches"].values():  # timed in the worker: budget and min_reps honoured
        assert stats["n"] == len(stats["samples_ms"]) >= FAST.min_reps
        assert len(stats["round_medians_ms"]) == FAST.rounds


def test_the_worker_process_ends_when_the_engine_closes(tmp_path):
    engine = RemoteFake(workload(tmp_path), tmp_path)
    engine.check_requirements()
    engine.prepare()
    engine.set_threads(1)
    ids = np.array([[3, 4, 5]], dtype=np.int64)
    np.testing.assert_array_equal(engine.run(ids, np.ones_like(ids)), fake_out(ids))
    samples = engine.time(ids, np.ones_like(ids), budget_s=0.01, min_reps=4)
    assert len(samples) >= 4 and all(s > 0 for s in samples)
    with pytest.raises(RuntimeError, match="fake worker: unknown command 'nope'"):
        engine.call({"cmd": "nope"})
    engine.close()
    assert engine.proc.returncode == 0


def test_deepsparse_not_installed_is_one_line_and_the_race_goes_on(tmp_path, monkeypatch):
    missing = tmp_path / "no-venv" / "bin" / "python"
    monkeypatch.setenv("FDBERT_DEEPSPARSE_PYTHON", str(missing))
    engine = engines.DeepSparseInt8Sparse(workload(tmp_path), tmp_path)
    with pytest.raises(Skip) as info:
        RemoteEngine.check_requirements(engine)
    assert str(info.value) == f"not installed: no {missing} (make bench-deepsparse builds it)"
    registry = {**REGISTRY, "deepsparse-int8-sparse": engines.DeepSparseInt8Sparse}
    results = run_race(workload(tmp_path), ["local-fake", "deepsparse-int8-sparse"], FAST,
                       tmp_path, registry=registry)
    assert list(results["engines"]) == ["local-fake"]
    reason = results["skipped"]["deepsparse-int8-sparse"]
    assert "\n" not in reason and ("not installed" in reason or "is not installed" in reason)


@pytest.mark.parametrize("cls", [engines.DeepSparseInt8Sparse, engines.DeepSparseFP32Sparse])
def test_deepsparse_runs_the_same_pruned_weights_as_fdbert(cls):
    assert cls.weights == engines.FdbertNativeInt8Sparse.weights
    assert cls.sparsity == engines.FdbertNativeInt8Sparse.sparsity
    assert cls.block == engines.FdbertNativeInt8Sparse.block
    assert cls.precision != "fp32"  # other weights: never held to the fp32 agreement gate
