"""pytest-benchmark numbers for reference/attention.py (a benchmark, not a timed test).

Run: ``.venv/bin/python -m pytest tests/bench/test_attention_bench.py --benchmark-enable``.
Under the project's default ``--benchmark-disable`` each case runs once, as a smoke test.

Groups (float32 under ``torch.inference_mode`` unless the name says bf16):

* ``cross``: text (8, 77, 768) queries over image (8, 577, 768), 12 heads: the seed module,
  the corrected module with each backend, and bf16 autocast (math, sdpa).
* ``cross-core``: the same attention without projections (q, k, v given): math vs sdpa.
* ``joint-4096``: self-attention over one joint sequence of 4096 text+image tokens (B=1):
  dense sdpa, dense math, sparse local w=256; ``joint-4096-core`` the same without projections.

``extra_info`` records the analytic FLOPs (:func:`reference.attention.attention_flops`), the
tokens processed (queries + keys per batch item), and, when timing is enabled, GFLOP/s and
tokens/s at the median.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from pytest_mmperf.data.synthetic import FeatureSpec, make_features
from reference.attention import (
    CrossAttention,
    LocalAttention,
    SeedCrossAttention,
    SelfAttention,
    attention_core,
    attention_flops,
    autocast_context,
    joint_sequence,
    local_attention,
    seed_attention_flops,
)

B, N_TXT, N_IMG, DIM, HEADS = 8, 77, 577, 768, 12
N_JOINT, WINDOW = 4096, 256
CROSS_SPEC = FeatureSpec(batch_size=B, image_tokens=N_IMG, text_tokens=N_TXT, dim=DIM,
                         heads=HEADS)
JOINT_SPEC = CROSS_SPEC.replace(batch_size=1, image_tokens=N_JOINT - N_TXT)


def _run(benchmark: Any, fn: Callable[[], torch.Tensor], flops: int, tokens: int,
         bf16: bool = False) -> None:
    """Benchmark ``fn`` under inference mode (and bf16 autocast) and record rates."""

    def call() -> torch.Tensor:
        with torch.inference_mode():
            if bf16:
                with autocast_context("cpu"):
                    return fn()
            return fn()

    out = benchmark(call)
    assert torch.isfinite(out).all()
    benchmark.extra_info.update(flops=flops, tokens=tokens, threads=torch.get_num_threads())
    if benchmark.stats is not None:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info.update(gflops_per_s=flops / median / 1e9,
                                    tokens_per_s=tokens / median)


@pytest.fixture(scope="module")
def cross_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    feats = make_features(CROSS_SPEC, seed=0)
    return feats.text_tokens, feats.image_tokens


@pytest.fixture(scope="module")
def joint_tokens() -> torch.Tensor:
    feats = make_features(JOINT_SPEC, seed=0)
    tokens, _ = joint_sequence(feats.text_tokens, feats.image_tokens)
    assert tokens.shape == (1, N_JOINT, DIM)
    return tokens


def _heads(n: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, HEADS, n, DIM // HEADS, generator=gen)
    return q, torch.randn(q.shape, generator=gen), torch.randn(q.shape, generator=gen)


CROSS_FLOPS = attention_flops(B, N_TXT, N_IMG, DIM, HEADS)
CROSS_TOKENS = B * (N_TXT + N_IMG)


@pytest.mark.benchmark(group="cross")
def test_bench_cross_seed(benchmark: Any, cross_inputs: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.manual_seed(0)
    module = SeedCrossAttention(DIM, HEADS).eval()
    _run(benchmark, lambda: module(*cross_inputs), seed_attention_flops(B, N_TXT, N_IMG, DIM),
         CROSS_TOKENS)


@pytest.mark.benchmark(group="cross")
@pytest.mark.parametrize(("backend", "bf16"), [
    ("math", False), ("sdpa", False), ("mha", False), ("math", True), ("sdpa", True),
], ids=["math-f32", "sdpa-f32", "mha-f32", "math-bf16", "sdpa-bf16"])
def test_bench_cross(benchmark: Any, cross_inputs: tuple[torch.Tensor, torch.Tensor],
                     backend: str, bf16: bool) -> None:
    torch.manual_seed(0)
    module = CrossAttention(DIM, HEADS, backend=backend).eval()
    _run(benchmark, lambda: module(*cross_inputs), CROSS_FLOPS, CROSS_TOKENS, bf16)


@pytest.mark.benchmark(group="cross-core")
@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_bench_cross_core(benchmark: Any, backend: str) -> None:
    q, _, _ = _heads(N_TXT, B, seed=1)
    _, k, v = _heads(N_IMG, B, seed=2)
    _run(benchmark, lambda: attention_core(q, k, v, backend),
         attention_flops(B, N_TXT, N_IMG, DIM, HEADS, projections=False), CROSS_TOKENS)


@pytest.mark.benchmark(group="joint-4096")
@pytest.mark.parametrize("variant", ["dense-sdpa", "dense-math", f"local-w{WINDOW}"])
def test_bench_joint(benchmark: Any, joint_tokens: torch.Tensor, variant: str) -> None:
    torch.manual_seed(0)
    module: torch.nn.Module
    if variant.startswith("local"):
        module = LocalAttention(DIM, HEADS, window=WINDOW).eval()
        flops = attention_flops(1, N_JOINT, N_JOINT, DIM, HEADS, WINDOW)
    else:
        module = SelfAttention(DIM, HEADS, backend=variant.removeprefix("dense-")).eval()
        flops = attention_flops(1, N_JOINT, N_JOINT, DIM, HEADS)
    _run(benchmark, lambda: module(joint_tokens), flops, N_JOINT)


@pytest.mark.benchmark(group="joint-4096-core")
@pytest.mark.parametrize("variant", ["dense-sdpa", f"local-w{WINDOW}"])
def test_bench_joint_core(benchmark: Any, variant: str) -> None:
    q, k, v = _heads(N_JOINT, 1, seed=3)
    if variant.startswith("local"):
        fn = lambda: local_attention(q, k, v, WINDOW)  # noqa: E731
        window: int | None = WINDOW
    else:
        fn = lambda: attention_core(q, k, v, "sdpa")  # noqa: E731
        window = None
    _run(benchmark, fn, attention_flops(1, N_JOINT, N_JOINT, DIM, HEADS, window,
                                        projections=False), N_JOINT)
