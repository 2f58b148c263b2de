"""Measuring a family for the report: every implementation against the baseline, interleaved.

:func:`measure_family` is what ``mmperf_report.family(...)`` runs (pytest-free; the fixture
supplies the pair sampler, which pools worker processes under ``pytest --benchmark``). Each
implementation is timed interleaved with the baseline (the timing guards' machinery), and its
row gets the speedup with its interval, median and quartiles, throughput, the fraction of the
roofline its work declares (:func:`fraction_basis`: its own kernel, a matmul or a memory copy,
measured in the same run by :mod:`pytest_mmperf.report.calibrate`), peak tensor memory and the
stage breakdown from its ``mmperf::<stage>`` labels. Callables run as given (no
``inference_mode``: a training step needs autograd); results are discarded.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_mmperf.report.figures import Breakdown, Efficiency, Family, FamilyRow, Scaling
from pytest_mmperf.timing import stats
from pytest_mmperf.timing.measure import PairSamples

if TYPE_CHECKING:
    from pytest_mmperf.report.calibrate import Roofline

# sampler(candidate, baseline, label) -> samples of each pooled process
PairSampler = Callable[[Callable[[], object], Callable[[], object], str], list[PairSamples]]


@dataclass(frozen=True)
class FamilyPlan:
    """How much a family measures: per pair ``budget_s`` seconds in each of ``processes``
    processes, at least ``min_blocks`` rounds; ``breakdown_repeats`` profiled calls per
    implementation; ``calibration_s`` per machine peak (0: no peak, no efficiency).

    A claim's own pairs (``mmperf_report.claim`` with ``(candidate, baseline)``) get processes
    of ``budget_s`` seconds until their interval clears the claimed low end, at most
    ``claim_processes`` processes and ``claim_seconds`` wall seconds per pair."""

    budget_s: float
    processes: int
    min_blocks: int
    breakdown_repeats: int
    calibration_s: float
    claim_processes: int = 1
    claim_seconds: float = 10.0


SMOKE_PLAN = FamilyPlan(budget_s=0.05, processes=1, min_blocks=3, breakdown_repeats=1,
                        calibration_s=0.05, claim_processes=1, claim_seconds=10.0)
BENCHMARK_PLAN = FamilyPlan(budget_s=1.5, processes=3, min_blocks=5, breakdown_repeats=3,
                            calibration_s=0.5, claim_processes=10, claim_seconds=120.0)


@dataclass
class FamilyFigures:
    """What a family adds to the report."""

    family: Family
    breakdowns: list[Breakdown]
    efficiencies: list[Efficiency]


def _per_implementation(value: Any, names: Sequence[str], what: str) -> dict[str, float | None]:
    if value is None:
        return dict.fromkeys(names)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"family {what}: {unknown} are not implementations of the family "
                             f"({list(names)})")
        out = {n: value.get(n) for n in names}
    else:
        out = dict.fromkeys(names, value)
    for name, v in out.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)
                              or not math.isfinite(v) or v < 0):
            raise ValueError(f"family {what}[{name!r}] must be a finite number >= 0, got {v!r}")
    return {n: (None if v is None else float(v)) for n, v in out.items()}


def check_family_args(name: object, implementations: object, baseline: object, items: object,
                      unit: object) -> dict[str, Callable[[], object]]:
    """Validate the arguments of ``family(...)``; returns the implementations as a dict."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"family name must be a non-empty string, got {name!r}")
    if not isinstance(implementations, Mapping) or len(implementations) < 2:
        raise TypeError(f"family {name!r}: implementations must be a mapping of at least two "
                        f"names to zero-argument callables, got {implementations!r}")
    impls = dict(implementations)
    for impl, fn in impls.items():
        if not isinstance(impl, str) or not impl:
            raise ValueError(f"family {name!r}: implementation names must be non-empty strings, "
                             f"got {impl!r}")
        if not callable(fn):
            raise TypeError(f"family {name!r}: implementation {impl!r} must be a zero-argument "
                            f"callable, got {type(fn).__name__} {fn!r}")
    if baseline not in impls:
        raise ValueError(f"family {name!r}: baseline {baseline!r} is not one of the "
                         f"implementations {list(impls)}")
    if items is not None and (isinstance(items, bool) or not isinstance(items, numbers.Real)
                              or not float(items) > 0):
        raise ValueError(f"family {name!r}: items must be a number > 0 (work items per call), "
                         f"got {items!r}")
    if not isinstance(unit, str) or not unit:
        raise ValueError(f"family {name!r}: unit must be a non-empty string, got {unit!r}")
    return impls


def _row(impl: str, times: list[float], processes: list[PairSamples] | None,
         confidence: float) -> FamilyRow:
    q1, med, q3 = stats.quartiles(times)
    if processes is None:  # the baseline
        return FamilyRow(implementation=impl, median_s=med, q1_s=q1, q3_s=q3, speedup=1.0,
                         speedup_ci=None, rounds=len(times), baseline=True)
    pooled = stats.pool_log_ratios([p.log_ratios() for p in processes], confidence)
    decision = stats.speedup_decision(pooled, 1.0)
    return FamilyRow(implementation=impl, median_s=med, q1_s=q1, q3_s=q3,
                     speedup=decision.estimate, speedup_ci=[decision.ci_low, decision.ci_high],
                     rounds=sum(p.n_blocks for p in processes), processes=len(processes))


