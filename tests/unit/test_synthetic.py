"""Unit tests of pytest_mmperf.data.synthetic: specs, images, captions, tokens, features, JPEGs."""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
import zlib
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_mmperf.data import synthetic
from pytest_mmperf.data.synthetic import (
    IMAGE_FORMATS,
    SCALES,
    BatchSpec,
    FeatureBatch,
    FeatureSpec,
    ImageTextBatch,
    SimpleTokenizer,
    default_batch_spec,
    default_feature_spec,
    make_batch,
    make_features,
    write_jpeg_dataset,
)
from pytest_mmperf.data.text import make_caption

# Small images keep the whole module fast on 2 shared cores.
SMALL = BatchSpec(batch_size=3, min_side=32, max_side=96)


# --- BatchSpec --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"batch_size": 0}, "batch_size", ">= 1, got 0"),
        ({"batch_size": 2.5}, "batch_size", "must be an int >= 1, got 2.5"),
        ({"batch_size": True}, "batch_size", "got True"),
        ({"image_size": (0, 5)}, "image_size", "(height, width) with two ints >= 1, got (0, 5)"),
        ({"image_size": (5,)}, "image_size", "got (5,)"),
        ({"image_size": "64x64"}, "image_size", "got '64x64'"),
        ({"min_side": 0}, "min_side", ">= 1, got 0"),
        ({"max_side": 100}, "max_side", ">= min_side (256), got 100"),
        ({"min_aspect": 0}, "min_aspect", "> 0, got 0.0"),
        ({"min_aspect": "wide"}, "min_aspect", "got 'wide'"),
        ({"max_aspect": 0.4}, "max_aspect", ">= min_aspect (0.5), got 0.4"),
        ({"max_aspect": float("nan")}, "max_aspect", "got nan"),
        ({"image_format": "jpeg"}, "image_format", "one of pil, uint8, float, got 'jpeg'"),
        ({"context_length": 0}, "context_length", ">= 1, got 0"),
        ({"min_words": 0}, "min_words", ">= 1, got 0"),
        ({"max_words": 3}, "max_words", ">= min_words (5), got 3"),
    ],
)
def test_batch_spec_rejects_bad_field(overrides: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        BatchSpec(**overrides)
    message = str(info.value)
    assert f"BatchSpec.{field}" in message
    assert fragment in message


def test_batch_spec_normalises_list_image_size_and_is_frozen() -> None:
    spec = BatchSpec(image_size=[48, 64])  # type: ignore[arg-type]  # as a pytest marker gives it
    assert spec.image_size == (48, 64)
    assert hash(spec) == hash(BatchSpec(image_size=(48, 64)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.batch_size = 2  # type: ignore[misc]


def test_batch_spec_replace() -> None:
    base = BatchSpec()
    changed = base.replace(batch_size=2, image_format="uint8")
    assert (changed.batch_size, changed.image_format) == (2, "uint8")
    assert (base.batch_size, base.image_format) == (8, "pil")  # original untouched
    with pytest.raises(ValueError, match="BatchSpec.batch_size"):
        base.replace(batch_size=-1)  # replace validates like the constructor
    with pytest.raises(TypeError) as info:
        base.replace(batch=4, colour="red")
    message = str(info.value)
    assert "'batch'" in message and "'colour'" in message
    assert "valid fields: batch_size, image_size, min_side" in message


# --- images -----------------------------------------------------------------------------------
def _pixels(image: Any) -> np.ndarray:
    """(H, W, 3) uint8 of a PIL image or a (3, H, W) uint8 tensor."""
    if isinstance(image, Image.Image):
        return np.asarray(image)
    pixels: np.ndarray = image.permute(1, 2, 0).numpy()
    return pixels


def test_pil_format() -> None:
    batch = make_batch(SMALL, seed=1)
    assert isinstance(batch, ImageTextBatch) and len(batch) == 3
    for image in batch.images:
        assert isinstance(image, Image.Image) and image.mode == "RGB"


def test_tensor_formats_match_pil_pixels() -> None:
    pil = make_batch(SMALL, seed=2)
    as_uint8 = make_batch(SMALL.replace(image_format="uint8"), seed=2)
    as_float = make_batch(SMALL.replace(image_format="float"), seed=2)
    for image, u8, f32 in zip(pil.images, as_uint8.images, as_float.images, strict=True):
        assert u8.dtype == torch.uint8 and u8.ndim == 3 and u8.shape[0] == 3
        assert u8.is_contiguous()
        assert u8.shape[1:] == (image.height, image.width)
        np.testing.assert_array_equal(_pixels(u8), np.asarray(image))
        assert f32.dtype == torch.float32 and f32.shape == u8.shape and f32.is_contiguous()
        assert float(f32.min()) >= 0.0 and float(f32.max()) <= 1.0
        torch.testing.assert_close(f32, u8.float() / 255.0, rtol=0, atol=0)
    assert pil.image_sizes == as_uint8.image_sizes == as_float.image_sizes


def test_varied_sizes_respect_bounds() -> None:
    spec = BatchSpec(batch_size=40, min_side=8, max_side=64, min_aspect=0.5, max_aspect=2.0)
    sizes = make_batch(spec, seed=3).image_sizes
    long_sides = [max(h, w) for h, w in sizes]
    assert all(8 <= side <= 64 for side in long_sides)
    for h, w in sizes:  # rounding the short side moves W/H by at most half a pixel of it
        slack = 1.0 / min(h, w)
        assert 0.5 * (1 - slack) <= w / h <= 2.0 * (1 + slack)
    # A real distribution, not one size: the range is covered, both orientations occur.
    assert min(long_sides) <= 20 and max(long_sides) >= 52
    landscape = sum(w > h for h, w in sizes)
    assert 8 <= landscape <= 32


def test_narrow_aspect_range_and_fixed_size() -> None:
    wide = make_batch(
        BatchSpec(batch_size=6, min_side=40, max_side=80, min_aspect=1.5, max_aspect=1.6), seed=0
    )
    assert all(1.5 * (1 - 1 / h) <= w / h <= 1.6 * (1 + 1 / h) for h, w in wide.image_sizes)
    fixed = make_batch(BatchSpec(batch_size=3, image_size=(24, 40), image_format="uint8"))
    assert [tuple(t.shape) for t in fixed.images] == [(3, 24, 40)] * 3


def test_images_look_like_photos_not_noise() -> None:
    """Neighbouring pixels correlate strongly (smooth regions), yet the image is not flat."""
    batch = make_batch(BatchSpec(batch_size=2, image_size=(96, 128)), seed=4)
    for image in batch.images:
        grey = np.asarray(image.convert("L"), dtype=np.float64)
        assert grey.std() > 10.0  # not flat
        right = np.corrcoef(grey[:, :-1].ravel(), grey[:, 1:].ravel())[0, 1]
        assert right > 0.6  # white noise would give ~0
        assert len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) > 500  # not a cartoon


def test_jpeg_bytes_per_pixel_is_photo_like() -> None:
    """Default-size images encode at q90 in the range of real photos (measured: 0.26-0.40 for
    two real photos, ~0.33 for these), far from white noise (~0.9) and flat images (~0.02)."""

    def bytes_per_pixel(images: list[Image.Image]) -> float:
        total = 0
        for image in images:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            total += buffer.tell()
        return total / sum(image.width * image.height for image in images)

    batch = make_batch(default_batch_spec("default").replace(batch_size=3), seed=0)
    measured = bytes_per_pixel(batch.images)
    assert 0.15 <= measured <= 0.7, measured
    # Controls that show the bounds discriminate, at the same sizes.
    rng = np.random.default_rng(0)
    noise = [
        Image.fromarray(rng.integers(0, 256, (i.height, i.width, 3), dtype=np.uint8))
        for i in batch.images
    ]
    flat = [Image.new("RGB", i.size, (120, 130, 140)) for i in batch.images]
    assert bytes_per_pixel(noise) > 0.7
    assert bytes_per_pixel(flat) < 0.15


# --- captions and tokens ----------------------------------------------------------------------
def test_captions_lengths_and_distribution() -> None:
    batch = make_batch(SMALL.replace(min_words=3, max_words=9), seed=5)
    assert len(batch.captions) == 3
    for caption in batch.captions:
        assert 3 <= len(caption.split()) <= 9
        assert caption.endswith(".") and caption[0].isupper() and "\t" not in caption
    # Distribution for the default 5..30 words: skewed to short (COCO-like mean ~10-11).
    lengths = [len(make_caption(np.random.default_rng([9, i]), 5, 30).split()) for i in range(400)]
    assert min(lengths) >= 5 and max(lengths) <= 30
    assert 8.0 <= float(np.mean(lengths)) <= 14.0
    assert float(np.median(lengths)) < 17.5  # below the midpoint of 5..30
    assert max(lengths) >= 18  # but with a tail
    vocabulary = {
        w.strip(".,").lower()
        for i in range(100)
        for w in make_caption(np.random.default_rng([9, i]), 5, 30).split()
    }
    assert len(vocabulary) > 200


def test_simple_tokenizer_layout() -> None:
    tokenizer = SimpleTokenizer(vocab_size=1000, context_length=8)
    ids, mask = tokenizer(["A red Dog.", "one two three four five six seven eight"])
    assert ids.dtype == torch.int64 and mask.dtype == torch.int64
    assert ids.shape == mask.shape == (2, 8)

    def word(piece: str) -> int:  # the documented, process-independent id rule
        return 3 + zlib.crc32(piece.encode()) % 997

    expected = [1, word("a"), word("red"), word("dog"), word("."), 2, 0, 0]
    assert ids[0].tolist() == expected
    assert mask[0].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    # Truncated: BOS + 6 words + EOS kept last, no padding.
    assert ids[1].tolist() == [1, *(word(w) for w in "one two three four five six".split()), 2]
    assert mask[1].tolist() == [1] * 8
    assert tokenizer("dog")[0][0, 1] == tokenizer("DOG")[0][0, 1]  # case-insensitive
    assert SimpleTokenizer(context_length=1)(["anything at all"])[0].tolist() == [[2]]


def test_simple_tokenizer_validation() -> None:
    with pytest.raises(ValueError, match="vocab_size must be >= 4, got 3"):
        SimpleTokenizer(vocab_size=3)
    with pytest.raises(ValueError, match="context_length must be >= 1, got 0"):
        SimpleTokenizer(context_length=0)
    with pytest.raises(TypeError, match="caption 1 must be a str, got 5"):
        SimpleTokenizer()(["fine", 5])  # type: ignore[list-item]


def test_batch_tokens_follow_spec_context_length() -> None:
    batch = make_batch(SMALL.replace(context_length=12, max_words=20, min_words=15), seed=6)
    assert batch.input_ids.shape == batch.attention_mask.shape == (3, 12)
    assert (batch.input_ids[:, 0] == 1).all() and (batch.input_ids[:, -1] == 2).all()
    short = make_batch(SMALL.replace(max_words=5, min_words=5), seed=6)  # 5 words + "." < 77
    for ids, mask in zip(short.input_ids, short.attention_mask, strict=True):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # real tokens first, then padding
        assert ids[n - 1] == 2 and (ids[n:] == 0).all()
        assert ((ids[1 : n - 1] >= 3) & (ids[1 : n - 1] < 49408)).all()


class _FakeBatchEncoding(collections.UserDict):  # type: ignore[type-arg]
    """Like transformers.BatchEncoding: a UserDict, not a dict."""


def test_user_tokenizer_mapping_and_tuple() -> None:
    seen: list[list[str]] = []

    def hf_like(captions: list[str]) -> _FakeBatchEncoding:
        seen.append(list(captions))
        ids = torch.arange(len(captions) * 4).reshape(len(captions), 4)
        return _FakeBatchEncoding(input_ids=ids, attention_mask=torch.ones_like(ids))

    batch = make_batch(SMALL, seed=7, tokenizer=hf_like)
    assert seen == [batch.captions]
    assert batch.input_ids.tolist() == torch.arange(12).reshape(3, 4).tolist()
    assert batch.input_ids.dtype == batch.attention_mask.dtype == torch.int64

    def tuple_of_lists(captions: list[str]) -> tuple[list[list[int]], np.ndarray]:
        return [[5, 6]] * len(captions), np.ones((len(captions), 2), dtype=np.int32)

    batch = make_batch(SMALL, tokenizer=tuple_of_lists)
    assert batch.input_ids.tolist() == [[5, 6]] * 3
    assert batch.attention_mask.dtype == torch.int64


@pytest.mark.parametrize(
    ("result", "error", "fragment"),
    [
        (torch.zeros(3, 4, dtype=torch.long), TypeError, "expected a mapping with 'input_ids'"),
        ({"input_ids": [[1, 2]] * 3}, ValueError, "without ['attention_mask']"),
        (([[1, 2], [1], [1, 2, 3]], [[1, 1]] * 3), ValueError, "ragged"),
        (
            (torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool)),
            ValueError,
            "B = 3",
        ),
        (
            (torch.zeros(3, 4, dtype=torch.long), torch.ones(3, 5, dtype=torch.long)),
            ValueError,
            "attention_mask of shape (3, 5)",
        ),
        ((torch.zeros(3, 4), torch.ones(3, 4, dtype=torch.long)), TypeError, "dtype torch.float32"),
        ((torch.zeros(3, 4, dtype=torch.long), torch.full((3, 4), 7)), ValueError, "0 and 1"),
        (("ids", "mask"), TypeError, "input_ids of type str"),
    ],
)
def test_user_tokenizer_bad_output(result: Any, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as info:
        make_batch(SMALL, tokenizer=lambda captions: result)
    assert fragment in str(info.value)
    assert "tokenizer" in str(info.value)


def test_make_batch_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="tokenizer must be callable or None, got 'clip'"):
        make_batch(SMALL, tokenizer="clip")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="spec must be a BatchSpec"):
        make_batch({"batch_size": 2})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed must be an int, got '1'"):
        make_batch(SMALL, seed="1")  # type: ignore[arg-type]


