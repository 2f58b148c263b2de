"""The ``mmperf_report`` fixture: measure and record a repository's own implementations.

``family`` (implementations against a baseline), ``scaling`` (a metric against size) and
``claim`` (a claimed range against what was measured) return typed records
(:mod:`pytest_mmperf.report.figures`) and add them to the run's report (terminal summary,
``--mmperf-json``, ``--mmperf-html``). Under plain ``pytest`` they measure at smoke cost (a few
rounds, one process) so that report code runs in every CI run; under ``pytest --benchmark`` at
the performance run's budget, with the family's pairs pooled over fresh worker processes like
the timing guards. Tests that call ``family`` or a timed ``scaling`` are timing tests
(``mmperf_timing``), found at collection.
"""

from __future__ import annotations

import functools
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeGuard

from pytest_mmperf.guards import Guard, GuardResult
from pytest_mmperf.report.calibrate import Roofline
from pytest_mmperf.report.families import (
    BENCHMARK_PLAN,
    SMOKE_PLAN,
    FamilyPlan,
    measure_family,
    measure_scaling,
)
from pytest_mmperf.report.figures import (
    Breakdown,
    Claim,
    Family,
    FamilyRow,
    Scaling,
    claim_verdict,
    real_interval,
)
from pytest_mmperf.settings import BUDGET_S, PROCESSES
from pytest_mmperf.timing import stats
from pytest_mmperf.timing.measure import PairSamples
from pytest_mmperf.timing.ratio import RatioQuestion, add_processes, quiet

SCALING_REPORT_METRICS = ("time", "memory")
# A value the claim can read: a float, a family row, a guard result, (value, (low, high)), or
# (candidate, baseline) callables that the claim measures itself.
Measured = (float | FamilyRow | GuardResult | tuple[float, Sequence[float]]
            | tuple[Callable[[], object], Callable[[], object]])


