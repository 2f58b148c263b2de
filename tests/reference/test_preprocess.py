"""Correctness of reference/preprocess.py (in memory): the naive loop is the seed's Compose, the
batched fast path equals it within one uint8 step, every option gives the same values, accepted
image modes convert identically in both pipelines, and every bad input names the item.

Images are small (6 per batch, 64-640 px, both smaller and larger than 224) so the file runs in
seconds; ``-s`` shows the measured differences.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from pytest_mmperf.data.synthetic import ImageTextBatch
from pytest_mmperf.report.stages import stage_breakdown
from reference import _pixels
from reference._arrow import arrow_export_available, rgbx_view
from reference.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchedPreprocessor,
    NaivePreprocessor,
    SeedOptimizedPreprocessor,
    batched_preprocess,
    normalize_uint8,
    pool_supported,
)

pytestmark = pytest.mark.mmperf_batch(batch_size=6, min_side=64, max_side=640)
MAX_ABS, MEAN_ABS = 0.02, 0.005  # after normalisation: ~1 uint8 step is 1/(255 * 0.225) = 0.0174


def _diff(name: str, got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    assert got.shape == want.shape, (got.shape, want.shape)
    delta = (got.float().cpu() - want.float().cpu()).abs()
    worst, mean = float(delta.max()), float(delta.mean())
    print(f"\n{name}: max abs diff {worst:.5f}, mean abs diff {mean:.6f}")
    return worst, mean


def _seed_compose_by_hand(images: list[Image.Image]) -> torch.Tensor:
    """The seed's DataPreprocessor typed out again (syntax error fixed), independent of pp."""
    transform = transforms.Compose([
        transforms.Resize((224, 224), antialias=True),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    return torch.stack([transform(img) for img in images])


# --- the seed's pipelines ---------------------------------------------------------------------
def test_naive_is_the_seed_pipeline(mmperf_batch: ImageTextBatch) -> None:
    sizes = mmperf_batch.image_sizes
    assert min(min(s) for s in sizes) < 224 < max(max(s) for s in sizes)  # up- and downscaling
    out = NaivePreprocessor()(mmperf_batch.images)
    assert out.shape == (6, 3, 224, 224) and out.dtype == torch.float32
    assert torch.equal(out, _seed_compose_by_hand(mmperf_batch.images))


def test_seed_optimized_transform_equals_naive_on_pil(mmperf_batch: ImageTextBatch) -> None:
    # The seed's "optimised" transform only drops antialias=True, which v1 Resize ignores for
    # PIL images: the same numbers, hence no in-memory gain (docs/reference-results.md).
    seed_opt = SeedOptimizedPreprocessor()
    assert "antialias=True" in repr(NaivePreprocessor().transform.transforms[0])
    assert torch.equal(seed_opt(mmperf_batch.images), NaivePreprocessor()(mmperf_batch.images))


# --- batched vs naive -------------------------------------------------------------------------
@pytest.mark.parametrize("image_format", ["pil", "uint8"])
@pytest.mark.parametrize("backend", ["tv", "pil"])
def test_batched_matches_naive(mmperf_batch_factory: Callable[..., ImageTextBatch],
                               image_format: str, backend: str) -> None:
    images = mmperf_batch_factory(image_format=image_format).images
    want = NaivePreprocessor()(images)
    got = BatchedPreprocessor(resize_backend=backend)(images)
    assert got.shape == (6, 3, 224, 224) and got.dtype == torch.float32 and got.is_contiguous()
    worst, mean = _diff(f"batched[{backend}] vs naive on {image_format} images", got, want)
    assert worst <= MAX_ABS and mean <= MEAN_ABS
    if backend == "pil":  # same Pillow resize: only the fused normalise's rounding differs
        assert worst <= 1e-5


def test_auto_backend_follows_cpu_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pixels.platform, "machine", lambda: "x86_64")
    for capability, backend in [("AVX512", "tv"), ("AVX2", "tv"), ("DEFAULT", "pil")]:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert BatchedPreprocessor().options.resize_backend == backend, capability


def test_normalize_uint8_is_the_imagenet_formula() -> None:
    pixels = torch.arange(256, dtype=torch.uint8).repeat(2, 3, 1).view(2, 3, 16, 16)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    want = (pixels.double() / 255 - mean) / std
    got = normalize_uint8(pixels)
    assert got.dtype == torch.float32
    assert float((got.double() - want).abs().max()) < 1e-6
    half = normalize_uint8(pixels, dtype=torch.bfloat16, channels_last=True)
    assert half.dtype == torch.bfloat16 and half.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(half.double(), want, rtol=2**-8, atol=0)  # one bf16 rounding


def _uint8_layouts(b: int, h: int, w: int) -> dict[str, torch.Tensor]:
    """The same kind of (B, 3, H, W) uint8 batch in each layout normalize_uint8 receives:
    contiguous, channels 0..2 of the batched path's (B, H, W, 4) buffer, and H/W swapped."""
    gen = torch.Generator().manual_seed(b * 1000 + h * 10 + w)
    return {
        "contiguous": torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=gen),
        "rgbx": torch.randint(0, 256, (b, h, w, 4), dtype=torch.uint8,
                              generator=gen).permute(0, 3, 1, 2)[:, :3],
        "transposed": torch.randint(0, 256, (b, 3, w, h), dtype=torch.uint8,
                                    generator=gen).transpose(2, 3),
    }


@pytest.mark.parametrize("into_slice", [False, True], ids=["new", "out-slice"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["planes", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(4, 224, 224), (3, 17, 33), (2, 1, 5)])
def test_normalize_uint8_equals_torchvision_in_every_layout(
        shape: tuple[int, int, int], dtype: torch.dtype, channels_last: bool,
        into_slice: bool) -> None:
    """Every input layout, output dtype and layout, new or into a slice of a bigger batch (the
    batched path's per-thread chunks): torchvision v2's ToDtype(scale=True) + Normalize within
    float32 rounding (one rounding to `dtype` after it), and bit for bit the one fused
    multiply-add (x * scale + bias) in float32."""
    from torchvision.transforms import v2

    b, h, w = shape
    mean, std = (0.5, 0.4, 0.3), (0.1, 0.2, 0.3)
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    scale = (1.0 / (255.0 * torch.tensor(std, dtype=torch.float64))).float().view(1, 3, 1, 1)
    bias = (-torch.tensor(mean, dtype=torch.float64)
            / torch.tensor(std, dtype=torch.float64)).float().view(1, 3, 1, 1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for layout, pixels in _uint8_layouts(b, h, w).items():
        if into_slice:
            big = torch.empty((b + 2, 3, h, w), dtype=dtype, memory_format=fmt).fill_(torch.nan)
            got = normalize_uint8(pixels, dtype, channels_last, mean, std, out=big[1:b + 1])
            assert got.data_ptr() == big[1].data_ptr()
            assert big[0].isnan().all() and big[-1].isnan().all()  # nothing outside the slice
        else:
            got = normalize_uint8(pixels, dtype, channels_last, mean, std)
            assert got.is_contiguous(memory_format=fmt), layout
        assert got.dtype == dtype and got.shape == (b, 3, h, w), layout
        want = reference(pixels)
        fused = torch.addcmul(bias, pixels.float(), scale)
        assert torch.equal(got, fused.to(dtype)), layout
        rtol = {torch.float32: 0.0, torch.bfloat16: 2**-8, torch.float16: 2**-10}[dtype]
        torch.testing.assert_close(got.float(), want, rtol=rtol, atol=2e-6, msg=layout)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, "bfloat16"])
def test_every_option_gives_the_same_values(mmperf_batch: ImageTextBatch, dtype: Any,
                                            channels_last: bool) -> None:
    want = BatchedPreprocessor(num_threads=1)(mmperf_batch.images)
    got = BatchedPreprocessor(dtype=dtype, channels_last=channels_last)(mmperf_batch.images)
    expected_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    assert got.dtype == expected_dtype and got.shape == want.shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert got.is_contiguous(memory_format=fmt)
    rtol = {torch.float32: 0.0, torch.bfloat16: 2**-8, torch.float16: 2**-10}[expected_dtype]
    torch.testing.assert_close(got.float(), want, rtol=rtol, atol=1e-6)
    _diff(f"{expected_dtype} channels_last={channels_last} vs float32", got, want)


def test_thread_count_does_not_change_the_result(mmperf_batch: ImageTextBatch) -> None:
    one = batched_preprocess(mmperf_batch.images, num_threads=1)
    assert torch.equal(batched_preprocess(mmperf_batch.images, num_threads=3), one)
    assert torch.equal(batched_preprocess(mmperf_batch.images), one)
    with torch.inference_mode():  # pool threads write the caller's inference tensors
        assert torch.equal(batched_preprocess(mmperf_batch.images, num_threads=2), one)
    with torch.no_grad():
        assert torch.equal(batched_preprocess(mmperf_batch.images, num_threads=2), one)


