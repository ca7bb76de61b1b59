"""Choosing the next token from a row of logits: greedy, or sampling with temperature, top-k, top-p.

Each request owns a NumPy generator seeded from its ``seed`` and draws exactly one uniform number per
sampled token, so its tokens depend on its own logits and seed only, never on the batch around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64      # tokens to generate at most (finish_reason "length")
    temperature: float = 0.0      # 0: greedy (argmax, the lowest id on a tie); else logits / temperature
    top_k: int = 0                # keep the k most likely tokens; 0: all
    top_p: float = 1.0            # keep the smallest set of most likely tokens whose mass reaches top_p
    seed: int | None = None       # None: fresh entropy (not reproducible)
    stop: tuple = ()              # strings that end generation (finish_reason "stop"), not included

    def __post_init__(self):
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        if not isinstance(self.max_new_tokens, (int, np.integer)) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def token_probabilities(logits, params: SamplingParams):  # f32 [V] -> f64 [V], sums to 1
    """p = softmax(logits / T) restricted to the top_k largest, then to the top_p nucleus, renormalised."""
    z = logits.astype(np.float64) / params.temperature
    if params.top_k and params.top_k < len(z):
        kth = np.partition(z, -params.top_k)[-params.top_k]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    if params.top_p < 1:
        order = np.argsort(-p, kind="stable")                  # most likely first
        before = np.cumsum(p[order]) - p[order]                # mass of the tokens ranked above
        p[order[before >= params.top_p]] = 0.0                 # the nucleus already reached top_p
        p /= p.sum()
    return p


def sample(logits, params: SamplingParams, rng: np.random.Generator) -> int:
    """The next token: argmax when greedy, else inverse-CDF sampling with one uniform draw of ``rng``."""
    if params.greedy:
        return int(np.argmax(logits))
    cdf = np.cumsum(token_probabilities(logits, params))
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(cdf) - 1))
