"""The native rms_norm (fdbert_native._decoder) against the reference (fdbert/reference/rmsnorm.py):
every ISA path this machine can run, at 1 and 2 threads, drawn shapes with 16-lane tails, within
tolerances.RMS_RTOL; the generic, AVX2 and AVX-512 paths give the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fdbert import reference as ref

import native_ext

pytestmark = [pytest.mark.native_only]

_decoder = native_ext.load("_decoder")
from strategies import decoder_widths as widths, seeds  # noqa: E402
from tolerances import RMS_RTOL  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ISA_PARAMS = native_ext.isa_params(_decoder, reason="the {isa} path cannot run here")
THREADS = [1, 2]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISA_PARAMS)
@SETTINGS
@given(n=st.integers(0, 9), D=widths, seed=seeds, eps=st.sampled_from([1e-6, 1e-5]),
       scale=st.sampled_from([1e-3, 1.0, 100.0]))
@example(n=70, D=576, seed=0, eps=1e-5, scale=1.0)   # past the one-thread cutoff (32,768 elements)
def test_rms_norm_vs_reference(isa, threads, n, D, seed, eps, scale):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, D)) * scale).astype(np.float32)
    w = (1 + 0.2 * rng.standard_normal(D)).astype(np.float32)
    got = _decoder.rms_norm(x, w, eps, np.empty_like(x), isa=isa, num_threads=threads)
    want = ref.rms_norm(x, w, eps)
    np.testing.assert_allclose(got, want, rtol=RMS_RTOL, atol=0)


@pytest.mark.parametrize("D", [1, 7, 8, 9, 15, 16, 17, 576, 1001])
def test_rms_norm_paths_agree_bit_for_bit(D):
    """Every path sums the squares in the same 16 lanes folded the same way (AVX2: in two registers)."""
    paths = _decoder.supported_isas()
    if len(paths) < 2:
        pytest.skip("one ISA path here")
    rng = np.random.default_rng(D)
    x = rng.standard_normal((7, D)).astype(np.float32)
    w = (1 + 0.2 * rng.standard_normal(D)).astype(np.float32)
    a, *rest = (_decoder.rms_norm(x, w, 1e-5, np.empty_like(x), isa=isa) for isa in paths)
    for isa, b in zip(paths[1:], rest):
        assert a.tobytes() == b.tobytes(), isa
