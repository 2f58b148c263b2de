"""The machine's practical peaks, measured in the same run as the cases they put in proportion.

:func:`matmul_peak` (GFLOP/s of a dense ``torch.mm``), :func:`memcpy_peak` (GB/s of a large
``copy_``, counting every byte read and written) and :func:`kernel_peak` (a family's own
:class:`Roofline`, e.g. :func:`resize_roofline` for image preprocessing: a copy is the wrong
limit for compute-bound work). A practical peak is the best rate the machine sustains, so it is
measured as a maximum: the fastest block of several sizes (:func:`time_blocks`), since
interference on a shared machine only makes blocks slower. :func:`reconcile_peak` re-measures a
peak that a case beats and, if the case still wins, raises the peak to it and says so, so that
no efficiency reads above 100 %; :func:`best_so_far` hands every family the best peak of the
run. Peaks use torch's current threads and precision settings, the ones the cases run under.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pytest_mmperf.timing.stats import quartiles

if TYPE_CHECKING:
    import torch

DEFAULT_MATMUL_N = {"cpu": 1024, "cuda": 8192}  # the first size tried (kept for callers)
DEFAULT_MATMUL_SIZES = {"cpu": (512, 1024, 2048), "cuda": (4096, 8192)}
DEFAULT_MEMCPY_BYTES = {"cpu": 64 << 20, "cuda": 512 << 20}  # well beyond the last-level cache
DEFAULT_MIN_RUN_TIME_S = 0.5
MIN_BLOCKS = 5
BLOCK_S = 0.02  # target length of one timed block


@dataclass(frozen=True)
class Peak:
    """A measured practical peak.

    ``value`` is in ``unit`` (``"GFLOP/s"`` or ``"GB/s"``); ``seconds`` is the best time of one
    operation and ``median_s`` the median over blocks; ``size`` is ``n`` (matmul) or ``nbytes``
    (copy) of the best size; ``work`` is the FLOPs or counted bytes of one operation.
    ``q1_value`` / ``q3_value``: quartiles of the per-block rates of the best size (the peak's
    own spread; ``value`` is their maximum). ``sizes``: rate of the best block per size tried.
    ``measured_value`` and ``raised_by``: set by :func:`reconcile_peak` when a case beat the
    measured peak (``value`` is then that case's rate).
    """

    kind: str  # "matmul" | "memcpy" | "kernel" (a Roofline's)
    value: float
    unit: str
    dtype: str
    device: str
    size: int
    work: float
    seconds: float
    median_s: float
    blocks: int
    threads: int
    q1_value: float = math.nan
    q3_value: float = math.nan
    sizes: dict[int, float] = field(default_factory=dict)
    measured_value: float = math.nan
    raised_by: str | None = None
    name: str = ""  # a kernel peak: the Roofline's name

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["sizes"] = {str(k): v for k, v in self.sizes.items()}  # JSON keys are strings
        return record


def _device(device: object, where: str) -> str:
    import torch

    try:
        dev = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{where}(device={device!r}) is not a torch device; use e.g. 'cpu', "
                         f"'cuda', 'cuda:0'") from exc
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return str(dev)


def _dtype_name(dtype: object, where: str) -> str:
    import torch

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{where}(dtype={dtype!r}) must be a floating-point torch.dtype such as "
                         f"torch.float32, torch.bfloat16, torch.float16")
    return str(dtype).removeprefix("torch.")


def _positive_int(value: object, name: str, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}({name}={value!r}) must be an integer >= {low}")
    return value


def time_blocks(fn: Callable[[], object], device: str, min_run_time: float,
                min_blocks: int = MIN_BLOCKS) -> list[float]:
    """Seconds per call of ``fn``, one value per block; the caller takes the fastest block as the
    peak, since interference on a shared machine only ever makes a block slower.

    One warm-up call, then blocks of ``number`` calls (``number`` chosen from the warm-up so a
    block lasts about :data:`BLOCK_S`) until both ``min_blocks`` blocks and ``min_run_time``
    seconds are done (at most 10,000 blocks). A CUDA device is synchronised around each block.
    """
    import torch

    sync: Callable[[], None] = (
        (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None))
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    number = max(1, int(BLOCK_S / max(first, 1e-9)))
    times: list[float] = []
    start = time.perf_counter()
    while (len(times) < min_blocks or time.perf_counter() - start < min_run_time) \
            and len(times) < 10_000:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / number)
    return times


def _peak_from_blocks(kind: str, unit: str, dtype: str, device: str, size: int, work: float,
                      times: list[float], scale: float) -> Peak:
    import torch

    rates = [work / t / scale for t in times]
    q1, _, q3 = quartiles(rates)
    best = min(times)
    return Peak(kind=kind, value=work / best / scale, unit=unit, dtype=dtype, device=device,
                size=size, work=work, seconds=best, median_s=quartiles(times)[1],
                blocks=len(times), threads=torch.get_num_threads(), q1_value=q1, q3_value=q3,
                sizes={size: work / best / scale}, measured_value=work / best / scale)


def matmul_peak(dtype: torch.dtype | str = "float32", device: object = "cpu", n: int | None = None,
                min_run_time: float = DEFAULT_MIN_RUN_TIME_S) -> Peak:
    """Practical compute peak: GFLOP/s of ``torch.mm`` on two (n, n) ``dtype`` matrices.

    ``n`` None measures every size of :data:`DEFAULT_MATMUL_SIZES` for the device type
    (``min_run_time`` each) and returns the best, with the rate of each size in ``sizes``; an
    explicit ``n`` measures that size only. Cached per (dtype, device, n, min_run_time).
    """
    name = _dtype_name(dtype, "matmul_peak")
    dev = _device(device, "matmul_peak")
    if n is not None:
        _positive_int(n, "n", "matmul_peak", 1)
    _check_run_time(min_run_time, "matmul_peak")
    return _matmul_peak(name, dev, n, float(min_run_time))


def memcpy_peak(device: object = "cpu", nbytes: int | None = None,
                min_run_time: float = DEFAULT_MIN_RUN_TIME_S) -> Peak:
    """Practical memory bandwidth: GB/s of ``dst.copy_(src)`` on ``nbytes``-byte uint8 tensors,
    counting ``2 * nbytes`` per copy (read + write). Cached per (device, nbytes, min_run_time)."""
    dev = _device(device, "memcpy_peak")
    size = DEFAULT_MEMCPY_BYTES.get(dev.split(":")[0], 256 << 20) if nbytes is None else nbytes
    _positive_int(size, "nbytes", "memcpy_peak", 1)
    _check_run_time(min_run_time, "memcpy_peak")
    return _memcpy_peak(dev, size, float(min_run_time))


def _check_run_time(value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{where}(min_run_time={value!r}) must be a positive number of seconds")


@functools.cache  # = lru_cache(maxsize=None): one measurement per key and process
def _matmul_peak(dtype_name: str, device: str, n: int | None, min_run_time: float) -> Peak:
    if n is not None:
        return measure_matmul(dtype_name, device, n, min_run_time)
    sizes = DEFAULT_MATMUL_SIZES.get(device.split(":")[0], (1024, 2048))
    measured = [measure_matmul(dtype_name, device, size, min_run_time) for size in sizes]
    best = max(measured, key=lambda p: p.value)
    return replace(best, sizes={p.size: p.value for p in measured})


@functools.cache  # = lru_cache(maxsize=None): one measurement per key and process
def _memcpy_peak(device: str, nbytes: int, min_run_time: float) -> Peak:
    import torch

    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.zeros_like(src)  # touch every page now, not inside the timed copies
    times = time_blocks(lambda: dst.copy_(src), device, min_run_time)
    return _peak_from_blocks("memcpy", "GB/s", "uint8", device, nbytes, 2.0 * nbytes, times, 1e9)


def measure_matmul(dtype: torch.dtype | str, device: object, n: int,
                   min_run_time: float = DEFAULT_MIN_RUN_TIME_S) -> Peak:
    """Measure (uncached) the GFLOP/s of an (n, n) @ (n, n) matmul, exactly as the peak is
    measured; useful to compare a smaller size with the peak."""
    name = _dtype_name(dtype, "measure_matmul")
    dev = _device(device, "measure_matmul")
    _positive_int(n, "n", "measure_matmul", 1)
    _check_run_time(min_run_time, "measure_matmul")
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=dev, dtype=getattr(torch, name))
    b = torch.randn(n, n, generator=gen).to(device=dev, dtype=getattr(torch, name))
    out = torch.empty_like(a)
    # out= keeps the allocator out of the timed statement.
    times = time_blocks(lambda: torch.mm(a, b, out=out), dev, min_run_time)
    # n^2 outputs, each n multiplies and n adds
    return _peak_from_blocks("matmul", "GFLOP/s", name, dev, n, 2.0 * n**3, times, 1e9)


@dataclass(frozen=True)
class Roofline:
    """A family's own limit: the kernel that bounds its work, to be measured at its best.

    ``kernel()`` does ``work`` units of ``unit`` per call (e.g. resizes 16 images: ``work=16``,
    ``unit="images"``), set up for its best throughput: inputs contiguous and allocated once,
    outputs preallocated, all of torch's threads. ``name`` says what the limit is (shown with
    the fraction, e.g. ``"antialiased uint8 resize"``); ``key`` identifies the measurement for
    the per-process cache (two Rooflines with one key are measured once); ``dtype`` is recorded.
    Pass it as ``mmperf_report.family(..., roofline=..., work=...)``, ``work`` being the units of
    one call of each implementation (default: the family's ``items`` when its ``unit`` is the
    roofline's); the rows' ``peak_fraction`` is then ``work / median_s`` over
    :func:`kernel_peak`'s value.
    """

    name: str
    kernel: Callable[[], object]
    work: float
    unit: str
    key: str = ""
    dtype: str = ""
    size: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Roofline(name={self.name!r}) must be a non-empty string")
        if not callable(self.kernel):
            raise TypeError(f"Roofline {self.name!r}: kernel must be a zero-argument callable, "
                            f"got {type(self.kernel).__name__}")
        if isinstance(self.work, bool) or not isinstance(self.work, (int, float)) \
                or not math.isfinite(self.work) or not self.work > 0:
            raise ValueError(f"Roofline {self.name!r}: work must be a finite number > 0 (units "
                             f"per kernel call), got {self.work!r}")
        if not isinstance(self.unit, str) or not self.unit:
            raise ValueError(f"Roofline {self.name!r}: unit must be a non-empty string, got "
                             f"{self.unit!r}")


def kernel_peak(roofline: Roofline, device: object = "cpu",
                min_run_time: float = DEFAULT_MIN_RUN_TIME_S) -> Peak:
    """Practical peak of ``roofline``: ``work / t`` in ``<unit>/s`` over the fastest block of
    :func:`time_blocks`, as the other peaks. Cached per (key, device, run time) when the
    roofline has a ``key``; measured every call otherwise."""
    if not isinstance(roofline, Roofline):
        raise TypeError(f"kernel_peak(roofline=...) must be a Roofline, got "
                        f"{type(roofline).__name__}")
    dev = _device(device, "kernel_peak")
    _check_run_time(min_run_time, "kernel_peak")
    if roofline.key:
        cache_key = (roofline.key, dev, float(min_run_time))
        if cache_key not in _KERNEL_PEAKS:
            _KERNEL_PEAKS[cache_key] = _measure_kernel(roofline, dev, float(min_run_time))
        return _KERNEL_PEAKS[cache_key]
    return _measure_kernel(roofline, dev, float(min_run_time))


_KERNEL_PEAKS: dict[tuple[str, str, float], Peak] = {}


def _measure_kernel(roofline: Roofline, device: str, min_run_time: float) -> Peak:
    times = time_blocks(roofline.kernel, device, min_run_time)
    peak = _peak_from_blocks("kernel", f"{roofline.unit}/s", roofline.dtype, device,
                             roofline.size, float(roofline.work), times, 1.0)
    return replace(peak, name=roofline.name)


RESIZE_ROOFLINE_NAME = "antialiased uint8 resize"


def resize_roofline(sizes: Sequence[tuple[int, int]], size: int = 224, *,
                    device: object = "cpu") -> Roofline:
    """The limit of image preprocessing that resizes ``sizes`` (input ``(height, width)`` per
    image) to ``size`` x ``size`` with antialiasing: torch's uint8 antialiased bilinear kernel
    (``_upsample_bilinear2d_aa``, what ``interpolate(mode="bilinear", antialias=True)`` and
    torchvision v2 ``resize`` run on uint8) at its best, in images/s.

    Images of one size form one contiguous batch, resized in one call with all threads into a
    preallocated output; the layout is the faster of channels-last RGB and RGBX (4-byte pixels,
    the kernel's native layout: it packs 3-channel pixels to 4 bytes itself), chosen when the
    kernel is first called. A pipeline that only resizes these images can at best reach this
    rate; normalisation and copies come on top, so a fraction near 1 means the resize runs at
    the kernel's best and the rest is cheap.
    """
    shapes = [(int(h), int(w)) for h, w in sizes]
    if not shapes or any(h < 1 or w < 1 for h, w in shapes):
        raise ValueError(f"resize_roofline(sizes=...) needs at least one (height, width) of "
                         f"positive ints, got {list(sizes)!r}")
    _positive_int(size, "size", "resize_roofline", 1)
    dev = _device(device, "resize_roofline")
    groups: dict[tuple[int, int], int] = {}
    for shape in shapes:
        groups[shape] = groups.get(shape, 0) + 1
    key = "resize:" + ",".join(f"{n}x{h}x{w}" for (h, w), n in sorted(groups.items()))
    kernel = _ResizeKernel(groups, size, dev)
    return Roofline(name=RESIZE_ROOFLINE_NAME, kernel=kernel, work=float(len(shapes)),
                    unit="images", key=f"{key}->{size}", dtype="uint8", size=size)


class _ResizeKernel:
    """The batches of :func:`resize_roofline`, allocated at the first call (not at
    construction: a family measured in a worker never calibrates)."""

    def __init__(self, groups: Mapping[tuple[int, int], int], size: int, device: str) -> None:
        self.groups, self.size, self.device = dict(groups), size, device
        self.run: Callable[[], object] | None = None

    def __call__(self) -> object:
        if self.run is None:
            self.run = self._fastest()
        return self.run()

    def _batches(self, channels: int) -> Callable[[], object]:
        import torch

        gen = torch.Generator().manual_seed(0)
        pairs = []
        for (h, w), n in self.groups.items():
            x = torch.randint(0, 256, (n, h, w, channels), dtype=torch.uint8, generator=gen)
            out = torch.empty((n, self.size, self.size, channels), dtype=torch.uint8)
            pairs.append((x.to(self.device).permute(0, 3, 1, 2),
                          out.to(self.device).permute(0, 3, 1, 2)))
        op = getattr(getattr(torch._C, "_nn", None), "_upsample_bilinear2d_aa", None)
        size = [self.size, self.size]

        def run() -> None:
            for x, out in pairs:
                if op is not None:  # out=: no fresh output pages per call
                    op(x, size, False, None, None, out=out)
                else:  # pragma: no cover - a torch without the binding
                    out.copy_(torch.nn.functional.interpolate(
                        x, size=size, mode="bilinear", antialias=True, align_corners=False))
        return run

    def _fastest(self) -> Callable[[], object]:
        best: tuple[float, Callable[[], object]] | None = None
        for channels in (4, 3):
            run = self._batches(channels)
            seconds = min(time_blocks(run, self.device, 0.0, min_blocks=3))
            if best is None or seconds < best[0]:
                best = (seconds, run)
        assert best is not None
        return best[1]


_BEST: dict[tuple[str, str, str], Peak] = {}


def best_so_far(peak: Peak) -> Peak:
    """The best measured peak of ``peak``'s kind (matmul of its dtype, or copy) on its device in
    this process: ``peak`` itself if it is the best (it is then recorded), else the earlier
    one. A peak is the best rate the machine sustained in the run; a later calibration that a
    busy moment slowed must not lower it. A peak raised to a case (``raised_by``) is returned as
    it is, its measured part (``measured_value``) recorded; kernel peaks (each
    :class:`Roofline` has its own work) are returned as they are."""
    if peak.kind not in ("matmul", "memcpy"):
        return peak
    measured = peak
    if peak.raised_by is not None:
        if not math.isfinite(peak.measured_value):
            return peak
        measured = replace(peak, value=peak.measured_value, raised_by=None)
    key = (peak.kind, peak.dtype, peak.device)
    best = _BEST.get(key)
    if best is None or measured.value > best.value:
        _BEST[key] = best = measured
    return peak if peak.raised_by is not None or best is measured else best


def clear_cache() -> None:
    """Forget the measured peaks (the next call measures again)."""
    _matmul_peak.cache_clear()
    _memcpy_peak.cache_clear()
    _KERNEL_PEAKS.clear()
    _BEST.clear()


def efficiency(achieved: float, peak: Peak | float) -> float:
    """``achieved / peak`` as a fraction (0.25 = 25 % of the peak), in the peak's unit.

    Not clamped: a value above 1 means the peak was not the machine's peak. Pass the rates of
    all cases through :func:`reconcile_peak` first; with its peak, no efficiency exceeds 1.
    """
    peak_value = peak.value if isinstance(peak, Peak) else peak
    for name, value in (("achieved", achieved), ("peak", peak_value)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise ValueError(f"efficiency({name}={value!r}) must be a finite number >= 0")
    if peak_value == 0:
        raise ValueError("efficiency(peak=0) is undefined: a peak must be > 0")
    return float(achieved) / float(peak_value)


def reconcile_peak(peak: Peak, achieved: Mapping[str, float], *, remeasure: bool = True,
                   min_run_time: float | None = None) -> Peak:
    """The peak to report ``achieved`` (case name -> rate in the peak's unit) against.

    If no case beats ``peak``, it is returned unchanged. Otherwise (the calibration missed the
    peak, or a fused kernel beats a plain matmul / copy) the peak is first measured again, with
    twice the run time (``remeasure``; the cached peak is left as it is), and if a case still
    beats it, the returned peak's ``value`` is the best case's rate, ``raised_by`` names that
    case and ``measured_value`` keeps the calibrated rate. Either way every efficiency is then
    <= 1, and a raised peak says so.
    """
    for case, rate in achieved.items():
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) \
                or not math.isfinite(rate) or rate < 0:
            raise ValueError(f"reconcile_peak(achieved[{case!r}]={rate!r}) must be a finite "
                             f"rate >= 0 in {peak.unit}")
    if not achieved:
        return peak
    best_case = max(achieved, key=lambda k: achieved[k])
    best = float(achieved[best_case])
    if best <= peak.value:
        return peak
    if remeasure and peak.kind in ("matmul", "memcpy"):
        run = 2 * DEFAULT_MIN_RUN_TIME_S if min_run_time is None else min_run_time
        _check_run_time(run, "reconcile_peak")
        if peak.kind == "matmul":
            again = measure_matmul(peak.dtype, peak.device, peak.size, run)
        else:
            again = _memcpy_peak.__wrapped__(peak.device, peak.size, float(run))
        if again.value > peak.value:
            peak = replace(again, sizes={**peak.sizes, again.size: again.value})
        if best <= peak.value:
            return peak
    return replace(peak, value=best, raised_by=best_case,
                   measured_value=peak.measured_value if math.isfinite(peak.measured_value)
                   else peak.value)
