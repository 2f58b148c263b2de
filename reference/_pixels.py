"""Pixel-level building blocks shared by the in-memory and the disk pipelines.

One home for what :mod:`reference.preprocess` (in memory) and :mod:`reference._loading` (from
disk) both need: the ImageNet constants, the accepted PIL modes and RGB conversion, the seed's
v1 transform, the uint8 resize (:func:`resize_uint8`, :func:`resize_into`), the fused normalise
(:func:`normalize_uint8`) and the validated options of the fast paths (:func:`parse_options`).
This module imports neither of them, so neither imports the other through it (no cycle).

Profiler labels (``torch.profiler.record_function``, read by ``pytest_mmperf.report.stages``) are
made by :func:`stage`: ``mmperf::decode`` (file -> pixels), ``mmperf::convert`` (PIL mode -> RGB,
PIL -> uint8 tensor; ``ToTensor`` in the naive loop), ``mmperf::resize``, ``mmperf::collate``
(stack / copy into the batch buffer), ``mmperf::normalize`` (uint8 -> float and the multiply-add),
``mmperf::transfer`` (copy to the device).
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.profiler import record_function
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F2

from reference._arrow import rgbx_view

__all__ = [
    "ACCEPTED", "ACCEPTED_MODES", "IMAGENET_MEAN", "IMAGENET_STD", "OUTPUT_DTYPES",
    "RESIZE_BACKENDS", "STAGES", "Options", "auto_backend", "available_cores",
    "native_uint8_resize", "normalize_uint8", "parse_options", "pil_to_hwc", "resize_into",
    "resize_uint8", "seed_transform", "stage", "tensor_to_pil", "to_rgb",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
STAGES = ("decode", "convert", "resize", "collate", "normalize", "transfer")
RESIZE_BACKENDS = ("auto", "pil", "tv")
OUTPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# 8-bit modes that Image.convert("RGB") maps correctly; wider modes would be clipped to 8 bits.
ACCEPTED_MODES = ("RGB", "1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
ACCEPTED = (
    "RGB PIL images (modes 1, L, LA, P, PA, RGBA, RGBX, CMYK, YCbCr are converted to RGB) or "
    "uint8 CPU tensors of shape (3, H, W)"
)


def stage(name: str) -> AbstractContextManager[Any]:
    """The profiler label of stage `name` (``mmperf::<name>``), or nothing while no profiler
    runs on this thread.

    Why: an idle ``record_function`` still costs microseconds to enter and leave, and the
    batched path labels every image, enough to show in the overhead guard of tests/perf
    (docs/preprocessing.md#stage-labels). The check is torch's per-thread profiler state: pool
    threads, whose ranges a profiler started on the calling thread does not record (torch 2.14,
    CPU), label nothing.
    """
    if not _profiler_enabled():
        return nullcontext()
    return record_function(f"mmperf::{name}")


# torch's own check (private): where a torch lacks it, always label.
_profiler_enabled: Callable[[], bool] = getattr(torch.autograd, "_profiler_enabled",
                                                lambda: True)


def available_cores() -> int:
    """CPU cores this process may run on (affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


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


def pil_to_hwc(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 (H, W, 3) tensor, with one copy (Pillow's unpacking).

    ``np.asarray`` gives a read-only array over Pillow's bytes, which ``torch.from_numpy``
    warns about, and ``np.array(image)`` unpacks twice; DLPack takes the read-only array without
    a copy or a warning (numpy >= 2). The tensor must not be written to. (The fast path avoids
    this copy altogether with :func:`reference._arrow.rgbx_view`; this is its fallback.)
    """
    pixels = np.asarray(image)
    try:
        return torch.from_dlpack(pixels)
    except (BufferError, TypeError, RuntimeError):  # numpy < 2 refuses read-only exports
        return torch.from_numpy(pixels.copy())


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 (3, H, W) -> RGB PIL image, lossless (a copy; the tensor is not touched)."""
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), mode="RGB")


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


# --- resizing ---------------------------------------------------------------------------------
def native_uint8_resize() -> bool:
    """Whether torchvision resizes uint8 natively here (the test of torchvision 0.29's
    ``_do_native_uint8_resize_on_cpu``: CPU capability AVX2/AVX512, or ARM); elsewhere it
    converts to float32 and back, and Pillow is the faster resize."""
    return (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
            or platform.machine() in ("aarch64", "arm64"))


def auto_backend() -> str:
    """"tv" where torchvision resizes uint8 natively (:func:`native_uint8_resize`), else "pil"."""
    return "tv" if native_uint8_resize() else "pil"


def resize_uint8(image: Image.Image | torch.Tensor, size: int, backend: str = "tv") -> torch.Tensor:
    """One checked image (RGB PIL or uint8 (3, H, W)) -> uint8 (3, size, size), antialiased.

    backend "tv": torchvision v2 ``resize`` on uint8 (PIL pixels are unpacked to an (H, W, 3)
    array first and resized as a channels-last view, the layout of torch's fast uint8 kernel);
    "pil": Pillow ``Image.resize(BILINEAR)`` (tensors become PIL images first), bit-identical
    to the seed's v1 ``Resize`` on PIL images; "auto": :func:`auto_backend`. The result may be a
    view with channels-last strides; it is never the input's storage unless no resize was needed
    for a tensor.
    """
    if backend == "auto":
        backend = auto_backend()
    if backend == "pil":
        if isinstance(image, torch.Tensor):
            with stage("convert"):
                image = tensor_to_pil(image)
        with stage("resize"):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
    if isinstance(image, Image.Image):
        with stage("convert"):
            image = pil_to_hwc(image).permute(2, 0, 1)  # (3, H, W) with HWC strides
    if backend == "pil":
        return image
    with stage("resize"):
        return F2.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR,
                         antialias=True)


# The op interpolate(mode="bilinear", antialias=True) runs, through its generated Python binding:
# unlike torch.ops.aten (which keeps the GIL during the call), it releases the GIL, so pool
# threads resize in parallel (through torch.ops, two threads are no faster than one).
_UPSAMPLE_AA_OUT = torch._C._nn._upsample_bilinear2d_aa


def resize_into(image: Image.Image | torch.Tensor, slot: torch.Tensor, backend: str,
                zero_copy: bool = True) -> str:
    """Resize one checked image into `slot`, a uint8 (S, S, 4) view of the batch buffer.

    Channels 0..2 receive R, G, B (antialiased bilinear, the values of :func:`resize_uint8`);
    channel 3 is scratch. Returns the path taken, for the record:

    * ``"rgbx"`` (backend "tv", an RGB PIL image Pillow can export, uint8-native CPU): Pillow's
      own 4-byte pixels (:func:`reference._arrow.rgbx_view`, no copy) are resized as a 4-channel
      channels-last image straight into the slot with torch's uint8 antialiased kernel, the op
      ``interpolate(..., antialias=True)`` dispatches to. No unpacking, no temporary.
    * ``"pil"`` (backend "pil"): Pillow resizes, then only the S x S result is copied.
    * ``"hwc"`` (anything else: tensors, images the export refuses, ``zero_copy=False``):
      :func:`resize_uint8`, then a copy into the slot.

    Copies use numpy (no OpenMP region, no GIL) so they can run on pool threads.
    """
    size = slot.shape[0]
    if isinstance(image, Image.Image) and zero_copy:
        if backend == "tv" and native_uint8_resize():
            view = rgbx_view(image)
            if view is not None:
                with stage("resize"):
                    if view.shape[:2] == slot.shape[:2]:
                        np.copyto(slot.numpy(), view.numpy())
                    else:
                        _UPSAMPLE_AA_OUT(  # type: ignore[call-arg]  # (stubs lack out=)
                            view.permute(2, 0, 1).unsqueeze(0), [size, size], False, None, None,
                            out=slot.permute(2, 0, 1).unsqueeze(0))
                return "rgbx"
        elif backend == "pil":
            with stage("resize"):
                small = image.resize((size, size), Image.Resampling.BILINEAR)
            view = rgbx_view(small)
            if view is not None:
                with stage("collate"):
                    np.copyto(slot.numpy(), view.numpy())
                return "pil"
    resized = resize_uint8(image, size, backend)
    with stage("collate"):
        np.copyto(slot[..., :3].numpy(), resized.permute(1, 2, 0).numpy())
    return "hwc"


# --- the fused normalise ----------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias), float32 (1, 3, 1, 1): (x / 255 - mean) / std == x * scale + bias."""
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * s)).to(torch.float32).view(1, 3, 1, 1)
    bias = (-m / s).to(torch.float32).view(1, 3, 1, 1)
    return scale.to(device), bias.to(device)


