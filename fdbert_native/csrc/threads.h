/* threads.h -- the one thread count every fdbert OpenMP kernel uses.
 *
 * reference: none (the thread count) · tests: spec_tests/test_native_threads.py
 *
 * omp_set_num_threads() only changes the CALLING thread's default (the OpenMP nthreads ICV is per
 * thread), so a count set from Python's main thread would not reach a kernel run from a worker
 * thread. Kernels therefore open their regions with an explicit clause,
 *     #pragma omp parallel for num_threads(nthreads)
 * where nthreads is fdb_num_threads(), read by the .pyx wrapper (in _cpu, or via
 * `from fdbert_native._cpu cimport num_threads` in other modules) and passed down.
 *
 * Honoured exactly unless the user sets OMP_DYNAMIC=true (the runtime may then give fewer threads);
 * fdb_set_num_threads refuses counts above OMP_THREAD_LIMIT (the caller checks fdb_omp_thread_limit).
 * Built without OpenMP, every count is 1.
 */
#ifndef FDBERT_THREADS_H
#define FDBERT_THREADS_H

/* Threads per parallel region: the last fdb_set_num_threads(n), else omp_get_max_threads()
 * (OMP_NUM_THREADS or the number of CPUs). */
int fdb_num_threads(void);
/* Set the count (n >= 1; also the calling thread's omp default). Returns the previous count. */
int fdb_set_num_threads(int n);
/* 1 if compiled with OpenMP. */
int fdb_openmp_enabled(void);
/* The largest team OpenMP will form (OMP_THREAD_LIMIT; INT_MAX by default; 1 without OpenMP). */
int fdb_omp_thread_limit(void);
/* omp_get_num_threads() measured inside a num_threads(fdb_num_threads()) region: a test probe. */
int fdb_omp_team_size(void);

#endif /* FDBERT_THREADS_H */