def measure_family(name: str, implementations: Mapping[str, Callable[[], object]], *,
                   baseline: str, sample: PairSampler, plan: FamilyPlan,
                   items: float | None = None, unit: str = "items", flops: Any = None,
                   bytes: Any = None, roofline: Roofline | None = None, work: Any = None,
                   dtype: str | Mapping[str, str] = "float32",
                   device: str = "cpu",
                   title: str | None = None, breakdown: bool = True, memory: bool = True,
                   note: str | None = None, confidence: float = 0.95,
                   before: Sequence[str] = (), nodeid: str = "") -> FamilyFigures:
    """Measure a family (see the module docstring)."""
    impls = check_family_args(name, implementations, baseline, items, unit)
    names = list(impls)
    flops_of = _per_implementation(flops, names, "flops")
    bytes_of = _per_implementation(bytes, names, "bytes")
    work_of = _roofline_work(name, roofline, work, items, unit, names)
    dtype_of = _dtypes(dtype, names)
    pairs = {impl: sample(impls[impl], impls[baseline], f"{name}: {impl} vs {baseline}")
             for impl in names if impl != baseline}
    rows: dict[str, FamilyRow] = {}
    for impl in names:
        if impl == baseline:
            times = [t for ps in pairs.values() for p in ps for t in p.baseline_s]
            rows[impl] = _row(impl, times, None, confidence)
        else:
            rows[impl] = _row(impl, [t for p in pairs[impl] for t in p.candidate_s],
                              pairs[impl], confidence)
    unknown = sorted(set(before) - set(names))
    if unknown:
        raise ValueError(f"family {name!r}: before {unknown} are not implementations "
                         f"({names})")
    for impl in before:
        rows[impl].before = True
    if items is not None:
        for row in rows.values():
            row.throughput, row.throughput_unit = float(items) / row.median_s, f"{unit}/s"
    efficiencies, peaks = _efficiency(name, rows, flops_of, bytes_of, dtype_of, device, plan,
                                      nodeid, roofline, work_of)
    if memory:
        from pytest_mmperf.counting.counters import measure_counters

        for impl, row in rows.items():
            row.peak_memory_bytes = measure_counters(impls[impl], device,
                                                     metrics=("peak_memory",),
                                                     warmup=1).peak_memory_bytes
    breakdowns: list[Breakdown] = []
    if breakdown:
        from pytest_mmperf.report.stages import stage_breakdown

        for impl in names:
            figure = stage_breakdown(impls[impl], repeats=plan.breakdown_repeats,
                                     device=device).to_figure(name, impl)
            breakdowns.append(Breakdown.from_dict({**figure, "nodeid": nodeid}))
    family = Family(family=name, title=title or name, baseline=baseline, unit=unit,
                    items=None if items is None else float(items),
                    rows=[rows[n] for n in names], peaks=peaks, note=note, nodeid=nodeid)
    return FamilyFigures(family, breakdowns, efficiencies)


