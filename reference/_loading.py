"""Disk pipelines: the seed's DataLoader as written, and the corrected fast loader.

Re-exported by :mod:`reference.preprocess`; this module imports only :mod:`reference._pixels`
and :mod:`reference._threads`.

* :class:`SeedDataset` + :func:`make_seed_loader`: the seed's ``OptimizedDataset`` and its
  ``DataLoader(batch_size=32, num_workers=4, pin_memory=True, persistent_workers=True)``, kept as
  written: full-size decode and float32 images (4 bytes per value) sent back by the workers.
* :class:`FastJpegDataset` + :func:`make_fast_loader` (-> :class:`FastLoader`): decode straight
  to a reduced size (Pillow ``draft``), resize Pillow's own 4-byte pixels on uint8 (on pool
  threads straight into the batch buffer), one contiguous chunk of each batch per worker, and
  the fused normalise into each chunk's slice of the output batch.

Why Pillow's ``draft`` rather than ``torchvision.io.decode_jpeg``, and why threads rather than
worker processes, with the measurements per machine: docs/preprocessing.md#the-disk-pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from reference._pixels import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_BACKENDS,
    auto_backend,
    available_cores,
    normalize_uint8,
    parse_options,
    resize_into,
    seed_transform,
    stage,
    to_rgb,
)
from reference._threads import pool, pool_supported, split

__all__ = ["WORKER_TYPES", "FastJpegDataset", "FastLoader", "SeedDataset", "make_fast_loader",
           "make_seed_loader", "open_rgb", "worker_init"]

_DECODABLE = "image files that Pillow decodes completely (JPEG, PNG, ...) with 8-bit pixels"


def open_rgb(path: str | os.PathLike[str], index: int, reduce_to: int | None = None,
             ) -> Image.Image:
    """Decode file `path` (item `index` of a dataset) to an RGB PIL image.

    reduce_to: if given, let the JPEG decoder scale down by 1/2, 1/4 or 1/8 while both sides
    stay >= reduce_to (``Image.draft``; no effect on other formats). A truncated or unreadable
    file raises ValueError naming the index and path (Pillow's error is chained); a missing
    file raises FileNotFoundError.
    """
    where = f"image {index} ({os.fspath(path)!r})"
    with stage("decode"):
        try:
            image = Image.open(path)
            if reduce_to is not None:
                image.draft("RGB", (reduce_to, reduce_to))
            image.load()  # decode now, inside the try: truncation is only detected here
        except FileNotFoundError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ValueError(f"cannot decode {where}: {type(exc).__name__}: {exc}; accepted: "
                             f"{_DECODABLE}") from exc
        return to_rgb(image, where)


def _check_pairs(paths: Sequence[Any], captions: Sequence[str], where: str) -> None:
    if len(paths) != len(captions):
        raise ValueError(f"{where}: {len(paths)} image paths but {len(captions)} captions; "
                         f"expected one caption per image")


class SeedDataset(Dataset[tuple[torch.Tensor, str]]):
    """The seed's ``OptimizedDataset``: item i -> (float32 (3, 224, 224) normalised, text i).

    Full-size PIL decode + ``convert('RGB')`` and the seed's v1 transform (Resize without the
    antialias argument, ToTensor, Normalize) per item. Errors: see :func:`open_rgb`.
    """

    _LABELS = ("resize", "convert", "normalize")

    def __init__(self, image_paths: Sequence[str | os.PathLike[str]], text_data: Sequence[str],
                 ) -> None:
        _check_pairs(image_paths, text_data, "SeedDataset")
        self.image_paths = image_paths
        self.text_data = text_data
        self.transform = seed_transform(antialias=False)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, str]:
        image: Any = open_rgb(self.image_paths[idx], idx)
        text = self.text_data[idx]
        for step, label in zip(self.transform.transforms, self._LABELS, strict=True):
            with stage(label):  # the Compose's steps one by one, only to label them
                image = step(image)
        return image, text

    def __len__(self) -> int:
        return len(self.image_paths)


def make_seed_loader(paths: Sequence[str | os.PathLike[str]], captions: Sequence[str],
                     batch_size: int = 32, num_workers: int = 4, pin_memory: bool = True,
                     persistent_workers: bool = True) -> DataLoader[Any]:
    """The seed's DataLoader over :class:`SeedDataset`; batches are [float32 (B, 3, 224, 224),
    list of B captions]. (pin_memory=True warns and does nothing without an accelerator.)

    Kept as written, except that a file that cannot be decoded raises ValueError naming its
    index and path. DataLoader workers build whole batches, so with 32 images and
    ``batch_size=32`` one worker does all the work and the other three idle.
    """
    return DataLoader(SeedDataset(paths, captions), batch_size=batch_size,
                      num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=persistent_workers)


class FastJpegDataset(Dataset[tuple[torch.Tensor, str]]):
    """Item i -> (uint8 (3, size, size), caption i): reduced-size decode, uint8 resize.

    reduce: decode JPEGs at 1/2, 1/4 or 1/8 scale when both sides stay >= size (False: full
    decode); the quality against the full decode is tested (PSNR >= 30 dB).
    resize_backend: "auto", "tv" or "pil" (:func:`resize_uint8`). The tensor may have
    channels-last strides. Errors: see :func:`open_rgb`.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], captions: Sequence[str],
                 size: int = 224, reduce: bool = True, resize_backend: str = "auto") -> None:
        _check_pairs(paths, captions, "FastJpegDataset")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"FastJpegDataset: size must be an int >= 1, got {size!r}")
        if resize_backend not in RESIZE_BACKENDS:
            raise ValueError(f"FastJpegDataset: resize_backend must be one of "
                             f"{', '.join(RESIZE_BACKENDS)}, got {resize_backend!r}")
        self.paths = paths
        self.captions = captions
        self.size = size
        self.reduce = bool(reduce)
        self.resize_backend = auto_backend() if resize_backend == "auto" else resize_backend

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, str]:
        image = open_rgb(self.paths[idx], idx, self.size if self.reduce else None)
        # Resized from Pillow's own 4-byte pixels where possible (no unpacking; see
        # reference._pixels.resize_into); the item is a (3, S, S) view of the (S, S, 4) result.
        slot = torch.empty((self.size, self.size, 4), dtype=torch.uint8)
        resize_into(image, slot, self.resize_backend)
        return slot.permute(2, 0, 1)[:3], self.captions[idx]

    def __len__(self) -> int:
        return len(self.paths)


