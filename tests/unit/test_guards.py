"""Guard behaviour with injected timings, counters and workers (fast, deterministic).

The statistics and the pytest outcome of each path are checked: a clear pass, a clear fail, an
inconclusive result under each policy, worker failures, xdist skipping, worker mode, and every
counter guard. Real processes are exercised in tests/plugin/test_guard_plugin.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_mmperf.counting.opnames import sum_ops
from pytest_mmperf.glue import workers
from pytest_mmperf.glue.guard_fixture import XDIST_SKIP_REASON, PytestGuard
from pytest_mmperf.guards import (
    Guard,
    GuardFailure,
    GuardResult,
    GuardSettings,
    GuardSkipped,
    Instruments,
    MmperfInconclusiveWarning,
)
from pytest_mmperf.timing import isolation
from pytest_mmperf.timing.isolation import WorkerSpec
from pytest_mmperf.timing.measure import PairSamples
from pytest_mmperf.timing.ratio import WorkerError
from pytest_mmperf.units import parse_bytes

Failed = GuardFailure  # an AssertionError, outside pytest as inside
Skipped = GuardSkipped  # the core's skip; the pytest glue turns it into pytest.skip
PytestSkipped = pytest.skip.Exception


class FakeTiming:
    """Per-process synthetic samples: candidate/baseline time ratio ``ratios[k]`` in process k."""

    def __init__(self, ratios: list[float], noise: float = 0.01, rounds: int = 20,
                 other_cpu_cores: float | None = 0.0, threads: int = 2,
                 cores: int | None = None) -> None:
        self.ratios, self.noise, self.rounds = ratios, noise, rounds
        self.other_cpu_cores = other_cpu_cores  # 0.0: nothing else ran
        self.threads, self.cores = threads, cores
        self.measure_kwargs: list[dict[str, Any]] = []
        self.spawned: list[tuple[int, int, float, int]] = []

    def samples(self, k: int) -> PairSamples:
        rng = random.Random(k)
        base = [0.004] * self.rounds
        cand = [0.004 * self.ratios[k] * math.exp(rng.gauss(0, self.noise)) for _ in base]
        return PairSamples(cand, base, 5, 5, "cb" * (self.rounds // 2), "cpu", self.threads,
                           True, 1.0, other_cpu_cores=self.other_cpu_cores,
                           cores=self.cores, threads_requested="auto",
                           warmup_other_cpu_cores=self.other_cpu_cores)

    def measure_pair(self, candidate: Any, baseline: Any, device: str, **kw: Any) -> PairSamples:
        self.measure_kwargs.append(kw)
        return self.samples(0)

    def spawner(self, index: int, process: int, budget_s: float, seed: int) -> PairSamples:
        self.spawned.append((index, process, budget_s, seed))
        return self.samples(process)


_SETTINGS = ("budget_s", "processes", "inconclusive", "update_snapshots")
_INSTRUMENTS = ("measure_one", "counters")
_GLUE = ("worker", "under_xdist", "is_marked")


def make_guard(fake: FakeTiming, **kw: Any) -> tuple[Guard, list[GuardResult]]:
    """A core Guard, or the pytest glue's PytestGuard when a glue argument is given."""
    results: list[GuardResult] = []
    kw.setdefault("spawner", fake.spawner)
    kw.setdefault("processes", 3)
    settings = GuardSettings(**{k: kw.pop(k) for k in _SETTINGS if k in kw})
    instruments = Instruments(measure_pair=fake.measure_pair,
                              **{k: kw.pop(k) for k in _INSTRUMENTS if k in kw})
    glue = {k: kw.pop(k) for k in _GLUE if k in kw}
    common = dict(nodeid="t.py::test_x", recorder=results.append, instruments=instruments, **kw)
    if not glue:
        return Guard(settings, **common), results
    glue.setdefault("worker", None)
    glue.setdefault("under_xdist", False)
    glue.setdefault("is_marked", lambda: True)
    common.setdefault("snapshot_store", None)
    return PytestGuard(settings, device="cpu", **common, **glue), results


def noop() -> None:
    return None


def test_clear_pass_stops_after_two_agreeing_processes() -> None:
    fake = FakeTiming([0.5, 0.5, 0.5])  # candidate takes half the time: speedup 2
    guard, results = make_guard(fake)
    result = guard.faster(noop, noop, at_least=1.5, name="half")
    assert result.verdict == "pass" and result.decided_by == "interval"
    assert result.estimate == pytest.approx(2.0, rel=0.02)
    assert result.ci_low >= 1.5 and result.n_processes == 2
    assert result.samples_per_process == [20, 20] and len(fake.spawned) == 1
    assert results == [result]
    json.dumps(result.to_dict())  # JSON-serialisable for the report
    assert fake.measure_kwargs[0]["inference_mode"] is True


