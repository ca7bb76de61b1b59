"""``fdbert serve`` for generation: /v1/completions and /v1/chat/completions over real HTTP.

The server runs in a thread of this process (uvicorn on a free loopback port) in front of
``serving.FakeGenerator``, a small decoder with the real Generator's interface whose output is known
(``fake_continuation``) and which logs every decode step: that is how continuous batching and
cancellation are observed.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time

import pytest

from serving import FakeDecoderAPI, FakeGenerator, FakeLM, ThreadServer, fake_continuation, metric

httpx = pytest.importorskip("httpx", reason="the [serve] extra is not installed")
pytest.importorskip("uvicorn", reason="the [serve] extra is not installed")


@pytest.fixture
def gen_server():
    """A fresh server per test with a fake decoder of context 128: (server, its FakeGenerator)."""
    from fdbert.serve.app import Server, ServeConfig
    FakeGenerator.instances.clear()
    FakeGenerator.step_s, FakeGenerator.capacity = 0.005, 64
    server = Server(ServeConfig(max_queue=8), models=[("fake-lm", FakeLM())])
    server.decoder_api = FakeDecoderAPI
    ts = ThreadServer(server.app())
    gen = FakeGenerator.instances[0]  # [0] is the scheduler's; warm-up makes its own
    yield ts, gen
    ts.stop()


def sse_events(response) -> list:
    """The data: payloads of an SSE response, parsed, up to and including [DONE]."""
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_completion_and_its_stream_agree(gen_server):
    ts, gen = gen_server
    prompt = "Once upon a time"
    want = fake_continuation(list(prompt.encode()), 10)
    r = httpx.post(ts.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 10}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "fake-lm"
    assert body["choices"][0]["text"] == want and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": 10, "total_tokens": len(prompt) + 10}
    with httpx.stream("POST", ts.url + "/v1/completions", timeout=30,
                      json={"prompt": prompt, "max_tokens": 10, "stream": True,
                            "stream_options": {"include_usage": True}}) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        events = sse_events(s)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == want
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 9 + ["length"]
    assert events[-2]["usage"]["completion_tokens"] == 10
    m = httpx.get(ts.url + "/metrics").text
    assert metric(m, "fdbert_generated_tokens_total", model="fake-lm") == 20


def test_chat_completion_stream(gen_server):
    ts, gen = gen_server
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = FakeLM().tokenizer.apply_chat_template(messages)
    want = fake_continuation(list(prompt.encode()), 6)
    r = httpx.post(ts.url + "/v1/chat/completions", json={"messages": messages, "max_tokens": 6}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": want}
    with httpx.stream("POST", ts.url + "/v1/chat/completions", timeout=30,
                      json={"messages": messages, "max_tokens": 6, "stream": True}) as s:
        events = sse_events(s)
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-1]) == want
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_stop_sequence_and_several_prompts(gen_server):
    ts, gen = gen_server
    prompt = "abc"  # continues d, e, f, ...
    r = httpx.post(ts.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 20, "stop": "fg"}, timeout=30)
    assert r.json()["choices"][0] == {"index": 0, "text": "defg", "logprobs": None, "finish_reason": "stop"}
    r = httpx.post(ts.url + "/v1/completions", json={"prompt": ["a", "bb", "xyz"], "max_tokens": 3},
                   timeout=30)
    texts = [c["text"] for c in r.json()["choices"]]
    assert texts == [fake_continuation([0], 3), fake_continuation([0, 0], 3), fake_continuation([0] * 3, 3)]
    for prompt, lengths in (([120, 121, 122], [3]), ([[1, 2], [3]], [2, 1])):
        r = httpx.post(ts.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 2}, timeout=30)
        assert [c["text"] for c in r.json()["choices"]] == [fake_continuation([0] * n, 2) for n in lengths]


def test_continuous_batching_joins_at_the_next_step_and_leaves_at_once(gen_server):
    ts, gen = gen_server
    FakeGenerator.step_s = 0.015  # 100 tokens: 1.5 s
    long_first = threading.Event()

    def long_stream():
        with httpx.stream("POST", ts.url + "/v1/completions", timeout=30,
                          json={"prompt": "long", "max_tokens": 100, "stream": True}) as s:
            n = 0
            for line in s.iter_lines():
                if line.startswith("data: {"):
                    n += 1
                    if n == 5:
                        long_first.set()
            return n

    with cf.ThreadPoolExecutor(1) as pool:
        f = pool.submit(long_stream)
        assert long_first.wait(10)
        r = httpx.post(ts.url + "/v1/completions", json={"prompt": "short", "max_tokens": 4}, timeout=30)
        assert r.json()["choices"][0]["text"] == fake_continuation(list(b"short"), 4)
        assert f.result() == 100
    steps = gen.log
    long_id, short_id = 0, 1
    with_short = [i for i, s in enumerate(steps) if short_id in s]
    assert len(with_short) == 4, "the short request ran 4 steps"
    assert with_short == list(range(with_short[0], with_short[0] + 4)), "consecutive steps"
    assert all(long_id in steps[i] for i in with_short), "it joined the running batch"
    assert 5 <= with_short[0] and with_short[-1] + 1 < len(steps), "joined mid-way, left before the end"
    assert all(s == (long_id,) for s in steps[with_short[-1] + 1:]), "gone from the steps after it finished"


def test_a_client_that_disconnects_stops_its_generation(gen_server):
    ts, gen = gen_server
    FakeGenerator.step_s = 0.01
    with httpx.stream("POST", ts.url + "/v1/completions", timeout=30,
                      json={"prompt": "forever", "max_tokens": 100, "stream": True}) as s:
        lines = s.iter_lines()
        got = 0
        for line in lines:
            if line.startswith("data: {"):
                got += 1
                if got == 3:
                    break
    t_end = time.monotonic() + 5
    while 0 not in gen.cancelled and time.monotonic() < t_end:
        time.sleep(0.01)
    assert 0 in gen.cancelled
    n_steps = len(gen.log)
    assert n_steps < 50
    time.sleep(0.2)
    assert len(gen.log) == n_steps and gen.live == 0
    # and without streaming: the client times out, the generation is cancelled
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(ts.url + "/v1/completions", json={"prompt": "forever", "max_tokens": 100}, timeout=0.2)
    t_end = time.monotonic() + 5
    while 1 not in gen.cancelled and time.monotonic() < t_end:
        time.sleep(0.01)
    assert 1 in gen.cancelled and gen.live == 0


def test_a_deadline_fires_while_queued_and_the_generation_never_starts(gen_server):
    ts, gen = gen_server
    FakeGenerator.step_s, FakeGenerator.capacity = 0.015, 1  # one at a time: the second one queues
    with cf.ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, ts.url + "/v1/completions", json={"prompt": "a", "max_tokens": 100},
                            timeout=30)
        t_end = time.monotonic() + 10
        while not gen.log:
            assert time.monotonic() < t_end
            time.sleep(0.005)
        t0 = time.perf_counter()
        r = httpx.post(ts.url + "/v1/completions", json={"prompt": "b", "max_tokens": 5, "timeout": 0.2},
                       timeout=30)
        assert r.status_code == 504, r.text
        assert time.perf_counter() - t0 < 1.2  # the first one needs 1.5 s
        assert first.result().status_code == 200
    assert 1 in gen.cancelled and not any(1 in s for s in gen.log)


def test_a_full_generation_queue_answers_429(gen_server):
    ts, gen = gen_server
    FakeGenerator.step_s = 0.02  # 100 tokens: 2 s
    with cf.ThreadPoolExecutor(8) as pool:
        busy = [pool.submit(httpx.post, ts.url + "/v1/completions", json={"prompt": "x", "max_tokens": 100},
                            timeout=30) for _ in range(8)]
        t_end = time.monotonic() + 10
        while gen.live < 8:
            assert time.monotonic() < t_end
            time.sleep(0.005)
        r = httpx.post(ts.url + "/v1/completions", json={"prompt": "y", "max_tokens": 2}, timeout=30)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert not any(f.done() for f in busy)
        assert all(f.result().status_code == 200 for f in busy)


@pytest.mark.parametrize("path,body,status,words", [
    ("/v1/completions", {"max_tokens": 3}, 422, "'prompt' must be"),
    ("/v1/completions", {"prompt": 7}, 422, "'prompt' must be"),
    ("/v1/completions", {"prompt": "a", "max_tokens": 0}, 422, "'max_tokens' must be an integer >= 1"),
    ("/v1/completions", {"prompt": "a", "temperature": "hot"}, 422, "'temperature' must be a number"),
    ("/v1/completions", {"prompt": "a", "stop": [1]}, 422, "'stop' must be"),
    ("/v1/completions", {"prompt": "a", "n": 2}, 422, "'n' must be 1"),
    ("/v1/completions", {"prompt": "a", "stream": "yes"}, 422, "'stream' must be true or false"),
    ("/v1/completions", {"prompt": "a", "max_tokens": 128}, 413, "leaves no room"),
    ("/v1/completions", {"prompt": "p" * 120, "max_tokens": 16}, 413, "prompt 0 has 120 tokens"),
    ("/v1/chat/completions", {"messages": "hi"}, 422, "'messages' must be a non-empty array"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, 422, "messages[0] must be an object"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 422, "messages[0].role"),
    ("/v1/embeddings", {"input": "a"}, 404, "no embeddings model"),
    ("/v1/completions", {"prompt": "a", "model": "gpt-4"}, 404, "'gpt-4' is not served"),
])
def test_bad_generation_input(gen_server, path, body, status, words):
    ts, gen = gen_server
    r = httpx.post(ts.url + path, json=body, timeout=30)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]
    assert httpx.get(ts.url + "/health").status_code == 200


def test_truncate_keeps_the_last_prompt_tokens(gen_server):
    ts, gen = gen_server
    prompt = "q" * 100 + "z" * 20
    r = httpx.post(ts.url + "/v1/completions", json={"prompt": prompt, "max_tokens": 16, "truncate": True},
                   timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 128 - 16
    assert r.json()["choices"][0]["text"] == fake_continuation([0] * 112, 16)


def test_not_ready_until_loaded():
    """While the loader runs, /health and the endpoints answer 503; then ready."""
    from fdbert.serve.app import Server, ServeConfig
    release = threading.Event()

    def loader():
        release.wait(10)
        return [("fake-lm", FakeLM())]

    server = Server(ServeConfig(), loader=loader)
    server.decoder_api = FakeDecoderAPI
    import uvicorn
    from serving import free_port
    port = free_port()
    us = uvicorn.Server(uvicorn.Config(server.app(), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=us.run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}"
    try:
        t_end = time.monotonic() + 10
        while not us.started and time.monotonic() < t_end:
            time.sleep(0.01)
        h = httpx.get(url + "/health")
        assert h.status_code == 503 and h.json()["status"] == "loading"
        r = httpx.post(url + "/v1/completions", json={"prompt": "a"})
        assert r.status_code == 503 and "still loading" in r.json()["error"]["message"]
        release.set()
        while httpx.get(url + "/health").status_code != 200:
            assert time.monotonic() < t_end
            time.sleep(0.01)
        assert httpx.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 2}).status_code == 200
    finally:
        release.set()
        us.should_exit = True
        t.join(10)


def test_return_token_ids(gen_server):
    ts, gen = gen_server
    r = httpx.post(ts.url + "/v1/completions", json={"prompt": "abc", "max_tokens": 3, "return_token_ids": True},
                   timeout=30)
    assert r.json()["choices"][0]["token_ids"] == [ord(c) for c in fake_continuation([0] * 3, 3)]


# ---- the real decoder, once fdbert has one -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    import fdbert
    if not hasattr(fdbert, "Generator"):
        pytest.skip("fdbert has no decoder yet (fdbert.Generator)")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=64, n_positions=64)
    d = tmp_path_factory.mktemp("tiny-gpt2")
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(d)
    return d


def test_real_decoder_greedy_matches_the_generator_alone(tiny_gpt2_dir):
    """Concurrent greedy requests through the server get the tokens a lone Generator gives each prompt."""
    import fdbert
    from fdbert.serve.app import Server, ServeConfig
    lm = fdbert.from_pretrained(tiny_gpt2_dir)
    prompts = [[1, 2, 3], [5] * 9, [7, 8], [10, 11, 12, 13, 14]]
    want = []
    for p in prompts:
        g = fdbert.Generator(lm)
        rid = g.add(p, fdbert.SamplingParams(max_new_tokens=8))
        ids = []
        while g.live or getattr(g, "waiting", 0):
            ids += [e.token_id for e in g.step() if e.request_id == rid and e.token_id is not None]
        want.append(ids)
    server = Server(ServeConfig(max_batch_tokens=64), models=[("tiny", lm)])
    ts = ThreadServer(server.app())
    try:
        def call(p):
            return httpx.post(ts.url + "/v1/completions", timeout=60, json={
                "prompt": p, "max_tokens": 8, "temperature": 0, "return_token_ids": True}).json()
        with cf.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(call, prompts))
        assert [g["choices"][0]["token_ids"] for g in got] == want
        with httpx.stream("POST", ts.url + "/v1/completions", timeout=60,
                          json={"prompt": prompts[0], "max_tokens": 8, "temperature": 0, "stream": True}) as s:
            events = sse_events(s)
        assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        ts.stop()