# --- determinism ------------------------------------------------------------------------------
_DIGEST = """
import hashlib
from pytest_mmperf.data.synthetic import BatchSpec, FeatureSpec, make_batch, make_features

def digest(seed):
    h = hashlib.sha256()
    batch = make_batch(BatchSpec(batch_size=3, min_side=24, max_side=72, image_format="uint8"),
                       seed=seed)
    for image in batch.images:
        h.update(repr(tuple(image.shape)).encode()); h.update(image.numpy().tobytes())
    h.update("\\n".join(batch.captions).encode())
    h.update(batch.input_ids.numpy().tobytes()); h.update(batch.attention_mask.numpy().tobytes())
    features = make_features(FeatureSpec(batch_size=2, image_tokens=5, text_tokens=7, dim=8,
                                         heads=2), seed=seed)
    for t in (features.image_tokens, features.text_tokens, features.text_padding_mask):
        h.update(t.numpy().tobytes())
    return h.hexdigest()
"""


def _digest(seed: int) -> str:
    namespace: dict[str, Any] = {}
    exec(_DIGEST, namespace)
    return str(namespace["digest"](seed))


def test_same_seed_same_bytes_in_other_processes() -> None:
    """Two fresh interpreters (different hash seeds) and this one agree byte for byte."""
    script = _DIGEST + textwrap.dedent("""
        import sys
        print(digest(11), "pytest" in sys.modules)
    """)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        for hash_seed in ("1", "2")
    ]
    outputs = [run.communicate(timeout=120)[0].split() for run in runs]
    assert all(run.returncode == 0 for run in runs)
    here = _digest(11)
    assert outputs == [[here, "False"], [here, "False"]]  # synthetic never imports pytest
    assert _digest(12) != here


