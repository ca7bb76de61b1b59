"""Native INT8 dense GEMM / 1x4 block-sparse SpMM (fdbert_native._qgemm) against NumPy oracles.

Integer accumulators are compared EXACTLY with the int64 NumPy product, on every ISA path this
CPU supports (the others are skipped with a reason), for drawn shapes, sparsities, value
extremes and thread counts. The fused epilogue is compared with `epilogue_ref` below, a direct
NumPy transcription of the INT8 contract (docs/int8.md section 5, csrc/qgemm.h):

    y = float32(acc - comp) * mult + bias; [gelu]; [+ residual]; f32 | u8(clip(rint(y/s) + zp))

Tolerances (named in tolerances.py, with reasons):
  * no GELU: float32 outputs bit-identical, u8 outputs exact -- every step is one IEEE float32
    operation in the same order in C and NumPy (built with -ffp-contract=off: no FMA).
  * GELU, float32: |got - ref| <= GELU_F32_ULPS ulp(ref) + GELU_ERF_ATOL * |y_before_gelu|.
    The native erf (csrc/fp32_vecmath.h, the only one, a piecewise polynomial evaluated in double)
    is correctly rounded to float32 except within ~1e-15 of a rounding tie, and scipy.special.erf
    (float32 in, double inside) likewise, so the two may differ by 1 ulp of erf on rare inputs;
    GELU_ERF_ATOL is what that ulp becomes in GELU, and a residual add can then round once more.
    test_gelu_erf_is_correctly_rounded checks the erf itself more tightly.
  * GELU, u8: |got - ref| <= GELU_U8_ATOL = 1, only where that erf ulp moves y/scale across a .5
    boundary.
"""
import functools

import numpy as np
import pytest
import scipy.sparse
from hypothesis import HealthCheck, example, given, settings
from scipy.special import erf

import fdbert_native
import native_ext
from int8_data import exact, make_w, make_x
from strategies import epilogue_cases, qgemm_cases
from tolerances import GELU_ERF_ATOL, GELU_F32_ULPS, GELU_U8_ATOL

pytestmark = pytest.mark.native_only
q = native_ext.load("_qgemm")

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ISA_PARAMS = [pytest.param(isa, marks=pytest.mark.skipif(
    not q.isa_supported(isa), reason=f"CPU lacks {isa}")) for isa in q.ISAS]


# ---------------------------------------------------------------------------- data