def _dtypes(dtype: str | Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    if isinstance(dtype, str):
        return dict.fromkeys(names, dtype)
    if not isinstance(dtype, Mapping):
        raise TypeError(f"family dtype must be a dtype name or one per implementation, got "
                        f"{dtype!r}")
    unknown = sorted(set(dtype) - set(names))
    if unknown:
        raise ValueError(f"family dtype: {unknown} are not implementations ({list(names)})")
    return {n: str(dtype.get(n, "float32")) for n in names}


def _roofline_work(name: str, roofline: Roofline | None, work: Any, items: float | None,
                   unit: str, names: Sequence[str]) -> dict[str, float | None]:
    """Units of the roofline's work per call of each implementation (all None without one)."""
    if roofline is None:
        if work is not None:
            raise ValueError(f"family {name!r}: work= counts units of a roofline; pass "
                             "roofline= (a pytest_mmperf.report.calibrate.Roofline) too")
        return dict.fromkeys(names)
    from pytest_mmperf.report.calibrate import Roofline

    if not isinstance(roofline, Roofline):
        raise TypeError(f"family {name!r}: roofline must be a "
                        f"pytest_mmperf.report.calibrate.Roofline (e.g. resize_roofline(...)), "
                        f"got {type(roofline).__name__} {roofline!r}")
    if work is None:
        if items is None or unit != roofline.unit:
            raise ValueError(f"family {name!r}: the roofline {roofline.name!r} counts "
                             f"{roofline.unit!r}; pass work= (its units per call) or items= "
                             f"with unit={roofline.unit!r}")
        work = items
    return _per_implementation(work, names, "work")


def _efficiency(name: str, rows: dict[str, FamilyRow], flops_of: dict[str, float | None],
                bytes_of: dict[str, float | None], dtype_of: dict[str, str], device: str,
                plan: FamilyPlan, nodeid: str, roofline: Roofline | None = None,
                work_of: Mapping[str, float | None] | None = None,
                ) -> tuple[list[Efficiency], dict[str, dict[str, Any]]]:
    """Each row's rate against its declared roofline's reconciled peak (no fraction above 1):
    the family's ``roofline`` where it has ``work``, else a matmul of its dtype where it has
    ``flops``, else a memory copy where it has ``bytes``. Peaks are keyed by the matmul dtype
    (``"float32"``, ``"bfloat16"``), ``"memcpy"`` or the roofline's name."""
    if plan.calibration_s <= 0:
        return [], {}
    from pytest_mmperf.report.calibrate import (
        best_so_far,
        kernel_peak,
        matmul_peak,
        memcpy_peak,
        reconcile_peak,
    )

    rates: dict[str, tuple[str, float]] = {}  # implementation -> (peak key, rate)
    units: dict[str, str] = {}  # peak key -> the fraction's unit, in words
    for impl, row in rows.items():
        if flops_of[impl] is not None:
            row.gflops = flops_of[impl] / row.median_s / 1e9  # type: ignore[operator]
        if bytes_of[impl] is not None:
            row.achieved_gbps = bytes_of[impl] / row.median_s / 1e9  # type: ignore[operator]
        done = None if work_of is None else work_of.get(impl)
        if roofline is not None and done is not None:
            row.work_rate, row.work_unit = done / row.median_s, f"{roofline.unit}/s"
            rates[impl] = (roofline.name, row.work_rate)
            units[roofline.name] = f"{roofline.unit}/s ({roofline.name})"
        elif row.gflops is not None:
            rates[impl] = (dtype_of[impl], row.gflops)
            units[dtype_of[impl]] = f"GFLOP/s ({dtype_of[impl]} matmul)"
        elif row.achieved_gbps is not None:
            rates[impl] = ("memcpy", row.achieved_gbps)
            units["memcpy"] = "GB/s (memory copy)"
    peaks: dict[str, Any] = {}
    for key in sorted({k for k, _ in rates.values()}):
        if roofline is not None and key == roofline.name:
            raw = kernel_peak(roofline, device, min_run_time=plan.calibration_s)
        elif key == "memcpy":
            raw = memcpy_peak(device, min_run_time=plan.calibration_s)
        else:
            raw = matmul_peak(key, device, min_run_time=plan.calibration_s)
        achieved = {impl: rate for impl, (k, rate) in rates.items() if k == key}
        # the best of its kind seen in this run (a re-measured peak serves the next family too)
        peaks[key] = best_so_far(reconcile_peak(best_so_far(raw), achieved,
                                                min_run_time=2 * plan.calibration_s))
    out: list[Efficiency] = []
    for impl, (key, rate) in rates.items():
        peak = peaks[key]
        fraction = rate / peak.value
        rows[impl].peak_fraction, rows[impl].peak_unit = fraction, units[key]
        out.append(Efficiency(family=name, implementation=impl, achieved=rate, peak=peak.value,
                              unit=units[key], fraction=fraction, nodeid=nodeid))
    return out, {k: p.to_dict() for k, p in peaks.items()}


def measure_scaling(name: str, fns: Mapping[str, Callable[[Any], Callable[[], object]]],
                    sizes: Sequence[float], *, metrics: Sequence[str], device: str,
                    time_budget_s: float, min_blocks: int, nodeid: str = "") -> list[Scaling]:
    """Time (median per call) and/or peak tensor memory of ``fns[impl](size)()`` at each size,
    with the fitted log-log slope, one :class:`Scaling` per implementation and metric."""
    from pytest_mmperf.timing.measure import time_one

    records: list[Scaling] = []
    for impl, fn_of_size in fns.items():
        values: dict[str, list[float]] = {m: [] for m in metrics}
        for size in sizes:
            fn = fn_of_size(size)
            if not callable(fn):
                raise TypeError(f"scaling {name!r}: the factory of {impl!r} returned "
                                f"{type(fn).__name__} for size {size!r}; it must return a "
                                "zero-argument callable")
            if "time" in values:
                values["time"].append(time_one(
                    fn, device, budget_s=time_budget_s / len(sizes), min_blocks=min_blocks,
                    warmup_s=0.02, inference_mode=False).median_s)
            if "memory" in values:
                from pytest_mmperf.counting.counters import measure_counters

                report = measure_counters(fn, device, metrics=("peak_memory",), warmup=1)
                values["memory"].append(float(report.peak_memory_bytes or 0))
        for metric, vals in values.items():
            slope, _, r2 = stats.fit_loglog_slope([float(s) for s in sizes],
                                                  [max(v, 1e-30) for v in vals])
            records.append(Scaling(family=name, implementation=impl, metric=metric,
                                   unit="s" if metric == "time" else "bytes",
                                   sizes=[float(s) for s in sizes], values=vals, slope=slope,
                                   r2=r2, nodeid=nodeid))
    return records
