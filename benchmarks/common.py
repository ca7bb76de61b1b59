"""What the scripts of benchmarks/ share: one timing loop, the random DistilBERT-base models, and
the checks every script runs before it times anything (llm.c's habit: validate, then time).

Timing goes through ``fdbert.bench.timing.time_calls``, the loop ``fdbert bench`` races engines
with; :func:`timings` only picks its knobs (a fixed number of calls, or a time budget). Statistics
(min for kernels, median / percentiles for forwards) are the caller's choice, made in one line.
On a shared machine compare within one run: :func:`alternate` runs the sides of an A/B round by
round in alternating order, and :func:`spread` prints a median with its range over rounds.

The scripts run as ``python benchmarks/NAME.py``, so this module imports as ``common``; none of
them imports another script.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable

import numpy as np

import fdbert
from fdbert.bench.timing import time_calls
from fdbert.bench.report import cpu_model
from fdbert.config import EncoderConfig
from fdbert.model import Encoder
from fdbert.weights import EmbeddingWeights, EncoderLayerWeights, EncoderWeights, LayerNorm, Linear

# ---- timing ----------------------------------------------------------------------------------


def timings(fn: Callable[[], object], *, reps: int | None = None, budget_s: float = 0.0,
            min_reps: int = 1, max_reps: int = 10_000, warmup: int = 1) -> np.ndarray:
    """Seconds [n] of repeated ``fn()`` calls after ``warmup`` untimed calls.

    ``reps=n``: exactly n calls. Otherwise calls until ``budget_s`` has elapsed and at least
    ``min_reps`` are done (at most ``max_reps``; no cap on the time a slow call may take).
    """
    if reps is not None:
        budget_s, min_reps, max_reps = 0.0, reps, reps
    return np.array(time_calls(fn, budget_s, min_reps, max_reps, max_time_s=math.inf,
                               warmup_calls=warmup))


def best_time(fn: Callable[[], object], min_seconds: float = 0.3, min_reps: int = 5,
              max_reps: int = 200) -> float:
    """Minimum wall time (s) of fn() over at least min_reps calls and min_seconds: a kernel's time
    on a shared machine (other processes only ever slow a call down)."""
    return float(timings(fn, budget_s=min_seconds, min_reps=min_reps, max_reps=max_reps).min())


def alternate(sides: dict[str, Callable[[], object]], rounds: int) -> dict[str, list]:
    """{side: [its result in each round]}, every side run once per round, the order reversed every
    other round, so that the machine's drift hits all sides alike."""
    out = {name: [] for name in sides}
    for r in range(rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            out[name].append(sides[name]())
    return out


def spread(values, fmt: str = "{:.2f}", unit: str = "") -> str:
    """'median (min-max)' of per-round values, e.g. ratios of two sides of one round."""
    v = np.asarray(values, dtype=np.float64)
    m, lo, hi = (fmt.format(x) for x in (np.median(v), v.min(), v.max()))
    return f"{m}{unit} ({lo}-{hi})"


def cpu_name() -> str:
    return cpu_model() or platform.processor()


# ---- random models: the DistilBERT-base shape, no download ------------------------------------

SEQ = 128  # tokens per sequence of the timing batches
DISTILBERT_BASE = EncoderConfig("distilbert", vocab_size=30522, d_model=768, n_layers=6, n_heads=12,
                                d_ffn=3072, max_positions=512)


def random_encoder(cfg: EncoderConfig = DISTILBERT_BASE, seed: int = 0) -> Encoder:
    """An fdbert Encoder with N(0, 0.02) weights and biases, LayerNorms at identity, built with NumPy."""
    rng = np.random.default_rng(seed)

    def lin(n, k):  # W [n, k], b [n]
        return Linear(rng.normal(0, 0.02, (n, k)).astype(np.float32),
                      rng.normal(0, 0.02, n).astype(np.float32))

    def ln(d):
        return LayerNorm(np.ones(d, np.float32), np.zeros(d, np.float32))

    D, F = cfg.d_model, cfg.d_ffn
    emb = EmbeddingWeights(rng.normal(0, 0.02, (cfg.vocab_size, D)).astype(np.float32),
                           rng.normal(0, 0.02, (cfg.max_positions, D)).astype(np.float32), None, ln(D))
    layers = [EncoderLayerWeights(lin(D, D), lin(D, D), lin(D, D), lin(D, D), ln(D), lin(F, D),
                                  lin(D, F), ln(D)) for _ in range(cfg.n_layers)]
    return Encoder(cfg, EncoderWeights(emb, layers))


def token_ids(n_seqs: int, seed: int, seq: int = SEQ) -> list[list[int]]:  # -> n_seqs lists of seq ids
    """Ids uniform in [1000, V): no tokenizer needed."""
    rng = np.random.default_rng(seed)
    return rng.integers(1000, DISTILBERT_BASE.vocab_size, size=(n_seqs, seq)).tolist()


VARIANTS = ("fp32-reference", "fp32-native", "int8-dense", "int8-sparse-80", "int8-sparse-80-qattn")


def build_variants(names) -> dict:
    """name -> (model, backend) for the VARIANTS of bench_e2e.py. Quantized models calibrate on 8
    random 128-token id lists (min-max); the sparse ones are fdbert.prune(0.8, (1, 4)) first."""
    base = random_encoder()
    calib = token_ids(8, seed=1)
    out = {}
    for name in names:
        if name.startswith("fp32"):
            out[name] = (base, name.split("-")[1])
        elif name == "int8-dense":
            out[name] = (fdbert.quantize(base, calib, progress=False, measure_error=False), "native")
        elif name in ("int8-sparse-80", "int8-sparse-80-qattn"):
            pruned = fdbert.prune(base, sparsity=0.8, block=(1, 4))
            attention = "int8" if name.endswith("-qattn") else "fp32"
            out[name] = (fdbert.quantize(pruned, calib, progress=False, measure_error=False,
                                         attention=attention), "native")
        else:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return out


# ---- validation before timing ----------------------------------------------------------------


def cosine(a, b) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def validate_model(model, backend, batch) -> tuple[float, float]:
    """(min over tokens of cos(backend row, reference row), whole-output cosine) for one model."""
    with fdbert.set_backend("reference"):
        ref = model.forward_packed(batch).astype(np.float64)  # [n, D]
    with fdbert.set_backend(backend):
        got = model.forward_packed(batch).astype(np.float64)  # [n, D]
    num = np.einsum("nd,nd->n", ref, got)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    return float((num / den).min()), cosine(ref, got)


def check_int_product(name, got, x, w, rows) -> None:
    """Exact check of the first ``rows`` rows of an int32 GEMM output against int64 x @ w.T."""
    ref = x[:rows].astype(np.int64) @ w.astype(np.int64).T
    if not np.array_equal(got[:rows], ref):
        bad = np.argwhere(got[:rows] != ref)[0]
        raise SystemExit(f"VALIDATION FAILED: {name} at {tuple(bad)}: {got[tuple(bad)]} != {ref[tuple(bad)]}")


def check_close(name, want, got, tol) -> str:
    """|got - want| <= atol + rtol |want| for tol = (atol, rtol), bit-exact for tol None; returns
    the max error as text for the table."""
    if tol is None:
        if not np.array_equal(got, want):
            raise SystemExit(f"VALIDATION FAILED: {name}: native differs from the reference "
                             "(must be bit-exact)")
        return "exact"
    atol, rtol = tol
    err = np.abs(got.astype(np.float64) - want)
    if not np.all(err <= atol + rtol * np.abs(want)):
        raise SystemExit(f"VALIDATION FAILED: {name}: max |err| {err.max():.3g} exceeds atol {atol} + "
                         f"rtol {rtol} |ref|")
    return f"{err.max():.1e}"


# ---- INT8 kernel operands --------------------------------------------------------------------

SHAPES = [(768, 768), (3072, 768), (768, 3072)]  # (N, K): attention out / FFN up / FFN down


def int8_operands(rng, M, N, K):  # -> x u8 [M, K], w s8 [N, K] (the INT8 contract's ranges)
    x = rng.integers(0, 256, (M, K), dtype=np.uint8)
    w = rng.integers(-127, 128, (N, K), dtype=np.int8)
    return x, w


def sparse_weight(rng, w, density):
    """Keep each 1x4 block of w [N, K] with probability ``density`` -> (w_masked, PackedBSR)."""
    import scipy.sparse
    from fdbert_native import _qgemm as q

    N, K = w.shape
    keep = rng.random((N, K // 4)) < density                          # [N, K/4]
    wm = (w.reshape(N, K // 4, 4) * keep[:, :, None]).reshape(N, K)   # [N, K/4, 4] -> [N, K]
    bsr = scipy.sparse.bsr_matrix(wm, blocksize=(1, 4))
    return wm, q.pack_bsr(bsr.data, bsr.indices.astype(np.int32), bsr.indptr.astype(np.int32), (N, K))
