"""Thread pools for per-image work that runs outside the GIL (Pillow decoding, torch resizes).

Shared by :mod:`reference.preprocess` (in memory) and :mod:`reference._loading` (from disk).

Each pool thread runs torch ops with one intra-op thread (:func:`one_intraop_thread`): the work
of one image barely scales with OpenMP threads, and an OpenMP team per pool thread would put
more threads than cores to work (each team's threads spin at its barriers). ``torch.
set_num_threads`` cannot do this, since it also changes the process-wide default of every thread
started later; the OpenMP runtime's ``omp_set_num_threads`` sets the calling thread's count
only. Where that runtime is not found (:func:`pool_supported` is False), callers run on the
calling thread instead.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

__all__ = ["one_intraop_thread", "pool", "pool_supported", "split"]


@functools.cache
def _openmp_runtime() -> Any | None:
    """The OpenMP runtime torch loaded (libgomp, libiomp5 or libomp), or None.

    Found among the libraries mapped into this process (Linux), so that it is the very copy
    torch uses.
    """
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "/lib" in line}
    except OSError:
        return None
    for path in sorted(paths):
        if os.path.basename(path).startswith(("libgomp", "libiomp5", "libomp")):
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


def one_intraop_thread() -> None:
    """Pool-thread initializer: torch ops on this thread run single-threaded.

    ``torch.get_num_threads()`` first runs torch's lazy per-thread initialisation (which would
    otherwise reset the count on the thread's first op); then this thread's OpenMP count is 1.
    """
    torch.get_num_threads()
    runtime = _openmp_runtime()
    if runtime is not None:
        runtime.omp_set_num_threads(1)


def pool_supported() -> bool:
    """Whether pool threads can be limited to one intra-op thread (torch's OpenMP runtime
    found); where not, per-image work should run on the calling thread."""
    return _openmp_runtime() is not None


# Pools by size, shared by all callers. Threads do not survive fork (DataLoader workers): a
# child must build its own pools, or it would queue work for threads that do not exist.
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOLS.clear)


def pool(threads: int) -> ThreadPoolExecutor:
    """The shared pool of `threads` threads, each with one intra-op thread."""
    with _POOLS_LOCK:
        executor = _POOLS.get(threads)
        if executor is None:
            executor = _POOLS[threads] = ThreadPoolExecutor(threads, "mmperf-preprocess",
                                                            initializer=one_intraop_thread)
        return executor


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) bounds of `parts` near-equal contiguous chunks of range(n) (none empty)."""
    parts = max(1, min(parts, n))
    starts = [round(k * n / parts) for k in range(parts + 1)]
    return list(zip(starts[:-1], starts[1:], strict=True))
