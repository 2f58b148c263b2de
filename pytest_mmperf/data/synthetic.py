"""Seeded synthetic image-text data: batches, fusion features, JPEG datasets, a tokenizer.

Everything here is a pure function of (spec, seed): the same spec and seed give byte-identical
pixels, captions, token ids and feature tensors in any process, because every draw comes from a
``numpy.random.default_rng`` / ``torch.Generator`` seeded explicitly (never global RNG state or
``hash()``). Image ``i`` is drawn from its own generator seeded with (seed, i), so it is the same
whatever the batch size, and a JPEG dataset of N images starts with the images of any smaller one.
Images look like photographs to a codec (:mod:`pytest_mmperf.data.images`; how they compress
and what they cost to make: docs/measurements.md#synthetic-data).

Scales (the ``scale`` setting): ``smoke`` is quick (4 images of 64-256 px; features B=2, 50
image and 16 text tokens), ``default`` is realistic (8 images of 256-1024 px; CLIP ViT-L/14 at
336 px features: B=4, 577 image tokens, 77 text tokens, D=768, 12 heads) and ``full`` is a real
batch (32 images; features B=16).
"""

from __future__ import annotations

import dataclasses
import io
import json
import numbers
import os
import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from pytest_mmperf.constants import SCALES
from pytest_mmperf.data.images import render_image, sample_size
from pytest_mmperf.data.text import SimpleTokenizer, make_caption, normalise_tokenizer_output
from pytest_mmperf.files import write_atomic

__all__ = [
    "FEATURE_DTYPES",
    "IMAGE_FORMATS",
    "SCALES",
    "BatchSpec",
    "FeatureBatch",
    "FeatureSpec",
    "ImageTextBatch",
    "JpegDataset",
    "SimpleTokenizer",
    "default_batch_spec",
    "default_feature_spec",
    "make_batch",
    "make_features",
    "write_jpeg_dataset",
]

IMAGE_FORMATS = ("pil", "uint8", "float")
FEATURE_DTYPES = ("float32", "bfloat16", "float16", "float64")

# Independent random streams per purpose, so adding a draw to one never shifts the other.
_IMAGE_STREAM = 0x696D67  # "img"
_CAPTION_STREAM = 0x747874  # "txt"
# Bump when the image/caption generators change, so cached JPEG datasets are rewritten.
_GENERATOR_VERSION = 1
_MANIFEST = "manifest.json"
_CAPTIONS = "captions.tsv"
_IMAGE_NAME = re.compile(r"img_\d+\.jpg")


