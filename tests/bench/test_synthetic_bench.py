"""pytest-benchmark benchmarks of synthetic data generation at the default scale.

The repository's addopts include ``--benchmark-disable``: then each benchmark body runs once,
untimed, as a plain test. Time them with
``python -m pytest tests/bench/test_synthetic_bench.py --benchmark-enable``. Generating the default
batch must stay cheap next to the work it feeds (the issue's budget: under one second here).
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from pytest_mmperf.data.synthetic import (
    default_batch_spec,
    default_feature_spec,
    make_batch,
    make_features,
)


def test_bench_make_batch_default(benchmark: Any) -> None:
    """8 PIL images of 256-1024 px + captions + 77-token ids (the `default` scale)."""
    spec = default_batch_spec("default")
    batch = benchmark(make_batch, spec, 0)
    assert len(batch) == 8 and all(isinstance(image, Image.Image) for image in batch.images)
    assert all(256 <= max(size) <= 1024 for size in batch.image_sizes)
    assert batch.input_ids.shape == (8, 77)


def test_bench_make_features_default(benchmark: Any) -> None:
    """CLIP ViT-L/14-shaped fusion inputs: (4, 577, 768) image and (4, 77, 768) text tokens."""
    features = benchmark(make_features, default_feature_spec("default"), 0)
    assert features.image_tokens.shape == (4, 577, 768)
    assert features.text_tokens.shape == (4, 77, 768)
    assert features.text_padding_mask.dtype == torch.bool
