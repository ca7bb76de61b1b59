"""Block-sparse weights in SciPy's BSR vocabulary: ``data``, ``indices``, ``indptr``, ``blocksize``.

A matrix W [N, K] is cut into blocks of R x C (``blocksize``); only the blocks that hold a nonzero are
stored. Block row r (output channels ``r*R .. r*R+R-1``) owns the stored blocks
``indptr[r] .. indptr[r+1]-1``; block b sits at block column ``indices[b]`` (input channels
``indices[b]*C .. +C-1``) and holds the values ``data[b]`` [R, C].

    data     int8 or float32 [nnzb, R, C]
    indices  int32 [nnzb]             block-column index, strictly increasing within a block row
    indptr   int32 [ceil(N/R) + 1]    indptr[0] = 0, non-decreasing, indptr[-1] = nnzb
    shape    (N, K)                   the logical shape; N and K need not be multiples of R and C

When K (or N) is not a multiple of C (or R), the last block column (row) is zero-padded in storage;
kernels must never read x beyond K. The default block is 1 x 4: one output channel times four
consecutive input channels, the four u8*s8 products one ``vpdpbusd`` lane sums (Fast DistilBERT,
sec. 3.1). An int8 matrix stores the weight codes; its per-output-channel scales live with the layer
(:class:`fdbert.weights.QuantizedLinear`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SparseFormatError

DEFAULT_BLOCK = (1, 4)
DTYPES = (np.dtype(np.int8), np.dtype(np.float32))


def _cdiv(a, b):
    return -(-a // b)


@dataclass(eq=False)
class BSRMatrix:
    data: np.ndarray        # int8 | float32 [nnzb, R, C]
    indices: np.ndarray     # int32 [nnzb]
    indptr: np.ndarray      # int32 [ceil(N/R) + 1]
    blocksize: tuple        # (R, C)
    shape: tuple            # (N, K), logical

    # ---- properties ----------------------------------------------------------------------------
    @property
    def dtype(self):
        return self.data.dtype

    @property
    def nnz_blocks(self) -> int:
        return int(self.data.shape[0])

    @property
    def grid(self):  # (ceil(N/R), ceil(K/C)): the block rows and block columns
        (N, K), (R, C) = self.shape, self.blocksize
        return _cdiv(N, R), _cdiv(K, C)

    @property
    def density(self) -> float:
        """stored blocks / all blocks (1.0 for an empty matrix)."""
        total = self.grid[0] * self.grid[1]
        return self.nnz_blocks / total if total else 1.0

    @property
    def nbytes(self) -> int:
        """bytes of data + indices + indptr."""
        return int(self.data.nbytes + self.indices.nbytes + self.indptr.nbytes)

    @property
    def dense_nbytes(self) -> int:
        """bytes of the same matrix stored dense, [N, K] of the same dtype."""
        return int(self.shape[0] * self.shape[1] * self.data.dtype.itemsize)

    def __repr__(self):
        return (f"BSRMatrix(shape={self.shape}, blocksize={self.blocksize}, dtype={self.dtype}, "
                f"nnz_blocks={self.nnz_blocks}, density={self.density:.3f})")

    # ---- checks --------------------------------------------------------------------------------
    def validate(self) -> "BSRMatrix":
        """Raise :class:`SparseFormatError` naming the first malformed field; return self if valid."""
        bs, shape = self.blocksize, self.shape
        if not (isinstance(bs, tuple) and len(bs) == 2 and all(_is_int(v) and v > 0 for v in bs)):
            raise SparseFormatError(f"blocksize must be a tuple of two positive ints (R, C), got {bs!r}")
        if not (isinstance(shape, tuple) and len(shape) == 2 and all(_is_int(v) and v >= 0 for v in shape)):
            raise SparseFormatError(f"shape must be a tuple of two non-negative ints (N, K), got {shape!r}")
        R, C = bs
        n_brows, n_bcols = self.grid
        for name in ("data", "indices", "indptr"):
            a = getattr(self, name)
            if not isinstance(a, np.ndarray):
                raise SparseFormatError(f"{name} must be a numpy array, got {type(a).__name__}")
            if not a.flags.c_contiguous:
                raise SparseFormatError(f"{name} must be C-contiguous")
        data, indices, indptr = self.data, self.indices, self.indptr
        if data.dtype not in DTYPES:
            raise SparseFormatError(f"data: expected dtype int8 or float32, got {data.dtype}")
        if data.ndim != 3 or data.shape[1:] != (R, C):
            raise SparseFormatError(f"data: expected shape (nnzb, {R}, {C}), got {data.shape}")
        if indices.dtype != np.int32 or indices.ndim != 1:
            raise SparseFormatError(f"indices: expected a 1-d int32 array, got {indices.ndim}-d {indices.dtype}")
        if indptr.dtype != np.int32 or indptr.ndim != 1:
            raise SparseFormatError(f"indptr: expected a 1-d int32 array, got {indptr.ndim}-d {indptr.dtype}")
        nnzb = data.shape[0]
        if len(indices) != nnzb:
            raise SparseFormatError(f"indices: expected {nnzb} entries (one per block of data), got {len(indices)}")
        if len(indptr) != n_brows + 1:
            raise SparseFormatError(f"indptr: expected ceil(N/R) + 1 = {n_brows + 1} entries, got {len(indptr)}")
        if indptr[0] != 0:
            raise SparseFormatError(f"indptr[0] must be 0, got {indptr[0]}")
        if np.any(np.diff(indptr) < 0):
            raise SparseFormatError("indptr must be non-decreasing")
        if indptr[-1] != nnzb:
            raise SparseFormatError(f"indptr[-1] must equal the number of blocks {nnzb}, got {indptr[-1]}")
        if nnzb and (indices.min() < 0 or indices.max() >= n_bcols):
            raise SparseFormatError(f"indices must lie in [0, ceil(K/C)) = [0, {n_bcols}), got "
                                    f"[{indices.min()}, {indices.max()}]")
        row_start = np.zeros(nnzb, bool)
        row_start[indptr[:-1][np.diff(indptr) > 0]] = True
        if nnzb > 1 and np.any((np.diff(indices) <= 0) & ~row_start[1:]):
            raise SparseFormatError("indices must be strictly increasing within each block row "
                                    "(sorted, no duplicate blocks)")
        self._validate_padding()
        return self

    def _validate_padding(self):
        """The storage padding beyond N rows / K columns must hold zeros."""
        (N, K), (R, C) = self.shape, self.blocksize
        n_brows, n_bcols = self.grid
        if K % C and self.nnz_blocks:
            last = self.indices == n_bcols - 1
            if np.any(self.data[last][:, :, K % C:]):
                raise SparseFormatError(f"padding columns beyond K={K} in the last block column must be zero")
        if N % R and self.nnz_blocks:
            b0, b1 = self.indptr[n_brows - 1], self.indptr[n_brows]
            if np.any(self.data[b0:b1, N % R:, :]):
                raise SparseFormatError(f"padding rows beyond N={N} in the last block row must be zero")

    # ---- conversions ---------------------------------------------------------------------------
    @classmethod
    def from_dense(cls, a, blocksize=DEFAULT_BLOCK) -> "BSRMatrix":  # [N, K] -> BSR
        """Store every R x C block of ``a`` that holds a nonzero (lossless; all-zero blocks dropped)."""
        a = np.asarray(a)
        if a.dtype not in DTYPES:
            raise SparseFormatError(f"from_dense: expected dtype int8 or float32, got {a.dtype}")
        if a.ndim != 2:
            raise SparseFormatError(f"from_dense: expected a 2-d array, got shape {a.shape}")
        R, C = blocksize = (int(blocksize[0]), int(blocksize[1]))
        if R <= 0 or C <= 0:
            raise SparseFormatError(f"blocksize must be positive, got {blocksize}")
        N, K = a.shape
        n_brows, n_bcols = _cdiv(N, R), _cdiv(K, C)
        padded = np.zeros((n_brows * R, n_bcols * C), a.dtype)
        padded[:N, :K] = a
        blocks = padded.reshape(n_brows, R, n_bcols, C).transpose(0, 2, 1, 3)  # [Nb, R, Kb, C] -> [Nb, Kb, R, C]
        keep = blocks.any(axis=(2, 3))                                          # [Nb, Kb]
        brow, bcol = np.nonzero(keep)                                           # row-major: sorted
        indptr = np.zeros(n_brows + 1, np.int32)
        np.cumsum(keep.sum(axis=1), out=indptr[1:])
        return cls(np.ascontiguousarray(blocks[brow, bcol]), bcol.astype(np.int32), indptr,
                   blocksize, (N, K))

    def to_dense(self) -> np.ndarray:  # BSR -> [N, K]
        """The dense matrix, zeros where no block is stored."""
        (N, K), (R, C) = self.shape, self.blocksize
        n_brows, n_bcols = self.grid
        blocks = np.zeros((n_brows, n_bcols, R, C), self.data.dtype)            # [Nb, Kb, R, C]
        brow = np.repeat(np.arange(n_brows), np.diff(self.indptr))
        blocks[brow, self.indices] = self.data
        dense = blocks.transpose(0, 2, 1, 3).reshape(n_brows * R, n_bcols * C)  # -> [Nb, R, Kb, C] -> [Np, Kp]
        return np.ascontiguousarray(dense[:N, :K])

    def to_scipy(self):
        """A ``scipy.sparse.bsr_matrix`` sharing nothing with self. Its shape is the padded shape
        (ceil(N/R)*R, ceil(K/C)*C), since SciPy needs multiples of the block size; pass
        ``shape=self.shape`` to :meth:`from_scipy` to get the logical shape back."""
        import scipy.sparse
        n_brows, n_bcols = self.grid
        R, C = self.blocksize
        return scipy.sparse.bsr_matrix((self.data.copy(), self.indices.copy(), self.indptr.copy()),
                                       shape=(n_brows * R, n_bcols * C), blocksize=(R, C))

    @classmethod
    def from_scipy(cls, m, shape=None) -> "BSRMatrix":
        """From a ``scipy.sparse.bsr_matrix`` (duplicates summed, indices sorted); ``shape`` crops
        to a logical shape (the entries outside it must be zero)."""
        import scipy.sparse
        if not scipy.sparse.issparse(m) or m.format != "bsr":
            raise SparseFormatError(f"from_scipy: expected a scipy.sparse bsr_matrix, got {type(m).__name__}")
        m = m.copy()
        m.sum_duplicates()  # also sorts indices
        R, C = m.blocksize
        shape = tuple(int(v) for v in (m.shape if shape is None else shape))
        if _cdiv(shape[0], R) * R != m.shape[0] or _cdiv(shape[1], C) * C != m.shape[1]:
            raise SparseFormatError(f"from_scipy: logical shape {shape} does not pad to the matrix's "
                                    f"shape {m.shape} with blocks {(R, C)}")
        out = cls(np.ascontiguousarray(m.data), m.indices.astype(np.int32), m.indptr.astype(np.int32),
                  (int(R), int(C)), shape)
        return out.validate()


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def parse_block(spec) -> tuple:
    """'1x4' or (1, 4) -> (1, 4)."""
    if isinstance(spec, str):
        parts = spec.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"block must look like '1x4', got {spec!r}")
        spec = tuple(int(p) for p in parts)
    R, C = (int(spec[0]), int(spec[1]))
    if R <= 0 or C <= 0:
        raise ValueError(f"block sizes must be positive, got {spec!r}")
    return R, C


__all__ = ["BSRMatrix", "DEFAULT_BLOCK", "parse_block"]