def test_min_processes_pools_more_after_a_clear_decision() -> None:
    fake = FakeTiming([0.5, 0.5, 0.5, 0.5])
    guard, _ = make_guard(fake, processes=4)
    result = guard.faster(noop, noop, at_least=1.5, min_processes=3)
    assert result.verdict == "pass" and result.n_processes == 3 and len(fake.spawned) == 2
    capped, _ = make_guard(FakeTiming([0.5] * 4), processes=2)
    assert capped.faster(noop, noop, at_least=1.5, min_processes=3).n_processes == 2
    with pytest.raises(ValueError, match="min_processes.*int >= 1.*0"):
        guard.not_slower(noop, noop, min_processes=0)


def test_clear_fail_message_shows_estimate_interval_threshold_samples_device() -> None:
    fake = FakeTiming([1.0, 1.0, 1.0])
    guard, results = make_guard(fake)
    with pytest.raises(Failed) as info:
        guard.faster(noop, noop, at_least=1.5)
    text = str(info.value)
    assert "faster(): FAIL: speedup 1.00" in text
    assert "95% interval [" in text and "required at least 1.5x" in text
    # 1.0x against 1.5x is clear-cut: the parent decides alone, with the assumed spread
    assert "20 rounds x 1 process on cpu" in text and not fake.spawned
    assert "between-process sd 0.150 (log, assumed for one process)" in text
    assert results[0].verdict == "fail" and results[0].ci_high < 1.5


def test_only_a_clear_cut_ratio_is_decided_without_a_worker() -> None:
    """One process's interval assumes a between-process sd of 0.15 (log): a 4x speedup against
    1.5x is decided by the parent alone, a 2x speedup (test above) needs a worker, and the
    one-process interval is wide enough to cover the spread measured between processes."""
    fake = FakeTiming([0.25])
    guard, _ = make_guard(fake)
    result = guard.faster(noop, noop, at_least=1.5)
    assert result.verdict == "pass" and result.n_processes == 1 and not fake.spawned
    assert result.ci_low < 4.0 / 1.3 and result.ci_high > 4.0 * 1.3  # 0.93-1.30 measured


@pytest.mark.parametrize("others", [0.8, None])
def test_a_busy_or_unknown_machine_pools_workers_even_for_a_clear_cut_ratio(
        others: float | None) -> None:
    """Under contention one process's ratio was seen far off (docs/measurements.md#busy-runner):
    the parent alone decides only when other processes left the cores alone while it measured
    (and the platform says so)."""
    fake = FakeTiming([0.25, 0.25], other_cpu_cores=others)
    guard, _ = make_guard(fake)
    result = guard.faster(noop, noop, at_least=1.5)
    assert result.verdict == "pass" and result.n_processes == 2 and len(fake.spawned) == 1
    assert result.extra["other_cpu_cores"] == [others, others]


def test_one_thread_beside_a_busy_core_is_quiet_enough_to_decide_alone() -> None:
    """Measured with one thread on a machine whose other core another job keeps busy,
    the cores the guard used were quiet: a clear-cut ratio is decided without a worker, and the
    message and JSON say how many threads measured and how busy the machine was."""
    fake = FakeTiming([0.25, 0.25], other_cpu_cores=0.93, threads=1, cores=2)
    guard, _ = make_guard(fake)
    result = guard.faster(noop, noop, at_least=1.5)
    assert result.verdict == "pass" and result.n_processes == 1 and not fake.spawned
    assert "(1 thread (threads=auto: 2 cores, other processes kept 0.93 busy)" in result.message
    assert result.extra["threads_per_process"] == [1] and result.extra["cores"] == 2
    assert result.extra["threads_requested"] == "auto"
    busy_both = FakeTiming([0.25, 0.25], other_cpu_cores=0.93, threads=2, cores=2)
    assert make_guard(busy_both)[0].faster(noop, noop, at_least=1.5).n_processes == 2


