"""Correctness of the disk pipelines (reference/_loading.py, re-exported by reference.preprocess):
the seed's DataLoader, the fast loader's reduced-size decode (PSNR against the naive full decode),
chunked batches across workers, options, profiler labels, and corrupt files named by path.

6 JPEGs of 500-1200 px; worker processes only where they are the point (each costs a fork).
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import re
from typing import Any

import pytest
import torch
from PIL import Image

from pytest_mmperf.data.synthetic import JpegDataset
from pytest_mmperf.report.stages import stage_breakdown
from reference import _loading
from reference._arrow import arrow_export_available
from reference.preprocess import (
    IMAGENET_STD,
    FastJpegDataset,
    FastLoader,
    NaivePreprocessor,
    SeedDataset,
    make_fast_loader,
    make_seed_loader,
)

pytestmark = [
    pytest.mark.mmperf_batch(batch_size=6, min_side=500, max_side=1200),
    # the seed's pin_memory=True on a machine without an accelerator: kept as written
    pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning"),
    # ... and its 4 workers on fewer cores, the oversubscription the benchmarks measure
    pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker:UserWarning"),
]
MIN_PSNR_DB = 30.0


def _naive(paths: Any) -> torch.Tensor:
    """The naive reference: full-size decode + the seed's per-image loop."""
    return NaivePreprocessor()([Image.open(p).convert("RGB") for p in paths])


def _epoch(loader: Any) -> tuple[torch.Tensor, list[str], list[int]]:
    images, captions, sizes = [], [], []
    for batch, texts in loader:
        images.append(batch)
        captions.extend(texts)
        sizes.append(batch.shape[0])
    return torch.cat(images), captions, sizes