def test_image_i_independent_of_batch_size() -> None:
    small = make_batch(SMALL.replace(batch_size=2, image_format="uint8"), seed=8)
    large = make_batch(SMALL.replace(batch_size=5, image_format="uint8"), seed=8)
    for a, b in zip(small.images, large.images[:2], strict=False):
        assert torch.equal(a, b)
    assert small.captions == large.captions[:2]
    assert torch.equal(small.input_ids, large.input_ids[:2])
    distinct = {(tuple(image.shape), image.numpy().tobytes()) for image in large.images}
    assert len(distinct) == 5  # and the images differ from each other


def test_negative_seed_accepted_and_distinct() -> None:
    assert make_batch(SMALL, seed=-1).captions != make_batch(SMALL, seed=1).captions
    assert make_batch(SMALL, seed=-1).captions == make_batch(SMALL, seed=-1).captions


# --- features ---------------------------------------------------------------------------------
def test_feature_shapes_and_mask_semantics() -> None:
    spec = FeatureSpec(batch_size=16, image_tokens=9, text_tokens=10, dim=8, heads=2)
    features = make_features(spec, seed=3)
    assert isinstance(features, FeatureBatch)
    assert features.image_tokens.shape == (16, 9, 8) and features.text_tokens.shape == (16, 10, 8)
    assert features.image_tokens.dtype == features.text_tokens.dtype == torch.float32
    mask = features.text_padding_mask
    assert mask.dtype == torch.bool and mask.shape == (16, 10)
    pads = mask.sum(dim=1)
    assert (pads <= 3).all()  # floor(0.3 * 10)
    assert len(set(pads.tolist())) > 1  # varies per row
    for row, n_pad in zip(mask, pads.tolist(), strict=True):  # True only at the end of each row
        assert row.tolist() == [False] * (10 - n_pad) + [True] * n_pad
    assert torch.equal(make_features(spec, seed=3).text_tokens, features.text_tokens)
    assert not torch.equal(make_features(spec, seed=4).text_tokens, features.text_tokens)
    assert abs(float(features.image_tokens.std()) - 1.0) < 0.2  # standard normal


