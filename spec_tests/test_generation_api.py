"""The generation API the server codes against, and the CLI: SamplingParams, generate, stream, chat,
Generator events, stop strings, the command line's streamed output and one-line errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import fdbert
from decoder_models import random_decoder
from fdbert.cli import main
from fdbert.generator import _held_back
from subproc import REPO_ROOT
from tolerances import SAMPLING_PROBS_ATOL


def test_sampling_params_is_frozen_with_the_agreed_defaults():
    p = fdbert.SamplingParams()
    assert (p.max_new_tokens, p.temperature, p.top_k, p.top_p, p.seed, p.stop) == (64, 0.0, 0, 1.0, None, ())
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 1.0
    assert fdbert.SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    for bad in (dict(max_new_tokens=0), dict(temperature=-1), dict(top_k=-1), dict(top_p=0), dict(stop=[""])):
        with pytest.raises(ValueError):
            fdbert.SamplingParams(**bad)


def test_top_k_and_top_p_restrict_the_choice():
    from fdbert.sampling import token_probabilities
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    p = token_probabilities(logits, fdbert.SamplingParams(temperature=1.0, top_k=2))
    np.testing.assert_allclose(p, [0.625, 0.375, 0, 0], rtol=0, atol=SAMPLING_PROBS_ATOL)
    p = token_probabilities(logits, fdbert.SamplingParams(temperature=1.0, top_p=0.8))
    np.testing.assert_allclose(p, [0.625, 0.375, 0, 0], rtol=0, atol=SAMPLING_PROBS_ATOL)   # 0.5 + 0.3 reaches 0.8
    p = token_probabilities(logits, fdbert.SamplingParams(temperature=1.0, top_p=0.81))
    np.testing.assert_allclose(p, [0.5, 0.3, 0.15, 0] / np.float64(0.95), rtol=0, atol=SAMPLING_PROBS_ATOL)


def test_held_back_text():
    assert _held_back("abc\ufffd", ()) == 1
    assert _held_back("hello wor", ("world",)) == 3
    assert _held_back("hello", ("xyz",)) == 0


@pytest.fixture(scope="module")
def tiny():
    cfg = fdbert.DecoderConfig("llama", vocab_size=48, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2,
                               d_ffn=32, max_positions=64)
    return random_decoder(cfg, 11)


def test_generator_events(tiny):
    gen = fdbert.Generator(tiny, max_batch_tokens=32)
    a = gen.add([1, 2, 3], fdbert.SamplingParams(max_new_tokens=3))
    b = gen.add([4, 5], fdbert.SamplingParams(max_new_tokens=1))
    assert gen.live == 0 and gen.waiting == 2
    first = gen.step()
    assert [e.request_id for e in first] == [a, b] and gen.live == 1
    assert first[1].finish_reason == "length" and first[0].finish_reason is None
    rest = gen.step() + gen.step()
    assert [e.finish_reason for e in rest] == [None, "length"] and gen.live == 0
    assert gen.step() == []
    assert [first[0].token_id, *(e.token_id for e in rest)] == tiny.generate([[1, 2, 3]], max_new_tokens=3)[0].token_ids


def test_max_batch_tokens_defers_admission(tiny):
    gen = fdbert.Generator(tiny, max_batch_tokens=4)
    gen.add([1, 2, 3], fdbert.SamplingParams(max_new_tokens=4))
    gen.add([4, 5, 6], fdbert.SamplingParams(max_new_tokens=4))
    gen.step()
    assert gen.live == 1 and gen.waiting == 1   # 3 + 3 prompt tokens do not fit in 4
    gen.step()
    assert gen.live == 2 and gen.waiting == 0   # 1 decode + 3 prefill fit


def test_bad_prompts_are_refused(tiny):
    gen = fdbert.Generator(tiny)
    with pytest.raises(fdbert.ShapeError):
        gen.add([])
    with pytest.raises(fdbert.TokenIdError):
        gen.add([1, 48])
    with pytest.raises(fdbert.ShapeError, match="list of prompts"):
        tiny.generate([1, 2, 3])
    with pytest.raises(ValueError, match="padding"):
        tiny.generate([[1]], padding="post")


# ---- with the real tokenizer -------------------------------------------------------------------------
def test_stream_pieces_add_up_to_generate(smollm2):
    params = fdbert.SamplingParams(max_new_tokens=8, temperature=0.8, seed=4)
    pieces = list(smollm2.stream("Once upon a time", params))
    assert len(pieces) > 3
    assert "".join(pieces) == smollm2.generate(["Once upon a time"], params)[0].text


def test_stop_string_cuts_the_text(smollm2):
    full = smollm2.generate(["The capital of France is"], max_new_tokens=8)[0]
    assert full.text.startswith(" Paris.")
    got = smollm2.generate(["The capital of France is"], max_new_tokens=8, stop=["."])[0]
    assert got.text == " Paris" and got.finish_reason == "stop"
    assert "".join(smollm2.stream("The capital of France is", max_new_tokens=8, stop=("s.",))) == " Pari"
    pre = smollm2.generate(["The capital of France is"], max_new_tokens=8, stop=["."], padding="pre")[0]
    assert pre.text == " Paris" and pre.finish_reason == "stop"


def test_chat_uses_the_template_and_stops_at_eos(smollm2):
    out = smollm2.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=40)
    assert "Paris" in out.text
    assert out.finish_reason == "stop" and smollm2.tokenizer.eos_token_id not in out.token_ids


def test_public_attributes(smollm2):
    assert isinstance(smollm2, fdbert.Decoder)
    assert smollm2.max_seq_len == 8192 and "135M" in smollm2.name
    assert smollm2.tokenizer.decode(smollm2.tokenizer.encode("Hello, world")) == "Hello, world"


# ---- CLI ----------------------------------------------------------------------------------------------
def test_cli_generate_streams_the_default_model(smollm2_path, capsys):
    assert main(["generate", "--prompt", "The capital of France is", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("The capital of France is Paris")


def test_cli_chat_reads_stdin(smollm2_path):
    r = subprocess.run([sys.executable, "-m", "fdbert.cli", "chat", str(smollm2_path), "--max-new-tokens", "30"],
                       input="What is the capital of France?\n", capture_output=True, text=True, timeout=300,
                       cwd=REPO_ROOT)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


@pytest.mark.parametrize("argv, message", [
    (["generate", "/no/such.gguf", "-p", "x"], "does not exist"),
    (["generate", "--temperature", "-1", "-p", "x"], "temperature must be >= 0"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_corrupt_gguf_is_one_line(tmp_path, capsys):
    f = tmp_path / "bad.gguf"
    f.write_bytes(b"GGUF" + b"\xff" * 40)
    assert main(["generate", str(f), "-p", "x"]) == 1
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and err.count("\n") == 1
