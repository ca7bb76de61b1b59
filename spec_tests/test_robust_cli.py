"""The CLI's error table: an ordinary mistake prints ONE line, ``fdbert: error: ...``, on stderr and
exits with 2 (a bad argument, path or environment variable) or 1 (a failure while working); never a
traceback unless --debug. Arguments and paths are checked before any heavy work: the tests make
loading a model (or building the bench workload) fail loudly, so a check that came too late shows."""

import contextvars
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fdbert
from fdbert.cli import main as _main
from int8_models import tiny_text_model

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv):
    return contextvars.copy_context().run(_main, argv)


def run(argv, capsys):
    """(exit status, stderr) of fdbert.cli.main(argv); argparse's SystemExit counts as a status."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.err


def assert_one_line(err, *parts):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fdbert: error: "), err
    assert "Traceback" not in err
    for p in parts:
        assert p in lines[0], (p, lines[0])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    tiny_text_model(seed=1).save(d)
    return d


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Loading a model or building a bench workload fails the test: the checks must come first."""
    def boom(*a, **k):
        raise AssertionError("heavy work started before the arguments were checked")
    monkeypatch.setattr("fdbert.model.from_pretrained", boom)
    monkeypatch.setattr("fdbert.bench.build_workload", boom)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    (tmp_path / "texts.txt").write_text("one text\nanother\n")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "other_model").mkdir()
    (tmp_path / "other_model" / "model.safetensors").write_bytes(b"precious")
    return tmp_path


COMPRESS_USAGE = [
    # (extra argv, text the line must hold)   -- MODEL and OUT are filled in below
    (["--calibration", "{t}/missing.txt"], "does not exist"),
    (["--calibration", "{t}"], "is not a file"),
    (["--calibration", "{t}/latin1.txt"], "not UTF-8"),
    (["--calibration", "{t}/blank.txt"], "holds no text"),
    (["--percentile", "150", "--method", "percentile"], "--percentile"),
    (["--percentile", "0", "--method", "percentile"], "--percentile"),
    (["--percentile", "nan", "--method", "percentile"], "--percentile"),
    (["--percentile", "99"], "--method percentile"),
    (["--outlier-threshold", "-1"], "--outlier-threshold"),
    (["--outlier-threshold", "nan"], "--outlier-threshold"),
    (["--outlier-threshold", "inf"], "--outlier-threshold"),
    (["--num-calibration", "-1"], "--num-calibration"),
    (["--num-calibration", "0"], "--num-calibration"),
    (["--sparsity", "1.5"], "--sparsity"),
    (["--sparsity", "nan"], "--sparsity"),
    (["--block", "0x4"], "--block"),
    (["--block", "abc"], "--block"),
    (["--sparsity", "x"], "--sparsity"),                      # argparse's own error, one line too
    (["--method", "median"], "--method"),
    (["--bogus"], "--bogus"),
]


@pytest.mark.parametrize("extra, text", COMPRESS_USAGE, ids=[" ".join(c[0]) for c in COMPRESS_USAGE])
def test_compress_usage_errors(model_dir, files, no_heavy_work, capsys, extra, text):
    extra = [a.replace("{t}", str(files)) for a in extra]
    rc, err = run(["compress", str(model_dir), str(files / "out"), *extra], capsys)
    assert rc == 2
    assert_one_line(err, text)


@pytest.mark.parametrize("model, out, text", [
    ("{t}/missing", "{t}/out", "does not exist"),
    ("{t}/a_file", "{t}/out", "is not a directory"),
    ("{m}", "{t}/a_file", "exists and is not a directory"),
    ("{m}", "{t}/a_file/sub", "cannot write"),
    ("{m}", "{m}", "would be overwritten"),
    ("{m}", "{t}/other_model", "would be overwritten"),
])
def test_compress_path_errors(model_dir, files, no_heavy_work, capsys, model, out, text):
    fill = {"{t}": str(files), "{m}": str(model_dir)}
    for k, v in fill.items():
        model, out = model.replace(k, v), out.replace(k, v)
    rc, err = run(["compress", model, out], capsys)
    assert rc == 2
    assert_one_line(err, text)
    assert (files / "other_model" / "model.safetensors").read_bytes() == b"precious"


