"""Real servers for the serving tests: ``fdbert serve`` in a subprocess, or uvicorn in a thread.

Both listen on a free loopback port and are talked to over HTTP (httpx). Nothing here is mocked but the
fake decoder below, which implements the decoder interface the server codes against
(``Generator.add / cancel / step / live``, ``SamplingParams``, ``Event``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 90.0, proc=None) -> None:
    import httpx
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout} s")


class ServeProcess:
    """``python -m fdbert.cli serve ARGS --port P`` until stopped (SIGTERM, then SIGKILL after 30 s)."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
        env["HF_HUB_OFFLINE"] = "1"
        self.proc = subprocess.Popen([sys.executable, "-m", "fdbert.cli", "serve", *args, "--port", str(self.port)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_ready(self.url, proc=self.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class ThreadServer:
    """uvicorn serving ``app`` in a thread of this process (so tests can look inside the app)."""

    def __init__(self, app):
        import uvicorn
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_ready(self.url, timeout=30)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()) or not want:
                total += float(value)
    return total


# ---- a fake decoder with the real one's interface ------------------------------------------------
class CharTokenizer:
    """One token per byte; EOS is 0."""
    eos_token_id = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids) -> str:
        return bytes(ids).decode(errors="replace")

    def apply_chat_template(self, messages, add_generation_prompt=True) -> str:
        s = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return s + ("<assistant>" if add_generation_prompt else "")


class FakeLM:
    def __init__(self, max_seq_len=128, name="fake-lm"):
        self.tokenizer, self.max_seq_len, self.name = CharTokenizer(), max_seq_len, name


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple = ()


@dataclass(frozen=True)
class Event:
    request_id: int
    token_id: int | None
    text: str
    finish_reason: str | None


def fake_continuation(prompt_ids, n: int) -> str:
    """What FakeGenerator writes after a prompt: letters counting on from the prompt's length."""
    return "".join(chr(ord("a") + (len(prompt_ids) + i) % 26) for i in range(n))


@dataclass
class _Live:
    prompt: list
    params: SamplingParams
    out: list = field(default_factory=list)


class FakeGenerator:
    """Every live request gets one token per step (after ``step_s`` seconds); at most ``capacity`` run,
    the rest wait in order. ``log`` records the request ids of every step; ``cancelled`` the cancels."""

    step_s = 0.005
    capacity = 64
    instances: list = []

    def __init__(self, lm, max_batch_tokens=2048):
        self.lm, self.max_batch_tokens = lm, max_batch_tokens
        self.running: dict[int, _Live] = {}
        self.waiting: dict[int, _Live] = {}
        self.log: list[tuple] = []
        self.cancelled: list[int] = []
        self._next = 0
        FakeGenerator.instances.append(self)

    @property
    def live(self) -> int:
        return len(self.running) + len(self.waiting)

    def add(self, prompt_ids, params) -> int:
        if not prompt_ids:
            raise ValueError("empty prompt")
        rid, self._next = self._next, self._next + 1
        self.waiting[rid] = _Live(list(prompt_ids), params)
        return rid

    def cancel(self, rid):
        self.cancelled.append(rid)
        self.running.pop(rid, None)
        self.waiting.pop(rid, None)

    def step(self) -> list[Event]:
        while self.waiting and len(self.running) < self.capacity:
            rid = next(iter(self.waiting))
            self.running[rid] = self.waiting.pop(rid)
        if not self.running:
            return []
        time.sleep(self.step_s)
        self.log.append(tuple(self.running))
        events = []
        for rid, r in list(self.running.items()):
            i = len(r.out)
            tok = ord("a") + (len(r.prompt) + i) % 26
            r.out.append(tok)
            text = "".join(map(chr, r.out))
            reason = None
            if any(s in text for s in r.params.stop):
                reason = "stop"
            elif len(r.out) >= r.params.max_new_tokens:
                reason = "length"
            events.append(Event(rid, tok, chr(tok), reason))
            if reason:
                del self.running[rid]
        return events


class FakeDecoderAPI:
    Generator = FakeGenerator
    SamplingParams = SamplingParams