def test_guard_settings_threads_are_validated_and_reach_the_timer() -> None:
    with pytest.raises(ValueError, match=r"GuardSettings threads must be auto or an integer >= 1, "
                                         r"got 0"):
        GuardSettings(threads=0)
    assert GuardSettings().threads == "auto"
    fake = FakeTiming([0.25])
    guard = Guard(GuardSettings(threads=1, processes=1),
                  instruments=Instruments(measure_pair=fake.measure_pair))
    guard.faster(noop, noop, at_least=1.5)
    assert fake.measure_kwargs[-1]["threads"] == 1


def test_disagreeing_processes_use_all_processes() -> None:
    fake = FakeTiming([1.0, 1.08, 0.95])  # spread keeps the 2-process interval over 1.10
    guard, _ = make_guard(fake, processes=3)
    with pytest.warns(MmperfInconclusiveWarning):  # still straddling 1.10 with 3 processes
        result = guard.not_slower(noop, noop, tolerance=0.10)
    assert result.n_processes == 3 and [s[1] for s in fake.spawned] == [1, 2]


def test_default_adds_processes_only_while_unclear() -> None:
    fake = FakeTiming([1.0, 1.09, 0.93, 1.02, 0.98])
    guard = Guard(GuardSettings(processes=5), spawner=fake.spawner,
                  instruments=Instruments(measure_pair=fake.measure_pair))
    result = guard.not_slower(noop, noop, tolerance=0.10)
    assert result.n_processes > 3 and [s[1] for s in fake.spawned] == list(
        range(1, result.n_processes))
    clear = FakeTiming([0.5] * 5)
    assert Guard(spawner=clear.spawner, instruments=Instruments(clear.measure_pair)).faster(
        noop, noop, at_least=1.5).n_processes == 2


def test_not_slower_catches_a_25_percent_slowdown() -> None:
    fake = FakeTiming([1.25, 1.25, 1.25])
    guard, results = make_guard(fake)
    with pytest.raises(Failed, match="not_slower\\(\\): FAIL: slowdown 1.2"):
        guard.not_slower(noop, noop, tolerance=0.10)
    assert results[0].threshold == pytest.approx(1.10)


def test_inconclusive_estimate_policy_warns_and_lets_the_estimate_decide() -> None:
    fake = FakeTiming([1.0 / 1.52, 1.0 / 1.55, 1.0 / 1.50], noise=0.05)  # speedup ~1.52 vs 1.5
    guard, results = make_guard(fake, inconclusive="estimate")
    with pytest.warns(MmperfInconclusiveWarning, match="raise GuardSettings budget_s / "
                                                       "processes for a clear decision") as record:
        result = guard.faster(noop, noop, at_least=1.5)
    assert record[0].filename == __file__  # points at the test that called the guard
    assert result.decided_by == "estimate" and result.verdict == "pass"
    assert result.extra["interval_decision"] == "inconclusive"
    assert result.ci_low < 1.5 < result.ci_high and result.n_processes == 3
    assert "INCONCLUSIVE" in result.message and results == [result]
    assert "--mmperf" not in result.message  # the core names GuardSettings fields
    # The pytest glue names its options instead.
    glued, _ = make_guard(fake, inconclusive="estimate", under_xdist=False)
    with pytest.warns(MmperfInconclusiveWarning, match="raise --mmperf-budget / "
                                                       "--mmperf-processes, or run `pytest "
                                                       "--benchmark`"):
        glued.faster(noop, noop, at_least=1.5)


def test_inconclusive_estimate_policy_fails_only_beyond_the_spread() -> None:
    # 1.40x against 1.5x: beyond the threshold by more than the between-process sd: fail.
    fake = FakeTiming([1.0 / 1.40, 1.0 / 1.38, 1.0 / 1.42], noise=0.05)
    guard, results = make_guard(fake)
    with pytest.warns(MmperfInconclusiveWarning), pytest.raises(Failed, match="INCONCLUSIVE"):
        guard.faster(noop, noop, at_least=1.5)
    assert results[0].verdict == "fail" and results[0].decided_by == "estimate"
    assert results[0].extra["interval_decision"] == "inconclusive"
    # 1.47x: short of 1.5 by less than the spread (log 0.02 < 0.03): a pass with a warning.
    near = FakeTiming([1.0 / 1.47, 1.0 / 1.45, 1.0 / 1.49], noise=0.05)
    guard, results = make_guard(near)
    with pytest.warns(MmperfInconclusiveWarning, match="between-process sd"):
        result = guard.faster(noop, noop, at_least=1.5)
    assert result.verdict == "pass" and result.decided_by == "estimate" and result.estimate < 1.5