def test_feature_padding_extremes() -> None:
    spec = FeatureSpec(batch_size=32, image_tokens=1, text_tokens=4, dim=4, heads=1)
    assert not make_features(spec.replace(pad_fraction=0.0)).text_padding_mask.any()
    full = make_features(spec.replace(pad_fraction=1.0)).text_padding_mask
    assert (~full).sum(dim=1).min() >= 1  # every row keeps a real token
    assert full.sum(dim=1).max() == 3


def test_feature_dtypes_and_to() -> None:
    spec = default_feature_spec("smoke")
    f32 = make_features(spec, seed=1)
    bf16 = make_features(spec.replace(dtype=torch.bfloat16), seed=1)
    assert bf16.spec.dtype == "bfloat16" and bf16.image_tokens.dtype == torch.bfloat16
    assert torch.equal(bf16.image_tokens, f32.image_tokens.to(torch.bfloat16))  # rounding only
    f64 = f32.to(dtype=torch.float64)
    assert f64.image_tokens.dtype == torch.float64 and f64.spec.dtype == "float64"
    assert f64.text_padding_mask.dtype == torch.bool
    assert f32.image_tokens.dtype == torch.float32 and f32.spec.dtype == "float32"  # unchanged
    moved = f32.to(device="cpu")
    assert moved.image_tokens.device.type == "cpu" and moved.spec == f32.spec
    with pytest.raises(ValueError, match="got 'int8'"):
        f32.to(dtype="int8")
    with pytest.raises(ValueError, match="'banana'"):
        make_features(spec, device="banana")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"heads": 5}, "FeatureSpec.dim (768) must be divisible by FeatureSpec.heads (5)"),
        ({"dim": 0}, "FeatureSpec.dim must be >= 1, got 0"),
        ({"text_tokens": 0}, "FeatureSpec.text_tokens must be >= 1, got 0"),
        (
            {"dtype": "float8"},
            "FeatureSpec.dtype must be one of float32, bfloat16, float16, float64, got 'float8'",
        ),
        ({"pad_fraction": 1.5}, "FeatureSpec.pad_fraction must be in [0, 1], got 1.5"),
    ],
)
def test_feature_spec_validation(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        FeatureSpec(**overrides)
    assert fragment in str(info.value)


def test_feature_spec_replace_unknown_field() -> None:
    with pytest.raises(TypeError, match="unknown field.*'tokens'.*valid fields: batch_size"):
        FeatureSpec().replace(tokens=5)


# --- scales -----------------------------------------------------------------------------------
def test_default_specs_per_scale() -> None:
    assert SCALES == ("smoke", "default", "full")
    assert IMAGE_FORMATS == ("pil", "uint8", "float")
    smoke, default, full = (default_batch_spec(s) for s in SCALES)
    assert (smoke.batch_size, smoke.min_side, smoke.max_side) == (4, 64, 256)
    assert (default.batch_size, default.min_side, default.max_side) == (8, 256, 1024)
    assert (full.batch_size, full.min_side, full.max_side) == (32, 256, 1024)
    assert default == BatchSpec() and default.context_length == 77
    shapes = [
        (f.batch_size, f.image_tokens, f.text_tokens, f.dim, f.heads)
        for f in map(default_feature_spec, SCALES)
    ]
    assert shapes == [(2, 50, 16, 768, 12), (4, 577, 77, 768, 12), (16, 577, 77, 768, 12)]
    for factory in (default_batch_spec, default_feature_spec):
        with pytest.raises(ValueError, match="'huge'; accepted: smoke, default, full"):
            factory("huge")


# --- JPEG datasets ----------------------------------------------------------------------------
JPEG_SPEC = BatchSpec(batch_size=3, min_side=32, max_side=64)


def _snapshot(root: Any) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(root.iterdir())}


