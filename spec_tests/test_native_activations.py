"""The native softmax, erf, exp and gelu (fdbert_native._fp32) against the reference
(fdbert/reference/activations.py) and against correctly rounded float64 values: every ISA path this
machine can run, 1-4 threads (bit-identical across thread counts), drawn shapes with 16-lane tails,
within the named tolerances (tolerances.SOFTMAX_*, ERF_MAX_ULPS, EXP_MAX_ULPS, GELU_*). The AVX2 twins
give the AVX-512 bits. silu_mul and gelu_tanh, the decoders' activations, follow (fdbert_native._decoder),
on its generic, AVX2 and AVX-512 paths.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import erf

from fdbert import reference as ref

import native_ext

pytestmark = [pytest.mark.native_only,
              # the reference's own x / scale and (q - zp) * scale overflow to inf on purpose
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

_fp32 = native_ext.load("_fp32")
_decoder = native_ext.load("_decoder")
import fdbert_native.ops as nops  # noqa: E402
from fp32_checks import assert_close, rng_of, ulp_diff  # noqa: E402
from strategies import decoder_widths, seeds, widths  # noqa: E402
from thread_checks import run_all_threads  # noqa: E402
from tolerances import (ERF_MAX_ULPS, EXP_MAX_ULPS, GELU_ERF_ATOL, GELU_TANH_ATOL, GELU_ULPS,  # noqa: E402
                        SILU_ATOL, SILU_RTOL,
                        SOFTMAX_ATOL, SOFTMAX_RTOL)

ISA_PARAMS = native_ext.isa_params(_fp32)
DECODER_ISA_PARAMS = native_ext.isa_params(_decoder, reason="the {isa} path cannot run here")
THREADS = [1, 2]

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# A size above the kernels' one-thread cutoff (fp32_ops.c PARALLEL_MIN), with a 16-lane tail.
BIG = 70_001


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


# ---- silu_mul and gelu_tanh (fdbert_native._decoder): at 1 and 2 threads ----------------------------------------------
DECODER_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", DECODER_ISA_PARAMS)
@DECODER_SETTINGS
@given(n=decoder_widths, seed=seeds, scale=st.sampled_from([0.1, 3.0, 40.0]))
@example(n=70_001, seed=0, scale=3.0)
def test_silu_mul_vs_reference(isa, threads, n, seed, scale):
    rng = np.random.default_rng(seed)
    g = (rng.standard_normal(n) * scale).astype(np.float32)
    u = rng.standard_normal(n).astype(np.float32)
    got = _decoder.silu_mul(g, u, np.empty_like(g), isa=isa, num_threads=threads)
    with np.errstate(over="ignore"):
        want = ref.silu_mul(g, u)
    np.testing.assert_allclose(got, want, rtol=SILU_RTOL, atol=SILU_ATOL)


def test_silu_mul_extremes():
    g = np.array([-200, -100, -88, 0, 88, 100, 200], np.float32)
    got = nops.silu_mul(g, np.ones_like(g))
    np.testing.assert_allclose(got, [0, -100 * np.exp(-100), -88 * np.exp(-88), 0, 88, 100, 200],
                               atol=SILU_ATOL, rtol=SILU_RTOL)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", DECODER_ISA_PARAMS)
@DECODER_SETTINGS
@given(n=decoder_widths, seed=seeds, scale=st.sampled_from([0.1, 3.0, 40.0]))
@example(n=70_001, seed=0, scale=3.0)
def test_gelu_tanh_vs_reference(isa, threads, n, seed, scale):
    x = (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)
    got = _decoder.gelu_tanh(x, np.empty_like(x), isa=isa, num_threads=threads)
    want = ref.gelu_tanh(x)
    assert np.all(np.abs(got.astype(np.float64) - want) <= GELU_TANH_ATOL * np.abs(x.astype(np.float64)))


@pytest.mark.parametrize("isa", DECODER_ISA_PARAMS)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # gelu_tanh(-inf) = nan
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")       # x^3 of 1e38
def test_gelu_tanh_dense_grid_and_specials(isa):
    """Every float32 step of a dense grid over [-12, 12] (where 1 + tanh cancels for x < 0), the
    subnormals, zeros, huge values where x^3 overflows, and the non-finite ones as the reference."""
    x = np.concatenate([np.linspace(-12, 12, 200_001), [0.0, -0.0, 1e-40, -1e-40, 1e-30, -1e-30, 1e13, -1e13,
                                                        1e38, -1e38, np.inf, -np.inf, np.nan]]).astype(np.float32)
    got = _decoder.gelu_tanh(x, np.empty_like(x), isa=isa)
    want = ref.gelu_tanh(x)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.array_equal(got[np.isinf(want)], want[np.isinf(want)])
    fin = ok & np.isfinite(want)
    diff = np.abs(got[fin].astype(np.float64) - want[fin])
    assert np.all(diff <= GELU_TANH_ATOL * np.abs(x[fin].astype(np.float64))), diff.max()
    assert got[-13:-9].tolist() == want[-13:-9].tolist() and np.signbit(got[1])   # 0, -0, subnormals


def test_decoder_avx2_twins_give_the_avx512_bits():
    """silu_mul and gelu_tanh on AVX2 run the AVX-512 operations in 8 lanes with fp32_vecmath.h's exp,
    whose two twins give the same bits: so do these ops (rms_norm and rope: test_native_rmsnorm.py,
    test_native_rope.py)."""
    if not (_decoder.isa_supported("avx2") and _decoder.isa_supported("avx512")):
        pytest.skip("needs both the avx2 and the avx512 paths")
    rng = rng_of(12)
    x = np.concatenate([rng.uniform(-110, 95, 100_001), rng.normal(0, 3, 100_000),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 88.72, -87.34, -103.9]]).astype(np.float32)
    u = rng.standard_normal(x.size).astype(np.float32)
    a, c = (_decoder.gelu_tanh(x, np.empty_like(x), isa=isa) for isa in ("avx2", "avx512"))
    assert a.tobytes() == c.tobytes()
    a, c = (_decoder.silu_mul(x, u, np.empty_like(x), isa=isa) for isa in ("avx2", "avx512"))
    assert a.tobytes() == c.tobytes()


def test_gelu_tanh_through_ops_keeps_the_shape():
    x = rng_of(13).normal(0, 2, (3, 5, 17)).astype(np.float32)
    got = nops.gelu_tanh(x)
    assert got.shape == x.shape
    assert np.all(np.abs(got - ref.gelu_tanh(x)) <= GELU_TANH_ATOL * np.abs(x))
