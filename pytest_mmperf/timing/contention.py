"""What else the machine did while a pair was measured: other processes' CPU use, page faults.

Timing measures with as many intra-op threads as there are cores free of other processes' work
(:func:`free_cores`: a parallel region waits for whichever of its threads another job
descheduled), decides from one process alone only when the cores it used were quiet
(:class:`OtherCpuUse`), and names page faults when either side spends its time faulting memory
in (:class:`FaultTally`). All read the operating system directly (``/proc/stat``, ``/proc``,
``getrusage``); where it does not say, they return None rather than guess.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

# Other processes' average use above which a core counts as taken: a core that another job keeps
# partly busy already stalls a parallel region that needs a thread on it; 0.4 is a chosen margin
# (docs/measurements.md#busy-runner).
BUSY_CORE_SLACK = 0.4


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def free_cores(other_cores: float, cores: int | None = None) -> int:
    """Cores left free by other processes that kept ``other_cores`` cores busy on average
    (at least 1): ``cores - ceil(other_cores - BUSY_CORE_SLACK)``."""
    total = available_cores() if cores is None else cores
    taken = max(0, math.ceil(other_cores - BUSY_CORE_SLACK))
    return max(1, total - taken)


@dataclass(frozen=True)
class OtherCpuUse:
    """How many CPU cores processes other than this one kept busy since :meth:`start`.

    Machine-wide busy time from ``/proc/stat`` (user, nice, system, irq, softirq, steal: a
    hypervisor's steal is contention too) minus the CPU time of this process (all threads) and
    of its descendants, over the wall time. A direct reading of contention, unlike this
    process's preemption count, whose scale changes from machine to machine
    (docs/measurements.md#busy-runner).
    Descendants are part of the measured work, not contention: a DataLoader's worker processes
    run the candidate's or the baseline's own loading. Linux only; elsewhere :meth:`cores` is
    None.
    """

    busy_s: float | None
    family_s: float  # CPU seconds of this process and its descendants at the start
    wall_s: float

    @classmethod
    def start(cls) -> OtherCpuUse:
        return cls(_machine_busy_s(), _family_cpu_s(), time.perf_counter())

    def cores(self) -> float | None:
        """Average cores used by other processes since :meth:`start` (>= 0), or None."""
        busy = _machine_busy_s()
        wall = time.perf_counter() - self.wall_s
        if busy is None or self.busy_s is None or wall <= 0:
            return None
        others = ((busy - self.busy_s) - (_family_cpu_s() - self.family_s)) / wall
        return round(max(0.0, others), 3)  # clock ticks of 10 ms: no more digits to speak of


class FaultTally:
    """Minor page faults of this process (all threads) during each side's timed blocks."""

    def __init__(self) -> None:
        self.counts = {"candidate": 0, "baseline": 0}

    def time(self, timer: Callable[[Callable[[], object], int], float],
             fn: Callable[[], object], number: int, side: str) -> float:
        if _resource is None:
            return timer(fn, number)
        before = _minor_faults()
        seconds = timer(fn, number)
        self.counts[side] += _minor_faults() - before
        return seconds

    def totals(self) -> tuple[int | None, int | None]:
        if _resource is None:
            return None, None
        return self.counts["candidate"], self.counts["baseline"]


try:
    import resource as _resource
except ImportError:  # Windows: no getrusage, no fault counts
    _resource = None  # type: ignore[assignment]


def _minor_faults() -> int:
    """Minor page faults of this process so far (``getrusage``; POSIX only)."""
    assert _resource is not None
    return int(_resource.getrusage(_resource.RUSAGE_SELF).ru_minflt)


def _machine_busy_s() -> float | None:
    """Seconds of CPU all cores have been busy since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _family_cpu_s() -> float:
    """CPU seconds so far of this process (all threads) and its descendants: the live ones from
    ``/proc/<pid>/stat``, the ended ones this process waited for from ``os.times``."""
    times = os.times()
    return (times.user + times.system + times.children_user + times.children_system
            + _live_descendants_cpu_s())


def _live_descendants_cpu_s() -> float:
    """CPU seconds of the live descendants of this process (``/proc``; 0 where unreadable)."""
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return 0.0
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for name in pids:
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as handle:
                text = handle.read()
        except OSError:  # ended meanwhile, or not ours to read
            continue
        rest = text[text.rfind(")") + 2:].split()  # the command name may hold spaces
        if len(rest) < 13:
            continue
        pid = int(name)
        children.setdefault(int(rest[1]), []).append(pid)  # rest[1]: ppid
        ticks[pid] = int(rest[11]) + int(rest[12])  # utime + stime
    total, stack = 0, list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")
