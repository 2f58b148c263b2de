"""Machine calibration: practical matmul and memory-copy peaks, a family's own roofline (the
resize kernel), cached; efficiency."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

from pytest_mmperf.report import calibrate
from pytest_mmperf.report.calibrate import (
    RESIZE_ROOFLINE_NAME,
    Peak,
    Roofline,
    efficiency,
    kernel_peak,
    matmul_peak,
    measure_matmul,
    memcpy_peak,
    reconcile_peak,
    resize_roofline,
)
from pytest_mmperf.report.families import FamilyPlan, measure_family
from pytest_mmperf.report.figures import Family
from pytest_mmperf.timing.measure import PairSamples

# Small sizes and short runs: the machine is shared and the tests must stay quick.
N = 256
RUN = 0.1


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Measure with one intra-op thread. On a machine whose few cores are busy with other
    processes, a 2-thread OpenMP matmul waits at barriers for a descheduled thread and runs
    far slower than with one (docs/measurements.md#busy-runner), which would make the
    comparisons below depend on the neighbours' load rather than on the code."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    calibrate.clear_cache()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        calibrate.clear_cache()


def test_matmul_peak_is_best_block_gflops_and_cached() -> None:
    peak = matmul_peak(torch.float32, "cpu", n=N, min_run_time=RUN)
    assert peak.kind == "matmul" and peak.unit == "GFLOP/s" and peak.dtype == "float32"
    assert peak.work == 2 * N**3
    assert peak.value == pytest.approx(peak.work / peak.seconds / 1e9)
    assert peak.value > 0 and peak.seconds <= peak.median_s  # a peak is the best block
    assert peak.threads == torch.get_num_threads() == 1
    again = matmul_peak("float32", "cpu", n=N, min_run_time=RUN)  # same key, other spelling
    assert again is peak  # cached: the very same object, not a new measurement
    assert matmul_peak(torch.float32, "cpu", n=N // 2, min_run_time=RUN) is not peak


def test_peak_beats_a_tiny_matmul_measured_the_same_way() -> None:
    """A 16x16 matmul is dominated by call overhead: far below the practical peak. The factor-2
    tolerance keeps a busy shared machine from failing it; a wrong FLOP formula would not pass."""
    peak = matmul_peak(torch.float32, "cpu", n=N, min_run_time=RUN)
    tiny = measure_matmul(torch.float32, "cpu", 16, min_run_time=RUN)
    assert tiny.work == 2 * 16**3
    assert peak.value >= 0.5 * tiny.value, (peak, tiny)


def test_bf16_peak_measured() -> None:
    peak = matmul_peak(torch.bfloat16, "cpu", n=N, min_run_time=RUN)
    assert peak.dtype == "bfloat16" and peak.value > 0


def test_memcpy_peak_counts_read_and_write() -> None:
    nbytes = 4 << 20
    peak = memcpy_peak("cpu", nbytes=nbytes, min_run_time=RUN)
    assert peak.kind == "memcpy" and peak.unit == "GB/s" and peak.size == nbytes
    assert peak.work == 2 * nbytes
    assert peak.value == pytest.approx(2 * nbytes / peak.seconds / 1e9)
    assert memcpy_peak(torch.device("cpu"), nbytes=nbytes, min_run_time=RUN) is peak
    assert set(peak.to_dict()) >= {"kind", "value", "unit", "device", "seconds"}


def test_efficiency() -> None:
    peak = Peak(kind="matmul", value=200.0, unit="GFLOP/s", dtype="float32", device="cpu",
                size=1024, work=2 * 1024**3, seconds=0.01, median_s=0.011, blocks=5, threads=2)
    assert efficiency(50.0, peak) == pytest.approx(0.25)
    assert efficiency(300.0, 200.0) == pytest.approx(1.5)  # not clamped
    assert efficiency(0.0, 1.0) == 0.0


@pytest.mark.parametrize("achieved, peak, match", [
    (1.0, 0.0, "peak=0"), (-1.0, 2.0, "achieved"), (float("nan"), 2.0, "achieved"),
    (1.0, float("inf"), "peak"), ("fast", 2.0, "achieved"),
])
def test_efficiency_rejects(achieved: object, peak: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        efficiency(achieved, peak)  # type: ignore[arg-type]


@pytest.mark.parametrize("call, match", [
    (lambda: matmul_peak(torch.int64), "floating-point"),
    (lambda: matmul_peak("float33"), "float33"),
    (lambda: matmul_peak(n=0), "n=0"),
    (lambda: matmul_peak(device="gpu7"), "gpu7"),
    (lambda: memcpy_peak(nbytes=-1), "nbytes=-1"),
    (lambda: memcpy_peak(min_run_time=0), "min_run_time"),
])
def test_bad_arguments(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


def test_peak_reports_its_spread_and_blocks() -> None:
    peak = matmul_peak(torch.float32, "cpu", n=N, min_run_time=RUN)
    assert peak.blocks >= calibrate.MIN_BLOCKS
    assert peak.q1_value <= peak.q3_value <= peak.value  # the peak is the best block
    assert peak.sizes == {N: peak.value} and peak.raised_by is None
    assert peak.measured_value == peak.value
    assert peak.to_dict()["sizes"] == {str(N): peak.value}


def test_default_size_is_the_best_of_several(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(calibrate.DEFAULT_MATMUL_SIZES, "cpu", (32, N))
    peak = matmul_peak(torch.float32, "cpu", min_run_time=RUN)
    assert set(peak.sizes) == {32, N}
    assert peak.value == max(peak.sizes.values()) and peak.size in (32, N)
    assert matmul_peak("float32", "cpu", min_run_time=RUN) is peak  # cached


def _peak(value: float) -> Peak:
    return Peak(kind="matmul", value=value, unit="GFLOP/s", dtype="float32", device="cpu",
                size=N, work=2 * N**3, seconds=2 * N**3 / value / 1e9, median_s=0.1, blocks=5,
                threads=1)


def test_reconcile_keeps_a_peak_nobody_beats() -> None:
    peak = _peak(100.0)
    assert reconcile_peak(peak, {"sdpa": 80.0, "math": 20.0}) is peak
    assert reconcile_peak(peak, {}) is peak


def test_reconcile_raises_the_peak_to_the_case_that_beats_it_and_says_so() -> None:
    """SDPA at 118 % of a matmul "peak" (the report once showed it): after reconciling, no
    efficiency is above 100 %, and the peak names the case that set it."""
    peak = _peak(82.0)
    rates = {"sdpa": 97.0, "math": 30.0}
    raised = reconcile_peak(peak, rates, remeasure=False)
    assert raised.value == 97.0 and raised.raised_by == "sdpa"
    assert raised.measured_value == 82.0
    assert max(efficiency(r, raised) for r in rates.values()) == pytest.approx(1.0)


def test_reconcile_remeasures_first() -> None:
    """A peak far too low (1 GFLOP/s, as a disturbed calibration could give) is measured again;
    the new measurement is the peak when it beats the case."""
    low = _peak(1e-3)
    again = reconcile_peak(low, {"case": 2e-3}, min_run_time=RUN)
    assert again.raised_by is None and again.value > 2e-3 and again.size == N


@pytest.mark.parametrize("rate", [float("nan"), -1.0, "fast"])
def test_reconcile_rejects_bad_rates(rate: object) -> None:
    with pytest.raises(ValueError, match="achieved"):
        reconcile_peak(_peak(1.0), {"x": rate})  # type: ignore[dict-item]


def test_roofline_flags_name_the_largest_stage() -> None:
    from pytest_mmperf.report.headline import roofline_flags

    rows = [
        {"family": "preprocessing", "implementation": "naive", "peak_fraction": 0.01},
        {"family": "preprocessing", "implementation": "batched", "peak_fraction": 0.045,
         "peak_unit": "GB/s"},
        {"family": "attention", "implementation": "sdpa", "peak_fraction": 0.7},
        {"family": "attention", "implementation": "sparse", "peak_fraction": 0.2},
        {"family": "attention", "implementation": "mha", "peak_fraction": None},
        {"family": "attention", "implementation": "math", "peak_fraction": 0.1,
         "baseline": True},
    ]
    breakdowns = [{"family": "preprocessing", "implementation": "batched", "total_s": 0.0165,
                   "stages": {"resize": 0.0086, "normalize": 0.0076, "other": 0.0003}}]
    lines = roofline_flags(rows, breakdowns, baselines=("naive",))
    assert lines == [
        "preprocessing/batched at 4.5 % of its peak (GB/s, < 25 %): largest stage resize 52 % "
        "(8.6 ms of 16.5 ms)",
        "attention/sparse at 20.0 % of its peak (< 25 %): no stage breakdown",
    ]
    assert roofline_flags(rows, breakdowns, threshold=0.01, baselines=("naive",)) == []
    with pytest.raises(ValueError, match="threshold"):
        roofline_flags(rows, threshold=0)


# ----------------------------------------------------------------------------- own rooflines


def test_resize_roofline_is_the_kernel_at_its_best() -> None:
    """The resize limit: torch's uint8 antialiased kernel on one contiguous batch per input
    size, outputs preallocated; at least as fast as resizing the same images one call each in
    the plain contiguous (3, H, W) layout with a fresh output (slower)."""
    sizes = [(120, 160)] * 4 + [(96, 128)] * 2
    roofline = resize_roofline(sizes, 64)
    assert roofline.name == RESIZE_ROOFLINE_NAME and roofline.unit == "images"
    assert roofline.work == 6 and roofline.dtype == "uint8"
    peak = kernel_peak(roofline, "cpu", min_run_time=RUN)
    assert peak.kind == "kernel" and peak.unit == "images/s" and peak.name == roofline.name
    assert peak.value == pytest.approx(6 / peak.seconds) and peak.threads == 1
    assert kernel_peak(resize_roofline(list(reversed(sizes)), 64), "cpu",
                       min_run_time=RUN) is peak  # one key per set of sizes: measured once
    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=gen)
              for h, w in sizes]

    def one_by_one() -> None:
        for image in images:
            torch.nn.functional.interpolate(image, size=(64, 64), mode="bilinear",
                                            antialias=True, align_corners=False)

    plain = len(images) / min(calibrate.time_blocks(one_by_one, "cpu", RUN))
    assert peak.value >= 0.7 * plain, (peak.value, plain)


def test_resize_roofline_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="at least one"):
        resize_roofline([])
    with pytest.raises(ValueError, match="size=0"):
        resize_roofline([(10, 10)], 0)
    with pytest.raises(ValueError, match="work must be a finite number > 0"):
        Roofline(name="k", kernel=lambda: None, work=0, unit="images")


def _pair(ratio: float, seconds: float) -> PairSamples:
    return PairSamples(candidate_s=[seconds / ratio] * 5, baseline_s=[seconds] * 5,
                       candidate_number=1, baseline_number=1, order="cbcbc", device="cpu",
                       threads=1, inference_mode=False, budget_s=0.01)


def test_family_fraction_is_against_its_declared_roofline() -> None:
    """With roofline=, each row's fraction of peak is its work rate over the roofline's kernel
    at its best; GFLOP/s given too are recorded but do not set the fraction."""
    calls = []
    roofline = Roofline(name="toy kernel", kernel=lambda: calls.append(1), work=4,
                        unit="images", key="toy")
    plan = FamilyPlan(budget_s=0.01, processes=1, min_blocks=3, breakdown_repeats=1,
                      calibration_s=RUN)
    figures = measure_family(
        "toy", {"slow": lambda: None, "fast": lambda: None}, baseline="slow",
        sample=lambda candidate, baseline, label: [_pair(4.0, 0.01)], plan=plan, items=4,
        unit="images", roofline=roofline, flops=1e6, breakdown=False, memory=False)
    peak = figures.family.peaks["toy kernel"]
    assert calls and peak["kind"] == "kernel" and peak["name"] == "toy kernel"
    for row in figures.family.rows:
        assert row.work_rate == pytest.approx(4 / row.median_s) and row.work_unit == "images/s"
        assert row.gflops == pytest.approx(1e6 / row.median_s / 1e9)  # recorded, not the peak
        assert row.peak_unit == "images/s (toy kernel)"
        assert row.peak_fraction == pytest.approx(row.work_rate / peak["value"])
    assert {e.unit for e in figures.efficiencies} == {"images/s (toy kernel)"}
    with pytest.raises(ValueError, match="pass roofline="):
        measure_family("toy", {"a": lambda: None, "b": lambda: None}, baseline="a",
                       sample=lambda *a: [], plan=plan, work=3)
    with pytest.raises(ValueError, match="counts 'images'; pass work="):
        measure_family("toy", {"a": lambda: None, "b": lambda: None}, baseline="a",
                       sample=lambda *a: [], plan=plan, items=3, unit="rows",
                       roofline=roofline)
    with pytest.raises(TypeError, match="roofline must be a"):
        measure_family("toy", {"a": lambda: None, "b": lambda: None}, baseline="a",
                       sample=lambda *a: [], plan=plan, roofline="resize")  # type: ignore[arg-type]


def test_best_so_far_keeps_the_best_peak_of_the_run() -> None:
    high, low = _peak(202.0), _peak(105.0)
    assert calibrate.best_so_far(high) is high
    assert calibrate.best_so_far(low) is high  # a slower later calibration does not lower it
    other = replace(_peak(50.0), dtype="bfloat16")
    assert calibrate.best_so_far(other) is other  # per dtype
    raised = replace(_peak(500.0), raised_by="sdpa", measured_value=150.0)
    assert calibrate.best_so_far(raised) is raised and calibrate.best_so_far(low) is high
    remeasured = replace(_peak(500.0), raised_by="sdpa", measured_value=300.0)
    assert calibrate.best_so_far(remeasured) is remeasured  # its measured 300 is recorded
    assert calibrate.best_so_far(low).value == 300.0


def test_a_later_family_reads_the_best_peak_of_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first family's peak is re-measured higher (a case beat it); the second family,
    whose own cached calibration is the stale low one, is read against the higher peak."""
    monkeypatch.setattr(calibrate, "matmul_peak", lambda *a, **k: _peak(105.0))
    monkeypatch.setattr(calibrate, "measure_matmul", lambda *a, **k: _peak(202.0))
    plan = FamilyPlan(budget_s=0.01, processes=1, min_blocks=3, breakdown_repeats=1,
                      calibration_s=RUN)

    def family(flops: float) -> Family:
        return measure_family(
            "f", {"a": lambda: None, "b": lambda: None}, baseline="a",
            sample=lambda candidate, baseline, label: [_pair(2.0, 0.01)], plan=plan,
            flops=flops, breakdown=False, memory=False).family

    first = family(1.9e9)  # b: 1.9e9 / 5 ms = 380 GFLOP/s > 105: re-measured (202), raised
    assert first.peaks["float32"]["measured_value"] == 202.0
    second = family(0.5e9)  # b: 100 GFLOP/s: against 202 (the run's best), not 105
    assert second.peaks["float32"]["value"] == 202.0
    assert second.row("b").peak_fraction == pytest.approx(100.0 / 202.0)