def test_estimate_policy_takes_the_median_process_not_one_wild_one() -> None:
    """Identical work on a busy machine: two processes read 1.0, one 20x (contention can throw
    one process that far off). The pooled mean is far beyond a 10 % tolerance; the median
    process is not, so the guard passes with a warning that names the contention."""
    fake = FakeTiming([1.0, 1.01, 20.0], noise=0.05, other_cpu_cores=0.8)
    guard, _ = make_guard(fake)
    with pytest.warns(MmperfInconclusiveWarning, match="other processes kept 0.80 cores busy"):
        result = guard.not_slower(noop, noop, tolerance=0.10)
    assert result.estimate > 2.0  # the pooled estimate a mean-based policy would have failed
    assert result.verdict == "pass" and result.decided_by == "estimate"
    assert result.extra["point_estimate"] == pytest.approx(1.01, rel=0.05)
    # a slowdown the processes roughly agree on still fails on the median process (a wild one
    # widens the between-process sd, the margin, so that disagreement passes with a warning)
    slow = FakeTiming([1.3, 1.25, 1.6], noise=0.05, other_cpu_cores=0.8)
    guard, _ = make_guard(slow)
    with pytest.warns(MmperfInconclusiveWarning), pytest.raises(Failed, match="median process"):
        guard.not_slower(noop, noop, tolerance=0.10)


@pytest.mark.parametrize(("policy", "outcome"), [("fail", Failed), ("skip", Skipped)])
def test_inconclusive_fail_and_skip_policies(policy: str, outcome: type[Exception]) -> None:
    fake = FakeTiming([1.0 / 1.52, 1.0 / 1.55, 1.0 / 1.50], noise=0.05)
    guard, results = make_guard(fake, inconclusive=policy)
    with pytest.raises(outcome, match="INCONCLUSIVE: the interval straddles 1.5"):
        guard.faster(noop, noop, at_least=1.5)
    assert results[0].verdict == "inconclusive" and results[0].decided_by == "interval"


def test_worker_failure_is_a_test_failure_naming_the_worker() -> None:
    def broken(index: int, process: int, budget_s: float, seed: int) -> PairSamples:
        raise WorkerError("mmperf worker 1 for t.py::test_x exited with code 4\nImportError: x",
                          returncode=4)

    guard, results = make_guard(FakeTiming([0.5]), spawner=broken)
    with pytest.raises(Failed, match="worker 1 .* code 4\nImportError: x") as core:
        guard.faster(noop, noop, at_least=1.5)
    assert results[0].verdict == "fail" and results[0].decided_by == "worker-error"
    assert "GuardSettings(processes=1) turns it off" in str(core.value)
    glued, _ = make_guard(FakeTiming([0.5]), spawner=broken, under_xdist=False)
    with pytest.raises(Failed, match="--mmperf-processes=1 turns it off"):
        glued.faster(noop, noop, at_least=1.5)


def test_single_process_without_spawner() -> None:
    guard, _ = make_guard(FakeTiming([0.25]), spawner=None)
    result = guard.faster(noop, noop, at_least=1.5)
    assert result.n_processes == 1 and result.decided_by == "interval"


def test_stop_rule_passed_to_measurement_stops_clear_processes() -> None:
    fake = FakeTiming([0.5, 0.5])
    guard, _ = make_guard(fake)
    guard.faster(noop, noop, at_least=1.5)
    stop = fake.measure_kwargs[0]["should_stop"]
    assert stop(fake.samples(0)) is True  # 2x vs 1.5 with 1 % noise: clear
    borderline = FakeTiming([1 / 1.5], noise=0.2).samples(0)
    assert stop(borderline) is False


def test_xdist_skips_timing_guards_but_runs_counter_guards() -> None:
    guard, results = make_guard(FakeTiming([0.5]), under_xdist=True,
                                counters=fake_counters({"aten::mm": 2}))
    with pytest.raises(PytestSkipped, match="parallel workers distort timing"):
        guard.faster(noop, noop, at_least=1.5)
    assert results[0].verdict == "skipped" and results[0].message == XDIST_SKIP_REASON
    assert guard.max_ops(noop, {"mm": 2}).verdict == "pass"


def test_unmarked_timing_test_fails_naming_the_marker() -> None:
    guard, results = make_guard(FakeTiming([0.5, 0.5]), is_marked=lambda: False,
                                counters=fake_counters({"aten::mm": 2}))
    assert guard.max_ops(noop, {"mm": 2}).verdict == "pass"  # counter guards need no marker
    with pytest.raises(pytest.fail.Exception, match="@pytest.mark.mmperf_timing"):
        guard.not_slower(noop, noop)
    marked, _ = make_guard(FakeTiming([0.5, 0.5]), is_marked=lambda: True)
    assert marked.faster(noop, noop, at_least=1.5).verdict == "pass"


