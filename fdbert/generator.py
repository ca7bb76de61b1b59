"""Continuous batching: requests join between steps, finished ones leave, and each step is ONE packed
forward pass over every live sequence (a prefill of a newcomer's prompt, a single token of the others).

    gen = fdbert.Generator(lm, max_batch_tokens=2048)
    rid = gen.add(prompt_ids, fdbert.SamplingParams(max_new_tokens=32))   # joins at the next step
    while gen.live or gen.waiting:
        for e in gen.step():              # Event(request_id, token_id, text, finish_reason)
            print(e.text, end="")
    gen.cancel(rid)                       # leaves at once and frees its cache

A finished or cancelled sequence's cache is freed at once and it costs nothing more. Each request
samples with its own seeded generator (fdbert.sampling), so its tokens do not depend on the batch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from .errors import ShapeError
from .sampling import SamplingParams, sample

FINISH_REASONS = ("stop", "length", "cancelled")


@dataclass(frozen=True)
class Event:
    request_id: int
    token_id: int | None          # None for "cancelled"
    text: str                     # the text this token adds ("" while a UTF-8 character or a stop string is pending)
    finish_reason: str | None     # None, or "stop" / "length" / "cancelled"


@dataclass(eq=False)
class _Request:
    rid: int
    prompt: list
    params: SamplingParams
    rng: np.random.Generator
    generated: list = field(default_factory=list)
    emitted: int = 0              # characters of text already sent out
    text: str = ""                # final text once finished
    prefilled: bool = False


def _held_back(text: str, stops) -> int:
    """Characters at the end of ``text`` to withhold: an unfinished UTF-8 character (U+FFFD from the
    byte-level decoder) or the start of a possible stop string."""
    hold = 1 if text.endswith("\ufffd") else 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


class Generator:
    """The continuous-batching engine over one :class:`fdbert.Decoder` (not thread-safe: one caller steps it)."""

    def __init__(self, lm, max_batch_tokens: int = 2048):
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.lm, self.max_batch_tokens = lm, int(max_batch_tokens)
        self.cache = lm.new_cache()
        self._ids = itertools.count()
        self._waiting: dict[int, _Request] = {}
        self._live: dict[int, _Request] = {}
        self._done_text: dict[int, str] = {}
        self._pending: list[Event] = []

    @property
    def live(self) -> int:
        """Sequences in the batch (prefilled or about to be)."""
        return len(self._live)

    @property
    def waiting(self) -> int:
        """Requests added but not yet admitted to the batch."""
        return len(self._waiting)

    def add(self, prompt_ids, params: SamplingParams | None = None) -> int:
        """Queue a request; it joins the batch at the next step. Returns its request id."""
        params = params or SamplingParams()
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ShapeError("a prompt must have at least one token")
        if len(prompt) > self.lm.max_seq_len:
            raise ShapeError(f"the prompt has {len(prompt)} tokens, more than the model's limit of "
                             f"{self.lm.max_seq_len}")
        self.lm._check_ids(np.asarray(prompt, np.int64))
        rid = next(self._ids)
        self._waiting[rid] = _Request(rid, prompt, params, np.random.default_rng(params.seed))
        return rid

    def cancel(self, rid: int) -> bool:
        """Remove a request now and free its cache; the next step reports it "cancelled". False if unknown
        or already finished."""
        req = self._waiting.pop(rid, None) or self._live.pop(rid, None)
        if req is None:
            return False
        self.cache.drop(rid)
        self._done_text[rid] = self._text(req)
        self._pending.append(Event(rid, None, "", "cancelled"))
        return True

    def text_of(self, rid: int) -> str:
        """The full text of a finished request (cut before its stop string)."""
        return self._done_text[rid]

    def _text(self, req) -> str:
        tok = self.lm.tokenizer
        return tok.decode(req.generated, skip_special_tokens=True) if tok is not None else ""

    def _admit(self) -> None:
        budget = self.max_batch_tokens - sum(1 for r in self._live.values() if r.prefilled)
        for rid in list(self._waiting):
            req = self._waiting[rid]
            if len(req.prompt) > budget and (self._live or budget < self.max_batch_tokens):
                break   # first come, first served; a prompt longer than the budget runs alone
            del self._waiting[rid]
            cap = min(len(req.prompt) + req.params.max_new_tokens, self.lm.max_seq_len)
            self.cache.add(rid, cap)
            self._live[rid] = req
            budget -= len(req.prompt)

    def step(self) -> list[Event]:
        """One forward pass over every live sequence; returns this step's events (in request order)."""
        events, self._pending = self._pending, []
        self._admit()
        if not self._live:
            return events
        reqs = list(self._live.values())
        ids, positions, n_new = [], [], []
        for r in reqs:
            if r.prefilled:
                pos = self.cache.length(r.rid)
                ids.append(r.generated[-1])
                positions.append(pos)
                n_new.append(1)
            else:
                ids.extend(r.prompt)
                positions.extend(range(len(r.prompt)))
                n_new.append(len(r.prompt))
        cu = self.cache.begin([r.rid for r in reqs], n_new)
        h = self.lm.forward(np.asarray(ids, np.int64), np.asarray(positions, np.int64), self.cache.layer)
        self.cache.commit()
        logits = self.lm.lm_head(h[cu[1:] - 1])                           # [B, V]: each sequence's last row
        for r, row in zip(reqs, logits):
            r.prefilled = True
            events.append(self._advance(r, sample(row, r.params, r.rng)))
        return events

    def _advance(self, r: _Request, token: int) -> Event:
        """Record a sampled token; finish the request if it is done. Returns its event."""
        lm, stops = self.lm, r.params.stop
        if token in lm.eos_token_ids:
            return self._finish(r, token, "stop", self._text(r))
        r.generated.append(token)
        text = self._text(r)
        cut = min((i for i in (text.find(s, max(r.emitted - len(s), 0)) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            return self._finish(r, token, "stop", text[:cut])
        if len(r.generated) >= r.params.max_new_tokens or self.cache.length(r.rid) >= lm.max_seq_len:
            return self._finish(r, token, "length", text)
        safe = len(text) - _held_back(text, stops)
        delta = text[r.emitted:safe] if safe > r.emitted else ""
        r.emitted = max(r.emitted, safe)
        return Event(r.rid, token, delta, None)

    def _finish(self, r: _Request, token: int, reason: str, text: str) -> Event:
        del self._live[r.rid]
        self.cache.drop(r.rid)
        self._done_text[r.rid] = text
        delta = text[r.emitted:]
        r.emitted = len(text)
        return Event(r.rid, token, delta, reason)
