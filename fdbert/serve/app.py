"""The ASGI app of ``fdbert serve``: OpenAI-style endpoints on Starlette (docs/serving.md).

    POST /v1/embeddings        -> EmbeddingBatcher (dynamic batching, packed forward passes)
    POST /v1/completions       -> GenerationScheduler (continuous batching), SSE when stream: true
    POST /v1/chat/completions  -> same, after the tokenizer's chat template
    GET  /v1/models, /health, /metrics

Every refusal is immediate and says why: 429 + Retry-After (queue full), 413 (too long, too many
inputs, body too large), 422 (malformed JSON, wrong types), 404 (unknown model), 503 (loading or
shutting down), 504 (deadline passed while queued). A client that goes has its queued work dropped
and its generation stopped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .batcher import Draining, EmbeddingBatcher, QueueFull
from .metrics import Metrics
from .scheduler import GenerationScheduler


@dataclass
class ServeConfig:
    """Limits of the server; :meth:`validate` runs before any model is loaded."""
    max_batch_tokens: int = 4096      # tokens per packed forward pass
    max_batch_size: int | None = None  # sequences per pass (1 = batching off)
    max_wait_ms: float = 5.0          # how long the first queued sequence waits for company
    max_queue: int = 256              # requests queued (per model)
    max_queue_tokens: int = 65536     # tokens queued (per encoder)
    max_queue_wait_ms: float | None = None  # refuse when the queued work would take longer (estimated)
    max_inputs: int = 2048            # inputs per embeddings request
    max_body_bytes: int = 8 << 20     # request body size
    request_timeout: float = 30.0     # default deadline, s (a request may set its own)
    gen_max_batch_tokens: int = 2048  # the Generator's budget per decode step
    compute_nice: int = 0             # compute threads run this much nicer than the event loop (0: same)

    def validate(self):
        checks = [("--max-batch-tokens", self.max_batch_tokens, 1), ("--max-queue", self.max_queue, 1),
                  ("--max-queue-tokens", self.max_queue_tokens, 1), ("--max-inputs", self.max_inputs, 1),
                  ("--max-body-bytes", self.max_body_bytes, 1)]
        if self.max_batch_size is not None:
            checks.append(("--max-batch-size", self.max_batch_size, 1))
        for flag, value, low in checks:
            if value < low:
                raise ValueError(f"{flag} must be >= {low}, got {value}")
        if not (self.max_wait_ms >= 0 and math.isfinite(self.max_wait_ms)):
            raise ValueError(f"--max-wait-ms must be a finite number >= 0, got {self.max_wait_ms}")
        if self.max_queue_wait_ms is not None and not (self.max_queue_wait_ms > 0 and
                                                       math.isfinite(self.max_queue_wait_ms)):
            raise ValueError(f"--max-queue-wait-ms must be a finite number > 0, got {self.max_queue_wait_ms}")
        if not (self.request_timeout > 0 and math.isfinite(self.request_timeout)):
            raise ValueError(f"--request-timeout must be a finite number > 0, got {self.request_timeout}")
        if not 0 <= self.compute_nice <= 19:
            raise ValueError(f"--compute-nice must be in [0, 19], got {self.compute_nice}")
        if self.max_queue_tokens < self.max_batch_tokens:
            raise ValueError(f"--max-queue-tokens {self.max_queue_tokens} is smaller than "
                             f"--max-batch-tokens {self.max_batch_tokens}: a full batch could never queue")

    def validate_model(self, name: str, max_len: int):
        """A token budget below the model's maximum length could never run a long input."""
        if self.max_batch_tokens < max_len:
            raise ValueError(f"--max-batch-tokens {self.max_batch_tokens} is smaller than {name}'s maximum "
                             f"length {max_len}: a long input could never be batched")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None, type_: str | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
        self.type = type_ or {404: "not_found_error", 413: "request_too_large", 422: "invalid_request_error",
                              429: "rate_limit_error", 503: "unavailable", 504: "timeout"}.get(status, "error")


def _error(status: int, message: str, type_: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "code": status}}, status_code=status,
                        headers=headers)


