"""The ratio guards' procedure: measure, pool processes until clear, conclude with a message.

A ratio question is "is the candidate at least R times faster" (``faster``) or "is it at most
``1 + t`` times slower" (``not_slower``). Each process times candidate and baseline interleaved
(:func:`pytest_mmperf.timing.measure.time_pair`); the processes' log ratios are pooled with a
random-effects model (:mod:`pytest_mmperf.timing.stats`). The parent measures first, then adds fresh
worker processes one at a time, up to ``processes``, and stops as soon as the pooled interval is
clear of the threshold (more rounds of one process cannot beat the between-process spread:
``docs/measurements.md``).

One process cannot estimate that spread, so its interval assumes a between-process sd of
:data:`SINGLE_PROCESS_TAU` (1.4 times the widest spread measured:
docs/measurements.md#between-process-noise). Only a clear-cut ratio is decided by the parent
alone (about 1.4x beyond the threshold, e.g. a 4x speedup against ``at_least=1.5``), and only
when the cores it used were quiet while it measured (:func:`quiet`;
docs/measurements.md#busy-runner); anything else pools workers, and the decision on two or
more processes is the random-effects one, with the ``tau_floor`` floor.

Pytest-free and torch-free: the guard core (:mod:`pytest_mmperf.guards`) applies the
inconclusive policy to what :func:`conclude` returns.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mmperf.timing import stats
from pytest_mmperf.timing.measure import PairSamples
from pytest_mmperf.units import format_seconds

# Processes pooled at least before a clear decision stops sampling (the guards' default
# ``min_processes``): one, since a single process's interval assumes SINGLE_PROCESS_TAU.
MIN_PROCESSES_TO_STOP = 1
SINGLE_PROCESS_TAU = 0.15
# A single process decides only if the cores it used were quiet while it measured: other
# processes kept at most this many cores busy beyond those it left spare (OtherCpuUse; under
# load one process's ratio of identical work was seen far off: docs/measurements.md#busy-runner).
# Busier, or unknown: pool workers as for any close ratio.
QUIET_OTHER_CPU_CORES = 0.25
# Page faults per call worth a line in the guard's message (4 MiB of fresh 4 KiB pages; what
# faults cost: docs/page-faults.md).
NOTABLE_FAULTS_PER_CALL = 1000
# How to get a clear decision, in GuardSettings terms (the pytest glue passes its options instead).
HOW_TO_DECIDE = "raise GuardSettings budget_s / processes for a clear decision"
# spawn(process_number, seed) -> the samples of one fresh worker process
Spawn = Callable[[int, int], PairSamples]


class WorkerError(RuntimeError):
    """A ``Spawn`` could not produce the samples of a fresh process: the message says which
    worker and why (raised by :mod:`pytest_mmperf.timing.isolation`, caught by the guards)."""

    def __init__(
        self, message: str, *, returncode: int | None = None, output_tail: str = ""
    ) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output_tail = output_tail


@dataclass(frozen=True)
class RatioQuestion:
    """``kind`` ``"faster"`` with ``threshold`` = the required speedup, or ``"not_slower"`` with
    ``threshold`` = the tolerated slowdown fraction (0.10 = 10 %)."""

    kind: str
    threshold: float
    confidence: float
    tau_floor: float
    single_process_tau: float = SINGLE_PROCESS_TAU

    @property
    def metric(self) -> str:
        return "speedup" if self.kind == "faster" else "slowdown"

    @property
    def log_limit(self) -> float:
        """``log(t_candidate / t_baseline)`` must stay at or below this for the guard to pass."""
        return -math.log(self.threshold) if self.kind == "faster" else math.log1p(self.threshold)

    @property
    def ratio_limit(self) -> float:
        """The threshold as a ratio of the guard's metric (speedup or slowdown)."""
        return self.threshold if self.kind == "faster" else 1.0 + self.threshold

    def decide(self, processes: Sequence[PairSamples]) -> stats.RatioDecision:
        pooled = stats.pool_log_ratios([p.log_ratios() for p in processes], self.confidence,
                                       self.tau_floor,
                                       single_process_tau=self.single_process_tau)
        if self.kind == "faster":
            return stats.speedup_decision(pooled, self.threshold)
        return stats.slowdown_decision(pooled, self.threshold)

    def stop_rule(self) -> Callable[[PairSamples], bool]:
        """Stop a process's sampling once its own interval is narrow next to the distance to the
        threshold (more rounds of one process cannot beat the between-process spread)."""
        def should_stop(samples: PairSamples) -> bool:
            est = stats.trimmed_mean_se(samples.log_ratios())
            low, high = est.interval(self.confidence)
            half = (high - low) / 2
            return half <= max(0.5 * self.tau_floor, 0.25 * abs(est.estimate - self.log_limit))
        return should_stop


