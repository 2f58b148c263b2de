"""asv benchmarks of reference/preprocess.py: in-memory batch preprocessing and JPEG loading.

Cases and implementations come from :mod:`benchmarks.cases` (shared with tests/perf), inputs
from :mod:`benchmarks.inputs`.
Combinations this host cannot run (no CUDA) are skipped from ``setup`` (``n/a``). The kinds of
benchmark are those of :mod:`benchmarks.bench_attention`: ``time_*``, ``peakmem_*``,
deterministic ``track_*`` counters and in-process ``track_ratio_vs_*`` (larger is worse).

The batched pipeline resizes on a thread pool, and torch's dispatch modes are per thread, so
``track_ops`` counts the ops of the calling thread: the batch-level work (buffer, normalise,
transfer) for ``batched``, everything for the per-image loops. A change that moves per-image
work back onto the calling thread therefore shows as a jump in ops.
"""

from __future__ import annotations

from typing import Any

# Imported here so asv's fork server pays for them once (see bench_attention.py).
import torch._dynamo  # noqa: F401

import pytest_mmperf.counting.counters  # noqa: F401
import pytest_mmperf.timing.measure  # noqa: F401
import reference.preprocess  # noqa: F401

from .asv_base import (
    _CaseBenchmark,
    _CounterBenchmark,
    _RatioBenchmark,
    case_params,
    check_code_under_test,
)
from .cases import (
    LOADER_BASELINE,
    LOADER_CASES,
    LOADER_IMPLS,
    PREPROCESS_BASELINE,
    PREPROCESS_CASES,
    PREPROCESS_IMPLS,
)

check_code_under_test()


class PreprocessBatch(_CaseBenchmark):
    """16 RGB PIL images of 480-800 px -> float32 (16, 3, 224, 224), normalised: the seed's
    per-image loop, the seed's "optimised" transform, and the corrected batched uint8 path."""

    registry = PREPROCESS_CASES
    params = case_params(PREPROCESS_IMPLS, PREPROCESS_CASES)
    number = 1
    rounds = 4  # spread each commit's samples over four processes (see bench_attention.py)
    repeat = (2, 4, 1.0)
    warmup_time = 0.0  # setup makes the warm-up call (thread pool start, resize kernels)

    def setup(self, *params: Any) -> None:
        super().setup(*params)
        self.work.run_synced()

    def time_preprocess(self, impl: str, device: str, case: str) -> None:
        self.work.run_synced()

    def peakmem_preprocess(self, impl: str, device: str, case: str) -> None:
        self.work.run_synced()


class PreprocessCounters(_CounterBenchmark):
    """Deterministic counters of one call of :class:`PreprocessBatch`'s workloads."""

    registry = PREPROCESS_CASES
    params = PreprocessBatch.params


class PreprocessRatio(_RatioBenchmark):
    """time(impl) / time(the seed's naive loop), interleaved in one process."""

    registry = PREPROCESS_CASES
    baseline_impl = PREPROCESS_BASELINE
    params = case_params(PREPROCESS_IMPLS, PREPROCESS_CASES, exclude=[PREPROCESS_BASELINE])

    def track_ratio_vs_naive(self, impl: str, device: str, case: str) -> float:
        return self.ratio()

    track_ratio_vs_naive.unit = "ratio"  # type: ignore[attr-defined]


class LoadJpegBatch(_CaseBenchmark):
    """16 JPEGs of 896-1152 px from disk -> one normalised (16, 3, 224, 224) batch: the seed's
    DataLoader as written (4 workers, full decode) and the corrected fast loader."""

    registry = LOADER_CASES
    params = case_params(LOADER_IMPLS, LOADER_CASES)
    number = 1
    rounds = 4
    repeat = (2, 4, 1.5)
    warmup_time = 0.0  # setup runs one epoch, which also starts the persistent workers
    timeout = 180

    def setup(self, *params: Any) -> None:
        super().setup(*params)
        self.work.run_synced()

    def time_epoch(self, impl: str, device: str, case: str) -> None:
        self.work.run_synced()


class LoadJpegRatio(_RatioBenchmark):
    """time(fast loader) / time(the seed's DataLoader), interleaved in one process."""

    registry = LOADER_CASES
    baseline_impl = LOADER_BASELINE
    params = case_params(LOADER_IMPLS, LOADER_CASES, exclude=[LOADER_BASELINE])
    timeout = 180

    def track_ratio_vs_seed(self, impl: str, device: str, case: str) -> float:
        return self.ratio()

    track_ratio_vs_seed.unit = "ratio"  # type: ignore[attr-defined]
