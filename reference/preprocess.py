"""Image preprocessing from the seed article: the naive loop, the seed's "optimisation", the fix.

Every pipeline maps B RGB images of any size to one normalised batch (B, 3, S, S), S = 224:
antialiased resize to (S, S) (aspect ratio not kept, as in the seed), scale to [0, 1],
ImageNet mean/std normalisation.

* :class:`NaivePreprocessor`: the seed's code, v1 ``Compose([Resize((224, 224),
  antialias=True), ToTensor(), Normalize(mean, std)])`` image by image in a Python loop, then
  ``torch.stack``. The seed writes ``transforms.Resize((224, 224)), antialias=True)``, a syntax
  error; the only fix is the parenthesis.
* :class:`SeedOptimizedPreprocessor`: the per-image transform of the seed's ``OptimizedDataset``
  (the same Compose without ``antialias=True``). On PIL images it computes exactly what the
  naive loop computes (v1 ``Resize`` always antialiases PIL images): the seed's only change is
  moving the work into DataLoader workers (:mod:`reference._loading`); in memory it gains nothing.
* :func:`batched_preprocess` / :class:`BatchedPreprocessor`: the fix. Pixels stay uint8 until
  one fused normalise over the whole batch (:func:`normalize_uint8`); each image is resized on
  uint8 with antialias and copied straight into one preallocated uint8 (B, 3, S, S) buffer;
  images are spread over a small thread pool (the resize and the copy run outside the GIL).

Measured on this machine (2-core Xeon, torch CPU capability "AVX512"; shared with other jobs at
load average 3-4, so only ratios from one run mean anything), 32 RGB images of 480-800 px:

* Resize backend (one thread, per batch): Pillow ``Image.resize(BILINEAR)`` 145-170 ms; torch's
  uint8 antialiased bilinear on a channels-last (H, W, 3) view of the pixels 23-28 ms, plus
  25-40 ms for Pillow to unpack the pixels into an array; on a contiguous (3, H, W) uint8 tensor
  66 ms; on float32 152 ms. torchvision 0.29 takes its uint8 path on "AVX2" and "AVX512" CPUs
  (the check of vision#8374 includes AVX512 in this version), so ``resize_backend="auto"`` picks
  ``"tv"`` (``torchvision.transforms.v2.functional.resize`` on uint8) there and on ARM, and
  ``"pil"`` elsewhere, where torchvision would resize in float32.
* ``tests/reference/test_preprocess_bench.py``, medians: naive 81 / batched 42 ms (1.9x; one
  thread per torch op, ``OMP_NUM_THREADS=1``); naive 151 / batched 49 ms (3.1x;
  ``OMP_WAIT_POLICY=PASSIVE``); naive 506 / batched 78 ms (6.5x; defaults). With the defaults,
  every small op of the naive loop (7 per image) is an OpenMP parallel region whose spinning
  worker thread competes with other processes for the 2 cores, which costs milliseconds per op
  on a busy machine; the batched path has 3 large ops. The seed's optimised transform: 0.8-1.1x
  naive. The thread pool gains nothing without a free core (batched with one thread: 40-89 ms).

Accepted images (both pipelines accept and convert the same inputs, identically):

* ``PIL.Image.Image`` in mode RGB as is; modes 1, L, LA, La, P, PA, RGBA, RGBa, RGBX, CMYK and
  YCbCr are converted with ``Image.convert("RGB")`` (grey -> three equal channels, palette ->
  its colours, alpha is dropped, as ``Image.open(path).convert("RGB")`` in the seed's dataset
  does). 16-bit, 32-bit and float modes (I;16*, I, F) are rejected: Pillow would clip them.
* ``torch.Tensor`` of dtype uint8, shape (3, H, W), on the CPU (any strides). The naive
  pipelines turn it into a PIL image first (lossless), since the seed's ``ToTensor`` needs PIL.

Anything else (an empty batch, a bare tensor or image instead of a list, a float tensor, a
(1, H, W) or (4, H, W) tensor, a 16-bit image) raises TypeError/ValueError naming the item's
index and what is accepted. Inputs are never modified.

Profiler labels (``torch.profiler.record_function``, read by ``pytest_mmperf.stages``):
``mmperf::decode`` (file -> pixels), ``mmperf::convert`` (PIL mode -> RGB, PIL -> uint8 tensor;
``ToTensor`` in the naive loop), ``mmperf::resize``, ``mmperf::collate`` (stack / copy into the
batch buffer), ``mmperf::normalize`` (uint8 -> float and the multiply-add), ``mmperf::transfer``
(copy to the device). Labels on pool threads are not counted by the stage breakdown, so with
a pool the calling thread labels the whole parallel per-image section ``mmperf::resize``.

The disk pipelines (``SeedDataset``, ``make_seed_loader``, ``FastJpegDataset``,
``make_fast_loader``, ``FastLoader``) live in :mod:`reference._loading` and are importable from
here too.
"""