def add_processes(first: PairSamples, spawn: Spawn | None, *, max_processes: int, seed: int,
                  enough: Callable[[list[PairSamples]], bool] = lambda processes: False
                  ) -> list[PairSamples]:
    """``first`` (the parent's samples) plus fresh processes from ``spawn`` (process ``k`` gets
    seed ``seed + k``), added one at a time up to ``max_processes`` until ``enough(processes)``.

    A :class:`WorkerError` from ``spawn`` propagates.
    """
    processes = [first]
    limit = max_processes if spawn is not None else 1
    while len(processes) < limit and not enough(processes):
        assert spawn is not None
        k = len(processes)
        processes.append(spawn(k, seed + k))
    return processes


def decided_enough(question: RatioQuestion, processes: Sequence[PairSamples],
                   min_processes: int = MIN_PROCESSES_TO_STOP) -> bool:
    """Whether ``processes`` decide ``question``: at least ``min_processes`` pooled, one alone
    only if its cores were :func:`quiet`, and an interval clear of the threshold."""
    if len(processes) < min_processes or (len(processes) == 1 and not quiet(processes[0])):
        return False
    return question.decide(processes).decision != stats.Decision.INCONCLUSIVE


def pool_processes(question: RatioQuestion, first: PairSamples, spawn: Spawn | None, *,
                   max_processes: int, min_processes: int, seed: int) -> list[PairSamples]:
    """:func:`add_processes` while the decision is unclear or fewer than ``min_processes``
    have been pooled."""
    return add_processes(first, spawn, max_processes=max_processes, seed=seed,
                         enough=lambda processes: decided_enough(question, processes,
                                                                 min_processes))


def quiet(samples: PairSamples) -> bool:
    """Whether the cores the process measured on were quiet enough while ``samples`` were taken
    for one process alone to decide: other processes kept at most the cores it left spare,
    plus :data:`QUIET_OTHER_CPU_CORES`, busy (a 1-thread measurement beside one busy core of two
    is as clean as a 2-thread one on an idle machine)."""
    others = samples.other_cpu_cores
    if others is None:
        return False
    spare = max(0, (samples.cores or samples.threads) - samples.threads)
    return others <= spare + QUIET_OTHER_CPU_CORES


def threads_clause(processes: Sequence[PairSamples]) -> str:
    """How many intra-op threads measured and why, e.g. ``1 thread (threads=auto: 2 cores,
    other processes kept 0.93 busy)``."""
    counts = sorted({p.threads for p in processes})
    text = f"{'/'.join(map(str, counts))} thread{'' if counts == [1] else 's'}"
    first = processes[0]
    busy = [p.warmup_other_cpu_cores for p in processes if p.warmup_other_cpu_cores is not None]
    if first.threads_requested == "auto" and busy:
        cores = f"{first.cores} cores, " if first.cores else ""
        return text + (f" (threads=auto: {cores}other processes kept "
                       f"{statistics.median(busy):.2f} busy)")
    if first.threads_requested not in (None, "auto"):
        return text + f" (threads={first.threads_requested})"
    return text


@dataclass(frozen=True)
class Conclusion:
    """The decision on pooled processes, the verdict after the policy, and its message."""

    decision: stats.RatioDecision
    verdict: str  # pass | fail | inconclusive
    decided_by: str  # interval | estimate
    message: str
    fields: dict[str, Any]  # GuardResult keyword arguments (without nodeid/kind/name/device)

    @property
    def inconclusive(self) -> bool:
        return self.decision.decision == stats.Decision.INCONCLUSIVE


