"""The figures of ``make bench``: one family per test, measured on this machine, in this run.

Each test measures every implementation of one family of ``benchmarks/common.py`` against the
family's naive version, interleaved (:func:`pytest_mmperf.measure.time_pair`, so each speed-up
comes with a confidence interval from paired rounds), and records for the report
(``mmperf_report``):

* ``family``: median time per call with its quartiles, speed-up over the naive version with its
  interval, throughput (images/s or tokens/s), GFLOP/s and the fraction of the machine's
  calibrated peak (:mod:`pytest_mmperf.calibrate`: dense matmul for attention, memory copy for
  preprocessing), and peak tensor memory (:mod:`pytest_mmperf.counters`);
* ``breakdown``: where the time goes, by the ``mmperf::`` ``record_function`` labels of
  ``reference/``;
* ``efficiency``: achieved against the calibrated peak;
* ``scaling`` (attention): time and peak memory against the sequence length, per backend.

The tests carry the ``mmperf_timing`` marker, so ``pytest --benchmark`` (the performance run of
``make bench``) keeps them. Under ``--mmperf-scale=smoke`` every size is tiny and every budget
short (the whole file in well under a minute); plain ``pytest`` (without ``--benchmark``) uses
that smoke plan too, so the report code is exercised by every test run. In the performance run
at the default scale the cases are those of the asv suite.

Each test also asserts what must hold of any honest measurement (positive times, intervals
around their estimates, a breakdown that accounts for the run), so broken figures fail here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from benchmarks.common import (
    ATTENTION_CASES,
    LOADER_CASES,
    LONG_CASES,
    PREPROCESS_CASES,
    AttentionCase,
    LoaderCase,
    LongSequenceCase,
    PreprocessCase,
    Workload,
)

pytestmark = pytest.mark.mmperf_timing


@dataclass(frozen=True)
class Plan:
    """Sizes and budgets of one scale."""

    preprocess: PreprocessCase
    loader: LoaderCase
    clip: AttentionCase
    long: LongSequenceCase
    scaling_tokens: tuple[int, ...]
    budget_s: float  # measuring seconds per (implementation, baseline) pair
    min_blocks: int
    peak_run_s: float  # calibration time of each machine peak
    matmul_n: int | None
    memcpy_bytes: int | None
    breakdown_repeats: int


_SMOKE = Plan(
    preprocess=PreprocessCase("smoke-pre4", batch_size=4, min_side=64, max_side=128),
    loader=LoaderCase("smoke-jpeg4", images=4, min_side=128, max_side=192),
    clip=AttentionCase("smoke-clip", batch_size=1, text_tokens=16, image_tokens=50, dim=64,
                       heads=4),
    long=LongSequenceCase("smoke-long", tokens=512, text_tokens=16, dim=64, heads=4, window=64),
    scaling_tokens=(128, 256, 512),
    budget_s=0.05,
    min_blocks=3,
    peak_run_s=0.1,
    matmul_n=512,
    memcpy_bytes=8 << 20,
    breakdown_repeats=1,
)


def _default_plan() -> Plan:
    return Plan(
        preprocess=PREPROCESS_CASES["varied16"],
        loader=LOADER_CASES["jpeg16"],
        clip=ATTENTION_CASES["clip-b4"],
        long=LONG_CASES["joint-4096"],
        scaling_tokens=(512, 1024, 2048, 4096),
        budget_s=1.5,
        min_blocks=5,
        peak_run_s=0.5,
        matmul_n=None,
        memcpy_bytes=None,
        breakdown_repeats=3,
    )


@pytest.fixture(scope="module")
def plan(request: pytest.FixtureRequest) -> Plan:
    """The plan of the run: the real cases in the performance run (``pytest --benchmark``)
    unless ``--mmperf-scale=smoke``; the smoke plan otherwise, so that plain ``pytest`` checks
    the report code in seconds (``full`` measures as ``default`` here)."""
    from pytest_mmperf.config import get_settings

    settings = get_settings(request.config)
    return _default_plan() if settings.benchmark and settings.scale != "smoke" else _SMOKE


# ------------------------------------------------------------------------------ measuring


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        pos = q * (len(ordered) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return at(0.25), at(0.5), at(0.75)


def _measure_family(works: Mapping[str, Workload], baseline: str, plan: Plan
                    ) -> dict[str, dict[str, Any]]:
    """Per implementation: median/q1/q3 seconds per call, speed-up over ``baseline`` and its
    95 % interval (paired rounds of one process), from one interleaved pair per implementation.
    """
    from pytest_mmperf import stats
    from pytest_mmperf.measure import time_pair

    rows: dict[str, dict[str, Any]] = {}
    base_times: list[float] = []
    base = works[baseline]
    for impl, work in works.items():
        if impl == baseline:
            continue
        samples = time_pair(work.fn, base.fn, work.device, budget_s=plan.budget_s,
                            min_blocks=plan.min_blocks, warmup_s=0.02, inference_mode=False,
                            seed=0)
        base_times += samples.baseline_s
        decision = stats.speedup_decision(stats.pool_log_ratios([samples.log_ratios()]), 1.0)
        q1, med, q3 = _quartiles(samples.candidate_s)
        rows[impl] = {"implementation": impl, "median_s": med, "q1_s": q1, "q3_s": q3,
                      "speedup": decision.estimate,
                      "speedup_ci": [decision.ci_low, decision.ci_high],
                      "rounds": len(samples.candidate_s)}
    q1, med, q3 = _quartiles(base_times)
    rows[baseline] = {"implementation": baseline, "median_s": med, "q1_s": q1, "q3_s": q3,
                      "speedup": 1.0, "speedup_ci": [1.0, 1.0], "rounds": len(base_times)}
    return {impl: rows[impl] for impl in works}  # the family's order, baseline first


def _peak_memory(work: Workload) -> int | None:
    from pytest_mmperf.counters import measure_counters

    report = measure_counters(work.fn, work.device, metrics=("peak_memory",), warmup=1)
    return report.peak_memory_bytes


def _check_rows(rows: Mapping[str, Mapping[str, Any]]) -> None:
    for impl, row in rows.items():
        assert row["median_s"] > 0, f"{impl}: median time {row['median_s']} is not positive"
        assert row["q1_s"] <= row["median_s"] <= row["q3_s"], f"{impl}: quartiles out of order"
        low, high = row["speedup_ci"]
        assert low <= row["speedup"] <= high, f"{impl}: speed-up outside its interval: {row}"


def _record_family(report: Any, family: str, title: str, baseline: str,
                   rows: Mapping[str, dict[str, Any]], **fields: Any) -> dict[str, Any]:
    _check_rows(rows)
    record: dict[str, Any] = report.add("family", family=family, title=title, baseline=baseline,
                                        rows=list(rows.values()), **fields)
    return record


def _record_breakdown(report: Any, work: Workload, family: str, impl: str, plan: Plan) -> None:
    record = report.breakdown(work.fn, family=family, implementation=impl,
                              device=work.device, repeats=plan.breakdown_repeats)
    assert record["total_s"] > 0 and record["stages"], f"{family}/{impl}: empty breakdown"
    labelled = {k: v for k, v in record["stages"].items() if not k.startswith("other")}
    assert labelled, f"{family}/{impl}: no mmperf:: stage was seen: {record['stages']}"


def _skip_unavailable(build: Callable[[], Workload]) -> Workload | None:
    try:
        return build()
    except NotImplementedError:
        return None


# ------------------------------------------------------------------------------ preprocessing


def _pixel_bytes(images: list[Any]) -> int:
    """Bytes of the RGB input pixels (uint8) of a list of PIL images or (3, H, W) tensors."""
    total = 0
    for image in images:
        if hasattr(image, "size") and not callable(image.size):
            width, height = image.size
            total += 3 * width * height
        else:
            total += int(image.numel())
    return total


def test_family_preprocessing(mmperf_report: Any, plan: Plan) -> None:
    from pytest_mmperf.calibrate import efficiency, memcpy_peak

    case = plan.preprocess
    works = {impl: case.build(impl) for impl in ("naive", "seed", "batched")}
    rows = _measure_family(works, "naive", plan)
    peak = memcpy_peak("cpu", plan.memcpy_bytes, plan.peak_run_s)
    # Bytes a pipeline must at least touch: read every input pixel, write the float32 batch.
    moved = _pixel_bytes(case.images()) + case.batch_size * 3 * 224 * 224 * 4
    for impl, row in rows.items():
        achieved = moved / row["median_s"] / 1e9
        row.update(throughput=case.batch_size / row["median_s"], throughput_unit="images/s",
                   peak_fraction=efficiency(achieved, peak), peak_unit="GB/s",
                   achieved_gbps=achieved, peak_memory_bytes=_peak_memory(works[impl]))
        mmperf_report.add("efficiency", family="preprocessing", implementation=impl,
                          achieved=achieved, peak=peak.value, unit="GB/s",
                          fraction=efficiency(achieved, peak))
    _record_family(mmperf_report, "preprocessing",
                   f"In-memory preprocessing: {case.batch_size} images of "
                   f"{case.min_side}-{case.max_side} px -> (B, 3, 224, 224)", "naive", rows,
                   peak=peak.to_dict())
    for impl, work in works.items():
        _record_breakdown(mmperf_report, work, "preprocessing", impl, plan)


# ------------------------------------------------------------------------------ disk pipeline


@pytest.fixture(scope="module")
def loader_works(plan: Plan) -> Iterator[dict[str, Workload]]:
    """The seed's DataLoader and the fast loader, workers started (first epoch run)."""
    works = {impl: plan.loader.build(impl) for impl in ("seed", "fast")}
    try:
        for work in works.values():
            work()
        yield works
    finally:
        for work in works.values():
            work.close()


