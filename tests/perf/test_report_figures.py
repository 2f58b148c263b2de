"""The figures of ``make bench``, through the public report API (``mmperf_report``) only.

One family per test, as another repository would write it: the implementations of one case of
``benchmarks/cases.py`` / ``training_cases.py`` measured against the family's naive version
(``mmperf_report.family``: interleaved, pooled over processes under ``pytest --benchmark``),
with throughput, GFLOP/s or GB/s against the machine's calibrated peak, peak memory and the
stage breakdown from ``reference/``'s ``mmperf::`` labels; the attention family adds time and
memory scaling against the sequence length (``mmperf_report.scaling``).

Plain ``pytest`` runs the smoke cases (the API measures at smoke cost there), so the report code
runs in every test run; ``pytest --benchmark`` (``make bench``) runs the registry's cases.
Each test also asserts what must hold of any honest measurement (positive times, speedups
inside their intervals, a breakdown that saw the labels), so broken figures fail here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from benchmarks.cases import (
    ATTENTION_CASES,
    LOADER_CASES,
    LONG_CASES,
    PREPROCESS_CASES,
    AttentionCase,
    LoaderCase,
    LongSequenceCase,
    PreprocessCase,
)
from benchmarks.inputs import Workload
from benchmarks.training_cases import (
    LOADER_TRAINING_CASES,
    TRAINING_CASES,
    LoaderTrainingCase,
    TrainingCase,
    bf16_condition,
)

pytestmark = pytest.mark.mmperf_timing


@dataclass(frozen=True)
class Plan:
    """The cases of one scale."""

    preprocess: PreprocessCase
    loader: LoaderCase
    clip: AttentionCase
    long: LongSequenceCase
    scaling_tokens: tuple[int, ...]
    training: TrainingCase
    loader_training: LoaderTrainingCase


_SMOKE = Plan(
    preprocess=PreprocessCase("smoke-pre4", batch_size=4, min_side=64, max_side=128),
    loader=LoaderCase("smoke-jpeg4", images=4, min_side=128, max_side=192),
    clip=AttentionCase("smoke-clip", batch_size=1, text_tokens=16, image_tokens=50, dim=64,
                       heads=4),
    long=LongSequenceCase("smoke-long", tokens=512, text_tokens=16, dim=64, heads=4, window=64),
    scaling_tokens=(128, 256, 512),
    training=TrainingCase("smoke-train", batch_size=2, model={
        "image_size": 64, "patch_size": 16, "dim": 32, "heads": 2, "image_layers": 1,
        "text_layers": 1, "context_length": 8, "vocab_size": 128}),
    loader_training=LoaderTrainingCase("smoke-loader", images=8, min_side=128, max_side=192,
                                       batch_size=4, steps=2, training="micro-b8"),
)


def _default_plan() -> Plan:
    return Plan(
        preprocess=PREPROCESS_CASES["varied16"],
        loader=LOADER_CASES["jpeg16"],
        clip=ATTENTION_CASES["clip-b4"],
        long=LONG_CASES["joint-4096"],
        scaling_tokens=(512, 1024, 2048, 4096),
        training=TRAINING_CASES["long-1024"],
        loader_training=LOADER_TRAINING_CASES["jpeg128-b32"],
    )


@pytest.fixture(scope="module")
def plan(request: pytest.FixtureRequest) -> Plan:
    """The registry's cases in the performance run (``pytest --benchmark``) unless
    ``--mmperf-scale=smoke``; the smoke cases otherwise."""
    from pytest_mmperf.glue.options import get_settings

    settings = get_settings(request.config)
    return _default_plan() if settings.benchmark and settings.scale != "smoke" else _SMOKE


def _check(family: Any) -> None:
    """What any honest measurement satisfies."""
    for row in family.rows:
        assert row.median_s > 0, f"{row.implementation}: median {row.median_s} not positive"
        assert row.q1_s <= row.median_s <= row.q3_s, f"{row.implementation}: quartiles"
        if row.implementation == family.baseline:  # 1.0 by definition: no (zero-width) interval
            assert row.speedup == 1.0 and row.speedup_ci is None, row
        else:
            low, high = row.speedup_ci
            assert low < row.speedup < high, f"{row.implementation}: speedup outside its interval"
        fraction = row.peak_fraction
        assert fraction is None or 0 < fraction <= 1, f"{row.implementation}: {fraction} of peak"


def _check_breakdowns(report: Any, family: str, unlabelled: tuple[str, ...] = ()) -> None:
    """Every implementation's breakdown saw ``mmperf::`` stages, but those of ``unlabelled``
    (code with no labels of its own, such as the seed's module as written)."""
    records = [f for f in report.figures if f["kind"] == "breakdown" and f["family"] == family]
    assert records, f"{family}: no breakdown recorded"
    for record in records:
        if record["implementation"] in unlabelled:
            continue
        labelled = {k: v for k, v in record["stages"].items() if not k.startswith("other")}
        assert labelled, f"{family}/{record['implementation']}: no mmperf:: stage was seen"


# ------------------------------------------------------------------------------ preprocessing


def test_family_preprocessing(mmperf_report: Any, plan: Plan) -> None:
    from pytest_mmperf.report.calibrate import RESIZE_ROOFLINE_NAME, resize_roofline

    case = plan.preprocess
    works = {impl: case.build(impl) for impl in ("naive", "seed", "batched")}
    # The limit of this work is its antialiased resize (most of the batched pipeline's time:
    # docs/reference-results.md), which is compute-bound: the roofline is that kernel at its
    # best on the same input sizes (one contiguous uint8 batch per size, all threads), not a
    # memory copy.
    roofline = resize_roofline(_image_sizes(case.images()), 224)
    family = mmperf_report.family(
        "preprocessing", {impl: work.fn for impl, work in works.items()}, baseline="naive",
        items=case.batch_size, unit="images", roofline=roofline, before=("seed",),
        title=f"In-memory preprocessing: {case.batch_size} images of "
              f"{case.min_side}-{case.max_side} px -> (B, 3, 224, 224)")
    _check(family)
    batched = family.row("batched")
    assert batched.throughput_unit == "images/s"
    if batched.peak_fraction is not None:  # calibrated (not in a worker)
        assert batched.peak_unit == f"images/s ({RESIZE_ROOFLINE_NAME})", batched
        assert batched.work_rate == pytest.approx(batched.throughput), batched
    _check_breakdowns(mmperf_report, "preprocessing")


def _image_sizes(images: list[Any]) -> list[tuple[int, int]]:
    """(height, width) of PIL images or (3, H, W) tensors."""
    return [(image.size[1], image.size[0]) if not callable(image.size)
            else (int(image.shape[-2]), int(image.shape[-1])) for image in images]


# ------------------------------------------------------------------------------ disk pipeline


@pytest.fixture(scope="module")
def loader_works(plan: Plan) -> Iterator[dict[str, Workload]]:
    """The seed's DataLoader and the fast loader, workers started (first epoch run)."""
    works = {impl: plan.loader.build(impl) for impl in ("seed", "fast")}
    try:
        for work in works.values():
            work()
        yield works
    finally:
        for work in works.values():
            work.close()


def test_family_disk_pipeline(mmperf_report: Any, plan: Plan,
                              loader_works: dict[str, Workload]) -> None:
    from reference.preprocess import FastJpegDataset, SeedDataset

    case = plan.loader
    # Peak memory and the breakdown are left out of the family: the work happens in the
    # loaders' worker processes, which the profiler and the memory counter do not see.
    family = mmperf_report.family(
        "disk pipeline", {impl: work.fn for impl, work in loader_works.items()},
        baseline="seed", items=case.images, unit="images", breakdown=False, memory=False,
        title=f"Disk pipeline: {case.images} JPEGs of {case.min_side}-{case.max_side} px "
              "-> one normalised batch (workers persistent)")
    _check(family)
    # Where the per-item work goes, in this process: decode, resize, convert, normalise.
    data = case.dataset()
    paths, captions = [str(p) for p in data.paths], list(data.captions)
    for impl, dataset in (("seed", SeedDataset(paths, captions)),
                          ("fast", FastJpegDataset(paths, captions))):
        mmperf_report.breakdown(lambda ds=dataset: [ds[i] for i in range(len(ds))],
                                family="disk pipeline", implementation=impl)
    _check_breakdowns(mmperf_report, "disk pipeline")


# ------------------------------------------------------------------------------ attention


def _label(work: Workload) -> str:
    return work.impl if work.dtype == "float32" else f"{work.impl} {work.dtype}"


def _attention_family(report: Any, name: str, works: dict[str, Workload], tokens: int,
                      title: str, note: str | None = None) -> Any:
    family = report.family(
        name, {impl: _labelled(work).fn for impl, work in works.items()}, baseline="math",
        items=tokens, unit="tokens", flops={impl: w.flops for impl, w in works.items()},
        dtype={impl: w.dtype for impl, w in works.items()}, title=title, note=note,
        before=[impl for impl in works if impl == "seed"])
    _check(family)
    return family


def test_family_attention_clip(mmperf_report: Any, plan: Plan) -> None:
    case = plan.clip
    works = {impl: case.build(impl) for impl in ("math", "seed", "sdpa", "mha")}
    try:
        bf16 = case.build("sdpa", "bfloat16")
        works[_label(bf16)] = bf16
    except NotImplementedError:  # no native bf16 here: the case says why
        pass
    _attention_family(
        mmperf_report, "attention (CLIP)", works,
        case.batch_size * (case.text_tokens + case.image_tokens),
        f"Cross-attention block at CLIP size: B={case.batch_size}, {case.text_tokens} text -> "
        f"{case.image_tokens} image tokens, D={case.dim}, {case.heads} heads",
        note="seed: the article's module (other maths: shared projection, no heads, no "
             "scaling; it returns the weights), kept as the 'before'")
    _check_breakdowns(mmperf_report, "attention (CLIP)", unlabelled=("seed",))


def _scaling_case(plan: Plan, tokens: int) -> LongSequenceCase:
    long = plan.long
    return LongSequenceCase(f"{long.name}-n{tokens}", tokens=tokens, batch_size=long.batch_size,
                            text_tokens=long.text_tokens, dim=long.dim, heads=long.heads,
                            window=long.window, seed=long.seed)


def _labelled(work: Workload) -> Workload:
    """``work`` inside an ``mmperf::attention`` label where reference/ has none of its own (the
    bare sliding-window core): how a user labels their own code for the breakdown."""
    if work.impl != "local":
        return work
    from torch.profiler import record_function

    def run() -> object:
        with record_function("mmperf::attention"):
            return work.fn()

    return Workload(work.case, work.impl, work.device, work.dtype, run, work.flops)


def test_family_attention_long(mmperf_report: Any, plan: Plan) -> None:
    case = plan.long
    works = {impl: case.build(impl) for impl in ("math", "sdpa", "local")}
    name = "attention (long sequence)"
    _attention_family(
        mmperf_report, name, works, case.batch_size * case.tokens,
        f"Attention core over a joint text+image sequence of {case.tokens} tokens, "
        f"D={case.dim}, {case.heads} heads, window {case.window} (local)")
    _check_breakdowns(mmperf_report, name)
    # Time and peak memory of each backend against N: the explicit version's N x N scores make
    # it quadratic in memory; the fused and sparse ones stay linear.
    records = mmperf_report.scaling(
        name, lambda impl, n: _scaling_case(plan, n).build(impl).fn, list(plan.scaling_tokens),
        implementations=("math", "sdpa", "local"))
    memory = {r.implementation: r for r in records if r.metric == "memory"}
    assert memory["math"].slope > memory["sdpa"].slope, memory
    assert all(r.values[-1] > r.values[0] for r in memory.values()), memory


# ------------------------------------------------------------------------------ training

TRAIN_BACKENDS = ("math", "sdpa", "mha", "local", "seed_sparse")
MIXED_PRECISION_CLAIM = "Seed: mixed precision significantly reduces training time"


def test_family_training_step(mmperf_report: Any, plan: Plan) -> None:
    """Every backend in fp32 and bf16 autocast: forward, backward and optimiser step of
    reference/training.py's model, against explicit attention in fp32, with the hardware
    condition bf16 holds under (the mixed-precision claim is measured by its own pairs below)."""
    case = plan.training
    config = case.config()
    works = {}
    for backend in TRAIN_BACKENDS:
        for dtype in ("float32", "bfloat16"):
            works[f"{backend} {dtype}"] = case.build(backend, dtype, "cpu", emulated_ok=True)
    family = mmperf_report.family(
        "training step", {name: work.fn for name, work in works.items()},
        baseline="math float32", items=case.batch_size, unit="images",
        before=("seed_sparse float32", "seed_sparse bfloat16"),
        title=f"Training step (forward, backward, AdamW): B={case.batch_size}, "
              f"{(config.image_size // config.patch_size) ** 2} image tokens, D={config.dim}; "
              "fp32 and bf16 per backend",
        note=f"bf16: {bf16_condition()}")
    _check(family)
    _check_breakdowns(mmperf_report, "training step")
    stages = {b["implementation"]: set(b["stages"]) for b in mmperf_report.figures
              if b["kind"] == "breakdown" and b["family"] == "training step"}
    assert {"forward", "backward", "optimizer"} <= stages["sdpa float32"], stages


CLAIM_BACKENDS = {"math (explicit attention)": "math", "sdpa": "sdpa", "local": "local"}


def _built_on_first_call(build: Callable[[], Workload]) -> Callable[[], object]:
    """A step whose model and optimiser are built when it first runs (in the warm-up)."""
    built: list[Workload] = []

    def step() -> object:
        if not built:
            built.append(build())
        return built[0].fn()

    return step


def test_claim_mixed_precision(mmperf_report: Any, plan: Plan) -> None:
    """The seed's mixed-precision claim, measured: per backend, the bf16-autocast training step
    against the fp32 step of the same backend, as an interleaved pair with its own interval
    (never a ratio of two medians), pooled over fresh processes until the interval clears the
    claimed 1.25x or the claim's stated budget is spent. Its own test, and each step built at
    its first call, so that a pooled worker re-runs only the two steps of its pair."""
    case = plan.training
    pairs = {label: (_built_on_first_call(lambda b=backend: case.build(
                         b, "bfloat16", "cpu", emulated_ok=True)),
                     _built_on_first_call(lambda b=backend: case.build(b, "float32", "cpu")))
             for label, backend in CLAIM_BACKENDS.items()}
    claim = mmperf_report.claim(
        MIXED_PRECISION_CLAIM, claimed=(1.25, 3.0), measured=pairs,
        text=f"bf16 autocast against fp32 for the same training step ({case.name}), backend by "
             f"backend; 'significant' read as at least 25 % faster. Hardware: "
             f"{bf16_condition()}.")
    for label in pairs:
        low, high = claim.interval[label]
        assert low < claim.measured[label] < high, (label, claim)
        processes = claim.processes[label]
        assert 1 <= processes <= claim.budget["max_processes"], (label, claim)
        decided = low >= 1.25 or high < 1.25
        assert claim.decided[label] == decided, (label, claim)
    first = claim.interval["math (explicit attention)"]
    expected = ("confirmed" if first[0] >= 1.25 else "refuted" if first[1] < 1.25
                else "inconclusive")
    assert claim.verdict == expected, claim


def test_family_loader_feeding_the_step(mmperf_report: Any, plan: Plan) -> None:
    """The seed's DataLoader and the fast loader, each feeding the same training steps; images/s
    end to end, and the share of the loop spent waiting for data (the stall fraction) as the
    family's breakdown."""
    case = plan.loader_training
    works = {"seed DataLoader": case.build("seed"), "fast loader": case.build("fast")}
    try:
        for work in works.values():
            work.fn()  # start the persistent workers outside the measurement
        family = mmperf_report.family(
            "loader -> step", {name: work.fn for name, work in works.items()},
            baseline="seed DataLoader", items=case.batch_size * case.steps, unit="images",
            breakdown=False, memory=False,
            title=f"Loader feeding the step: {case.images} JPEGs of {case.min_side}-"
                  f"{case.max_side} px, batches of {case.batch_size}, {case.steps} steps a call")
        _check(family)
        runs = {name: [work.fn() for _ in range(3)] for name, work in works.items()}
    finally:
        for work in works.values():
            work.close()
    # Where the loop's time goes: waiting for the next batch (the data stall) or in the step.
    # The profiler cannot split this (the loaders work in their worker processes), the loop's
    # own clock can: a breakdown of 3 runs per loader, which the headline names as the
    # bottleneck, and the per-run stall fractions for their spread.
    for name, results in runs.items():
        assert all(0 <= r.stall_fraction <= 1 for r in results), (name, results)
        mmperf_report.add(
            "breakdown", family="loader -> step", implementation=name, repeats=len(results),
            stages={"data stall": sum(r.data_s for r in results) / len(results),
                    "training step": sum(r.step_s for r in results) / len(results)},
            total_s=sum(r.wall_s for r in results) / len(results))
    _check_breakdowns(mmperf_report, "loader -> step")
    mmperf_report.add("stall", family="loader -> step", title="Data-stall fraction (share of "
                      "the loop's wall time spent waiting for the next batch), 3 runs each",
                      stall_fraction={name: sorted(r.stall_fraction for r in results)
                                      for name, results in runs.items()})
