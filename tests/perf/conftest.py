"""What the regression suite's modules share: a case built or skipped, the suite's snapshot rule.

Fixtures, not imports (pytest imports each ``conftest.py`` by itself, and ``tests/plugin`` has
one too): ``build_or_skip(case, impl, dtype)`` and ``snapshot(name, fn)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from benchmarks.inputs import Workload

# Snapshots: op and FLOP counts may not move at all. Peak memory may move by this fraction:
# fused kernels (SDPA, the fused MHA, the training step's backward) size per-thread buffers by the
# thread count, which differs between machines.
PEAK_MEMORY_TOLERANCE = 0.25
# Single-threaded work without fused kernels (the preprocessing pipelines on one thread).
PEAK_MEMORY_TOLERANCE_SINGLE_THREAD = 0.10


def _build_or_skip(case: Any, impl: str, dtype: str = "float32", **options: Any) -> Workload:
    try:
        work: Workload = case.build(impl, dtype, **options)
    except NotImplementedError as exc:  # this host cannot run it (no CUDA, no native bf16)
        pytest.skip(str(exc))
    return work


@pytest.fixture(scope="session")  # a plain function: usable by fixtures of any scope
def build_or_skip() -> Callable[..., Workload]:
    """``build_or_skip(case, impl, dtype="float32")``: the case's workload, or the test skips
    with the reason the case gives (the combination this host cannot run)."""
    return _build_or_skip


@pytest.fixture
def snapshot(mmperf_guard: Any) -> Callable[..., Any]:
    """``snapshot(name, fn, single_thread=False)``: ``mmperf_guard.snapshot`` with the suite's
    rule: ops and FLOPs exact, peak memory within :data:`PEAK_MEMORY_TOLERANCE` (or
    :data:`PEAK_MEMORY_TOLERANCE_SINGLE_THREAD` for single-threaded work)."""

    def check(name: str, fn: Callable[[], object], *, single_thread: bool = False) -> Any:
        peak = PEAK_MEMORY_TOLERANCE_SINGLE_THREAD if single_thread else PEAK_MEMORY_TOLERANCE
        return mmperf_guard.snapshot(name, fn,
                                     tolerance={"ops": 0.0, "flops": 0.0, "peak_memory": peak})

    return check
