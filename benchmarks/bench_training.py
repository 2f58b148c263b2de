"""asv benchmarks of reference/training.py: the training step and the loader feeding it.

Cases and implementations come from :mod:`benchmarks.training_cases` (``TRAINING_CASES``,
``LOADER_TRAINING_CASES``; shared with tests/perf/test_training.py). ``impl`` is the attention
backend of every attention layer; ``dtype`` the step's precision (``float32``, ``bfloat16``
autocast, ``float16`` autocast + GradScaler). Combinations this host cannot run (float16 without
CUDA, bf16 without native support, no CUDA) raise ``NotImplementedError`` in ``setup``: ``n/a``.

* ``time_step``: seconds per training step (forward, backward, AdamW step; the step ends with
  ``loss.item()``, so GPU work is finished when it returns).
* ``track_ops`` / ``track_peak_memory``: deterministic counters of one step (backward included).
* ``track_ratio_vs_math``: time(impl at dtype) / time(math, float32), interleaved in one
  process. Larger is worse.
* ``LoaderTraining``: one epoch of the loader feeding ``train_step`` (the seed's DataLoader as
  written, or the fast loader): seconds, images per second and the data-stall fraction.
"""

from __future__ import annotations

import statistics
from typing import Any

# Imported at module level so that asv's fork server imports them once (see bench_attention).
import torch._dynamo  # noqa: F401

import pytest_mmperf.counting.counters  # noqa: F401
import pytest_mmperf.timing.measure  # noqa: F401
import reference.training  # noqa: F401

from .asv_base import (
    _CaseBenchmark,
    _CounterBenchmark,
    _RatioBenchmark,
    case_params,
    check_code_under_test,
)
from .ratios import quick_mode
from .training_cases import (
    LOADER_TRAINING_CASES,
    LOADER_TRAINING_IMPLS,
    TRAIN_BASELINE,
    TRAIN_DTYPES,
    TRAIN_IMPLS,
    TRAINING_CASES,
)

check_code_under_test()

# The step cases tracked per commit: the default widths at batch 32, and 1024 image tokens
# where attention dominates. (``micro-b8`` only feeds the loader guard.)
STEP_CASES = {name: TRAINING_CASES[name] for name in ("clip-tiny-b32", "long-1024")}


class TrainingStep(_CaseBenchmark):
    """One training step of the small image-text model, per attention backend and precision."""

    registry = STEP_CASES
    params = case_params(TRAIN_IMPLS, STEP_CASES, dtypes=TRAIN_DTYPES)
    param_names = ["impl", "dtype", "device", "case"]
    number = 1  # a step is long next to the timer's resolution: one per sample
    rounds = 4
    repeat = (2, 4, 1.0)
    warmup_time = 0.0  # setup makes the warm-up steps

    def setup(self, *params: Any) -> None:
        super().setup(*params)
        self.work()  # optimiser state, oneDNN primitives, autocast caches
        self.work()

    def time_step(self, impl: str, dtype: str, device: str, case: str) -> None:
        self.work()


class TrainingStepCounters(_CounterBenchmark):
    """Ops and peak tensor memory of one step of :class:`TrainingStep`'s workloads."""

    registry = STEP_CASES
    params = TrainingStep.params
    param_names = TrainingStep.param_names


class TrainingStepRatio(_RatioBenchmark):
    """time(step with impl at dtype) / time(step with explicit math attention, float32)."""

    registry = STEP_CASES
    baseline_impl = TRAIN_BASELINE
    params = TrainingStep.params
    param_names = TrainingStep.param_names
    ratio_options = {"budget_s": 4.0, "min_blocks": 4}
    timeout = 180

    def track_ratio_vs_math(self, impl: str, dtype: str, device: str, case: str) -> float:
        return self.ratio()

    track_ratio_vs_math.unit = "ratio"  # type: ignore[attr-defined]


class LoaderTraining(_CaseBenchmark):
    """A loader feeding the training step for one epoch (its workers share the cores)."""

    registry = LOADER_TRAINING_CASES
    params = case_params(LOADER_TRAINING_IMPLS, LOADER_TRAINING_CASES)
    number = 1
    rounds = 2
    repeat = (2, 3, 4.0)
    warmup_time = 0.0
    timeout = 300

    def _results(self) -> list[Any]:
        return [self.work() for _ in range(1 if quick_mode() else 3)]

    def time_loader_and_steps(self, impl: str, device: str, case: str) -> None:
        self.work()

    def track_images_per_s(self, impl: str, device: str, case: str) -> float:
        return statistics.median(r.images_per_s for r in self._results())

    track_images_per_s.unit = "images/s"  # type: ignore[attr-defined]

    def track_stall_fraction(self, impl: str, device: str, case: str) -> float:
        return statistics.median(r.stall_fraction for r in self._results())

    track_stall_fraction.unit = "fraction"  # type: ignore[attr-defined]