def test_guard_failure_is_an_assertion_error_carrying_the_result() -> None:
    guard, _ = make_guard(FakeTiming([1.0, 1.0, 1.0]))
    with pytest.raises(AssertionError) as info:
        guard.faster(noop, noop, at_least=1.5)
    assert isinstance(info.value, GuardFailure) and info.value.result.verdict == "fail"
    assert str(info.value) == info.value.result.message


def test_worker_mode_placeholders_then_measures_target_call(tmp_path: Path) -> None:
    out = tmp_path / "w.json"
    spec = WorkerSpec("t.py::test_x", index=1, output=str(out), budget_s=0.5, seed=9, process=2)
    calls: list[str] = []
    fake = FakeTiming([0.5])
    guard, results = make_guard(fake, worker=spec, counters=lambda *a, **k: calls.append("c"))
    placeholder = guard.max_ops(noop, {"mm": 1})
    assert placeholder.verdict == "skipped" and calls == []  # nothing counted before the target
    with pytest.raises(PytestSkipped, match="mmperf worker 2: measured guard call #2"):
        guard.faster(noop, noop, at_least=1.5)
    payload = json.loads(out.read_text())
    assert PairSamples.from_dict(payload["samples"]).n_blocks == 20
    assert fake.measure_kwargs[0]["budget_s"] == 0.5 and fake.measure_kwargs[0]["seed"] == 9
    assert results == [] and fake.spawned == []  # workers neither record nor spawn


def test_worker_mode_reports_a_different_path(tmp_path: Path) -> None:
    out = tmp_path / "w.json"
    guard, _ = make_guard(FakeTiming([0.5]), worker=WorkerSpec("t.py::test_x", 0, str(out), 0.5),
                          counters=fake_counters({}))
    with pytest.raises(PytestSkipped):
        guard.max_ops(noop, 1)
    assert "takes a different path" in json.loads(out.read_text())["error"]


def test_bad_arguments() -> None:
    guard, _ = make_guard(FakeTiming([0.5]))
    with pytest.raises(ValueError, match="at_least=...\\) must be a finite ratio > 0, got -1"):
        guard.faster(noop, noop, at_least=-1)
    with pytest.raises(TypeError, match="candidate must be a zero-argument callable"):
        guard.not_slower(None, noop)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="GuardSettings inconclusive must be one of estimate, "
                                         "fail, skip, got 'maybe'"):
        GuardSettings(inconclusive="maybe")


# ------------------------------------------------------------------------ counter guards
def fake_counters(ops: dict[str, int], **values: Any) -> Any:
    def counters(fn: Any, device: str = "cpu", metrics: tuple[str, ...] = ()) -> Any:
        fn()
        return SimpleNamespace(ops=dict(ops), flops=values.get("flops", 0),
                               bytes_materialized=values.get("bytes", 0),
                               peak_memory_bytes=values.get("peak_memory", 0),
                               syncs=values.get("syncs"), device=device)
    return counters


def sized_counters(per_size: dict[int, dict[str, int]]) -> Any:
    """Counters whose ops depend on the size recorded by the callable."""
    current: list[int] = []

    def counters(fn: Any, device: str = "cpu", metrics: tuple[str, ...] = ()) -> Any:
        fn()
        size = current[-1]
        return SimpleNamespace(ops=per_size[size], flops=size**2, peak_memory_bytes=64 * size,
                               bytes_materialized=0, syncs=None)

    def fn_of_size(size: int) -> Any:
        return lambda: current.append(size)

    return counters, fn_of_size


def test_max_ops_pass_and_fail_with_any_op_spelling() -> None:
    guard, results = make_guard(FakeTiming([1]), counters=fake_counters(
        {"aten.mm.default": 3, "aten::add.Tensor": 2, "aten::softmax": 1}))
    assert guard.max_ops(noop, {"aten::mm": 3, "add": 2}).verdict == "pass"
    with pytest.raises(Failed, match="mm: 3 \\(max 2\\).*over the limit: \\['mm'\\]"):
        guard.max_ops(noop, {"mm": 2})
    with pytest.raises(Failed, match="\\*: 6 \\(max 5\\)"):
        guard.max_ops(noop, 5)
    assert [r.verdict for r in results] == ["pass", "fail", "fail"]


