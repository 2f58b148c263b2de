"""Deterministic counters of one call: dispatched aten ops, FLOPs, bytes materialised, peak memory.

Timing is noisy on shared machines (docs/measurements.md#between-process-noise); these counters are
not. For the same callable and the same inputs they give the same numbers in any process, so guards
built on them can use exact thresholds and committed snapshots.

:func:`measure_counters` measures any of them in one go (a :class:`CounterReport`); what each
counter counts is in its function's docstring: :func:`count_ops`, :func:`count_flops`,
:func:`count_bytes`, :func:`peak_memory`, :func:`count_syncs`.

This module imports torch at module top and never pytest.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from pytest_mmperf.constants import COUNTER_METRICS
from pytest_mmperf.counting.opnames import sum_ops

METRICS = COUNTER_METRICS
# Field names are accepted too, so `metrics=("peak_memory_bytes",)` works as well.
_METRIC_ALIASES = {"bytes_materialized": "bytes", "peak_memory_bytes": "peak_memory"}

# Lines that the CUDA build of torch writes to fd 2 around a CPU profile on a GPU-less machine.
_NOISE_MARKERS = (
    b"USDT:",
    b"gpuGetDeviceCount",
    b"Memory block of unknown size was allocated before the profiling started",
)


@dataclass(frozen=True)
class CounterReport:
    """Counters of one callable; a metric that was not requested is ``None`` (``ops``: empty).

    ``ops`` maps aten overload names (``"aten.mm.default"``) to counts, sorted by name.
    ``threads`` is ``torch.get_num_threads()`` during the measurement; ``metrics`` the canonical
    names of the metrics that were measured.
    """

    ops: dict[str, int]
    flops: int | None
    bytes_materialized: int | None
    peak_memory_bytes: int | None
    syncs: int | None
    device: str
    threads: int = 1
    metrics: tuple[str, ...] = field(default=METRICS)

    def total_ops(self, only: Iterable[str] | str | None = None) -> int:
        """Number of dispatched ops, optionally only those named in ``only``.

        ``only`` holds op packet names (``"aten.mm"``, matching every overload) or full overload
        names (``"aten.mm.default"``); a single string is accepted too.
        """
        if "ops" not in self.metrics:
            raise ValueError(
                f"CounterReport.total_ops: ops were not measured (metrics={self.metrics}); "
                "pass 'ops' in measure_counters(metrics=...)"
            )
        try:
            return sum_ops(self.ops, only)
        except ValueError as exc:
            raise ValueError(f"CounterReport.total_ops(only=...): {exc}") from None

    def scalars(self) -> dict[str, int]:
        """The measured numeric counters, flat (for snapshots): total_ops, flops, bytes..."""
        out: dict[str, int] = {}
        if "ops" in self.metrics:
            out["total_ops"] = self.total_ops()
        for key, value in (
            ("flops", self.flops),
            ("bytes_materialized", self.bytes_materialized),
            ("peak_memory_bytes", self.peak_memory_bytes),
            ("syncs", self.syncs),
        ):
            if value is not None:
                out[key] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: every field plus ``total_ops`` (``None`` if ops not measured)."""
        return {
            "device": self.device,
            "threads": self.threads,
            "metrics": list(self.metrics),
            "ops": dict(self.ops),
            "total_ops": self.total_ops() if "ops" in self.metrics else None,
            "flops": self.flops,
            "bytes_materialized": self.bytes_materialized,
            "peak_memory_bytes": self.peak_memory_bytes,
            "syncs": self.syncs,
        }


# --------------------------------------------------------------------------------------- helpers


def _check_fn(fn: object, where: str) -> None:
    if not callable(fn):
        raise TypeError(f"{where}: fn must be a zero-argument callable, got {type(fn).__name__}")


def _as_device(device: str | torch.device, where: str) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"{where}: device {device!r} is not a torch device string; expected e.g. 'cpu', "
            f"'cuda', 'cuda:0' ({exc})"
        ) from None


