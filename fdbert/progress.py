"""A progress bar for long work: tqdm when installed, else a plain line on stderr."""

from __future__ import annotations

import sys
import time


def progress_bar(iterable, total=None, desc=""):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _plain(iterable, total, desc)
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)


def _plain(iterable, total, desc):
    t0, last = time.perf_counter(), 0.0
    for i, item in enumerate(iterable, 1):
        yield item
        now = time.perf_counter()
        if now - last > 0.5 or i == total:
            last = now
            of = f"/{total}" if total else ""
            print(f"\r{desc}: {i}{of} ({now - t0:.1f} s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
