"""Is the working tree slower than REV? Pairs of processes in lockstep, pooled, decided.

:func:`compare` asks ``start_pair(k)`` for pair ``k`` of ready sides (one process of the working
tree, one of REV, both warm at the same benchmark), measures it in lockstep
(:mod:`pytest_mmperf.baseline.lockstep`) and pools the pairs' log ratios with the timing
guards' random-effects rule until the interval clears ``1 + tolerance`` or the pairs run out:
a ``not_slower`` question on ``t_working_tree / t_rev``. A confirmed slowdown also asks both
sides for their ``mmperf::`` stage breakdowns, to name the stage that grew most.

The outcome is a :class:`~pytest_mmperf.guards.GuardResult` of kind ``baseline`` with verdict
``pass`` (including confirmed speed-ups), ``fail`` (confirmed slower beyond the tolerance),
``new`` (the benchmark or the code it calls does not exist at REV), ``rev-error`` (REV's code
raised) or ``error`` (the comparison itself went wrong, e.g. REV's process imported the working
tree). Pytest-free.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_mmperf import settings as rules
from pytest_mmperf.baseline.lockstep import (
    SideError,
    Sides,
    ask_stages,
    measure_rounds,
    set_threads,
)
from pytest_mmperf.baseline.revision import Revision
from pytest_mmperf.constants import OTHER_STAGE
from pytest_mmperf.guards import GuardResult
from pytest_mmperf.settings import Threads
from pytest_mmperf.timing import stats
from pytest_mmperf.timing.measure import DEFAULT_MIN_BLOCKS, PairSamples
from pytest_mmperf.timing.ratio import RatioQuestion, conclude, decided_enough
from pytest_mmperf.units import format_seconds

KIND = "baseline"
DEFAULT_TOLERANCE = 0.10
# Pairs pooled at least before a decision: one pair's interval assumes the between-process
# spread (ratio.SINGLE_PROCESS_TAU) and so decides only clear-cut ratios; two pairs must agree
# before a commit is called slower (or faster), however clear-cut.
MIN_PAIRS = 2
# The between-pair spread always assumed (log): two processes in lockstep share the machine's
# drift and load, so pairs agree more closely than the timing guards' processes
# (stats.DEFAULT_TAU_FLOOR); where they disagree more, the DerSimonian-Laird estimate takes
# over (measured: docs/measurements.md#lockstep).
LOCKSTEP_TAU_FLOOR = 0.015


@dataclass(frozen=True)
class CompareSettings:
    """How a comparison measures and decides (the pytest glue fills it from its settings).

    tolerance: the slowdown fraction tolerated (0.10 = 10 %); budget_s: measuring seconds per
    pair; pairs: at most this many pairs of processes; the rest as in
    :class:`~pytest_mmperf.guards.GuardSettings`.
    """

    tolerance: float = DEFAULT_TOLERANCE
    budget_s: float = 2.0
    pairs: int = 3
    confidence: float = 0.95
    tau_floor: float = LOCKSTEP_TAU_FLOOR
    inconclusive: str = "estimate"
    threads: Threads = "auto"
    min_blocks: int = DEFAULT_MIN_BLOCKS
    seed: int = 0

    def __post_init__(self) -> None:
        rules.check_fields(self, "CompareSettings", tolerance=rules.TOLERANCE,
                           budget_s=rules.BUDGET_S, pairs=rules.PROCESSES,
                           confidence=rules.CONFIDENCE, inconclusive=rules.INCONCLUSIVE,
                           seed=rules.SEED, threads=rules.THREADS_OR_NONE)


StartPair = Callable[[int], Sides]


def compare(start_pair: StartPair, *, revision: Revision, settings: CompareSettings,
            nodeid: str, name: str | None, device: str, budget_note: str = "") -> GuardResult:
    """Measure and decide one comparison; never raises for what a side did (see the module
    docstring for the verdicts). ``start_pair(k)`` starts pair ``k`` (0-based) and returns its
    sides once both are warm, or raises :class:`SideError`."""
    question = RatioQuestion("not_slower", settings.tolerance, settings.confidence,
                             settings.tau_floor)
    label = _label(revision, name)
    base: dict[str, Any] = dict(nodeid=nodeid, kind=KIND, name=name, metric="vs baseline",
                                device=device, budget_s=settings.budget_s)
    started = time.perf_counter()
    processes: list[PairSamples] = []
    sides: Sides | None = None
    try:
        while True:
            k = len(processes)
            sides = start_pair(k)
            threads, busy = set_threads(sides, settings.threads)
            processes.append(measure_rounds(
                sides, budget_s=settings.budget_s, device=device,
                min_blocks=settings.min_blocks, seed=settings.seed * 1000 + k,
                should_stop=question.stop_rule(), threads_requested=str(settings.threads),
                warmup_other_cpu_cores=busy))
            if decided_enough(question, processes, MIN_PAIRS) \
                    or len(processes) >= settings.pairs:
                break
            sides.close()
            sides = None
        outcome = conclude(question, processes, label=label, device=device,
                           budget_s=settings.budget_s, policy=settings.inconclusive)
        stages = None
        if outcome.verdict == "fail" and sides is not None:
            try:
                stages = ask_stages(sides)
            except SideError:
                stages = None
    except SideError as exc:
        return _side_failure(exc, base, revision, label, processes)
    finally:
        if sides is not None:
            sides.close()
    fields: dict[str, Any] = {k: v for k, v in outcome.fields.items()
                              if k not in ("metric", "message", "budget_s")}
    result = GuardResult(**base, **fields, message="")
    result.extra.update(_revision_extra(revision))
    result.extra["guard_wall_s"] = time.perf_counter() - started
    change = _change(outcome.decision, settings.tolerance)
    result.extra["change"] = change
    result.extra["stages"] = stages
    result.extra["calls_per_block"] = [[p.candidate_number, p.baseline_number] for p in processes]
    result.extra["per_pair"] = _per_pair(processes)
    result.extra["pair_se"] = [e.se for e in outcome.decision.pooled.per_process]
    if os.environ.get("PYTEST_MMPERF_DUMP_PAIRS"):  # the raw rounds, for studies
        with open(os.environ["PYTEST_MMPERF_DUMP_PAIRS"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps([p.to_dict() for p in processes]) + "\n")
    result.message = _message(label, revision, outcome.decision, processes, change,
                              outcome.verdict, outcome.decided_by, stages, budget_note,
                              question)
    return result


def _label(revision: Revision, name: str | None) -> str:
    what = f"{name} " if name else ""
    return f"{what}vs {revision.name}"


def _revision_extra(revision: Revision) -> dict[str, Any]:
    return {"revision": revision.name, "commit": revision.commit, "head": revision.head,
            "dirty": revision.dirty, "a_a": revision.same_as_working_tree}


def _change(decision: stats.RatioDecision, tolerance: float) -> str:
    """``slower`` (confirmed beyond the tolerance), ``faster`` (confirmed below 1), ``same``
    (within the tolerance, not confirmed faster), ``undecided``."""
    if decision.ci_low > 1.0 + tolerance:
        return "slower"
    if decision.ci_high < 1.0:
        return "faster"
    if decision.ci_high <= 1.0 + tolerance:
        return "same"
    return "undecided"


def _message(label: str, revision: Revision, decision: stats.RatioDecision,
             processes: list[PairSamples], change: str, verdict: str, decided_by: str,
             stages: dict[str, dict[str, float]] | None, budget_note: str,
             question: RatioQuestion) -> str:
    where = f"{revision.name} ({revision.short})"
    ratio = (f"time ratio {decision.estimate:.3f}x, {decision.pooled.confidence:.0%} interval "
             f"[{decision.ci_low:.3f}, {decision.ci_high:.3f}], tolerated "
             f"{1 + question.threshold:.3g}x")
    summary = {"slower": f"the working tree is slower than {where}",
               "faster": f"the working tree is faster than {where}",
               "same": f"the working tree is as fast as {where} (within the tolerance)",
               "undecided": f"undecided against {where}"}[change]
    head = statistics.median(statistics.median(p.candidate_s) for p in processes)
    rev = statistics.median(statistics.median(p.baseline_s) for p in processes)
    per_pair = ", ".join(f"{p:.3f}" for p in _per_pair(processes))
    threads = processes[0].threads
    lines = [
        f"{label}: {verdict.upper()}: {summary}: {ratio}",
        f"  median time per call: working tree {format_seconds(head)}, {revision.name} "
        f"{format_seconds(rev)}",
        f"  samples: {'+'.join(str(p.n_blocks) for p in processes)} rounds x {len(processes)} "
        f"pair{'s' if len(processes) > 1 else ''} of processes in lockstep on "
        f"{processes[0].device} ({threads} thread{'s' if threads != 1 else ''}); per-pair "
        f"ratios {per_pair}",
    ]
    if decided_by == "estimate":
        lines.append(f"  INCONCLUSIVE: the interval straddles {1 + question.threshold:.3g}x, so "
                     f"the median pair's ratio decided {verdict}{budget_note}")
    grew = _stage_that_grew(stages)
    if grew:
        lines.append(f"  stage that grew most: {grew}")
    if revision.same_as_working_tree:
        lines.append("  note: REV is HEAD and the tree is clean (an A/A run: both sides ran the "
                     "same code)")
    return "\n".join(lines)


def _per_pair(processes: list[PairSamples]) -> list[float]:
    return [statistics.median(c / b for c, b in zip(p.candidate_s, p.baseline_s, strict=True))
            for p in processes]


def _stage_that_grew(stages: dict[str, dict[str, float]] | None) -> str:
    if not stages or not stages.get("head") or not stages.get("rev"):
        return ""
    head, rev = stages["head"], stages["rev"]
    if set(head) | set(rev) <= {OTHER_STAGE}:
        return ""  # no mmperf:: labels: nothing to name
    growth = {s: head.get(s, 0.0) - rev.get(s, 0.0) for s in sorted(set(head) | set(rev))}
    stage, grew = max(growth.items(), key=lambda item: item[1])
    if grew <= 0:
        return ""
    return (f"{stage} +{format_seconds(grew)} per call ({format_seconds(rev.get(stage, 0.0))} at "
            f"REV -> {format_seconds(head.get(stage, 0.0))})")


def _side_failure(exc: SideError, base: dict[str, Any], revision: Revision, label: str,
                  processes: list[PairSamples]) -> GuardResult:
    """The result when a side could not be measured."""
    if exc.side == "rev" and exc.kind == "missing":
        verdict, text = "new", (f"{label}: NEW: not at {revision.name} ({revision.short}): "
                                f"{exc.message}")
    elif exc.side == "rev" and exc.kind == "error":
        verdict, text = "rev-error", (f"{label}: REV-ERROR: the benchmark raised at "
                                      f"{revision.name} ({revision.short}), not compared: "
                                      f"{exc.message}")
    else:
        verdict, text = "error", (f"{label}: ERROR: the comparison with {revision.name} "
                                  f"({revision.short}) failed in the {exc.side} process "
                                  f"({exc.kind}): {exc.message}")
    extra = _revision_extra(revision)
    extra.update(side=exc.side, side_error=exc.kind, pairs_measured=len(processes))
    return GuardResult(**base, estimate=None, threshold=None, verdict=verdict,
                       decided_by=exc.kind, n_processes=len(processes), message=text,
                       extra=extra)
