"""Timing guards over ``reference/``: ratios measured side by side, pooled across processes.

Each guard compares two implementations of one case of ``benchmarks/common.py`` (the cases the
asv suite tracks), interleaved in this process and, while the interval is unclear, in fresh
worker processes that re-run the test. Thresholds sit well under the ratios measured on this
2-core machine (shared and busy, so they move from run to run):

================================================  =================  =========
guard (case)                                       measured            threshold
================================================  =================  =========
batched preprocessing vs the seed's loop (8 imgs)  8.0-17.8x          1.3x
fast disk pipeline vs the seed's DataLoader        1.57-1.74x         1.2x
SDPA vs explicit attention core (N=1024)           2.99-3.22x         1.1x
bf16 autocast vs float32 (CLIP block, B=4, SDPA)   1.25-1.59x         1.1x
sparse vs fused dense core (N=4096, w=256)         3.06-4.89x         2.0x
batched path vs its primitives (slowdown)          0.94-1.04x         <= 1.10x
================================================  =================  =========

(pooled estimates of this suite's guards and of ``benchmarks.common.interleaved_ratio``, on a
2-core machine at load 5-6; the bf16 guard's interval often straddles its threshold there and
the point estimate decides.) A healthy tree passes and an undone optimisation (a ratio near 1)
fails. The seed's own "optimised" preprocessing is measured against its naive loop and
reported next to the 30-50 % it claims (a report line backed by a ``not_slower`` guard, not a
claim of ours).

Inputs are built once per process (the cases cache them), so a worker re-running a test costs
little more than the import of torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch

from benchmarks.common import (
    ATTENTION_CASES,
    LOADER_CASES,
    LONG_CASES,
    LongSequenceCase,
    PreprocessCase,
    Workload,
)

# The batched path against the same work composed from its primitives: 0.94-1.04x measured.
OVERHEAD_TOLERANCE = 0.10
AT_LEAST = {"batched": 1.3, "loader": 1.2, "sdpa": 1.1, "bf16": 1.1, "sparse": 2.0}
# Smaller versions of the registry cases (same classes, same implementations): each guard
# re-runs its test in up to a few fresh processes, and plain `pytest` must stay short. Ratios
# depend on the shape of the work (N against the window, uint8 against float), not on B.
PRE_CASE = PreprocessCase("varied8", batch_size=8, min_side=256, max_side=512)
# SDPA vs explicit attention core at N=1024: the explicit (N, N) scores leave the cache.
SDPA_CASE = LongSequenceCase("joint-1024", tokens=1024)
# bf16: the registry's CLIP block (B=4). At B=1 the autocast casts outweigh the gain here
# (0.67x measured), so the batch matters for this one.
BF16_CASE = ATTENTION_CASES["clip-b4"]
# sparse: the registry case, 12 heads of 64 (with 4 heads of 64 the ratio fell to ~2x here).
SPARSE_CASE = LONG_CASES["joint-4096"]
CLAIM_TITLE = "Seed: 30-50 % faster data processing"
CLAIMED = [1.3, 1.5]  # speedup of the seed's "optimised" preprocessing over its naive loop
# The seed's code may be a little slower than its loop (it only drops antialias=True, which
# v1 Resize ignores on PIL images); much slower would be a regression of reference/ itself.
# Its per-process ratio moved between 0.8x and 1.6x on the busy 2-core machine.
SEED_TOLERANCE = 0.5
CLAIM_PROCESSES = 5  # capped by --mmperf-processes: 3 in plain pytest, 5 under --benchmark
_MEASURED: dict[str, Any] = {}  # guard results shared with the claim test (same process)


def _build(case: Any, impl: str, dtype: str = "float32") -> Workload:
    try:
        work: Workload = case.build(impl, dtype)
    except NotImplementedError as exc:
        pytest.skip(str(exc))
    return work


def test_batched_preprocessing_faster_than_seed_loop(mmperf_guard: Any) -> None:
    case = PRE_CASE
    result = mmperf_guard.faster(_build(case, "batched"), _build(case, "naive"),
                                 at_least=AT_LEAST["batched"], name="batched vs naive")
    _MEASURED["batched"] = result


def _primitives_floor(case: PreprocessCase) -> Callable[[], object]:
    """The batched path's unavoidable work, composed from its public primitives: resize each
    image on the same number of threads, stack, one fused normalise. Same output."""
    from reference.preprocess import normalize_uint8, resize_uint8

    images = case.images()
    pool = ThreadPoolExecutor(case.threads)

    def run() -> object:
        resized = list(pool.map(lambda image: resize_uint8(image, 224, "auto"), images))
        return normalize_uint8(torch.stack(resized))

    return run


def test_batched_preprocessing_adds_no_overhead(mmperf_guard: Any) -> None:
    """Catches slowdowns of the batched path itself (redundant work, a lost thread, an extra
    copy) that the ratio against the seed's loop, 8x or more, would hide."""
    case = PRE_CASE
    mmperf_guard.not_slower(_build(case, "batched"), _primitives_floor(case),
                            tolerance=OVERHEAD_TOLERANCE, name="batched vs its primitives")