class Uvicorn(uvicorn.Server):
    """uvicorn's server with fdbert's shutdown. The first SIGTERM or Ctrl-C drains: no new connections,
    new requests get 503, the requests in flight and the queued work finish, and :meth:`run` returns
    True (the process exits 0). A second signal stops at once: run returns False.

    (uvicorn itself re-raises the signal after a graceful drain, so its process dies of it: 143.)"""

    def __init__(self, config: uvicorn.Config, server: "Server"):
        super().__init__(config)
        self.fdbert = server

    def handle_exit(self, sig, frame):
        if self.should_exit:
            self.force_exit = True   # uvicorn stops waiting for connections and skips the lifespan's end
            logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # not a traceback per dropped task
            return
        self.should_exit = True
        try:  # a signal handler runs between any two bytecodes: leave the work to the event loop
            asyncio.get_running_loop().call_soon_threadsafe(self.fdbert.begin_drain)
        except RuntimeError:  # no loop running (yet)
            self.fdbert.begin_drain()

    def run(self, sockets=None) -> bool:
        super().run(sockets)
        return not self.force_exit


# ---- served models --------------------------------------------------------------------------------
class ServedEncoder:
    kind = "embeddings"

    def __init__(self, name: str, model, config: ServeConfig, metrics: Metrics):
        from tokenizers import Tokenizer as HFTokenizer
        self.name, self.model = name, model
        tok = model.tokenizer
        self.max_len = tok.max_length if tok is not None else model.config.max_positions
        self.vocab_size = model.config.vocab_size
        config.validate_model(name, self.max_len)
        # an untruncating copy tells the true length (413); the model's own tokenizer truncates
        self._full = self._cut = None
        if tok is not None:
            self._full = HFTokenizer.from_str(tok.to_str())
            self._full.no_truncation()
            self._cut = HFTokenizer.from_str(tok.to_str())
            self._cut.enable_truncation(self.max_len)
        self.batcher = EmbeddingBatcher(model.embed_packed, model.config.d_model,
                                        max_batch_tokens=config.max_batch_tokens,
                                        max_batch_size=config.max_batch_size, max_wait_ms=config.max_wait_ms,
                                        max_queue=config.max_queue, max_queue_tokens=config.max_queue_tokens,
                                        max_queue_wait_ms=config.max_queue_wait_ms, metrics=metrics, name=name,
                                        compute_nice=config.compute_nice)

    def tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]:
        """Token ids of each text; 413 for a text over max_len unless ``truncate``."""
        if self._full is None:
            raise HTTPError(422, f"model {self.name} has no tokenizer: send token ids as input")
        ids = [e.ids for e in self._full.encode_batch(texts)]
        long = [i for i, s in enumerate(ids) if len(s) > self.max_len]
        if long and not truncate:
            i = long[0]
            raise HTTPError(413, f"input[{i}] has {len(ids[i])} tokens, more than {self.name}'s limit of "
                                 f"{self.max_len} (send \"truncate\": true to cut it)")
        if long:  # truncated as the model's own tokenizer does it in offline encode
            for i, e in zip(long, self._cut.encode_batch([texts[i] for i in long])):
                ids[i] = e.ids
        return ids

    def check_ids(self, seqs: list[list[int]], truncate: bool) -> list[list[int]]:
        for i, s in enumerate(seqs):
            if not s:
                raise HTTPError(422, f"input[{i}] is an empty list of token ids")
            bad = next((t for t in s if t < 0 or t >= self.vocab_size), None)
            if bad is not None:
                raise HTTPError(422, f"input[{i}] has token id {bad}, outside [0, {self.vocab_size})")
            if len(s) > self.max_len:
                if not truncate:
                    raise HTTPError(413, f"input[{i}] has {len(s)} tokens, more than {self.name}'s limit of "
                                         f"{self.max_len} (send \"truncate\": true to cut it)")
                seqs[i] = s[:self.max_len]
        return seqs

    def warm_up(self):
        for n in (1, 8):
            self.model.encode(["warm up " * 4] * n)

    def drain(self):
        self.batcher.drain()

    def stop(self):
        self.batcher.stop()