@pytest.mark.parametrize("normalize_on_device", [True, False])
def test_device_path_equals_host_path(mmperf_batch: ImageTextBatch,
                                      mmperf_device: torch.device,
                                      normalize_on_device: bool) -> None:
    host = BatchedPreprocessor()(mmperf_batch.images)
    moved = BatchedPreprocessor(device=mmperf_device,
                                normalize_on_device=normalize_on_device)(mmperf_batch.images)
    assert moved.device.type == mmperf_device.type
    torch.testing.assert_close(moved.cpu(), host, rtol=0, atol=1e-6)


def test_pin_memory_defaults_to_cuda_only() -> None:
    assert BatchedPreprocessor(device="cpu").options.pin_memory is False
    assert BatchedPreprocessor().options.pin_memory is False
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"pin_memory=True needs a CUDA device"):
            BatchedPreprocessor(pin_memory=True)
    else:
        assert BatchedPreprocessor(device="cuda").options.pin_memory is True
        out = BatchedPreprocessor(pin_memory=True)([Image.new("RGB", (50, 40))])
        assert out.is_pinned()


def test_stage_labels(mmperf_batch: ImageTextBatch) -> None:
    batched = stage_breakdown(lambda: batched_preprocess(mmperf_batch.images, num_threads=1),
                              repeats=1)
    # The zero-copy path has no convert stage: Pillow's pixels are resized where they are.
    assert {"resize", "collate", "normalize"} <= set(batched.stages)
    assert "convert" not in batched.stages or not arrow_export_available()
    naive = stage_breakdown(lambda: NaivePreprocessor()(mmperf_batch.images), repeats=1)
    assert {"convert", "resize", "collate", "normalize"} <= set(naive.stages)
    threaded = stage_breakdown(lambda: batched_preprocess(mmperf_batch.images, num_threads=2),
                               repeats=1)
    # pool threads' own labels are not seen: the calling thread labels the parallel section
    assert "resize+normalize" in threaded.stages or not pool_supported()


# --- accepted inputs: converted identically in both pipelines, never mutated ------------------
def _in_mode(image: Image.Image, mode: str) -> Image.Image:
    if mode in ("RGBA", "LA", "PA"):  # a varying alpha channel that must be ignored
        alpha = Image.linear_gradient("L").resize(image.size)
        rgba = image.copy()
        rgba.putalpha(alpha)
        return rgba.convert(mode)
    return image.convert(mode)


@pytest.mark.parametrize("mode", ["L", "1", "LA", "P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr"])
def test_accepted_modes_convert_like_image_convert_rgb(mmperf_batch: ImageTextBatch,
                                                       mode: str) -> None:
    images = [_in_mode(img, mode) for img in mmperf_batch.images[:3]]
    assert {img.mode for img in images} == {mode}
    as_rgb = [img.convert("RGB") for img in images]
    naive, batched = NaivePreprocessor()(images), BatchedPreprocessor()(images)
    assert torch.equal(naive, NaivePreprocessor()(as_rgb))
    assert torch.equal(batched, BatchedPreprocessor()(as_rgb))
    worst, mean = _diff(f"mode {mode}: batched vs naive", batched, naive)
    assert worst <= MAX_ABS and mean <= MEAN_ABS
    if mode in ("L", "1", "LA"):  # grey -> three equal channels (before normalisation)
        pixels = naive * torch.tensor(IMAGENET_STD).view(3, 1, 1) \
            + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        assert float((pixels[:, 0] - pixels[:, 2]).abs().max()) < 1e-5


def test_mixed_pil_and_tensor_batch(mmperf_batch_factory: Callable[..., ImageTextBatch]) -> None:
    pil = mmperf_batch_factory().images
    tensors = mmperf_batch_factory(image_format="uint8").images
    mixed = [pil[0], tensors[1], pil[2], tensors[3]]
    assert torch.equal(BatchedPreprocessor()(mixed), BatchedPreprocessor()(pil[:4]))
    assert torch.equal(NaivePreprocessor()(mixed), NaivePreprocessor()(pil[:4]))


PREPROCESSORS: dict[str, Callable[[Any], torch.Tensor]] = {
    "naive": NaivePreprocessor(),
    "seed-optimized": SeedOptimizedPreprocessor(),
    "batched": BatchedPreprocessor(),
    "batched-pil-1thread": BatchedPreprocessor(resize_backend="pil", num_threads=1),
    "function": batched_preprocess,
}


