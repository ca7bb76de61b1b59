/* qgemm_amx.h -- the AMX-INT8 path of the dense INT8 GEMM (see qgemm_amx.c).
 *
 * reference: fdbert/reference/qlinear.py, fdbert/int8.py (matmul_u8s8_s32) · tests: spec_tests/test_native_qgemm_amx.py
 *
 * Same contract, same packed weights (qg_pack_dense) and same epilogue as qg_gemm (qgemm.h): the
 * int32 sums are exact and the float32/u8 outputs bit-identical to the avx512vnni path's.
 *
 * The caller must have checked that amx_tile, amx_int8, avx512f/bw/vl and avx512vnni are usable
 * now (fdbert_native._cpu's usable mask: includes Linux's XTILEDATA grant, which
 * fdbert_native.request_amx_permission() asks for). Without the grant the first tile
 * instruction raises SIGILL. */
#ifndef FDBERT_QGEMM_AMX_H
#define FDBERT_QGEMM_AMX_H

#include <stdint.h>

#include "qgemm.h"

/* Dense: x u8 [M, K] row-major, packed from qg_pack_dense(N, K). nthreads <= 0: OpenMP default.
 * Returns QG_OK or QG_ENOMEM. Call without the GIL. */
int qg_gemm_amx(const uint8_t *x__mk, int64_t M, int64_t K, const int8_t *packed, int64_t N,
                const qg_epilogue *ep, int nthreads);

/* The 64-byte tile configuration (palette 1): tmm0..7 all 16 rows x 64 bytes. */
typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} qg_tilecfg;

static const qg_tilecfg QG_AMX_CFG __attribute__((aligned(64))) = {
    .palette_id = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

#endif