@functools.lru_cache(maxsize=32)
def _affine_rows(mean: tuple[float, ...], std: tuple[float, ...], width: int,
                 channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias) of :func:`_affine` repeated along W: float32 (1, 3, 1, width), CPU, in
    the memory layout of the output, so that each row of the output (W values of a channel,
    or channels-last W (R, G, B) triples) meets one contiguous row of each."""
    scale, bias = _affine(mean, std, torch.device("cpu"))
    shape = (1, 3, 1, width)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return (scale.expand(shape).contiguous(memory_format=fmt),
            bias.expand(shape).contiguous(memory_format=fmt))


def normalize_uint8(
    batch: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    out: torch.Tensor | None = None,
    pin_memory: bool = False,
) -> torch.Tensor:
    """The fused normalise: uint8 (B, 3, H, W) (any strides) -> `dtype` (B, 3, H, W).

    (x / 255 - mean) / std as one multiply-add x * scale + bias with precomputed per-channel
    float32 scale = 1/(255 std) and bias = -mean/std, computed in float32, rounded once to
    `dtype`. On CUDA that is one kernel, ``torch.addcmul(bias, batch, scale, out=out)``: the
    uint8 -> float conversion happens inside it.

    On the CPU, torch would materialise a float copy of the uint8 operand of a mixed-dtype op,
    so the conversion is written straight into the output with ``copy_`` (also the layout
    change) and one in-place ``addcmul`` follows: one pass each. Its scale and bias are not
    (1, 3, 1, 1) but repeated along a row of W pixels in the output's memory layout: torch's
    CPU loops are vectorised only while at most one input is broadcast along the innermost
    dimension, and with two (scale and bias) the ``addcmul`` falls back to a scalar loop
    (docs/preprocessing.md#the-fused-normalise); channels-last, that dimension would also be
    just the 3 channels. For the same reason a channels-last output is converted channel by channel
    (a single ``copy_`` would loop over runs of 3 values). The multiply-add is fused (rounded
    once) either way: the values are those of the broadcast ``addcmul``, bit for bit.
    bfloat16/float16 outputs go through a float32 buffer on the CPU (torch would compute a
    multiply-add into a half-precision ``out`` through a float32 temporary anyway).

    out: write here (e.g. a slice of a bigger batch) instead of allocating; else a new tensor,
    channels-last if asked, pinned if pin_memory.
    """
    if not isinstance(batch, torch.Tensor) or batch.dtype != torch.uint8 or batch.dim() != 4 \
            or batch.shape[1] != 3:
        got = (f"{batch.dtype} tensor of shape {tuple(batch.shape)}"
               if isinstance(batch, torch.Tensor) else type(batch).__name__)
        raise ValueError(f"normalize_uint8: batch must be a uint8 (B, 3, H, W) tensor, got {got}")
    key = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if out is None:
        out = torch.empty(batch.shape, dtype=dtype, device=batch.device, memory_format=fmt,
                          pin_memory=pin_memory)
    with stage("normalize"):
        if batch.device.type != "cpu":
            scale, bias = _affine(*key, batch.device)
            return torch.addcmul(bias, batch, scale, out=out)
        work = out if out.dtype == torch.float32 else torch.empty_like(out, dtype=torch.float32)
        channels_inner = work.stride(1) < work.stride(3)  # channels-last: channels vary fastest
        if channels_inner:
            for c in range(3):
                work[:, c].copy_(batch[:, c])
        else:
            work.copy_(batch)
        scale_row, bias_row = _affine_rows(*key, work.shape[3], channels_inner)
        torch.addcmul(bias_row, work, scale_row, out=work)
        if work is not out:
            out.copy_(work)
        return out


# --- options of the fast paths ----------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    """Validated options of :func:`reference.preprocess.batched_preprocess` and the fast loader
    (see there); ``resize_backend`` is resolved ("auto" -> "tv" or "pil")."""

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
    zero_copy: bool = True


def parse_options(size: Any, dtype: Any, channels_last: Any, pin_memory: Any, device: Any,
                  normalize_on_device: Any, resize_backend: Any, num_threads: Any, mean: Any,
                  std: Any, where: str, zero_copy: Any = True) -> Options:
    """Validate the options of a fast path; errors name `where`, the bad value, what is accepted."""
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
    return Options(size, dtype, bool(channels_last), bool(pin_memory), device,
                   bool(normalize_on_device),
                   auto_backend() if resize_backend == "auto" else resize_backend,
                   num_threads, stats[0], stats[1], bool(zero_copy))  # type: ignore[arg-type]