class ServedDecoder:
    kind = "generation"

    def __init__(self, name: str, lm, config: ServeConfig, metrics: Metrics, api=None):
        """``api``: where Generator and SamplingParams come from (default: fdbert; tests pass fakes)."""
        if api is None:
            import fdbert as api
        self.name, self.lm, self.api, self.config = name, lm, api, config
        self.max_len = int(lm.max_seq_len)
        config.validate_model(name, 1)
        self.scheduler = GenerationScheduler(self._generator(), max_queue=config.max_queue,
                                             metrics=metrics, name=name, compute_nice=config.compute_nice)

    def _generator(self):
        return self.api.Generator(self.lm, max_batch_tokens=self.config.gen_max_batch_tokens)

    def sampling_params(self, **kw):
        return self.api.SamplingParams(**kw)

    def warm_up(self):
        """Two greedy tokens through a Generator of its own (the scheduler's stays untouched)."""
        gen = self._generator()
        tok = self.lm.tokenizer
        rid = gen.add(tok.encode("Hello") if tok is not None else [0], self.sampling_params(max_new_tokens=2))
        for _ in range(16):
            if any(e.request_id == rid and e.finish_reason for e in gen.step()):
                break

    def drain(self):
        self.scheduler.drain()

    def stop(self):
        self.scheduler.stop()


