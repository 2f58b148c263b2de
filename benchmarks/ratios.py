"""What the suite measures besides raw times: in-process ratios and deterministic counters.

:func:`interleaved_ratio` times two workloads interleaved in one process (the steadier number
across commits on a shared machine); :func:`counters` counts ops, FLOPs or peak memory of one
call. Both serve the asv ``track_*`` benchmarks and the pytest guards alike. The quick switch
(``MMPERF_BENCH_QUICK``, set by ``tools/perf_gate.py --check``) makes every ratio a smoke run.
"""

from __future__ import annotations

import os
import statistics

from .inputs import Workload

# Set by ``tools/perf_gate.py --check``: ratios then time one call of each side (a smoke run).
QUICK_ENV = "MMPERF_BENCH_QUICK"


def quick_mode() -> bool:
    """True when the suite runs as a smoke check (``MMPERF_BENCH_QUICK=1``)."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def interleaved_ratio(candidate: Workload, baseline: Workload, *, budget_s: float = 3.0,
                      min_blocks: int = 6) -> float:
    """Median over rounds of time(candidate) / time(baseline), measured interleaved in this
    process (:func:`pytest_mmperf.timing.measure.time_pair`: calibrated blocks, random order per
    round, device synchronisation). Larger is worse, as asv assumes. ``MMPERF_BENCH_QUICK=1``
    cuts it to one call of each (a smoke run)."""
    from pytest_mmperf.timing.measure import BlockTimer, time_pair

    if candidate.device != baseline.device:
        raise ValueError(f"interleaved_ratio: candidate on {candidate.device} but baseline on "
                         f"{baseline.device}; a ratio needs one device")
    if quick_mode():
        # Smoke run: one synchronised call of each side proves the pair runs (time_pair would
        # add two warm-up and one calibration call per side, each as slow as the timed ones).
        timer = BlockTimer(candidate.device)
        return timer(candidate.fn, 1) / max(timer(baseline.fn, 1), 1e-12)
    samples = time_pair(candidate.fn, baseline.fn, candidate.device, budget_s=budget_s,
                        min_blocks=min_blocks, warmup_s=0.1, inference_mode=False, seed=0)
    return statistics.median(c / b for c, b in zip(samples.candidate_s, samples.baseline_s,
                                                   strict=True))


def counters(work: Workload, metric: str) -> int:
    """One deterministic counter of one call of ``work``: ``"ops"`` (dispatched aten ops),
    ``"flops"`` or ``"peak_memory"`` (bytes of tensor memory), via
    :func:`pytest_mmperf.counting.counters.measure_counters`."""
    from pytest_mmperf.counting.counters import measure_counters

    # Op and FLOP counts are the same on the first call; peak memory needs a warm-up call so
    # that one-time allocations (thread pools, kernel workspaces) are not counted.
    warmup = 1 if metric == "peak_memory" else 0
    report = measure_counters(work.fn, work.device, metrics=(metric,), warmup=warmup)
    if metric == "ops":
        return report.total_ops()
    value = report.scalars().get("peak_memory_bytes" if metric == "peak_memory" else metric)
    if value is None:
        raise ValueError(f"counter {metric!r} is not available for {work.case}/{work.impl} on "
                         f"{work.device}; accepted: ops, flops, peak_memory")
    return int(value)
