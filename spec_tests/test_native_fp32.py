"""The native float32 ops (fdbert_native._fp32, fdbert_native.ops) against the reference backend.

Every op runs on every ISA path this machine can run (forced two ways: the ``isa=`` argument of the
_fp32 wrappers, and fdbert_native.disabled_cpu_features for the backend functions), with 1-4 threads
(results must be bit-identical across thread counts), on drawn shapes with tails (widths that are not
multiples of 16, L = 1, empty sequences). Integer results (quantize) and the pure-float32 ops whose
native arithmetic is the reference's (dequantize) are compared EXACTLY; the others within the named
tolerances below, each with its reason.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import erf

import fdbert
import fdbert.ops
import fdbert_native
from fdbert import int8
from fdbert import reference as ref
from fdbert.backend import Declined
from fdbert.errors import BackendError, FdbertError, TokenIdError

pytestmark = [pytest.mark.native_only,
              # the reference's own x / scale and (q - zp) * scale overflow to inf on purpose
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

if not fdbert_native.AVAILABLE:
    pytest.skip(f"native backend unavailable: {fdbert_native.UNAVAILABLE_REASON}",
                allow_module_level=True)
_fp32 = pytest.importorskip("fdbert_native._fp32", reason="fdbert_native._fp32 is not built")
import fdbert_native.ops as nops  # noqa: E402
from strategies import packed_batches  # noqa: E402
from thread_checks import run_all_threads  # noqa: E402

# ---- named tolerances -------------------------------------------------------------------------------
# layer_norm: |got - ref| <= LN_ATOL + LN_RTOL |ref| + LN_MEAN_ULPS eps32 (max|x_row| / std_row) |w|.
# Mean and variance are summed in 16 lanes (NumPy sums pairwise) and the native kernel multiplies by
# 1/sqrt(var + eps) where the reference divides: a few ulp of the normalised value (|.| <~ 5), times
# |weight| (observed <= 2e-6 at D <= 3000). The last term is conditioning, not kernel error: each
# float32 mean is off by ~ulp(max|x|), which x - mean carries into the output amplified by
# |w| / std; a row of mean 9.5 and std 0.15 puts the reference itself 7e-6 from the exact value.
LN_ATOL = 1e-5
LN_RTOL = 1e-5
LN_MEAN_ULPS = 4
# softmax: |got - ref| <= SOFTMAX_RTOL |ref| + SOFTMAX_ATOL. NumPy's float32 exp is within 3 ulp,
# ours within 1 (erf/exp tests below); the sums run in other orders; we multiply by 1/sum where the
# reference divides. ~17 ulp relative; observed <= 7e-7 at L = 1000. The atol covers subnormal e.
SOFTMAX_RTOL = 2e-6
SOFTMAX_ATOL = 1e-37
# erf / exp (the AVX-512 polynomials, and glibc's erff / expf on the generic path): at most this many
# ulp from the correctly rounded value. Checked exhaustively over [0, 4.5] (erf) and [-104, 88.7]
# (exp) during development (docs/kernels.md); here on a dense sample.
ERF_MAX_ULPS = 1
EXP_MAX_ULPS = 1
# gelu = (0.5 x)(1 + erf(x / sqrt 2)): |got - ref| <= GELU_ULPS ulp(ref) + GELU_ERF_ATOL |x|. Both erf
# values are within ~1 ulp (<= 2^-23 absolute in [-1, 1]) of the true erf, and 1 + erf rounds once
# more; GELU multiplies that absolute error by 0.5 |x| -- for x < 0 it is large next to the tiny
# result (cancellation in 1 + erf), which is why this bound is not in ulp of the result alone.
GELU_ULPS = 2
GELU_ERF_ATOL = 2.0 ** -22
# attention: |got - ref| <= max(1, max|v|) (ATTN_ATOL + 2 Dh 2^-24 S), S = max_ij scale sum_d |q_id k_jd|.
# ATTN_ATOL: the softmax's own error, then sums of Lk products p v in another order (observed <= 5e-7
# with |v| ~ 1 and scores of size ~1). The second term is conditioning: each implementation's score
# is a Dh-term dot product (summed in another order) within the textbook bound Dh u S of the exact
# one (u = 2^-24), and an absolute score error d changes every p by a factor within exp(+-2d), so
# peaky softmaxes (scale 1, |q|, |k| ~ 2: scores ~ 100) differ by ~1e-5 with no kernel error.
ATTN_ATOL = 5e-6

# A size above the kernels' one-thread cutoff (fp32_ops.c PARALLEL_MIN), with a 16-lane tail.
BIG = 70_001

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ISA_PARAMS = [pytest.param(isa, marks=pytest.mark.skipif(
    not _fp32.isa_supported(isa),
    reason=f"the {isa} path cannot run here (CPU lacks it, or FDBERT_DISABLE_CPU_FEATURES)")) for isa in _fp32.ISAS]


# ---- helpers -------------------------------------------------------------------------------------------
def ordered(a):  # f32 [...] -> int64 [...]: consecutive floats map to consecutive integers
    i = np.asarray(a, np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def ulp_diff(a, b):
    return np.abs(ordered(a) - ordered(b))


def assert_close(got, want, *, atol, rtol=0.0, what=""):
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.dtype)
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bound = atol + rtol * np.abs(want.astype(np.float64))
    bad = ~(err <= bound)  # NaN counts as bad
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} outside atol={atol}, rtol={rtol}; "
                           f"worst |err| {np.nanmax(err)} at {np.unravel_index(np.nanargmax(err - bound), err.shape)}")


def assert_layer_norm_close(got, x, w, b, eps):
    want = ref.layer_norm(x, w, b, eps)
    x64 = x.astype(np.float64)
    cond = np.abs(x64).max(axis=-1, keepdims=True) / np.maximum(x64.std(axis=-1, keepdims=True), 1e-30)
    bound = LN_ATOL + LN_RTOL * np.abs(want) + LN_MEAN_ULPS * 2.0**-23 * cond * np.abs(w)
    err = np.abs(got.astype(np.float64) - want)
    assert got.dtype == np.float32 and np.all(err <= bound), np.max(err - bound)


def assert_attention_close(got, q, k, v, cu_q, cu_k, causal, scale):
    want = ref.attention(q, k, v, cu_q, cu_k, causal=causal, scale=scale)
    Dh = q.shape[2]
    sc = np.float32(1.0 / np.sqrt(Dh) if scale is None else scale)
    S = 0.0
    for b in range(len(cu_q) - 1):  # the largest sum_d |q_id k_jd| within a sequence, over heads
        qa, ka = np.abs(q[cu_q[b]:cu_q[b + 1]]), np.abs(k[cu_k[b]:cu_k[b + 1]])
        if len(qa) and len(ka):
            S = max(S, float(np.einsum("ihd,jhd->hij", qa, ka, dtype=np.float64).max()) * float(sc))
    bound = max(1.0, float(np.abs(v).max(initial=0))) * (ATTN_ATOL + 2 * Dh * 2.0**-24 * S)
    assert_close(got, want, atol=bound, what="attention")


def rng_of(seed):
    return np.random.default_rng(seed)


seeds = st.integers(0, 2**32 - 1)
widths = st.one_of(st.integers(1, 40), st.sampled_from([15, 16, 17, 31, 33, 64, 768]))


# ---- the backend contract --------------------------------------------------------------------------------
@pytest.mark.parametrize("op", nops.__all__[:-1])   # every op but op_paths
def test_signatures_match_fdbert_ops(op):
    assert inspect.signature(getattr(nops, op)) == inspect.signature(getattr(fdbert.ops, op))


def test_op_paths_follow_disabled_features():
    def fp32_paths():
        return {op: path for op, path in nops.op_paths().items() if op in nops.FP32_OPS}

    def expected(path):
        return {op: path for op in nops.FP32_OPS}

    best = _fp32.best_isa()
    assert fp32_paths() == expected(best)
    with fdbert_native.disabled_cpu_features({"avx512f"}):
        avx2 = "avx2" if _fp32.isa_supported("avx2") else "generic"
        assert fp32_paths() == expected(avx2)
        assert _fp32.supported_isas() == (("generic", "avx2") if avx2 == "avx2" else ("generic",))
        with pytest.raises(ValueError, match="cannot run"):
            _fp32.gelu(np.zeros(3, np.float32), np.zeros(3, np.float32), isa="avx512")
        with pytest.raises(ValueError, match="cannot run"):
            _fp32.attention(*(np.ones((1, 1, 8), np.float32),) * 3, *(np.array([0, 1], np.int32),) * 2,
                            np.zeros((1, 1, 8), np.float32), isa="avx512")
    with fdbert_native.disabled_cpu_features({"avx512f", "fma"}):
        assert fp32_paths() == expected("generic")
        assert _fp32.supported_isas() == ("generic",)
    assert fp32_paths() == expected(best)


# which features to disable so that "auto" runs each path
FORCE = {"avx512": set(), "avx2": {"avx512f"}, "generic": {"avx512f", "avx2"}}


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_backend_attention_runs_the_forced_path(isa):
    """nops.attention runs the path the enabled CPU features allow, and gives its bytes."""
    rng = rng_of(5)
    q, k, v = (rng.normal(size=(40, 3, 24)).astype(np.float32) for _ in range(3))
    cu = np.array([0, 17, 40], np.int32)
    with fdbert_native.disabled_cpu_features(FORCE[isa]):
        assert nops.op_paths()["attention"] == isa
        got = nops.attention(q, k, v, cu, cu, causal=True)
    want = _fp32.attention(q, k, v, cu, cu, np.zeros_like(q), causal=True, isa=isa)
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_backend_functions_run_the_forced_path(isa):
    """With features disabled, the backend functions give the bits of the path that remains."""
    x = rng_of(3).normal(0, 3, (33, 77)).astype(np.float32)
    w, b = np.linspace(-1, 2, 77, dtype=np.float32), np.linspace(1, 0, 77, dtype=np.float32)
    with fdbert_native.disabled_cpu_features(FORCE[isa]):
        assert nops.op_paths()["softmax"] == isa
        got = [nops.layer_norm(x, w, b, 1e-5), nops.softmax(x), nops.gelu(x)]
    want = [_fp32.layer_norm(x, w, b, 1e-5, np.empty_like(x), isa=isa),
            _fp32.softmax(x, np.empty_like(x), isa=isa),
            _fp32.gelu(x.reshape(-1), np.empty(x.size, np.float32), isa=isa).reshape(x.shape)]
    for g, w_ in zip(got, want):
        assert g.tobytes() == w_.tobytes()


# ---- layer_norm ------------------------------------------------------------------------------------------
@SETTINGS
@given(n=st.integers(0, 9), D=widths, seed=seeds, eps=st.sampled_from([1e-12, 1e-5]))
@example(n=8, D=9, seed=932598, eps=1e-12)  # mean 9.5, std 0.15: the conditioning term matters
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_layer_norm_vs_reference(isa, n, D, seed, eps):
    rng = rng_of(seed)
    x = (rng.normal(0, rng.uniform(0.1, 10), (n, D)) + rng.uniform(-10, 10, (n, 1))).astype(np.float32)
    w, b = rng.normal(size=D).astype(np.float32), rng.normal(size=D).astype(np.float32)
    got = run_all_threads(lambda nt: _fp32.layer_norm(x, w, b, eps, np.empty_like(x), isa=isa,
                                                      num_threads=nt))
    assert_layer_norm_close(got, x, w, b, eps)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_layer_norm_constant_rows_give_bias(isa):
    """var = 0: every x - mean is exactly 0 when the sums are exact (small integers), so y = bias."""
    x = np.full((3, 37), 3.0, np.float32)
    w, b = np.full(37, 2.0, np.float32), np.arange(37, dtype=np.float32)
    got = _fp32.layer_norm(x, w, b, 1e-12, np.empty_like(x), isa=isa)
    assert np.array_equal(got, np.broadcast_to(b, x.shape))


def test_layer_norm_paths_agree_bit_for_bit():
    """The generic twin mirrors the 16-lane sums (AVX2 as two 8-lane halves): every path gives the
    same bits (no exp/erf here)."""
    paths = _fp32.supported_isas()
    if len(paths) < 2:
        pytest.skip("this CPU runs the generic path only")
    rng = rng_of(7)
    for D in (1, 7, 8, 9, 15, 16, 17, 24, 100, 768, 1000):
        x = rng.normal(2, 5, (50, D)).astype(np.float32)
        w, b = rng.normal(size=D).astype(np.float32), rng.normal(size=D).astype(np.float32)
        a = _fp32.layer_norm(x, w, b, 1e-5, np.empty_like(x), isa="generic")
        for isa in paths[1:]:
            c = _fp32.layer_norm(x, w, b, 1e-5, np.empty_like(x), isa=isa)
            assert a.tobytes() == c.tobytes(), (isa, D)


def test_avx2_twins_give_the_avx512_bits():
    """The AVX2 exp, erf, GELU and softmax run the AVX-512 operations in 8 lanes (2^n in two exact
    steps instead of vscalefps, table lookups by two vpermps): the same bits, specials included."""
    if not (_fp32.isa_supported("avx2") and _fp32.isa_supported("avx512")):
        pytest.skip("needs both the avx2 and the avx512 paths")
    rng = rng_of(11)
    x = np.concatenate([rng.uniform(-110, 95, 300_001), rng.normal(0, 3, 100_000),
                        np.linspace(-4.5, 4.5, 100_001),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 88.72, -87.34, -103.9]]
                       ).astype(np.float32)
    for fn in (_fp32.exp, _fp32.erf, _fp32.gelu):
        a, c = (fn(x, np.empty_like(x), isa=isa) for isa in ("avx2", "avx512"))
        assert a.tobytes() == c.tobytes(), fn.__name__
    for L in (1, 7, 8, 9, 16, 17, 33, 300):
        s = (rng.normal(0, 30, (20, L))).astype(np.float32)
        a, c = (_fp32.softmax(s, np.empty_like(s), isa=isa) for isa in ("avx2", "avx512"))
        assert a.tobytes() == c.tobytes(), L


@SETTINGS
@given(n=st.integers(0, 9), D=widths, seed=seeds, xscale=st.sampled_from([1e-3, 0.02, 0.3]),
       zp=st.integers(0, 255))
@example(n=3, D=768, seed=0, xscale=0.02, zp=128)
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_layer_norm_quantize_is_layer_norm_then_quantize(isa, n, D, seed, xscale, zp):
    """The fused kernel returns the bytes of layer_norm and of quantize_u8 of its output (same
    path), for 1-4 threads; the f32 output is the layer_norm one."""
    rng = rng_of(seed)
    x = rng.normal(0, 3, (n, D)).astype(np.float32)
    w, b = rng.normal(1, 0.5, D).astype(np.float32), rng.normal(0, 1, D).astype(np.float32)
    s32 = np.float32(xscale)
    y = _fp32.layer_norm(x, w, b, 1e-12, np.empty_like(x), isa=isa)
    yq = _fp32.quantize_u8(y.reshape(-1), s32, zp, np.empty(y.size, np.uint8), isa=isa).reshape(y.shape)
    got = run_all_threads(lambda nt: np.concatenate([a.reshape(-1).view(np.uint8) for a in
                                                     _fp32.layer_norm_quantize_u8(
        x, w, b, 1e-12, np.empty_like(x), s32, zp, np.empty(x.shape, np.uint8), isa=isa,
        num_threads=nt)]))
    np.testing.assert_array_equal(got, np.concatenate([y.reshape(-1).view(np.uint8), yq.reshape(-1)]))


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_layer_norm_many_rows_threads(isa):
    rng = rng_of(11)
    x = rng.normal(size=(200, 771)).astype(np.float32)   # n * D above the one-thread cutoff
    w, b = rng.normal(size=771).astype(np.float32), rng.normal(size=771).astype(np.float32)
    got = run_all_threads(lambda nt: _fp32.layer_norm(x, w, b, 1e-12, np.empty_like(x), isa=isa,
                                                      num_threads=nt))
    assert_layer_norm_close(got, x, w, b, 1e-12)


# ---- softmax -----------------------------------------------------------------------------------------------
@SETTINGS
@given(rows=st.integers(0, 9), L=st.one_of(st.just(1), widths, st.integers(100, 300)), seed=seeds,
       spread=st.sampled_from([0.1, 3.0, 30.0]), n_masked=st.integers(0, 5))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_softmax_vs_reference(isa, rows, L, seed, spread, n_masked):
    rng = rng_of(seed)
    x = rng.normal(0, spread, (rows, L)).astype(np.float32)
    if L > 1:  # -inf entries (masked scores) weigh exactly 0; keep at least one finite per row
        cols = rng.integers(0, L, (rows, n_masked))
        for r in range(rows):
            x[r, cols[r][cols[r] != r % L]] = -np.inf
    got = run_all_threads(lambda nt: _fp32.softmax(x, np.empty_like(x), isa=isa, num_threads=nt))
    want = ref.softmax(x)
    assert_close(got, want, atol=SOFTMAX_ATOL, rtol=SOFTMAX_RTOL, what="softmax")
    assert np.all(got[np.isneginf(x)] == 0)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_softmax_of_one_entry_is_one(isa):
    x = np.array([[-1e30], [0.0], [3.0], [1e30]], np.float32)
    assert np.array_equal(_fp32.softmax(x, np.empty_like(x), isa=isa), np.ones_like(x))


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_softmax_many_rows_threads(isa):
    x = rng_of(5).normal(0, 4, (400, 129)).astype(np.float32)
    got = run_all_threads(lambda nt: _fp32.softmax(x, np.empty_like(x), isa=isa, num_threads=nt))
    assert_close(got, ref.softmax(x), atol=SOFTMAX_ATOL, rtol=SOFTMAX_RTOL, what="softmax")


# ---- erf, exp, gelu ----------------------------------------------------------------------------------------
def _dense_sample(lo, hi, n, seed):
    """Uniform in [lo, hi] plus log-uniform magnitudes down to subnormals, both signs, and specials."""
    rng = rng_of(seed)
    mags = np.float32(10.0) ** rng.uniform(-44, np.log10(max(abs(lo), abs(hi))), n // 4)
    signs = np.where(rng.random(n // 4) < 0.5, -1, 1).astype(np.float32)
    pieces = np.arange(0, 4.25, 0.25, dtype=np.float32)  # erf's piece boundaries and neighbours
    edges = np.concatenate([pieces, np.nextafter(pieces, np.float32(-1)), np.nextafter(pieces, np.float32(9))])
    x = np.concatenate([rng.uniform(lo, hi, n).astype(np.float32), mags * signs, edges, -edges,
                        np.array([0.0, -0.0], np.float32)])
    return x[(x >= lo) & (x <= hi)].astype(np.float32)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_erf_within_one_ulp(isa):
    x = _dense_sample(-6, 6, 1 << 20, seed=1)
    got = _fp32.erf(x, np.empty_like(x), isa=isa)
    want = erf(x.astype(np.float64)).astype(np.float32)  # correctly rounded (double erf, one rounding)
    assert ulp_diff(got, want).max() <= ERF_MAX_ULPS
    special = np.array([np.inf, -np.inf, 4.0, -4.0, 1e30, -1e30, 0.0, -0.0], np.float32)
    s = _fp32.erf(special, np.empty_like(special), isa=isa)
    assert np.array_equal(s, [1, -1, 1, -1, 1, -1, 0, 0])
    assert np.array_equal(np.signbit(s[-2:]), [False, True])  # erf(-0) = -0


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_exp_within_one_ulp(isa):
    x = _dense_sample(-104, 88.7, 1 << 20, seed=2)
    got = _fp32.exp(x, np.empty_like(x), isa=isa)
    want = np.exp(x.astype(np.float64)).astype(np.float32)
    assert ulp_diff(got, want).max() <= EXP_MAX_ULPS
    special = np.array([-np.inf, -200.0, 89.0, np.inf, 0.0], np.float32)
    assert np.array_equal(_fp32.exp(special, np.empty_like(special), isa=isa), [0, 0, np.inf, np.inf, 1])


@SETTINGS
@given(x=hnp.arrays(np.float32, st.integers(0, 100),
                    elements=st.floats(-20, 20, width=32, allow_subnormal=True)))
@example(x=np.array([0.0, -0.0, 1e-30, -1e-30, 3.0, -3.0, -5.5, 5.5, 100.0, -100.0], np.float32))
@example(x=np.array([np.inf, -np.inf, 1e38, -1e38], np.float32))
@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # gelu(-inf) = nan
def test_gelu_vs_reference(isa, x):
    got = _fp32.gelu(x, np.empty_like(x), isa=isa)
    want = ref.gelu(x)
    finite = np.isfinite(want)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(got[~finite & ~np.isnan(want)],
                                                                          want[~finite & ~np.isnan(want)])
    g, w, xf = got[finite].astype(np.float64), want[finite].astype(np.float64), x[finite].astype(np.float64)
    bound = GELU_ULPS * np.spacing(np.abs(want[finite])).astype(np.float64) + GELU_ERF_ATOL * np.abs(xf)
    assert np.all(np.abs(g - w) <= bound), np.max(np.abs(g - w) - bound)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_gelu_large_threads(isa):
    x = rng_of(9).uniform(-8, 8, BIG).astype(np.float32)
    got = run_all_threads(lambda nt: _fp32.gelu(x, np.empty_like(x), isa=isa, num_threads=nt))
    bound = GELU_ULPS * np.spacing(np.abs(ref.gelu(x))) + GELU_ERF_ATOL * np.abs(x)
    assert np.all(np.abs(got - ref.gelu(x)) <= bound)


# ---- quantize / dequantize: bit-exact with fdbert.int8 ------------------------------------------------------
scales = st.one_of(st.sampled_from([1.0, 0.5, 0.25, 2.0**-10, 0.1, 0.037, 3.0, 1e-30, 1e30]),
                   st.floats(2.0**-20, 1024.0, width=32))
zero_points = st.one_of(st.sampled_from([0, 1, 128, 254, 255]), st.integers(0, 255))


def _ties(scale):  # x with x / scale exactly k + 1/2 (scale a power of two): both parities, both signs
    k = np.arange(-300, 300, dtype=np.float32)
    return ((k + np.float32(0.5)) * np.float32(scale)).astype(np.float32)


@SETTINGS
@given(x=hnp.arrays(np.float32, st.integers(0, 200), elements=st.floats(width=32, allow_nan=False)),
       scale=scales, zero_point=zero_points)
@example(x=_ties(0.25), scale=0.25, zero_point=128)
@example(x=_ties(1.0), scale=1.0, zero_point=0)
@example(x=_ties(2.0**-10), scale=2.0**-10, zero_point=255)
@example(x=np.array([-0.0, 0.0, -1e-45, 1e-45, 127.5, 128.5, -0.5, 0.5, 1.5, 2.5, 254.5, 255.5, 1e9,
                     -1e9, np.inf, -np.inf, 3.4e38, -3.4e38], np.float32), scale=1.0, zero_point=0)
@example(x=np.array([2.0**23, 2.0**23 + 1, 2.0**24, -(2.0**23) - 1], np.float32), scale=1.0, zero_point=128)
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_quantize_u8_bit_exact(isa, x, scale, zero_point):
    want = int8.quantize_u8(x, scale, zero_point)
    got = _fp32.quantize_u8(x, np.float32(scale), zero_point, np.empty(x.shape, np.uint8), isa=isa)
    assert np.array_equal(got, want)
    with fdbert.set_backend("native", only=True):
        assert np.array_equal(fdbert.ops.quantize_u8(x, scale, zero_point), want)


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_quantize_ties_round_half_even(isa):
    """x / s = k + 0.5 exactly: rint picks the even k (roundf, half-away, would not)."""
    x = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, 100.5, 101.5], np.float32)
    got = _fp32.quantize_u8(x, np.float32(1.0), 10, np.empty(8, np.uint8), isa=isa)
    assert got.tolist() == [10, 12, 12, 14, 10, 8, 110, 112]


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_quantize_large_threads(isa):
    x = rng_of(4).normal(0, 5, BIG).astype(np.float32)
    want = int8.quantize_u8(x, 0.037, 113)
    got = run_all_threads(lambda nt: _fp32.quantize_u8(x, np.float32(0.037), 113, np.empty(BIG, np.uint8),
                                                       isa=isa, num_threads=nt))
    assert np.array_equal(got, want)


@SETTINGS
@given(scale=st.one_of(scales, st.floats(2.0**-126, 2.0**126, width=32)), zero_point=zero_points,
       reps=st.integers(1, 3))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_dequantize_u8_bit_exact(isa, scale, zero_point, reps):
    q = np.tile(np.arange(256, dtype=np.uint8), reps)[: 256 * reps - reps]  # every code, a tail
    want = int8.dequantize_u8(q, scale, zero_point)
    got = _fp32.dequantize_u8(q, np.float32(scale), zero_point, np.empty(q.shape, np.float32), isa=isa)
    assert got.tobytes() == want.tobytes()
    big = np.resize(q, BIG)
    got = run_all_threads(lambda nt: _fp32.dequantize_u8(big, np.float32(scale), zero_point,
                                                         np.empty(BIG, np.float32), isa=isa, num_threads=nt))
    assert got.tobytes() == int8.dequantize_u8(big, scale, zero_point).tobytes()


def test_quantize_invalid_qparams_raise_like_the_reference():
    x = np.zeros(4, np.float32)
    for scale, zp in ((0.0, 0), (-1.0, 0), (np.inf, 0), (1.0, 256), (1.0, -1), (1.0, 1.5)):
        with pytest.raises(ValueError):
            nops.quantize_u8(x, scale, zp)
        with pytest.raises(ValueError):
            int8.quantize_u8(x, scale, zp)


# ---- attention ----------------------------------------------------------------------------------------------
@SETTINGS
@given(batch=packed_batches())
@example(batch=(np.ones((1, 1, 1), np.float32), np.ones((1, 1, 1), np.float32),
                np.full((1, 1, 1), 2, np.float32), np.array([0, 1], np.int32), np.array([0, 1], np.int32),
                True, None))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_vs_reference(isa, batch):
    q, k, v, cu_q, cu_k, causal, scale = batch
    got = run_all_threads(lambda nt: _fp32.attention(q, k, v, cu_q, cu_k, np.zeros_like(q), causal=causal,
                                                     scale=scale, isa=isa, num_threads=nt))
    assert_attention_close(got, q, k, v, cu_q, cu_k, causal, scale)


@SETTINGS
@given(batch=packed_batches(causal=True), n_new=st.integers(1, 9))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_decoder_step_equals_full_causal_rows(isa, batch, n_new):
    """KV cache: the last n_new queries alone (Lq < Lk, mask aligned at the end) give the same bits as
    the same rows of the full causal attention -- a row never depends on the rows computed with it."""
    q, k, v, _, cu_k, _, scale = batch
    full = _fp32.attention(k, k, v, cu_k, cu_k, np.zeros_like(k), causal=True, scale=scale, isa=isa)
    lk = np.diff(cu_k)
    lq = np.minimum(lk, n_new)
    rows = np.concatenate([np.arange(e - m, e) for e, m in zip(cu_k[1:], lq)]).astype(np.int64)
    cu_q = np.concatenate([[0], np.cumsum(lq)]).astype(np.int32)
    step = _fp32.attention(np.ascontiguousarray(k[rows]), k, v, cu_q, cu_k,
                           np.zeros((len(rows),) + k.shape[1:], np.float32), causal=True, scale=scale, isa=isa)
    assert step.tobytes() == full[rows].tobytes()


@SETTINGS
@given(batch=packed_batches(), xscale=st.sampled_from([1e-3, 0.01, 0.05]), zp=st.integers(0, 255))
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_quantized_output_is_attention_then_quantize(isa, batch, xscale, zp):
    """quantize=(scale, zp) gives the bytes of quantize_u8 applied to the float32 output of the same
    path (the fused block's attention -> u8 input of the O projection), for 1-4 threads; rows
    outside every sequence are left untouched in both."""
    q, k, v, cu_q, cu_k, causal, scale = batch
    s32 = np.float32(xscale)
    a = _fp32.attention(q, k, v, cu_q, cu_k, np.zeros_like(q), causal=causal, scale=scale, isa=isa)
    want = _fp32.quantize_u8(a.reshape(-1), s32, zp, np.empty(a.size, np.uint8), isa=isa).reshape(a.shape)
    outside = np.ones(len(q), bool)
    for b in range(len(cu_q) - 1):
        outside[cu_q[b]:cu_q[b + 1]] = False
    want[outside] = 7   # the sentinel the untouched rows keep
    got = run_all_threads(lambda nt: _fp32.attention(
        q, k, v, cu_q, cu_k, np.full(q.shape, 7, np.uint8), causal=causal, scale=scale, isa=isa,
        num_threads=nt, quantize=(s32, zp)))
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(batch=packed_batches(causal=False), quantized=st.booleans())
@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_reads_row_strided_qkv_in_place(isa, batch, quantized):
    """q, k, v as the thirds of one fused QKV output [n, 3, H, Dh] (row-strided views, read without a
    copy) give the bytes of their C-contiguous copies, f32 and u8 outputs, 1-4 threads."""
    q, k, v, cu_q, cu_k, causal, scale = batch
    n = max(len(q), len(k))
    qkv = np.full((n, 3) + q.shape[1:], np.nan, np.float32)   # rows past an input stay NaN: unread
    qkv[:len(q), 0], qkv[:len(k), 1], qkv[:len(k), 2] = q, k, v
    views = qkv[:len(q), 0], qkv[:len(k), 1], qkv[:len(k), 2]
    assert not any(a.flags.c_contiguous for a in views if len(a) > 1)
    kw = dict(causal=causal, scale=scale, isa=isa)
    if quantized:
        kw["quantize"] = (np.float32(0.01), 100)
    empty = (lambda: np.zeros(q.shape, np.uint8)) if quantized else (lambda: np.zeros_like(q))
    want = _fp32.attention(q, k, v, cu_q, cu_k, empty(), **kw)
    got = run_all_threads(lambda nt: _fp32.attention(*views, cu_q, cu_k, empty(), num_threads=nt, **kw))
    assert got.tobytes() == want.tobytes()


def test_attention_refuses_overlapping_or_strided_rows():
    a = np.ones((4, 2, 8), np.float32)
    cu = np.array([0, 4], np.int32)
    for bad in (a[:, :, ::2], a[:, ::-1], np.lib.stride_tricks.as_strided(a, (4, 2, 8), (32, 32, 4))):
        with pytest.raises(ValueError, match="C-contiguous, non-overlapping rows"):
            _fp32.attention(bad, bad, bad, cu, cu, np.zeros(bad.shape, np.float32))


def test_attention_quantize_arguments_are_checked():
    q = np.ones((2, 1, 4), np.float32)
    cu = np.array([0, 2], np.int32)
    with pytest.raises(TypeError, match="out must have dtype uint8, got float32"):
        _fp32.attention(q, q, q, cu, cu, np.zeros_like(q), quantize=(0.1, 0))
    with pytest.raises(ValueError, match="scale must be"):
        _fp32.attention(q, q, q, cu, cu, np.zeros(q.shape, np.uint8), quantize=(0.0, 0))
    with pytest.raises(ValueError, match="zero_point must be"):
        _fp32.attention(q, q, q, cu, cu, np.zeros(q.shape, np.uint8), quantize=(0.1, 256))


@pytest.mark.parametrize("isa", ISA_PARAMS)
def test_attention_distilbert_shape_threads(isa):
    rng = rng_of(21)
    lengths = rng.integers(1, 129, 6)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    q, k, v = (rng.normal(size=(int(cu[-1]), 12, 64)).astype(np.float32) for _ in range(3))
    got = run_all_threads(lambda nt: _fp32.attention(q, k, v, cu, cu, np.zeros_like(q), isa=isa,
                                                     num_threads=nt))
    assert_attention_close(got, q, k, v, cu, cu, False, None)


@pytest.mark.parametrize("isa", ISA_PARAMS)
@pytest.mark.parametrize("lq, lk, H, Dh, causal", [
    ([300, 5, 0, 257], [300, 9, 3, 300], 2, 65, False),
    ([300, 5, 0, 257], [300, 9, 3, 300], 2, 64, True),
    ([1000], [1000], 1, 16, True),
    ([7, 1], [9000, 1], 1, 3, True),
])
def test_attention_long_sequences(isa, lq, lk, H, Dh, causal):
    """Sequences whose scores overflow the kernel's 64 KB score block (attention.c computes a
    pair's scores for as many queries as fit, then softmax and P V, then the next queries): vs the
    reference, the same bits for 1-4 threads, and for causal self-attention the last rows alone
    (a decoder step) equal the same rows of the full product."""
    rng = rng_of(lq[0] + Dh)
    cu_q, cu_k = (np.concatenate([[0], np.cumsum(n)]).astype(np.int32) for n in (lq, lk))
    q = rng.normal(size=(int(cu_q[-1]), H, Dh)).astype(np.float32)
    k, v = (rng.normal(size=(int(cu_k[-1]), H, Dh)).astype(np.float32) for _ in range(2))
    got = run_all_threads(lambda nt: _fp32.attention(q, k, v, cu_q, cu_k, np.zeros_like(q),
                                                     causal=causal, isa=isa, num_threads=nt))
    assert_attention_close(got, q, k, v, cu_q, cu_k, causal, None)
    if causal and lq == lk:
        full = _fp32.attention(k, k, v, cu_k, cu_k, np.zeros_like(k), causal=True, isa=isa)
        n = np.minimum(np.diff(cu_k), 5)
        rows = np.concatenate([np.arange(e - m, e) for e, m in zip(cu_k[1:], n)]).astype(np.int64)
        cu_step = np.concatenate([[0], np.cumsum(n)]).astype(np.int32)
        step = _fp32.attention(np.ascontiguousarray(k[rows]), k, v, cu_step, cu_k,
                               np.zeros((len(rows), H, Dh), np.float32), causal=True, isa=isa)
        assert step.tobytes() == full[rows].tobytes()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 70), V=st.integers(1, 50), D=widths, seed=seeds)
def test_embedding_equals_numpy_take(n, V, D, seed):
    rng = rng_of(seed)
    table = rng.normal(size=(V, D)).astype(np.float32)
    ids = rng.integers(0, V, n).astype(np.int64)
    got = run_all_threads(lambda nt: _fp32.embedding(ids, table, np.empty((n, D), np.float32),
                                                     num_threads=nt))
    assert got.tobytes() == np.take(table, ids, axis=0).tobytes()
    with fdbert.set_backend("native", only=True):
        assert fdbert.ops.embedding(ids, table).tobytes() == got.tobytes()


def test_embedding_ids_outside_the_table():
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    for bad in ([0, 4], [-1]):
        ids = np.array(bad, np.int64)
        with pytest.raises(IndexError, match=r"outside \[0, 4\)"):
            _fp32.embedding(ids, table, np.empty((len(bad), 3), np.float32))
        for backend, only in (("native", True), ("native", False), ("reference", False)):
            # issue 15: refused by fdbert.ops before any backend (NumPy would wrap -1 to the last row)
            with fdbert.set_backend(backend, only=only), pytest.raises(TokenIdError, match=r"outside \[0, 4\)"):
                fdbert.ops.embedding(ids, table)
    with fdbert.set_backend("native", only=True), pytest.raises(BackendError, match="dtype int32"):
        fdbert.ops.embedding(np.array([1], np.int32), table)


def test_attention_query_without_keys_is_refused():
    q = np.ones((2, 1, 4), np.float32)
    cu_q, cu_k = np.array([0, 2], np.int32), np.array([0, 1], np.int32)
    with pytest.raises(ValueError, match="sees no key"):
        _fp32.attention(q, q, q, cu_q, cu_k, np.zeros_like(q), causal=True)
    with pytest.raises(Declined, match="sees no key"):
        nops.attention(q, q, q, cu_q, cu_k, causal=True)
    with pytest.raises(Declined, match="sees no key"):
        nops.attention(q, q[:0], q[:0], cu_q, np.array([0, 0], np.int32))


# ---- declines: the reference runs instead; with only=True it is an error ---------------------------------------
def _declined_calls():
    rng = rng_of(0)
    x = rng.normal(size=(4, 20)).astype(np.float32)
    w, b = np.ones(20, np.float32), np.zeros(20, np.float32)
    qkv = rng.normal(size=(6, 2, 8)).astype(np.float32)
    cu = np.array([0, 2, 6], np.int32)
    return [
        ("layer_norm", (x.astype(np.float64), w, b, 1e-5), {}, "dtype float64"),
        ("layer_norm", (x[:, ::2], w[:10], b[:10], 1e-5), {}, "not C-contiguous"),
        ("layer_norm", (x, np.ones(19, np.float32), b, 1e-5), {}, "must both be"),
        ("layer_norm", (x, w.astype(np.float16), b, 1e-5), {}, "dtype float16"),
        ("softmax", (x.T,), {}, "not C-contiguous"),
        ("softmax", (x.astype(np.float16),), {}, "dtype float16"),
        ("softmax", (x[:, :0],), {}, "L = 0"),
        ("gelu", (x.astype(np.float64),), {}, "dtype float64"),
        ("gelu", (x[::2],), {}, "not C-contiguous"),
        ("gelu", ([1.0, 2.0],), {}, "not a numpy.ndarray"),
        ("quantize_u8", (x.astype(np.float64), 0.1, 3), {}, "dtype float64"),
        ("quantize_u8", (x[:, 1:], 0.1, 3), {}, "not C-contiguous"),
        ("dequantize_u8", (np.arange(10, dtype=np.int8), 0.1, 3), {}, "dtype int8"),
        ("attention", (qkv, qkv, qkv, cu.astype(np.int64), cu), {}, "dtype int64"),
        ("attention", (qkv[:, :, ::2], qkv[:, :, ::2], qkv[:, :, ::2], cu, cu), {}, "not C-contiguous"),
        ("attention", (qkv.astype(np.float64), qkv, qkv, cu, cu), {}, "dtype float64"),
        ("attention", (qkv, qkv, qkv, cu, cu[:2]), {}, "differ in B"),
        ("attention", (qkv, qkv, qkv, cu, np.array([0, 4, 7], np.int32)), {}, "non-decreasing"),
        ("attention", (qkv, qkv, qkv, np.array([0, 4, 2], np.int32), cu), {}, "non-decreasing"),
    ]


@pytest.mark.parametrize("op, args, kwargs, reason", _declined_calls(),
                         ids=[f"{c[0]}-{c[3]}" for c in _declined_calls()])
def test_declines_fall_back_to_reference(op, args, kwargs, reason):
    with pytest.raises(Declined, match=reason):
        getattr(nops, op)(*args, **kwargs)
    try:
        with fdbert.set_backend("reference", only=True):
            getattr(fdbert.ops, op)(*args, **kwargs)
    except FdbertError as e:   # issue 15: invalid input, refused by fdbert.ops before any backend
        for only in (False, True):
            with fdbert.set_backend("native", only=only), pytest.raises(type(e)):
                getattr(fdbert.ops, op)(*args, **kwargs)
        return
    want = getattr(ref, op)(*[np.asarray(a) if isinstance(a, list) else a for a in args], **kwargs)
    if True:
        with fdbert.set_backend("native"):
            got = getattr(fdbert.ops, op)(*args, **kwargs)
        assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True)
    with fdbert.set_backend("native", only=True):
        with pytest.raises(BackendError, match="declined"):
            getattr(fdbert.ops, op)(*args, **kwargs)


def test_native_backend_serves_these_ops():
    x = np.ones((2, 3), np.float32)
    with fdbert.set_backend("native", only=True):
        for op in nops.FP32_OPS:
            assert fdbert.backend.resolve(op) == "native"
        assert np.array_equal(fdbert.ops.softmax(x), np.full((2, 3), np.float32(1) / 3))
        assert fdbert.ops.gelu(np.ones((), np.float32)).shape == ()  # a 0-d array; a numpy scalar declines


@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0, 4), ()])
def test_empty_and_scalar_shapes(shape):
    x = np.ones(shape, np.float32)
    if len(shape) >= 1 and shape[-1] != 0:
        assert nops.softmax(x).shape == shape
        assert nops.layer_norm(x, np.ones(shape[-1], np.float32), np.zeros(shape[-1], np.float32), 1e-5).shape == shape
    assert nops.gelu(x).shape == shape
    assert np.array_equal(nops.quantize_u8(x, 0.5, 1), int8.quantize_u8(x, 0.5, 1))


def test_fma_peak_probe_measures_and_refuses_without_avx512():
    """The benchmark ceiling (benchmarks/roofline.py)."""
    if _fp32.isa_supported("avx512"):
        assert _fp32.fma_peak_gmacs(1000) > 0
    with fdbert_native.disabled_cpu_features(["avx512f"]):
        with pytest.raises(RuntimeError, match="avx512 path is not usable"):
            _fp32.fma_peak_gmacs(1000)