def _collate(items: list[tuple[torch.Tensor, str]]) -> list[Any]:
    """[(uint8 (3, S, S), caption)] -> [uint8 (n, 3, S, S), captions]; in shared memory in a
    worker (default_collate allocates it there)."""
    with stage("collate"):
        return default_collate(items)  # type: ignore[no-any-return]


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the process workers: one torch intra-op thread per worker.

    Each worker is one process per core, so intra-op threads on top would oversubscribe the
    cores. torch's worker loop sets the same; it is explicit here so that the choice is visible
    where the loader is built.
    """
    torch.set_num_threads(1)


def _split(n: int, parts: int) -> list[int]:
    """n items in `parts` near-equal contiguous chunk sizes (no empty chunk)."""
    parts = max(1, min(parts, n))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


class _ChunkSampler(Sampler[list[int]]):
    """Yields each batch of the sequential order as consecutive index chunks."""

    def __init__(self, n: int, batch_size: int, chunks: int) -> None:
        self.plan = [_split(min(batch_size, n - start), chunks)
                     for start in range(0, n, batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        start = 0
        for sizes in self.plan:
            for size in sizes:
                yield list(range(start, start + size))
                start += size

    def __len__(self) -> int:
        return sum(len(sizes) for sizes in self.plan)


WORKER_TYPES = ("thread", "process")


class FastLoader:
    """Iterates (images, captions): `dtype` (B, 3, S, S) normalised on `device`, list of B str.

    ``worker_type`` "thread" (default): each batch is split into one contiguous chunk of files
    per thread of a pool (:mod:`reference._threads`); a thread decodes its files, resizes each
    straight into its slot of the batch's uint8 (B, S, S, 4) buffer and normalises its chunk
    into its slice of the output. Decoding (Pillow) and resizing (torch) run outside the GIL, so
    threads use the cores without what worker processes cost: no shared-memory segment per
    chunk, no pickling, no collate copy, no wake-up of another process per batch.
    ``"process"``: the DataLoader path (``loader`` is the underlying DataLoader; it yields uint8
    chunks that the main process normalises); use it when per-file work holds the GIL.
    ``len()`` is the number of batches. Built by :func:`make_fast_loader`.
    """

    def __init__(self, dataset: FastJpegDataset, batch_size: int, num_workers: int,
                 pin_memory: bool | None, persistent_workers: bool, dtype: torch.dtype | str,
                 channels_last: bool, device: torch.device | str | None,
                 normalize_on_device: bool, worker_type: str = "thread") -> None:
        self.options = parse_options(dataset.size, dtype, channels_last, pin_memory, device,
                                     normalize_on_device, "auto", None, IMAGENET_MEAN,
                                     IMAGENET_STD, "make_fast_loader")
        if worker_type not in WORKER_TYPES:
            raise ValueError(f"make_fast_loader: worker_type must be one of "
                             f"{', '.join(WORKER_TYPES)}, got {worker_type!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.worker_type = worker_type
        self._sampler = _ChunkSampler(len(dataset), batch_size, max(1, num_workers))
        # Pinned memory only pays when the uint8 chunks are copied to a CUDA device.
        self.target = (self.options.device if self.options.device is not None
                       and self.options.device.type != "cpu" else None)
        pin = self.options.pin_memory and self.target is not None
        self.loader: DataLoader[Any] | None = None
        if worker_type == "process":
            self.loader = DataLoader(
                dataset, batch_sampler=self._sampler, num_workers=num_workers,
                collate_fn=_collate, pin_memory=pin,
                worker_init_fn=worker_init if num_workers > 0 else None,
                persistent_workers=persistent_workers and num_workers > 0)
        self.pinned = pin  # the uint8 pixels copied to the device are pinned

    def __len__(self) -> int:
        return len(self._sampler.plan)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        if self.loader is None:
            for start in range(0, len(self.dataset), self.batch_size):
                stop = min(start + self.batch_size, len(self.dataset))
                yield self._thread_batch(start, stop), list(self.dataset.captions[start:stop])
            return
        o = self.options
        on_device = self.target is not None and o.normalize_on_device
        fmt = torch.channels_last if o.channels_last else torch.contiguous_format
        chunks = iter(self.loader)
        try:
            yield from self._process_batches(chunks, on_device, fmt)
        except Exception:
            # A worker's error (a bad file) ends the epoch: stop its workers now, not when the
            # garbage collector finds the iterator held by the traceback (each worker's join
            # would then wait out its timeout, in whatever test runs next).
            if not self.loader.persistent_workers:
                shutdown = getattr(chunks, "_shutdown_workers", None)
                if shutdown is not None:
                    shutdown()
            raise

    def _process_batches(self, chunks: Iterator[tuple[torch.Tensor, list[str]]], on_device: bool,
                         fmt: torch.memory_format) -> Iterator[tuple[torch.Tensor, list[str]]]:
        """Normalised batches assembled from the DataLoader's uint8 chunks (process workers)."""
        o = self.options
        for sizes in self._sampler.plan:
            shape = (sum(sizes), 3, o.size, o.size)
            out = torch.empty(shape, dtype=o.dtype, memory_format=fmt,
                              device=self.target if on_device else "cpu")
            captions: list[str] = []
            start = 0
            for size in sizes:
                pixels, texts = next(chunks)
                if on_device:
                    with stage("transfer"):
                        pixels = pixels.to(self.target, non_blocking=self.pinned)
                normalize_uint8(pixels, o.dtype, o.channels_last, o.mean, o.std,
                                out=out[start:start + size])
                captions.extend(texts)
                start += size
            if self.target is not None and not on_device:
                with stage("transfer"):
                    out = out.to(self.target)
            yield out, captions

    def _thread_batch(self, first: int, stop: int) -> torch.Tensor:
        """Files [first, stop) -> one normalised batch, decoded and resized on pool threads."""
        o, ds = self.options, self.dataset
        n, size = stop - first, o.size
        on_device = self.target is not None and o.normalize_on_device
        with stage("collate"):
            buffer = torch.empty((n, size, size, 4), dtype=torch.uint8,
                                 pin_memory=self.pinned and on_device)
        pixels = buffer.permute(0, 3, 1, 2)[:, :3]
        out: torch.Tensor | None = None
        if not on_device:
            fmt = torch.channels_last if o.channels_last else torch.contiguous_format
            out = torch.empty((n, 3, size, size), dtype=o.dtype, memory_format=fmt,
                              pin_memory=self.pinned)
        inference = torch.is_inference_mode_enabled()  # per thread: pass the caller's on

        def chunk(bounds: tuple[int, int]) -> None:
            lo, hi = bounds
            with torch.inference_mode(inference):
                for i in range(lo, hi):
                    image = open_rgb(ds.paths[first + i], first + i,
                                     size if ds.reduce else None)
                    resize_into(image, buffer[i], ds.resize_backend)
                if out is not None:
                    normalize_uint8(pixels[lo:hi], o.dtype, o.channels_last, o.mean, o.std,
                                    out=out[lo:hi])

        threads = min(n, self.num_workers) if pool_supported() else 1
        if threads <= 1:
            chunk((0, n))
        else:
            with stage("decode+resize+normalize"):  # pool threads' labels are not seen
                for _ in pool(threads).map(chunk, split(n, threads)):
                    pass
        if on_device:
            with stage("transfer"):
                moved = buffer.to(self.target, non_blocking=self.pinned)
            return normalize_uint8(moved.permute(0, 3, 1, 2)[:, :3], o.dtype, o.channels_last,
                                   o.mean, o.std)
        assert out is not None
        if self.target is not None:
            with stage("transfer"):
                out = out.to(self.target, non_blocking=self.pinned)
        return out