# --- validation helpers -----------------------------------------------------------------------
def _int_field(owner: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{owner}.{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _float_field(owner: str, name: str, value: Any, accepted: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{owner}.{name} must be a number {accepted}, got {value!r}")
    return float(value)


def _seed_entropy(seed: Any, where: str) -> int:
    """Validate a seed (any int, negatives included) and map it to the 64-bit entropy used."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{where}: seed must be an int, got {seed!r}")
    return int(seed) % 2**64


_SpecT = TypeVar("_SpecT", bound="_Replaceable")


class _Replaceable:
    """``replace(**overrides)`` for frozen spec dataclasses, rejecting unknown field names."""

    def replace(self: _SpecT, **overrides: Any) -> _SpecT:
        valid = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}.replace() got unknown field(s) "
                f"{', '.join(map(repr, unknown))}; valid fields: {', '.join(valid)}"
            )
        return dataclasses.replace(self, **overrides)  # type: ignore[type-var]


# --- image + text batches ---------------------------------------------------------------------
@dataclass(frozen=True)
class BatchSpec(_Replaceable):
    """What :func:`make_batch` generates. Frozen; validated on construction (ValueError).

    image_size: fixed (H, W) for every image, or None for varied realistic sizes: the long side
    uniform in [min_side, max_side] and the aspect ratio W/H log-uniform in [min_aspect,
    max_aspect]. A list (as written in a pytest marker) is accepted and stored as a tuple.
    image_format: "pil" (RGB PIL images), "uint8" (torch uint8 (3, H, W)) or "float" (torch
    float32 (3, H, W) in [0, 1]). context_length: token positions L of the built-in tokenizer.
    min_words/max_words: caption length range, skewed to short captions.
    """

    batch_size: int = 8
    image_size: tuple[int, int] | None = None
    min_side: int = 256
    max_side: int = 1024
    min_aspect: float = 0.5
    max_aspect: float = 2.0
    image_format: str = "pil"
    context_length: int = 77
    min_words: int = 5
    max_words: int = 30

    def __post_init__(self) -> None:
        owner = "BatchSpec"
        fix = object.__setattr__  # normalising a frozen dataclass's own fields
        fix(self, "batch_size", _int_field(owner, "batch_size", self.batch_size, 1))
        size = self.image_size
        if size is not None:
            if (
                not isinstance(size, (tuple, list))
                or len(size) != 2
                or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in size)
                or min(size) < 1
            ):
                raise ValueError(
                    f"{owner}.image_size must be None (varied sizes) or (height, width) with two "
                    f"ints >= 1, got {size!r}"
                )
            fix(self, "image_size", (int(size[0]), int(size[1])))
        fix(self, "min_side", _int_field(owner, "min_side", self.min_side, 1))
        fix(self, "max_side", _int_field(owner, "max_side", self.max_side, 1))
        if self.max_side < self.min_side:
            raise ValueError(
                f"{owner}.max_side must be >= min_side ({self.min_side}), got {self.max_side}"
            )
        min_aspect = _float_field(owner, "min_aspect", self.min_aspect, "> 0")
        max_aspect = _float_field(owner, "max_aspect", self.max_aspect, ">= min_aspect")
        if not min_aspect > 0.0 or min_aspect == float("inf"):
            raise ValueError(f"{owner}.min_aspect must be a finite number > 0, got {min_aspect!r}")
        if not min_aspect <= max_aspect < float("inf"):
            raise ValueError(
                f"{owner}.max_aspect must be finite and >= min_aspect ({min_aspect}), "
                f"got {max_aspect!r}"
            )
        fix(self, "min_aspect", min_aspect)
        fix(self, "max_aspect", max_aspect)
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"{owner}.image_format must be one of {', '.join(IMAGE_FORMATS)}, "
                f"got {self.image_format!r}"
            )
        fix(self, "context_length", _int_field(owner, "context_length", self.context_length, 1))
        fix(self, "min_words", _int_field(owner, "min_words", self.min_words, 1))
        fix(self, "max_words", _int_field(owner, "max_words", self.max_words, 1))
        if self.max_words < self.min_words:
            raise ValueError(
                f"{owner}.max_words must be >= min_words ({self.min_words}), got {self.max_words}"
            )


@dataclass
class ImageTextBatch:
    """B images with captions and tokens.

    images: B RGB ``PIL.Image`` or B tensors (3, H_i, W_i) (uint8, or float32 in [0, 1]), per
    ``spec.image_format``; sizes vary per image unless ``spec.image_size`` is set.
    input_ids / attention_mask: (B, L) int64; L = spec.context_length for the built-in
    tokenizer (a user tokenizer decides its own L); attention_mask is 1 on real tokens.
    """

    images: list[Any]
    captions: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    spec: BatchSpec
    seed: int

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each image."""
        if self.spec.image_format == "pil":
            return [(image.height, image.width) for image in self.images]
        return [(int(image.shape[1]), int(image.shape[2])) for image in self.images]


def _image(spec: BatchSpec, entropy: int, index: int) -> Image.Image:
    """Image `index` of (spec, seed) as RGB PIL image; independent of spec.batch_size."""
    rng = np.random.default_rng([entropy, _IMAGE_STREAM, index])
    if spec.image_size is not None:
        height, width = spec.image_size
    else:
        height, width = sample_size(
            rng, spec.min_side, spec.max_side, spec.min_aspect, spec.max_aspect
        )
    return render_image(rng, height, width)


def _caption(spec: BatchSpec, entropy: int, index: int) -> str:
    rng = np.random.default_rng([entropy, _CAPTION_STREAM, index])
    return make_caption(rng, spec.min_words, spec.max_words)


def _convert(image: Image.Image, image_format: str) -> Any:
    if image_format == "pil":
        return image
    pixels = np.array(image)  # (H, W, 3) uint8, a writable copy (np.asarray would be read-only)
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
    if image_format == "float":
        return tensor.to(torch.float32).div_(255.0)  # exactly the uint8 values, scaled
    return tensor


def make_batch(
    spec: BatchSpec | None = None,
    seed: int = 0,
    tokenizer: Callable[[list[str]], Any] | None = None,
) -> ImageTextBatch:
    """Generate an :class:`ImageTextBatch` for `spec` (default ``BatchSpec()``) and `seed`.

    tokenizer: None for :class:`SimpleTokenizer` with ``spec.context_length``, or a callable
    taking the list of B captions and returning either a mapping with ``input_ids`` and
    ``attention_mask`` (a Hugging Face tokenizer called with ``padding`` and
    ``return_tensors="pt"``; wrap it with ``functools.partial``) or a tuple (input_ids,
    attention_mask); tensors, numpy arrays or equal-length lists, shape (B, L).
    """
    spec = BatchSpec() if spec is None else spec
    if not isinstance(spec, BatchSpec):
        raise TypeError(f"make_batch: spec must be a BatchSpec or None, got {spec!r}")
    entropy = _seed_entropy(seed, "make_batch")
    images = [_convert(_image(spec, entropy, i), spec.image_format) for i in range(spec.batch_size)]
    captions = [_caption(spec, entropy, i) for i in range(spec.batch_size)]
    if tokenizer is None:
        input_ids, attention_mask = SimpleTokenizer(context_length=spec.context_length)(captions)
    elif callable(tokenizer):
        output = tokenizer(captions)
        input_ids, attention_mask = normalise_tokenizer_output(output, len(captions), tokenizer)
    else:
        raise TypeError(f"make_batch: tokenizer must be callable or None, got {tokenizer!r}")
    return ImageTextBatch(images, captions, input_ids, attention_mask, spec, int(seed))


def copy_batch(batch: ImageTextBatch) -> ImageTextBatch:
    """An independent copy of ``batch``: PIL images copied, tensors cloned, captions a new list
    (changing one does not change the other). Far cheaper than generating the batch again
    (docs/measurements.md#synthetic-data)."""
    images = [image.clone() if isinstance(image, torch.Tensor) else image.copy()
              for image in batch.images]
    return dataclasses.replace(batch, images=images, captions=list(batch.captions),
                               input_ids=batch.input_ids.clone(),
                               attention_mask=batch.attention_mask.clone())


_ScaledSpec = TypeVar("_ScaledSpec")


def _spec_for_scale(spec_type: Callable[..., _ScaledSpec], overrides: dict[str, dict[str, Any]],
                    scale: str) -> _ScaledSpec:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; accepted: {', '.join(SCALES)}")
    return spec_type(**overrides.get(scale, {}))


def default_batch_spec(scale: str = "default") -> BatchSpec:
    """The BatchSpec of a scale: smoke (4 images, 64-256 px), default (8, 256-1024), full (32)."""
    return _spec_for_scale(BatchSpec, {"smoke": {"batch_size": 4, "min_side": 64,
                                                 "max_side": 256},
                                       "full": {"batch_size": 32}}, scale)


# --- fusion features --------------------------------------------------------------------------
def _dtype_name(dtype: Any, where: str) -> str:
    name = str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else dtype
    if name not in FEATURE_DTYPES:
        raise ValueError(f"{where} must be one of {', '.join(FEATURE_DTYPES)}, got {dtype!r}")
    return str(name)


@dataclass(frozen=True)
class FeatureSpec(_Replaceable):
    """Token embeddings for fusion code; defaults are CLIP ViT-L/14 at 336 px with CLIP text.

    dtype: "float32" | "bfloat16" | "float16" | "float64" (a torch.dtype is accepted and stored
    by name). pad_fraction: the largest fraction of text positions that are padding; each row
    draws its own padding count in [0, floor(pad_fraction * text_tokens)], keeping >= 1 real token.
    """

    batch_size: int = 4
    image_tokens: int = 577
    text_tokens: int = 77
    dim: int = 768
    heads: int = 12
    dtype: str = "float32"
    pad_fraction: float = 0.3

    def __post_init__(self) -> None:
        owner = "FeatureSpec"
        for name in ("batch_size", "image_tokens", "text_tokens", "dim", "heads"):
            object.__setattr__(self, name, _int_field(owner, name, getattr(self, name), 1))
        if self.dim % self.heads:
            raise ValueError(
                f"{owner}.dim ({self.dim}) must be divisible by {owner}.heads ({self.heads}); "
                f"accepted heads for dim {self.dim}: a divisor such as "
                f"{', '.join(str(h) for h in (1, 2, 4, 8, 12, 16) if self.dim % h == 0)}"
            )
        object.__setattr__(self, "dtype", _dtype_name(self.dtype, f"{owner}.dtype"))
        fraction = _float_field(owner, "pad_fraction", self.pad_fraction, "in [0, 1]")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{owner}.pad_fraction must be in [0, 1], got {self.pad_fraction!r}")
        object.__setattr__(self, "pad_fraction", fraction)

    @property
    def torch_dtype(self) -> torch.dtype:
        dtype: torch.dtype = getattr(torch, self.dtype)
        return dtype


@dataclass
class FeatureBatch:
    """image_tokens (B, N_img, D), text_tokens (B, N_txt, D) in spec.dtype; text_padding_mask
    (B, N_txt) bool, True = padding (``key_padding_mask`` convention), padding at row ends."""

    image_tokens: torch.Tensor
    text_tokens: torch.Tensor
    text_padding_mask: torch.Tensor
    spec: FeatureSpec

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
    ) -> FeatureBatch:
        """A copy on `device` and/or in floating `dtype` (the mask stays bool); self unchanged."""
        spec = self.spec
        torch_dtype = None
        if dtype is not None:
            spec = spec.replace(dtype=_dtype_name(dtype, "FeatureBatch.to dtype"))
            torch_dtype = spec.torch_dtype
        return FeatureBatch(
            self.image_tokens.to(device=device, dtype=torch_dtype),
            self.text_tokens.to(device=device, dtype=torch_dtype),
            self.text_padding_mask.to(device=device),
            spec,
        )


def make_features(
    spec: FeatureSpec | None = None, seed: int = 0, device: torch.device | str = "cpu"
) -> FeatureBatch:
    """Standard-normal token embeddings and a text padding mask, on `device` in spec.dtype.

    Drawn in float32 on the CPU with a seeded ``torch.Generator``, then moved and cast, so the
    values are the same on every device and differ between dtypes only by rounding.
    """
    spec = FeatureSpec() if spec is None else spec
    if not isinstance(spec, FeatureSpec):
        raise TypeError(f"make_features: spec must be a FeatureSpec or None, got {spec!r}")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"make_features: device {device!r} is not a torch device ('cpu', 'cuda:0', ...): {err}"
        ) from err
    generator = torch.Generator(device="cpu").manual_seed(_seed_entropy(seed, "make_features"))
    batch, n_text = spec.batch_size, spec.text_tokens
    image = torch.randn((batch, spec.image_tokens, spec.dim), generator=generator)
    text = torch.randn((batch, n_text, spec.dim), generator=generator)
    max_pad = min(n_text - 1, int(spec.pad_fraction * n_text))
    n_pad = torch.randint(0, max_pad + 1, (batch,), generator=generator)
    mask = torch.arange(n_text)[None, :] >= (n_text - n_pad)[:, None]
    return FeatureBatch(image, text, mask, spec).to(device=target, dtype=spec.dtype)


def default_feature_spec(scale: str = "default") -> FeatureSpec:
    """smoke: B=2, 50 image / 16 text tokens; default: B=4, 577 / 77; full: B=16, 577 / 77."""
    return _spec_for_scale(FeatureSpec, {"smoke": {"batch_size": 2, "image_tokens": 50,
                                                   "text_tokens": 16},
                                         "full": {"batch_size": 16}}, scale)


# --- JPEG datasets on disk --------------------------------------------------------------------
@dataclass(frozen=True)
class JpegDataset:
    """JPEG files written by :func:`write_jpeg_dataset`; paths[i] shows captions[i]."""

    root: pathlib.Path
    paths: tuple[pathlib.Path, ...]
    captions: tuple[str, ...]
    captions_file: pathlib.Path

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def manifest_file(self) -> pathlib.Path:
        return self.root / _MANIFEST


def _dataset_key(spec: BatchSpec, seed: int, quality: int) -> dict[str, Any]:
    # image_format and context_length do not change the files, so they do not invalidate them.
    fields = dataclasses.asdict(spec)
    del fields["image_format"], fields["context_length"]
    key = {"version": _GENERATOR_VERSION, "spec": fields, "seed": seed, "quality": quality}
    normalised: dict[str, Any] = json.loads(json.dumps(key))  # tuples -> lists, as in the file
    return normalised


def _reuse(root: pathlib.Path, key: dict[str, Any]) -> JpegDataset | None:
    """The dataset in root if its manifest matches key and every file has its recorded size."""
    try:
        manifest = json.loads((root / _MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("key") != key:
            return None
        for name, size in [*manifest["files"].items(), (_CAPTIONS, manifest["captions_bytes"])]:
            if (root / name).stat().st_size != size:
                return None
        lines = (root / _CAPTIONS).read_text(encoding="utf-8").splitlines()
        names, captions = zip(*(line.split("\t", 1) for line in lines), strict=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, partial or foreign manifest: rewrite
    if list(names) != list(manifest["files"]):
        return None
    paths = tuple(root / name for name in names)
    return JpegDataset(root, paths, tuple(captions), root / _CAPTIONS)


def write_jpeg_dataset(
    root: str | os.PathLike[str], spec: BatchSpec, seed: int = 0, quality: int = 90
) -> JpegDataset:
    """Write spec.batch_size JPEGs (img_00000.jpg, ...) + captions.tsv + manifest.json to root.

    Idempotent: when root/manifest.json matches (spec, seed, quality, generator version) and every
    file has its recorded size, nothing is written. Otherwise the manifest is removed first,
    each file is written atomically (temporary file + rename, so concurrent writers of the same
    dataset never expose a partial file), stale img_*.jpg are removed, and the manifest comes
    last. The manifest also records the total bytes per pixel.
    """
    if not isinstance(spec, BatchSpec):
        raise TypeError(f"write_jpeg_dataset: spec must be a BatchSpec, got {spec!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"write_jpeg_dataset: quality must be an int in [1, 100], got {quality!r}")
    entropy = _seed_entropy(seed, "write_jpeg_dataset")
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = _dataset_key(spec, int(seed), quality)
    reused = _reuse(root, key)
    if reused is not None:
        return reused

    (root / _MANIFEST).unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    width = max(5, len(str(spec.batch_size - 1)))  # fixed width keeps name order = index order
    files: dict[str, int] = {}
    captions: list[str] = []
    pixels = 0
    for index in range(spec.batch_size):
        name = f"img_{index:0{width}d}.jpg"
        image = _image(spec, entropy, index)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        write_atomic(root / name, buffer.getvalue(), fsync=False)
        files[name] = buffer.tell()
        pixels += image.width * image.height
        captions.append(_caption(spec, entropy, index))
    tsv = "".join(f"{name}\t{text}\n" for name, text in zip(files, captions, strict=True))
    tsv_bytes = tsv.encode("utf-8")
    write_atomic(root / _CAPTIONS, tsv_bytes, fsync=False)
    for stale in root.glob("img_*.jpg"):
        if _IMAGE_NAME.fullmatch(stale.name) and stale.name not in files:
            stale.unlink(missing_ok=True)
    manifest = {
        "key": key,
        "files": files,
        "captions_bytes": len(tsv_bytes),
        "pixels": pixels,
        "bytes_per_pixel": round(sum(files.values()) / pixels, 4),
    }
    write_atomic(root / _MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"), fsync=False)
    paths = tuple(root / name for name in files)
    return JpegDataset(root, paths, tuple(captions), root / _CAPTIONS)
