"""qspmm_f32_multi (several 1x4 sparse weights reading one x, e.g. Q, K and V, in one call) gives each
output bit-identical to qspmm_f32 on that weight alone, and to the exact NumPy contract, on every
ISA path and thread count."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import native_ext

pytestmark = pytest.mark.native_only
q = native_ext.load("_qgemm")
ISAS = q.supported_isas()


def _bsr(rng, N, K, density):
    Kg = -(-K // 4)
    keep = rng.random((N, Kg)) < density
    data = rng.integers(-127, 128, (int(keep.sum()), 1, 4), dtype=np.int8)
    if K % 4:   # bytes past K must be zero
        data[np.nonzero(keep)[1] == Kg - 1, 0, K % 4:] = 0
    indptr = np.zeros(N + 1, np.int32)
    indptr[1:] = np.cumsum(keep.sum(1))
    indices = np.nonzero(keep)[1].astype(np.int32)
    dense = np.zeros((N, Kg * 4), np.int64)
    rows = np.repeat(np.arange(N), keep.sum(1))
    for b, (r, j) in enumerate(zip(rows, indices)):
        dense[r, 4 * j:4 * j + 4] = data[b, 0]
    return q.pack_bsr(data, indices, indptr, (N, K)), dense[:, :K]


@settings(max_examples=40, deadline=None)
@given(M=st.integers(0, 200), K=st.integers(1, 300), Ns=st.lists(st.integers(0, 100), min_size=1, max_size=4),
       density=st.sampled_from([0.0, 0.2, 1.0]), threads=st.integers(1, 4), isa=st.sampled_from(ISAS),
       seed=st.integers(0, 2**31 - 1))
@example(M=128, K=768, Ns=[64, 64, 64], density=0.2, threads=2, isa=ISAS[-1], seed=0)   # Q, K, V-like
@example(M=192, K=67, Ns=[33, 0, 17], density=1.0, threads=2, isa=ISAS[-1], seed=1)     # 3 tiles, 2 threads
def test_multi_equals_single_calls(M, K, Ns, density, threads, isa, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (M, K), dtype=np.uint8)
    ws, dense = zip(*[_bsr(rng, N, K, density) for N in Ns])
    comps = [rng.integers(-1000, 1000, N).astype(np.int32) for N in Ns]
    mults = [rng.random(N).astype(np.float32) * 0.01 for N in Ns]
    biases = [rng.normal(size=N).astype(np.float32) for N in Ns]
    outs = [np.full((M, N), np.nan, np.float32) for N in Ns]
    q.qspmm_f32_multi(x, ws, comps, mults, biases, outs, isa=isa, num_threads=threads)
    for w, d, c, m, b, out in zip(ws, dense, comps, mults, biases, outs):
        single = q.qspmm_f32(x, w, c, m, b, np.empty_like(out), isa=isa, num_threads=1)
        np.testing.assert_array_equal(out, single)
        acc = (x.astype(np.int64) @ d.T).astype(np.int32)
        expect = (acc - c).astype(np.float32) * m + b
        np.testing.assert_array_equal(out, expect)


def test_multi_rejects_mismatched_arguments():
    rng = np.random.default_rng(0)
    w, _ = _bsr(rng, 8, 12, 0.5)
    w2, _ = _bsr(rng, 8, 16, 0.5)
    x = rng.integers(0, 256, (4, 12), dtype=np.uint8)
    ep = (np.zeros(8, np.int32), np.ones(8, np.float32), np.zeros(8, np.float32))
    with pytest.raises(ValueError, match="K = 16"):
        q.qspmm_f32_multi(x, [w, w2], [ep[0]] * 2, [ep[1]] * 2, [ep[2]] * 2,
                          [np.empty((4, 8), np.float32)] * 2)
    with pytest.raises(ValueError, match="1..8 weights"):
        q.qspmm_f32_multi(x, [w] * 9, [ep[0]] * 9, [ep[1]] * 9, [ep[2]] * 9,
                          [np.empty((4, 8), np.float32)] * 9)
    with pytest.raises(ValueError, match="1..8 weights"):
        q.qspmm_f32_multi(x, [w, w], [ep[0]], [ep[1]] * 2, [ep[2]] * 2, [np.empty((4, 8), np.float32)] * 2)