def make_fast_loader(paths: Sequence[str | os.PathLike[str]], captions: Sequence[str],
                     batch_size: int = 32, num_workers: int | None = None,
                     pin_memory: bool | None = None, persistent_workers: bool = True,
                     size: int = 224, dtype: torch.dtype | str = torch.float32,
                     channels_last: bool = False, device: torch.device | str | None = None,
                     normalize_on_device: bool = True, reduce: bool = True,
                     resize_backend: str = "auto", worker_type: str = "thread") -> FastLoader:
    """The corrected loader: :class:`FastJpegDataset`'s work on workers, fused normalise.

    num_workers: None -> the cores available (``os.sched_getaffinity``); 0 -> calling thread.
    More workers than cores only oversubscribe them; with no free core the workers cannot run in
    parallel and the gain falls to the per-image work ratio.
    worker_type: "thread" (a thread pool in this process, the default) or "process"
    (DataLoader worker processes); see :class:`FastLoader`. persistent_workers: processes only.
    pin_memory: None -> pin only when `device` is CUDA. device: None keeps batches on the CPU.
    Other options as in :func:`reference.preprocess.batched_preprocess`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"make_fast_loader: batch_size must be an int >= 1, got {batch_size!r}")
    if num_workers is None:
        num_workers = available_cores()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"make_fast_loader: num_workers must be None (cores available) or an "
                         f"int >= 0, got {num_workers!r}")
    dataset = FastJpegDataset(paths, captions, size, reduce, resize_backend)
    return FastLoader(dataset, batch_size, num_workers, pin_memory, persistent_workers, dtype,
                      channels_last, device, normalize_on_device, worker_type)
