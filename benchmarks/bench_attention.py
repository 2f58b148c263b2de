"""asv benchmarks of reference/attention.py: cross-modal attention and long joint sequences.

Cases and implementations come from :mod:`benchmarks.cases` (shared with tests/perf), inputs
from :mod:`benchmarks.inputs`.
Every parameter list is fixed; combinations this host cannot run (no CUDA, no native bf16) are
skipped from ``setup`` with ``NotImplementedError`` and show as ``n/a``.

Kinds of benchmark, and why each exists:

* ``time_*``: seconds per call. GPU work is synchronised inside the timed function
  (:meth:`Workload.run_synced`), because asv's timer reads a host clock.
* ``peakmem_*``: peak resident memory of the benchmark process (asv), where host memory is the
  point (the O(N²) score matrix of explicit attention).
* ``track_ops`` / ``track_flops`` / ``track_peak_memory``: deterministic counters of one call
  (:mod:`pytest_mmperf.counting.counters`): the same in every process, so the gate catches
  structural regressions (a fused kernel replaced by explicit matmuls) even when timing is noisy.
* ``track_ratio_vs_math``: time(candidate) / time(explicit math) measured interleaved in one
  process; far steadier across runs than raw times on a shared machine. Larger is worse.
"""

from __future__ import annotations

from typing import Any

# Imported here, not lazily, so that asv's fork server imports them once for all benchmark
# processes: the first op counted under a TorchDispatchMode imports torch._dynamo (seconds of
# imports, docs/measurements.md#worker-start-up), which would otherwise be paid again in every
# forked benchmark process.
import torch._dynamo  # noqa: F401

import pytest_mmperf.counting.counters  # noqa: F401
import pytest_mmperf.timing.measure  # noqa: F401
import reference.attention  # noqa: F401

from .asv_base import (
    _CaseBenchmark,
    _CounterBenchmark,
    _RatioBenchmark,
    case_params,
    check_code_under_test,
)
from .cases import (
    ATTENTION_BASELINE,
    ATTENTION_CASES,
    ATTENTION_IMPLS,
    LONG_BASELINE,
    LONG_CASES,
    LONG_IMPLS,
)
from .inputs import DTYPES
from .ratios import counters

check_code_under_test()


class CrossAttentionForward(_CaseBenchmark):
    """Text (B, 77, 768) attending to image (B, 577, 768) tokens, 12 heads: the seed module and
    the corrected module's backends, float32 and bf16 autocast."""

    registry = ATTENTION_CASES
    params = case_params(ATTENTION_IMPLS, ATTENTION_CASES, dtypes=DTYPES)
    param_names = ["impl", "dtype", "device", "case"]
    number = 1  # one call per sample: each is long next to the timer's resolution
    # Four rounds (four fresh processes per commit, interleaved with the other commit's) of
    # 2-4 samples: other jobs' load comes and goes within minutes, so spreading a commit's
    # samples over four windows matters more than taking many in one (8+ samples per commit
    # also let asv use its Mann-Whitney test).
    rounds = 4
    repeat = (2, 4, 1.0)
    warmup_time = 0.0  # setup makes the warm-up call

    def setup(self, *params: Any) -> None:
        super().setup(*params)
        self.work.run_synced()  # lazy init (oneDNN primitives, autocast weight casts)

    def time_forward(self, impl: str, dtype: str, device: str, case: str) -> None:
        self.work.run_synced()


class CrossAttentionCounters(_CounterBenchmark):
    """Deterministic counters of one forward of :class:`CrossAttentionForward`'s workloads."""

    registry = ATTENTION_CASES
    params = CrossAttentionForward.params
    param_names = CrossAttentionForward.param_names

    def track_flops(self, impl: str, dtype: str, device: str, case: str) -> int:
        return counters(self.work, "flops")

    track_flops.unit = "flops"  # type: ignore[attr-defined]


class CrossAttentionRatio(_RatioBenchmark):
    """time(impl at dtype) / time(explicit math, float32), interleaved in one process."""

    registry = ATTENTION_CASES
    baseline_impl = ATTENTION_BASELINE
    params = case_params(ATTENTION_IMPLS, ATTENTION_CASES, dtypes=DTYPES, exclude=["seed"])
    param_names = ["impl", "dtype", "device", "case"]

    def track_ratio_vs_math(self, impl: str, dtype: str, device: str, case: str) -> float:
        return self.ratio()

    track_ratio_vs_math.unit = "ratio"  # type: ignore[attr-defined]


class LongSequenceAttention(_CaseBenchmark):
    """Attention core over a joint text+image sequence of 2048 / 4096 tokens (B=1, 12 heads of
    64): explicit math (O(N²) memory), fused SDPA, and the sliding-window sparse variant."""

    registry = LONG_CASES
    params = case_params(LONG_IMPLS, LONG_CASES)
    number = 1
    # Explicit attention at 4096 tokens takes long per call, longer under load
    # (docs/reference-results.md): one to three samples in each of four rounds, no separate
    # warm-up call (these kernels need no lazy initialisation; a process's first call is within
    # the spread of the later ones).
    rounds = 4
    repeat = (1, 3, 2.0)
    warmup_time = 0.0
    timeout = 180

    def time_attention(self, impl: str, device: str, case: str) -> None:
        self.work.run_synced()

    def peakmem_attention(self, impl: str, device: str, case: str) -> None:
        self.work.run_synced()


class LongSequenceCounters(_CounterBenchmark):
    """Deterministic counters of :class:`LongSequenceAttention`'s workloads."""

    registry = LONG_CASES
    params = LongSequenceAttention.params
    timeout = 180


class LongSequenceRatio(_RatioBenchmark):
    """time(impl) / time(explicit math) on the long joint sequence, interleaved in one process."""

    registry = LONG_CASES
    baseline_impl = LONG_BASELINE
    params = case_params(LONG_IMPLS, LONG_CASES, exclude=[LONG_BASELINE])
    # Explicit math calls are long (LongSequenceAttention): three rounds after the warm-up give
    # a stable median.
    ratio_options = {"budget_s": 3.0, "min_blocks": 3}
    timeout = 180

    def track_ratio_vs_math(self, impl: str, device: str, case: str) -> float:
        return self.ratio()

    track_ratio_vs_math.unit = "ratio"  # type: ignore[attr-defined]
