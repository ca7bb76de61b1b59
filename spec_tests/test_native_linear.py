"""The native float32 linear (fdbert_native._sgemm, fdbert_native.ops.linear) against float64.

y = x @ W.T + b is checked against ``x.astype(float64) @ W.astype(float64).T + b`` within the
error bound of its arithmetic (below), on every ISA path this machine can run (forced two ways: the
``isa=`` argument of the wrapper, and fdbert_native.disabled_cpu_features for the backend function),
with 1-4 threads, on drawn shapes 1..300 with tails (primes, M = 1, K = 1). The paths and thread
counts must agree BIT FOR BIT: sgemm.h defines one arithmetic (a float32 fma chain over k in order,
then + b) for all of them.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fdbert
import fdbert.ops
import fdbert_native
import native_ext
from fdbert.backend import Declined
from fdbert.errors import BackendError, FdbertError

pytestmark = [pytest.mark.native_only]

_sgemm = native_ext.load("_sgemm")
import fdbert_native.ops as nops  # noqa: E402
from strategies import sgemm_dims  # noqa: E402

# The backend op declines on a CPU without AVX2 + FMA (or with them disabled): NumPy's BLAS beats the
# generic C kernel there. The tests of what it computes or refuses then have nothing to call.
needs_backend_linear = pytest.mark.skipif(
    nops._linear_path() == "reference",
    reason="fdbert_native.ops.linear declines without AVX2 + FMA (test_backend_linear_is_the_kernel_"
           "under_each_forced_path checks that decline)")

# ---- named tolerance ------------------------------------------------------------------------------
# A chain of K float32 fused multiply-adds is within gamma_K * sum_k |x_k w_k| of the exact sum
# (gamma_K = K u / (1 - K u), u = 2^-24: one rounding per step, Higham Thm 3.1); adding the bias
# rounds once more, so |y - exact| <= gamma_{K+1} (sum_k |x_k w_k| + |b|). One more u covers the
# float64 oracle's own rounding (K 2^-53, far below one float32 ulp). A wrong index or a dropped tail
# element is off by ~|x_k w_k|, i.e. ~1/K of the bound's scale times K/u -- never within it.
U32 = 2.0 ** -24


def linear_bound(x, w, b):  # f32 [M, K], [N, K], [N] | None -> f64 [M, N]
    """The elementwise error bound gamma_{K+2} (sum_k |x_k w_k| + |b|)."""
    K = x.shape[1]
    g = (K + 2) * U32 / (1 - (K + 2) * U32)
    mag = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T
    if b is not None:
        mag += np.abs(b.astype(np.float64))
    return g * mag


def exact(x, w, b):  # -> f64 [M, N]
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return y if b is None else y + b.astype(np.float64)


def operands(M, N, K, seed, with_bias, scale=1.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((M, K)) * scale).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    x[rng.random((M, K)) < 0.1] = 0.0       # exact zeros, as after ReLU / padding
    b = rng.standard_normal(N).astype(np.float32) if with_bias else None
    return x, w, b


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(M=sgemm_dims, N=sgemm_dims, K=sgemm_dims, seed=st.integers(0, 2**32 - 1),
       with_bias=st.booleans(), scale=st.sampled_from([1.0, 1e-3, 1e3]))
@example(M=1, N=1, K=1, seed=0, with_bias=True, scale=1.0)
@example(M=1, N=768, K=300, seed=1, with_bias=True, scale=1.0)        # one token
@example(M=300, N=33, K=1, seed=2, with_bias=False, scale=1.0)        # K = 1
@example(M=257, N=97, K=251, seed=3, with_bias=True, scale=1.0)       # primes: every tail at once
@example(M=9, N=17, K=257, seed=4, with_bias=True, scale=1.0)         # KC + 1: two K chunks
@example(M=7, N=31, K=256, seed=5, with_bias=True, scale=1.0)         # exactly one K chunk
def test_linear_within_bound_and_bit_identical_across_paths_and_threads(M, N, K, seed, with_bias,
                                                                        scale):
    x, w, b = operands(M, N, K, seed, with_bias, scale)
    results = {}
    for isa in _sgemm.supported_isas():
        for nt in (1, 2, 3, 4):
            if isa == "generic" and nt > 2 and M * N * K > 10**6:
                continue   # libm fmaf per multiply-add: slow; 1 and 2 threads cover the split
            results[isa, nt] = _sgemm.linear(x, w, b, np.empty((M, N), np.float32), isa=isa,
                                             num_threads=nt)
    packed = _sgemm.PackedWeight(w)       # a weight packed once (decode steps): the same bits
    for isa in ("avx512", "avx2"):
        if _sgemm.isa_supported(isa):
            for nt in (1, 2):
                results[isa + " packed", nt] = _sgemm.linear_packed(
                    x, packed, b, np.empty((M, N), np.float32), isa=isa, num_threads=nt)
    first_key, y = next(iter(results.items()))
    for key, other in results.items():
        assert np.array_equal(y, other), f"{key} differs from {first_key}"
    err = np.abs(y.astype(np.float64) - exact(x, w, b))
    bound = linear_bound(x, w, b)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"


@settings(max_examples=15, deadline=None)
@given(M=st.integers(2, 40), N=st.integers(1, 70), K=st.integers(1, 600), seed=st.integers(0, 2**32 - 1))
def test_a_row_does_not_depend_on_the_other_rows(M, N, K, seed):
    # so a sequence gives the same bits alone and inside a packed batch (unlike OpenBLAS, whose
    # summation order depends on M)
    x, w, b = operands(M, N, K, seed, True)
    y = _sgemm.linear(x, w, b, np.empty((M, N), np.float32))
    for m in (0, M // 2, M - 1):
        alone = _sgemm.linear(np.ascontiguousarray(x[m:m + 1]), w, b, np.empty((1, N), np.float32))
        assert np.array_equal(alone[0], y[m])


@needs_backend_linear
@settings(max_examples=15, deadline=None)
@given(M=st.integers(1, 20), N1=st.integers(1, 70), N2=st.integers(1, 70), K=st.integers(1, 600),
       seed=st.integers(0, 2**32 - 1))
def test_stacked_weights_give_each_part_its_own_bits(M, N1, N2, K, seed):
    # so a decoder's q/k/v (gate/up) projections run as one linear of their stacked rows
    # (fdbert.weights.LlamaLayerWeights.qkv_proj) with the values of the separate ones; M <= 16 runs
    # on the weight packed once, M > 16 on sgemm's per-call packing
    x, w, b = operands(M, N1 + N2, K, seed, True)
    whole = nops.linear(x, w, b)
    for part in (slice(0, N1), slice(N1, N1 + N2)):
        assert np.array_equal(nops.linear(x, np.ascontiguousarray(w[part]), b[part]), whole[:, part])


@needs_backend_linear
def test_empty_shapes():
    w = np.ones((5, 0), np.float32)
    b = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(nops.linear(np.ones((3, 0), np.float32), w, b), np.tile(b, (3, 1)))
    np.testing.assert_array_equal(nops.linear(np.ones((3, 0), np.float32), w), np.zeros((3, 5)))
    assert nops.linear(np.ones((0, 4), np.float32), np.ones((5, 4), np.float32)).shape == (0, 5)
    assert nops.linear(np.ones((2, 4), np.float32), np.ones((0, 4), np.float32)).shape == (2, 0)


@needs_backend_linear
def test_non_finite_values_propagate():
    x = np.array([[1.0, np.inf], [np.nan, 1.0], [1.0, 2.0]], np.float32)
    w = np.array([[1.0, 1.0], [0.0, 1.0]], np.float32)
    with np.errstate(invalid="ignore"):
        want = x @ w.T
    got = nops.linear(x, w)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[np.isfinite(want)], want[np.isfinite(want)])


# ---- the backend op: dispatch, ISA forcing, declines -----------------------------------------------------
def test_backend_linear_is_the_kernel_under_each_forced_path():
    x, w, b = operands(37, 70, 129, 7, True)
    want = _sgemm.linear(x, w, b, np.empty((37, 70), np.float32), isa="generic", num_threads=1)
    for disable, path in (((), "avx512"), (("avx512f",), "avx2"), (("avx2",), "reference")):
        with fdbert_native.disabled_cpu_features(set(disable)):
            expected = path if path == "reference" or _sgemm.isa_supported(path) else None
            if expected is None:
                continue   # this CPU cannot run that path at all
            assert nops.op_paths()["linear"] == expected
            if path == "reference":
                with pytest.raises(Declined, match="AVX2"):
                    nops.linear(x, w, b)
                continue
            with fdbert.set_backend("native", only=True):
                assert np.array_equal(fdbert.ops.linear(x, w, b), want)


@pytest.mark.parametrize("make, reason", [
    (lambda x, w, b: (x.astype(np.float64), w, b), "dtype float64"),
    (lambda x, w, b: (x, w.astype(np.float16), b), "dtype float16"),
    (lambda x, w, b: (x, w, b.astype(np.float64)), "dtype float64"),
    (lambda x, w, b: (np.asfortranarray(x), w, b), "not C-contiguous"),
    (lambda x, w, b: (x, w[:, ::2], b), "not C-contiguous"),
    (lambda x, w, b: (x.reshape(2, 3, 8), w, b), r"must be \[M, K\]"),
    (lambda x, w, b: (x[0], w, b), r"must be \[M, K\]"),
    (lambda x, w, b: (x[:, :7].copy(), w, b), r"must be \[M, K\]"),
    (lambda x, w, b: (x, w, b[:3].copy()), r"bias must be \[5\]"),
    (lambda x, w, b: (x.tolist(), w, b), "not a numpy.ndarray"),
])
@needs_backend_linear
def test_declines(make, reason):
    x, w, b = operands(6, 5, 8, 0, True)
    args = make(x, w, b)
    with pytest.raises(Declined, match=reason):
        nops.linear(*args)
    try:
        with fdbert.set_backend("reference", only=True):
            fdbert.ops.linear(*args)
    except FdbertError as e:   # issue 15: invalid input, refused by fdbert.ops before any backend
        assert not isinstance(e, BackendError)
        with fdbert.set_backend("native", only=True), pytest.raises(type(e)):
            fdbert.ops.linear(*args)
        return
    with fdbert.set_backend("native", only=True), pytest.raises(BackendError):
        fdbert.ops.linear(*args)


def test_wrapper_rejects_bad_arguments():
    x, w, b = operands(4, 3, 5, 0, True)
    out = np.empty((4, 3), np.float32)
    with pytest.raises(TypeError, match="float32"):
        _sgemm.linear(x.astype(np.float64), w, b, out)
    with pytest.raises(ValueError, match="shape"):
        _sgemm.linear(x, w[:, :4].copy(), b, out)
    with pytest.raises(ValueError, match="shape"):
        _sgemm.linear(x, w, b, np.empty((4, 4), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _sgemm.linear(np.asfortranarray(x), w, b, out)
    with pytest.raises(ValueError, match="share memory"):
        buf = np.empty((4, 5), np.float32)
        _sgemm.linear(buf, np.ones((5, 5), np.float32), None, buf)
    with pytest.raises(ValueError, match="isa"):
        _sgemm.linear(x, w, b, out, isa="sse2")
    with fdbert_native.disabled_cpu_features({"avx2"}):
        with pytest.raises(ValueError, match="cannot run"):
            _sgemm.linear(x, w, b, out, isa="avx2")
        assert _sgemm.best_isa() == "generic"


def test_backend_linear_packs_small_m_weights_once():
    """ops.linear at M <= PACKED_MAX_M keeps one packed copy per weight (freed with the weight)."""
    import gc
    import fdbert_native.ops as nops
    if nops._linear_path() not in ("avx512", "avx2"):
        pytest.skip("the packed path needs AVX-512 or AVX2")
    big, w, b = operands(nops.PACKED_MAX_M + 1, 40, 300, 0, True)
    x = np.ascontiguousarray(big[:1])
    before = len(nops._PACKED)
    y_big = nops.linear(big, w, b)                 # more rows than PACKED_MAX_M: nothing kept
    assert len(nops._PACKED) == before
    y = nops.linear(x, w, b)
    assert len(nops._PACKED) == before + 1
    assert np.array_equal(nops.linear(x, w, b), y) and len(nops._PACKED) == before + 1
    assert np.array_equal(y, _sgemm.linear(x, w, b, np.empty((1, 40), np.float32)))
    assert np.array_equal(nops.linear(big, w, b), y_big)   # now on the kept copy: the same bits
    del w
    gc.collect()
    assert len(nops._PACKED) == before
