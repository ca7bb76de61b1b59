"""Affine map, as torch.nn.Linear stores it: weight [N, K] (out, in)."""

import numpy as np


def linear(x, weight, bias=None):  # [n, K], [N, K], [N] -> [n, N]
    """y = x @ W.T + b"""
    y = x @ weight.T
    return y if bias is None else y + bias


def embedding(ids, table):  # [n] int, [V, D] -> [n, D]
    """y[i] = table[ids[i]]"""
    return np.take(table, ids, axis=0)