def make_bsr(rng, w, density, empty_rows):
    """Zero 1x4 blocks of w with P(keep) = density, empty `empty_rows` rows -> (w_masked, bsr)."""
    N, K = w.shape
    Kp = -(-K // 4) * 4
    wp = np.zeros((N, Kp), np.int8)               # [N, Kp]: zero-padded last block column
    wp[:, :K] = w
    keep = rng.random((N, Kp // 4)) < density      # [N, Kg]
    keep[:empty_rows] = False
    wp = (wp.reshape(N, Kp // 4, 4) * keep[:, :, None]).reshape(N, Kp)   # [N, Kg, 4] -> [N, Kp]
    bsr = scipy.sparse.bsr_matrix(wp, blocksize=(1, 4))
    bsr.sort_indices()
    return wp[:, :K], bsr


HARD = [  # @example for each hard case
    dict(M=1, N=1, K=1, xmode="max", wmode="max", density=1.0, empty_rows=0, threads=1, seed=0),
    dict(M=7, N=17, K=3, xmode="max", wmode="min", density=1.0, empty_rows=0, threads=2, seed=1),
    dict(M=300, N=300, K=300, xmode="max", wmode="max", density=1.0, empty_rows=0, threads=4,
         seed=2),                                     # largest sums: 300*255*127
    dict(M=131, N=65, K=293, xmode="max", wmode="min", density=0.9, empty_rows=3, threads=3,
         seed=3),                                     # -128 * 255 everywhere, K % 4 == 1
    dict(M=17, N=33, K=67, xmode="extreme", wmode="extreme", density=0.0, empty_rows=0,
         threads=2, seed=4),                          # all rows empty
    dict(M=65, N=16, K=64, xmode="uniform", wmode="uniform", density=1.0, empty_rows=16,
         threads=1, seed=5),                          # full density but every row empty
]


# ---------------------------------------------------------------------------- packing

def test_pack_dense_layout():
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (37, 11), dtype=np.int8)   # N = 16*2 + 5, K = 4*2 + 3
    packed, colsum = q.pack_dense(w)
    assert packed.shape == (3, 3, 16, 4) and packed.dtype == np.int8
    wp = np.zeros((48, 12), np.int8)
    wp[:37, :11] = w
    # packed[b, g, c, i] = W[16b + c, 4g + i]
    np.testing.assert_array_equal(packed, wp.reshape(3, 16, 3, 4).transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(colsum, w.astype(np.int64).sum(axis=1))


def test_pack_bsr_roundtrip_and_validation():
    rng = np.random.default_rng(1)
    w, bsr = make_bsr(rng, make_w(rng, 20, 10, "uniform"), 0.5, 2)
    data, indices, indptr = bsr.data, bsr.indices, bsr.indptr
    p = q.pack_bsr(data, indices, indptr, (20, 10))
    np.testing.assert_array_equal(p.colsum, w.astype(np.int64).sum(axis=1))
    # the block stream holds exactly the BSR blocks (plus zero padding), channel by channel
    S = (p.cptr.size - 1) // 20
    back = np.zeros((20, 12), np.int8)
    for n in range(20):
        for j, wbytes in p.blk[p.cptr[n * S]:p.cptr[n * S + S - 1]]:
            back[n, 4 * j:4 * j + 4] += np.array([wbytes], np.int32).view(np.int8)
    np.testing.assert_array_equal(back[:, :10], w)
    with pytest.raises(ValueError):
        p.blk[0, 0] = 5                                    # read-only: validated once
    bad = indices.copy()
    bad[0] = 3                                             # ceil(10/4) = 3 block columns: 0..2
    with pytest.raises(ValueError, match="invalid BSR"):
        q.pack_bsr(data, bad, indptr, (20, 10))
    padded = data.copy()
    padded[indices == 2, 0, 3] = 1                         # a byte past K = 10
    if np.any(indices == 2):
        with pytest.raises(ValueError, match="past K"):
            q.pack_bsr(padded, indices, indptr, (20, 10))


# ---------------------------------------------------------------------------- accumulators

def _check_case(isa, c, sparse):
    rng = np.random.default_rng(c["seed"])
    x = make_x(rng, c["M"], c["K"], c["xmode"])
    w = make_w(rng, c["N"], c["K"], c["wmode"])
    out = np.full((c["M"], c["N"]), -1, np.int32)
    if sparse:
        w, bsr = make_bsr(rng, w, c["density"], c["empty_rows"])
        packed = q.pack_bsr(bsr.data, bsr.indices, bsr.indptr, w.shape)
        q.qspmm_s32(x, packed, out, isa=isa, num_threads=c["threads"])
    else:
        packed, _ = q.pack_dense(w)
        q.qgemm_s32(x, packed, out, isa=isa, num_threads=c["threads"])
    np.testing.assert_array_equal(out, exact(x, w))


@pytest.mark.parametrize("sparse", [False, True], ids=["qgemm", "qspmm"])
@pytest.mark.parametrize("isa", ISA_PARAMS)
@SETTINGS
@given(c=qgemm_cases())
@example(c=HARD[0])
@example(c=HARD[1])
@example(c=HARD[2])
@example(c=HARD[3])
@example(c=HARD[4])
@example(c=HARD[5])
def test_s32_exact(isa, sparse, c):
    _check_case(isa, c, sparse=sparse)


@functools.lru_cache(maxsize=None)
def _large_case(M, N, K):
    """DistilBERT-sized operands (80%-sparse copy too) and their exact products, built once."""
    rng = np.random.default_rng(M * N + K)
    x = rng.integers(0, 256, (M, K), dtype=np.uint8)
    w = rng.integers(-128, 128, (N, K), dtype=np.int8)
    ws, bsr = make_bsr(rng, w, 0.2, 5)
    return x, w, exact(x, w), q.pack_bsr(bsr.data, bsr.indices, bsr.indptr, ws.shape), exact(x, ws)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("shape", [(128, 768, 768), (67, 3072, 768), (70, 768, 3072), (300, 257, 293)])
def test_large_shapes_exact(isa, shape):
    """The drawn cases are mostly small; these cover full multi-chunk blocking on every path."""
    x, w, ref, bsr, ref_sparse = _large_case(*shape)
    out = np.empty(ref.shape, np.int32)
    q.qgemm_s32(x, q.pack_dense(w)[0], out, isa=isa, num_threads=2)
    np.testing.assert_array_equal(out, ref)
    q.qspmm_s32(x, bsr, out, isa=isa, num_threads=2)
    np.testing.assert_array_equal(out, ref_sparse)


# ---------------------------------------------------------------------------- epilogue

def gelu_ref(y):
    """GELU in float32 as fdbert.reference: (0.5 * y) * (1 + erf(y * float32(1 / sqrt 2)))."""
    return (np.float32(0.5) * y) * (np.float32(1.0) + erf(y * np.float32(1 / np.sqrt(2))).astype(np.float32))


def epilogue_ref(acc, comp, mult, bias, gelu, residual):
    """The contract's float32 epilogue up to (not including) requantization -> (y, y_before_gelu)."""
    y = (acc - np.asarray(comp, np.int32)).astype(np.float32) * mult   # float32(acc - comp[n]) * mult[n], int32
    if bias is not None:
        y = y + bias
    pre = y
    if gelu:
        y = gelu_ref(y)
    if residual is not None:
        y = y + residual
    return y, pre


def requant_ref(y, scale, zp):
    """u8(clip(rint(y / scale) + zp, 0, 255)), float32 throughout (np.rint: half to even)."""
    return np.clip(np.rint(y / np.float32(scale)) + np.float32(zp), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@settings(max_examples=80, deadline=None)
@given(c=epilogue_cases())
@example(c=dict(M=17, N=17, K=67, gelu=True, bias=True, residual=True, sparse=False, out="u8",
                threads=2, seed=0))
@example(c=dict(M=16, N=40, K=5, gelu=False, bias=True, residual=True, sparse=True, out="u8",
                threads=1, seed=1))
def test_epilogue_matches_contract(isa, c):
    rng = np.random.default_rng(c["seed"])
    M, N, K = c["M"], c["N"], c["K"]
    x = rng.integers(0, 256, (M, K), dtype=np.uint8)
    w = make_w(rng, N, K, "uniform", allow_m128=False)
    x_zp = int(rng.integers(0, 256))
    x_scale = np.float32(rng.uniform(0.001, 0.1))
    w_scale = (rng.uniform(0.5, 1.5, N) / 127).astype(np.float32)
    mult = (x_scale * w_scale).astype(np.float32)           # float32(x_scale * w_scale[n])
    bias = rng.normal(0, 1, N).astype(np.float32) if c["bias"] else None
    residual = rng.normal(0, 1, (M, N)).astype(np.float32) if c["residual"] else None
    if c["sparse"]:
        w, bsr = make_bsr(rng, w, 0.3, 1)
        packed = q.pack_bsr(bsr.data, bsr.indices, bsr.indptr, w.shape)
        colsum = packed.colsum
    else:
        packed, colsum = q.pack_dense(w)
    comp = (x_zp * colsum).astype(np.int32)                  # comp[n] = x_zp * sum_k w[n, k]
    y, pre = epilogue_ref(exact(x, w), comp, mult, bias, c["gelu"], residual)
    kw = dict(residual=residual, gelu=c["gelu"], isa=isa, num_threads=c["threads"])
    if c["out"] == "f32":
        out = np.empty((M, N), np.float32)
    else:
        out_scale, out_zp = np.float32(np.abs(y).max() / 100 + 1e-3), int(rng.integers(0, 256))
        out = np.empty((M, N), np.uint8)
        kw = dict(out_scale=out_scale, out_zp=out_zp, **kw)
    if c["sparse"]:
        fn = q.qspmm_f32 if c["out"] == "f32" else q.qspmm_u8
        fn(x, packed, comp, mult, bias, out=out, **kw)
    else:
        fn = q.qgemm_f32 if c["out"] == "f32" else q.qgemm_u8
        fn(x, packed, comp, mult, bias, out=out, **kw)

    if c["out"] == "f32":
        if c["gelu"]:
            tol = GELU_F32_ULPS * np.spacing(np.abs(y)) + GELU_ERF_ATOL * np.abs(pre)
            assert np.all(np.abs(out - y) <= tol), np.max(np.abs(out - y) - tol)
        else:
            np.testing.assert_array_equal(out, y)
    else:
        ref = requant_ref(y, out_scale, out_zp)
        if c["gelu"]:
            assert np.max(np.abs(out.astype(int) - ref.astype(int))) <= GELU_U8_ATOL
        else:
            np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_gelu_erf_is_correctly_rounded(isa):
    """With mult = 0 the epilogue computes gelu(bias): compare it with the float32 NumPy GELU.

    At most 1 ulp apart, and bit-identical on all but a tiny fraction (both erfs are correctly
    rounded except near ties); covers the |x| > 4 clamp, tiny and negative inputs.
    """
    rng = np.random.default_rng(7)
    y = np.concatenate([np.linspace(-12, 12, 4001), rng.normal(0, 3, 6000), [0.0, -0.0, 1e-30, -1e-30,
                        5.656854, -5.656854, 5.6568546, 3.4028235e38, -3.4028235e38]]).astype(np.float32)
    N = y.size
    x = np.zeros((1, 1), np.uint8)
    packed, _ = q.pack_dense(np.zeros((N, 1), np.int8))
    out = np.empty((1, N), np.float32)
    q.qgemm_f32(x, packed, np.zeros(N, np.int32), np.zeros(N, np.float32), y, out, gelu=True, isa=isa)
    with np.errstate(over="ignore", invalid="ignore"):   # y = 0 * 0 + bias: -0.0 becomes +0.0
        ref, _ = epilogue_ref(np.zeros((1, N), np.int32), 0, np.float32(0), y, True, None)
        ref = ref[0]
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(out[0, ~finite], ref[~finite])    # +-inf*... as numpy does
    ulps = np.abs(out[0, finite].view(np.int32).astype(np.int64) - ref[finite].view(np.int32))
    assert ulps.max() <= 1 and np.count_nonzero(ulps) <= N // 1000, (ulps.max(), np.count_nonzero(ulps))


@settings(max_examples=10, deadline=None)
@given(c=epilogue_cases())
def test_epilogue_bits_identical_across_isas_and_threads(c):
    """Every ISA path and thread count gives the same float32 bits, GELU included (same FMAs)."""
    rng = np.random.default_rng(c["seed"])
    M, N, K = c["M"], c["N"], c["K"]
    x = rng.integers(0, 256, (M, K), dtype=np.uint8)
    w = make_w(rng, N, K, "uniform", allow_m128=False)
    packed, colsum = q.pack_dense(w)
    comp = (int(rng.integers(0, 256)) * colsum).astype(np.int32)
    mult = rng.uniform(1e-5, 1e-3, N).astype(np.float32)
    bias = rng.normal(0, 1, N).astype(np.float32)
    residual = rng.normal(0, 1, (M, N)).astype(np.float32) if c["residual"] else None
    outs = []
    for isa in q.supported_isas():
        for threads in (1, 3):
            out = np.empty((M, N), np.float32)
            q.qgemm_f32(x, packed, comp, mult, bias, out, residual=residual, gelu=True, isa=isa,
                        num_threads=threads)
            outs.append(out.view(np.int32))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_requant_rounds_half_to_even():
    """y / scale landing exactly on .5 rounds to even (np.rint, cvtps2dq), not away (roundf)."""
    x = np.ones((1, 1), np.uint8)
    packed, _ = q.pack_dense(np.ones((32, 1), np.int8))
    for isa in q.supported_isas():
        comp = np.zeros(32, np.int32)
        mult = np.ones(32, np.float32)
        bias = np.array([0.5, 1.5, -1.5, -0.5] * 8, np.float32) - 1   # acc = 1: y = 0.5, 1.5, ...
        mult[4:] = 0
        out = np.empty((1, 32), np.uint8)
        q.qgemm_u8(x, packed, comp, mult, bias, 1.0, 3, out, isa=isa)
        np.testing.assert_array_equal(out[0, :4], [3, 5, 1, 3])      # rint(y) + 3


# ---------------------------------------------------------------------------- API edge

def test_errors_name_expected_and_actual():
    x = np.zeros((4, 8), np.uint8)
    packed, _ = q.pack_dense(np.zeros((16, 8), np.int8))
    out = np.zeros((4, 16), np.int32)
    with pytest.raises(TypeError, match="x must have dtype uint8, got int8"):
        q.qgemm_s32(x.view(np.int8), packed, out)
    with pytest.raises(TypeError, match="out must have dtype int32, got float32"):
        q.qgemm_s32(x, packed, out.astype(np.float32))
    with pytest.raises(ValueError, match="packed must have shape"):
        q.qgemm_s32(x, packed, np.zeros((4, 17), np.int32))
    with pytest.raises(ValueError, match="C-contiguous"):
        q.qgemm_s32(np.zeros((8, 4), np.uint8).T, packed, out)
    with pytest.raises(ValueError, match="isa must be"):
        q.qgemm_s32(x, packed, out, isa="sse9")
    with pytest.raises(TypeError, match="w must have dtype int8"):
        q.pack_dense(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="invalid BSR"):           # indptr must end at nnz = 1
        q.pack_bsr(np.zeros((1, 4), np.int8), np.zeros(1, np.int32), np.array([0, 0, 5], np.int32),
                   (2, 8))
    with pytest.raises(TypeError, match="PackedBSR"):
        q.qspmm_s32(x, packed, np.zeros((4, 16), np.int32))
    with pytest.raises(ValueError, match="x must have shape"):
        q.qspmm_s32(x[:, :4].copy(), q.pack_bsr(np.zeros((0, 4), np.int8), np.zeros(0, np.int32),
                                                np.zeros(3, np.int32), (2, 8)),
                    np.zeros((4, 2), np.int32))


def test_auto_is_best_supported_isa():
    assert q.best_isa() == q.supported_isas()[-1]
    assert q.supported_isas()[0] == "generic"


@pytest.mark.skipif(not q.isa_supported("avx512vnni"), reason="CPU lacks avx512vnni")
def test_disabled_features_reach_the_dispatch():
    """FDBERT_DISABLE_CPU_FEATURES / disabled_cpu_features lower "auto" and forbid forcing a path."""
    with fdbert_native.disabled_cpu_features(["avx512vnni"]):
        assert q.best_isa() == "avx512"
        with pytest.raises(ValueError, match="not supported"):
            q.qgemm_s32(np.zeros((1, 4), np.uint8), q.pack_dense(np.zeros((1, 4), np.int8))[0],
                        np.zeros((1, 1), np.int32), isa="avx512vnni")
    with fdbert_native.disabled_cpu_features(["avx2"]):
        assert q.supported_isas() == ("generic",)
    assert q.best_isa() == "avx512vnni"