@pytest.mark.parametrize("name", list(PREPROCESSORS))
def test_inputs_are_not_mutated(mmperf_batch_factory: Callable[..., ImageTextBatch],
                                name: str) -> None:
    pil = mmperf_batch_factory().images[:2]
    tensors = mmperf_batch_factory(image_format="uint8").images[:2]
    square = torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8)  # resize is a no-op
    grey = pil[0].convert("L")
    before = ([img.tobytes() for img in pil], [t.clone() for t in tensors], square.clone(),
              grey.tobytes())
    out = PREPROCESSORS[name]([*pil, *tensors, square, grey])
    out.add_(1.0)  # the result must not share memory with an input either
    assert [img.tobytes() for img in pil] == before[0] and grey.tobytes() == before[3]
    assert all(torch.equal(t, c) for t, c in zip(tensors, before[1], strict=True))
    assert torch.equal(square, before[2]) and grey.mode == "L" and pil[0].mode == "RGB"


# --- bad input --------------------------------------------------------------------------------
def _rgb(width: int = 40, height: int = 30) -> Image.Image:
    return Image.new("RGB", (width, height), (10, 120, 200))


BAD_BATCHES: dict[str, tuple[Any, type[Exception], str]] = {
    "empty": ([], ValueError, r"images is empty; pass at least one image"),
    "bare-tensor": (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), TypeError,
                    r"must be a list or tuple of images, got Tensor.*list\(batch\)"),
    "single-image": (_rgb(), TypeError, r"must be a list or tuple of images, got Image"),
    "16-bit": ([_rgb(), _rgb(), Image.new("I;16", (20, 20))], ValueError,
               r"images\[2\]: PIL image mode 'I;16' is not accepted.*accepted modes: RGB"),
    "32-bit": ([Image.new("I", (20, 20))], ValueError, r"images\[0\]: PIL image mode 'I'"),
    "float-mode": ([_rgb(), Image.new("F", (20, 20))], ValueError, r"images\[1\].*mode 'F'"),
    "float-tensor": ([_rgb(), torch.rand(3, 20, 20)], TypeError,
                     r"images\[1\]: tensor of dtype torch.float32 is not accepted.*uint8"),
    "rank-2": ([torch.zeros(20, 20, dtype=torch.uint8)], ValueError,
               r"images\[0\]: tensor of shape \(20, 20\) is not accepted.*\(3, H, W\)"),
    "rank-4": ([torch.zeros(1, 3, 20, 20, dtype=torch.uint8)], ValueError,
               r"images\[0\]: tensor of shape \(1, 3, 20, 20\)"),
    "one-channel": ([_rgb(), _rgb(), _rgb(), torch.zeros(1, 20, 20, dtype=torch.uint8)],
                    ValueError, r"images\[3\]: tensor of shape \(1, 20, 20\).*expand"),
    "four-channels": ([torch.zeros(4, 20, 20, dtype=torch.uint8)], ValueError,
                      r"images\[0\]: tensor of shape \(4, 20, 20\)"),
    "empty-tensor": ([torch.zeros(3, 0, 20, dtype=torch.uint8)], ValueError,
                     r"images\[0\]: empty tensor of shape \(3, 0, 20\)"),
    "numpy": ([_rgb(), np.zeros((20, 20, 3), np.uint8)], TypeError,
              r"images\[1\]: ndarray is not accepted; accepted: RGB PIL images"),
    "path": (["cat.jpg"], TypeError, r"images\[0\]: str is not accepted"),
}