def test_ops_constant_passes_for_vectorised_and_fails_for_loops() -> None:
    counters, fn_of_size = sized_counters({1: {"mm": 1, "add": 1}, 4: {"mm": 1, "add": 1}})
    guard, _ = make_guard(FakeTiming([1]), counters=counters)
    assert guard.ops_constant(fn_of_size, [1, 4]).verdict == "pass"
    counters, fn_of_size = sized_counters({1: {"resize": 1, "mm": 1}, 2: {"resize": 2, "mm": 1},
                                           4: {"resize": 4, "mm": 1}})
    guard, _ = make_guard(FakeTiming([1]), counters=counters)
    with pytest.raises(Failed) as info:
        guard.ops_constant(fn_of_size, [1, 2, 4])
    assert "per size 1: 2, 2: 3, 4: 5" in str(info.value)
    assert "ops that grew with size: resize 1->2->4" in str(info.value)
    assert guard.ops_constant(fn_of_size, [1, 2, 4], only=["aten::mm"]).verdict == "pass"


def test_ops_constant_requires_factories() -> None:
    guard, _ = make_guard(FakeTiming([1]), counters=fake_counters({}))
    with pytest.raises(TypeError, match="fn_of_size\\(1\\) returned int; it must build"):
        guard.ops_constant(lambda n: n, [1, 2])
    with pytest.raises(ValueError, match="at least 2 distinct sizes"):
        guard.ops_constant(lambda n: noop, [3, 3])


def test_max_memory_and_max_flops() -> None:
    guard, _ = make_guard(FakeTiming([1]), counters=fake_counters({}, peak_memory=2048,
                                                                   flops=10**6))
    assert guard.max_memory(noop, "2 KiB").verdict == "pass"
    with pytest.raises(Failed, match="peak_memory 2,048 \\(max 1,024\\)"):
        guard.max_memory(noop, 1024)
    assert guard.max_flops(noop, 10**6).estimate == 10**6
    with pytest.raises(Failed, match="flops 1,000,000"):
        guard.max_flops(noop, 999_999)


def test_scaling_fits_exponent_of_counters_and_time() -> None:
    counters, fn_of_size = sized_counters({s: {} for s in (64, 128, 256)})
    guard, _ = make_guard(FakeTiming([1]), counters=counters)
    linear = guard.scaling(fn_of_size, [64, 128, 256], metric="memory", max_exponent=1.2)
    assert linear.estimate == pytest.approx(1.0) and linear.extra["values"] == [4096, 8192, 16384]
    with pytest.raises(Failed, match="flops ~ size\\^2.00 \\(r²=1.000\\), max exponent 1.5"):
        guard.scaling(fn_of_size, [64, 128, 256], metric="flops", max_exponent=1.5)

    def measure_one(fn: Any, device: str, **kw: Any) -> Any:
        size = fn()
        return SimpleNamespace(median_s=1e-6 * size**1.5)

    guard = Guard(instruments=Instruments(measure_one=measure_one))
    timed = guard.scaling(lambda n: (lambda: n), [10, 100], metric="time", max_exponent=2)
    assert timed.estimate == pytest.approx(1.5) and timed.verdict == "pass"
    with pytest.raises(ValueError, match="accepted metrics are"):
        guard.scaling(lambda n: noop, [1, 2], metric="energy")


def test_no_sync_skips_on_cpu_and_counts_on_cuda() -> None:
    guard, results = make_guard(FakeTiming([1]), counters=fake_counters({}, syncs=1))
    with pytest.raises(Skipped, match="no_sync needs a CUDA device"):
        guard.no_sync(noop)
    assert results[-1].verdict == "skipped"
    with pytest.raises(Failed, match="1 host-device synchronisations"):
        guard.no_sync(noop, device="cuda:0")