def _call(fn: Callable[[], object], inference_mode: bool) -> None:
    """Call ``fn`` once, dropping its result (so the result does not outlive the measurement)."""
    with torch.inference_mode() if inference_mode else contextlib.nullcontext():
        fn()


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    """(identity, nbytes) of the storage behind ``t``; sparse/nested fall back to the tensor."""
    try:
        storage = t.untyped_storage()
        return storage._cdata, storage.nbytes()
    except (RuntimeError, NotImplementedError, TypeError):
        return id(t), t.numel() * t.element_size()


class _OpCounter(TorchDispatchMode):
    """Counts dispatched overloads and the bytes of the new storages they return."""

    def __init__(self, decompose: bool = True) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.bytes = 0
        self.decompose = decompose

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if self.decompose:
            # Same rule as FlopCounterMode: composite ops are counted as what they decompose to.
            with self:
                result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
        out = func(*args, **kwargs)
        self.counts[str(func)] += 1
        flat_inputs = tree_flatten((args, kwargs))[0]
        inputs = {_storage_key(a)[0] for a in flat_inputs if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                key, nbytes = _storage_key(t)
                if key not in inputs:
                    inputs.add(key)  # a storage returned twice (e.g. as two views) counts once
                    self.bytes += nbytes
        return out


def _count_ops_and_bytes(
    fn: Callable[[], object], decompose: bool, inference_mode: bool, *, flops: bool = False
) -> tuple[dict[str, int], int, int | None]:
    """Ops, bytes and (with ``flops``) FLOPs of one call: the FLOP counter sits outside the op
    counter and sees the same decomposed ops, so one call gives both (the same numbers as
    separate calls: every registered case is snapshotted with tolerance 0)."""
    counter = _OpCounter(decompose=decompose)
    flop_counter = (FlopCounterMode(display=False, custom_mapping=_missing_flop_formulas())
                    if flops else contextlib.nullcontext())
    with flop_counter:
        with counter:
            _call(fn, inference_mode)
    total = int(flop_counter.get_total_flops()) if isinstance(flop_counter, FlopCounterMode) \
        else None
    return dict(sorted(counter.counts.items())), counter.bytes, total


# ---------------------------------------------------------------------------- FLOP formulas


def _as_4d(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """(..., L, E) -> (batch, heads, L, E), folding extra leading dims into the batch."""
    dims = tuple(int(d) for d in shape)
    if len(dims) < 2:
        raise ValueError(f"attention FLOP formula: tensor shape {dims} has fewer than 2 dims")
    dims = (1,) * max(0, 4 - len(dims)) + dims
    return math.prod(dims[:-3]), dims[-3], dims[-2], dims[-1]


def sdpa_flops(
    query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int]
) -> int:
    """FLOPs of dense attention, torch's ``sdpa_flop_count``: QK^T plus PV, 2 per multiply-add.

    Shapes ``(B, H, Lq, E)``, ``(B, H_kv, Lk, E)``, ``(B, H_kv, Lk, Ev)`` (fewer leading dims are
    treated as 1, more are folded into B). Masks are ignored (dense count). For 1x8x256x64:
    2 * (2*8*256*256*64) = 134,217,728.
    """
    return int(sdpa_flop_count(_as_4d(query_shape), _as_4d(key_shape), _as_4d(value_shape)))


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:  # type: ignore[no-untyped-def]
    return sdpa_flops(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(  # type: ignore[no-untyped-def]
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    return int(
        sdpa_backward_flop_count(
            _as_4d(grad_out_shape), _as_4d(query_shape), _as_4d(key_shape), _as_4d(value_shape)
        )
    )


def mha_flops(
    query_shape: Sequence[int], key_shape: Sequence[int], embed_dim: int, num_heads: int
) -> int:
    """FLOPs of ``nn.MultiheadAttention`` (equal q/k/v dims): projections, attention, output.

    ``query_shape`` is ``(B, Lq, E)`` or ``(Lq, E)``, ``key_shape`` ``(B, Lk, E)`` (value has the
    key's length). 2 FLOPs per multiply-add, biases not counted (as FlopCounterMode's addmm):
    ``2*B*Lq*E*E`` (q) + ``2 * 2*B*Lk*E*E`` (k, v) + ``4*B*Lq*Lk*E`` (attention) + ``2*B*Lq*E*E``
    (output projection).
    """
    if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
        raise ValueError(
            f"mha_flops: embed_dim={embed_dim} must be a positive multiple of num_heads={num_heads}"
        )
    batch = math.prod(query_shape[:-2]) if len(query_shape) > 2 else 1
    lq, lk, e = int(query_shape[-2]), int(key_shape[-2]), embed_dim
    head_dim = e // num_heads
    projections = 2 * batch * lq * e * e + 2 * 2 * batch * lk * e * e + 2 * batch * lq * e * e
    attention = sdpa_flops(
        (batch, num_heads, lq, head_dim), (batch, num_heads, lk, head_dim),
        (batch, num_heads, lk, head_dim),
    )
    return projections + attention


def _native_mha_flop(  # type: ignore[no-untyped-def]
    query_shape, key_shape, value_shape, embed_dim, num_head, *args, out_shape=None, **kwargs
) -> int:
    return mha_flops(query_shape, key_shape, int(embed_dim), int(num_head))


def _missing_flop_formulas() -> dict[Any, Callable[..., int]]:
    """Our formulas for ops torch has none for; torch's own formula wins once it has one."""
    aten = torch.ops.aten
    ours: dict[Any, Callable[..., int]] = {}
    for name, formula in (
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_flop),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward_flop),
        ("_native_multi_head_attention", _native_mha_flop),
    ):
        packet = getattr(aten, name, None)  # absent on builds without the kernel
        if packet is not None and packet not in flop_registry:
            ours[packet] = formula
    return ours


# ------------------------------------------------------------------------------ public API


def count_ops(
    fn: Callable[[], object], *, decompose: bool = True, inference_mode: bool = False
) -> dict[str, int]:
    """Dispatched aten ops of one call of ``fn``: overload name -> count, sorted by name.

    Every aten operator overload that reaches a ``TorchDispatchMode``, keyed by overload name
    (``"aten.mm.default"``). Composite operators (``matmul``, ``linear``, ``softmax``,
    ``scaled_dot_product_attention``...) are counted as the kernels they decompose into, the way
    ``FlopCounterMode`` does. Outside ``torch.inference_mode`` autograd has already decomposed
    them before the mode sees them; inside it the mode sees the composite op and decomposes it
    itself, so both modes count the kernels that really run. The counts still differ between
    grad modes where a composite kernel itself chooses another path (``matmul`` folds batch
    dimensions differently under ``inference_mode``; autograd adds ``aten.detach`` for saved
    tensors): compare counts taken under the same mode. Op counts do not depend on the thread
    count.

    ``decompose=False`` counts composite ops under ``inference_mode`` as themselves
    (``aten.matmul.default``) instead of their kernels.
    """
    _check_fn(fn, "count_ops")
    return _count_ops_and_bytes(fn, decompose, inference_mode)[0]


def count_bytes(fn: Callable[[], object], *, inference_mode: bool = False) -> int:
    """Bytes of new storages returned by the ops of one call of ``fn`` (views excluded).

    The summed ``nbytes`` of the *storages* that dispatched ops return and that none of their
    tensor arguments shares: new allocations. Views (``view``, ``transpose``, ``expand``,
    ``detach``...) and in-place / ``out=`` results are excluded; a storage returned twice by one
    op is counted once.
    """
    _check_fn(fn, "count_bytes")
    return _count_ops_and_bytes(fn, True, inference_mode)[1]


def count_flops(fn: Callable[[], object], *, inference_mode: bool = False) -> int:
    """FLOPs of one call of ``fn``: ``FlopCounterMode`` plus the formulas it lacks.

    ``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-add, matmul-like
    ops only, and 0 for some attention kernels on this torch (pytorch#195460,
    docs/measurements.md#counting-flops-and-memory). Added: the CPU SDPA kernel
    ``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward (torch's own
    ``sdpa_flop_count``, as for the CUDA flash/efficient kernels), and ``nn.MultiheadAttention``'s
    fused ``aten._native_multi_head_attention`` (:func:`mha_flops`). Attention masks and
    ``is_causal`` do not change the count: the dense kernel is counted, as torch does for its
    CUDA kernels (an upper bound for masked attention).
    """
    _check_fn(fn, "count_flops")
    with FlopCounterMode(display=False, custom_mapping=_missing_flop_formulas()) as counter:
        _call(fn, inference_mode)
    return int(counter.get_total_flops())


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Swallow the CUDA build's profiler noise lines written to fd 2; replay every other line.

    The CUDA build of torch prints profiler lines on machines without a GPU (``USDT: ...
    profiler_start``, ``gpuGetDeviceCount failed``, ``Memory block of unknown size``) straight to
    file descriptor 2, past pytest's capture under ``-s``. fd 2 (not only ``sys.stderr``) is
    redirected because the lines come from C++ logging; only those known lines disappear.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: nothing can leak either
        yield
        return
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [
                line for line in sink.read().splitlines(keepends=True)
                if not any(marker in line for marker in _NOISE_MARKERS)
            ]
            if kept:
                os.write(2, b"".join(kept))


def _cpu_peak(fn: Callable[[], object], inference_mode: bool) -> int:
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with quiet_native_stderr():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            _call(fn, inference_mode)
        results = getattr(prof.profiler, "kineto_results", None)
        if results is None:
            raise RuntimeError(
                f"peak_memory: torch {torch.__version__} profiler exposes no kineto_results; "
                "exact CPU peak memory needs torch >= 2.5"
            )
        pending = list(results.experimental_event_tree())
    allocations = []
    while pending:  # events nest under ops; allocations in other threads are roots of their own
        event = pending.pop()
        pending.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            allocations.append(event)
    allocations.sort(key=lambda e: (e.start_time_ns, e.extra_fields.id))
    # Replay by pointer: a free counts only if its block was allocated during this call, so
    # frees of older tensors (reported or not, depending on earlier profiling) never offset it.
    live: dict[int, int] = {}
    level = peak = 0
    for event in allocations:
        ptr, size = event.extra_fields.ptr, event.extra_fields.alloc_size
        if size > 0:
            live[ptr] = size
            level += size
            peak = max(peak, level)
        elif ptr in live:
            level -= live.pop(ptr)
    return peak


def peak_memory(
    fn: Callable[[], object],
    device: str | torch.device = "cpu",
    *,
    warmup: int = 1,
    inference_mode: bool = False,
) -> int:
    """Peak tensor memory (bytes) allocated during one call of ``fn`` on ``device``.

    The peak of tensor memory allocated during the call and not yet freed. CPU: exact, from the
    profiler's allocation events replayed in order (allocator pointer and size). Memory that the
    call frees but that was allocated before it is not credited (the profiler does not know the
    size of such blocks), so the figure is "new memory needed by the call". It depends on the
    thread count where a kernel keeps per-thread buffers (the CPU SDPA kernel does:
    docs/measurements.md#counting-flops-and-memory), which is why :class:`CounterReport`
    records ``threads``. CUDA/XPU: ``max_memory_allocated`` minus ``memory_allocated`` at the
    start, after ``reset_peak_memory_stats``.

    ``warmup`` calls run first, unmeasured (lazy initialisation, cuBLAS workspaces).
    """
    _check_fn(fn, "peak_memory")
    dev = _as_device(device, "peak_memory")
    if warmup < 0:
        raise ValueError(f"peak_memory: warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        _call(fn, inference_mode)
    if dev.type == "cpu":
        return _cpu_peak(fn, inference_mode)
    backend = getattr(torch, dev.type, None)
    if dev.type not in ("cuda", "xpu") or backend is None:
        raise ValueError(
            f"peak_memory: device {str(dev)!r} is not supported; accepted: cpu, cuda[:i], xpu[:i]"
        )
    backend.synchronize(dev)
    start = backend.memory_allocated(dev)
    backend.reset_peak_memory_stats(dev)
    _call(fn, inference_mode)
    backend.synchronize(dev)
    return max(0, int(backend.max_memory_allocated(dev)) - int(start))


def count_syncs(
    fn: Callable[[], object],
    device: str | torch.device,
    *,
    warmup: int = 1,
    inference_mode: bool = False,
) -> int | None:
    """Implicit host-device synchronisations in one call of ``fn`` on CUDA; ``None`` elsewhere.

    Counted as the warnings of ``torch.cuda.set_sync_debug_mode("warn")`` (``.item()``,
    ``.cpu()``, ``nonzero``, blocking copies...).
    """
    _check_fn(fn, "count_syncs")
    dev = _as_device(device, "count_syncs")
    if dev.type != "cuda":
        return None
    for _ in range(warmup):
        _call(fn, inference_mode)
    torch.cuda.synchronize(dev)  # pending work from before the call is not the call's sync
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _call(fn, inference_mode)
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum("synchronizing CUDA operation" in str(w.message) for w in caught)


def _canonical_metrics(metrics: Iterable[str]) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    wanted = []
    for metric in metrics:
        name = _METRIC_ALIASES.get(metric, metric)
        if name not in METRICS:
            raise ValueError(
                f"measure_counters: unknown metric {metric!r}; accepted: {', '.join(METRICS)} "
                f"(or {', '.join(_METRIC_ALIASES)})"
            )
        if name not in wanted:
            wanted.append(name)
    if not wanted:
        raise ValueError(f"measure_counters: metrics is empty; accepted: {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in wanted)


def measure_counters(
    fn: Callable[[], object],
    device: str | torch.device = "cpu",
    metrics: Iterable[str] = METRICS,
    *,
    warmup: int = 1,
    inference_mode: bool = False,
) -> CounterReport:
    """Measure the requested counters of ``fn`` (a zero-argument callable) on ``device``.

    ``fn`` runs ``warmup`` times unmeasured, then once per group of metrics (ops, bytes and flops;
    peak memory, syncs on CUDA): it must be repeatable. ``inference_mode=True`` runs every call
    under ``torch.inference_mode()``.
    """
    _check_fn(fn, "measure_counters")
    dev = _as_device(device, "measure_counters")
    wanted = _canonical_metrics(metrics)
    if warmup < 0:
        raise ValueError(f"measure_counters: warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        _call(fn, inference_mode)
    ops: dict[str, int] = {}
    nbytes = flops = peak = syncs = None
    if "ops" in wanted or "bytes" in wanted:
        counted, counted_bytes, flops = _count_ops_and_bytes(
            fn, True, inference_mode, flops="flops" in wanted)
        ops = counted if "ops" in wanted else {}
        nbytes = counted_bytes if "bytes" in wanted else None
    elif "flops" in wanted:
        flops = count_flops(fn, inference_mode=inference_mode)
    if "peak_memory" in wanted:
        peak = peak_memory(fn, dev, warmup=0, inference_mode=inference_mode)
    if "syncs" in wanted:
        syncs = count_syncs(fn, dev, warmup=0, inference_mode=inference_mode)
    return CounterReport(
        ops=ops,
        flops=flops,
        bytes_materialized=nbytes,
        peak_memory_bytes=peak,
        syncs=syncs,
        device=str(dev),
        threads=torch.get_num_threads(),
        metrics=wanted,
    )