@pytest.mark.parametrize("name", list(PREPROCESSORS))
@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_bad_batches_name_the_item(name: str, case: str) -> None:
    images, error, message = BAD_BATCHES[case]
    with pytest.raises(error, match=message):
        PREPROCESSORS[name](images)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"size": 0}, r"size must be an int >= 1, got 0"),
    ({"size": 224.0}, r"size must be an int >= 1, got 224.0"),
    ({"dtype": torch.int8}, r"dtype must be one of torch.float32.*got torch.int8"),
    ({"dtype": "half-ish"}, r"dtype must be one of .*got 'half-ish'"),
    ({"resize_backend": "cv2"}, r"resize_backend must be one of auto, pil, tv, got 'cv2'"),
    ({"num_threads": 0}, r"num_threads must be None .* got 0"),
    ({"device": "gpu:x"}, r"device must be None, a torch.device .* got 'gpu:x'"),
    ({"mean": (0.5, 0.5)}, r"mean must be 3 numbers .* got \(0.5, 0.5\)"),
    ({"std": (0.2, 0.0, 0.2)}, r"std must be 3 numbers .*all > 0, got \(0.2, 0.0, 0.2\)"),
])
def test_bad_options_name_the_value(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchedPreprocessor(**kwargs)
    with pytest.raises(ValueError, match=message):
        batched_preprocess([_rgb()], **kwargs)


@pytest.mark.parametrize("batch", [torch.zeros(2, 3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.uint8),
                                   torch.zeros(2, 1, 4, 4, dtype=torch.uint8)])
def test_normalize_uint8_rejects_bad_batches(batch: torch.Tensor) -> None:
    shape = re.escape(str(tuple(batch.shape)))
    with pytest.raises(ValueError, match=rf"uint8 \(B, 3, H, W\).*{shape}"):
        normalize_uint8(batch)


# --- the zero-copy path -----------------------------------------------------------------------
needs_export = pytest.mark.skipif(not arrow_export_available() or not _pixels.native_uint8_resize(),
                                  reason="Pillow without the Arrow export or no native uint8 "
                                         "resize in torch here: the fallback path is tested")


@needs_export
def test_rgbx_view_is_pillows_memory_without_a_copy() -> None:
    image = Image.linear_gradient("L").resize((37, 23)).convert("RGB")
    view = rgbx_view(image)
    assert view is not None and view.shape == (23, 37, 4) and view.dtype == torch.uint8
    assert torch.equal(view[..., :3], torch.from_numpy(np.array(image)))
    want = view[..., :3].clone()
    schema, array = image.__arrow_c_array__()  # a second export sees the same address
    del schema, array
    image.close()
    del image
    assert torch.equal(view[..., :3], want)  # the export keeps Pillow's block alive


def test_rgbx_view_refuses_what_it_cannot_map() -> None:
    assert rgbx_view(Image.new("L", (8, 8))) is None  # 1 byte per pixel
    big = Image.new("RGB", (2900, 2900))  # > Pillow's 16 MB block: rows in several blocks
    assert rgbx_view(big) is None


@needs_export
def test_batched_takes_the_zero_copy_path(mmperf_batch: ImageTextBatch) -> None:
    pre = BatchedPreprocessor()
    pre(mmperf_batch.images)
    assert pre.last_paths == {"rgbx": len(mmperf_batch.images)}
    assert "zero-copy" in pre.strategy
    pre([torch.zeros(3, 30, 40, dtype=torch.uint8)])  # tensors are unpacked already
    assert pre.last_paths == {"hwc": 1}
    pil = BatchedPreprocessor(resize_backend="pil")
    pil(mmperf_batch.images)
    assert pil.last_paths == {"pil": len(mmperf_batch.images)}
    unpack = BatchedPreprocessor(zero_copy=False)  # the ablation: same values, other path
    assert torch.equal(unpack(mmperf_batch.images), pre(mmperf_batch.images))
    assert unpack.last_paths == {"hwc": len(mmperf_batch.images)}
    assert "zero_copy=False" in unpack.strategy and "zero_copy=False" in repr(unpack)


@pytest.mark.parametrize("side", [224, 2900])
def test_batched_matches_naive_on_edge_sizes(side: int) -> None:
    """Exactly S x S (no resize: copied as is) and an image too large for one Pillow block
    (the fallback path) give the naive loop's values."""
    gradient = Image.linear_gradient("L").resize((side, side))
    image = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90),
                                gradient.transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    images = [image, image.resize((300, 200))]
    worst, mean = _diff(f"batched vs naive, {side} px", BatchedPreprocessor()(images),
                        NaivePreprocessor()(images))
    assert worst <= MAX_ABS and mean <= MEAN_ABS
    if side == 224:
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
        assert torch.equal(BatchedPreprocessor(num_threads=1)([image]), normalize_uint8(pixels))


def test_stage_labels_cost_nothing_unprofiled_and_appear_under_a_profiler() -> None:
    """Without a profiler a stage is a no-op context (an idle record_function is not free:
    docs/preprocessing.md#stage-labels); under one, the label is recorded on the profiled
    thread."""
    from contextlib import nullcontext

    from torch.profiler import ProfilerActivity, profile

    from reference._pixels import stage

    assert isinstance(stage("resize"), nullcontext)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with stage("mmperf-test"):
            torch.ones(4).add_(1)
    assert "mmperf::mmperf-test" in {event.name for event in prof.events()}
    assert isinstance(stage("resize"), nullcontext)  # and off again after it
