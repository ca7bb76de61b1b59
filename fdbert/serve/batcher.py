"""Dynamic batching for the encoder: many requests' texts -> one packed forward pass.

    queue (FIFO of sequences)  --worker thread-->  pack_sequences(ids) -> embed_packed -> futures

A request's sequences enter the queue together (admission is all or nothing). The worker thread takes
sequences from the head while the batch stays within ``max_batch_tokens`` (and ``max_batch_size``
sequences), once the queue holds a full budget or its oldest sequence has waited ``max_wait_ms``.
Packed batches have no padding, so coalescing costs nothing, and every row of a batch is computed
independently of the others: a text's embedding is the same whichever requests shared its batch
(bit for bit on the native backend).

Admission is bounded in requests and in tokens (:class:`QueueFull` -> HTTP 429). A request leaves the
queue when its deadline passes or its client goes (:meth:`EmbeddingBatcher.cancel`): its sequences
that have not started are dropped, never computed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..packing import pack_sequences


def lower_priority(by: int) -> None:
    """Raise the calling thread's nice value by ``by`` (Linux: nice is per thread, and the OpenMP workers
    this thread starts inherit it), so that under CPU contention the event loop, which admits, refuses
    and answers, runs before compute. No-op where threads have no nice value of their own."""
    if by <= 0 or not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError:
        pass


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests or ``max_queue_tokens`` tokens; ``retry_after`` in s."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Draining(Exception):
    """The server is shutting down and admits no new work."""


@dataclass
class Ticket:
    """One admitted request: its sequences, and a future resolved with f32 [N, D] or an exception."""
    id: int
    sequences: list            # N lists of token ids
    n_tokens: int
    enqueued: float            # time.monotonic() at admission
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    out: np.ndarray | None = None           # [N, D], filled row by row as batches finish
    queued: int = 0            # sequences not yet taken by a batch
    pending: int = 0           # sequences not yet computed
    cancelled: bool = False
    started: bool = False      # a batch took at least one of its sequences


@dataclass
class _Item:
    ticket: Ticket
    row: int                   # index of the sequence in its request
    ids: list = field(repr=False)


class EmbeddingBatcher:
    """Owns one worker thread that runs ``embed(batch: PackedBatch) -> f32 [B, D]`` on packed batches."""

    def __init__(self, embed, d_model: int, *, max_batch_tokens: int, max_batch_size: int | None,
                 max_wait_ms: float, max_queue: int, max_queue_tokens: int, max_queue_wait_ms=None,
                 metrics=None, name="", compute_nice: int = 0):
        self.embed, self.d_model = embed, d_model
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue, self.max_queue_tokens = max_queue, max_queue_tokens
        self.max_queue_wait = None if max_queue_wait_ms is None else max_queue_wait_ms / 1000.0
        self.metrics, self.name = metrics, name
        self.compute_nice = compute_nice
        self._items: deque[_Item] = deque()
        self._queued_requests = 0
        self._queued_tokens = 0
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._stopping = False
        self._draining = False
        self._flushing = False       # shutting down: run what is queued without waiting for company
        self._tokens_per_s = None    # running estimate (after the first batch): wait and Retry-After
        self._thread = threading.Thread(target=self._run, name=f"fdbert-batcher-{name}", daemon=True)
        self._thread.start()

    # ---- the event loop's side -------------------------------------------------------------------
    def check_room(self) -> None:
        """Raise QueueFull / Draining now if no request could be admitted, whatever its size: called
        before its body is read and tokenized, so that a refusal costs no more than parsing its head."""
        if self._draining:
            raise Draining("the server is shutting down")
        if self._queued_requests >= self.max_queue:
            raise QueueFull(f"the queue is full ({self._queued_requests} requests queued, "
                            f"--max-queue {self.max_queue})", self._retry_after())
        if self._queued_tokens >= self.max_queue_tokens:
            raise QueueFull(f"the queue is full ({self._queued_tokens} tokens queued, "
                            f"--max-queue-tokens {self.max_queue_tokens})", self._retry_after())
        if self.max_queue_wait is not None and self._tokens_per_s:
            wait = self._queued_tokens / self._tokens_per_s
            if wait > self.max_queue_wait:
                raise QueueFull(f"the queue is full (an estimated {1000 * wait:.0f} ms of work queued > "
                                f"--max-queue-wait-ms {1000 * self.max_queue_wait:g})", self._retry_after())

    def submit(self, sequences: list) -> Ticket:
        """Admit a request (all its sequences) or raise :class:`QueueFull` / :class:`Draining` at once."""
        n_tokens = sum(len(s) for s in sequences)
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._draining:
                raise Draining("the server is shutting down")
            if self._queued_requests + 1 > self.max_queue:
                raise QueueFull(f"the queue is full ({self._queued_requests} requests queued, "
                                f"--max-queue {self.max_queue})", self._retry_after())
            if self._queued_tokens + n_tokens > self.max_queue_tokens:
                raise QueueFull(f"the queue is full ({self._queued_tokens} tokens queued + {n_tokens} "
                                f"> --max-queue-tokens {self.max_queue_tokens})", self._retry_after())
            if self.max_queue_wait is not None and self._tokens_per_s and self._queued_tokens:
                wait = (self._queued_tokens + n_tokens) / self._tokens_per_s
                if wait > self.max_queue_wait:
                    raise QueueFull(f"the queue is full (an estimated {1000 * wait:.0f} ms of work queued > "
                                    f"--max-queue-wait-ms {1000 * self.max_queue_wait:g})", self._retry_after())
            t = Ticket(next(self._ids), sequences, n_tokens, time.monotonic(), loop.create_future(), loop,
                       queued=len(sequences), pending=len(sequences))
            t.out = np.empty((len(sequences), self.d_model), dtype=np.float32)
            self._items.extend(_Item(t, i, s) for i, s in enumerate(sequences))
            self._queued_requests += 1
            self._queued_tokens += n_tokens
            self._gauges()
            self._cond.notify()
        return t

    def cancel(self, t: Ticket) -> int:
        """Drop the ticket's queued sequences (deadline passed or client gone); returns how many."""
        with self._cond:
            if t.cancelled or t.pending == 0:
                return 0
            t.cancelled = True
            dropped = [it for it in self._items if it.ticket is t]
            if dropped:
                self._items = deque(it for it in self._items if it.ticket is not t)
                self._queued_tokens -= sum(len(it.ids) for it in dropped)
                self._queued_requests -= 1
                t.queued = 0
                self._gauges()
            return len(dropped)

    def flush(self) -> None:
        """Stop waiting for company: queued sequences run as soon as the worker is free (shutdown)."""
        with self._cond:
            self._flushing = True
            self._cond.notify()

    def drain(self) -> None:
        """Refuse new work from now on; queued work still runs."""
        with self._cond:
            self._draining = True

    def stop(self, timeout: float = 60.0) -> None:
        """Finish every queued sequence, then end the worker thread."""
        with self._cond:
            self._draining = self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    @property
    def queued_requests(self) -> int:
        return self._queued_requests

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    def _retry_after(self) -> int:
        """Seconds until the queue has likely drained, at least 1 (Retry-After takes whole seconds)."""
        return max(1, int(np.ceil(self._queued_tokens / max(self._tokens_per_s or 5000.0, 1.0))))

    def _gauges(self):
        if self.metrics:
            self.metrics.queue_depth.labels(self.name).set(self._queued_requests)
            self.metrics.queue_tokens.labels(self.name).set(self._queued_tokens)

    # ---- the worker thread -----------------------------------------------------------------------
    def _take_batch(self) -> list[_Item] | None:
        """Block until a batch is due; pop it (FIFO, within the budgets). None: stop."""
        with self._cond:
            while True:
                if not self._items:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                full = self._queued_tokens >= self.max_batch_tokens or (
                    self.max_batch_size is not None and len(self._items) >= self.max_batch_size)
                wait = self._items[0].ticket.enqueued + self.max_wait - time.monotonic()
                if full or wait <= 0 or self._stopping or self._flushing:
                    break
                self._cond.wait(wait)
            batch, tokens = [], 0
            while self._items:
                it = self._items[0]
                if batch and (tokens + len(it.ids) > self.max_batch_tokens or
                              (self.max_batch_size is not None and len(batch) >= self.max_batch_size)):
                    break
                self._items.popleft()
                batch.append(it)
                tokens += len(it.ids)
                t = it.ticket
                t.started = True
                t.queued -= 1
                if t.queued == 0:
                    self._queued_requests -= 1
            self._queued_tokens -= tokens
            self._gauges()
            return batch

    def _run(self):
        lower_priority(self.compute_nice)
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            now = time.monotonic()
            packed = pack_sequences([it.ids for it in batch])
            t0 = time.perf_counter()
            try:
                emb = self.embed(packed)
                error = None
            except Exception as e:  # noqa: BLE001 -- delivered to the requests, never kills the worker
                emb, error = None, e
            dt = time.perf_counter() - t0
            if dt > 0 and error is None:
                rate = packed.n_tokens / dt
                self._tokens_per_s = rate if self._tokens_per_s is None else 0.8 * self._tokens_per_s + 0.2 * rate
            if self.metrics:
                m = self.metrics
                m.batch_size.labels(self.name).observe(len(batch))
                m.batch_tokens.labels(self.name).observe(packed.n_tokens)
                m.compute_seconds.labels(self.name).observe(dt)
                for it in batch:
                    m.queue_seconds.labels(self.name).observe(now - it.ticket.enqueued)
            for i, it in enumerate(batch):
                t = it.ticket
                with self._cond:
                    t.pending -= 1
                    done = t.pending == 0
                if error is not None:
                    post(t.loop, _set_exception, t.future, error)
                    continue
                t.out[it.row] = emb[i]
                if done:
                    post(t.loop, _set_result, t.future, t.out)


def _set_result(fut, value):
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut, exc):
    if not fut.done():
        fut.set_exception(exc)


def post(loop, fn, *args):
    """Run fn(*args) on the event loop from a worker thread (nothing if the loop has closed)."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass
