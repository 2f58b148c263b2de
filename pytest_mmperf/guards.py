"""Performance guards: the assertions a test calls through the ``mmperf_guard`` fixture.

Timing guards (``faster``, ``not_slower``, ``scaling(metric="time")``) compare measurements and
decide statistically (see :mod:`pytest_mmperf.stats` for the rule). Counter guards (``max_ops``,
``ops_constant``, ``max_memory``, ``max_flops``, ``scaling`` of ops/memory/FLOPs, ``no_sync``,
``snapshot``) are deterministic. Every call records a :class:`GuardResult` for the run's report;
a failing guard fails the test with ``pytest.fail(message, pytrace=False)``; a passing one returns
its result.

Ratio guards pool fresh processes (:mod:`pytest_mmperf.isolation`): the parent measures first,
then adds worker processes one at a time, up to ``processes``, stopping once at least
``MIN_PROCESSES_TO_STOP`` processes give an interval clear of the threshold. If the interval still
straddles the threshold, ``inconclusive`` decides: ``"estimate"`` (the point estimate decides, the
result is marked as decided by the estimate and an :class:`MmperfInconclusiveWarning` says how to
get a clear decision), ``"fail"`` or ``"skip"``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

from pytest_mmperf import stats
from pytest_mmperf.isolation import WorkerError, WorkerSpec, write_worker_output
from pytest_mmperf.measure import DEFAULT_MIN_BLOCKS, PairSamples, time_one, time_pair

# The plugin's defaults (config.py: --mmperf-budget, --mmperf-processes), whose error rates
# tools/guard_error_rates.py measures (README). Between-process spread dominates on 2-core
# machines, so a guard stops adding processes only once two of them agree.
DEFAULT_BUDGET_S = 2.0  # measuring seconds per process for one ratio guard
DEFAULT_PROCESSES = 3  # at most: the parent + up to 2 fresh workers, added only while unclear
DEFAULT_CONFIDENCE = 0.95
INCONCLUSIVE_POLICIES = ("estimate", "fail", "skip")
MIN_PROCESSES_TO_STOP = 2
COUNTER_METRICS = ("ops", "flops", "bytes", "peak_memory", "syncs")
SCALING_METRICS = ("time", "memory", "ops", "flops")
XDIST_SKIP_REASON = "timing guards are skipped under pytest-xdist: parallel workers distort timing"
_HOW_TO_DECIDE = ("raise --mmperf-budget / --mmperf-processes, or run `pytest --benchmark`, "
                  "for a clear decision")


class MmperfInconclusiveWarning(UserWarning):
    """A timing guard's interval straddled its threshold when the budget ran out."""


@dataclass
class GuardResult:
    """One guard call, as shown in the terminal table and written to the JSON report."""

    nodeid: str
    kind: str  # faster | not_slower | max_ops | ops_constant | max_memory | max_flops | ...
    name: str | None
    metric: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    threshold: float | str | dict[str, float] | None  # dict: per-op limits, per-metric tolerances
    verdict: str  # pass | fail | inconclusive | skipped
    decided_by: str  # interval | estimate | count
    samples_per_process: list[int]
    n_processes: int
    device: str
    budget_s: float | None
    message: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Hooks the Guard needs from its surroundings; all injectable so unit tests need no subprocess.
MeasurePair = Callable[..., PairSamples]
# spawner(index, process_number, budget_s, seed) -> samples of one fresh worker process
Spawner = Callable[[int, int, float, int], PairSamples]


def _norm_op(name: str) -> str:
    """``aten::mm`` / ``aten.mm.default`` / ``mm`` -> ``mm`` (no namespace, no overload)."""
    text = name.replace("::", ".")
    if text.startswith("aten."):
        text = text[5:]
    return text.split(".", 1)[0]


def count_ops(ops: Mapping[str, int], only: Sequence[str] | str | None = None) -> int:
    """Total of ``ops`` counts, or of the ops named in ``only`` (any spelling, overloads summed)."""
    if only is None:
        return int(sum(ops.values()))
    wanted = {_norm_op(o) for o in ([only] if isinstance(only, str) else only)}
    return int(sum(n for k, n in ops.items() if k in wanted or _norm_op(k) in wanted))


_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(value: int | float | str, what: str = "limit") -> int:
    """``1048576`` / ``"1 MiB"`` / ``"64MB"`` -> bytes; anything else raises ``ValueError``."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a byte count or a string like '64 MiB', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{what} must be a finite number of bytes >= 0, got {value!r}")
        return int(value)
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):] or "b"
    if unit not in _UNITS or not number:
        raise ValueError(f"{what} {value!r} is not a byte count; use a number or e.g. '512 KiB', "
                         f"'64 MiB', '1.5 GB' (units: {', '.join(_UNITS)})")
    return int(float(number) * _UNITS[unit])


class Guard:
    """The guards of one test item. Built by :func:`guard_for_request` in a pytest run; build it
    directly (with injected ``measure_pair``/``spawner``/``counters``) for library use or tests.
    """

    def __init__(
        self,
        *,
        nodeid: str = "",
        device: str = "cpu",
        budget_s: float = DEFAULT_BUDGET_S,
        processes: int = DEFAULT_PROCESSES,
        confidence: float = DEFAULT_CONFIDENCE,
        inconclusive: str = "estimate",
        min_blocks: int = DEFAULT_MIN_BLOCKS,
        tau_floor: float = stats.DEFAULT_TAU_FLOOR,
        seed: int = 0,
        recorder: Callable[[GuardResult], None] | None = None,
        spawner: Spawner | None = None,
        worker: WorkerSpec | None = None,
        timing_skip_reason: str | None = None,
        on_timing: Callable[[], None] | None = None,
        measure_pair: MeasurePair = time_pair,
        measure_one: Callable[..., Any] = time_one,
        counters: Callable[..., Any] | None = None,
        snapshot_store: Any = None,
        update_snapshots: bool = False,
    ) -> None:
        if not (isinstance(budget_s, (int, float)) and budget_s >= 0 and math.isfinite(budget_s)):
            raise ValueError(f"Guard budget_s must be a number of seconds >= 0, got {budget_s!r}")
        if not isinstance(processes, int) or processes < 1:
            raise ValueError(f"Guard processes must be an int >= 1, got {processes!r}")
        if not 0.5 <= confidence < 1:
            raise ValueError(f"Guard confidence must be in [0.5, 1), got {confidence!r}")
        if inconclusive not in INCONCLUSIVE_POLICIES:
            raise ValueError(f"Guard inconclusive policy {inconclusive!r} is not one of "
                             f"{INCONCLUSIVE_POLICIES}")
        self.nodeid, self.device, self.budget_s = nodeid, str(device), float(budget_s)
        self.processes, self.confidence, self.inconclusive = processes, confidence, inconclusive
        self.min_blocks, self.tau_floor, self.seed = min_blocks, tau_floor, seed
        self.recorder, self.spawner, self.worker = recorder, spawner, worker
        self.timing_skip_reason, self.on_timing = timing_skip_reason, on_timing
        self.measure_pair, self.measure_one = measure_pair, measure_one
        self._counters, self.snapshot_store = counters, snapshot_store
        self.update_snapshots = update_snapshots
        self._calls = 0

    # ---------------------------------------------------------------- bookkeeping
    def _next_index(self) -> int:
        index = self._calls
        self._calls += 1
        return index

    def _record(self, result: GuardResult) -> None:
        if self.recorder is not None and self.worker is None:
            self.recorder(result)

    def _placeholder(self, kind: str, name: str | None, device: str) -> GuardResult:
        return GuardResult(self.nodeid, kind, name, kind, None, None, None, None, "skipped",
                           "worker", [], 0, device, None, "not measured in an mmperf worker")

    def _in_worker(self, index: int, kind: str, name: str | None, device: str,
                   timing_run: Callable[[float, int], PairSamples] | None) -> GuardResult:
        """Worker mode: placeholders before the target call, measure-and-stop at it."""
        spec = self.worker
        assert spec is not None
        if index < spec.index:
            return self._placeholder(kind, name, device)
        error = None
        if spec.nodeid != self.nodeid:
            error = f"worker ran {self.nodeid!r} but was asked to measure {spec.nodeid!r}"
        elif index > spec.index or timing_run is None:
            error = (f"guard call #{spec.index + 1} of {self.nodeid} is {kind}() in the worker, "
                     "not the ratio guard the parent measured: the test takes a different path "
                     "in a fresh process (make its guard calls deterministic)")
        if error is not None:
            write_worker_output(spec.output, {"error": error})
            pytest.skip(f"mmperf worker {spec.process}: {error}")
        assert timing_run is not None
        samples = timing_run(spec.budget_s, spec.seed)
        write_worker_output(spec.output, {"samples": samples.to_dict()})
        pytest.skip(f"mmperf worker {spec.process}: measured guard call #{index + 1} "
                    f"({samples.n_blocks} rounds), samples written")

    def _skip_timing(self, kind: str, name: str | None, device: str) -> None:
        if self.timing_skip_reason:
            self._record(GuardResult(self.nodeid, kind, name, kind, None, None, None, None,
                                     "skipped", "skip", [], 0, device, None,
                                     self.timing_skip_reason))
            pytest.skip(self.timing_skip_reason)
        if self.on_timing is not None:
            self.on_timing()

    def _finish(self, result: GuardResult) -> GuardResult:
        self._record(result)
        if result.verdict == "fail":
            pytest.fail(result.message, pytrace=False)
        return result

    # ---------------------------------------------------------------- ratio guards
    def faster(self, candidate: Callable[[], object], baseline: Callable[[], object],
               at_least: float = 1.0, *, name: str | None = None, device: Any = None,
               inference_mode: bool = True, min_processes: int = MIN_PROCESSES_TO_STOP
               ) -> GuardResult:
        """Candidate is at least ``at_least`` times faster than baseline: speedup
        ``t_baseline / t_candidate`` >= ``at_least`` (decided on the pooled interval).
        ``min_processes``: pool at least this many processes even when the decision is clear
        earlier (capped by ``--mmperf-processes``), for a narrower interval in a report."""
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
        if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < math.inf):
            raise ValueError(f"not_slower(tolerance=...) must be a finite fraction >= 0 "
                             f"(0.10 = 10 %), got {tolerance!r}")
        return self._ratio("not_slower", candidate, baseline, float(tolerance), name, device,
                           inference_mode, min_processes)

    def _ratio(self, kind: str, candidate: Callable[[], object], baseline: Callable[[], object],
               threshold: float, name: str | None, device: Any, inference_mode: bool,
               min_processes: int) -> GuardResult:
        for what, fn in (("candidate", candidate), ("baseline", baseline)):
            if not callable(fn):
                raise TypeError(f"{kind}(): {what} must be a zero-argument callable, got "
                                f"{type(fn).__name__} {fn!r}")
        if isinstance(min_processes, bool) or not isinstance(min_processes, int) \
                or min_processes < 1:
            raise ValueError(f"{kind}(min_processes=...) must be an int >= 1, got "
                             f"{min_processes!r}")
        index = self._next_index()
        dev = str(device) if device is not None else self.device
        # log(t_candidate / t_baseline) must stay at or below this for the guard to pass
        log_limit = -math.log(threshold) if kind == "faster" else math.log1p(threshold)

        def run(budget_s: float, seed: int) -> PairSamples:
            return self.measure_pair(
                candidate, baseline, dev, budget_s=budget_s, min_blocks=self.min_blocks,
                inference_mode=inference_mode, seed=seed, should_stop=self._stop_rule(log_limit))

        if self.worker is not None:
            return self._in_worker(index, kind, name, dev, run)
        self._skip_timing(kind, name, dev)
        processes = [run(self.budget_s, self.seed * 1000 + index * 10)]
        max_processes = self.processes if self.spawner is not None else 1
        while len(processes) < max_processes:
            if len(processes) >= max(MIN_PROCESSES_TO_STOP, min_processes) and (
                self._decide(kind, processes, threshold).decision != stats.Decision.INCONCLUSIVE
            ):
                break
            k = len(processes)
            try:
                assert self.spawner is not None
                processes.append(self.spawner(index, k, self.budget_s, self.seed * 1000
                                              + index * 10 + k))
            except WorkerError as exc:
                return self._finish(self._worker_failed(kind, name, dev, threshold, processes, exc))
        return self._conclude(kind, name, dev, threshold, processes)

    def _stop_rule(self, log_limit: float) -> Callable[[PairSamples], bool]:
        """Stop a process's sampling once its own interval is narrow next to the distance to the
        threshold (more rounds of one process cannot beat the between-process spread)."""
        def should_stop(samples: PairSamples) -> bool:
            est = stats.trimmed_mean_se(samples.log_ratios())
            low, high = est.interval(self.confidence)
            half = (high - low) / 2
            return half <= max(0.5 * self.tau_floor, 0.25 * abs(est.estimate - log_limit))
        return should_stop

    def _decide(self, kind: str, processes: Sequence[PairSamples],
                threshold: float) -> stats.RatioDecision:
        pooled = stats.pool_log_ratios([p.log_ratios() for p in processes], self.confidence,
                                       self.tau_floor)
        if kind == "faster":
            return stats.speedup_decision(pooled, threshold)
        return stats.slowdown_decision(pooled, threshold)

    def _conclude(self, kind: str, name: str | None, dev: str, threshold: float,
                  processes: list[PairSamples]) -> GuardResult:
        rd = self._decide(kind, processes, threshold)
        verdict, decided_by = rd.decision.value, "interval"
        if rd.decision == stats.Decision.INCONCLUSIVE and self.inconclusive == "estimate":
            verdict = stats.point_decision(rd.estimate, rd.threshold,
                                           at_least=kind == "faster").value
            decided_by = "estimate"
        metric = "speedup" if kind == "faster" else "slowdown"
        counts = [p.n_blocks for p in processes]
        med_c = [p.medians()[0] for p in processes]
        med_b = [p.medians()[1] for p in processes]
        word = {"faster": f"at least {rd.threshold:.3g}x", "not_slower": f"at most "
                f"{rd.threshold:.3g}x (tolerance {threshold:.0%})"}[kind]
        label = f"{kind}({name})" if name else f"{kind}()"
        conf = f"{self.confidence:.0%}"
        sign = -1.0 if kind == "faster" else 1.0
        per_process = ", ".join(f"{math.exp(sign * e.estimate):.3f}" for e in rd.pooled.per_process)
        message = (
            f"{label}: {verdict.upper()}: {metric} {rd.estimate:.3f}x, {conf} interval "
            f"[{rd.ci_low:.3f}, {rd.ci_high:.3f}], required {word}\n"
            f"  samples: {'+'.join(map(str, counts))} rounds x {len(processes)} process"
            f"{'es' if len(processes) > 1 else ''} on {dev} ({processes[0].threads} threads, "
            f"inference_mode={processes[0].inference_mode}); per-process {metric}s "
            f"{per_process}\n"
            f"  median time per call: candidate {_fmt_s(_median(med_c))}, baseline "
            f"{_fmt_s(_median(med_b))}; between-process sd {rd.pooled.tau:.3f} (log)"
        )
        if rd.decision == stats.Decision.INCONCLUSIVE:
            message += (f"\n  INCONCLUSIVE: the interval straddles {rd.threshold:.3g} after "
                        f"{self.budget_s:g} s x {len(processes)} processes; "
                        + ("the point estimate decided; " if decided_by == "estimate" else "")
                        + _HOW_TO_DECIDE)
        result = GuardResult(
            self.nodeid, kind, name, metric, rd.estimate, rd.ci_low, rd.ci_high, rd.threshold,
            verdict, decided_by, counts, len(processes), dev, self.budget_s, message,
            {"confidence": self.confidence, "candidate_median_s": med_c,
             "baseline_median_s": med_b, "tau": rd.pooled.tau, "tau_dl": rd.pooled.tau_dl,
             "threads": processes[0].threads, "inference_mode": processes[0].inference_mode,
             "interval_decision": rd.decision.value, "policy": self.inconclusive,
             "elapsed_s": [p.elapsed_s for p in processes], "pids": [p.pid for p in processes]},
        )
        if rd.decision == stats.Decision.INCONCLUSIVE:
            if self.inconclusive == "estimate":
                # the user's test line: _conclude <- _ratio <- faster/not_slower <- test
                warnings.warn(MmperfInconclusiveWarning(f"{self.nodeid}: {message}"), stacklevel=4)
            elif self.inconclusive == "fail":
                self._record(result)
                pytest.fail(message, pytrace=False)
            else:
                self._record(result)
                pytest.skip(message)
        return self._finish(result)

    def _worker_failed(self, kind: str, name: str | None, dev: str, threshold: float,
                       processes: list[PairSamples], exc: WorkerError) -> GuardResult:
        message = (f"{kind}(): could not pool processes: {exc}\n  (process isolation re-runs "
                   f"this test in fresh interpreters; --mmperf-processes=1 turns it off)")
        limit = threshold if kind == "faster" else 1.0 + threshold
        return GuardResult(self.nodeid, kind, name, "speedup" if kind == "faster" else
                           "slowdown", None, None, None, limit, "fail", "worker-error",
                           [p.n_blocks for p in processes], len(processes), dev, self.budget_s,
                           message, {"returncode": exc.returncode})

    # ---------------------------------------------------------------- counter guards
    def _count(self, fn: Callable[[], object], device: str, metrics: Sequence[str]) -> Any:
        if not callable(fn):
            raise TypeError(f"expected a zero-argument callable, got {type(fn).__name__} {fn!r}")
        if self._counters is not None:
            return self._counters(fn, device=device, metrics=tuple(metrics))
        from pytest_mmperf.counters import measure_counters

        return measure_counters(fn, device=device, metrics=tuple(metrics))

    def _counter_result(self, kind: str, name: str | None, metric: str, dev: str,
                        value: float | None,
                        limit: float | str | dict[str, float] | None, ok: bool, message: str,
                        extra: dict[str, Any]) -> GuardResult:
        verdict = "pass" if ok else "fail"
        label = f"{kind}({name})" if name else f"{kind}()"
        return self._finish(GuardResult(self.nodeid, kind, name, metric, value, None, None, limit,
                                        verdict, "count", [], 1, dev, None,
                                        f"{label}: {verdict.upper()}: {message}", extra))

    def max_ops(self, fn: Callable[[], object], limits: Mapping[str, int] | int, *,
                name: str | None = None, device: Any = None) -> GuardResult:
        """Dispatched aten ops of ``fn()`` stay within ``limits``: ``{op: max_count}`` (op names in
        any spelling: ``"mm"``, ``"aten::mm"``, ``"aten.mm.default"``; key ``"*"`` = all ops), or
        one int for the total."""
        index, dev = self._next_index(), self._dev(device)
        if self.worker is not None:
            return self._in_worker(index, "max_ops", name, dev, None)
        table = {"*": limits} if isinstance(limits, int) else dict(limits)
        bad = {k: v for k, v in table.items() if not isinstance(v, int) or v < 0}
        if not table or bad:
            raise ValueError(f"max_ops limits must map op names to ints >= 0 (or be one int), "
                             f"got {limits!r}")
        report = self._count(fn, dev, ("ops",))
        counts = {op: count_ops(report.ops, None if op == "*" else op) for op in table}
        over = {op: (counts[op], table[op]) for op in table if counts[op] > table[op]}
        detail = ", ".join(f"{op}: {counts[op]} (max {table[op]})" for op in table)
        return self._counter_result(
            "max_ops", name, "ops", dev, sum(counts.values()), dict(table), not over,
            f"op counts {detail}" + (f"; over the limit: {sorted(over)}" if over else ""),
            {"counts": counts, "limits": table, "ops": dict(report.ops)})

    def ops_constant(self, fn_of_size: Callable[[Any], Callable[[], object]],
                     sizes: Sequence[Any], only: Sequence[str] | str | None = None, *,
                     name: str | None = None, device: Any = None) -> GuardResult:
        """Vectorisation guard: the number of dispatched ops (optionally only ``only``) of
        ``fn_of_size(size)()`` must not grow with size. ``fn_of_size(size)`` builds the inputs
        and returns the zero-argument callable to count (its own work is not counted)."""
        index, dev = self._next_index(), self._dev(device)
        if self.worker is not None:
            return self._in_worker(index, "ops_constant", name, dev, None)
        sizes = self._check_sizes(sizes, "ops_constant")
        per_size = [self._count(self._built(fn_of_size, s), dev, ("ops",)).ops for s in sizes]
        totals = [count_ops(ops, only) for ops in per_size]
        grew = {op for ops in per_size[1:] for op in ops if (only is None or count_ops(
            {op: 1}, only)) and ops[op] > per_size[0].get(op, 0)}
        ok = all(t <= totals[0] for t in totals)
        only_list = [only] if isinstance(only, str) else list(only or [])
        what = "ops" if only is None else f"ops {sorted({_norm_op(o) for o in only_list})}"
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
        return self._max_counter("max_memory", "peak_memory", fn,
                                 parse_bytes(limit, "max_memory limit"), name, device)

    def max_flops(self, fn: Callable[[], object], limit: int | float, *, name: str | None = None,
                  device: Any = None) -> GuardResult:
        """FLOPs of ``fn()`` (``FlopCounterMode`` plus missing formulas) are at most ``limit``."""
        if not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"max_flops limit must be a number >= 0, got {limit!r}")
        return self._max_counter("max_flops", "flops", fn, limit, name, device)

    def _max_counter(self, kind: str, metric: str, fn: Callable[[], object], limit: float,
                     name: str | None, device: Any) -> GuardResult:
        index, dev = self._next_index(), self._dev(device)
        if self.worker is not None:
            return self._in_worker(index, kind, name, dev, None)
        value = _metric_value(self._count(fn, dev, (metric,)), metric)
        return self._counter_result(kind, name, metric, dev, value, limit, value <= limit,
                                    f"{metric} {value:,} (max {limit:,})", {metric: value})

    def no_sync(self, fn: Callable[[], object], *, name: str | None = None,
                device: Any = None) -> GuardResult:
        """``fn()`` makes no host-device synchronisation (CUDA only; skipped elsewhere)."""
        index, dev = self._next_index(), self._dev(device)
        if self.worker is not None:
            return self._in_worker(index, "no_sync", name, dev, None)
        if not dev.startswith("cuda"):
            reason = f"no_sync needs a CUDA device: {dev} has no host-device synchronisation"
            self._record(GuardResult(self.nodeid, "no_sync", name, "syncs", None, None, None, 0,
                                     "skipped", "skip", [], 0, dev, None, reason))
            pytest.skip(reason)
        syncs = self._count(fn, dev, ("syncs",)).syncs or 0
        return self._counter_result("no_sync", name, "syncs", dev, syncs, 0, syncs == 0,
                                    f"{syncs} host-device synchronisations (max 0)",
                                    {"syncs": syncs})

    def scaling(self, fn_of_size: Callable[[Any], Callable[[], object]], sizes: Sequence[float],
                metric: str = "time", max_exponent: float = 1.0, *, name: str | None = None,
                device: Any = None) -> GuardResult:
        """The log-log slope of ``metric`` (time | memory | ops | flops) of ``fn_of_size(size)()``
        against size is at most ``max_exponent`` (1 = linear, 2 = quadratic). Time is the median
        per call in this process (budget split across sizes; no process pooling)."""
        if metric not in SCALING_METRICS:
            raise ValueError(f"scaling(metric={metric!r}): accepted metrics are {SCALING_METRICS}")
        index, dev = self._next_index(), self._dev(device)
        if self.worker is not None:
            return self._in_worker(index, "scaling", name, dev, None)
        sizes = self._check_sizes(sizes, "scaling")
        values: list[float] = []
        if metric == "time":
            self._skip_timing("scaling", name, dev)
            for s in sizes:
                one = self.measure_one(self._built(fn_of_size, s), dev, min_blocks=self.min_blocks,
                                       budget_s=self.budget_s / len(sizes))
                values.append(one.median_s)
        else:
            key = {"memory": "peak_memory"}.get(metric, metric)
            values = [float(_metric_value(self._count(self._built(fn_of_size, s), dev, (key,)),
                                          key)) for s in sizes]
        slope, intercept, r2 = stats.fit_loglog_slope([float(s) for s in sizes],
                                                      [max(v, 1e-30) for v in values])
        table = ", ".join(f"{s}: {_fmt_metric(v, metric)}" for s, v in zip(sizes, values,
                                                                          strict=True))
        return self._counter_result(
            "scaling", name, f"{metric} exponent", dev, slope, max_exponent,
            slope <= max_exponent,
            f"{metric} ~ size^{slope:.2f} (r²={r2:.3f}), max exponent {max_exponent:g}; {table}",
            {"sizes": list(sizes), "values": values, "slope": slope, "intercept": intercept,
             "r2": r2, "metric": metric})

    def snapshot(self, name: str, fn: Callable[[], object],
                 metrics: Sequence[str] = ("ops", "flops", "peak_memory"),
                 tolerance: float | Mapping[str, float] = 0.0, *, device: Any = None
                 ) -> GuardResult:
        """Counters of ``fn()`` match the snapshot ``name`` in the committed snapshot file within
        ``tolerance`` (relative, in either direction); ``--mmperf-update-snapshots`` rewrites."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"snapshot name must be a non-empty string, got {name!r}")
        bad = [m for m in metrics if m not in COUNTER_METRICS]
        if bad or not metrics:
            raise ValueError(f"snapshot metrics {list(metrics)!r}: accepted {COUNTER_METRICS}")
        index, dev = self._next_index(), self._dev(device)
        if self.worker is not None:
            return self._in_worker(index, "snapshot", name, dev, None)
        if self.snapshot_store is None:
            raise RuntimeError("snapshot(): no snapshot store; use the mmperf_guard fixture")
        report = self._count(fn, dev, tuple(metrics))
        # Stored under CounterReport.scalars() names, so files read the same whoever writes them.
        values: dict[str, int] = {}
        for m in metrics:
            raw = _metric_value(report, m, none_ok=True)
            if raw is not None:
                values[_SCALAR_NAMES[m]] = raw
        if isinstance(tolerance, Mapping):
            tolerance = {_SCALAR_NAMES.get(k, k): v for k, v in tolerance.items()}
        key = name if dev == "cpu" else f"{name}[{dev.split(':')[0]}]"
        outcome = self.snapshot_store.check(key, values, tolerance, self.update_snapshots)
        return self._counter_result(
            "snapshot", name, "snapshot", dev, None,
            dict(tolerance) if isinstance(tolerance, Mapping) else float(tolerance),
            not outcome.failed,
            f"{key}: {outcome.status}: {outcome.message}",
            {"values": values, "status": outcome.status})

    # ---------------------------------------------------------------- helpers
    def _dev(self, device: Any) -> str:
        return str(device) if device is not None else self.device

    @staticmethod
    def _check_sizes(sizes: Sequence[Any], kind: str) -> list[Any]:
        out = list(sizes)
        if len(out) < 2 or len(set(map(float, out))) < 2:
            raise ValueError(f"{kind}() needs at least 2 distinct sizes, got {out!r}")
        return out

    @staticmethod
    def _built(fn_of_size: Callable[[Any], Callable[[], object]], size: Any
               ) -> Callable[[], object]:
        fn = fn_of_size(size)
        if not callable(fn):
            raise TypeError(
                f"fn_of_size({size!r}) returned {type(fn).__name__}; it must build the inputs for "
                "that size and return a zero-argument callable that runs the work")
        return fn


_SCALAR_NAMES = {"ops": "total_ops", "flops": "flops", "bytes": "bytes_materialized",
                 "peak_memory": "peak_memory_bytes", "syncs": "syncs"}


def _metric_value(report: Any, metric: str, none_ok: bool = False) -> Any:
    """``report``'s value of a guard metric name (``None`` stays ``None`` with ``none_ok``)."""
    if metric == "ops":
        return count_ops(report.ops)
    value = getattr(report, _SCALAR_NAMES[metric] if metric != "flops" else "flops")
    if value is None:
        return None if none_ok else 0
    return int(value)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def _fmt_s(t: float) -> str:
    return f"{t * 1e6:.1f} us" if t < 1e-3 else (f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.2f} s")


def _fmt_metric(value: float, metric: str) -> str:
    return _fmt_s(value) if metric == "time" else f"{value:,.0f}"


# -------------------------------------------------------------------- pytest glue
RESULTS_KEY = pytest.StashKey[list[GuardResult]]()
SNAPSHOT_STORE_KEY = pytest.StashKey[Any]()


def session_results(config: pytest.Config) -> list[GuardResult]:
    """Every guard result recorded in this session, in call order."""
    recorded: list[GuardResult] = config.stash.get(RESULTS_KEY, [])
    return list(recorded)


