"""Photograph-like synthetic images (private helper of :mod:`pytest_mmperf.data.synthetic`).

A codec-realistic image needs what photographs have and white noise lacks: large smooth regions
(sky, walls), low-frequency colour and illumination changes, objects with hard edges, regions of
fine texture (foliage, fabric) next to flat ones, and a little sensor noise. Each image is built
from exactly those layers:

1. a low-frequency colour field (a 2x2..4x4 grid of muted colours upsampled bicubically);
2. a few large and many small filled ellipses, rectangles and polygons, and thin strokes
   (edges, occlusion, twig/wire-like detail);
3. a luminance map added to all three channels: low-frequency illumination (shapes are shaded
   like the background), texture with a natural-image (1/f-like) spectrum (noise octaves summed
   coarse to fine, the fine ones damped in calm regions and boosted in busy ones) and mild,
   nearly gaussian per-pixel noise.

The full-size steps run in C (PIL resize, draw, add on uint8); numpy only builds the
single-channel luminance map.

Everything is drawn from one ``numpy.random.Generator`` per image, so an image depends only on
(seed, index, size) and never on global RNG state or on the other images of the batch.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageChops, ImageDraw

# Tuned so that default-spec images (256-1024 px) encode at about 0.33 bytes/pixel at JPEG
# quality 90, in the range of real photographs (docs/measurements.md#synthetic-data).
_OCTAVE_STD = 12.0  # std per octave of the luminance texture (grey levels)
_CALM_GAIN = 0.3  # fine-octave gain in calm regions
_BUSY_GAIN = 2.0  # extra fine-octave gain in busy regions (times a squared uniform, mean 1/3)
_PIXEL_NOISE = 2.0  # std of per-pixel sensor noise
_LIGHT_STD = 25.0  # std of the 3x3 illumination grid (grey levels)
_BIG_SHAPES = (3, 8)  # [low, high) number of large shapes
_SMALL_SHAPES = (30, 90)  # [low, high) number of small shapes
_STROKES = (30, 150)  # [low, high) number of thin strokes (twigs, grass, text-like detail)


def sample_size(
    rng: np.random.Generator,
    min_side: int,
    max_side: int,
    min_aspect: float,
    max_aspect: float,
) -> tuple[int, int]:
    """Draw one (H, W): long side uniform in [min_side, max_side], W/H log-uniform in the range.

    The long side is exactly the drawn integer; the short side is rounded (>= 1 px), so W/H
    matches the drawn aspect up to half a pixel of the short side.
    """
    long_side = int(rng.integers(min_side, max_side + 1))
    aspect = math.exp(float(rng.uniform(math.log(min_aspect), math.log(max_aspect))))
    if aspect >= 1.0:
        return max(1, round(long_side / aspect)), long_side
    return long_side, max(1, round(long_side * aspect))


def _upsample(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic upsampling of a float32 (h, w) grid to (height, width), via PIL (fast, in C)."""
    return np.asarray(Image.fromarray(grid, "F").resize((width, height), Image.Resampling.BICUBIC))


def _muted(rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    """Random RGB colours (..., 3) pulled towards grey: photographs are rarely fully saturated."""
    colours = rng.uniform(20.0, 235.0, size=(*size, 3))
    grey = colours.mean(axis=-1, keepdims=True)
    saturation = rng.uniform(0.25, 0.85, size=(*size, 1))
    muted: np.ndarray = grey + saturation * (colours - grey)
    return muted


def _draw_shapes(
    rng: np.random.Generator,
    draw: ImageDraw.ImageDraw,
    height: int,
    width: int,
    count: int,
    scale: tuple[float, float],
) -> None:
    """Draw `count` filled shapes whose radius is `scale` (fraction of the short side)."""
    short = min(height, width)
    kinds = rng.integers(0, 3, size=count)
    centres = rng.uniform(0.0, 1.0, size=(count, 2)) * (width, height)
    radii = rng.uniform(*scale, size=(count, 1)) * short * rng.uniform(0.5, 1.5, size=(count, 2))
    colours = np.clip(_muted(rng, (count,)), 0, 255).astype(np.uint8)
    for kind, (cx, cy), (rx, ry), colour in zip(
        kinds.tolist(), centres.tolist(), radii.tolist(), colours.tolist(), strict=True
    ):
        fill = (colour[0], colour[1], colour[2])
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            corners = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0.0, 2.0 * math.pi, size=corners))
            reach = rng.uniform(0.4, 1.0, size=corners)
            xs = cx + rx * reach * np.cos(angles)
            ys = cy + ry * reach * np.sin(angles)
            draw.polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=fill)