class MmperfReport:
    """What a test adds to the run's report. Built by the ``mmperf_report`` fixture.

    ``figures``: the session's record list; ``guard``: the test's guard (its process pooling and
    worker hand-off measure the families); ``benchmark``: the performance run's budgets.
    """

    def __init__(self, figures: list[dict[str, Any]], nodeid: str, guard: Guard, *,
                 benchmark: bool, device: str = "cpu", commits: Any = None) -> None:
        self._figures, self._nodeid, self._guard = figures, nodeid, guard
        self._plan = BENCHMARK_PLAN if benchmark else SMOKE_PLAN
        self._device = device
        # Comparisons across commits (--mmperf-baseline): ``before(name, implementations,
        # device)`` serves one implementation in a side process, ``after(...)`` compares each
        # with the baseline revision's in the parent (pytest_mmperf.glue.baseline).
        self._commits = commits

    @property
    def figures(self) -> list[dict[str, Any]]:
        return list(self._figures)

    @property
    def _in_worker(self) -> bool:
        """A worker or side process: it measures for the parent, whose report this is."""
        return (getattr(self._guard, "worker", None) is not None
                or bool(getattr(self._guard, "placeholders", False)))

    def _keep(self, record: dict[str, Any]) -> dict[str, Any]:
        if not self._in_worker:  # a worker's figures belong to the parent's run
            self._figures.append(record)
        return record

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Record a figure of any ``kind`` with ``fields`` (unknown kinds render as a table)."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"mmperf_report.add: kind must be a non-empty string, got {kind!r}")
        return self._keep({"kind": kind, "nodeid": self._nodeid, **fields})

    # ---------------------------------------------------------------- families
    def family(self, name: str, implementations: Mapping[str, Callable[[], object]], *,
               baseline: str, items: float | None = None, unit: str = "items",
               flops: float | Mapping[str, float] | None = None,
               bytes: float | Mapping[str, float] | None = None,  # noqa: A002 - the issue's name
               title: str | None = None, breakdown: bool = True, memory: bool = True,
               dtype: str | Mapping[str, str] = "float32", device: Any = None,
               note: str | None = None, before: Sequence[str] = (),
               budget_s: float | None = None, processes: int | None = None,
               roofline: Roofline | None = None,
               work: float | Mapping[str, float] | None = None) -> Family:
        """Measure ``implementations`` (name -> zero-argument callable) against ``baseline``
        and record the family (see :mod:`pytest_mmperf.report.families`).

        items/unit: work items per call and their name, for throughput in ``<unit>/s``;
        flops/bytes: per call (one number or one per implementation), for GFLOP/s or GB/s and
        the fraction of the calibrated peak (a matmul of ``dtype``, one name or one per
        implementation, or a memory copy); roofline/work: the family's own limit instead, a
        :class:`~pytest_mmperf.report.calibrate.Roofline` (its kernel measured at its best in
        this run, e.g. ``resize_roofline(sizes)`` for preprocessing, whose time is an
        antialiased resize, not a copy) and the units of its work per call (default ``items``
        when ``unit`` is the roofline's); the fraction of peak is then against it. Declare the
        limit the work really has: a row far below a roofline of the wrong kind is flagged
        BELOW ROOFLINE for nothing. breakdown: the
        stage breakdown from each implementation's ``mmperf::<stage>`` labels; memory: peak
        tensor memory of one call; before: implementations kept as "before" versions (never
        flagged below roofline as optimised code); budget_s/processes: per pair, overriding the
        run's plan.
        Returns the :class:`~pytest_mmperf.report.figures.Family` written to the report.
        """
        plan = self._plan_with(budget_s, processes)
        dev = str(device) if device is not None else self._device
        worker = self._in_worker
        guard = self._guard
        if self._commits is not None:
            self._commits.before(name, implementations, dev)

        def sample(candidate: Callable[[], object], baseline_fn: Callable[[], object],
                   label: str) -> list[PairSamples]:
            got = guard.sample_pair(candidate, baseline_fn, processes=plan.processes,
                                    budget_s=plan.budget_s, min_blocks=plan.min_blocks,
                                    name=label, device=dev)
            if got is None:  # a worker, before the pair it measures: a cheap stand-in, so the
                # test takes the same path as in the parent (its figures are discarded)
                got = [guard.instruments.measure_pair(
                    candidate, baseline_fn, dev, budget_s=SMOKE_PLAN.budget_s,
                    min_blocks=SMOKE_PLAN.min_blocks, inference_mode=False, warmup_s=0.0)]
            return got

        figures = measure_family(
            name, implementations, baseline=baseline, sample=sample,
            plan=replace(plan, calibration_s=0.0) if worker else plan, items=items, unit=unit,
            flops=flops, bytes=bytes, roofline=roofline, work=work, dtype=dtype, device=dev,
            title=title,
            breakdown=breakdown and not worker, memory=memory and not worker, note=note,
            confidence=guard.settings.confidence, before=before, nodeid=self._nodeid)
        self._keep(figures.family.to_dict())
        for record in (*figures.efficiencies, *figures.breakdowns):
            self._keep(record.to_dict())
        if self._commits is not None and not worker:
            self._commits.after(name, implementations, dev)
        return figures.family

    def _plan_with(self, budget_s: float | None, processes: int | None) -> FamilyPlan:
        plan = self._plan
        if budget_s is not None:
            plan = replace(plan, budget_s=BUDGET_S.field("family", "budget_s", budget_s))
        if processes is not None:
            plan = replace(plan, processes=PROCESSES.field("family", "processes", processes))
        return plan

    # ---------------------------------------------------------------- scaling
    def scaling(self, name: str, fn_of_size: Callable[..., Callable[[], object]],
                sizes: Sequence[float], *, implementations: Sequence[str] | None = None,
                metrics: Sequence[str] = SCALING_REPORT_METRICS, device: Any = None,
                budget_s: float | None = None) -> list[Scaling]:
        """Time (median per call, this process) and/or peak tensor memory against size.

        ``fn_of_size(size)`` (or ``fn_of_size(implementation, size)`` with
        ``implementations``) builds the inputs of one size and returns the zero-argument
        callable to measure. Returns one :class:`~pytest_mmperf.report.figures.Scaling` (with its
        log-log ``slope``) per implementation and metric.
        """
        bad = [m for m in metrics if m not in SCALING_REPORT_METRICS]
        if bad or not metrics:
            raise ValueError(f"scaling {name!r}: metrics {list(metrics)!r}; accepted "
                             f"{SCALING_REPORT_METRICS}")
        clean = [float(s) for s in sizes]
        if len(set(clean)) < 2 or min(clean) <= 0:
            raise ValueError(f"scaling {name!r} needs at least 2 distinct sizes > 0, got "
                             f"{list(sizes)!r}")
        if not callable(fn_of_size):
            raise TypeError(f"scaling {name!r}: fn_of_size must be callable, got {fn_of_size!r}")
        if implementations is None:
            fns: dict[str, Callable[[Any], Callable[[], object]]] = {name: fn_of_size}
        else:
            fns = {impl: functools.partial(fn_of_size, impl) for impl in implementations}
        if self._in_worker:
            return []  # only a family's pairs are pooled; nothing to measure here
        records = measure_scaling(
            name, fns, list(sizes), metrics=list(metrics),
            device=str(device) if device is not None else self._device,
            time_budget_s=budget_s if budget_s is not None else self._plan.budget_s * 2,
            min_blocks=self._plan.min_blocks, nodeid=self._nodeid)
        for record in records:
            self._keep(record.to_dict())
        return records

    # ---------------------------------------------------------------- claims
    def claim(self, title: str, *, claimed: Sequence[float], measured: Mapping[str, Measured],
              unit: str = "x", text: str = "", processes: int | None = None,
              time_limit_s: float | None = None) -> Claim:
        """Record a claim (e.g. an article's "30-50 % faster", ``claimed=(1.3, 1.5)``) against
        what was measured; the first label of ``measured`` is the claim's own subject and
        decides the verdict: refuted below the claimed range, confirmed at or above its low
        end, else inconclusive. ``measured`` maps labels to:

        * ``(candidate, baseline)``, two zero-argument callables: the speedup
          ``t_baseline / t_candidate``, measured here interleaved (the timing guards'
          machinery), with fresh processes added one at a time until its interval clears the
          claimed low end (either side) or the budget is spent: at most ``processes`` processes
          and ``time_limit_s`` wall seconds per pair, a process not being started if one as long
          as the average so far would overrun (defaults: the run's plan, 10 processes and 120 s
          under ``pytest --benchmark``, one process at smoke cost). The record keeps the
          processes pooled, whether each pair was decided, and the budget;
        * a family row (its speedup and interval), a ``faster`` guard result, a ``not_slower``
          result (inverted to a speedup), or ``(value, (low, high))``: recorded as given;
        * a bare number: an exact or derived value, recorded **without** an interval (never
          as ``[x, x]``); as the subject it decides by its value.

        ``unit`` must be ``"x"`` (a speedup) where a pair is measured.
        """
        if not isinstance(title, str) or not title:
            raise ValueError(f"claim title must be a non-empty string, got {title!r}")
        if len(claimed) != 2 or not float(claimed[0]) <= float(claimed[1]):
            raise ValueError(f"claim {title!r}: claimed must be (low, high) with low <= high, "
                             f"got {claimed!r}")
        if not measured:
            raise ValueError(f"claim {title!r}: measured needs at least one value")
        limits = self._claim_limits(title, processes, time_limit_s)
        low = float(claimed[0])
        values: dict[str, float] = {}
        intervals: dict[str, list[float]] = {}
        pooled: dict[str, int] = {}
        seconds: dict[str, float] = {}
        decided: dict[str, bool] = {}
        pairs_left = sum(1 for item in measured.values() if _is_pair(item))
        for label, item in measured.items():
            if _is_pair(item):
                pairs_left -= 1
                if unit != "x":
                    raise ValueError(f"claim {title!r}: measured[{label!r}] is a (candidate, "
                                     f"baseline) pair, which measures a speedup: unit must be "
                                     f"'x', got {unit!r}")
                if not low > 0:
                    raise ValueError(f"claim {title!r}: a measured pair needs a claimed low "
                                     f"end > 0 (a speedup), got {claimed!r}")
                started = time.perf_counter()
                decision, n = self._claim_pair(f"claim {title}: {label}", item, low, limits,
                                               pairs_left)
                seconds[label] = time.perf_counter() - started
                values[label], intervals[label] = decision.estimate, [decision.ci_low,
                                                                       decision.ci_high]
                pooled[label] = n
                decided[label] = decision.decision != stats.Decision.INCONCLUSIVE
            else:
                values[label], interval = _value_and_interval(title, label, item)
                if interval is not None:
                    intervals[label] = interval
        first = next(iter(measured))
        subject = intervals.get(first, [values[first], values[first]])
        record = Claim(title=title, claimed=[float(c) for c in claimed], measured=values,
                       interval=intervals,
                       verdict=claim_verdict([float(c) for c in claimed], subject),
                       text=text, unit=unit, processes=pooled, seconds=seconds,
                       decided=decided,
                       budget=({"max_processes": float(limits.claim_processes),
                                "max_seconds": limits.claim_seconds,
                                "per_process_s": limits.budget_s} if pooled else {}),
                       nodeid=self._nodeid)
        self._keep(record.to_dict())
        return record

    def _claim_limits(self, title: str, processes: int | None,
                      time_limit_s: float | None) -> FamilyPlan:
        plan = self._plan
        if processes is not None:
            plan = replace(plan, claim_processes=PROCESSES.field(f"claim {title!r}", "processes",
                                                                 processes))
        if time_limit_s is not None:
            plan = replace(plan, claim_seconds=BUDGET_S.field(f"claim {title!r}", "time_limit_s",
                                                              time_limit_s))
        return plan

    def _claim_pair(self, name: str, pair: tuple[Callable[[], object], Callable[[], object]],
                    low: float, plan: FamilyPlan, pairs_after: int
                    ) -> tuple[stats.RatioDecision, int]:
        """One claim pair: the parent's process through :meth:`Guard.sample_pair` (so workers
        find the same guard call), then fresh processes from the guard's spawner, one at a time
        (:func:`~pytest_mmperf.timing.ratio.add_processes`), until the interval clears ``low``
        or ``plan``'s budget is spent: ``claim_processes`` processes, or no time left in
        ``claim_seconds`` for one more process as long as the average one so far.
        ``pairs_after``: pairs of the same claim still to come (a worker whose target is one
        of them never leaves the claim, so this pair needs no stand-in there)."""
        candidate, baseline = pair
        guard, dev = self._guard, self._device
        started = time.perf_counter()
        got = guard.sample_pair(candidate, baseline, processes=1, budget_s=plan.budget_s,
                                min_blocks=plan.min_blocks, name=name, device=dev)
        settings = guard.settings
        question = RatioQuestion("faster", low, settings.confidence, settings.tau_floor)
        if got is None:  # a worker, before the pair it measures
            target = getattr(getattr(guard, "worker", None), "index", None)
            if isinstance(target, int) and target <= guard.call_index + pairs_after:
                # its target is a later pair of this claim: the test never gets past the claim
                # in this process, so no value of this pair is ever read; measure nothing
                first = PairSamples(candidate_s=[1.0, 1.0], baseline_s=[1.0, 1.0],
                                    candidate_number=1, baseline_number=1, order="cb",
                                    device=dev, threads=1, inference_mode=False, budget_s=0.0)
            else:  # the test goes on after the claim: a cheap stand-in, as family() takes
                first = guard.instruments.measure_pair(
                    candidate, baseline, dev, budget_s=SMOKE_PLAN.budget_s,
                    min_blocks=SMOKE_PLAN.min_blocks, inference_mode=False, warmup_s=0.0)
            return question.decide([first]), 1
        index, spawner = guard.call_index, guard.spawner
        seed = settings.seed * 1000 + index * 10  # as Guard.sample_pair seeds its processes
        spawn = None if spawner is None else (
            lambda k, process_seed: spawner(index, k, plan.budget_s, process_seed))

        def enough(processes: list[PairSamples]) -> bool:
            spent = time.perf_counter() - started
            if spent + spent / len(processes) > plan.claim_seconds:
                return True  # another process (as long as the average one) would overrun
            if len(processes) == 1 and not quiet(processes[0]):
                return False  # one process on a busy machine does not decide (ratio.py)
            return question.decide(processes).decision != stats.Decision.INCONCLUSIVE

        processes = add_processes(got[0], spawn, max_processes=plan.claim_processes, seed=seed,
                                  enough=enough)
        return question.decide(processes), len(processes)

    # ---------------------------------------------------------------- breakdowns
    def breakdown(self, fn: Callable[[], Any], *, family: str, implementation: str,
                  device: str = "cpu", repeats: int = 3) -> Breakdown:
        """Profile ``fn`` and record where its time goes, by ``torch.profiler.record_function``
        labels starting with ``mmperf::``
        (see :func:`pytest_mmperf.report.stages.stage_breakdown`)."""
        from pytest_mmperf.report.stages import stage_breakdown

        figure = stage_breakdown(fn, repeats=repeats, device=device).to_figure(family,
                                                                               implementation)
        record = Breakdown.from_dict({**figure, "nodeid": self._nodeid})
        self._keep(record.to_dict())
        return record