def _setting(settings: Any, name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    return default if value is None else value


def snapshot_store(config: pytest.Config, settings: Any = None) -> Any:
    """The session's snapshot store, created on first use (the plugin saves it at session end)."""
    store = config.stash.get(SNAPSHOT_STORE_KEY, None)
    if store is None:
        from pytest_mmperf.config import DEFAULT_SNAPSHOTS
        from pytest_mmperf.snapshots import SnapshotStore

        path = _setting(settings, "snapshots", None) or config.rootpath / DEFAULT_SNAPSHOTS
        store = SnapshotStore(path)
        config.stash[SNAPSHOT_STORE_KEY] = store
    return store


def under_xdist(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker (env var or ``config.workerinput``)."""
    return bool(os.environ.get("PYTEST_XDIST_WORKER")) or hasattr(config, "workerinput")


def guard_for_request(request: pytest.FixtureRequest) -> Guard:
    """The :class:`Guard` of the requesting test, configured from the run's mmperf settings."""
    from pytest_mmperf.config import get_settings
    from pytest_mmperf.isolation import pytest_spawner

    config = request.config
    settings = get_settings(config)
    nodeid = request.node.nodeid
    # config resolves the --benchmark defaults (larger budget, more processes) itself.
    budget = float(_setting(settings, "budget", DEFAULT_BUDGET_S))
    processes = int(_setting(settings, "processes", DEFAULT_PROCESSES))
    device = "cpu"
    if "mmperf_device" in request.fixturenames:
        device = str(request.getfixturevalue("mmperf_device"))
    results = config.stash.setdefault(RESULTS_KEY, [])
    store_holder: list[Any] = []

    class _LazyStore:  # the store (and snapshots.py) is only loaded by tests that snapshot
        def check(self, *args: Any, **kwargs: Any) -> Any:
            if not store_holder:
                store_holder.append(snapshot_store(config, settings))
            return store_holder[0].check(*args, **kwargs)

    return Guard(
        nodeid=nodeid,
        device=device,
        budget_s=budget,
        processes=processes,
        confidence=float(_setting(settings, "confidence", DEFAULT_CONFIDENCE)),
        inconclusive=str(_setting(settings, "inconclusive", "estimate")),
        seed=int(_setting(settings, "seed", 0)),
        recorder=results.append,
        spawner=pytest_spawner(config, nodeid),
        worker=_worker_spec(),
        timing_skip_reason=XDIST_SKIP_REASON if under_xdist(config) else None,
        on_timing=lambda: request.node.add_marker("mmperf_timing"),
        snapshot_store=_LazyStore(),
        update_snapshots=bool(_setting(settings, "update_snapshots", False)),
    )


def _worker_spec() -> WorkerSpec | None:
    try:
        return WorkerSpec.from_env()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
