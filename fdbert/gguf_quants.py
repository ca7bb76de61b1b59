"""Dequantization of GGUF (ggml) tensor formats: readable NumPy, one function per block format.

A quantized tensor is a sequence of blocks of QK = 32 consecutive weights of a row; each block holds
its float16 scale d (and minimum m) followed by the codes. Equations, for the j-th weight of a block:

    Q8_0  [d f16][q s8 x 32]             34 bytes   x_j = d q_j
    Q4_0  [d f16][qs u8 x 16]            18 bytes   x_j = d (q_j - 8),   q_j = qs_j & 15, q_{j+16} = qs_j >> 4
    Q4_1  [d f16][m f16][qs u8 x 16]     20 bytes   x_j = d q_j + m,     q_j as in Q4_0 (j < 16)
    F16   IEEE half                       2 bytes   x = float(h)
    BF16  bfloat16                        2 bytes   x = float32 whose upper 16 bits are b
    F32                                   4 bytes   x

Matches ggml's ``dequantize_row_q8_0`` / ``_q4_0`` / ``_q4_1`` (ggml-quants.c): low nibbles are the
first 16 weights of a block, high nibbles the last 16; d q_j is computed in float32.
"""

from __future__ import annotations

import numpy as np

QK = 32  # weights per block of the 4- and 8-bit formats

#: format name -> (block bytes, weights per block); the size assertion of each block struct
BLOCK = {"F32": (4, 1), "F16": (2, 1), "BF16": (2, 1), "Q8_0": (2 + QK, QK), "Q4_0": (2 + QK // 2, QK),
         "Q4_1": (4 + QK // 2, QK)}


def _bytes(raw):  # bytes or any array -> u8 [nbytes]
    return np.frombuffer(raw, np.uint8) if isinstance(raw, (bytes, bytearray)) else \
        np.ascontiguousarray(raw).reshape(-1).view(np.uint8)


def _blocks(raw, fmt):  # -> u8 [n_blocks, block bytes]
    return _bytes(raw).reshape(-1, BLOCK[fmt][0])


def _f16(b, at):  # u8 [n, size] -> f32 [n, 1]: the float16 at byte offset `at` of each block
    return b[:, at:at + 2].copy().view(np.float16).astype(np.float32)


def _nibbles(qs):  # u8 [n, 16] -> u8 [n, 32]: low nibbles first, then high nibbles
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def dequantize_q8_0(raw):  # -> f32 [n_blocks * 32]
    """x_j = d q_j"""
    b = _blocks(raw, "Q8_0")
    return (_f16(b, 0) * b[:, 2:].view(np.int8).astype(np.float32)).reshape(-1)


def dequantize_q4_0(raw):  # -> f32 [n_blocks * 32]
    """x_j = d (q_j - 8)"""
    b = _blocks(raw, "Q4_0")
    q = _nibbles(b[:, 2:]).astype(np.int8) - np.int8(8)
    return (_f16(b, 0) * q.astype(np.float32)).reshape(-1)


def dequantize_q4_1(raw):  # -> f32 [n_blocks * 32]
    """x_j = d q_j + m"""
    b = _blocks(raw, "Q4_1")
    return (_f16(b, 0) * _nibbles(b[:, 4:]).astype(np.float32) + _f16(b, 2)).reshape(-1)


def dequantize_f16(raw):
    """x = float(h)"""
    return _bytes(raw).view(np.float16).astype(np.float32)


def dequantize_bf16(raw):
    """x = the float32 whose upper 16 bits are b (bfloat16 is float32 cut to 16 bits)"""
    b = _bytes(raw).view(np.uint16)
    return (b.astype(np.uint32) << 16).view(np.float32)


def dequantize_f32(raw):
    return _bytes(raw).view(np.float32).copy()


DEQUANTIZE = {"F32": dequantize_f32, "F16": dequantize_f16, "BF16": dequantize_bf16,
              "Q8_0": dequantize_q8_0, "Q4_0": dequantize_q4_0, "Q4_1": dequantize_q4_1}


def dequantize(raw, fmt: str, shape) -> np.ndarray:
    """The float32 tensor of ``shape`` (row-major, numpy order) stored as ``raw`` bytes in ``fmt``."""
    n = int(np.prod(shape))
    size, per = BLOCK[fmt]
    nbytes = len(_bytes(raw))
    if nbytes != n // per * size or n % per:
        raise ValueError(f"{fmt} tensor of shape {tuple(shape)} needs {n // per * size} bytes, got "
                         f"{nbytes}")
    return DEQUANTIZE[fmt](raw).reshape(shape)
