"""Counter guards over the preprocessing of ``reference/``: deterministic, run in every ``pytest``.

The batched path must stay vectorised: the dtype conversion and the normalisation are one fused
operation over the whole (B, 3, S, S) uint8 batch, so their op count does not grow with B, and
each image costs one dispatched data op: its resize, written straight into its slot of the batch
buffer from Pillow's own pixels (no unpacking, no per-image temporary or copy). The seed's
per-image loop fails the same guard, which shows the guard would catch a batched path turned
back into a loop.

Images are small (64-96 px) so that counting is cheap; counts do not depend on image size.
Counting uses one resize thread: dispatch counters see the calling thread only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

# Ops that convert dtype or normalise (any spelling the naive or batched path dispatches).
CONVERT_NORMALISE_OPS = ("_to_copy", "to", "copy_", "clone", "div", "div_", "sub", "sub_",
                         "mul", "mul_", "add", "add_", "addcmul", "addcmul_", "empty",
                         "eq", "any", "_local_scalar_dense")
# Ops that only make views or profiler records: no data moves, not counted as dispatched work.
_METADATA_OPS = {"view", "permute", "as_strided", "detach", "alias", "expand", "transpose",
                 "unsqueeze", "squeeze", "lift_fresh", "_reshape_alias", "t", "unfold",
                 "_record_function_enter_new", "_record_function_exit", "slice", "select"}
SIZES = (2, 4, 8)
SMALL = {"min_side": 64, "max_side": 96}


def _norm(op: str) -> str:
    """``aten.mm.default`` / ``aten::mm`` -> ``mm``."""
    name = op.replace("::", ".")
    for prefix in ("aten.", "profiler."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.split(".", 1)[0]


def _work_ops(ops: dict[str, int]) -> int:
    """Dispatched ops that touch data (views and profiler records left out)."""
    return sum(n for op, n in ops.items() if _norm(op) not in _METADATA_OPS)


def _on(pipeline: Callable[[list[Any]], object], images: list[Any]) -> Callable[[], object]:
    """A zero-argument call of ``pipeline`` on ``images``."""
    return lambda: pipeline(images)


@pytest.fixture
def images_of(mmperf_batch_factory: Callable[..., Any]) -> Callable[[int], list[Any]]:
    """``images_of(B)`` -> B small RGB PIL images (seeded, cached per test)."""
    cache: dict[int, list[Any]] = {}

    def make(batch_size: int) -> list[Any]:
        if batch_size not in cache:
            cache[batch_size] = list(mmperf_batch_factory(batch_size=batch_size, **SMALL).images)
        return cache[batch_size]

    return make


def test_batched_convert_and_normalise_ops_constant(mmperf_guard: Any, images_of: Any) -> None:
    from reference.preprocess import BatchedPreprocessor

    pre = BatchedPreprocessor(num_threads=1)
    result = mmperf_guard.ops_constant(lambda b: _on(pre, images_of(b)), SIZES,
                                       only=CONVERT_NORMALISE_OPS, name="batched convert+norm")
    # Not vacuous: the fused normalise is counted (one addcmul-like op at least).
    assert result.estimate is not None and result.estimate >= 1


def test_fused_normalise_ops_constant(mmperf_guard: Any) -> None:
    import torch

    from reference.preprocess import normalize_uint8

    def of_size(b: int) -> Callable[[], object]:
        batch = torch.zeros((b, 3, 32, 32), dtype=torch.uint8)
        return lambda: normalize_uint8(batch)

    mmperf_guard.ops_constant(of_size, SIZES, name="normalize_uint8")


def test_batched_one_dispatch_per_image(mmperf_guard: Any, images_of: Any) -> None:
    from reference.preprocess import BatchedPreprocessor

    pre = BatchedPreprocessor(num_threads=1)
    small, large = SIZES[0], SIZES[-1]
    # One resize per image, no more, and nothing else per image.
    res_small = mmperf_guard.max_ops(_on(pre, images_of(small)),
                                     {"_upsample_bilinear2d_aa": small, "*": 10_000},
                                     name=f"batched B={small}")
    res_large = mmperf_guard.max_ops(_on(pre, images_of(large)),
                                     {"_upsample_bilinear2d_aa": large, "*": 10_000},
                                     name=f"batched B={large}")
    per_image = (_work_ops(res_large.extra["ops"]) - _work_ops(res_small.extra["ops"])) \
        / (large - small)
    assert per_image <= 1, (
        f"the batched preprocessor dispatches {per_image:.1f} data ops per image (max 1: the "
        f"resize into the batch buffer); ops at B={small}: {res_small.extra['ops']}, at "
        f"B={large}: {res_large.extra['ops']}")


@pytest.mark.parametrize("impl", ["naive", "seed"])
def test_seed_loop_fails_the_vectorisation_guard(mmperf_guard: Any, images_of: Any,
                                                 impl: str) -> None:
    """The guard catches a per-image loop: the seed's code must fail it."""
    from reference.preprocess import NaivePreprocessor, SeedOptimizedPreprocessor

    loop = NaivePreprocessor() if impl == "naive" else SeedOptimizedPreprocessor()
    with pytest.raises(AssertionError, match="ops that grew with size"):  # GuardFailure
        mmperf_guard.ops_constant(lambda b: _on(loop, images_of(b)), SIZES,
                                  only=CONVERT_NORMALISE_OPS, name=f"{impl} loop (must fail)")


