"""The machine's practical peaks, measured in the same run as the cases they put in proportion.

* :func:`matmul_peak` — GFLOP/s of a dense square ``torch.mm`` (n x n @ n x n, ``2 n^3`` FLOPs) in
  a given dtype on a given device: the practical compute peak that attention GFLOP/s is compared
  with. On CPUs with AMX (``amx_bf16``) a bfloat16 matmul is several times faster than float32.
* :func:`memcpy_peak` — GB/s of a large contiguous tensor ``copy_``: the practical memory
  bandwidth that preprocessing bytes/s is compared with. **Convention:** a copy of ``nbytes``
  counts ``2 * nbytes`` (every byte is read once and written once, STREAM "copy" style); the
  extra read that a write-allocate cache performs on the destination is not counted.
  ``1 GB/s = 1e9 bytes/s``.
* :func:`efficiency` — achieved / peak.

Both peaks use ``torch.utils.benchmark.Timer.blocked_autorange`` with all of torch's intra-op
threads (the Timer's default is one thread) and report the **best block**: a peak is a maximum,
and on a shared machine interference only ever makes a block slower. Each peak is measured once per
process for a given (dtype, device, size) and cached (:func:`functools.lru_cache`);
:func:`clear_cache` forgets them. The peaks use torch's current precision settings (for example
TF32 on CUDA), the same ones the measured case runs under.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DEFAULT_MATMUL_N = {"cpu": 1024, "cuda": 8192}  # CUDA needs a large n to fill the GPU
DEFAULT_MEMCPY_BYTES = {"cpu": 64 << 20, "cuda": 512 << 20}  # well beyond the last-level cache
DEFAULT_MIN_RUN_TIME_S = 0.5


@dataclass(frozen=True)
class Peak:
    """A measured practical peak.

    ``value`` is in ``unit`` (``"GFLOP/s"`` or ``"GB/s"``); ``seconds`` is the best time of one
    operation and ``median_s`` the median over blocks; ``size`` is ``n`` (matmul) or ``nbytes``
    (copy); ``work`` is the FLOPs or counted bytes of one operation.
    """

    kind: str  # "matmul" | "memcpy"
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timer_class() -> Any:
    """``torch.utils.benchmark.Timer``, imported without its import-time log noise.

    Importing ``torch.utils.benchmark`` imports ``torch.utils.cpp_extension``, which logs a
    warning ("No CUDA runtime is found") on CUDA builds without a GPU; it is irrelevant here.
    """
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        log.setLevel(level)
    return Timer


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


def _best_block(stmt: str, env: dict[str, Any], min_run_time: float) -> tuple[float, float, int]:
    """(best seconds per op, median seconds per op, number of blocks) of ``stmt``."""
    import torch

    timer = _timer_class()(stmt=stmt, globals=env, num_threads=torch.get_num_threads())
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    times = list(measurement.times)  # seconds per run of stmt, one entry per block
    return min(times), float(measurement.median), len(times)


def matmul_peak(dtype: torch.dtype | str = "float32", device: object = "cpu", n: int | None = None,
                min_run_time: float = DEFAULT_MIN_RUN_TIME_S) -> Peak:
    """Practical compute peak: GFLOP/s of ``torch.mm`` on two (n, n) ``dtype`` matrices.

    ``n`` defaults to :data:`DEFAULT_MATMUL_N` for the device type. Cached per
    (dtype, device, n, min_run_time) for the process.
    """
    name = _dtype_name(dtype, "matmul_peak")
    dev = _device(device, "matmul_peak")
    size = DEFAULT_MATMUL_N.get(dev.split(":")[0], 2048) if n is None else n
    _positive_int(size, "n", "matmul_peak", 1)
    _check_run_time(min_run_time, "matmul_peak")
    return _matmul_peak(name, dev, size, float(min_run_time))


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
def _matmul_peak(dtype_name: str, device: str, n: int, min_run_time: float) -> Peak:
    return measure_matmul(dtype_name, device, n, min_run_time)


@functools.cache  # = lru_cache(maxsize=None): one measurement per key and process
def _memcpy_peak(device: str, nbytes: int, min_run_time: float) -> Peak:
    import torch

    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.zeros_like(src)  # touch every page now, not inside the timed copies
    best, median, blocks = _best_block("dst.copy_(src)", {"src": src, "dst": dst}, min_run_time)
    work = 2.0 * nbytes
    return Peak(kind="memcpy", value=work / best / 1e9, unit="GB/s", dtype="uint8",
                device=device, size=nbytes, work=work, seconds=best, median_s=median,
                blocks=blocks, threads=torch.get_num_threads())


def measure_matmul(dtype: torch.dtype | str, device: object, n: int,
                   min_run_time: float = DEFAULT_MIN_RUN_TIME_S) -> Peak:
    """Measure (uncached) the GFLOP/s of an (n, n) @ (n, n) matmul, exactly as the peak is
    measured; useful to compare a smaller size with the peak."""
    name = _dtype_name(dtype, "measure_matmul")
    dev = _device(device, "measure_matmul")
    _positive_int(n, "n", "measure_matmul", 1)
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=dev, dtype=getattr(torch, name))
    b = torch.randn(n, n, generator=gen).to(device=dev, dtype=getattr(torch, name))
    out = torch.empty_like(a)
    # out= keeps the allocator out of the timed statement.
    best, median, blocks = _best_block("torch.mm(a, b, out=out)",
                                       {"torch": torch, "a": a, "b": b, "out": out}, min_run_time)
    work = 2.0 * n**3  # n^2 outputs, each n multiplies and n adds
    return Peak(kind="matmul", value=work / best / 1e9, unit="GFLOP/s", dtype=name, device=dev,
                size=n, work=work, seconds=best, median_s=median, blocks=blocks,
                threads=torch.get_num_threads())


def clear_cache() -> None:
    """Forget the measured peaks (the next call measures again)."""
    _matmul_peak.cache_clear()
    _memcpy_peak.cache_clear()


def efficiency(achieved: float, peak: Peak | float) -> float:
    """``achieved / peak`` as a fraction (0.25 = 25 % of the peak), in the peak's unit.

    Not clamped: a case can beat a "practical" peak (a cache-resident working set, a fused kernel
    faster than a plain copy), and the report should show that rather than hide it.
    """
    peak_value = peak.value if isinstance(peak, Peak) else peak
    for name, value in (("achieved", achieved), ("peak", peak_value)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise ValueError(f"efficiency({name}={value!r}) must be a finite number >= 0")
    if peak_value == 0:
        raise ValueError("efficiency(peak=0) is undefined: a peak must be > 0")
    return float(achieved) / float(peak_value)