def test_family_disk_pipeline(mmperf_report: Any, plan: Plan,
                              loader_works: dict[str, Workload]) -> None:
    from reference.preprocess import FastJpegDataset, SeedDataset

    case = plan.loader
    rows = _measure_family(loader_works, "seed", plan)
    for row in rows.values():
        # Peak memory is left out: the work happens in the loaders' worker processes.
        row.update(throughput=case.images / row["median_s"], throughput_unit="images/s")
    _record_family(mmperf_report, "disk pipeline",
                   f"Disk pipeline: {case.images} JPEGs of {case.min_side}-{case.max_side} px "
                   "-> one normalised batch (workers persistent)", "seed", rows)
    # Stage breakdown of the per-item work in this process (DataLoader workers are other
    # processes, which the profiler does not see): decode, resize, convert, normalise.
    data = case.dataset()
    paths, captions = [str(p) for p in data.paths], list(data.captions)
    datasets: dict[str, Any] = {"seed": SeedDataset(paths, captions),
                                "fast": FastJpegDataset(paths, captions)}
    for impl, dataset in datasets.items():
        def items(ds: Any = dataset) -> object:
            return [ds[i] for i in range(len(ds))]

        work = Workload(case.name, impl, "cpu", "float32", items)
        _record_breakdown(mmperf_report, work, "disk pipeline", impl, plan)


