"""The native embedding gather (fdbert_native._fp32) against numpy.take, the reference's own gather
(fdbert/reference/embeddings.py): the same bytes for 1-4 threads; ids outside the table refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fdbert
import fdbert.ops
from fdbert.errors import BackendError, TokenIdError

import native_ext

pytestmark = [pytest.mark.native_only,
              # the reference's own x / scale and (q - zp) * scale overflow to inf on purpose
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")]

_fp32 = native_ext.load("_fp32")
from fp32_checks import rng_of  # noqa: E402
from strategies import seeds, widths  # noqa: E402
from thread_checks import run_all_threads  # noqa: E402


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
