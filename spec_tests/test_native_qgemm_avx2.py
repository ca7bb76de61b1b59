"""The avx2 dense GEMM's widened-operand driver (fdbert_native/csrc/qgemm.c, qg_gemm_avx2w).

It widens each 16-channel weight panel and each M chunk's x rows to int16 in per-thread buffers that
are kept between calls, and runs a 3-row tile on the k-groups; the K % 4 columns take the generic
loop. These cases aim at its edges: M not a multiple of 3, K % 4 != 0 and K < 4, N not a multiple of
16, the extreme codes (u8 255 against s8 -128), and the buffers growing and then serving a smaller
call. Expected values: the int64 NumPy product (exact), never the code under test.
"""
import numpy as np
import pytest

import native_ext

q = native_ext.load("_qgemm")
pytestmark = [pytest.mark.native_only,
              pytest.mark.skipif(not q.isa_supported("avx2"), reason="the avx2 path cannot run here")]

SHAPES = [  # (M, K, N), in this order: the per-thread buffers grow, then serve smaller calls
    (1, 1, 1), (2, 3, 5), (3, 4, 16), (4, 7, 17), (5, 385, 33), (131, 384, 1152),
    (600, 1536, 40), (7, 2, 70), (1, 384, 384),
]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_avx2_widened_driver_exact(threads):
    rng = np.random.default_rng(18)
    for M, K, N in SHAPES:
        x = rng.integers(0, 256, (M, K), dtype=np.uint8)   # [M, K]
        w = rng.integers(-128, 128, (N, K), dtype=np.int8)   # [N, K]
        x[0, :], w[0, :] = 255, -128   # the largest |product| on row 0, channel 0
        packed, _ = q.pack_dense(w)
        expected = x.astype(np.int64) @ w.astype(np.int64).T   # [M, N]
        out = q.qgemm_s32(x, packed, np.empty((M, N), np.int32), isa="avx2", num_threads=threads)
        np.testing.assert_array_equal(out, expected, err_msg=f"M, K, N = {M}, {K}, {N}")