def _draw_strokes(
    rng: np.random.Generator, draw: ImageDraw.ImageDraw, height: int, width: int, count: int
) -> None:
    """Draw `count` short thin lines, clustered around a few centres like foliage or text."""
    short = min(height, width)
    clusters = rng.uniform(0.0, 1.0, size=(3, 2)) * (width, height)
    which = rng.integers(0, 3, size=count)
    starts = clusters[which] + rng.normal(0.0, 0.15 * short, size=(count, 2))
    angles = rng.uniform(0.0, 2.0 * math.pi, size=count)
    lengths = rng.uniform(0.01, 0.08, size=count) * short
    ends = starts + lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    widths = rng.integers(1, 4, size=count)
    colours = np.clip(_muted(rng, (count,)), 0, 255).astype(np.uint8)
    for start, end, line_width, colour in zip(
        starts.tolist(), ends.tolist(), widths.tolist(), colours.tolist(), strict=True
    ):
        draw.line((start[0], start[1], end[0], end[1]), fill=tuple(colour), width=line_width)


def _octave_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Luminance offsets (height, width) float32: 1/f-like noise octaves plus pixel noise.

    Natural images have roughly equal contrast energy per octave of spatial frequency, so each
    octave below full resolution gets the same std (_OCTAVE_STD); a 4x4 "busy" map scales the
    fine octaves regionally, so some regions are calm (sky) and some busy (foliage).
    """
    shapes: list[tuple[int, int]] = []
    level_h, level_w = height, width
    while level_h > 4 and level_w > 4 and len(shapes) < 6:
        level_h, level_w = (level_h + 1) // 2, (level_w + 1) // 2
        shapes.append((level_h, level_w))
    shapes.reverse()  # coarsest first
    std = np.float32(_OCTAVE_STD)
    # Start from a 3x3 illumination grid: brighter and darker areas across the whole frame.
    field = rng.normal(0.0, _LIGHT_STD, size=(3, 3)).astype(np.float32)
    for level, (level_h, level_w) in enumerate(shapes):
        field = _upsample(field, level_w, level_h)
        noise = rng.standard_normal((level_h, level_w), dtype=np.float32) * std
        if level >= len(shapes) - 3:  # fine octaves: texture that varies by region
            busy = rng.uniform(0.0, 1.0, size=(4, 4)).astype(np.float32) ** 2
            noise *= _upsample(
                busy * np.float32(_BUSY_GAIN) + np.float32(_CALM_GAIN), level_w, level_h
            )
        field = field + noise
    # Sensor noise: triangular (difference of two uniforms, close to gaussian), because
    # rng.random is several times cheaper than rng.standard_normal and this is the one
    # full-size draw (docs/measurements.md#synthetic-data).
    luminance = rng.random((height, width), dtype=np.float32)
    luminance -= rng.random((height, width), dtype=np.float32)
    luminance *= np.float32(_PIXEL_NOISE * math.sqrt(6.0))  # triangular on [-1, 1] has var 1/6
    luminance += _upsample(field, width, height)
    return luminance


def render_image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """Render one photograph-like RGB image of (height, width) pixels."""
    # 1. Low-frequency colour field around a muted base colour.
    grid_h, grid_w = (int(v) for v in rng.integers(2, 5, size=2))
    base = _muted(rng, ())
    grid = np.clip(base + rng.normal(0.0, 40.0, size=(grid_h, grid_w, 3)), 0, 255)
    canvas = Image.fromarray(grid.astype(np.uint8), "RGB").resize(
        (width, height), Image.Resampling.BICUBIC
    )
    # 2. Objects: a few large ones and clutter; PIL rasterises them in C.
    draw = ImageDraw.Draw(canvas)
    _draw_shapes(rng, draw, height, width, int(rng.integers(*_BIG_SHAPES)), (0.08, 0.35))
    _draw_shapes(rng, draw, height, width, int(rng.integers(*_SMALL_SHAPES)), (0.01, 0.06))
    _draw_strokes(rng, draw, height, width, int(rng.integers(*_STROKES)))

    # 3. Illumination and texture as one luminance map, added as a uint8 offset around 128 by
    # PIL (in C; a float RGB composition in numpy costs about twice as much).
    luminance = _octave_texture(rng, height, width)
    luminance += np.float32(128.5)  # + 0.5: round to nearest in the uint8 cast below
    np.clip(luminance, 0.0, 255.0, out=luminance)
    offset = Image.fromarray(luminance.astype(np.uint8), "L")
    return ImageChops.add(canvas, Image.merge("RGB", (offset, offset, offset)), 1.0, -128)
