"""Static calibration: the float range of the input of every encoder Linear, over sample texts.

The float model runs on the texts through a recording backend: its ``linear`` op notes the input x
of each encoder Linear (found by the identity of its weight array), then declines, so the reference
computes the output as usual. Per input channel k we record min and max; then

    outlier channels  k with max(|lo_k|, |hi_k|) > outlier_threshold (LLM.int8(), Dettmers et al.
                      2022, uses 6.0): these few channels stay float32 (their s8 weight codes are 0
                      and a small float32 product adds their part; see blocks/encoder.py)
    minmax            [lo, hi] = [min x, max x] over the other channels and all tokens
    percentile        [lo, hi] = the (100 - p)-th and p-th percentiles of those values (p = 99.99);
                      a second pass fills a 4096-bin histogram over the min-max range and the
                      percentile is read at a bin edge on the tail's side

Why outliers: BERT-family LayerNorm outputs carry a handful of channels ~10x larger than the rest
(all-MiniLM-L6-v2: channels 63, 99, 223, up to 30), and post-GELU FFN inputs one or two. A per-tensor
u8 scale stretched over them leaves the ordinary channels a few codes; clipping them (percentile)
destroys information the model relies on. docs/accuracy.md has the numbers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .. import backend
from ..packing import PackedBatch, pack_sequences
from ._model import linear_names

METHODS = ("minmax", "percentile")
BINS = 4096
_BACKEND = "fdbert-calibration"   # + a per-run suffix: concurrent calibrations each get their own


@dataclass
class Calibration:
    lo: float                  # calibrated range of the non-outlier channels
    hi: float
    channel_lo: np.ndarray     # f32 [K] per-channel min over the calibration tokens
    channel_hi: np.ndarray     # f32 [K] per-channel max
    outliers: np.ndarray       # int32 [k_o] channels kept in float32 (sorted)


_RUNS = itertools.count()


class Recorder:
    """A backend namespace with only ``linear``: calls ``observe(key, x, W, b)`` then declines."""

    def __init__(self, model, observe):
        self.keys = {id(getattr(layer, name).weight): (i, name)
                     for i, layer in enumerate(model.weights.layers) for name in linear_names()}
        self.observe = observe

    def linear(self, x, weight, bias=None):
        key = self.keys.get(id(weight))
        if key is not None:
            self.observe(key, x, weight, bias)
        return NotImplemented


def _batch(model, samples):  # a slice of calibration samples -> PackedBatch
    """Texts go through ``model.tokenize``; token-id lists are packed as they are (no tokenizer)."""
    if all(isinstance(s, str) for s in samples):
        return model.tokenize(samples)
    if any(isinstance(s, (str, PackedBatch)) for s in samples):
        raise TypeError("calibration samples must be all texts, all token-id lists, or PackedBatches")
    return pack_sequences([[int(t) for t in s] for s in samples])


def run_recorded(model, texts, observe, batch_size=32, progress=True, desc="calibrate"):
    """Run the float model on ``texts`` (reference ops) calling ``observe(key, x, W, b)`` per Linear.

    ``texts`` holds calibration samples of one kind: strings (tokenized by the model, ``batch_size``
    per forward pass), token-id lists (packed ``batch_size`` per pass, for models without a
    tokenizer), or ready :class:`~fdbert.packing.PackedBatch` es (one pass each).
    """
    rec = Recorder(model, observe)
    if texts and all(isinstance(t, PackedBatch) for t in texts):
        batches = list(texts)
    else:
        batches = [_batch(model, texts[s:s + batch_size]) for s in range(0, len(texts), batch_size)]
    if progress:
        from ..progress import progress_bar
        batches = progress_bar(batches, total=len(batches), desc=desc)
    name = f"{_BACKEND}-{next(_RUNS)}"   # registered process-wide, selected for this context only
    backend.register_backend(name, rec)
    try:
        with backend.set_backend(name):
            for batch in batches:
                model.forward_packed(batch)
    finally:
        backend.unregister_backend(name)


def calibrate(model, texts, method="minmax", percentile=99.99, outlier_threshold=None, batch_size=32,
              progress=True):
    """(layer, name) -> :class:`Calibration` of the input of every encoder Linear.

    ``texts``: strings, token-id lists or PackedBatches (see :func:`run_recorded`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 50.0 < float(percentile) <= 100.0:
        raise ValueError(f"percentile must lie in (50, 100], got {percentile!r}")
    if outlier_threshold is not None and not float(outlier_threshold) > 0:
        raise ValueError(f"outlier_threshold must be > 0 or None, got {outlier_threshold!r}")
    texts = list(texts)
    if not texts:
        raise ValueError("calibration needs at least one text")
    ch_lo, ch_hi = {}, {}

    def minmax(key, x, w, b):
        if len(x):
            ch_lo[key] = np.minimum(ch_lo.get(key, np.inf), x.min(axis=0))
            ch_hi[key] = np.maximum(ch_hi.get(key, -np.inf), x.max(axis=0))

    run_recorded(model, texts, minmax, batch_size, progress, desc="calibrate (min-max)")
    out = {}
    for key in ch_lo:
        lo_k, hi_k = ch_lo[key].astype(np.float32), ch_hi[key].astype(np.float32)
        amax = np.maximum(-lo_k, hi_k)
        outl = (np.nonzero(amax > outlier_threshold)[0] if outlier_threshold is not None
                else np.zeros(0, np.int64)).astype(np.int32)
        inl = np.ones(len(amax), bool)
        inl[outl] = False
        lo = float(lo_k[inl].min()) if inl.any() else 0.0
        hi = float(hi_k[inl].max()) if inl.any() else 0.0
        out[key] = Calibration(lo, hi, lo_k, hi_k, outl)
    if method == "minmax" or percentile == 100.0:
        return out

    hists = {k: np.zeros(BINS, np.int64) for k in out}

    def histogram(key, x, w, b):
        c = out[key]
        vals = np.delete(x, c.outliers, axis=1) if len(c.outliers) else x
        if vals.size:
            hists[key] += np.histogram(vals, bins=BINS, range=(c.lo, c.hi if c.hi > c.lo else c.lo + 1.0))[0]

    run_recorded(model, texts, histogram, batch_size, progress, desc="calibrate (histogram)")
    for k, c in out.items():
        c.lo, c.hi = percentile_range(hists[k], c.lo, c.hi, percentile)
    return out


def percentile_range(hist, lo, hi, p):  # int [BINS], float, float, float -> (lo_p, hi_p)
    """The (100-p)-th and p-th percentiles of a histogram over [lo, hi], read at bin edges:
    hi_p = right edge of the first bin where the CDF reaches p/100; lo_p = left edge of the last bin
    where the CDF counted from the top reaches p/100."""
    if hi <= lo or hist.sum() == 0:
        return lo, hi
    edges = np.linspace(lo, hi, len(hist) + 1)
    total = hist.sum()
    top = int(np.searchsorted(np.cumsum(hist) / total, p / 100.0))
    bottom = len(hist) - 1 - int(np.searchsorted(np.cumsum(hist[::-1]) / total, p / 100.0))
    return float(edges[max(bottom, 0)]), float(edges[min(top, len(hist) - 1) + 1])