def test_compress_still_works(model_dir, files, capsys):
    rc, err = run(["compress", str(model_dir), str(files / "out"), "--calibration", str(files / "texts.txt"),
                   "--num-calibration", "1", "--no-progress"], capsys)
    assert rc == 0, err
    assert fdbert.load(files / "out").compression["quantization"]["n_texts"] == 1


@pytest.mark.parametrize("extra, text", [
    (["--out", "{t}/a_file"], "not a directory"),
    (["--budget-s", "0"], "--budget-s"),
    (["--latency-bound-ms", "-1"], "--latency-bound-ms"),
    (["--fp32-atol", "nan"], "--fp32-atol"),
    (["--min-reps", "0"], "--min-reps"),
    (["--texts", "{t}/missing.txt"], "does not exist"),
    (["--seq-len", "0"], "--seq-len"),
    (["--engines", "tensorrt"], "tensorrt"),
])
def test_bench_usage_errors(files, no_heavy_work, capsys, extra, text):
    pytest.importorskip("fdbert.bench")
    extra = [a.replace("{t}", str(files)) for a in extra]
    rc, err = run(["bench", *extra] + ([] if "--out" in extra else ["--out", str(files / "bench")]), capsys)
    assert rc == 2
    assert_one_line(err, text)


def test_encode_errors(model_dir, files, capsys):
    rc, err = run(["encode", str(files / "missing"), "hello"], capsys)
    assert rc == 1 and "does not exist" in err
    assert_one_line(err)
    rc, err = run(["encode", str(model_dir), "hello", "--backend", "quantum"], capsys)
    assert rc == 1
    assert_one_line(err, "unknown backend 'quantum'")
    rc, err = run(["encode"], capsys)
    assert rc == 2
    assert_one_line(err)


def test_a_corrupt_model_is_a_runtime_error(model_dir, tmp_path, capsys):
    import shutil
    d = tmp_path / "m"
    shutil.copytree(model_dir, d)
    (d / "fdbert.json").write_text((d / "fdbert.json").read_text().replace('"n_heads": 2', '"n_heads": 0'))
    rc, err = run(["encode", str(d), "hello"], capsys)
    assert rc == 1
    assert_one_line(err, "fdbert.json", "n_heads")


def test_unexpected_exceptions_are_one_line_unless_debug(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something\nunexpected")
    monkeypatch.setattr("fdbert.cli._cmd_info", broken)
    rc, err = run(["info"], capsys)
    assert rc == 1
    assert_one_line(err, "RuntimeError: something unexpected", "--debug")
    with pytest.raises(RuntimeError):
        main(["info", "--debug"])
    with pytest.raises(RuntimeError):
        main(["--debug", "info"])


def test_ctrl_c_is_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr("fdbert.cli._cmd_info", interrupted)
    rc, err = run(["info"], capsys)
    assert rc == 130 and err.strip() == "fdbert: interrupted"


def test_an_unknown_default_backend_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(fdbert.backend, "_default", "quantum")
    rc, err = run(["info"], capsys)
    assert rc == 2
    assert_one_line(err, "FDBERT_BACKEND", "quantum")


@pytest.mark.parametrize("env, argv", [
    ({"FDBERT_DISABLE_CPU_FEATURES": "avx512vnn"}, ["info"]),
    ({"FDBERT_DISABLE_CPU_FEATURES": "avx512_vnni, sse5"}, ["encode", ".", "x"]),
    ({"FDBERT_BACKEND": "quantum"}, ["info"]),
])
def test_a_misspelt_environment_variable_as_a_subprocess(env, argv):
    e = dict(os.environ, **env)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), e.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-m", "fdbert.cli", *argv], env=e, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stderr
    assert_one_line(r.stderr, list(env)[0])
    assert r.stdout == ""