# ---- request parsing --------------------------------------------------------------------------------
async def _read_json(request: Request, max_bytes: int) -> dict:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise HTTPError(413, f"the request body has {length} bytes, more than the limit of {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPError(413, f"the request body is larger than the limit of {max_bytes} bytes")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HTTPError(422, f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise HTTPError(422, f"the body must be a JSON object, got {_jtype(data)}")
    return data


def _jtype(v) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _field(data, name, kinds, default=None, check=None, what=None):
    """data[name] if present (must be one of ``kinds``), else default; 422 says what was expected."""
    if name not in data or data[name] is None:
        return default
    v = data[name]
    ok = (_is_int(v) if kinds is int else
          (isinstance(v, (int, float)) and not isinstance(v, bool)) if kinds is float else isinstance(v, kinds))
    if not ok or (check is not None and not check(v)):
        raise HTTPError(422, f"'{name}' must be {what}, got {json.dumps(v)[:80]}")
    return v


def _deadline(request: Request, data: dict, default: float) -> float:
    """Seconds this request may wait in the queue: field 'timeout' or header X-Request-Timeout (s)."""
    t = _field(data, "timeout", float, None, lambda v: v > 0 and math.isfinite(v), "a number of seconds > 0")
    if t is None and "x-request-timeout" in request.headers:
        h = request.headers["x-request-timeout"]
        try:
            t = float(h)
        except ValueError:
            t = -1.0
        if not (t > 0 and math.isfinite(t)):
            raise HTTPError(422, f"header X-Request-Timeout must be a number of seconds > 0, got {h!r}")
    return min(t, default) if t is not None else default


async def _wait_disconnect(request: Request):
    """Returns when the client has gone (the body must have been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class Server:
    """The app's state: served models, metrics, readiness; :meth:`app` builds the Starlette app."""

    def __init__(self, config: ServeConfig, loader=None, models=None):
        """``loader()`` -> [(name, model)], run in a thread at start-up; or ``models`` given loaded.
        A model with ``embed_packed`` is served for embeddings, one with ``max_seq_len`` for generation."""
        config.validate()
        self.config, self.metrics = config, Metrics()
        self.loader, self.preloaded = loader, models
        self.encoders: dict[str, ServedEncoder] = {}
        self.decoders: dict[str, ServedDecoder] = {}
        self.state = "loading"      # loading -> ready -> draining; or failed
        self.error = None
        self.announce = False        # print a line at shutdown (the CLI)
        self.decoder_api = None     # module-like: Generator, SamplingParams (None: fdbert)

    # ---- life cycle ------------------------------------------------------------------------------
    def _load(self, raise_errors=False):
        try:
            models = self.preloaded if self.preloaded is not None else self.loader()
            for name, m in models:
                self.metrics.add_model(name)
                if hasattr(m, "embed_packed"):
                    self.encoders[name] = ServedEncoder(name, m, self.config, self.metrics)
                else:
                    self.decoders[name] = ServedDecoder(name, m, self.config, self.metrics, self.decoder_api)
            for served in (*self.encoders.values(), *self.decoders.values()):
                served.warm_up()
            self.state = "ready"
        except Exception as e:  # noqa: BLE001 -- reported by /health and the log
            if raise_errors:
                raise
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"
            import sys
            print(f"fdbert serve: error: {self.error}", file=sys.stderr, flush=True)

    def begin_drain(self):
        """The first SIGTERM / Ctrl-C: answer new requests 503 from now on, and run queued work at once
        (a lone request no longer waits --max-wait-ms for company). Requests already being handled are
        admitted and finish; uvicorn waits for them, then :meth:`lifespan` stops the workers."""
        if self.state == "ready":
            self.state = "draining"
        for e in self.encoders.values():
            e.batcher.flush()

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        if self.state == "loading":
            threading.Thread(target=self._load, name="fdbert-load", daemon=True).start()
        yield
        # uvicorn has stopped accepting connections and waited for in-flight requests
        self.state = "draining"
        for served in (*self.encoders.values(), *self.decoders.values()):
            served.drain()
        await asyncio.to_thread(lambda: [s.stop() for s in (*self.encoders.values(), *self.decoders.values())])
        if self.announce:
            import sys
            print("fdbert serve: stopped (in-flight work finished)", file=sys.stderr, flush=True)

    def app(self) -> Starlette:
        routes = [Route("/health", self.health), Route("/metrics", self.metrics_endpoint),
                  Route("/v1/models", self.list_models),
                  Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                  Route("/v1/completions", self.completions, methods=["POST"]),
                  Route("/v1/chat/completions", self.chat_completions, methods=["POST"])]
        return Starlette(routes=routes, lifespan=self.lifespan)

    # ---- plain endpoints ---------------------------------------------------------------------------
    async def health(self, request: Request):
        body = {"status": self.state, "models": sorted([*self.encoders, *self.decoders])}
        if self.error:
            body["error"] = self.error
        if self.state == "ready":
            body["queue"] = {n: e.batcher.queued_requests for n, e in self.encoders.items()}
            body["generations"] = {n: d.scheduler.active for n, d in self.decoders.items()}
        return JSONResponse(body, status_code=200 if self.state == "ready" else 503)

    async def metrics_endpoint(self, request: Request):
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def list_models(self, request: Request):
        data = [{"id": n, "object": "model", "owned_by": "fdbert", "created": 0, "capabilities": [s.kind],
                 "max_length": s.max_len} for n, s in (*self.encoders.items(), *self.decoders.items())]
        return JSONResponse({"object": "list", "data": data})

    # ---- common machinery ----------------------------------------------------------------------------
    async def _handle(self, endpoint: str, request: Request, fn):
        """Runs fn(request) -> Response, turning HTTPError into its answer, counting by status."""
        self.metrics.in_flight.inc()
        t0 = time.perf_counter()
        status = 500
        try:
            if self.state != "ready":
                why = {"loading": "the model is still loading", "draining": "the server is shutting down",
                       "failed": f"the model failed to load ({self.error})"}[self.state]
                raise HTTPError(503, why, {"Retry-After": "1"})
            response = await fn(request)
            status = response.status_code
            return response
        except HTTPError as e:
            status = e.status
            return _error(e.status, e.message, e.type, e.headers)
        except QueueFull as e:
            status = 429
            return _error(429, str(e), "rate_limit_error", {"Retry-After": str(e.retry_after)})
        except Draining as e:
            status = 503
            return _error(503, str(e), "unavailable", {"Retry-After": "1"})
        except ClientDisconnect:
            status = 499
            return Response(status_code=499)
        except Exception as e:  # noqa: BLE001 -- bad input never takes the server down
            status = 500
            return _error(500, f"{type(e).__name__}: {e}", "server_error")
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_seconds.labels(endpoint, str(status)).observe(time.perf_counter() - t0)

    def _model(self, data: dict, table: dict, what: str):
        name = _field(data, "model", str, None, what="a string")
        if not table:
            raise HTTPError(404, f"this server has no {what} model (serving: "
                                 f"{', '.join(sorted([*self.encoders, *self.decoders])) or 'nothing'})")
        if name is None:
            return next(iter(table.values()))
        if name not in table:
            raise HTTPError(404, f"model {name!r} is not served for {what}: choose one of "
                                 f"{', '.join(sorted(table))}", type_="model_not_found")
        return table[name]

    # ---- /v1/embeddings --------------------------------------------------------------------------------
    async def embeddings(self, request: Request):
        return await self._handle("embeddings", request, self._embeddings)

    async def _embeddings(self, request: Request):
        arrived = time.monotonic()
        if len(self.encoders) == 1:  # the request can only go there: a full queue refuses before its body
            next(iter(self.encoders.values())).batcher.check_room()
        data = await _read_json(request, self.config.max_body_bytes)
        served = self._model(data, self.encoders, "embeddings")
        timeout = _deadline(request, data, self.config.request_timeout)
        truncate = _field(data, "truncate", bool, False, what="true or false")
        fmt = _field(data, "encoding_format", str, "float", lambda v: v in ("float", "base64"),
                     "'float' or 'base64'")
        if data.get("dimensions") is not None:
            raise HTTPError(422, "'dimensions' is not supported: the model's embeddings have "
                                 f"{served.model.config.d_model} dimensions")
        if "input" not in data:
            raise HTTPError(422, "'input' is missing: send a string, a list of strings, a list of token ids "
                                 "or a list of lists of token ids")
        served.batcher.check_room()  # (several encoders) a full queue refuses before any tokenizing
        sequences = await self._embedding_inputs(served, data["input"], truncate)
        if self.config.max_queue_tokens < sum(len(s) for s in sequences):
            raise HTTPError(413, f"the request has {sum(len(s) for s in sequences)} tokens, more than the "
                                 f"queue holds (--max-queue-tokens {self.config.max_queue_tokens})")
        ticket = served.batcher.submit(sequences)
        waiter = asyncio.ensure_future(asyncio.shield(ticket.future))
        gone = asyncio.ensure_future(_wait_disconnect(request))
        try:
            left = max(timeout - (time.monotonic() - arrived), 0.0)  # the deadline counts from arrival
            done, _ = await asyncio.wait({waiter, gone}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                if ticket.future.done():     # finished in the same instant
                    pass
                elif gone in done:
                    served.batcher.cancel(ticket)
                    raise ClientDisconnect()
                elif served.batcher.cancel(ticket) or not ticket.started:
                    raise HTTPError(504, f"the request's deadline ({timeout:g} s) passed while it was queued")
                else:  # every sequence is in a running batch: wait for it, compute is bounded
                    await ticket.future
        finally:
            gone.cancel()
            waiter.cancel()
        emb = ticket.future.result()
        if len(emb) > 32:  # a long answer is rendered off the event loop
            return Response(await asyncio.to_thread(_embeddings_json, emb, fmt, served.name, ticket.n_tokens),
                            media_type="application/json")
        return Response(_embeddings_json(emb, fmt, served.name, ticket.n_tokens), media_type="application/json")

    async def _embedding_inputs(self, served: ServedEncoder, inp, truncate: bool) -> list[list[int]]:
        what = "a string, a list of strings, a list of token ids or a list of lists of token ids"
        if isinstance(inp, str):
            texts = [inp]
        elif isinstance(inp, list) and inp:
            if len(inp) > self.config.max_inputs and not all(_is_int(x) for x in inp):
                raise HTTPError(413, f"'input' has {len(inp)} items, more than the limit of "
                                     f"{self.config.max_inputs} (--max-inputs)")
            if all(isinstance(x, str) for x in inp):
                texts = inp
            elif all(_is_int(x) for x in inp):
                return served.check_ids([list(inp)], truncate)
            elif all(isinstance(x, list) for x in inp):
                for i, s in enumerate(inp):
                    if not all(_is_int(t) for t in s):
                        bad = next(t for t in s if not _is_int(t))
                        raise HTTPError(422, f"input[{i}] must be a list of integer token ids, found "
                                             f"{json.dumps(bad)[:40]}")
                return served.check_ids([list(s) for s in inp], truncate)
            else:
                kinds = sorted({_jtype(x) for x in inp})
                raise HTTPError(422, f"'input' must be {what}; got an array mixing {', '.join(kinds)}")
        elif isinstance(inp, list):
            raise HTTPError(422, "'input' is an empty array: send at least one input")
        else:
            raise HTTPError(422, f"'input' must be {what}, got {_jtype(inp)}")
        if sum(len(t) for t in texts) > 200_000:  # long texts: tokenize off the event loop
            return await asyncio.to_thread(served.tokenize, texts, truncate)
        return served.tokenize(texts, truncate)

    # ---- /v1/completions and /v1/chat/completions ----------------------------------------------------
    async def completions(self, request: Request):
        return await self._handle("completions", request, lambda r: self._generate(r, chat=False))

    async def chat_completions(self, request: Request):
        return await self._handle("chat_completions", request, lambda r: self._generate(r, chat=True))

    def _prompts(self, served: ServedDecoder, data: dict, chat: bool) -> list[list[int]]:
        tok = served.lm.tokenizer
        if tok is None and (chat or isinstance(data.get("prompt"), str) or (
                isinstance(data.get("prompt"), list) and any(isinstance(x, str) for x in data["prompt"]))):
            raise HTTPError(422, f"model {served.name} has no tokenizer: send the prompt as token ids")
        if chat:
            msgs = data.get("messages")
            if not isinstance(msgs, list) or not msgs:
                raise HTTPError(422, "'messages' must be a non-empty array of {\"role\", \"content\"} objects")
            clean = []
            for i, m in enumerate(msgs):
                if not isinstance(m, dict) or not isinstance(m.get("role"), str) \
                        or not isinstance(m.get("content"), str):
                    raise HTTPError(422, f"messages[{i}] must be an object with string 'role' and 'content', "
                                         f"got {json.dumps(m)[:80]}")
                if m["role"] not in ("system", "user", "assistant"):
                    raise HTTPError(422, f"messages[{i}].role must be 'system', 'user' or 'assistant', "
                                         f"got {m['role']!r}")
                clean.append({"role": m["role"], "content": m["content"]})
            return [tok.encode(tok.apply_chat_template(clean, add_generation_prompt=True))]
        p = data.get("prompt")
        if isinstance(p, str):
            return [tok.encode(p)]
        if isinstance(p, list) and p:
            if all(isinstance(x, str) for x in p):
                return [tok.encode(x) for x in p]
            if all(_is_int(x) for x in p):
                return [list(p)]
            if all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in p):
                return [list(x) for x in p]
        raise HTTPError(422, "'prompt' must be a string, a list of strings, a list of token ids or a list "
                             f"of lists of token ids, got {json.dumps(p)[:80]}")

    async def _generate(self, request: Request, chat: bool):
        arrived = time.monotonic()
        data = await _read_json(request, self.config.max_body_bytes)
        served = self._model(data, self.decoders, "generation")
        timeout = _deadline(request, data, self.config.request_timeout)
        stream = _field(data, "stream", bool, False, what="true or false")
        max_tokens = _field(data, "max_completion_tokens" if "max_completion_tokens" in data else "max_tokens",
                            int, 16 if not chat else 256, lambda v: v >= 1, "an integer >= 1")
        temperature = _field(data, "temperature", float, 1.0, lambda v: 0 <= v <= 2, "a number in [0, 2]")
        top_p = _field(data, "top_p", float, 1.0, lambda v: 0 < v <= 1, "a number in (0, 1]")
        top_k = _field(data, "top_k", int, 0, lambda v: v >= 0, "an integer >= 0")
        seed = _field(data, "seed", int, None, what="an integer")
        _field(data, "n", int, 1, lambda v: v == 1, "1 (one choice per prompt)")
        truncate = _field(data, "truncate", bool, False, what="true or false")
        stop = data.get("stop")
        if stop is None:
            stop = ()
        elif isinstance(stop, str):
            stop = (stop,)
        elif isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop):
            stop = tuple(stop)
        else:
            raise HTTPError(422, f"'stop' must be a string or a list of up to 4 non-empty strings, got "
                                 f"{json.dumps(stop)[:80]}")
        return_ids = _field(data, "return_token_ids", bool, False, what="true or false")
        include_usage = bool(isinstance(data.get("stream_options"), dict)
                             and data["stream_options"].get("include_usage"))
        prompts = self._prompts(served, data, chat)
        if max_tokens >= served.max_len:
            raise HTTPError(413, f"'max_tokens' {max_tokens} leaves no room for a prompt in "
                                 f"{served.name}'s context of {served.max_len} tokens")
        room = served.max_len - max_tokens
        for i, p in enumerate(prompts):
            if not p:
                raise HTTPError(422, f"prompt {i} is empty")
            if len(p) > room:
                if not truncate:
                    raise HTTPError(413, f"prompt {i} has {len(p)} tokens; with max_tokens {max_tokens} it "
                                         f"exceeds {served.name}'s context of {served.max_len} tokens "
                                         "(send \"truncate\": true to keep its last tokens)")
                prompts[i] = p[-room:]
        params = served.sampling_params(max_new_tokens=max_tokens, temperature=float(temperature),
                                        top_k=top_k, top_p=float(top_p), seed=seed, stop=stop)
        streams = served.scheduler.submit(prompts, params)
        head = {"id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": served.name}
        n_prompt = sum(len(p) for p in prompts)
        try:
            first = await self._first_events(request, served, streams, timeout, arrived)
        except BaseException:
            for s in streams:
                served.scheduler.cancel(s)
            raise
        if stream:
            return StreamingResponse(self._sse(served, streams, first, head, chat, n_prompt, include_usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        gone = asyncio.ensure_future(_wait_disconnect(request))
        work = asyncio.ensure_future(asyncio.gather(*(self._collect(s, f) for s, f in zip(streams, first))))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the client went: stop its generations
                raise ClientDisconnect()
            results = work.result()
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
                for s in streams:
                    served.scheduler.cancel(s)
        choices, n_out = [], 0
        for i, (text, reason, ids) in enumerate(results):
            n_out += len(ids)
            choices.append({"index": i, "message": {"role": "assistant", "content": text},
                            "finish_reason": reason} if chat else
                           {"index": i, "text": text, "logprobs": None, "finish_reason": reason})
            if return_ids:
                choices[-1]["token_ids"] = ids
        return JSONResponse({**head, "choices": choices,
                             "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                                       "total_tokens": n_prompt + n_out}})

    async def _first_events(self, request, served, streams, timeout, arrived):
        """The first event of every stream; 504 if one has produced nothing by the deadline (still queued),
        ClientDisconnect if the client goes first."""
        gone = asyncio.ensure_future(_wait_disconnect(request))
        firsts = [asyncio.ensure_future(s.queue.get()) for s in streams]
        try:
            deadline = arrived + timeout
            while True:
                if gone.done():
                    raise ClientDisconnect()
                if all(f.done() for f in firsts):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HTTPError(504, f"the request's deadline ({timeout:g} s) passed while it was queued")
                await asyncio.wait({*[f for f in firsts if not f.done()], gone}, timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
            out = []
            for f in firsts:
                ev = f.result()
                if isinstance(ev, BaseException):
                    raise HTTPError(422, f"the generator refused the prompt: {ev}") \
                        if isinstance(ev, ValueError) else ev
                out.append(ev)
            return out
        finally:
            gone.cancel()
            for f in firsts:
                f.cancel()

    async def _collect(self, s, first):
        """(text, finish_reason, generated token ids) of one stream."""
        text, ids, reason, ev = [], [], None, first
        while True:
            if isinstance(ev, BaseException):
                raise ev
            token_id, piece, reason = ev
            if piece:
                text.append(piece)
            if token_id is not None:
                ids.append(int(token_id))
            if reason is not None:
                break
            ev = await s.queue.get()
        return "".join(text), reason, ids

    async def _sse(self, served, streams, first, head, chat, n_prompt, include_usage):
        """data: {chunk} per event, then data: [DONE]; the client leaving cancels every stream."""
        obj = "chat.completion.chunk" if chat else "text_completion"
        pending = {i: s for i, s in enumerate(streams)}
        try:
            if chat:
                for i in pending:
                    yield _sse({**head, "object": obj, "choices": [
                        {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            queue = asyncio.Queue()

            async def pump(i, s, ev):
                while True:
                    await queue.put((i, ev))
                    if isinstance(ev, BaseException) or ev[2] is not None:
                        return
                    ev = await s.queue.get()

            pumps = [asyncio.ensure_future(pump(i, s, f)) for (i, s), f in zip(pending.items(), first)]
            try:
                while pending:
                    i, ev = await queue.get()
                    if isinstance(ev, BaseException):
                        yield _sse({"error": {"message": f"{type(ev).__name__}: {ev}", "type": "server_error"}})
                        pending.pop(i, None)
                        continue
                    _, piece, reason = ev
                    if reason is not None:
                        pending.pop(i, None)
                    if chat:
                        delta = {"content": piece} if piece else {}
                        choice = {"index": i, "delta": delta, "finish_reason": reason}
                    else:
                        choice = {"index": i, "text": piece or "", "logprobs": None, "finish_reason": reason}
                    yield _sse({**head, "object": obj, "choices": [choice]})
            finally:
                for p in pumps:
                    p.cancel()
            if include_usage:
                n_out = sum(s.n_tokens for s in streams)
                yield _sse({**head, "object": obj, "choices": [], "usage": {
                    "prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}})
            yield "data: [DONE]\n\n"
        finally:  # normal end, or the client went (the generator is closed): stop what still runs
            for s in streams:
                served.scheduler.cancel(s)


def _embeddings_json(emb, fmt: str, model: str, n_tokens: int) -> bytes:
    """The /v1/embeddings answer for f32 [N, D] embeddings (float lists or base64 little-endian f32)."""
    if fmt == "base64":
        items = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in emb]
    else:
        items = emb.tolist()
    body = {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(items)],
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
    return json.dumps(body, separators=(",", ":")).encode()


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"