def conclude(question: RatioQuestion, processes: list[PairSamples], *, label: str, device: str,
             budget_s: float, policy: str, how_to_decide: str = HOW_TO_DECIDE) -> Conclusion:
    """Decide on ``processes`` and write the message a user reads (estimate, interval,
    threshold, samples x processes, device, per-process estimates, median times).
    ``how_to_decide`` ends the message of an inconclusive interval, in the caller's terms."""
    rd = question.decide(processes)
    sign = -1.0 if question.kind == "faster" else 1.0
    # The point the estimate policy uses: the median process, not the pooled mean, which one
    # process of a busy machine can drag anywhere (docs/statistics.md#deciding).
    point = math.exp(sign * statistics.median(e.estimate for e in rd.pooled.per_process))
    verdict, decided_by = rd.decision.value, "interval"
    if rd.decision == stats.Decision.INCONCLUSIVE and policy == "estimate":
        # Beyond the threshold by more than the between-process spread: fail; else pass.
        verdict = stats.point_decision(point, rd.threshold, at_least=question.kind == "faster",
                                       margin=rd.pooled.tau).value
        decided_by = "estimate"
    metric = question.metric
    counts = [p.n_blocks for p in processes]
    med_c = [p.medians()[0] for p in processes]
    med_b = [p.medians()[1] for p in processes]
    word = (f"at least {rd.threshold:.3g}x" if question.kind == "faster" else
            f"at most {rd.threshold:.3g}x (tolerance {question.threshold:.0%})")
    per_process = ", ".join(f"{math.exp(sign * e.estimate):.3f}" for e in rd.pooled.per_process)
    plural = "es" if len(processes) > 1 else ""
    message = (
        f"{label}: {verdict.upper()}: {metric} {rd.estimate:.3f}x, {question.confidence:.0%} "
        f"interval [{rd.ci_low:.3f}, {rd.ci_high:.3f}], required {word}\n"
        f"  samples: {'+'.join(map(str, counts))} rounds x {len(processes)} process{plural} on "
        f"{device} ({threads_clause(processes)}, inference_mode="
        f"{processes[0].inference_mode}); per-process {metric}s {per_process}\n"
        f"  median time per call: candidate {format_seconds(statistics.median(med_c))}, "
        f"baseline {format_seconds(statistics.median(med_b))}; between-process sd "
        f"{rd.pooled.tau:.3f} (log{', assumed for one process' if len(processes) == 1 else ''})"
    )
    faults_per_call = [p.faults_per_call() for p in processes]
    faults = [f for f in faults_per_call if f is not None]
    if faults and max(max(f) for f in faults) >= NOTABLE_FAULTS_PER_CALL:
        message += (f"\n  minor page faults per call: candidate "
                    f"{statistics.median(f[0] for f in faults):,.0f}, baseline "
                    f"{statistics.median(f[1] for f in faults):,.0f} (memory faulted in again "
                    f"every call: docs/page-faults.md)")
    if rd.decision == stats.Decision.INCONCLUSIVE:
        message += (f"\n  INCONCLUSIVE: the interval straddles {rd.threshold:.3g} after "
                    f"{budget_s:g} s x {len(processes)} processes; "
                    + (f"the median process's {metric} {point:.3f}x decided (a failure needs it "
                       f"beyond the threshold by more than the between-process sd "
                       f"{rd.pooled.tau:.3f}); " if decided_by == "estimate" else "")
                    + _busy_note(processes)
                    + how_to_decide)
    fields = dict(
        metric=metric, estimate=rd.estimate, ci_low=rd.ci_low, ci_high=rd.ci_high,
        threshold=rd.threshold, verdict=verdict, decided_by=decided_by,
        samples_per_process=counts, n_processes=len(processes), budget_s=budget_s,
        message=message,
        extra={"confidence": question.confidence, "candidate_median_s": med_c,
               "baseline_median_s": med_b, "tau": rd.pooled.tau, "tau_dl": rd.pooled.tau_dl,
               "threads": processes[0].threads, "inference_mode": processes[0].inference_mode,
               "threads_per_process": [p.threads for p in processes],
               "threads_requested": processes[0].threads_requested,
               "cores": processes[0].cores,
               "warmup_other_cpu_cores": [p.warmup_other_cpu_cores for p in processes],
               "interval_decision": rd.decision.value, "policy": policy,
               "elapsed_s": [p.elapsed_s for p in processes],
               "other_cpu_cores": [p.other_cpu_cores for p in processes],
               "worker_wall_s": [p.wall_s for p in processes[1:]],
               "pids": [p.pid for p in processes], "point_estimate": point,
               "faults_per_call": faults_per_call},
    )
    return Conclusion(rd, verdict, decided_by, message, fields)


def _busy_note(processes: Sequence[PairSamples]) -> str:
    """A clause naming how busy other processes kept the machine, when they did."""
    others = [p.other_cpu_cores for p in processes if p.other_cpu_cores is not None]
    if all(quiet(p) or p.other_cpu_cores is None for p in processes):
        return ""
    return (f"other processes kept {statistics.median(others):.2f} cores busy (median over "
            f"processes) while it measured; ")
