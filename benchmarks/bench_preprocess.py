"""asv benchmarks of reference/preprocess.py: in-memory batch preprocessing and JPEG loading.

Cases, inputs and implementations come from :mod:`benchmarks.common` (shared with tests/perf).
Combinations this host cannot run (no CUDA) are skipped from ``setup`` (``n/a``). The kinds of
benchmark are those of :mod:`benchmarks.bench_attention`: ``time_*``, ``peakmem_*``,
deterministic ``track_*`` counters and in-process ``track_ratio_vs_*`` (larger is worse).

The batched pipeline resizes on a thread pool, and torch's dispatch modes are per thread, so
``track_ops`` counts the ops of the calling thread: the batch-level work (buffer, normalise,
transfer) for ``batched``, everything for the per-image loops. A change that moves per-image
work back onto the calling thread therefore shows as a jump in ops.
"""

from __future__ import annotations

# Imported here so asv's fork server pays for them once (see bench_attention.py).
import torch._dynamo  # noqa: F401

import pytest_mmperf.counters  # noqa: F401
import pytest_mmperf.measure  # noqa: F401
import reference.preprocess  # noqa: F401

from .common import (
    DEVICES,
    LOADER_BASELINE,
    LOADER_CASES,
    LOADER_IMPLS,
    PREPROCESS_BASELINE,
    PREPROCESS_CASES,
    PREPROCESS_IMPLS,
    Workload,
    check_code_under_test,
    counters,
    interleaved_ratio,
    use_bench_threads,
)

check_code_under_test()


class PreprocessBatch:
    """16 RGB PIL images of 480-800 px -> float32 (16, 3, 224, 224), normalised: the seed's
    per-image loop, the seed's "optimised" transform, and the corrected batched uint8 path."""

    params = [list(PREPROCESS_IMPLS), list(DEVICES), list(PREPROCESS_CASES)]
    param_names = ["impl", "device", "case"]
    number = 1
    rounds = 4  # spread each commit's samples over four processes (see bench_attention.py)
    repeat = (2, 4, 1.0)
    warmup_time = 0.0  # setup makes the warm-up call (thread pool start, resize kernels)
    timeout = 120

    def setup(self, impl: str, device: str, case: str) -> None:
        use_bench_threads()
        self.work: Workload = PREPROCESS_CASES[case].build(impl, "float32", device)
        self.work.run_synced()

    def time_preprocess(self, impl: str, device: str, case: str) -> None:
        self.work.run_synced()

    def peakmem_preprocess(self, impl: str, device: str, case: str) -> None:
        self.work.run_synced()


class PreprocessCounters:
    """Deterministic counters of one call of :class:`PreprocessBatch`'s workloads."""

    params = PreprocessBatch.params
    param_names = PreprocessBatch.param_names
    timeout = 120

    def setup(self, impl: str, device: str, case: str) -> None:
        use_bench_threads()
        self.work: Workload = PREPROCESS_CASES[case].build(impl, "float32", device)

    def track_ops(self, impl: str, device: str, case: str) -> int:
        return counters(self.work, "ops")

    track_ops.unit = "ops"  # type: ignore[attr-defined]

    def track_peak_memory(self, impl: str, device: str, case: str) -> int:
        return counters(self.work, "peak_memory")

    track_peak_memory.unit = "bytes"  # type: ignore[attr-defined]


class PreprocessRatio:
    """time(impl) / time(the seed's naive loop), interleaved in one process."""

    params = [[i for i in PREPROCESS_IMPLS if i != PREPROCESS_BASELINE], list(DEVICES),
              list(PREPROCESS_CASES)]
    param_names = ["impl", "device", "case"]
    timeout = 120

    def setup(self, impl: str, device: str, case: str) -> None:
        use_bench_threads()
        spec = PREPROCESS_CASES[case]
        self.candidate: Workload = spec.build(impl, "float32", device)
        self.baseline: Workload = spec.build(PREPROCESS_BASELINE, "float32", device)

    def track_ratio_vs_naive(self, impl: str, device: str, case: str) -> float:
        return interleaved_ratio(self.candidate, self.baseline)

    track_ratio_vs_naive.unit = "ratio"  # type: ignore[attr-defined]


class LoadJpegBatch:
    """16 JPEGs of 896-1152 px from disk -> one normalised (16, 3, 224, 224) batch: the seed's
    DataLoader as written (4 workers, full decode) and the corrected fast loader."""

    params = [list(LOADER_IMPLS), list(DEVICES), list(LOADER_CASES)]
    param_names = ["impl", "device", "case"]
    number = 1
    rounds = 4
    repeat = (2, 4, 1.5)
    warmup_time = 0.0  # setup runs one epoch, which also starts the persistent workers
    timeout = 180

    def setup(self, impl: str, device: str, case: str) -> None:
        use_bench_threads()
        self.work: Workload = LOADER_CASES[case].build(impl, "float32", device)
        self.work.run_synced()

    def teardown(self, impl: str, device: str, case: str) -> None:
        # asv calls teardown after a skipped setup too: only close what was built.
        if hasattr(self, "work"):
            self.work.close()

    def time_epoch(self, impl: str, device: str, case: str) -> None:
        self.work.run_synced()


class LoadJpegRatio:
    """time(fast loader) / time(the seed's DataLoader), interleaved in one process."""

    params = [[i for i in LOADER_IMPLS if i != LOADER_BASELINE], list(DEVICES),
              list(LOADER_CASES)]
    param_names = ["impl", "device", "case"]
    timeout = 180

    def setup(self, impl: str, device: str, case: str) -> None:
        use_bench_threads()
        spec = LOADER_CASES[case]
        self.candidate: Workload = spec.build(impl, "float32", device)
        self.baseline: Workload = spec.build(LOADER_BASELINE, "float32", device)

    def teardown(self, impl: str, device: str, case: str) -> None:
        for name in ("candidate", "baseline"):  # setup may have stopped early (skip, error)
            work = getattr(self, name, None)
            if work is not None:
                work.close()

    def track_ratio_vs_seed(self, impl: str, device: str, case: str) -> float:
        return interleaved_ratio(self.candidate, self.baseline)

    track_ratio_vs_seed.unit = "ratio"  # type: ignore[attr-defined]