from __future__ import annotations

import functools
import os
import platform
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.profiler import record_function
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F2

_LOADING_NAMES = ("SeedDataset", "make_seed_loader", "FastJpegDataset", "make_fast_loader",
                  "FastLoader")  # from reference._loading, through __getattr__ below
__all__ = [  # noqa: F822 (the _LOADING_NAMES are resolved lazily)
    "ACCEPTED_MODES", "IMAGENET_MEAN", "IMAGENET_STD", "OUTPUT_DTYPES", "RESIZE_BACKENDS",
    "STAGES", "BatchedPreprocessor", "NaivePreprocessor", "SeedOptimizedPreprocessor",
    "available_cores", "batched_preprocess", "check_images", "normalize_uint8", "pil_to_hwc",
    "resize_uint8", "seed_transform", "to_rgb", *_LOADING_NAMES,
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
STAGES = ("decode", "convert", "resize", "collate", "normalize", "transfer")
RESIZE_BACKENDS = ("auto", "pil", "tv")
OUTPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# 8-bit modes that Image.convert("RGB") maps correctly; wider modes would be clipped to 8 bits.
ACCEPTED_MODES = ("RGB", "1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
_ACCEPTED = (
    "RGB PIL images (modes 1, L, LA, P, PA, RGBA, RGBX, CMYK, YCbCr are converted to RGB) or "
    "uint8 CPU tensors of shape (3, H, W)"
)


def _stage(name: str) -> record_function:
    return record_function(f"mmperf::{name}")


def available_cores() -> int:
    """CPU cores this process may run on (affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


# --- validation -------------------------------------------------------------------------------
def to_rgb(image: Image.Image, where: str) -> Image.Image:
    """`image` as an RGB PIL image (a converted copy, or `image` itself if already RGB).

    where: names the item in error messages, e.g. "images[3]" or a file path.
    """
    if image.mode == "RGB":
        return image
    if image.mode not in ACCEPTED_MODES:
        raise ValueError(
            f"{where}: PIL image mode {image.mode!r} is not accepted (16/32-bit or float pixels "
            f"would be clipped to 8 bits); accepted modes: {', '.join(ACCEPTED_MODES)}. Scale it "
            f"to 8 bits yourself, e.g. Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))"
        )
    return image.convert("RGB")


def _check_item(item: Any, where: str) -> Image.Image | torch.Tensor:
    if isinstance(item, Image.Image):
        if item.width < 1 or item.height < 1:
            raise ValueError(f"{where}: empty PIL image of size {item.size}; accepted: {_ACCEPTED}")
        return to_rgb(item, where)
    if isinstance(item, torch.Tensor):
        if item.dtype != torch.uint8:
            raise TypeError(
                f"{where}: tensor of dtype {item.dtype} is not accepted; accepted: {_ACCEPTED} "
                f"(convert float images in [0, 1] with (x * 255).round().to(torch.uint8))"
            )
        if item.dim() != 3 or item.shape[0] != 3:
            raise ValueError(
                f"{where}: tensor of shape {tuple(item.shape)} is not accepted; accepted: "
                f"{_ACCEPTED} (for a grey (1, H, W) tensor use x.expand(3, -1, -1))"
            )
        if item.shape[1] < 1 or item.shape[2] < 1:
            raise ValueError(f"{where}: empty tensor of shape {tuple(item.shape)}")
        if item.device.type != "cpu":
            raise ValueError(f"{where}: tensor on {item.device}; accepted: CPU tensors")
        return item
    raise TypeError(f"{where}: {type(item).__name__} is not accepted; accepted: {_ACCEPTED}")


def check_images(images: Any, where: str = "images") -> list[Image.Image | torch.Tensor]:
    """Validate a batch; returns RGB PIL images / uint8 (3, H, W) tensors (inputs untouched)."""
    if isinstance(images, (torch.Tensor, Image.Image, str, bytes)) or not isinstance(
        images, Sequence
    ):
        raise TypeError(
            f"{where} must be a list or tuple of images, got {type(images).__name__}; "
            f"accepted items: {_ACCEPTED} (wrap a single image in a list; split a (B, 3, H, W) "
            f"tensor with list(batch))"
        )
    if len(images) == 0:
        raise ValueError(f"{where} is empty; pass at least one image ({_ACCEPTED})")
    return [_check_item(item, f"{where}[{i}]") for i, item in enumerate(images)]


def pil_to_hwc(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 (H, W, 3) tensor, with one copy (Pillow's unpacking).

    ``np.asarray`` gives a read-only array over Pillow's bytes, which ``torch.from_numpy``
    warns about, and ``np.array(image)`` unpacks twice (measured: 2x the time of
    ``np.asarray``); DLPack takes the read-only array without a copy or a warning (numpy >= 2).
    The tensor must not be written to.
    """
    pixels = np.asarray(image)
    try:
        return torch.from_dlpack(pixels)
    except (BufferError, TypeError, RuntimeError):  # numpy < 2 refuses read-only exports
        return torch.from_numpy(pixels.copy())


def _tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 (3, H, W) -> RGB PIL image, lossless (a copy; the tensor is not touched)."""
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


# --- the seed's pipelines ---------------------------------------------------------------------
def seed_transform(antialias: bool = True) -> transforms.Compose:
    """The seed's v1 Compose: Resize((224, 224)[, antialias=True]), ToTensor(), Normalize.

    antialias=True is the seed's DataPreprocessor (syntax error fixed), False its
    OptimizedDataset, which omits the argument (torchvision's default, True since 0.17, applies).
    """
    resize = (transforms.Resize((224, 224), antialias=True) if antialias
              else transforms.Resize((224, 224)))
    return transforms.Compose([
        resize,
        transforms.ToTensor(),
        transforms.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    ])


class NaivePreprocessor:
    """The seed's ``DataPreprocessor``: per-image v1 transforms in a Python loop, then stack.

    ``__call__(images)`` / ``process_batch(images)``: list of B images (see the module
    docstring) -> float32 (B, 3, 224, 224), normalised. The transforms of ``self.transform`` run
    one by one only to label them (resize, convert = ToTensor, normalize); the result is the
    Compose's.
    """

    _LABELS = ("resize", "convert", "normalize")

    def __init__(self, antialias: bool = True) -> None:
        self.transform = seed_transform(antialias)

    def process_batch(self, images: Sequence[Any]) -> torch.Tensor:
        checked = check_images(images)
        processed = []
        for img in checked:
            with _stage("convert"):  # only for tensors: the seed's ToTensor needs PIL
                out: Any = _tensor_to_pil(img) if isinstance(img, torch.Tensor) else img
            for step, label in zip(self.transform.transforms, self._LABELS, strict=True):
                with _stage(label):
                    out = step(out)
            processed.append(out)
        with _stage("collate"):
            return torch.stack(processed)

    __call__ = process_batch

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


class SeedOptimizedPreprocessor(NaivePreprocessor):
    """The per-image transform of the seed's ``OptimizedDataset`` (no ``antialias`` argument),
    applied in memory in the same loop: float32 (B, 3, 224, 224). See the module docstring."""

    def __init__(self) -> None:
        super().__init__(antialias=False)


# --- the corrected fast path ------------------------------------------------------------------
def _auto_backend() -> str:
    """"tv" where torchvision resizes uint8 natively (AVX2/AVX512/ARM), else "pil"."""
    native = (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
              or platform.machine() in ("aarch64", "arm64"))
    return "tv" if native else "pil"


def resize_uint8(image: Image.Image | torch.Tensor, size: int, backend: str = "tv") -> torch.Tensor:
    """One checked image (RGB PIL or uint8 (3, H, W)) -> uint8 (3, size, size), antialiased.

    backend "tv": torchvision v2 ``resize`` on uint8 (PIL pixels are unpacked to an (H, W, 3)
    array first and resized as a channels-last view, the layout of torch's fast uint8 kernel);
    "pil": Pillow ``Image.resize(BILINEAR)`` (tensors become PIL images first), bit-identical
    to the seed's v1 ``Resize`` on PIL images; "auto": "tv" where torchvision has its native
    uint8 kernel, else "pil". The result may be a view with channels-last strides; it is never
    the input's storage unless no resize was needed for a tensor.
    """
    if backend == "auto":
        backend = _auto_backend()
    if backend == "pil":
        if isinstance(image, torch.Tensor):
            with _stage("convert"):
                image = _tensor_to_pil(image)
        with _stage("resize"):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
    if isinstance(image, Image.Image):
        with _stage("convert"):
            image = pil_to_hwc(image).permute(2, 0, 1)  # (3, H, W) with HWC strides
    if backend == "pil":
        return image
    with _stage("resize"):
        return F2.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR,
                         antialias=True)


@functools.lru_cache(maxsize=32)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias), float32 (1, 3, 1, 1): (x / 255 - mean) / std == x * scale + bias."""
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * s)).to(torch.float32).view(1, 3, 1, 1)
    bias = (-m / s).to(torch.float32).view(1, 3, 1, 1)
    return scale.to(device), bias.to(device)


def normalize_uint8(
    batch: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    out: torch.Tensor | None = None,
    pin_memory: bool = False,
) -> torch.Tensor:
    """The fused normalise: uint8 (B, 3, H, W) -> `dtype` (B, 3, H, W), on batch's device.

    (x / 255 - mean) / std as one multiply-add x * scale + bias with precomputed per-channel
    float32 scale = 1/(255 std) and bias = -mean/std, computed in float32, rounded once to
    `dtype`. On CUDA that is one kernel, ``torch.addcmul(bias, batch, scale, out=out)``: the
    uint8 -> float conversion happens inside it. On the CPU, torch materialises a float copy of
    a uint8 operand of a mixed-dtype op anyway, so the conversion is written straight into the
    output with ``copy_`` (one pass, also the layout change) and the ``addcmul`` runs in place:
    the same work without a temporary, measured here at 10-12 ms against 18-23 ms for the
    single mixed-dtype addcmul (32 x 3 x 224 x 224, one thread). bfloat16/float16 outputs go
    through a float32 buffer on the CPU (faster than addcmul into a half-precision ``out``).
    out: write here (e.g. a slice of a bigger batch) instead of allocating; else a new tensor,
    channels-last if asked, pinned if pin_memory.
    """
    if not isinstance(batch, torch.Tensor) or batch.dtype != torch.uint8 or batch.dim() != 4 \
            or batch.shape[1] != 3:
        got = (f"{batch.dtype} tensor of shape {tuple(batch.shape)}"
               if isinstance(batch, torch.Tensor) else type(batch).__name__)
        raise ValueError(f"normalize_uint8: batch must be a uint8 (B, 3, H, W) tensor, got {got}")
    scale, bias = _affine(tuple(float(v) for v in mean), tuple(float(v) for v in std),
                          batch.device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if out is None:
        out = torch.empty(batch.shape, dtype=dtype, device=batch.device, memory_format=fmt,
                          pin_memory=pin_memory)
    with _stage("normalize"):
        if batch.device.type != "cpu":
            return torch.addcmul(bias, batch, scale, out=out)
        work = out if out.dtype == torch.float32 else torch.empty(
            batch.shape, dtype=torch.float32, memory_format=fmt)
        work.copy_(batch)
        torch.addcmul(bias, work, scale, out=work)
        if work is not out:
            out.copy_(work)
        return out


@dataclass(frozen=True)
class _Options:
    size: int
    dtype: torch.dtype
    channels_last: bool
    pin_memory: bool
    device: torch.device | None
    normalize_on_device: bool
    resize_backend: str
    num_threads: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _options(size: Any, dtype: Any, channels_last: Any, pin_memory: Any, device: Any,
             normalize_on_device: Any, resize_backend: Any, num_threads: Any, mean: Any,
             std: Any, where: str) -> _Options:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{where}: size must be an int >= 1, got {size!r}")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, dtype)
    if dtype not in OUTPUT_DTYPES:
        raise ValueError(f"{where}: dtype must be one of torch.float32, torch.bfloat16, "
                         f"torch.float16 (or their names), got {dtype!r}")
    if resize_backend not in RESIZE_BACKENDS:
        raise ValueError(f"{where}: resize_backend must be one of {', '.join(RESIZE_BACKENDS)}, "
                         f"got {resize_backend!r}")
    if num_threads is not None and (isinstance(num_threads, bool)
                                    or not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"{where}: num_threads must be None (cores available) or an int >= 1, "
                         f"got {num_threads!r}")
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"{where}: device must be None, a torch.device or a device string "
                             f"such as 'cpu' or 'cuda:0', got {device!r}") from exc
    if pin_memory is None:
        pin_memory = device is not None and device.type == "cuda"
    elif pin_memory and not torch.cuda.is_available():
        raise ValueError(f"{where}: pin_memory=True needs a CUDA device, but "
                         f"torch.cuda.is_available() is False; use pin_memory=None or False")
    stats = []
    for name, value in (("mean", mean), ("std", std)):
        try:
            values = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            values = ()
        if len(values) != 3 or (name == "std" and min(values) <= 0):
            raise ValueError(f"{where}: {name} must be 3 numbers (one per RGB channel)"
                             f"{', all > 0' if name == 'std' else ''}, got {value!r}")
        stats.append(values)
    return _Options(size, dtype, bool(channels_last), bool(pin_memory), device,
                    bool(normalize_on_device),
                    _auto_backend() if resize_backend == "auto" else resize_backend,
                    num_threads, stats[0], stats[1])  # type: ignore[arg-type]


# Thread pools by size, shared by all callers. Threads do not survive fork (DataLoader workers):
# a child must build its own pools, or it would queue work for threads that do not exist.
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOLS.clear)


def _pool(threads: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, "mmperf-preprocess")
        return pool


def _run(opts: _Options, images: Sequence[Any]) -> torch.Tensor:
    checked = check_images(images)
    n, size = len(checked), opts.size
    dev = opts.device  # a CPU device takes the device path too (its copies are no-ops)
    pin_buffer = (opts.pin_memory and dev is not None and dev.type != "cpu"
                  and opts.normalize_on_device)
    with _stage("collate"):
        # (B, S, S, 3) storage seen as (B, 3, S, S): channels-last, the layout of the resized
        # PIL pixels, so each image lands with one contiguous copy.
        buffer = torch.empty((n, size, size, 3), dtype=torch.uint8,
                             pin_memory=pin_buffer).permute(0, 3, 1, 2)

    slots = buffer.permute(0, 2, 3, 1).numpy()  # (B, S, S, 3) view of the same memory

    def fill(i: int) -> None:
        resized = resize_uint8(checked[i], size, opts.resize_backend)
        with _stage("collate"):
            # numpy's copy, not Tensor.copy_: a 150k-element torch copy is an OpenMP parallel
            # region, and one from each pool thread would start an OpenMP team per thread
            # (oversubscription). numpy copies on the calling thread, without the GIL.
            np.copyto(slots[i], resized.permute(1, 2, 0).numpy())

    threads = min(n, opts.num_threads or available_cores())
    if threads == 1:
        for i in range(n):
            fill(i)
    else:
        with _stage("resize"):  # the parallel section; see the module docstring
            for _ in _pool(threads).map(fill, range(n)):
                pass
    if dev is not None and opts.normalize_on_device:
        with _stage("transfer"):  # 1 byte per value instead of 2-4
            buffer = buffer.to(dev, non_blocking=pin_buffer)
        return normalize_uint8(buffer, opts.dtype, opts.channels_last, opts.mean, opts.std)
    out = normalize_uint8(buffer, opts.dtype, opts.channels_last, opts.mean, opts.std,
                          pin_memory=opts.pin_memory)
    if dev is not None:
        with _stage("transfer"):
            out = out.to(dev, non_blocking=opts.pin_memory)
    return out


def batched_preprocess(
    images: Sequence[Any],
    size: int = 224,
    dtype: torch.dtype | str = torch.float32,
    channels_last: bool = False,
    pin_memory: bool | None = None,
    device: torch.device | str | None = None,
    normalize_on_device: bool = True,
    resize_backend: str = "auto",
    num_threads: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """B images of any sizes -> `dtype` (B, 3, size, size), normalised; the fast path.

    size: output side S. dtype: float32, bfloat16 or float16 (or their names).
    channels_last: return a channels-last tensor (same values, NHWC memory).
    pin_memory: pin the host tensor that is copied to the device (None: when `device` is CUDA;
    True needs CUDA). With device None, True pins the returned CPU tensor.
    device: None keeps the result on the CPU; otherwise the batch goes there, as uint8 with the
    normalisation done on the device if normalize_on_device (4x fewer bytes than float32),
    else normalised on the host first.
    resize_backend: "auto", "tv" or "pil" (see the module docstring for the measured choice).
    num_threads: threads resizing images (None: the cores available, at most B; 1: the calling
    thread only).
    """
    opts = _options(size, dtype, channels_last, pin_memory, device, normalize_on_device,
                    resize_backend, num_threads, mean, std, "batched_preprocess")
    return _run(opts, images)


class BatchedPreprocessor:
    """:func:`batched_preprocess` with its options fixed (validated once, at construction).

    ``__call__(images)``: list of B images -> (B, 3, size, size) in `dtype` on `device`.
    """

    def __init__(
        self,
        size: int = 224,
        dtype: torch.dtype | str = torch.float32,
        channels_last: bool = False,
        pin_memory: bool | None = None,
        device: torch.device | str | None = None,
        normalize_on_device: bool = True,
        resize_backend: str = "auto",
        num_threads: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.options = _options(size, dtype, channels_last, pin_memory, device,
                                normalize_on_device, resize_backend, num_threads, mean, std,
                                "BatchedPreprocessor")

    def __call__(self, images: Sequence[Any]) -> torch.Tensor:
        return _run(self.options, images)

    def __repr__(self) -> str:
        o = self.options
        return (f"{type(self).__name__}(size={o.size}, dtype={o.dtype}, "
                f"channels_last={o.channels_last}, pin_memory={o.pin_memory}, device={o.device}, "
                f"normalize_on_device={o.normalize_on_device}, "
                f"resize_backend={o.resize_backend!r}, num_threads={o.num_threads})")


def __getattr__(name: str) -> Any:
    # The disk pipelines import this module, so they are re-exported lazily (no import cycle).
    if name in _LOADING_NAMES:
        from reference import _loading

        return getattr(_loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