# ------------------------------------------------------------------------------ attention


def _attention_rows(works: dict[str, Workload], baseline: str, tokens: int, plan: Plan,
                    report: Any, family: str,
                    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The family's rows and its matmul peaks per dtype; records each row's efficiency."""
    from pytest_mmperf.calibrate import efficiency, matmul_peak

    rows = _measure_family(works, baseline, plan)
    peaks: dict[str, Any] = {}
    for impl, row in rows.items():
        work = works[impl]
        if work.dtype not in peaks:
            peaks[work.dtype] = matmul_peak(work.dtype, work.device, plan.matmul_n,
                                            plan.peak_run_s)
        peak = peaks[work.dtype]
        gflops = (work.flops or 0) / row["median_s"] / 1e9
        row.update(throughput=tokens / row["median_s"], throughput_unit="tokens/s",
                   gflops=gflops, peak_fraction=efficiency(gflops, peak),
                   peak_unit=f"GFLOP/s ({work.dtype} matmul)",
                   peak_memory_bytes=_peak_memory(work))
    peak_dicts = {dtype: p.to_dict() for dtype, p in peaks.items()}
    for impl, row in rows.items():
        peak_value = peak_dicts[works[impl].dtype]["value"]
        report.add("efficiency", family=family, implementation=impl, achieved=row["gflops"],
                   peak=peak_value, unit="GFLOP/s", fraction=efficiency(row["gflops"], peak_value))
    return rows, peak_dicts


def _label(work: Workload) -> str:
    return work.impl if work.dtype == "float32" else f"{work.impl} {work.dtype}"


def test_family_attention_clip(mmperf_report: Any, plan: Plan) -> None:

    case = plan.clip
    works = {impl: case.build(impl) for impl in ("math", "seed", "sdpa", "mha")}
    bf16 = _skip_unavailable(lambda: case.build("sdpa", "bfloat16"))
    if bf16 is not None:
        works[_label(bf16)] = bf16
    tokens = case.batch_size * (case.text_tokens + case.image_tokens)
    rows, peaks = _attention_rows(works, "math", tokens, plan, mmperf_report, "attention (CLIP)")
    _record_family(mmperf_report, "attention (CLIP)",
                   f"Cross-attention block at CLIP size: B={case.batch_size}, "
                   f"{case.text_tokens} text -> {case.image_tokens} image tokens, "
                   f"D={case.dim}, {case.heads} heads", "math", rows, peaks=peaks,
                   note="seed: the article's module (other maths: shared projection, no heads, "
                        "no scaling; it returns the weights), kept as the 'before'")
    for impl in ("math", "sdpa", "mha"):
        _record_breakdown(mmperf_report, works[impl], "attention (CLIP)", impl, plan)


def _scaling_case(plan: Plan, tokens: int) -> LongSequenceCase:
    long = plan.long
    return LongSequenceCase(f"{long.name}-n{tokens}", tokens=tokens, batch_size=long.batch_size,
                            text_tokens=long.text_tokens, dim=long.dim, heads=long.heads,
                            window=long.window, seed=long.seed)


def _labelled(work: Workload) -> Workload:
    """``work`` inside an ``mmperf::attention`` label where reference/ has none of its own (the
    bare sliding-window core): how a user labels their own code for the breakdown."""
    if work.impl != "local":
        return work
    from torch.profiler import record_function

    def run() -> object:
        with record_function("mmperf::attention"):
            return work.fn()

    return Workload(work.case, work.impl, work.device, work.dtype, run, work.flops)


def test_family_attention_long(mmperf_report: Any, plan: Plan) -> None:
    from pytest_mmperf.measure import time_one
    from pytest_mmperf.stats import fit_loglog_slope

    case = plan.long
    works = {impl: case.build(impl) for impl in ("math", "sdpa", "local")}
    rows, peaks = _attention_rows(works, "math", case.batch_size * case.tokens, plan,
                                  mmperf_report, "attention (long sequence)")
    _record_family(mmperf_report, "attention (long sequence)",
                   f"Attention core over a joint text+image sequence of {case.tokens} tokens, "
                   f"D={case.dim}, {case.heads} heads, window {case.window} (local)", "math",
                   rows, peaks=peaks)
    for impl, work in works.items():
        _record_breakdown(mmperf_report, _labelled(work), "attention (long sequence)", impl, plan)

    # Scaling: time and peak memory of each backend against N (the explicit version's N x N
    # scores make it quadratic in memory; the fused and sparse ones stay linear).
    sizes = list(plan.scaling_tokens)
    for impl in ("math", "sdpa", "local"):
        times: list[float] = []
        memory: list[float] = []
        for n in sizes:
            work = _scaling_case(plan, n).build(impl)
            times.append(time_one(work.fn, work.device, budget_s=plan.budget_s / len(sizes),
                                  min_blocks=plan.min_blocks, warmup_s=0.02,
                                  inference_mode=False).median_s)
            memory.append(float(_peak_memory(work) or 0))
        for metric, unit, values in (("time", "s", times), ("memory", "bytes", memory)):
            slope = fit_loglog_slope([float(s) for s in sizes], [max(v, 1e-30) for v in values])[0]
            mmperf_report.add("scaling", family="attention (long sequence)",
                              implementation=impl, metric=metric, unit=unit, sizes=sizes,
                              values=values, slope=slope)
            if metric == "memory":
                # Any honest measurement: the explicit version's memory grows faster than the
                # fused one's (N x N scores against O(N) buffers).
                assert values[-1] > values[0], f"{impl}: memory did not grow with N: {values}"
