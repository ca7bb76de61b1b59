"""The ``fdbert`` command line: ``fdbert info`` and ``fdbert encode MODEL_DIR TEXT...``.

Run both in-process (``main([...])``, exit codes and stdout/stderr) and once as a real subprocess
(``python -m fdbert.cli``), as a user's shell would.
"""

from __future__ import annotations

import contextvars
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fdbert
from fdbert.cli import main as _main
from tolerances import CLI_PRINTED_COSINE_ATOL

REPO_ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["A cat sat on the mat.", "A dog slept on the rug.", "Quarterly revenue rose by ten percent."]


def main(argv):
    """fdbert.cli.main in a copy of this context: `--backend` is a statement-form set_backend, which
    would otherwise stay in force for the tests that run after this one."""
    return contextvars.copy_context().run(_main, argv)


def run_cli(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "fdbert.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def similarity_matrix(stdout, n):  # the last n lines of `fdbert encode` -> [n, n]
    rows = stdout.strip().splitlines()[-n:]
    return np.array([[float(v) for v in row.split()[-n:]] for row in rows])


# ---- fdbert info ---------------------------------------------------------------------------------
def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"fdbert {fdbert.__version__}" in out
    assert f"current backend: {fdbert.get_backend()}" in out
    for name, reason in fdbert.available_backends().items():
        assert re.search(rf"^\s*{name}\s+{'available' if reason is None else ''}", out, re.M), name
    for op in ("attention", "embedding", "encoder_layer", "gelu", "layer_norm", "linear", "softmax"):
        assert re.search(rf"op {op}\s+-> \w+", out), op


def test_info_as_a_subprocess_with_pure_python():
    env_run = subprocess.run([sys.executable, "-m", "fdbert.cli", "info"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "FDBERT_PURE_PYTHON": "1",
                                               "PYTHONPATH": str(REPO_ROOT)})
    assert env_run.returncode == 0, env_run.stderr
    assert "current backend: reference" in env_run.stdout
    assert "FDBERT_PURE_PYTHON" in env_run.stdout  # the reason native is unavailable is shown


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"fdbert {fdbert.__version__}"


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "usage: fdbert" in out and "encode" in out and "info" in out


# ---- fdbert encode -------------------------------------------------------------------------------
@pytest.mark.slow
def test_encode_prints_the_torch_pipelines_cosine_similarities(minilm_path, capsys):
    st = pytest.importorskip("sentence_transformers")
    want = st.SentenceTransformer(str(minilm_path), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert main(["encode", str(minilm_path), *TEXTS, "--backend", "reference"]) == 0
    out = capsys.readouterr().out
    assert "on backend reference" in out
    assert "embeddings: 3 x 384, norms 1.000 1.000 1.000" in out
    sim = similarity_matrix(out, 3)
    np.testing.assert_allclose(sim, want @ want.T, rtol=0, atol=CLI_PRINTED_COSINE_ATOL)
    assert sim[0, 1] > sim[0, 2]  # cats and dogs are closer than cats and revenue


@pytest.mark.slow
def test_encode_as_a_subprocess(minilm_path):
    r = run_cli("encode", minilm_path, *TEXTS[:2])
    assert r.returncode == 0, r.stderr
    assert "embeddings: 2 x 384" in r.stdout
    sim = similarity_matrix(r.stdout, 2)
    assert np.allclose(np.diag(sim), 1.0) and sim[0, 1] == sim[1, 0]


def test_encode_a_missing_directory_is_a_one_line_error(tmp_path, capsys):
    assert main(["encode", str(tmp_path / "nope"), "hello"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fdbert: error: model directory") and "does not exist" in err
    assert "Traceback" not in err


def test_encode_a_checkpoint_without_tokenizer(tiny_hf_models, capsys):
    assert main(["encode", str(tiny_hf_models["distilbert"][1]), "hello"]) == 1
    assert "no tokenizer" in capsys.readouterr().err


def test_encode_with_an_unknown_backend(tmp_path, capsys):
    assert main(["encode", str(tmp_path), "hello", "--backend", "quantum"]) == 1
    assert "unknown backend 'quantum'" in capsys.readouterr().err


def test_encode_needs_at_least_one_text(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["encode", str(tmp_path)])
    assert e.value.code == 2
    assert "TEXT" in capsys.readouterr().err
