"""Stage breakdown: where the time of a call goes, from ``torch.profiler.record_function`` labels.

Label your own code the usual PyTorch way and get the breakdown that the report shows for the
reference pipelines::

    from torch.profiler import record_function

    def preprocess(paths):
        with record_function("mmperf::decode"):
            images = [decode(p) for p in paths]
        with record_function("mmperf::resize"):
            ...

    breakdown = stage_breakdown(lambda: preprocess(paths))
    breakdown.stages   # {"decode": 0.0123, "resize": 0.0045, ..., "other (unlabelled)": 0.0002}

A stage's time is the self time of its labels in a typical call (:func:`stage_breakdown` says
how, and why the central calls rather than the mean); the unlabelled rest is its own stage, so
the stages add up to the call. DataLoader worker processes are not profiled from the main
process (:data:`DEFAULT_EXTRA_LABELS`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_mmperf.constants import OTHER_STAGE
from pytest_mmperf.timing.stats import quartiles

WAIT_STAGE = "wait for workers"
# Ranges recorded by PyTorch itself that deserve a stage of their own (range name -> stage name).
DEFAULT_EXTRA_LABELS: Mapping[str, str] = {
    "enumerate(DataLoader)#_MultiProcessingDataLoaderIter.__next__": WAIT_STAGE,
}
_ROOT_LABEL = "mmperf-stages::call"  # wraps each profiled call; its wall time is total_s



@dataclass(frozen=True)
class StageBreakdown:
    """Seconds per call spent in each stage of a labelled function.

    ``stages`` maps stage name (label with the prefix stripped, or an extra label's stage name, or
    :data:`OTHER_STAGE`) to seconds per call, averaged over the central calls (see
    :func:`central_calls`), in first-seen order with :data:`OTHER_STAGE` last; its values add up
    to ``total_s`` (up to rounding). ``calls`` holds every profiled call's own CPU stages,
    ``call_totals`` their wall times, and ``stage_quartiles`` each stage's (q1, q3) over all
    calls: the spread to compare with direct timing.
    """

    stages: dict[str, float]
    total_s: float
    repeats: int
    device: str
    prefix: str
    cpu_stages: dict[str, float] = field(default_factory=dict)
    device_stages: dict[str, float] | None = None
    calls: tuple[dict[str, float], ...] = ()
    stage_quartiles: dict[str, tuple[float, float]] = field(default_factory=dict)
    call_totals: tuple[float, ...] = ()

    @property
    def labelled_s(self) -> float:
        """Seconds per call inside labels (everything but :data:`OTHER_STAGE`)."""
        return sum(v for k, v in self.stages.items() if k != OTHER_STAGE)

    def fractions(self) -> dict[str, float]:
        """Each stage as a fraction of ``total_s`` (all zeros for a zero total)."""
        if self.total_s <= 0:
            return {k: 0.0 for k in self.stages}
        return {k: v / self.total_s for k, v in self.stages.items()}

    def to_figure(self, family: str, implementation: str) -> dict[str, Any]:
        """The report's ``{"kind": "breakdown", ...}`` record (see
        :mod:`pytest_mmperf.report.html`)."""
        record: dict[str, Any] = {
            "kind": "breakdown",
            "family": family,
            "implementation": implementation,
            "stages": dict(self.stages),
            "total_s": self.total_s,
            "repeats": self.repeats,
            "device": self.device,
        }
        if self.device_stages is not None:
            record["cpu_stages"] = dict(self.cpu_stages)
            record["device_stages"] = dict(self.device_stages)
        return record


def _check_args(fn: object, prefix: object, repeats: object, warmup: object) -> None:
    if not callable(fn):
        raise TypeError(f"stage_breakdown(fn=...) needs a callable taking no arguments, got "
                        f"{type(fn).__name__} {fn!r}")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"stage_breakdown(prefix=...) must be a non-empty string such as "
                         f"'mmperf::', got {prefix!r}")
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"stage_breakdown({name}=...) must be an integer >= {low}, "
                             f"got {value!r}")


def stage_breakdown(
    fn: Callable[[], object],
    *,
    prefix: str = "mmperf::",
    repeats: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    extra_labels: Mapping[str, str] | None = None,
) -> StageBreakdown:
    """Profile ``fn()`` and return the self time of its ``record_function`` stages per call.

    Args:
        fn: called with no arguments; its own labels ``prefix + stage`` define the stages.
        prefix: only ranges whose name starts with it are stages (``"mmperf::decode"`` ->
            ``"decode"``); other ranges (aten ops, ``nn.Module`` names) count towards the
            enclosing stage.
        repeats: profiled calls, each inside a root range of its own.
        warmup: unprofiled calls first (lazy initialisation, allocator and cache warm-up).
        device: where ``fn`` runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...); a CUDA device adds
            the CUDA activity and a synchronisation at the end of each call.
        extra_labels: range names that are stages without the prefix (exact name -> stage
            name); default :data:`DEFAULT_EXTRA_LABELS` (the DataLoader's wait for workers).

    Returns:
        A :class:`StageBreakdown`: seconds per call of a typical call, by stage.

    How the numbers are made: a stage's time is the wall time of its labelled ranges minus the
    labelled ranges nested in them (not minus the aten ops inside, which is the profiler's own
    ``self_cpu_time_total``); labels with the same stage name add up; the part of the call
    outside any label is :data:`OTHER_STAGE`, so the stages add up to the call's wall time
    (``total_s``, from the root range in the same clock). Every call is broken down on its own
    and the stages are averaged over the central calls ranked by total time
    (:func:`central_calls`), so that they agree with direct timing, which is a median: on a
    shared machine one call in a few waits at an OpenMP barrier for a descheduled thread, and
    a mean would carry that into one stage. Each call's stages and each stage's quartiles are
    kept. On the CPU only the ``record_function`` ranges are recorded
    (:func:`labels_only_profiler`), so profiled calls run at the speed of unprofiled ones even
    for code made of many tiny ops; where that is unavailable the full profiler is used, which
    adds a few microseconds per op. Labels on other threads of the main process (a pin-memory
    thread) overlap the calling thread's time and are not counted; DataLoader worker processes
    are not profiled at all (profile with ``num_workers=0`` to see their stages). On a CUDA
    device a stage's time is ``max(CPU self time, GPU kernel self time)``, both kept in
    :attr:`StageBreakdown.cpu_stages` and :attr:`StageBreakdown.device_stages`.
    """
    _check_args(fn, prefix, repeats, warmup)
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    # The CUDA build prints noise lines on fd 2 when a profiler starts/stops without a GPU.
    from pytest_mmperf.counting.counters import quiet_native_stderr

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    extras = dict(DEFAULT_EXTRA_LABELS if extra_labels is None else extra_labels)
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(dev)
    labels_only = None if cuda else labels_only_profiler()
    if labels_only is not None:
        prof: Any = labels_only()
    else:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        prof = profile(activities=activities, record_shapes=False, with_stack=False)
    with quiet_native_stderr():
        prof.__enter__()
    try:
        for _ in range(repeats):
            with record_function(_ROOT_LABEL):
                fn()
                if cuda:
                    torch.cuda.synchronize(dev)
    finally:
        with quiet_native_stderr():
            prof.__exit__(None, None, None)
    with quiet_native_stderr():  # post-processing may query devices as well
        events = list(prof.function_events if labels_only is not None else prof.events())
    return _aggregate(events, prefix, extras, repeats, str(dev), cuda)


@functools.cache
def labels_only_profiler() -> Callable[[], Any] | None:
    """A CPU profiler class that records only ``record_function`` ranges, or None where this
    torch lacks the (private) hook or the probe below sees anything else; the breakdown then
    uses the full ``torch.profiler.profile``.

    Why: the breakdown needs the labels only, but the full profiler records every aten op, and
    turning those into Python events costs about as much per op as a small op itself, many
    times the call for a training step (docs/measurements.md#counting-flops-and-memory). It
    also spares each op the profiler's per-op cost, so stages made of many small ops are not
    inflated. How: ``torch.autograd.profiler.profile`` with its
    start narrowed to ``RecordScope.USER_SCOPE`` (the scope of ``record_function``; aten ops
    are ``FUNCTION``, autograd's ``BACKWARD_FUNCTION``). Not used on CUDA, where kernels are
    attributed to labels through the ops that launched them.
    """
    try:
        import torch
        from torch._C._autograd import _enable_profiler
        from torch._C._profiler import RecordScope
        from torch.autograd.profiler import _run_on_profiler_start, profile
        from torch.profiler import record_function
    except ImportError:
        return None

    class LabelsOnlyProfile(profile):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(use_cpu=True, record_shapes=False, with_stack=False)

        def _start_trace(self) -> None:  # profile._start_trace, with the scopes narrowed
            self.entered = True
            _run_on_profiler_start()
            _enable_profiler(self.config(create_trace_id=False), self.kineto_activities,
                             {RecordScope.USER_SCOPE})  # type: ignore[call-arg]

    from pytest_mmperf.counting.counters import quiet_native_stderr

    try:  # the probe: a label around an op must come back alone
        with quiet_native_stderr():
            with LabelsOnlyProfile() as probe:
                with record_function(_ROOT_LABEL):
                    torch.ones(2).add_(1)
            names = {event.name for event in probe.function_events}
    except (AttributeError, TypeError, RuntimeError):
        return None
    return LabelsOnlyProfile if names == {_ROOT_LABEL} else None


def _stage_name(name: str, prefix: str, extras: Mapping[str, str]) -> str | None:
    if name == _ROOT_LABEL:
        return OTHER_STAGE
    if name.startswith(prefix):
        return name[len(prefix):] or name
    return extras.get(name)


def _duration_s(event: Any) -> float:
    return max(0.0, float(event.time_range.end - event.time_range.start)) * 1e-6


def _kernel_s(event: Any) -> float:
    """GPU time of the kernels launched by ``event`` itself (not by its children)."""
    total = 0.0
    for kernel in getattr(event, "kernels", ()) or ():
        total += float(getattr(kernel, "duration", 0.0))
    return total * 1e-6


def central_calls(totals: list[float]) -> list[int]:
    """Indices of the calls that represent a typical call: the middle of the calls ranked by
    total time (the median call of 3, the middle two of 4, the middle third from 5 calls on;
    robust while fewer than a third of the calls are disturbed).

    A breakdown is compared with direct timing, which is quoted as a median: the mean of all
    calls would let one preempted call (an OpenMP barrier waiting for a descheduled thread costs
    a scheduler quantum) dominate a stage of a few milliseconds.
    """
    n = len(totals)
    trim = (n - 1) // 2 if n <= 4 else n // 3
    order = sorted(range(n), key=lambda i: totals[i])
    return sorted(order[trim:n - trim])


def _aggregate(events: list[Any], prefix: str, extras: Mapping[str, str], repeats: int,
               device: str, cuda: bool) -> StageBreakdown:
    """Self times of labelled ranges from the profiler's event tree (times in microseconds),
    per profiled call (each root range), then aggregated over the central calls."""
    # The profiler gives each CPU event its enclosing event on the same thread (cpu_parent);
    # the nearest *labelled* ancestor decides which stage an event belongs to.
    labelled: dict[int, str] = {}
    for ev in events:
        stage = _stage_name(ev.name, prefix, extras)
        if stage is not None and getattr(ev, "device_type", None) is not None \
                and str(ev.device_type).endswith("CPU"):
            labelled[id(ev)] = stage

    def owner(ev: Any) -> Any | None:
        parent = ev.cpu_parent
        while parent is not None and id(parent) not in labelled:
            parent = parent.cpu_parent
        return parent

    roots: dict[int, int] = {}  # id(root event) -> call index
    totals: list[float] = []
    for ev in events:
        if labelled.get(id(ev)) == OTHER_STAGE and owner(ev) is None:
            roots[id(ev)] = len(totals)
            totals.append(_duration_s(ev))
    if not roots:
        raise RuntimeError("the profiler recorded none of the calls of fn; is another "
                           "torch.profiler session active around stage_breakdown?")

    def call_of(ev: Any) -> int | None:
        node = ev
        while node is not None and id(node) not in roots:
            node = node.cpu_parent
        return None if node is None else roots[id(node)]

    cpu: list[dict[str, float]] = [{} for _ in totals]
    gpu: list[dict[str, float]] = [{} for _ in totals]
    first_seen: dict[str, float] = {}
    for ev in events:
        stage = labelled.get(id(ev))
        call = None
        if stage is not None:
            call = call_of(ev)
            if call is None:
                continue  # a label outside the profiled calls (another thread): overlaps them
            if stage == OTHER_STAGE and id(ev) not in roots:
                continue  # a root nested in a root: fn called stage_breakdown
            per = cpu[call]
            per[stage] = per.get(stage, 0.0) + _duration_s(ev)
            first_seen.setdefault(stage, float(ev.time_range.start))
            parent = owner(ev)
            if parent is not None:
                parent_stage = labelled[id(parent)]
                per[parent_stage] = per.get(parent_stage, 0.0) - _duration_s(ev)
        if cuda and _kernel_s(ev) > 0:
            holder = ev if id(ev) in labelled else owner(ev)
            call = call_of(ev) if holder is not None else None
            if holder is not None and call is not None:
                name = labelled[id(holder)]
                gpu[call][name] = gpu[call].get(name, 0.0) + _kernel_s(ev)
    order = sorted((s for c in cpu for s in c if s != OTHER_STAGE), key=lambda s: first_seen[s])
    order = list(dict.fromkeys(order)) + [OTHER_STAGE]
    chosen = central_calls(totals)
    weight = 1.0 / len(chosen)
    cpu_stages = {s: max(0.0, sum(cpu[i].get(s, 0.0) for i in chosen) * weight) for s in order}
    total_s = sum(totals[i] for i in chosen) * weight
    per_call = tuple({s: max(0.0, c.get(s, 0.0)) for s in order} for c in cpu)
    device_stages: dict[str, float] | None = None
    if cuda:
        device_stages = {s: sum(gpu[i].get(s, 0.0) for i in chosen) * weight for s in order}
        stages = {s: max(cpu_stages[s], device_stages[s]) for s in order if s != OTHER_STAGE}
        stages[OTHER_STAGE] = max(0.0, total_s - sum(stages.values()))
    else:
        stages = dict(cpu_stages)
    spread = {s: quartiles([c[s] for c in per_call])[::2] for s in order}
    return StageBreakdown(stages=stages, total_s=total_s, repeats=repeats, device=device,
                          prefix=prefix, cpu_stages=cpu_stages, device_stages=device_stages,
                          calls=per_call, stage_quartiles=spread, call_totals=tuple(totals))


def format_breakdown(breakdown: StageBreakdown) -> str:
    """One line per stage: ``decode  12.3 ms  45.6%`` (for logs and quick looks)."""
    from pytest_mmperf.units import format_seconds

    width = max((len(s) for s in breakdown.stages), default=5)
    lines = [f"{s:<{width}}  {format_seconds(v):>10}  {100 * f:5.1f}%"
             for (s, v), f in zip(breakdown.stages.items(), breakdown.fractions().values(),
                                  strict=True)]
    lines.append(f"{'total':<{width}}  {format_seconds(breakdown.total_s):>10}  100.0%")
    return "\n".join(lines)
