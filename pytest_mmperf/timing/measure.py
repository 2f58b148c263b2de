"""Timing of zero-argument callables on a device: warm-up, synchronisation, blocks, samples.

The unit of measurement is a *block*: ``number`` back-to-back calls of one callable, timed as a
whole and divided by ``number`` (seconds per call). ``number`` is calibrated per callable, the way
``torch.utils.benchmark.Timer.blocked_autorange`` does it, so that one block lasts about
``block_s`` (20 ms by default): long enough that timer resolution and the synchronisation cost are
negligible, short enough that a process yields dozens of blocks within a budget of a second.

Two callables that are compared (:func:`time_pair`) are measured *interleaved*, one block of each
per round, in a randomised order per round: slow drift of the machine (another process waking up,
thermal or frequency changes) then hits both sides alike and cancels in the per-round ratio that
:mod:`pytest_mmperf.timing.stats` works on.

Why not ``torch.utils.benchmark.Timer.timeit`` per block: it runs ``max(number // 100, 2)`` extra
warm-up calls before *every* block (a 40 % overhead for a 5-call block of a few-ms op) and it pins
the thread count to its ``num_threads`` argument (default 1), so it would time single-threaded code
while the code under test runs with torch's full thread pool. We reuse what fits instead: the
accelerator-synchronising clock of ``torch.utils.benchmark`` on non-CUDA accelerators, CUDA events
on CUDA, Python's ``timeit`` practice of disabling the garbage collector inside a timed block, and
:meth:`PairSamples.to_measurements` hands the samples back as ``torch.utils.benchmark``
``Measurement`` objects for ``Compare``.

This module imports neither pytest nor (at import time) torch.
"""

from __future__ import annotations

import gc
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_mmperf.settings import THREADS_AUTO, Threads, check_threads
from pytest_mmperf.timing.contention import FaultTally, OtherCpuUse, available_cores, free_cores

# Defaults shared by the guards, tuned with the error-rate study (docs/guard-error-rates.md):
# a block of ~20 ms, at least 8 rounds per process, and a per-process budget of about a second.
DEFAULT_BLOCK_S = 0.02
DEFAULT_WARMUP_S = 0.05
DEFAULT_MIN_BLOCKS = 8
DEFAULT_MAX_BLOCKS = 100_000

Clock = Callable[[], float]


def _device_str(device: Any) -> str:
    """``torch.device("cuda", 0)`` / ``"cuda:0"`` -> ``"cuda:0"``; validates the type only."""
    if isinstance(device, str):
        if not device:
            raise ValueError("device must be a non-empty string such as 'cpu' or 'cuda:0', got ''")
        return device
    text = str(device)  # torch.device prints as "cuda:0"
    if type(device).__name__ != "device":
        raise TypeError(
            f"device must be a str or torch.device, got {type(device).__name__} {device!r}"
        )
    return text


def _device_type(device: str) -> str:
    return device.split(":", 1)[0]


def synchronize(device: str) -> None:
    """Wait for queued work on ``device`` (CUDA/MPS/XPU); a no-op on CPU."""
    kind = _device_type(device)
    if kind == "cpu":
        return
    import torch

    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()
    elif kind == "xpu":
        torch.xpu.synchronize(device)
    elif hasattr(torch, "accelerator") and torch.accelerator.is_available():
        torch.accelerator.synchronize()


class BlockTimer:
    """Times ``number`` consecutive calls of a callable on one device, in seconds (whole block).

    CPU: ``clock()`` around the loop. CUDA: CUDA events recorded around the loop on the current
    stream (GPU time of the queued work, not host launch time), after a synchronisation so the
    block starts on an idle stream. Other accelerators: synchronise, then ``clock()``.
    The garbage collector is disabled inside a block, as ``timeit`` does, so a collection triggered
    by one side's allocations does not land in a random block.
    """

    def __init__(self, device: str = "cpu", clock: Clock = time.perf_counter) -> None:
        self.device = _device_str(device)
        self.clock = clock
        self._kind = _device_type(self.device)

    def __call__(self, fn: Callable[[], object], number: int) -> float:
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            if self._kind == "cuda":
                return self._cuda_block(fn, number)
            synchronize(self.device)
            start = self.clock()
            for _ in range(number):
                fn()
            synchronize(self.device)
            return self.clock() - start
        finally:
            if gc_was_enabled:
                gc.enable()

    def _cuda_block(self, fn: Callable[[], object], number: int) -> float:
        import torch

        with torch.cuda.device(self.device):
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(number):
                fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end)) / 1e3  # elapsed_time is in milliseconds


