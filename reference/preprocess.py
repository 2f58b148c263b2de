"""Image preprocessing from the seed article: the naive loop, the seed's "optimisation", the fix.

Every pipeline maps B RGB images of any size (what is accepted: :func:`check_images`) to one
normalised batch (B, 3, S, S), S = 224: antialiased resize to (S, S) (aspect ratio not kept, as
in the seed), scale to [0, 1], ImageNet mean/std normalisation.

* :class:`NaivePreprocessor`: the seed's v1 ``Compose`` image by image, then ``torch.stack``.
* :class:`SeedOptimizedPreprocessor`: the per-image transform of the seed's ``OptimizedDataset``;
  on PIL images it computes exactly what the naive loop computes.
* :func:`batched_preprocess` / :class:`BatchedPreprocessor`: the fix, which does each piece of
  work once: Pillow's own 4-byte pixels read in place (:mod:`reference._arrow`), resized on uint8
  straight into one (B, S, S, 4) batch buffer, and one fused normalise (:func:`normalize_uint8`)
  per contiguous chunk of images, one chunk per pool thread.

Why each piece, and what it measured per machine: docs/preprocessing.md. The disk pipelines
(``SeedDataset``, ``make_seed_loader``, ``FastJpegDataset``, ``make_fast_loader``,
``FastLoader``) live in :mod:`reference._loading` and are re-exported here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from reference._arrow import arrow_export_available
from reference._loading import (
    FastJpegDataset,
    FastLoader,
    SeedDataset,
    make_fast_loader,
    make_seed_loader,
)
from reference._pixels import (
    ACCEPTED,
    ACCEPTED_MODES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OUTPUT_DTYPES,
    RESIZE_BACKENDS,
    STAGES,
    Options,
    available_cores,
    normalize_uint8,
    parse_options,
    pil_to_hwc,
    resize_into,
    resize_uint8,
    seed_transform,
    stage,
    tensor_to_pil,
    to_rgb,
)
from reference._threads import one_intraop_thread, pool, pool_supported, split

__all__ = [
    "ACCEPTED_MODES", "IMAGENET_MEAN", "IMAGENET_STD", "OUTPUT_DTYPES", "RESIZE_BACKENDS",
    "STAGES", "BatchedPreprocessor", "FastJpegDataset", "FastLoader", "NaivePreprocessor",
    "SeedDataset", "SeedOptimizedPreprocessor", "available_cores", "batched_preprocess",
    "check_images", "make_fast_loader", "make_seed_loader", "normalize_uint8",
    "one_intraop_thread", "pil_to_hwc", "pool_supported",
    "resize_uint8", "seed_transform", "to_rgb",
]


# --- validation -------------------------------------------------------------------------------
def _check_item(item: Any, where: str) -> Image.Image | torch.Tensor:
    if isinstance(item, Image.Image):
        if item.width < 1 or item.height < 1:
            raise ValueError(f"{where}: empty PIL image of size {item.size}; accepted: {ACCEPTED}")
        return to_rgb(item, where)
    if isinstance(item, torch.Tensor):
        if item.dtype != torch.uint8:
            raise TypeError(
                f"{where}: tensor of dtype {item.dtype} is not accepted; accepted: {ACCEPTED} "
                f"(convert float images in [0, 1] with (x * 255).round().to(torch.uint8))"
            )
        if item.dim() != 3 or item.shape[0] != 3:
            raise ValueError(
                f"{where}: tensor of shape {tuple(item.shape)} is not accepted; accepted: "
                f"{ACCEPTED} (for a grey (1, H, W) tensor use x.expand(3, -1, -1))"
            )
        if item.shape[1] < 1 or item.shape[2] < 1:
            raise ValueError(f"{where}: empty tensor of shape {tuple(item.shape)}")
        if item.device.type != "cpu":
            raise ValueError(f"{where}: tensor on {item.device}; accepted: CPU tensors")
        return item
    raise TypeError(f"{where}: {type(item).__name__} is not accepted; accepted: {ACCEPTED}")


def check_images(images: Any, where: str = "images") -> list[Image.Image | torch.Tensor]:
    """Validate a batch; returns RGB PIL images / uint8 (3, H, W) tensors (inputs untouched).

    Accepted items (every pipeline accepts and converts the same inputs, identically):

    * ``PIL.Image.Image`` in mode RGB as is; modes 1, L, LA, La, P, PA, RGBA, RGBa, RGBX, CMYK
      and YCbCr are converted with ``Image.convert("RGB")`` (grey -> three equal channels,
      palette -> its colours, alpha dropped, as ``Image.open(path).convert("RGB")`` in the
      seed's dataset does). 16-bit, 32-bit and float modes (I;16*, I, F) are rejected: Pillow
      would clip them to 8 bits.
    * ``torch.Tensor`` of dtype uint8, shape (3, H, W), on the CPU (any strides). The naive
      pipelines turn it into a PIL image first (lossless), since the seed's ``ToTensor`` needs
      PIL.

    Anything else (an empty batch, a bare tensor or image instead of a list, a float tensor, a
    (1, H, W) or (4, H, W) tensor, a 16-bit image) raises TypeError/ValueError naming the item's
    index (``where[i]``) and what is accepted.
    """
    if isinstance(images, (torch.Tensor, Image.Image, str, bytes)) or not isinstance(
        images, Sequence
    ):
        raise TypeError(
            f"{where} must be a list or tuple of images, got {type(images).__name__}; "
            f"accepted items: {ACCEPTED} (wrap a single image in a list; split a (B, 3, H, W) "
            f"tensor with list(batch))"
        )
    if len(images) == 0:
        raise ValueError(f"{where} is empty; pass at least one image ({ACCEPTED})")
    return [_check_item(item, f"{where}[{i}]") for i, item in enumerate(images)]


# --- the seed's pipelines ---------------------------------------------------------------------
class NaivePreprocessor:
    """The seed's ``DataPreprocessor``: per-image v1 transforms in a Python loop, then stack.

    ``Compose([Resize((224, 224), antialias=True), ToTensor(), Normalize(mean, std)])`` image by
    image. The seed writes ``transforms.Resize((224, 224)), antialias=True)``, a syntax error;
    the only fix is the parenthesis.

    ``__call__(images)`` / ``process_batch(images)``: list of B images (:func:`check_images`)
    -> float32 (B, 3, 224, 224), normalised. The transforms of ``self.transform`` run one by one
    only to label them (resize, convert = ToTensor, normalize); the result is the Compose's.
    """

    _LABELS = ("resize", "convert", "normalize")

    def __init__(self, antialias: bool = True) -> None:
        self.transform = seed_transform(antialias)

    def process_batch(self, images: Sequence[Any]) -> torch.Tensor:
        checked = check_images(images)
        processed = []
        for img in checked:
            with stage("convert"):  # only for tensors: the seed's ToTensor needs PIL
                out: Any = tensor_to_pil(img) if isinstance(img, torch.Tensor) else img
            for step, label in zip(self.transform.transforms, self._LABELS, strict=True):
                with stage(label):
                    out = step(out)
            processed.append(out)
        with stage("collate"):
            return torch.stack(processed)

    __call__ = process_batch

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


class SeedOptimizedPreprocessor(NaivePreprocessor):
    """The per-image transform of the seed's ``OptimizedDataset`` (no ``antialias`` argument),
    applied in memory in the same loop: float32 (B, 3, 224, 224).

    On PIL images it computes exactly what :class:`NaivePreprocessor` computes (v1 ``Resize``
    always antialiases PIL images): the seed's only change is moving the work into DataLoader
    workers (:mod:`reference._loading`), so in memory it gains nothing.
    """

    def __init__(self) -> None:
        super().__init__(antialias=False)


# --- threads ---------------------------------------------------------------------------------
def resize_threads(opts: Options, batch_size: int) -> int:
    """Threads that resize a batch of `batch_size`: num_threads (None: the cores available), at
    most one per image, and 1 where :func:`pool_supported` is False."""
    if not pool_supported():
        return 1
    return max(1, min(batch_size, opts.num_threads or available_cores()))


# --- the corrected fast path ------------------------------------------------------------------
def _run(opts: Options, images: Sequence[Any], paths: Counter[str] | None = None,
         ) -> torch.Tensor:
    checked = check_images(images)
    n, size = len(checked), opts.size
    dev = opts.device  # a CPU device takes the device path too (its copies are no-ops)
    pin_buffer = (opts.pin_memory and dev is not None and dev.type != "cpu"
                  and opts.normalize_on_device)
    with stage("collate"):
        # (B, S, S, 4): one 4-byte pixel per position, the layout of Pillow's memory and of
        # torch's uint8 resize kernel; channels 0..2 are the image, channel 3 scratch.
        buffer = torch.empty((n, size, size, 4), dtype=torch.uint8, pin_memory=pin_buffer)
    taken: list[str] = [""] * n
    pixels = buffer.permute(0, 3, 1, 2)[:, :3]  # (B, 3, S, S) view of channels 0..2
    on_device = dev is not None and opts.normalize_on_device
    out: torch.Tensor | None = None

    def fill(i: int) -> None:
        taken[i] = resize_into(checked[i], buffer[i], opts.resize_backend, opts.zero_copy)

    threads = resize_threads(opts, n)
    if threads == 1:
        for i in range(n):
            fill(i)
    else:
        # One contiguous chunk of images per thread: resize each into the buffer, then normalise
        # the chunk (one fused normalise per chunk, while its pixels are still in the cache).
        # One join at the end instead of an OpenMP barrier per op.
        if not on_device:
            fmt = torch.channels_last if opts.channels_last else torch.contiguous_format
            out = torch.empty((n, 3, size, size), dtype=opts.dtype, memory_format=fmt,
                              pin_memory=opts.pin_memory)

        # Inference mode is per thread: tensors made here under the caller's inference mode
        # may only be written in place under it, so the pool threads enter the same mode.
        inference = torch.is_inference_mode_enabled()

        def chunk(bounds: tuple[int, int]) -> None:
            lo, hi = bounds
            with torch.inference_mode(inference):
                for i in range(lo, hi):
                    fill(i)
                if out is not None:
                    normalize_uint8(pixels[lo:hi], opts.dtype, opts.channels_last, opts.mean,
                                    opts.std, out=out[lo:hi])

        with stage("resize" if out is None else "resize+normalize"):  # see BatchedPreprocessor
            for _ in pool(threads).map(chunk, split(n, threads)):
                pass
    if paths is not None:
        paths.clear()
        paths.update(taken)
    if on_device:
        with stage("transfer"):  # 1 byte per value instead of 2-4 (plus the scratch channel)
            buffer = buffer.to(dev, non_blocking=pin_buffer)
        return normalize_uint8(buffer.permute(0, 3, 1, 2)[:, :3], opts.dtype, opts.channels_last,
                               opts.mean, opts.std)
    if out is None:
        out = normalize_uint8(pixels, opts.dtype, opts.channels_last, opts.mean, opts.std,
                              pin_memory=opts.pin_memory)
    if dev is not None:
        with stage("transfer"):
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
    zero_copy: bool = True,
) -> torch.Tensor:
    """B images of any sizes -> `dtype` (B, 3, size, size), normalised; the fast path.

    size: output side S. dtype: float32, bfloat16 or float16 (or their names).
    channels_last: return a channels-last tensor (same values, NHWC memory).
    pin_memory: pin the host tensor that is copied to the device (None: when `device` is CUDA;
    True needs CUDA). With device None, True pins the returned CPU tensor.
    device: None keeps the result on the CPU; otherwise the batch goes there, as uint8 with the
    normalisation done on the device if normalize_on_device (4x fewer bytes than float32),
    else normalised on the host first.
    resize_backend: "auto" (torch's uint8 resize where it is native, see
    :func:`reference._pixels.auto_backend`, else Pillow), "tv" or "pil".
    num_threads: threads resizing images (None: the cores available, at most B; 1: the calling
    thread only); each resizes and normalises a contiguous chunk of images with one torch
    intra-op thread (why: :mod:`reference._threads`), and one join replaces an OpenMP barrier
    per op.
    zero_copy: read Pillow's pixels in place (:mod:`reference._arrow`) where possible; False
    forces the unpack-then-resize path (an ablation: same values, slower).
    """
    opts = parse_options(size, dtype, channels_last, pin_memory, device, normalize_on_device,
                         resize_backend, num_threads, mean, std, "batched_preprocess", zero_copy)
    return _run(opts, images)


class BatchedPreprocessor:
    """:func:`batched_preprocess` with its options fixed (validated once, at construction).

    ``__call__(images)``: list of B images -> (B, 3, size, size) in `dtype` on `device`.
    ``last_paths``: how many images of the last call took each path of
    :func:`reference._pixels.resize_into` (``"rgbx"``; ``"pil"``; ``"hwc"`` where the zero-copy
    export is unavailable: Pillow < 11.2, very large images stored in several blocks, tensors).
    :attr:`strategy` names the choices made for this machine, so a report can show them.

    Profiler labels (:func:`reference._pixels.stage`): labels on pool threads are not recorded
    by a profiler started on the calling thread, so with a pool the calling thread labels the
    whole parallel section ``mmperf::resize+normalize`` (``mmperf::resize`` when the
    normalisation runs on a device); with ``num_threads=1`` every stage has its own label.
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
        zero_copy: bool = True,
    ) -> None:
        self.options = parse_options(size, dtype, channels_last, pin_memory, device,
                                     normalize_on_device, resize_backend, num_threads, mean, std,
                                     "BatchedPreprocessor", zero_copy)
        self.last_paths: Counter[str] = Counter()

    def __call__(self, images: Sequence[Any]) -> torch.Tensor:
        return _run(self.options, images, self.last_paths)

    @property
    def strategy(self) -> str:
        """The choices made for this machine, in words (for reports and logs)."""
        o = self.options
        if o.resize_backend == "pil":
            pixels = "Pillow resize, then only S x S pixels copied"
        elif arrow_export_available() and o.zero_copy:
            pixels = "Pillow pixels zero-copy (Arrow C interface), torch uint8 resize on RGBX"
        else:
            pixels = "Pillow pixels unpacked to RGB (no Arrow export or zero_copy=False), " \
                     "torch uint8 resize"
        pool = o.num_threads or available_cores()
        if pool == 1:
            threads = "images resized on the calling thread (torch's intra-op threads)"
        elif pool_supported():
            threads = f"up to {pool} resize threads x 1 intra-op thread"
        else:
            threads = ("images resized on the calling thread (no OpenMP runtime found to "
                       "limit pool threads to one intra-op thread)")
        return f"{pixels}; {threads}"

    def __repr__(self) -> str:
        o = self.options
        return (f"{type(self).__name__}(size={o.size}, dtype={o.dtype}, "
                f"channels_last={o.channels_last}, pin_memory={o.pin_memory}, device={o.device}, "
                f"normalize_on_device={o.normalize_on_device}, "
                f"resize_backend={o.resize_backend!r}, num_threads={o.num_threads}, "
                f"zero_copy={o.zero_copy})")
