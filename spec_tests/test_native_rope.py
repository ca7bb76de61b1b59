"""The native rope (fdbert_native._decoder) against the reference (fdbert/reference/rope.py): bit for
bit, on every ISA path this machine can run, at 1 and 2 threads, drawn shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fdbert import reference as ref
from fdbert.reference.rope import rope_angles

import native_ext

pytestmark = [pytest.mark.native_only]

_decoder = native_ext.load("_decoder")
from strategies import seeds  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ISA_PARAMS = native_ext.isa_params(_decoder, reason="the {isa} path cannot run here")
THREADS = [1, 2]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISA_PARAMS)
@SETTINGS
@given(n=st.integers(0, 9), H=st.integers(1, 5), half=st.one_of(st.integers(1, 20), st.just(32)), seed=seeds)
@example(n=300, H=9, half=32, seed=0)
def test_rope_is_the_reference_bit_for_bit(isa, threads, n, H, half, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, H, 2 * half)).astype(np.float32)
    cos, sin = rope_angles(rng.integers(0, 8192, n), np.float32(0.7) ** np.arange(half, dtype=np.float32))
    got = _decoder.rope(x, cos, sin, np.empty_like(x), isa=isa, num_threads=threads)
    np.testing.assert_array_equal(got, ref.rope(x, cos, sin))