def calibrate_number(
    fn: Callable[[], object], timer: Callable[[Callable[[], object], int], float], block_s: float
) -> int:
    """Choose the inner loop count so one block of ``fn`` lasts about ``block_s`` seconds.

    Same idea as ``Timer._estimate_block_size``: grow ``number`` tenfold until a block takes at
    least a tenth of the target (so the estimate is not dominated by timer overhead), then scale.
    Callables slower than ``block_s`` get ``number = 1``.
    """
    if not block_s > 0:
        raise ValueError(f"block_s must be > 0 seconds, got {block_s!r}")
    number = 1
    while True:
        taken = timer(fn, number)
        if taken >= block_s / 10 or number >= 10**8:
            break
        number *= 10
    return max(1, int(round(number * block_s / max(taken, 1e-9))))


@dataclass
class PairSamples:
    """Interleaved samples of a candidate and a baseline from one process.

    ``candidate_s[i]`` and ``baseline_s[i]`` are seconds per call in round ``i`` (the two blocks of
    one round ran back to back); ``order[i]`` is ``"c"`` if the candidate's block ran first in that
    round, else ``"b"``.
    """

    candidate_s: list[float]
    baseline_s: list[float]
    candidate_number: int
    baseline_number: int
    order: str
    device: str
    threads: int
    inference_mode: bool
    budget_s: float
    warmup_s: float = 0.0
    elapsed_s: float = 0.0
    stopped_by: str = "budget"
    pid: int = field(default_factory=os.getpid)
    wall_s: float = 0.0  # a worker's whole wall time, start-up included (set by the parent)
    # CPU cores other processes kept busy on average during the rounds (OtherCpuUse): how
    # contended the machine was while it measured; None where the platform does not say.
    other_cpu_cores: float | None = None
    # Minor page faults over all timed rounds of each side (getrusage; None where not counted):
    # a fresh large tensor every call is faulted in again every call, which can be most of a CPU
    # call's time (docs/page-faults.md).
    candidate_faults: int | None = None
    baseline_faults: int | None = None
    # The thread rule asked for ("auto", a number, or None: leave torch's setting), the cores this
    # process may use, and the cores other processes kept busy during the warm-up, which chose
    # ``threads`` under "auto".
    threads_requested: str | None = None
    cores: int | None = None
    warmup_other_cpu_cores: float | None = None

    def faults_per_call(self) -> tuple[float, float] | None:
        """Minor page faults per call of (candidate, baseline) over the timed rounds, or None."""
        if self.candidate_faults is None or self.baseline_faults is None or not self.n_blocks:
            return None
        return (self.candidate_faults / (self.n_blocks * self.candidate_number),
                self.baseline_faults / (self.n_blocks * self.baseline_number))

    @property
    def n_blocks(self) -> int:
        return len(self.candidate_s)

    def log_ratios(self) -> list[float]:
        """Per-round ``log(t_candidate / t_baseline)``; negative means the candidate is faster."""
        return [math.log(c / b) for c, b in zip(self.candidate_s, self.baseline_s, strict=True)]

    def medians(self) -> tuple[float, float]:
        """Median seconds per call of (candidate, baseline)."""
        return _median(self.candidate_s), _median(self.baseline_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairSamples:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (newer writers), missing required
        keys raise ``ValueError`` naming them."""
        names = {f for f in cls.__dataclass_fields__}
        required = {"candidate_s", "baseline_s", "candidate_number", "baseline_number", "order",
                    "device", "threads", "inference_mode", "budget_s"}
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"PairSamples data lacks keys {missing}; got keys {sorted(data)}")
        samples = cls(**{k: v for k, v in data.items() if k in names})
        if len(samples.candidate_s) != len(samples.baseline_s):
            raise ValueError(
                f"PairSamples data has {len(samples.candidate_s)} candidate blocks but "
                f"{len(samples.baseline_s)} baseline blocks; they must be paired"
            )
        return samples

    def to_measurements(self, label: str = "mmperf") -> tuple[Any, Any]:
        """The samples as two ``torch.utils.benchmark`` ``Measurement`` objects (candidate,
        baseline), e.g. for ``torch.utils.benchmark.Compare``."""
        from torch.utils.benchmark.utils import common

        out = []
        for desc, per_call, number in (
            ("candidate", self.candidate_s, self.candidate_number),
            ("baseline", self.baseline_s, self.baseline_number),
        ):
            spec = common.TaskSpec(
                stmt=desc, setup="pass", label=label, description=desc,
                env=self.device, num_threads=self.threads,
            )
            out.append(common.Measurement(number, [t * number for t in per_call], spec))
        return out[0], out[1]


@dataclass
class OneSamples:
    """Samples of a single callable from one process: seconds per call of each block."""

    times_s: list[float]
    number: int
    device: str
    threads: int
    inference_mode: bool
    budget_s: float
    warmup_s: float = 0.0
    elapsed_s: float = 0.0
    pid: int = field(default_factory=os.getpid)
    threads_requested: str | None = None
    warmup_other_cpu_cores: float | None = None

    @property
    def median_s(self) -> float:
        return _median(self.times_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _check_common(budget_s: float, min_blocks: int, max_blocks: int, block_s: float) -> None:
    if not (isinstance(budget_s, (int, float)) and budget_s >= 0 and math.isfinite(budget_s)):
        raise ValueError(f"budget_s must be a finite number of seconds >= 0, got {budget_s!r}")
    if not isinstance(min_blocks, int) or min_blocks < 2:
        raise ValueError(
            f"min_blocks must be an int >= 2 (a spread needs 2 samples), got {min_blocks!r}"
        )
    if not isinstance(max_blocks, int) or max_blocks < min_blocks:
        raise ValueError(
            f"max_blocks must be an int >= min_blocks={min_blocks}, got {max_blocks!r}"
        )
    if not (isinstance(block_s, (int, float)) and block_s > 0):
        raise ValueError(f"block_s must be > 0 seconds, got {block_s!r}")


def _check_callable(fn: object, what: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what} must be a zero-argument callable, got {type(fn).__name__} {fn!r}")


def _mode(inference_mode: bool) -> Any:
    if not inference_mode:
        return nullcontext()
    import torch

    return torch.inference_mode()


def choose_threads(threads: Threads, other_cores: float | None, current: int,
                   cores: int | None = None) -> int:
    """The intra-op threads to measure with. ``"auto"``: torch's current count, capped by the
    cores other processes left free (:func:`~pytest_mmperf.timing.contention.free_cores`);
    unknown contention keeps the current count. A number is used as given; None keeps it."""
    if threads is None or (threads == THREADS_AUTO and other_cores is None):
        return current
    if threads == THREADS_AUTO:
        assert other_cores is not None
        return max(1, min(current, free_cores(other_cores, cores)))
    return int(threads)


def _threads() -> int:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; keep the fakes importable
        return 1
    return int(torch.get_num_threads())


def _set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@contextmanager
def _restored_threads() -> Iterator[None]:
    """torch's intra-op thread count is the same after the block as before it."""
    before = _threads()
    try:
        yield
    finally:
        if _threads() != before:
            _set_threads(before)


def _warm_up_with_threads(fns: Sequence[Callable[[], object]], timer: BlockTimer,
                          warmup_s: float, threads: Threads) -> tuple[int, float | None]:
    """Warm every callable up while reading other processes' CPU use, then set the thread count
    :func:`choose_threads` picks (the caller restores torch's count). When it changed, each
    callable runs twice more, so the new thread pool is warm too. Returns (threads, other
    processes' cores during the warm-up)."""
    others = OtherCpuUse.start()
    for fn in fns:
        _warm_up(fn, timer, warmup_s)
    busy = others.cores()
    n = choose_threads(threads, busy, _threads())
    if n != _threads():
        _set_threads(n)
        for fn in fns:
            _warm_up(fn, timer, 0.0)
    return n, busy


def _warm_up(fn: Callable[[], object], timer: BlockTimer, warmup_s: float) -> None:
    """At least two calls (the first one pays lazy initialisation), then until ``warmup_s``."""
    start = timer.clock()
    calls = 0
    while calls < 2 or timer.clock() - start < warmup_s:
        timer(fn, 1)
        calls += 1


def time_pair(
    candidate: Callable[[], object],
    baseline: Callable[[], object],
    device: Any = "cpu",
    *,
    budget_s: float = 1.0,
    min_blocks: int = DEFAULT_MIN_BLOCKS,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    block_s: float = DEFAULT_BLOCK_S,
    warmup_s: float = DEFAULT_WARMUP_S,
    inference_mode: bool = True,
    seed: int | None = None,
    should_stop: Callable[[PairSamples], bool] | None = None,
    clock: Clock = time.perf_counter,
    timer: BlockTimer | None = None,
    threads: Threads = None,
) -> PairSamples:
    """Measure ``candidate`` and ``baseline`` interleaved until the budget is spent.

    Each round runs one block of each side in a random order (``random.Random(seed)``). Rounds
    continue until at least ``min_blocks`` rounds exist and either ``budget_s`` seconds (warm-up
    and calibration included) have passed, ``should_stop(samples)`` returns True (it is asked
    after every round once ``min_blocks`` exist: the caller's sequential decision), or
    ``max_blocks`` rounds exist. ``min_blocks`` wins over the budget, so slow callables may
    overrun it. Both callables run under ``torch.inference_mode()`` when ``inference_mode``.
    ``threads`` (:func:`choose_threads`): both sides run with the same intra-op thread count,
    chosen after the warm-up; torch's own count is restored afterwards.
    ``clock``/``timer`` are injectable for tests.
    """
    _check_callable(candidate, "candidate")
    _check_callable(baseline, "baseline")
    _check_common(budget_s, min_blocks, max_blocks, block_s)
    check_threads(threads, "time_pair()")
    dev = _device_str(device)
    timer = timer if timer is not None else BlockTimer(dev, clock)
    rng = random.Random(seed)
    samples = PairSamples([], [], 1, 1, "", dev, _threads(), bool(inference_mode), float(budget_s),
                          threads_requested=None if threads is None else str(threads),
                          cores=available_cores())
    start = timer.clock()
    with _mode(inference_mode), _restored_threads():
        # Warm up and calibrate in alternation too, so neither side gets a cold cache advantage.
        samples.threads, samples.warmup_other_cpu_cores = _warm_up_with_threads(
            (candidate, baseline), timer, warmup_s, threads)
        samples.warmup_s = timer.clock() - start
        samples.candidate_number = calibrate_number(candidate, timer, block_s)
        samples.baseline_number = calibrate_number(baseline, timer, block_s)
        order: list[str] = []
        others, faults = OtherCpuUse.start(), FaultTally()
        while True:
            first_is_candidate = rng.random() < 0.5
            if first_is_candidate:
                tc = faults.time(timer, candidate, samples.candidate_number, "candidate")
                tb = faults.time(timer, baseline, samples.baseline_number, "baseline")
            else:
                tb = faults.time(timer, baseline, samples.baseline_number, "baseline")
                tc = faults.time(timer, candidate, samples.candidate_number, "candidate")
            samples.candidate_s.append(max(tc, 1e-12) / samples.candidate_number)
            samples.baseline_s.append(max(tb, 1e-12) / samples.baseline_number)
            order.append("c" if first_is_candidate else "b")
            samples.order = "".join(order)
            samples.elapsed_s = timer.clock() - start
            stop = _stop_reason(samples.n_blocks, samples.elapsed_s, min_blocks, max_blocks,
                                budget_s, should_stop, samples)
            if stop is not None:
                samples.stopped_by = stop
                break
        samples.other_cpu_cores = others.cores()
        samples.candidate_faults, samples.baseline_faults = faults.totals()
    return samples


def _stop_reason(n: int, elapsed_s: float, min_blocks: int, max_blocks: int, budget_s: float,
                 should_stop: Callable[[Any], bool] | None, samples: Any) -> str | None:
    """Why sampling stops after round ``n`` (None: go on); ``min_blocks`` wins over the rest."""
    if n < min_blocks:
        return None
    if n >= max_blocks:
        return "max_blocks"
    if should_stop is not None and should_stop(samples):
        return "callback"
    return "budget" if elapsed_s >= budget_s else None


def time_one(fn: Callable[[], object], device: Any = "cpu", *, budget_s: float = 1.0,
             min_blocks: int = DEFAULT_MIN_BLOCKS, max_blocks: int = DEFAULT_MAX_BLOCKS,
             block_s: float = DEFAULT_BLOCK_S, warmup_s: float = DEFAULT_WARMUP_S,
             inference_mode: bool = True, should_stop: Callable[[OneSamples], bool] | None = None,
             clock: Clock = time.perf_counter, timer: BlockTimer | None = None,
             threads: Threads = None) -> OneSamples:
    """Measure one callable: warm-up, calibrated blocks until the budget; the options mean what
    they mean in :func:`time_pair`.

    Used by the ``scaling(metric="time")`` guard, where the quantity of interest is the median
    time per call at each size rather than a ratio.
    """
    _check_callable(fn, "fn")
    _check_common(budget_s, min_blocks, max_blocks, block_s)
    check_threads(threads, "time_one()")
    dev = _device_str(device)
    timer = timer if timer is not None else BlockTimer(dev, clock)
    samples = OneSamples([], 1, dev, _threads(), bool(inference_mode), float(budget_s),
                         threads_requested=None if threads is None else str(threads))
    start = timer.clock()
    with _mode(inference_mode), _restored_threads():
        samples.threads, samples.warmup_other_cpu_cores = _warm_up_with_threads(
            (fn,), timer, warmup_s, threads)
        samples.warmup_s = timer.clock() - start
        samples.number = calibrate_number(fn, timer, block_s)
        while True:
            samples.times_s.append(max(timer(fn, samples.number), 1e-12) / samples.number)
            samples.elapsed_s = timer.clock() - start
            if _stop_reason(len(samples.times_s), samples.elapsed_s, min_blocks, max_blocks,
                            budget_s, should_stop, samples) is not None:
                break
    return samples
