"""Test data of the INT8 kernel tests (test_native_qgemm*.py): u8 activations, s8 weights with
the value extremes, and the exact int64 oracle."""

import numpy as np


def make_x(rng, M, K, mode):
    """x u8 [M, K]: uniform, extremes (0/255) or all 255."""
    if mode == "max":
        return np.full((M, K), 255, np.uint8)
    if mode == "extreme":
        return rng.choice(np.array([0, 255], np.uint8), size=(M, K))
    return rng.integers(0, 256, (M, K), dtype=np.uint8)


def make_w(rng, N, K, mode, allow_m128=True):
    """w s8 [N, K]: uniform in [-127, 127], extremes (+-127, and -128 where allowed), all 127."""
    if mode == "max":
        return np.full((N, K), 127, np.int8)
    if mode == "min":
        return np.full((N, K), -128 if allow_m128 else -127, np.int8)
    if mode == "extreme":
        vals = [-128, -127, 127] if allow_m128 else [-127, 127]
        return rng.choice(np.array(vals, np.int8), size=(N, K))
    return rng.integers(-127, 128, (N, K), dtype=np.int8)


def exact(x, w):
    """The oracle: int64 product, [M, K] x [N, K] -> [M, N]."""
    return x.astype(np.int64) @ w.astype(np.int64).T
