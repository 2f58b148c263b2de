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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pytest_mmperf.guards import Guard, GuardResult
from pytest_mmperf.report.families import (
    BENCHMARK_PLAN,
    SMOKE_PLAN,
    FamilyPlan,
    measure_family,
    measure_scaling,
)
from pytest_mmperf.report.figures import Breakdown, Claim, Family, FamilyRow, Scaling, claim_verdict
from pytest_mmperf.settings import BUDGET_S, PROCESSES
from pytest_mmperf.timing.measure import PairSamples

SCALING_REPORT_METRICS = ("time", "memory")
# A value the claim can read: a float, a family row, a guard result, or (value, (low, high)).
Measured = float | FamilyRow | GuardResult | tuple[float, Sequence[float]]


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
               budget_s: float | None = None, processes: int | None = None) -> Family:
        """Measure ``implementations`` (name -> zero-argument callable) against ``baseline``
        and record the family (see :mod:`pytest_mmperf.report.families`).

        items/unit: work items per call and their name, for throughput in ``<unit>/s``;
        flops/bytes: per call (one number or one per implementation), for GFLOP/s or GB/s and
        the fraction of the calibrated peak (a matmul of ``dtype``, one name or one per
        implementation, or a memory copy); breakdown: the
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
            flops=flops, bytes=bytes, dtype=dtype, device=dev, title=title,
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
              unit: str = "x", text: str = "") -> Claim:
        """Record a claim (e.g. an article's "30-50 % faster", ``claimed=(1.3, 1.5)``) against
        what was measured. ``measured`` maps labels to a family row (its speedup and
        interval), a ``faster`` guard result, a ``not_slower`` result (inverted to a speedup),
        a number, or ``(value, (low, high))``; the first label is the claim's own subject and
        decides the verdict: refuted below the claimed range, confirmed at or above its low
        end, else inconclusive."""
        if not isinstance(title, str) or not title:
            raise ValueError(f"claim title must be a non-empty string, got {title!r}")
        if len(claimed) != 2 or not float(claimed[0]) <= float(claimed[1]):
            raise ValueError(f"claim {title!r}: claimed must be (low, high) with low <= high, "
                             f"got {claimed!r}")
        if not measured:
            raise ValueError(f"claim {title!r}: measured needs at least one value")
        values: dict[str, float] = {}
        intervals: dict[str, list[float]] = {}
        for label, item in measured.items():
            values[label], intervals[label] = _value_and_interval(title, label, item)
        first = next(iter(measured))
        record = Claim(title=title, claimed=[float(c) for c in claimed], measured=values,
                       interval=intervals,
                       verdict=claim_verdict([float(c) for c in claimed], intervals[first]),
                       text=text, unit=unit, nodeid=self._nodeid)
        self._keep(record.to_dict())
        return record

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


def _value_and_interval(title: str, label: str, item: Any) -> tuple[float, list[float]]:
    if isinstance(item, FamilyRow):
        return item.speedup, [float(v) for v in item.speedup_ci]
    if isinstance(item, GuardResult):
        if item.estimate is None or item.ci_low is None or item.ci_high is None:
            raise ValueError(f"claim {title!r}: guard result {label!r} has no estimate "
                             f"(verdict {item.verdict})")
        if item.kind == "not_slower":  # a slowdown t_candidate / t_baseline: invert
            return 1.0 / item.estimate, [1.0 / item.ci_high, 1.0 / item.ci_low]
        return item.estimate, [item.ci_low, item.ci_high]
    if isinstance(item, tuple) and len(item) == 2:
        value, (low, high) = item
        return float(value), [float(low), float(high)]
    if isinstance(item, numbers.Real) and not isinstance(item, bool):
        return float(item), [float(item), float(item)]
    raise TypeError(f"claim {title!r}: measured[{label!r}] must be a FamilyRow, a GuardResult, a "
                    f"number or (value, (low, high)), got {type(item).__name__} {item!r}")