def test_snapshot_uses_the_store_and_fails_on_change_or_missing_record(tmp_path: Path) -> None:
    from pytest_mmperf.counting.snapshots import SnapshotStore

    store = SnapshotStore(tmp_path / "snap.json")
    counters = fake_counters({"aten.mm.default": 12}, flops=7)
    guard, _ = make_guard(FakeTiming([1]), counters=counters, snapshot_store=store)
    with pytest.raises(Failed, match=r"attn: new: no snapshot recorded .*GuardSettings\("
                                     r"update_snapshots=True\) to record the new values"):
        guard.snapshot("attn", noop, metrics=("ops", "flops"))
    updating, _ = make_guard(FakeTiming([1]), counters=counters, snapshot_store=store,
                             update_snapshots=True)
    assert updating.snapshot("attn", noop, metrics=("ops", "flops")).extra["status"] == "updated"
    assert store.cases["attn"] == {"flops": 7, "total_ops": 12}
    assert guard.snapshot("attn", noop, metrics=("ops", "flops")).verdict == "pass"
    grown, _ = make_guard(FakeTiming([1]), snapshot_store=store,
                          counters=fake_counters({"aten.mm.default": 13}, flops=7))
    with pytest.raises(Failed, match="(?s)attn: changed: .*total_ops.*12.*13"):
        grown.snapshot("attn", noop, metrics=("ops", "flops"))
    within = grown.snapshot("attn", noop, metrics=("ops", "flops"), tolerance={"ops": 0.1})
    assert within.verdict == "pass"
    with pytest.raises(ValueError, match="snapshot metrics \\['time'\\]"):
        guard.snapshot("attn", noop, metrics=("time",))


def test_helpers() -> None:
    ops = {"aten.mm.default": 2, "aten::mm.out": 1, "aten::add.Tensor": 4}
    assert sum_ops(ops) == 7 and sum_ops(ops, "mm") == 3 and sum_ops(ops, ["add"]) == 4
    assert parse_bytes("1.5 KiB") == 1536 and parse_bytes("64MB") == 64_000_000
    assert parse_bytes(10) == 10
    with pytest.raises(ValueError, match="'3 parsecs' is not a byte count"):
        parse_bytes("3 parsecs")


# ------------------------------------------------------------------------ isolation helpers
def test_worker_spec_env_round_trip_and_validation() -> None:
    spec = WorkerSpec("a.py::t[cpu]", 2, "/tmp/x.json", 1.5, 7, 1)
    assert WorkerSpec.from_env({isolation.WORKER_ENV: spec.to_env()}) == spec
    assert WorkerSpec.from_env({}) is None
    with pytest.raises(ValueError, match="PYTEST_MMPERF_WORKER='\\{' is not a valid worker spec"):
        WorkerSpec.from_env({isolation.WORKER_ENV: "{"})


def test_passthrough_args_keeps_plugin_and_mmperf_options_only() -> None:
    args = ["tests/x.py", "-p", "pytester", "-pxdist", "-o", "a=b", "--override-ini=c=d", "-k",
            "slow", "--mmperf-device", "cpu", "--mmperf-seed=3", "--mmperf-require-device",
            "tests/y.py", "--mmperf-json", "out.json", "--benchmark", "-n", "2", "-x"]
    takes = {"--mmperf-device": True, "--mmperf-require-device": False, "--mmperf-json": True}
    assert workers.passthrough_args(args, takes.__getitem__) == [
        "-p", "pytester", "-pxdist", "-o", "a=b", "--override-ini=c=d", "--mmperf-device", "cpu",
        "--mmperf-seed=3", "--mmperf-require-device", "--benchmark"]


def test_worker_command_layout() -> None:
    cmd = workers.worker_command("t.py::x", rootdir="/r", inifile="/r/tox.ini",
                                 parent_args=["-p", "foo"], xdist_loaded=True, python="py")
    assert cmd[:4] == ["py", "-m", "pytest", "t.py::x"]
    assert "--rootdir=/r" in cmd and cmd[cmd.index("-c") + 1] == "/r/tox.ini"
    assert cmd[cmd.index("-n") + 1] == "0" and cmd[-2:] == ["-p", "foo"]


def test_run_worker_reads_samples_and_reports_failures(tmp_path: Path) -> None:
    samples = FakeTiming([0.5]).samples(0)
    data = json.dumps(samples.to_dict())
    writer = (
        "import json, os\n"
        "from pytest_mmperf.timing.isolation import WorkerSpec, write_worker_output\n"
        "s = WorkerSpec.from_env()\n"
        f"write_worker_output(s.output, {{'samples': json.loads({data!r})}})\n"
    )
    spec = WorkerSpec("t.py::x", 0, str(tmp_path / "o.json"), 0.1, 0, 1)
    got = isolation.run_worker(spec, [sys.executable, "-c", writer], cwd=tmp_path)
    assert got.wall_s > 0 and dataclasses.replace(got, wall_s=0.0) == samples
    assert not (tmp_path / "o.json").exists()
    crash = [sys.executable, "-c", "import sys; print('collected 0 items'); sys.exit(4)"]
    with pytest.raises(WorkerError, match="(?s)worker 1 for t.py::x .*code 4.*collected 0 items"):
        isolation.run_worker(spec, crash, cwd=tmp_path)
    error = ("from pytest_mmperf.timing.isolation import *; "
             "write_worker_output(WorkerSpec.from_env().output, {'error': 'different path'})")
    with pytest.raises(WorkerError, match="reported: different path"):
        isolation.run_worker(spec, [sys.executable, "-c", error], cwd=tmp_path)
    with pytest.raises(WorkerError, match="timed out after 1 s"):
        isolation.run_worker(spec, [sys.executable, "-c", "import time; time.sleep(5)"],
                             cwd=tmp_path, timeout_s=1)


