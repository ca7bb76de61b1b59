"""Pointwise nonlinearities and the softmax."""

import numpy as np
from scipy.special import erf

_INV_SQRT2 = np.float32(1.0 / np.sqrt(2.0))


def gelu(x):  # [...] -> [...]
    """y = x/2 * (1 + erf(x / sqrt 2)): the exact GELU of BERT and DistilBERT (torch's default)."""
    return np.float32(0.5) * x * (np.float32(1.0) + erf(x * _INV_SQRT2))


def softmax(x):  # [..., L] -> [..., L]
    """y = exp(x - max x) / sum(exp(x - max x)) over the last axis; subtracting the max avoids overflow."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


_SQRT_2_OVER_PI = np.float32(np.sqrt(2.0 / np.pi))


def gelu_tanh(x):  # [...] -> [...]
    """y = x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): GPT-2's ``gelu_new`` approximation."""
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(_SQRT_2_OVER_PI * (x + np.float32(0.044715) * x * x * x)))


def silu_mul(gate, up):  # [n, F], [n, F] -> [n, F]
    """y = silu(gate) * up = gate / (1 + exp(-gate)) * up: the gated product of Llama's SwiGLU MLP."""
    return gate / (np.float32(1.0) + np.exp(-gate)) * up
