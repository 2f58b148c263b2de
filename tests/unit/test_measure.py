"""Timing core: calibration, interleaving, budget and callback stopping, recorded context.

Most tests use a fake clock that only moves when the measured callables "run", so they are exact
and fast; one test runs real torch ops to check the wiring (no absolute-time assertions).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from pytest_mmperf.timing import contention, measure
from pytest_mmperf.timing.measure import (
    BlockTimer,
    PairSamples,
    calibrate_number,
    time_one,
    time_pair,
)


class FakeClock:
    """A clock that advances only when a fake workload says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float, log: list[str] | None = None, tag: str = ""):
        def fn() -> None:
            self.now += seconds
            if log is not None:
                log.append(tag)
        return fn


@contextmanager
def unrelated_burner(settle_s: float) -> Iterator[None]:
    """A process that burns one core and is no child of this one: started through a shell that
    exits, so init adopts it. Waits ``settle_s`` for it to get going; killed on exit."""
    shell = subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'while True: pass' "
                            ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                           check=True)
    stranger = int(shell.stdout.strip())
    try:
        time.sleep(settle_s)
        yield
    finally:
        os.kill(stranger, signal.SIGKILL)


@pytest.mark.parametrize(("cost", "expected"), [(1e-3, 20), (0.03, 1), (1e-6, 20_000), (7e-3, 3)])
def test_calibrate_number_targets_block_length(cost: float, expected: int) -> None:
    clock = FakeClock()
    assert calibrate_number(clock.work(cost), BlockTimer("cpu", clock), 0.02) == expected


def test_time_pair_records_per_call_seconds_and_log_ratios() -> None:
    clock = FakeClock()
    s = time_pair(clock.work(1e-3), clock.work(2e-3), "cpu", budget_s=1.0, min_blocks=4,
                  clock=clock, seed=0)
    assert s.candidate_number == 20 and s.baseline_number == 10
    assert all(t == pytest.approx(1e-3) for t in s.candidate_s)
    assert all(t == pytest.approx(2e-3) for t in s.baseline_s)
    assert all(r == pytest.approx(math.log(0.5)) for r in s.log_ratios())
    assert s.medians() == pytest.approx((1e-3, 2e-3))
    # ~40 ms per round after warm-up/calibration: the 1 s budget gives about 23 rounds.
    assert 20 <= s.n_blocks <= 26 and s.stopped_by == "budget"
    assert s.elapsed_s >= 1.0 and s.warmup_s > 0


def test_rounds_interleave_in_random_order_reproducibly() -> None:
    clock = FakeClock()
    log: list[str] = []
    s = time_pair(clock.work(0.03, log, "c"), clock.work(0.03, log, "b"), budget_s=0.0,
                  min_blocks=40, warmup_s=0.0, clock=clock, seed=3)
    assert s.n_blocks == 40 and len(s.order) == 40
    # number = 1 for 30 ms calls: the measured calls are the last 80 entries, one per block.
    measured = log[-80:]
    for i, first in enumerate(s.order):
        pair = measured[2 * i : 2 * i + 2]
        assert sorted(pair) == ["b", "c"]  # one block of each side per round
        assert pair[0] == first
    assert 8 <= s.order.count("c") <= 32  # randomised, not a fixed alternation
    clock2 = FakeClock()
    again = time_pair(clock2.work(0.03), clock2.work(0.03), budget_s=0.0, min_blocks=40,
                      warmup_s=0.0, clock=clock2, seed=3)
    assert again.order == s.order


def test_min_blocks_wins_over_budget_and_callback_stops_early() -> None:
    clock = FakeClock()
    s = time_pair(clock.work(0.05), clock.work(0.05), budget_s=0.0, min_blocks=5, clock=clock)
    assert s.n_blocks == 5
    seen: list[int] = []

    def stop(samples: PairSamples) -> bool:
        seen.append(samples.n_blocks)
        return samples.n_blocks >= 7

    clock = FakeClock()
    s = time_pair(clock.work(1e-3), clock.work(1e-3), budget_s=100.0, min_blocks=4,
                  should_stop=stop, clock=clock)
    assert seen == [4, 5, 6, 7] and s.n_blocks == 7 and s.stopped_by == "callback"


