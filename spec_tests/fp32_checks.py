"""Comparisons of the native float32 ops with the reference, within the named tolerances.

ulp distances, an elementwise atol + rtol check that reports the worst element, and the layer_norm
and attention bounds of tolerances.py (LN_*, ATTN_ATOL), which depend on the inputs' conditioning.
"""

from __future__ import annotations

import numpy as np

from fdbert import reference as ref
from tolerances import ATTN_ATOL, LN_ATOL, LN_MEAN_ULPS, LN_RTOL


def ordered(a):  # f32 [...] -> int64 [...]: consecutive floats map to consecutive integers
    i = np.asarray(a, np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def ulp_diff(a, b):
    return np.abs(ordered(a) - ordered(b))


def assert_close(got, want, *, atol, rtol=0.0, what=""):
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.dtype)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = atol + rtol * np.abs(want.astype(np.float64))
    bad = ~(err <= bound)  # NaN counts as bad
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} outside atol={atol}, rtol={rtol}; "
                           f"worst |err| {np.nanmax(err)} at {np.unravel_index(np.nanargmax(err - bound), err.shape)}")


def assert_layer_norm_close(got, x, w, b, eps):
    want = ref.layer_norm(x, w, b, eps)
    x64 = x.astype(np.float64)
    cond = np.abs(x64).max(axis=-1, keepdims=True) / np.maximum(x64.std(axis=-1, keepdims=True), 1e-30)
    bound = LN_ATOL + LN_RTOL * np.abs(want) + LN_MEAN_ULPS * 2.0**-23 * cond * np.abs(w)
    err = np.abs(got.astype(np.float64) - want)
    assert got.dtype == np.float32 and np.all(err <= bound), np.max(err - bound)


def assert_attention_close(got, q, k, v, cu_q, cu_k, causal, scale):
    want = ref.attention(q, k, v, cu_q, cu_k, causal=causal, scale=scale)
    Dh = q.shape[2]
    sc = np.float32(1.0 / np.sqrt(Dh) if scale is None else scale)
    S = 0.0
    for b in range(len(cu_q) - 1):  # the largest sum_d |q_id k_jd| within a sequence, over heads
        qa, ka = np.abs(q[cu_q[b]:cu_q[b + 1]]), np.abs(k[cu_k[b]:cu_k[b + 1]])
        ka = np.repeat(ka, q.shape[1] // k.shape[1], axis=1)   # grouped-query heads: kv head h // G
        if len(qa) and len(ka):
            S = max(S, float(np.einsum("ihd,jhd->hij", qa, ka, dtype=np.float64).max()) * float(sc))
    bound = max(1.0, float(np.abs(v).max(initial=0))) * (ATTN_ATOL + 2 * Dh * 2.0**-24 * S)
    assert_close(got, want, atol=bound, what="attention")


def rng_of(seed):
    return np.random.default_rng(seed)