@pytest.fixture(scope="module")
def loaders() -> Iterator[tuple[Workload, Workload]]:
    """(fast, seed) loader workloads with their persistent workers already started."""
    case = LOADER_CASES["jpeg16"]
    fast, seed = _build(case, "fast"), _build(case, "seed")
    try:
        fast()  # the first epoch starts the workers: not part of any measurement
        seed()
        yield fast, seed
    finally:
        fast.close()
        seed.close()


def test_fast_loader_faster_than_seed_dataloader(mmperf_guard: Any,
                                                 loaders: tuple[Workload, Workload]) -> None:
    fast, seed = loaders
    mmperf_guard.faster(fast, seed, at_least=AT_LEAST["loader"], name="fast vs seed loader")


def test_sdpa_faster_than_math(mmperf_guard: Any) -> None:
    mmperf_guard.faster(_build(SDPA_CASE, "sdpa"), _build(SDPA_CASE, "math"),
                        at_least=AT_LEAST["sdpa"], name=f"sdpa vs math N={SDPA_CASE.tokens}")


def test_bf16_autocast_faster_than_float32(mmperf_guard: Any) -> None:
    from reference.attention import has_native_bf16

    if not has_native_bf16("cpu"):
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX): autocast to bf16 would "
                    "be emulated and slower than float32, so there is no speed-up to guard")
    case = BF16_CASE
    mmperf_guard.faster(_build(case, "sdpa", "bfloat16"), _build(case, "sdpa", "float32"),
                        at_least=AT_LEAST["bf16"], name="sdpa bf16 vs f32 (CLIP block)")


def test_sparse_faster_than_dense_at_4096(mmperf_guard: Any) -> None:
    case = SPARSE_CASE
    mmperf_guard.faster(_build(case, "local"), _build(case, "sdpa"),
                        at_least=AT_LEAST["sparse"],
                        name=f"local vs sdpa N={case.tokens} w={case.window}")


def test_seed_claim(mmperf_guard: Any, mmperf_report: Any) -> None:
    """The seed's 30-50 % claim, measured: its own code against its own naive loop."""
    case = PRE_CASE
    # A clear pass comes after two processes, but with two the interval is wide (Student-t with
    # one degree of freedom): pool all the run allows, for an interval that can judge the claim.
    result = mmperf_guard.not_slower(_build(case, "seed"), _build(case, "naive"),
                                     tolerance=SEED_TOLERANCE, name="seed-optimised vs naive",
                                     min_processes=CLAIM_PROCESSES)
    # not_slower reports the slowdown t_seed / t_naive; the claim is about the speed-up.
    speedup = 1.0 / result.estimate
    interval = [1.0 / result.ci_high, 1.0 / result.ci_low]
    measured = {"seed's optimised code": speedup}
    intervals = {"seed's optimised code": interval}
    ours = _MEASURED.get("batched")
    if ours is not None and ours.estimate is not None:
        measured["ours (batched)"] = ours.estimate
        intervals["ours (batched)"] = [ours.ci_low, ours.ci_high]
    if interval[1] < CLAIMED[0]:
        verdict = "refuted"
    elif interval[0] >= CLAIMED[0]:
        verdict = "confirmed"
    else:
        verdict = "inconclusive"
    text = (f"The seed's optimised transform runs at {speedup:.2f}x its naive loop "
            f"(95 % interval {interval[0]:.2f}-{interval[1]:.2f}) on "
            f"{case.batch_size} images of {case.min_side}-{case.max_side} px, in memory: it only "
            "drops antialias=True, which v1 Resize ignores on PIL images, so it computes the same "
            "thing the same way.")
    if "ours (batched)" in measured:
        lo, hi = intervals["ours (batched)"]
        text += (f" The batched uint8 path of reference/ runs at {measured['ours (batched)']:.2f}x "
                 f"({lo:.2f}-{hi:.2f}).")
    record = mmperf_report.add("claim", title=CLAIM_TITLE, claimed=CLAIMED, measured=measured,
                               interval=intervals, verdict=verdict, text=text, unit="x")
    assert record["measured"]["seed's optimised code"] > 0