# ------------------------------------------------------------------------ with the real counters
def test_real_counters_vectorised_vs_per_item_loop() -> None:
    import torch

    guard, results = make_guard(FakeTiming([1]))

    def batched(n: int) -> Any:
        x = torch.rand(n, 3, 8, 8)
        return lambda: (x - 0.5) / 0.25

    def looped(n: int) -> Any:
        xs = [torch.rand(3, 8, 8) for _ in range(n)]
        return lambda: torch.stack([(x - 0.5) / 0.25 for x in xs])

    assert guard.ops_constant(batched, [1, 4, 16]).verdict == "pass"
    with pytest.raises(Failed, match="ops that grew with size: .*sub"):
        guard.ops_constant(looped, [1, 4, 16])
    x = torch.rand(16, 16)
    assert guard.max_ops(lambda: x @ x, {"mm": 1}).verdict == "pass"
    flops = guard.max_flops(lambda: x @ x, 2 * 16**3)
    assert flops.estimate == 2 * 16**3
    mem = guard.scaling(lambda n: (lambda: torch.ones(n, 256)), [64, 128, 256], metric="memory",
                        max_exponent=1.2)
    assert mem.estimate == pytest.approx(1.0, abs=0.1)
    assert [r.kind for r in results] == ["ops_constant", "ops_constant", "max_ops", "max_flops",
                                         "scaling"]


def test_worker_repeats_the_parents_earlier_failures(tmp_path: Path) -> None:
    """A test that holds an expected guard failure before its timing guard takes the same path
    in the worker: the placeholder of a call that failed in the parent raises too."""
    out = tmp_path / "w.json"
    spec = WorkerSpec("t.py::test_x", index=2, output=str(out), budget_s=0.5, failed=(1,))
    guard, _ = make_guard(FakeTiming([0.5]), worker=spec, counters=fake_counters({}))
    assert guard.max_ops(noop, 1).verdict == "skipped"
    with pytest.raises(AssertionError, match="failed in the parent process"):
        guard.max_ops(noop, 1)
    with pytest.raises(PytestSkipped, match="measured guard call #3"):
        guard.faster(noop, noop, at_least=1.5)
    assert WorkerSpec.from_env({isolation.WORKER_ENV: spec.to_env()}) == spec


def test_parent_hands_its_failed_calls_to_the_spawner() -> None:
    fake = FakeTiming([0.5, 0.5])
    guard, _ = make_guard(fake, is_marked=lambda: True,
                          counters=fake_counters({"aten.mm.default": 3}))
    with pytest.raises(GuardFailure):
        guard.max_ops(noop, {"mm": 1})
    guard.max_ops(noop, {"mm": 3})
    guard.faster(noop, noop, at_least=1.5)
    assert isinstance(guard, PytestGuard) and guard.failed_calls == [0]


def test_message_names_page_faults_per_call_when_they_matter() -> None:
    """A candidate that faults thousands of pages per call gets a line saying so (the cause
    of many CPU slowdowns); a pair that faults little gets none."""
    from pytest_mmperf.timing import ratio

    question = ratio.RatioQuestion("not_slower", 0.10, 0.95, 0.03)

    def samples(candidate_faults: int) -> PairSamples:
        s = FakeTiming([1.0]).samples(0)  # 20 rounds of 5 calls each side
        s.candidate_faults, s.baseline_faults = candidate_faults, 0
        return s

    heavy = ratio.conclude(question, [samples(20 * 5 * 4096)], label="g", device="cpu",
                           budget_s=1.0, policy="estimate")
    assert "minor page faults per call: candidate 4,096, baseline 0" in heavy.message
    assert heavy.fields["extra"]["faults_per_call"] == [(4096.0, 0.0)]
    light = ratio.conclude(question, [samples(20 * 5 * 10)], label="g", device="cpu",
                           budget_s=1.0, policy="estimate")
    assert "page faults" not in light.message