def _is_pair(item: Any) -> TypeGuard[tuple[Callable[[], object], Callable[[], object]]]:
    return isinstance(item, tuple) and len(item) == 2 and all(callable(f) for f in item)


def _value_and_interval(title: str, label: str, item: Any) -> tuple[float, list[float] | None]:
    """The value and its measured interval (None: a bare number, a baseline row, or an interval
    of zero width, which is no interval)."""
    if isinstance(item, FamilyRow):
        found = real_interval(item.speedup_ci)
        return item.speedup, None if found is None else list(found)
    if isinstance(item, GuardResult):
        if item.estimate is None or item.ci_low is None or item.ci_high is None:
            raise ValueError(f"claim {title!r}: guard result {label!r} has no estimate "
                             f"(verdict {item.verdict})")
        if item.kind == "not_slower":  # a slowdown t_candidate / t_baseline: invert
            value, low, high = 1.0 / item.estimate, 1.0 / item.ci_high, 1.0 / item.ci_low
        else:
            value, low, high = item.estimate, item.ci_low, item.ci_high
        found = real_interval([low, high])
        return value, None if found is None else list(found)
    if isinstance(item, tuple) and len(item) == 2:
        value, bounds = item
        try:
            low, high = (float(b) for b in bounds)
            value = float(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"claim {title!r}: measured[{label!r}] must be (value, (low, high)) "
                            f"of numbers or (candidate, baseline) callables, got {item!r}"
                            ) from exc
        if not low <= value <= high:
            raise ValueError(f"claim {title!r}: measured[{label!r}] = {value!r} lies outside its "
                             f"interval ({low!r}, {high!r})")
        found = real_interval([low, high])
        return value, None if found is None else list(found)
    if isinstance(item, numbers.Real) and not isinstance(item, bool):
        return float(item), None
    raise TypeError(f"claim {title!r}: measured[{label!r}] must be a FamilyRow, a GuardResult, "
                    f"(candidate, baseline) callables, a number or (value, (low, high)), got "
                    f"{type(item).__name__} {item!r}")
