"""pytest-benchmark numbers for reference/preprocess.py (a benchmark, not a timed test).

Run side by side: ``.venv/bin/python -m pytest tests/bench/test_preprocess_bench.py
--benchmark-enable --benchmark-group-by=group``. Under the project's default
``--benchmark-disable`` each case runs once, as a smoke test.

Groups (every case in a group sees the same seeded data, ``mmperf_seed(0)``):

* ``preprocess-memory``: 32 in-memory RGB PIL images, long side 480-800 px (~640 px) ->
  (32, 3, 224, 224): the seed's naive loop, the seed's "optimised" transform, the batched path
  in float32 / bfloat16, and three ablations (one thread; Pillow resize; ``zero_copy=False``,
  which unpacks Pillow's pixels to RGB before resizing).
* ``loader-epoch``: one epoch over 32 JPEGs of 896-1152 px (~1024 px) = one batch of 32: the
  seed's DataLoader (4 workers, float32 workers), the fast loader with its default worker count
  (the cores available; threads), with 4 threads (oversubscribed on a small runner), with DataLoader
  worker processes instead of threads, and both pipelines in the main process
  (``num_workers=0``: the CPU work per epoch, without any parallelism).
* ``loader-epoch-b8``: the same 32 files in 4 batches of 8, where the seed's workers can share
  the epoch too (each DataLoader worker builds whole batches).

Loaders are built once per benchmark with persistent workers, and one warm-up epoch starts the
workers before timing: worker start-up is excluded, because persistent workers pay it once per
training run, not per epoch. ``extra_info`` records images and, when timing is enabled,
images/s at the median.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch

from benchmarks.inputs import close_loader_workers
from pytest_mmperf.data.synthetic import ImageTextBatch, JpegDataset
from reference.preprocess import (
    BatchedPreprocessor,
    NaivePreprocessor,
    SeedOptimizedPreprocessor,
    make_fast_loader,
    make_seed_loader,
)

pytestmark = [
    pytest.mark.mmperf_seed(0),
    pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning"),  # the seed's, on a CPU box
    pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker:UserWarning"),
]
N_IMAGES = 32
MEMORY_SPEC = {"batch_size": N_IMAGES, "min_side": 480, "max_side": 800}
DISK_SPEC = {"batch_size": N_IMAGES, "min_side": 896, "max_side": 1152}


def _record(benchmark: Any, images: int) -> None:
    benchmark.extra_info.update(images=images, threads=torch.get_num_threads())
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["images_per_s"] = images / benchmark.stats.stats.median


PREPROCESSORS: dict[str, Callable[[], Callable[[list[Any]], torch.Tensor]]] = {
    "naive": NaivePreprocessor,
    "seed-optimized": SeedOptimizedPreprocessor,
    "batched-f32": BatchedPreprocessor,
    "batched-bf16": lambda: BatchedPreprocessor(dtype=torch.bfloat16),
    "batched-f32-1thread": lambda: BatchedPreprocessor(num_threads=1),
    "batched-f32-pil-resize": lambda: BatchedPreprocessor(resize_backend="pil"),
    "batched-f32-unpack": lambda: BatchedPreprocessor(zero_copy=False),
}


@pytest.mark.benchmark(group="preprocess-memory")
@pytest.mark.mmperf_batch(**MEMORY_SPEC)
@pytest.mark.parametrize("variant", list(PREPROCESSORS))
def test_bench_preprocess(benchmark: Any, mmperf_batch: ImageTextBatch, variant: str) -> None:
    preprocess = PREPROCESSORS[variant]()
    out = benchmark(preprocess, mmperf_batch.images)
    assert out.shape == (N_IMAGES, 3, 224, 224)
    _record(benchmark, N_IMAGES)


def _bench_epoch(benchmark: Any, loader: Iterable[Any], batch_size: int) -> None:
    def epoch() -> int:
        seen = 0
        for images, captions in loader:
            assert images.shape[1:] == (3, 224, 224) and len(captions) == images.shape[0]
            seen += images.shape[0]
        return seen

    try:
        if not benchmark.disabled:  # warm-up: starts the persistent workers
            assert epoch() == N_IMAGES
        assert benchmark(epoch) == N_IMAGES
    finally:
        close_loader_workers(loader)  # now, not at garbage collection
    benchmark.extra_info["batch_size"] = batch_size
    _record(benchmark, N_IMAGES)


LOADERS: dict[str, Callable[[JpegDataset, int], Iterable[Any]]] = {
    "seed-4workers": lambda ds, b: make_seed_loader(ds.paths, ds.captions, batch_size=b),
    # the seed's per-image work without workers: its CPU cost against fast-main-process
    "seed-main-process": lambda ds, b: make_seed_loader(ds.paths, ds.captions, batch_size=b,
                                                        num_workers=0, persistent_workers=False),
    "fast-default-workers": lambda ds, b: make_fast_loader(ds.paths, ds.captions, batch_size=b),
    "fast-4workers": lambda ds, b: make_fast_loader(ds.paths, ds.captions, batch_size=b,
                                                    num_workers=4),
    "fast-main-process": lambda ds, b: make_fast_loader(ds.paths, ds.captions, batch_size=b,
                                                        num_workers=0),
    "fast-worker-processes": lambda ds, b: make_fast_loader(ds.paths, ds.captions, batch_size=b,
                                                            worker_type="process"),
}


@pytest.mark.benchmark(group="loader-epoch")
@pytest.mark.mmperf_batch(**DISK_SPEC)
@pytest.mark.parametrize("variant", list(LOADERS))
def test_bench_loader_epoch(benchmark: Any, mmperf_jpeg_dataset: JpegDataset,
                            variant: str) -> None:
    _bench_epoch(benchmark, LOADERS[variant](mmperf_jpeg_dataset, N_IMAGES), N_IMAGES)


@pytest.mark.benchmark(group="loader-epoch-b8")
@pytest.mark.mmperf_batch(**DISK_SPEC)
@pytest.mark.parametrize("variant", ["seed-4workers", "fast-default-workers"])
def test_bench_loader_epoch_b8(benchmark: Any, mmperf_jpeg_dataset: JpegDataset,
                               variant: str) -> None:
    _bench_epoch(benchmark, LOADERS[variant](mmperf_jpeg_dataset, 8), 8)
