"""Performance guards: assertions about speed and work, usable from pytest or plain Python.

Timing guards (``faster``, ``not_slower``, ``scaling(metric="time")``) compare measurements and
decide statistically (:mod:`pytest_mmperf.timing.ratio`, :mod:`pytest_mmperf.timing.stats`).
Counter guards
(``max_ops``, ``ops_constant``, ``max_memory``, ``max_flops``, ``scaling`` of ops/memory/FLOPs,
``no_sync``, ``snapshot``) are deterministic. Every call returns a :class:`GuardResult` and hands
it to the ``recorder``; a failing guard raises :class:`GuardFailure`, an ``AssertionError``, so
``pytest.raises(AssertionError)``, ``xfail(raises=...)`` and plain ``try`` blocks can hold it.

This module is the pytest-free core: it imports neither pytest nor torch (counters load torch
when a counter guard runs). The ``mmperf_guard`` fixture (:mod:`pytest_mmperf.glue.guard_fixture`)
subclasses :class:`Guard` for the pytest side: worker processes, skips, the timing marker.

Outside pytest::

    guard = Guard()                                   # one process, default budget
    guard.faster(new_preprocess, old_preprocess, at_least=1.5)
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pytest_mmperf import settings as rules
from pytest_mmperf.constants import (
    COUNTER_METRICS,
    DEFAULT_BUDGET_S,
    DEFAULT_CONFIDENCE,
    DEFAULT_INCONCLUSIVE,
    DEFAULT_PROCESSES,
    SCALAR_NAMES,
    SCALING_METRICS,
)
from pytest_mmperf.counting.opnames import canonical_op, op_matches, sum_ops
from pytest_mmperf.outcomes import (
    GuardFailure,
    GuardResult,
    GuardSkipped,
    MmperfInconclusiveWarning,
)
from pytest_mmperf.settings import THREADS_AUTO, Threads
from pytest_mmperf.timing import stats
from pytest_mmperf.timing.isolation import WorkerError
from pytest_mmperf.timing.measure import DEFAULT_MIN_BLOCKS, PairSamples, time_one, time_pair
from pytest_mmperf.timing.ratio import (
    HOW_TO_DECIDE,
    MIN_PROCESSES_TO_STOP,
    RatioQuestion,
    add_processes,
    conclude,
    pool_processes,
)
from pytest_mmperf.units import format_seconds, parse_bytes

__all__ = ["Guard", "GuardFailure", "GuardResult", "GuardSettings", "GuardSkipped",
           "Instruments", "MmperfInconclusiveWarning"]


@dataclass(frozen=True)
class GuardSettings:
    """How timing guards measure and decide (the pytest plugin fills it from its settings; each
    field is checked by its rule in :mod:`pytest_mmperf.settings`, ``ValueError`` naming it).

    budget_s: measuring seconds per process; processes: at most this many pooled processes;
    confidence: of the intervals; inconclusive: ``estimate`` | ``fail`` | ``skip``; min_blocks:
    rounds per process at least; tau_floor: the between-process spread always assumed (log);
    seed: of the interleaving order; update_snapshots: rewrite snapshots instead of checking;
    threads: intra-op threads while measuring, ``"auto"`` (the cores other processes leave
    free, at most torch's own count), a number, or None (torch's count as it is).
    """

    budget_s: float = DEFAULT_BUDGET_S
    processes: int = DEFAULT_PROCESSES
    confidence: float = DEFAULT_CONFIDENCE
    inconclusive: str = DEFAULT_INCONCLUSIVE
    min_blocks: int = DEFAULT_MIN_BLOCKS
    tau_floor: float = stats.DEFAULT_TAU_FLOOR
    seed: int = 0
    update_snapshots: bool = False
    threads: Threads = THREADS_AUTO

    def __post_init__(self) -> None:
        rules.check_fields(self, "GuardSettings", budget_s=rules.BUDGET_S,
                           processes=rules.PROCESSES, confidence=rules.CONFIDENCE,
                           inconclusive=rules.INCONCLUSIVE, seed=rules.SEED,
                           threads=rules.THREADS_OR_NONE)


@dataclass(frozen=True)
class Instruments:
    """What measures: timers and counters. Injectable, so unit tests need no real timing."""

    measure_pair: Callable[..., PairSamples] = time_pair
    measure_one: Callable[..., Any] = time_one
    # default: pytest_mmperf.counting.counters.measure_counters
    counters: Callable[..., Any] | None = None


# spawner(guard_call_index, process_number, budget_s, seed) -> samples of one fresh process
Spawner = Callable[[int, int, float, int], PairSamples]
# fn_of_size(size) builds the inputs of one size and returns the zero-argument callable to run
SizedFactory = Callable[[Any], Callable[[], object]]


class Guard:
    """The guards of one test (or one script). Results go to ``recorder``; ``spawner`` runs the
    same guard call in fresh processes (without one, ratio guards use this process only)."""

    # What a message tells its reader to change, in GuardSettings terms; the pytest glue's
    # subclass names its command-line options instead.
    how_to_decide = HOW_TO_DECIDE
    isolation_off = "GuardSettings(processes=1) turns it off"

    def __init__(self, settings: GuardSettings | None = None, *, nodeid: str = "",
                 device: str = "cpu", recorder: Callable[[GuardResult], None] | None = None,
                 spawner: Spawner | None = None, snapshot_store: Any = None,
                 instruments: Instruments | None = None) -> None:
        self.settings = settings if settings is not None else GuardSettings()
        self.nodeid, self.device = nodeid, str(device)
        self.recorder, self.spawner, self.snapshot_store = recorder, spawner, snapshot_store
        self.instruments = instruments if instruments is not None else Instruments()
        self._calls = 0

    # ---------------------------------------------------------------- extension points
    def _start(self, kind: str, name: str | None, device: str, *, timing: bool,
               timing_run: Callable[[float, int], PairSamples] | None = None
               ) -> GuardResult | None:
        """Called first by every guard; a result returned here is returned without measuring.
        The pytest glue uses it for worker processes and the timing checks."""
        self._calls += 1
        return None

    def _skip(self, reason: str, result: GuardResult | None = None) -> NoReturn:
        """Where pytest would skip the test (the pytest glue overrides this with pytest.skip)."""
        raise GuardSkipped(reason, result)

    def _record(self, result: GuardResult) -> None:
        if self.recorder is not None:
            self.recorder(result)

    def _finish(self, result: GuardResult) -> GuardResult:
        __tracebackhide__ = True
        self._record(result)
        if result.verdict == "fail":
            self._fail(result)
        return result

    def _fail(self, result: GuardResult) -> NoReturn:
        __tracebackhide__ = True
        raise GuardFailure(result.message, result)

    @property
    def call_index(self) -> int:
        """0-based index of the guard call in progress (the order of calls in the test)."""
        return self._calls - 1

    # ---------------------------------------------------------------- ratio guards
    def faster(self, candidate: Callable[[], object], baseline: Callable[[], object],
               at_least: float = 1.0, *, name: str | None = None, device: Any = None,
               inference_mode: bool = True, min_processes: int = MIN_PROCESSES_TO_STOP
               ) -> GuardResult:
        """Candidate is at least ``at_least`` times faster than baseline: speedup
        ``t_baseline / t_candidate`` >= ``at_least`` (decided on the pooled interval).
        ``min_processes``: pool at least this many processes even when the decision is clear
        earlier (capped by ``processes``), for a narrower interval in a report."""
        __tracebackhide__ = True
        if not (isinstance(at_least, (int, float)) and at_least > 0 and math.isfinite(at_least)):
            raise ValueError(f"faster(at_least=...) must be a finite ratio > 0, got {at_least!r}")
        return self._ratio("faster", candidate, baseline, float(at_least), name, device,
                           inference_mode, min_processes)

    def not_slower(self, candidate: Callable[[], object], baseline: Callable[[], object],
                   tolerance: float = 0.10, *, name: str | None = None, device: Any = None,
                   inference_mode: bool = True, min_processes: int = MIN_PROCESSES_TO_STOP
                   ) -> GuardResult:
        """Candidate is not slower than baseline beyond ``tolerance``: slowdown
        ``t_candidate / t_baseline`` <= ``1 + tolerance``. ``min_processes`` as in
        :meth:`faster`."""
        __tracebackhide__ = True
        if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < math.inf):
            raise ValueError(f"not_slower(tolerance=...) must be a finite fraction >= 0 "
                             f"(0.10 = 10 %), got {tolerance!r}")
        return self._ratio("not_slower", candidate, baseline, float(tolerance), name, device,
                           inference_mode, min_processes)

    def _ratio(self, kind: str, candidate: Callable[[], object], baseline: Callable[[], object],
               threshold: float, name: str | None, device: Any, inference_mode: bool,
               min_processes: int) -> GuardResult:
        __tracebackhide__ = True
        for what, fn in (("candidate", candidate), ("baseline", baseline)):
            if not callable(fn):
                raise TypeError(f"{kind}(): {what} must be a zero-argument callable, got "
                                f"{type(fn).__name__} {fn!r}")
        if isinstance(min_processes, bool) or not isinstance(min_processes, int) \
                or min_processes < 1:
            raise ValueError(f"{kind}(min_processes=...) must be an int >= 1, got "
                             f"{min_processes!r}")
        s, dev = self.settings, self._dev(device)
        question = RatioQuestion(kind, threshold, s.confidence, s.tau_floor)

        def run(budget_s: float, seed: int) -> PairSamples:
            return self.instruments.measure_pair(
                candidate, baseline, dev, budget_s=budget_s, min_blocks=s.min_blocks,
                inference_mode=inference_mode, seed=seed, should_stop=question.stop_rule(),
                threads=s.threads)

        early = self._start(kind, name, dev, timing=True, timing_run=run)
        if early is not None:
            return early
        started = time.perf_counter()
        index = self.call_index
        seed = s.seed * 1000 + index * 10
        spawner = self.spawner
        spawn = None if spawner is None else (
            lambda k, process_seed: spawner(index, k, s.budget_s, process_seed))
        label = f"{kind}({name})" if name else f"{kind}()"
        try:
            processes = pool_processes(question, run(s.budget_s, seed), spawn,
                                       max_processes=s.processes, min_processes=min_processes,
                                       seed=seed)
        except WorkerError as exc:
            message = (f"{label}: could not pool processes: {exc}\n  (process isolation re-runs "
                       f"this test in fresh interpreters; {self.isolation_off})")
            return self._finish(GuardResult(
                nodeid=self.nodeid, kind=kind, name=name, metric=question.metric, estimate=None,
                threshold=question.ratio_limit, verdict="fail", decided_by="worker-error",
                device=dev, budget_s=s.budget_s, message=message,
                extra={"returncode": exc.returncode}))
        outcome = conclude(question, processes, label=label, device=dev, budget_s=s.budget_s,
                           policy=s.inconclusive, how_to_decide=self.how_to_decide)
        result = GuardResult(nodeid=self.nodeid, kind=kind, name=name, device=dev,
                             **outcome.fields)
        # where the wall time went: measuring (elapsed_s) against the whole guard
        result.extra["guard_wall_s"] = time.perf_counter() - started
        if outcome.inconclusive:
            if s.inconclusive == "estimate":
                # the user's line: warn <- _ratio <- faster/not_slower <- the test
                warnings.warn(MmperfInconclusiveWarning(f"{self.nodeid}: {outcome.message}"),
                              stacklevel=3)
            elif s.inconclusive == "fail":
                self._record(result)  # recorded as inconclusive; the test fails
                self._fail(result)
            else:
                self._record(result)
                self._skip(outcome.message, result)
        return self._finish(result)

    def sample_pair(self, candidate: Callable[[], object], baseline: Callable[[], object], *,
                    processes: int, budget_s: float, min_blocks: int | None = None,
                    warmup_s: float = 0.02, name: str | None = None, device: Any = None,
                    inference_mode: bool = False) -> list[PairSamples] | None:
        """Interleaved samples of candidate and baseline from ``processes`` processes (this one
        first), without a decision: what a report family measures. Counts as one guard call
        (workers re-run it like a ratio guard); returns None in a worker before its target."""
        s, dev = self.settings, self._dev(device)
        blocks = s.min_blocks if min_blocks is None else min_blocks

        def run(budget: float, seed: int) -> PairSamples:
            return self.instruments.measure_pair(
                candidate, baseline, dev, budget_s=budget, min_blocks=blocks,
                inference_mode=inference_mode, seed=seed, warmup_s=warmup_s,
                threads=s.threads)

        if self._start("family", name, dev, timing=True, timing_run=run) is not None:
            return None
        index = self.call_index
        seed = s.seed * 1000 + index * 10
        spawner = self.spawner
        spawn = None if spawner is None else (
            lambda k, process_seed: spawner(index, k, budget_s, process_seed))
        return add_processes(run(budget_s, seed), spawn, max_processes=processes, seed=seed)

    # ---------------------------------------------------------------- counter guards
    def _count(self, fn: Callable[[], object], device: str, metrics: Sequence[str]) -> Any:
        if not callable(fn):
            raise TypeError(f"expected a zero-argument callable, got {type(fn).__name__} {fn!r}")
        counters = self.instruments.counters
        if counters is None:
            from pytest_mmperf.counting.counters import measure_counters

            counters = measure_counters
        return counters(fn, device=device, metrics=tuple(metrics))

    def _counter_result(self, kind: str, name: str | None, metric: str, dev: str,
                        value: float | None, limit: float | str | dict[str, float] | None,
                        ok: bool, message: str, extra: dict[str, Any]) -> GuardResult:
        __tracebackhide__ = True
        verdict = "pass" if ok else "fail"
        label = f"{kind}({name})" if name else f"{kind}()"
        return self._finish(GuardResult(
            nodeid=self.nodeid, kind=kind, name=name, metric=metric, estimate=value,
            threshold=limit, verdict=verdict, decided_by="count", device=dev,
            message=f"{label}: {verdict.upper()}: {message}", extra=extra))

    def max_ops(self, fn: Callable[[], object], limits: Mapping[str, int] | int, *,
                name: str | None = None, device: Any = None) -> GuardResult:
        """Dispatched aten ops of ``fn()`` stay within ``limits``: ``{op: max_count}`` (op names in
        any spelling: ``"mm"``, ``"aten::mm"``, ``"aten.mm.default"``; key ``"*"`` = all ops), or
        one int for the total."""
        __tracebackhide__ = True
        dev = self._dev(device)
        table = {"*": limits} if isinstance(limits, int) else dict(limits)
        bad = {k: v for k, v in table.items() if not isinstance(v, int) or v < 0}
        if not table or bad:
            raise ValueError(f"max_ops limits must map op names to ints >= 0 (or be one int), "
                             f"got {limits!r}")
        for op in table:
            if op != "*":
                canonical_op(op)  # a malformed name fails before measuring
        if (early := self._start("max_ops", name, dev, timing=False)) is not None:
            return early
        report = self._count(fn, dev, ("ops",))
        counts = {op: sum_ops(report.ops, None if op == "*" else op) for op in table}
        over = {op: (counts[op], table[op]) for op in table if counts[op] > table[op]}
        detail = ", ".join(f"{op}: {counts[op]} (max {table[op]})" for op in table)
        return self._counter_result(
            "max_ops", name, "ops", dev, sum(counts.values()), dict(table), not over,
            f"op counts {detail}" + (f"; over the limit: {sorted(over)}" if over else ""),
            {"counts": counts, "limits": table, "ops": dict(report.ops)})

    def ops_constant(self, fn_of_size: SizedFactory, sizes: Sequence[Any],
                     only: Sequence[str] | str | None = None, *, name: str | None = None,
                     device: Any = None) -> GuardResult:
        """Vectorisation guard: the number of dispatched ops (optionally only ``only``) of
        ``fn_of_size(size)()`` must not grow with size. ``fn_of_size(size)`` builds the inputs
        and returns the zero-argument callable to count (its own work is not counted)."""
        __tracebackhide__ = True
        dev = self._dev(device)
        sizes = _check_sizes(sizes, "ops_constant")
        only_list = [only] if isinstance(only, str) else list(only or [])
        wanted = [canonical_op(o) for o in only_list]
        if (early := self._start("ops_constant", name, dev, timing=False)) is not None:
            return early
        per_size = [self._count(_built(fn_of_size, s), dev, ("ops",)).ops for s in sizes]
        totals = [sum_ops(ops, only) for ops in per_size]
        grew = {op for ops in per_size[1:] for op in ops
                if (only is None or any(op_matches(op, w) for w in wanted))
                and ops[op] > per_size[0].get(op, 0)}
        ok = all(t <= totals[0] for t in totals)
        what = "ops" if only is None else f"ops {sorted(set(wanted))}"
        table = ", ".join(f"{s}: {t}" for s, t in zip(sizes, totals, strict=True))
        growth = "; ".join(f"{op} " + "->".join(str(ops.get(op, 0)) for ops in per_size)
                           for op in sorted(grew))
        return self._counter_result(
            "ops_constant", name, "ops", dev, totals[-1], totals[0], ok,
            f"{what} per size {table}" + ("" if ok else f"; ops that grew with size: {growth}"),
            {"sizes": list(sizes), "values": totals, "grew": sorted(grew)})

    def max_memory(self, fn: Callable[[], object], limit: int | float | str, *,
                   name: str | None = None, device: Any = None) -> GuardResult:
        """Peak tensor memory during ``fn()`` is at most ``limit`` (bytes or e.g. ``"64 MiB"``)."""
        __tracebackhide__ = True
        return self._max_counter("max_memory", "peak_memory", fn,
                                 parse_bytes(limit, "max_memory limit"), name, device)

    def max_flops(self, fn: Callable[[], object], limit: int | float, *, name: str | None = None,
                  device: Any = None) -> GuardResult:
        """FLOPs of ``fn()`` (``FlopCounterMode`` plus missing formulas) are at most ``limit``."""
        __tracebackhide__ = True
        if not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"max_flops limit must be a number >= 0, got {limit!r}")
        return self._max_counter("max_flops", "flops", fn, limit, name, device)

    def _max_counter(self, kind: str, metric: str, fn: Callable[[], object], limit: float,
                     name: str | None, device: Any) -> GuardResult:
        __tracebackhide__ = True
        dev = self._dev(device)
        if (early := self._start(kind, name, dev, timing=False)) is not None:
            return early
        value = _metric_value(self._count(fn, dev, (metric,)), metric)
        return self._counter_result(kind, name, metric, dev, value, limit, value <= limit,
                                    f"{metric} {value:,} (max {limit:,})", {metric: value})

    def no_sync(self, fn: Callable[[], object], *, name: str | None = None,
                device: Any = None) -> GuardResult:
        """``fn()`` makes no host-device synchronisation (CUDA only; skipped elsewhere)."""
        __tracebackhide__ = True
        dev = self._dev(device)
        if (early := self._start("no_sync", name, dev, timing=False)) is not None:
            return early
        if not dev.startswith("cuda"):
            reason = f"no_sync needs a CUDA device: {dev} has no host-device synchronisation"
            result = GuardResult(nodeid=self.nodeid, kind="no_sync", name=name, metric="syncs",
                                 estimate=None, threshold=0, verdict="skipped",
                                 decided_by="skip", n_processes=0, device=dev, message=reason)
            self._record(result)
            self._skip(reason, result)
        syncs = self._count(fn, dev, ("syncs",)).syncs or 0
        return self._counter_result("no_sync", name, "syncs", dev, syncs, 0, syncs == 0,
                                    f"{syncs} host-device synchronisations (max 0)",
                                    {"syncs": syncs})

    def scaling(self, fn_of_size: SizedFactory, sizes: Sequence[float], metric: str = "time",
                max_exponent: float = 1.0, *, name: str | None = None,
                device: Any = None) -> GuardResult:
        """The log-log slope of ``metric`` (time | memory | ops | flops) of ``fn_of_size(size)()``
        against size is at most ``max_exponent`` (1 = linear, 2 = quadratic). Time is the median
        per call in this process (budget split across sizes; no process pooling)."""
        __tracebackhide__ = True
        if metric not in SCALING_METRICS:
            raise ValueError(f"scaling(metric={metric!r}): accepted metrics are {SCALING_METRICS}")
        dev = self._dev(device)
        sizes = _check_sizes(sizes, "scaling")
        if (early := self._start("scaling", name, dev, timing=metric == "time")) is not None:
            return early
        values: list[float] = []
        if metric == "time":
            budget = self.settings.budget_s / len(sizes)
            for s in sizes:
                one = self.instruments.measure_one(_built(fn_of_size, s), dev,
                                                   min_blocks=self.settings.min_blocks,
                                                   budget_s=budget, threads=self.settings.threads)
                values.append(one.median_s)
        else:
            key = {"memory": "peak_memory"}.get(metric, metric)
            values = [float(_metric_value(self._count(_built(fn_of_size, s), dev, (key,)), key))
                      for s in sizes]
        slope, intercept, r2 = stats.fit_loglog_slope([float(s) for s in sizes],
                                                      [max(v, 1e-30) for v in values])
        shown = ", ".join(f"{s}: {format_seconds(v) if metric == 'time' else f'{v:,.0f}'}"
                          for s, v in zip(sizes, values, strict=True))
        return self._counter_result(
            "scaling", name, f"{metric} exponent", dev, slope, max_exponent,
            slope <= max_exponent,
            f"{metric} ~ size^{slope:.2f} (r²={r2:.3f}), max exponent {max_exponent:g}; {shown}",
            {"sizes": list(sizes), "values": values, "slope": slope, "intercept": intercept,
             "r2": r2, "metric": metric})

    def snapshot(self, name: str, fn: Callable[[], object],
                 metrics: Sequence[str] = ("ops", "flops", "peak_memory"),
                 tolerance: float | Mapping[str, float] = 0.0, *, device: Any = None
                 ) -> GuardResult:
        """Counters of ``fn()`` match the snapshot ``name`` in the committed snapshot file within
        ``tolerance`` (relative, in either direction); ``GuardSettings(update_snapshots=True)``
        rewrites it."""
        __tracebackhide__ = True
        if not isinstance(name, str) or not name:
            raise ValueError(f"snapshot name must be a non-empty string, got {name!r}")
        bad = [m for m in metrics if m not in COUNTER_METRICS]
        if bad or not metrics:
            raise ValueError(f"snapshot metrics {list(metrics)!r}: accepted {COUNTER_METRICS}")
        dev = self._dev(device)
        if (early := self._start("snapshot", name, dev, timing=False)) is not None:
            return early
        if self.snapshot_store is None:
            raise RuntimeError("snapshot(): no snapshot store; pass Guard(snapshot_store="
                               "pytest_mmperf.counting.snapshots.SnapshotStore(path)) or use the "
                               "mmperf_guard fixture")
        report = self._count(fn, dev, tuple(metrics))
        # Stored under CounterReport.scalars() names, so files read the same whoever writes them.
        values: dict[str, int] = {}
        for m in metrics:
            raw = _metric_value(report, m, none_ok=True)
            if raw is not None:
                values[SCALAR_NAMES[m]] = raw
        if isinstance(tolerance, Mapping):
            tolerance = {SCALAR_NAMES.get(k, k): v for k, v in tolerance.items()}
        key = name if dev == "cpu" else f"{name}[{dev.split(':')[0]}]"
        outcome = self.snapshot_store.check(key, values, tolerance,
                                            self.settings.update_snapshots)
        return self._counter_result(
            "snapshot", name, "snapshot", dev, None,
            dict(tolerance) if isinstance(tolerance, Mapping) else float(tolerance),
            not outcome.failed, f"{key}: {outcome.status}: {outcome.message}",
            {"values": values, "status": outcome.status})

    def _dev(self, device: Any) -> str:
        return str(device) if device is not None else self.device


def _check_sizes(sizes: Sequence[Any], kind: str) -> list[Any]:
    out = list(sizes)
    if len(out) < 2 or len(set(map(float, out))) < 2:
        raise ValueError(f"{kind}() needs at least 2 distinct sizes, got {out!r}")
    return out


def _built(fn_of_size: SizedFactory, size: Any) -> Callable[[], object]:
    fn = fn_of_size(size)
    if not callable(fn):
        raise TypeError(
            f"fn_of_size({size!r}) returned {type(fn).__name__}; it must build the inputs for "
            "that size and return a zero-argument callable that runs the work")
    return fn


def _metric_value(report: Any, metric: str, none_ok: bool = False) -> Any:
    """``report``'s value of a guard metric name (``None`` stays ``None`` with ``none_ok``)."""
    if metric == "ops":
        return sum_ops(report.ops)
    value = getattr(report, SCALAR_NAMES[metric])
    if value is None:
        return None if none_ok else 0
    return int(value)
