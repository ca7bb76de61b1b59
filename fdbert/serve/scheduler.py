"""Continuous batching for generation: one thread drives ``fdbert.Generator.step()``.

    event loop --add/cancel commands--> scheduler thread: apply commands; events = gen.step()
    scheduler thread --events--> each request's asyncio.Queue

New requests join the running batch at the next decode step and finished ones leave at once (the
Generator does both: ``add`` between steps, a finished request is gone from the next step). A request
whose client goes is cancelled before the next step. Every Generator call happens on this one thread.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field

from .batcher import Draining, QueueFull, lower_priority, post


@dataclass
class Stream:
    """One prompt being generated; events arrive in ``queue`` as (token_id, text, finish_reason)."""
    key: int
    prompt_ids: list
    params: object
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    enqueued: float
    rid: object = None          # the Generator's request id, once added
    started: bool = False       # the first token has been produced
    finished: bool = False
    n_tokens: int = 0
    cancelled: bool = field(default=False)


class GenerationScheduler:
    def __init__(self, generator, *, max_queue: int, metrics=None, name="", compute_nice: int = 0):
        self.gen, self.max_queue, self.metrics, self.name = generator, max_queue, metrics, name
        self.compute_nice = compute_nice
        self._cond = threading.Condition()
        self._adds: list[Stream] = []
        self._cancels: list[Stream] = []
        self._by_rid: dict = {}
        self._active = 0            # streams admitted and not finished
        self._keys = itertools.count()
        self._draining = self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"fdbert-generator-{name}", daemon=True)
        self._thread.start()

    # ---- event loop side ------------------------------------------------------------------------
    def submit(self, prompts: list, params) -> list[Stream]:
        """Admit every prompt of a request or raise QueueFull / Draining at once."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._draining:
                raise Draining("the server is shutting down")
            if self._active + len(prompts) > self.max_queue:
                raise QueueFull(f"too many generations in flight ({self._active} + {len(prompts)} > "
                                f"--max-queue {self.max_queue})", 1)
            now = time.monotonic()
            streams = [Stream(next(self._keys), p, params, loop, asyncio.Queue(), now) for p in prompts]
            self._adds.extend(streams)
            self._active += len(streams)
            self._cond.notify()
        return streams

    def cancel(self, s: Stream) -> None:
        """Stop a stream's generation (client gone, or deadline passed before its first token)."""
        with self._cond:
            if s.finished or s.cancelled:
                return
            s.cancelled = True
            self._cancels.append(s)
            self._cond.notify()

    def drain(self):
        with self._cond:
            self._draining = True

    def stop(self, timeout: float = 60.0):
        with self._cond:
            self._draining = self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def active(self) -> int:
        return self._active

    # ---- scheduler thread -----------------------------------------------------------------------
    def _finish(self, s: Stream):
        if not s.finished:
            s.finished = True
            self._active -= 1
            if s.rid is not None:
                self._by_rid.pop(s.rid, None)

    def _run(self):
        lower_priority(self.compute_nice)
        gen = self.gen
        while True:
            with self._cond:
                while not self._adds and not self._cancels and not self._by_rid:
                    if self._stopping:
                        return
                    self._cond.wait()
                adds, self._adds = self._adds, []
                cancels, self._cancels = self._cancels, []
                for s in cancels:
                    if s in adds:          # never reached the Generator
                        adds.remove(s)
                        self._finish(s)
            for s in cancels:
                if s.rid is not None and not s.finished:
                    try:
                        gen.cancel(s.rid)
                    except Exception:  # noqa: BLE001 -- already gone from the Generator
                        pass
                    with self._cond:
                        self._finish(s)
            for s in adds:
                try:
                    s.rid = gen.add(s.prompt_ids, s.params)
                except Exception as e:  # noqa: BLE001 -- a bad prompt fails its request, not the server
                    with self._cond:
                        self._finish(s)
                    post(s.loop, s.queue.put_nowait, e)
                    continue
                with self._cond:
                    self._by_rid[s.rid] = s
            if not self._by_rid:
                continue
            t0 = time.perf_counter()
            try:
                events = gen.step()
            except Exception as e:  # noqa: BLE001 -- fail the live requests, keep serving
                with self._cond:
                    live = list(self._by_rid.values())
                    for s in live:
                        self._finish(s)
                for s in live:
                    post(s.loop, s.queue.put_nowait, e)
                continue
            dt = time.perf_counter() - t0
            produced = 0
            for ev in events:
                s = self._by_rid.get(ev.request_id)
                if s is None or s.cancelled:
                    continue
                if ev.token_id is not None and ev.finish_reason != "cancelled":
                    produced += 1
                    s.n_tokens += 1
                    if not s.started and self.metrics:
                        self.metrics.queue_seconds.labels(self.name).observe(time.monotonic() - s.enqueued)
                    s.started = True
                if ev.finish_reason is not None:
                    with self._cond:
                        self._finish(s)
                post(s.loop, s.queue.put_nowait, (ev.token_id, ev.text, ev.finish_reason))
            if self.metrics:
                m = self.metrics
                m.compute_seconds.labels(self.name).observe(dt)
                m.batch_size.labels(self.name).observe(len(events))
                m.generated_tokens.labels(self.name).inc(produced)
                m.live_generations.labels(self.name).set(len(self._by_rid))
