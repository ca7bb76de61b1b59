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
