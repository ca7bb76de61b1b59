"""fdbert.blocksparse.BSRMatrix: lossless dense <-> BSR, SciPy round trips, validate() on corruption."""

import numpy as np
import pytest
import scipy.sparse
from hypothesis import example, given

from fdbert.blocksparse import BSRMatrix, parse_block
from fdbert.errors import SparseFormatError
from strategies import block_sparse_dense


def count_nonzero_blocks(a, R, C):  # independent loop
    N, K = a.shape
    return sum(bool(np.any(a[i:i + R, j:j + C])) for i in range(0, N, R) for j in range(0, K, C))


@given(block_sparse_dense())
@example((np.zeros((0, 0), np.int8), (1, 4)))
@example((np.full((3, 5), 127, np.int8), (1, 4)))          # K not a multiple of 4: padded column
@example((np.zeros((4, 8), np.float32), (1, 4)))           # 100% sparse
def test_dense_round_trip_is_lossless(case):
    a, block = case
    m = BSRMatrix.from_dense(a, block).validate()
    back = m.to_dense()
    assert back.dtype == a.dtype and back.shape == a.shape
    assert np.array_equal(back, a)
    assert m.nnz_blocks == count_nonzero_blocks(a, *block)
    assert m.nbytes == m.nnz_blocks * block[0] * block[1] * a.dtype.itemsize + 4 * m.nnz_blocks \
        + 4 * (-(-a.shape[0] // block[0]) + 1)
    assert m.dense_nbytes == a.size * a.dtype.itemsize


@given(block_sparse_dense())
def test_scipy_round_trip(case):
    a, (R, C) = case
    m = BSRMatrix.from_dense(a, (R, C))
    s = m.to_scipy()
    assert s.blocksize == (R, C)
    N, K = a.shape
    assert np.array_equal(s.toarray()[:N, :K], a)
    assert not s.toarray()[N:, :].any() and not s.toarray()[:, K:].any()
    back = BSRMatrix.from_scipy(s, shape=a.shape)
    assert np.array_equal(back.to_dense(), a)
    assert np.array_equal(back.indices, m.indices) and np.array_equal(back.indptr, m.indptr)


def test_from_scipy_sorts_and_sums_duplicates():
    # two blocks in row 0 given out of order, one duplicated
    data = np.array([[[1, 2]], [[3, 4]], [[5, 6]]], np.float32)
    s = scipy.sparse.bsr_matrix((data, np.array([2, 0, 2]), np.array([0, 3])), shape=(1, 6))
    m = BSRMatrix.from_scipy(s)
    assert m.to_dense().tolist() == [[3, 4, 0, 0, 6, 8]]
    assert m.indices.tolist() == [0, 2]


def test_from_scipy_rejects_other_formats_and_bad_shapes():
    with pytest.raises(SparseFormatError, match="bsr_matrix"):
        BSRMatrix.from_scipy(scipy.sparse.csr_matrix(np.eye(4, dtype=np.float32)))
    s = scipy.sparse.bsr_matrix(np.ones((4, 8), np.float32), blocksize=(1, 4))
    with pytest.raises(SparseFormatError, match="pad"):
        BSRMatrix.from_scipy(s, shape=(4, 3))


def test_from_scipy_rejects_nonzero_padding_when_cropping():
    s = scipy.sparse.bsr_matrix(np.ones((2, 8), np.float32), blocksize=(1, 4))
    with pytest.raises(SparseFormatError, match="padding columns"):
        BSRMatrix.from_scipy(s, shape=(2, 7))


def test_sparse_int8_is_smaller_than_dense():
    rng = np.random.default_rng(0)
    a = rng.integers(-127, 128, (384, 1536)).astype(np.int8)
    keep = rng.random((384, 384)) < 0.2
    a = np.where(np.repeat(keep, 4, 1), a, 0).astype(np.int8)
    m = BSRMatrix.from_dense(a)
    assert m.density == pytest.approx(0.2, abs=0.01)
    # 4 data bytes + 4 index bytes per kept block: 0.2 * 8/4 = 0.4 of the dense bytes (+ indptr)
    assert m.nbytes < 0.42 * m.dense_nbytes


def good():
    """A 5 x 7 int8 matrix in 2 x 3 blocks: 3 block rows, 3 block columns, padded both ways."""
    a = np.zeros((5, 7), np.int8)
    a[0, 0:3] = 1
    a[1, 6] = 2
    a[2:4, 3] = 3
    a[4, 0] = 4
    return BSRMatrix.from_dense(a, (2, 3))


def test_good_fixture():
    m = good().validate()
    assert m.indptr.tolist() == [0, 2, 3, 4] and m.indices.tolist() == [0, 2, 1, 0]


def _set(field, value):
    def f(m):
        setattr(m, field, value(m) if callable(value) else value)
    return f


def _edit(field, fn):
    def f(m):
        arr = getattr(m, field).copy()
        fn(arr)
        setattr(m, field, arr)
    return f


CORRUPTIONS = {
    "data dtype": (_set("data", lambda m: m.data.astype(np.int16)), "data: expected dtype"),
    "data block shape": (_set("data", lambda m: np.zeros((4, 3, 2), np.int8)), "data: expected shape"),
    "data not an array": (_set("data", [[1]]), "data must be a numpy array"),
    "data not contiguous": (_set("data", lambda m: np.zeros((4, 2, 6), np.int8)[:, :, ::2]),
                            "C-contiguous"),
    "indices dtype": (_set("indices", lambda m: m.indices.astype(np.int64)), "indices: expected a 1-d int32"),
    "indices count": (_set("indices", lambda m: m.indices[:3].copy()), "indices: expected 4 entries"),
    "indices out of range": (_edit("indices", lambda a: a.__setitem__(1, 3)), r"indices must lie in \[0"),
    "negative index": (_edit("indices", lambda a: a.__setitem__(3, -1)), r"indices must lie in \[0"),
    "indices unsorted in a row": (_edit("indices", lambda a: a.__setitem__(slice(0, 2), [2, 0])),
                                  "strictly increasing"),
    "duplicate block": (_edit("indices", lambda a: a.__setitem__(1, 0)), "strictly increasing"),
    "indptr dtype": (_set("indptr", lambda m: m.indptr.astype(np.uint32)), "indptr: expected a 1-d int32"),
    "indptr length": (_set("indptr", lambda m: m.indptr[:-1].copy()), "indptr: expected ceil"),
    "indptr start": (_edit("indptr", lambda a: a.__setitem__(0, 1)), r"indptr\[0\] must be 0"),
    "indptr decreasing": (_edit("indptr", lambda a: a.__setitem__(1, 4)), "non-decreasing"),
    "indptr end": (_edit("indptr", lambda a: a.__setitem__(3, 3)), r"indptr\[-1\] must equal"),
    "padding column": (_edit("data", lambda a: a.__setitem__((1, 0, 2), 9)), "padding columns"),
    "padding row": (_edit("data", lambda a: a.__setitem__((3, 1, 0), 9)), "padding rows"),
    "blocksize zero": (_set("blocksize", (0, 3)), "blocksize must be"),
    "blocksize list": (_set("blocksize", [2, 3]), "blocksize must be"),
    "negative shape": (_set("shape", (-5, 7)), "shape must be"),
    "shape too narrow for indices": (_set("shape", (5, 6)), r"= \[0, 2\), got \[0, 2\]"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_validate_rejects(name):
    corrupt, message = CORRUPTIONS[name]
    m = good()
    corrupt(m)
    with pytest.raises(SparseFormatError, match=message):
        m.validate()


def test_shape_grid_mismatch_with_more_block_rows():
    m = good()
    m.shape = (7, 7)   # 4 block rows, but indptr describes 3
    with pytest.raises(SparseFormatError, match="indptr: expected ceil"):
        m.validate()


def test_parse_block():
    assert parse_block("1x4") == (1, 4) and parse_block("4X1") == (4, 1) and parse_block((2, 1)) == (2, 1)
    for bad in ("1x", "x4", "0x4", "1*4", (1, 0)):
        with pytest.raises(ValueError):
            parse_block(bad)


def test_from_dense_rejects_bad_input():
    with pytest.raises(SparseFormatError, match="dtype"):
        BSRMatrix.from_dense(np.zeros((2, 4), np.float64))
    with pytest.raises(SparseFormatError, match="2-d"):
        BSRMatrix.from_dense(np.zeros(4, np.float32))