def test_max_blocks_caps_rounds() -> None:
    clock = FakeClock()
    s = time_pair(clock.work(1e-3), clock.work(1e-3), budget_s=100.0, min_blocks=2, max_blocks=3,
                  clock=clock)
    assert s.n_blocks == 3 and s.stopped_by == "max_blocks"


@pytest.mark.parametrize("flag", [True, False])
def test_inference_mode_flag_is_applied_and_recorded(flag: bool) -> None:
    clock = FakeClock()
    modes: list[bool] = []

    def fn() -> None:
        modes.append(torch.is_inference_mode_enabled())
        clock.now += 0.03

    s = time_pair(fn, fn, budget_s=0.0, min_blocks=2, inference_mode=flag, clock=clock)
    assert s.inference_mode is flag and set(modes) == {flag}
    assert s.threads == torch.get_num_threads() and s.device == "cpu"


def test_time_one_with_fake_clock() -> None:
    clock = FakeClock()
    one = time_one(clock.work(4e-3), torch.device("cpu"), budget_s=0.5, min_blocks=3, clock=clock)
    assert one.number == 5 and one.median_s == pytest.approx(4e-3)
    assert len(one.times_s) >= 3 and one.device == "cpu"


def test_real_torch_ops_smoke() -> None:
    x = torch.randn(64, 64)
    s = time_pair(lambda: x @ x, lambda: (x @ x) @ x, budget_s=0.05, min_blocks=3, block_s=0.002)
    assert s.n_blocks >= 3
    assert all(t > 0 for t in s.candidate_s + s.baseline_s)
    cand, base = s.to_measurements()
    assert cand.median == pytest.approx(s.medians()[0], rel=1e-6)
    assert base.number_per_run == s.baseline_number


def test_pair_samples_round_trip_through_json() -> None:
    clock = FakeClock()
    s = time_pair(clock.work(1e-3), clock.work(3e-3), budget_s=0.2, min_blocks=2, clock=clock)
    back = PairSamples.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    with pytest.raises(ValueError, match="lacks keys \\['baseline_s'\\]"):
        PairSamples.from_dict({k: v for k, v in s.to_dict().items() if k != "baseline_s"})
    bad = s.to_dict() | {"baseline_s": [1.0]}
    with pytest.raises(ValueError, match="paired"):
        PairSamples.from_dict(bad)


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(TypeError, match="candidate must be a zero-argument callable, got int 3"):
        time_pair(3, lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_blocks must be an int >= 2.*got 1"):
        time_pair(lambda: None, lambda: None, min_blocks=1)
    with pytest.raises(ValueError, match="budget_s must be .* got -1"):
        time_one(lambda: None, budget_s=-1)
    with pytest.raises(TypeError, match="device must be a str or torch.device, got int 0"):
        measure._device_str(0)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="other processes' CPU use is "
                    "read from /proc/stat (Linux)")
def test_pair_samples_record_the_cores_other_processes_kept_busy() -> None:
    """time_pair reads how many cores other processes used while it measured: about none while
    only this process spins, about one while an unrelated process burns a core; a process of
    its own (a child, like a DataLoader worker) is part of the measured work, not "other"."""
    def spin() -> None:
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass

    def measure() -> float:
        samples = time_pair(spin, spin, budget_s=0.3, min_blocks=3, inference_mode=False)
        assert samples.other_cpu_cores is not None
        assert PairSamples.from_dict(samples.to_dict()).other_cpu_cores == samples.other_cpu_cores
        return samples.other_cpu_cores

    alone = measure()
    with unrelated_burner(settle_s=0.1):
        loaded = measure()
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.1)
        with_child = measure()
    finally:
        child.kill()
        child.wait()
    assert loaded > 0.6 and loaded - alone > 0.4, (alone, loaded)
    assert with_child < 0.4, (alone, with_child)


@pytest.mark.skipif(not hasattr(os, "sysconf") or sys.platform == "win32",
                    reason="page faults are counted by getrusage (POSIX)")
