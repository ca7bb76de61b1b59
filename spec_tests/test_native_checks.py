"""The wrappers' argument check (fdbert_native/_fastcheck.pxi): its C fast path accepts exactly what
fdbert_native._checks.check_array accepts, and everything else gets check_array's own error."""

import numpy as np
import pytest

import native_ext

pytestmark = pytest.mark.native_only
_fp32 = native_ext.load("_fp32")
from fdbert_native._checks import check_array  # noqa: E402


def both(x, out):
    """(error type and message, or None) from the wrapper and from check_array on the same x."""
    def run(fn):
        try:
            fn()
        except (TypeError, ValueError) as e:
            return type(e), str(e)
        return None
    return (run(lambda: _fp32.gelu(x, out)), run(lambda: check_array(x, "x", np.float32, (None,))))


@pytest.mark.parametrize("x", [
    np.zeros(5, np.float32),
    np.zeros(5, ">f4"),                      # float32 in the other byte order: not float32
    np.zeros(5, np.float64),
    np.zeros((5, 1), np.float32),            # wrong ndim
    np.zeros(10, np.float32)[::2],           # not contiguous
    [0.0] * 5,                               # not an ndarray
    np.zeros(5, np.float32).view(np.ndarray),
])
def test_fast_check_agrees_with_check_array(x):
    wrapper, reference = both(x, np.zeros(5, np.float32))
    assert wrapper == reference


def test_an_equal_dtype_with_another_type_number_is_accepted():
    """np.longlong and np.int64 are equal dtypes with different type numbers on Linux: the fast
    path declines, check_array accepts, and the op runs."""
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    ids = np.array([2, 0], dtype=np.longlong)
    out = _fp32.embedding(ids, table, np.empty((2, 3), np.float32))
    np.testing.assert_array_equal(out, table[[2, 0]])
