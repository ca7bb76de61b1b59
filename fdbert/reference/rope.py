"""Rotary position embedding (RoPE; Su et al. 2021), in HF Llama's "rotate half" layout.

The head's Dh channels form Dh/2 pairs (c, c + Dh/2); pair c of the token at position p is turned by
the angle p * inv_freq[c]:

    y[c]        = x[c] cos(p w_c) - x[c + Dh/2] sin(p w_c)
    y[c + Dh/2] = x[c + Dh/2] cos(p w_c) + x[c] sin(p w_c),     w_c = inv_freq[c] = theta^(-2c / Dh)

so q.k depends on positions only through their difference. Matches ``apply_rotary_pos_emb`` and
``LlamaRotaryEmbedding`` (default, "linear" and "llama3" ``rope_scaling``). GGUF files store q and k
rows permuted for the interleaved (GPT-J) layout; the loader undoes that (fdbert.gguf), so one
layout serves both.
"""

import math

import numpy as np

from ..errors import UnsupportedModelError

SUPPORTED_ROPE_SCALING = ("default", "linear", "llama3")


def rope_inv_freq(head_dim, theta, scaling=None):  # -> f32 [Dh/2]
    """w_c = theta^(-2c / Dh), then rescaled as ``scaling`` (HF's ``rope_scaling`` dict) says.

    linear:  w_c / factor                     (position interpolation)
    llama3:  w_c / factor for long wavelengths, w_c for short ones, and between the two a blend
             (1 - s) w_c / factor + s w_c with s = (L_old / lambda_c - low) / (high - low),
             lambda_c = 2 pi / w_c, L_old = original_max_position_embeddings.
    """
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / np.power(np.float32(theta), exponent)).astype(np.float32)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return (inv_freq / np.float32(scaling["factor"])).astype(np.float32)
    if kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        s = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - s) * scaled / factor + s * scaled
        medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise UnsupportedModelError(f"rope_scaling type {kind!r} is not supported; supported: "
                                + ", ".join(SUPPORTED_ROPE_SCALING))


def rope_angles(positions, inv_freq):  # [n] int, [Dh/2] -> cos, sin f32 [n, Dh/2]
    """cos(p w_c), sin(p w_c) for every token's position p, in float32 as HF computes them."""
    angles = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # [n, Dh/2]
    return np.cos(angles), np.sin(angles)


def rope(x, cos, sin):  # [n, H, Dh], [n, Dh/2], [n, Dh/2] -> [n, H, Dh]
    """y = (x1 cos - x2 sin, x2 cos + x1 sin) with x1, x2 the halves of each head's channels."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]             # [n, H, Dh/2] each
    c, s = cos[:, None, :], sin[:, None, :]           # [n, 1, Dh/2]: one angle per token, all heads
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