def test_jpeg_dataset_contents(tmp_path: Any) -> None:
    dataset = write_jpeg_dataset(tmp_path / "data", JPEG_SPEC, seed=5)
    assert [p.name for p in dataset.paths] == ["img_00000.jpg", "img_00001.jpg", "img_00002.jpg"]
    assert len(dataset) == 3 and dataset.captions_file == tmp_path / "data" / "captions.tsv"
    reference = make_batch(JPEG_SPEC, seed=5)
    assert list(dataset.captions) == reference.captions
    lines = dataset.captions_file.read_text(encoding="utf-8").splitlines()
    assert lines == [
        f"{p.name}\t{c}" for p, c in zip(dataset.paths, reference.captions, strict=True)
    ]
    for path, image in zip(dataset.paths, reference.images, strict=True):
        with Image.open(path) as decoded:
            assert decoded.format == "JPEG" and decoded.size == image.size
            # The same picture up to JPEG loss: luma correlates almost perfectly.
            luma = [np.asarray(i.convert("L"), dtype=np.float64).ravel() for i in (decoded, image)]
            assert np.corrcoef(luma[0], luma[1])[0, 1] > 0.95
    manifest = json.loads(dataset.manifest_file.read_text())
    assert manifest["key"]["seed"] == 5 and manifest["key"]["quality"] == 90
    assert manifest["files"] == {p.name: p.stat().st_size for p in dataset.paths}
    assert 0.0 < manifest["bytes_per_pixel"] < 2.0
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no temp


