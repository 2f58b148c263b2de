"""Counter guards over the attention of ``reference/``: deterministic, run in every ``pytest``.

Self-attention over one joint text+image sequence of N tokens (B=1, D=64, 4 heads: small, so
the N x N score matrix of the explicit version dominates its memory, as it does at CLIP size):

* peak tensor memory grows linearly in N for the fused (SDPA) and sparse (sliding window)
  backends (fitted log-log exponent <= 1.15) and quadratically for the explicit one (> 1.7);
* FLOPs of the dense backends equal :func:`reference.attention.attention_flops` within 1 %;
  the sparse backend's FLOPs grow as O(N·w) (exponent ~1 at fixed window w) and stay within
  the blocked kernel's overhead (whole blocks at the window edges) of the useful pair count;
* a committed snapshot of ops, FLOPs and peak memory of each case (``mmperf-snapshots.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

DIM, HEADS, WINDOW, BLOCK = 64, 4, 64, 64
SIZES = (512, 1024, 2048)
DENSE = ("math", "sdpa", "mha")
LINEAR_MAX = 1.15
QUADRATIC_MIN = 1.7
# The blocked kernel computes whole (block x block) tiles at the window edges: at w = block it
# counts ~1.35x the useful pairs' FLOPs; more would mean it stopped skipping far blocks.
SPARSE_OVERHEAD = 1.5


def _module(impl: str) -> Any:
    import torch

    from reference.attention import LocalAttention, SelfAttention

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if impl == "local":
            return LocalAttention(DIM, HEADS, window=WINDOW, block_size=BLOCK).eval()
        return SelfAttention(DIM, HEADS, backend=impl).eval()


def _of_size(impl: str) -> Callable[[int], Callable[[], object]]:
    """``fn_of_size(N)`` -> a call of ``impl`` on (1, N, D) tokens, without autograd."""
    import torch

    module = _module(impl)

    def build(n: int) -> Callable[[], object]:
        tokens = torch.randn(1, n, DIM, generator=torch.Generator().manual_seed(n))

        def run() -> object:
            with torch.inference_mode():
                return module(tokens)

        return run

    return build


@pytest.mark.parametrize("impl", ["sdpa", "local"])
def test_memory_linear_in_sequence(mmperf_guard: Any, impl: str) -> None:
    mmperf_guard.scaling(_of_size(impl), SIZES, metric="memory", max_exponent=LINEAR_MAX,
                         name=f"{impl} memory")


def test_math_memory_quadratic(mmperf_guard: Any) -> None:
    """The explicit version keeps the (N, N) scores: the linear guard must catch it."""
    with pytest.raises(AssertionError, match="memory ~ size"):
        mmperf_guard.scaling(_of_size("math"), SIZES, metric="memory", max_exponent=LINEAR_MAX,
                             name="math memory (must fail)")


def test_math_memory_slope(mmperf_guard: Any) -> None:
    result = mmperf_guard.scaling(_of_size("math"), SIZES, metric="memory", max_exponent=2.2,
                                  name="math memory")
    assert result.estimate > QUADRATIC_MIN, (
        f"math attention's peak memory grows as N^{result.estimate:.2f}; expected ~N^2 "
        f"(> {QUADRATIC_MIN}): values {result.extra['values']} at N = {list(SIZES)}")


@pytest.mark.parametrize("impl", DENSE)
def test_dense_flops_match_analytic(mmperf_guard: Any, impl: str) -> None:
    from reference.attention import attention_flops

    n = SIZES[1]
    expected = attention_flops(1, n, n, DIM, HEADS)
    fn = _of_size(impl)(n)
    result = mmperf_guard.max_flops(fn, expected * 1.01, name=f"{impl} N={n}")
    assert result.estimate >= expected * 0.99, (
        f"{impl}: counted {result.estimate:,} FLOPs, analytic {expected:,} (must match within "
        "1 %): the FLOP counter misses part of the work")


def test_sparse_flops_bounded_by_useful_pairs(mmperf_guard: Any) -> None:
    from reference.attention import attention_flops

    n = SIZES[-1]
    useful = attention_flops(1, n, n, DIM, HEADS, WINDOW)
    result = mmperf_guard.max_flops(_of_size("local")(n), useful * SPARSE_OVERHEAD,
                                    name=f"local N={n} w={WINDOW}")
    assert result.estimate >= useful * 0.99, (
        f"sparse attention counted {result.estimate:,} FLOPs, fewer than the {useful:,} of the "
        "pairs it must attend: the counter or the kernel skips work")


def test_sparse_flops_linear_in_sequence(mmperf_guard: Any) -> None:
    result = mmperf_guard.scaling(_of_size("local"), SIZES, metric="flops", max_exponent=1.05,
                                  name="local flops")
    assert result.estimate > 0.95, f"sparse FLOPs ~ N^{result.estimate:.2f}, expected ~N^1"


def test_dense_flops_quadratic_part(mmperf_guard: Any) -> None:
    """Sanity of the comparison above: the dense block's FLOPs grow faster than linearly."""
    with pytest.raises(AssertionError):
        mmperf_guard.scaling(_of_size("sdpa"), SIZES, metric="flops", max_exponent=1.05,
                             name="sdpa flops (must fail)")


@pytest.mark.parametrize("impl", ["seed", "math", "sdpa", "mha", "local"])
def test_attention_snapshot(snapshot: Any, impl: str) -> None:
    import torch

    if impl == "seed":
        from reference.attention import SeedCrossAttention

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            seed_module = SeedCrossAttention(DIM, HEADS).eval()
        text = torch.randn(1, 16, DIM, generator=torch.Generator().manual_seed(1))
        image = torch.randn(1, 50, DIM, generator=torch.Generator().manual_seed(2))

        def fn() -> object:
            with torch.inference_mode():
                return seed_module(text, image)
    else:
        fn = _of_size(impl)(SIZES[0])
    snapshot(f"attention/{impl}/N{SIZES[0]}-D{DIM}", fn)
