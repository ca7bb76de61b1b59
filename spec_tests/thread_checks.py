"""The spec tests' thread-count check: a native kernel's result must not depend on its thread count."""

THREADS = (1, 2, 3, 4)


def run_all_threads(fn):
    """fn(num_threads) for 1-4 threads; assert every result has the same bytes; return it."""
    results = [fn(nt) for nt in THREADS]
    for nt, r in zip(THREADS[1:], results[1:]):
        assert r.tobytes() == results[0].tobytes(), f"{nt} threads differ from 1 thread"
    return results[0]