def test_jpeg_dataset_reused_without_rewriting(tmp_path: Any) -> None:
    first = write_jpeg_dataset(tmp_path, JPEG_SPEC, seed=1)
    before = _snapshot(tmp_path)
    # The output format does not change the files, so it reuses them too.
    second = write_jpeg_dataset(str(tmp_path), JPEG_SPEC.replace(image_format="float"), seed=1)
    assert second == first
    assert _snapshot(tmp_path) == before  # same mtimes and inodes: nothing rewritten


def test_jpeg_dataset_rewritten_when_stale_or_damaged(tmp_path: Any) -> None:
    write_jpeg_dataset(tmp_path, JPEG_SPEC.replace(batch_size=4), seed=1)
    damaged = tmp_path / "img_00001.jpg"
    size = damaged.stat().st_size
    damaged.write_bytes(damaged.read_bytes()[: size // 2])  # a half-written file
    write_jpeg_dataset(tmp_path, JPEG_SPEC.replace(batch_size=4), seed=1)
    assert damaged.stat().st_size == size
    before = _snapshot(tmp_path)
    dataset = write_jpeg_dataset(tmp_path, JPEG_SPEC, seed=2)  # other seed, fewer images
    assert _snapshot(tmp_path) != before
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == [p.name for p in dataset.paths]
    assert json.loads(dataset.manifest_file.read_text())["key"]["seed"] == 2


def test_interrupted_rewrite_is_never_accepted(tmp_path: Any, monkeypatch: Any) -> None:
    write_jpeg_dataset(tmp_path, JPEG_SPEC, seed=1)
    real_image = synthetic._image

    def failing(spec: BatchSpec, entropy: int, index: int) -> Image.Image:
        if index == 1:
            raise KeyboardInterrupt  # the writer dies mid-dataset
        return real_image(spec, entropy, index)

    monkeypatch.setattr(synthetic, "_image", failing)
    with pytest.raises(KeyboardInterrupt):
        write_jpeg_dataset(tmp_path, JPEG_SPEC, seed=2)
    monkeypatch.undo()
    assert not (tmp_path / "manifest.json").exists()  # the old manifest no longer vouches
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    before = _snapshot(tmp_path)
    dataset = write_jpeg_dataset(tmp_path, JPEG_SPEC, seed=1)  # old key: must rewrite, not reuse
    assert _snapshot(tmp_path) != before
    assert list(dataset.captions) == make_batch(JPEG_SPEC, seed=1).captions


def test_jpeg_dataset_validation(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="quality must be an int in \\[1, 100\\], got 0"):
        write_jpeg_dataset(tmp_path, JPEG_SPEC, quality=0)
    with pytest.raises(TypeError, match="spec must be a BatchSpec"):
        write_jpeg_dataset(tmp_path, None)  # type: ignore[arg-type]
