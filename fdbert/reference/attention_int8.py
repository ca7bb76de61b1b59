"""INT8 attention: :func:`fdbert.reference.attention.attention` with its two matmuls in integers.

The same packed variable-length batches, masks and shapes as the float attention. Per sequence b
and head h, q, k and v are quantized on the fly (dynamic, symmetric: absmax / 127) -- q and k per
token, v per (sequence, head) -- and both products run as exact integer sums (int32 accumulators,
the VNNI operation):

    q8_i, sq_i = codes(q_bh[i])   k8_j, sk_j = codes(k_bh[j])   v8, sv = codes(v_bh)    s8 in [-127, 127]
    acc_ij = sum_d q8_id k8_jd                               int32, exact
    s_ij   = float32(acc_ij) * ((sq_i * sk_j) * scale)       float32 scores [causal: -inf where masked]
    p_ij   = rint(255 * exp(s_ij - max_j s_ij))              u8 weights; each row's largest is 255
    out_id = float32(sum_j p_ij v8_jd) * (sv / float32(sum_j p_ij))

with codes(x) = clip(rint(x * (127 / max |x|)), -127, 127) and s = max |x| / 127, each quotient one
float32 division: a multiply per element, not a divide. Where max |x| < 2^-120 (all zero, or so
small that 127 / max |x| would overflow float32) both quotients are 1: the codes are 0. Per-token q and k
scales keep tokens independent: a query's result does not depend on the other queries computed with
it (a decoder step gives the rows of the full causal product), and an outlier token does not coarsen
the codes of the others. The softmax's normalisation is the integer row sum of the u8 weights, so the
weights that multiply v sum to exactly 1 whatever their rounding. Every step but the exponential is
exact integer or correctly rounded float32 arithmetic, so another backend reproduces it bit for bit
except where its exp rounds 255 * exp(.) to the other side of a half-integer (a weight off by one).

Error against the float attention (docs/int8.md): 7-bit q and k perturb each score by about
|q||k| / 127; the u8 weights are within 1/510 of 255 * softmax / max softmax. Used by encoder layers
whose ``attention`` is ``"int8"`` (``fdbert.quantize(..., attention="int8")``).
"""

import numpy as np

from .attention import causal_mask, sequence_rows

#: Largest Lk: sum_j p_ij v8_jd (at most 255 * 127 per key) must fit int32.
MAX_KEYS = 65536
#: max |x| below this quantizes to zero codes (127 / max |x| must not overflow float32).
TINY = np.float32(2.0 ** -120)


def symmetric_codes(x, axis):  # f32 x, the axes max |x| runs over -> (int32 codes, f32 scales)
    """codes = clip(rint(x * (127 / max |x|)), -127, 127), scale = max |x| / 127 over ``axis`` (both
    quotients 1 where max |x| < TINY); scales keep the reduced axes (size 1)."""
    if not np.all(np.isfinite(x)):
        raise ValueError("attention_int8: q, k and v must be finite (a NaN or inf has no INT8 code)")
    amax = np.abs(x).max(axis=axis, keepdims=True, initial=np.float32(0))
    zero = amax < TINY
    safe = np.where(zero, np.float32(1), amax).astype(np.float32)
    inv = np.where(zero, np.float32(1), np.float32(127) / safe).astype(np.float32)
    scale = np.where(zero, np.float32(1), safe / np.float32(127)).astype(np.float32)
    return np.clip(np.rint(x * inv), -127, 127).astype(np.int32), scale


def attention_int8(q, k, v, cu_seqlens_q, cu_seqlens_k, *, causal=False, scale=None):
    """The float attention's contract (q [nq, H, Dh]; k, v [nk, H, Dh]; int32 [B+1] offsets ->
    f32 [nq, H, Dh]), computed with the INT8 codes of the module docstring."""
    nq, H, Dh = q.shape
    scale = np.float32(1.0 / np.sqrt(Dh) if scale is None else scale)
    out = np.zeros_like(q)
    for q0, q1, k0, k1 in sequence_rows(cu_seqlens_q, cu_seqlens_k):
        if k1 - k0 > MAX_KEYS:
            raise ValueError(f"attention_int8: a sequence has {k1 - k0} keys; at most {MAX_KEYS}")
        q8, sq = symmetric_codes(q[q0:q1].transpose(1, 0, 2), 2)      # [H, Lq, Dh], sq [H, Lq, 1]
        k8, sk = symmetric_codes(k[k0:k1].transpose(1, 0, 2), 2)      # [H, Lk, Dh], sk [H, Lk, 1]
        v8, sv = symmetric_codes(v[k0:k1].transpose(1, 0, 2), (1, 2))  # [H, Lk, Dh], sv [H, 1, 1]
        acc = q8.astype(np.int64) @ k8.astype(np.int64).transpose(0, 2, 1)        # [H, Lq, Lk]
        with np.errstate(over="ignore"):   # an overflow a query sees raises below
            s = acc.astype(np.float32) * ((sq * sk.transpose(0, 2, 1)) * scale)   # f32 [H, Lq, Lk]
        visible = causal_mask(q1 - q0, k1 - k0) if causal else np.ones(s.shape[1:], bool)
        if not np.all(np.isfinite(s) | ~visible):
            raise ValueError("attention_int8: a score q.k overflows float32 (|q| |k| too large)")
        if causal:
            s = np.where(visible, s, np.float32(-np.inf))
        if s.shape[-1] == 0 or np.any(np.all(np.isneginf(s), axis=-1)):
            raise ValueError("attention_int8: a query sees no key (Lk = 0, or causal with Lk < Lq)")
        p = np.rint(np.float32(255) * np.exp(s - s.max(axis=-1, keepdims=True))).astype(np.int64)
        num = p @ v8.astype(np.int64)                                              # [H, Lq, Dh]
        den = p.sum(axis=-1, keepdims=True)                                        # [H, Lq, 1]
        o = num.astype(np.float32) * (sv / den.astype(np.float32))
        out[q0:q1] = o.transpose(1, 0, 2)                                          # -> [Lq, H, Dh]
    return out