def _psnr_db(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of normalised batches, measured on [0, 1] pixel values."""
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    mse = ((got.float() - want.float()) * std).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse)


# --- the seed's loader ------------------------------------------------------------------------
def test_seed_loader_defaults_are_the_seeds(mmperf_jpeg_dataset: JpegDataset) -> None:
    loader = make_seed_loader(mmperf_jpeg_dataset.paths, mmperf_jpeg_dataset.captions)
    assert isinstance(loader.dataset, SeedDataset)
    assert (loader.batch_size, loader.num_workers, loader.pin_memory,
            loader.persistent_workers) == (32, 4, True, True)
    assert "antialias=True" not in repr(loader.dataset.transform.transforms[0].__dict__)


def test_seed_loader_equals_naive_loop(mmperf_jpeg_dataset: JpegDataset) -> None:
    ds = mmperf_jpeg_dataset
    loader = make_seed_loader(ds.paths, ds.captions, batch_size=4, num_workers=0,
                              pin_memory=False, persistent_workers=False)
    images, captions, sizes = _epoch(loader)
    assert sizes == [4, 2] and captions == list(ds.captions)
    assert torch.equal(images, _naive(ds.paths))


# --- the fast loader --------------------------------------------------------------------------
def test_reduced_decode_keeps_both_sides_at_least_the_target(
        mmperf_jpeg_dataset: JpegDataset) -> None:
    reduced = 0
    for i, path in enumerate(mmperf_jpeg_dataset.paths):
        full = Image.open(path).size
        small = _loading.open_rgb(path, i, reduce_to=224)
        assert small.mode == "RGB" and min(small.size) >= 224, (full, small.size)
        reduced += small.size != full
        assert _loading.open_rgb(path, i).size == full
    assert reduced >= 3  # most of these files decode at 1/2 or 1/4 scale


def test_fast_loader_psnr_against_naive_full_decode(mmperf_jpeg_dataset: JpegDataset) -> None:
    ds = mmperf_jpeg_dataset
    images, captions, sizes = _epoch(make_fast_loader(ds.paths, ds.captions, num_workers=0))
    assert images.shape == (6, 3, 224, 224) and images.dtype == torch.float32
    assert sizes == [6] and captions == list(ds.captions)
    psnr = _psnr_db(images, _naive(ds.paths))
    print(f"\nreduced decode vs naive full decode: PSNR per image (dB) "
          f"{[round(v, 1) for v in psnr.tolist()]}, min {float(psnr.min()):.1f}")
    assert float(psnr.min()) >= MIN_PSNR_DB


def test_fast_loader_without_reduction_matches_naive(mmperf_jpeg_dataset: JpegDataset) -> None:
    ds = mmperf_jpeg_dataset
    images, _, _ = _epoch(make_fast_loader(ds.paths, ds.captions, num_workers=0, reduce=False))
    delta = (images - _naive(ds.paths)).abs()
    print(f"\nfull decode, uint8 resize vs naive: max abs diff {float(delta.max()):.5f}, "
          f"mean abs diff {float(delta.mean()):.6f}")
    assert float(delta.max()) <= 0.02 and float(delta.mean()) <= 0.005


@pytest.mark.parametrize("worker_type", _loading.WORKER_TYPES)
def test_workers_split_each_batch_and_keep_order(mmperf_jpeg_dataset: JpegDataset,
                                                 worker_type: str) -> None:
    ds = mmperf_jpeg_dataset
    loader = make_fast_loader(ds.paths, ds.captions, batch_size=4, num_workers=2,
                              persistent_workers=False, worker_type=worker_type)
    assert len(loader) == 2 and loader.worker_type == worker_type
    assert loader.pinned is False  # no CUDA target
    if worker_type == "process":
        assert loader.loader is not None and loader.loader.worker_init_fn is _loading.worker_init
    else:
        assert loader.loader is None
    images, captions, sizes = _epoch(loader)
    serial, _, _ = _epoch(make_fast_loader(ds.paths, ds.captions, batch_size=6, num_workers=0))
    assert sizes == [4, 2] and captions == list(ds.captions)
    assert torch.equal(images, serial)


def test_default_worker_count_is_the_cores_available(mmperf_jpeg_dataset: JpegDataset) -> None:
    loader = make_fast_loader(mmperf_jpeg_dataset.paths, mmperf_jpeg_dataset.captions)
    assert loader.num_workers == len(os.sched_getaffinity(0)) and loader.worker_type == "thread"
    processes = make_fast_loader(mmperf_jpeg_dataset.paths, mmperf_jpeg_dataset.captions,
                                 worker_type="process")
    assert processes.loader is not None
    assert processes.loader.num_workers == len(os.sched_getaffinity(0))
    assert processes.loader.persistent_workers is True


def test_worker_init_sets_one_torch_thread() -> None:
    # Called directly: torch's own worker loop also sets one thread, so a DataLoader round trip
    # could not tell whether _worker_init works.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _loading.worker_init(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("dtype", "channels_last"), [(torch.bfloat16, True),
                                                      (torch.float16, False)])
def test_fast_loader_options(mmperf_jpeg_dataset: JpegDataset, dtype: torch.dtype,
                             channels_last: bool) -> None:
    ds = mmperf_jpeg_dataset
    want, _, _ = _epoch(make_fast_loader(ds.paths, ds.captions, batch_size=4, num_workers=0))
    got, _, _ = _epoch(make_fast_loader(ds.paths, ds.captions, batch_size=4, num_workers=0,
                                        dtype=dtype, channels_last=channels_last))
    assert got.dtype == dtype
    first = next(iter(make_fast_loader(ds.paths, ds.captions, num_workers=0, dtype=dtype,
                                       channels_last=channels_last)))[0]
    assert first.is_contiguous(memory_format=torch.channels_last if channels_last
                               else torch.contiguous_format)
    rtol = 2**-8 if dtype == torch.bfloat16 else 2**-10
    torch.testing.assert_close(got.float(), want, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("normalize_on_device", [True, False])
def test_fast_loader_device_path_equals_host(mmperf_jpeg_dataset: JpegDataset,
                                             mmperf_device: torch.device,
                                             normalize_on_device: bool) -> None:
    ds = mmperf_jpeg_dataset
    host, _, _ = _epoch(make_fast_loader(ds.paths, ds.captions, num_workers=0))
    loader = make_fast_loader(ds.paths, ds.captions, num_workers=0, device=mmperf_device,
                              normalize_on_device=normalize_on_device)
    assert loader.pinned is (mmperf_device.type == "cuda")
    moved, _, _ = _epoch(loader)
    assert moved.device.type == mmperf_device.type
    torch.testing.assert_close(moved.cpu(), host, rtol=0, atol=1e-6)


def test_stage_labels_of_both_loaders(mmperf_jpeg_dataset: JpegDataset) -> None:
    ds = mmperf_jpeg_dataset
    fast = make_fast_loader(ds.paths[:2], ds.captions[:2], num_workers=0)
    stages = stage_breakdown(lambda: _epoch(fast), repeats=1).stages
    assert {"decode", "resize", "collate", "normalize"} <= set(stages)
    # decoded pixels are resized in place (zero copy) where Pillow can export them
    assert "convert" not in stages or not arrow_export_available()
    seed = make_seed_loader(ds.paths[:2], ds.captions[:2], num_workers=0, pin_memory=False,
                            persistent_workers=False)
    stages = stage_breakdown(lambda: list(seed), repeats=1).stages
    assert {"decode", "resize", "convert", "normalize"} <= set(stages)


# --- accepted and bad files -------------------------------------------------------------------
def test_grayscale_jpeg_is_converted_in_both_datasets(tmp_path: pathlib.Path,
                                                      mmperf_jpeg_dataset: JpegDataset) -> None:
    grey = tmp_path / "grey.jpg"
    Image.open(mmperf_jpeg_dataset.paths[0]).convert("L").save(grey, quality=90)
    seed_image, _ = SeedDataset([grey], ["a"])[0]
    fast_image, _ = FastJpegDataset([grey], ["a"])[0]
    assert seed_image.shape == (3, 224, 224) and fast_image.shape == (3, 224, 224)
    assert torch.equal(fast_image[0], fast_image[2])
    assert torch.equal(seed_image, _naive([grey])[0])


@pytest.fixture
def bad_files(tmp_path: pathlib.Path, mmperf_jpeg_dataset: JpegDataset) -> dict[str, pathlib.Path]:
    data = mmperf_jpeg_dataset.paths[0].read_bytes()
    files = {"truncated": data[: len(data) // 2], "garbage": os.urandom(2000), "empty": b""}
    paths = {}
    for name, payload in files.items():
        paths[name] = tmp_path / f"{name}.jpg"
        paths[name].write_bytes(payload)
    paths["16-bit"] = tmp_path / "deep.png"
    Image.new("I;16", (300, 300), 40000).save(paths["16-bit"])
    return paths


@pytest.mark.parametrize("case", ["truncated", "garbage", "empty", "16-bit"])
@pytest.mark.parametrize("dataset", [SeedDataset, FastJpegDataset])
def test_bad_file_names_its_path(bad_files: dict[str, pathlib.Path],
                                 mmperf_jpeg_dataset: JpegDataset, case: str,
                                 dataset: type[Any]) -> None:
    good = mmperf_jpeg_dataset.paths[1]
    items = dataset([good, good, bad_files[case]], ["a", "b", "c"])
    items[0]  # noqa: B018 (the good file decodes)
    path = re.escape(repr(str(bad_files[case])))
    message = (rf"image 2 \({path}\): PIL image mode 'I;16' is not accepted" if case == "16-bit"
               else rf"cannot decode image 2 \({path}\).*accepted: image files")
    with pytest.raises(ValueError, match=message):
        items[2]


@pytest.mark.parametrize("worker_type", _loading.WORKER_TYPES)
def test_bad_file_in_a_worker_names_its_path(bad_files: dict[str, pathlib.Path],
                                             mmperf_jpeg_dataset: JpegDataset,
                                             worker_type: str) -> None:
    paths = [mmperf_jpeg_dataset.paths[0], bad_files["truncated"]]
    loader = make_fast_loader(paths, ["a", "b"], num_workers=2, persistent_workers=False,
                              worker_type=worker_type)
    before = set(multiprocessing.active_children())
    with pytest.raises(ValueError, match=re.escape(str(bad_files["truncated"]))):
        _epoch(loader)
    # the error stopped the worker processes at once (not at a later garbage collection)
    assert set(multiprocessing.active_children()) <= before


def test_missing_file_raises_file_not_found(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        FastJpegDataset([tmp_path / "missing.jpg"], ["a"])[0]


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"captions": ["only one"]}, ValueError, r"2 image paths but 1 captions"),
    ({"batch_size": 0}, ValueError, r"batch_size must be an int >= 1, got 0"),
    ({"num_workers": -1}, ValueError, r"num_workers must be None .* got -1"),
    ({"size": 0}, ValueError, r"size must be an int >= 1, got 0"),
    ({"resize_backend": "cv2"}, ValueError, r"resize_backend must be one of .*got 'cv2'"),
    ({"dtype": torch.int64}, ValueError, r"dtype must be one of .*got torch.int64"),
    ({"worker_type": "fiber"}, ValueError, r"worker_type must be one of thread, process, "
                                           r"got 'fiber'"),
])
def test_bad_loader_arguments(mmperf_jpeg_dataset: JpegDataset, kwargs: dict[str, Any],
                              error: type[Exception], message: str) -> None:
    args: dict[str, Any] = {"paths": mmperf_jpeg_dataset.paths[:2],
                            "captions": mmperf_jpeg_dataset.captions[:2], "num_workers": 0}
    with pytest.raises(error, match=message):
        make_fast_loader(**{**args, **kwargs})
    if "captions" in kwargs:
        with pytest.raises(error, match=message):
            make_seed_loader(args["paths"], kwargs["captions"])


def test_fast_loader_type(mmperf_jpeg_dataset: JpegDataset) -> None:
    loader = make_fast_loader(mmperf_jpeg_dataset.paths, mmperf_jpeg_dataset.captions,
                              num_workers=0)
    assert isinstance(loader, FastLoader) and isinstance(loader.dataset, FastJpegDataset)
    pixels, caption = loader.dataset[0]
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 224, 224)
    assert caption == mmperf_jpeg_dataset.captions[0]
