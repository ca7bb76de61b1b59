/* peak_probes.h -- register-only multiply-add loops that time a core's peak (see peak_probes.c).
 *
 * reference: none (timing only) · tests: spec_tests/test_native_backend.py, spec_tests/test_native_qgemm_amx.py
 *
 * The caller checks the ISA path first: fdb_peak_fma_loop needs avx512, fdb_peak_vnni_loop
 * avx512vnni, fdb_peak_amx_loop amx (with Linux's tile-data grant). Each returns a value that depends
 * on the loop, so it is not optimised away.
 */
#ifndef FDBERT_PEAK_PROBES_H
#define FDBERT_PEAK_PROBES_H

#include <stdint.h>

int32_t fdb_peak_fma_loop(int64_t iters);    /* 24 * 16 float32 multiply-adds per iteration */
int32_t fdb_peak_vnni_loop(int64_t iters);   /* 24 * 64 u8 x s8 multiply-adds per iteration */
int32_t fdb_peak_amx_loop(int64_t iters);    /* 4 * 16,384 u8 x s8 multiply-adds per iteration */

#endif
