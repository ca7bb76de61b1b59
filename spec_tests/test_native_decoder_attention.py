"""The native decoder_attention (grouped-query attention over packed sequences, fdbert_native.ops)
against the reference (fdbert/reference/decoder_attention.py), within tolerances.DECODER_ATTN_ATOL.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdbert import reference as ref

import native_ext

pytestmark = [pytest.mark.native_only]

_decoder = native_ext.load("_decoder")
import fdbert_native.ops as nops  # noqa: E402
from strategies import seeds  # noqa: E402
from tolerances import DECODER_ATTN_ATOL  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data())
def test_decoder_attention_vs_reference(data):
    Hkv = data.draw(st.integers(1, 3))
    H = Hkv * data.draw(st.integers(1, 3))
    Dh = data.draw(st.sampled_from([1, 4, 16, 32]))
    Lk = data.draw(st.lists(st.integers(1, 20), min_size=1, max_size=4))
    Lq = [data.draw(st.integers(1, k)) for k in Lk]
    rng = np.random.default_rng(data.draw(seeds))
    cu_q = np.concatenate([[0], np.cumsum(Lq)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(Lk)]).astype(np.int32)
    q = rng.standard_normal((cu_q[-1], H, Dh)).astype(np.float32)
    k = rng.standard_normal((cu_k[-1], Hkv, Dh)).astype(np.float32)
    v = rng.standard_normal((cu_k[-1], Hkv, Dh)).astype(np.float32)
    got = nops.decoder_attention(q, k, v, cu_q, cu_k)
    np.testing.assert_allclose(got, ref.decoder_attention(q, k, v, cu_q, cu_k), atol=DECODER_ATTN_ATOL, rtol=0)
