/* threads.c -- the process-wide OpenMP thread count (see threads.h). Lives in fdbert_native._cpu.
 *
 * reference: none (the thread count) · tests: spec_tests/test_native_threads.py
 */
#include "threads.h"

#include <stdatomic.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static atomic_int g_num_threads; /* 0 = never set: use the OpenMP default */

int fdb_num_threads(void)
{
    int n = atomic_load(&g_num_threads);
    if (n > 0) return n;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int fdb_set_num_threads(int n)
{
    int previous = fdb_num_threads();
    if (n < 1) n = 1;
#ifdef _OPENMP
    atomic_store(&g_num_threads, n);
    omp_set_num_threads(n); /* for code that opens a region without a num_threads clause */
#endif
    return previous;
}

int fdb_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fdb_omp_thread_limit(void)
{
#ifdef _OPENMP
    return omp_get_thread_limit();
#else
    return 1;
#endif
}

int fdb_omp_team_size(void)
{
    int team = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(fdb_num_threads())
    {
#pragma omp single
        team = omp_get_num_threads();
    }
#endif
    return team;
}