def test_pair_samples_count_each_sides_page_faults_per_call() -> None:
    """A candidate that touches 16 MiB of memory it maps afresh every call faults once per page
    per call (4096 with 4 KiB pages); a baseline that touches nothing new faults about none."""
    import mmap

    page = os.sysconf("SC_PAGE_SIZE")
    pages = (16 << 20) // page

    def fresh() -> None:
        with mmap.mmap(-1, 16 << 20) as buffer:  # anonymous: new pages every call
            if hasattr(mmap, "MADV_NOHUGEPAGE"):  # 4 KiB pages even where THP is "always"
                buffer.madvise(mmap.MADV_NOHUGEPAGE)
            for offset in range(0, 16 << 20, page):
                buffer[offset] = 1

    def nothing() -> None:
        sum(range(100))

    samples = time_pair(fresh, nothing, budget_s=0.3, min_blocks=3, inference_mode=False)
    per_call = samples.faults_per_call()
    assert per_call is not None
    candidate, baseline = per_call
    assert 0.75 * pages < candidate < 1.5 * pages and baseline < 50, (per_call, pages)
    assert PairSamples.from_dict(samples.to_dict()).faults_per_call() == per_call


def test_free_cores_counts_a_core_taken_from_40_percent_busy() -> None:
    from pytest_mmperf.timing.contention import free_cores

    assert [free_cores(busy, cores=2) for busy in (0.0, 0.39, 0.41, 0.83, 1.0, 1.5, 3.0)] == \
        [2, 2, 1, 1, 1, 1, 1]
    assert free_cores(1.2, cores=8) == 7 and free_cores(1.5, cores=8) == 6


def test_choose_threads_caps_auto_by_free_cores_and_keeps_numbers() -> None:
    choose = measure.choose_threads
    assert choose("auto", 0.0, current=2, cores=2) == 2
    assert choose("auto", 0.9, current=2, cores=2) == 1          # one core of two taken
    assert choose("auto", 0.0, current=1, cores=2) == 1          # never above torch's count
    assert choose("auto", None, current=2, cores=2) == 2         # contention unknown: as is
    assert choose(None, 1.5, current=2, cores=2) == 2
    assert choose(3, 1.5, current=2, cores=2) == 3               # a number is used as given
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(ValueError, match=r"time_pair\(\) threads must be auto or an integer "
                                             r">= 1, got"):
            measure.time_pair(lambda: None, lambda: None, budget_s=0.0, threads=bad)


def test_both_sides_measure_with_the_chosen_threads_and_torch_gets_its_count_back() -> None:
    seen: list[int] = []

    def work() -> None:
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    samples = time_pair(work, work, budget_s=0.01, min_blocks=2, block_s=0.001, threads=1)
    assert samples.threads == 1 and samples.threads_requested == "1"
    # the warm-up runs as torch is set; from the first call with the chosen count on, all do
    assert 1 in seen and set(seen[seen.index(1):]) == {1}
    assert torch.get_num_threads() == before
    one = time_one(work, budget_s=0.01, min_blocks=2, block_s=0.001, threads=1)
    assert one.threads == 1 and torch.get_num_threads() == before
    samples = time_pair(work, work, budget_s=0.01, min_blocks=2, block_s=0.001)
    assert samples.threads == before and samples.threads_requested is None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or torch.get_num_threads() < 2,
                    reason="needs two cores and two torch threads to leave one to a burner")
def test_auto_threads_leave_out_the_core_another_process_keeps_busy() -> None:
    """With an unrelated process burning a core, "auto" measures with one thread fewer than
    torch's count, and says how busy the warm-up found the machine."""
    a = torch.randn(256, 256)

    def work() -> None:
        a @ a

    with unrelated_burner(settle_s=0.2):
        samples = time_pair(work, work, budget_s=0.2, min_blocks=3, threads="auto",
                            warmup_s=0.2)
    # The burner shares the cores with the warm-up's own threads: it gets only part of one.
    busy = samples.warmup_other_cpu_cores
    assert busy is not None and busy > contention.BUSY_CORE_SLACK, busy
    assert samples.threads < torch.get_num_threads()
    assert samples.cores == len(os.sched_getaffinity(0))