def test_naive_loop_dispatches_per_image(mmperf_guard: Any, images_of: Any) -> None:
    """The per-image cost the batched path removed, as a number: > 2 data ops per image."""
    from reference.preprocess import NaivePreprocessor

    loop = NaivePreprocessor()
    counts = [_work_ops(mmperf_guard.max_ops(_on(loop, images_of(b)), 10_000,
                                             name=f"naive B={b}").extra["ops"])
              for b in (SIZES[0], SIZES[-1])]
    assert (counts[1] - counts[0]) / (SIZES[-1] - SIZES[0]) > 2


@pytest.mark.parametrize("impl", ["naive", "seed", "batched"])
def test_preprocess_snapshot(snapshot: Any, images_of: Any, impl: str) -> None:
    from reference.preprocess import (
        BatchedPreprocessor,
        NaivePreprocessor,
        SeedOptimizedPreprocessor,
    )

    makers: dict[str, Callable[[], Callable[[list[Any]], object]]] = {
        "naive": NaivePreprocessor, "seed": SeedOptimizedPreprocessor,
        "batched": lambda: BatchedPreprocessor(num_threads=1)}
    pre = makers[impl]()
    snapshot(f"preprocess/{impl}/B4-small", _on(pre, images_of(4)), single_thread=True)


def test_fast_loader_starts_no_worker_process() -> None:
    """The fast loader's default path decodes on a thread pool: an epoch starts no process (the
    DataLoader-worker path pickles every chunk through shared memory, which makes it slower
    under load; on a quiet machine the two differ too little to time: docs/regression-suite.md)."""
    import multiprocessing

    from benchmarks.cases import LOADER_CASES
    from benchmarks.inputs import close_loader_workers
    from reference.preprocess import make_fast_loader

    data = LOADER_CASES["jpeg16"].dataset()
    paths, captions = [str(p) for p in data.paths], list(data.captions)
    before = {p.pid for p in multiprocessing.active_children()}
    loader = make_fast_loader(paths, captions, num_workers=2)
    batches = list(loader)
    started = {p.pid for p in multiprocessing.active_children()} - before
    assert batches and not started, f"the fast loader started worker processes {sorted(started)}"
    processes = make_fast_loader(paths, captions, num_workers=2, worker_type="process")
    try:
        list(processes)  # the same check sees DataLoader workers: it can fail
        assert {p.pid for p in multiprocessing.active_children()} - before
    finally:
        close_loader_workers(processes)
