"""The training cases of the registry: a training step, and a loader feeding training steps.

``TrainingCase`` (one forward/backward/AdamW step of :class:`reference.training.ImageTextModel`
per attention backend and precision) and ``LoaderTrainingCase`` (a loader feeding those steps)
build :class:`~benchmarks.inputs.Workload` objects like the cases of :mod:`benchmarks.cases`.
The report helpers at the end turn them into dicts of callables for ``mmperf_report.family``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from pytest_mmperf.data.synthetic import BatchSpec, JpegDataset

from .cases import SEED_LOADER_WARNINGS
from .inputs import (
    Workload,
    check_choice,
    check_dtype,
    close_loader_workers,
    jpeg_dataset,
    resolve_device,
    seeded,
)

TRAIN_IMPLS: tuple[str, ...] = ("math", "sdpa", "mha", "local", "seed_sparse")
TRAIN_BASELINE = "math"
# Benchmark dtype names (as DTYPES) -> train_step's precision. float16 needs CUDA (GradScaler).
TRAIN_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class TrainingCase:
    """One training step (forward, backward, AdamW step) of
    :class:`reference.training.ImageTextModel` on a seeded random batch.

    ``impl`` is the attention backend of every attention layer; ``dtype`` the step's precision
    (``float32``; ``bfloat16`` autocast; ``float16`` autocast + GradScaler, CUDA only). The
    model is in ``train()`` mode, so ``seed_sparse`` applies its dropout, as in the article.
    Each ``build`` makes its own model and optimiser (steps change the weights), from the same
    seed: every impl starts from the same weights.
    """

    name: str
    batch_size: int
    # ModelConfig fields that differ from its defaults (224 px in 32 px patches, D=128, ...)
    model: Mapping[str, int] = field(default_factory=dict)
    seed: int = 0

    def config(self) -> Any:
        """The case's :class:`reference.training.ModelConfig` (validated there)."""
        from reference.training import ModelConfig

        return ModelConfig(**self.model)

    def build(self, impl: str, dtype: str = "float32", device: str = "cpu", *,
              emulated_ok: bool = False) -> Workload:
        """``emulated_ok=True`` runs bf16 on a CPU without native bf16 (for reports that
        measure the slowdown; asv and guards leave it out)."""
        check_choice(impl, TRAIN_IMPLS, f"training impl for case {self.name!r}")
        check_choice(dtype, TRAIN_DTYPES, f"dtype for training case {self.name!r}")
        dev = resolve_device(device)
        if dtype == "float16" and not dev.startswith("cuda"):
            raise NotImplementedError(f"{self.name}: float16 training (autocast + GradScaler) "
                                      f"needs CUDA, not {dev}")
        if dtype == "bfloat16" and not emulated_ok:
            check_dtype(dtype, dev)
        from reference.training import ImageTextModel, make_train_batch, train_step

        model = cast(Any, seeded(self.seed, lambda: ImageTextModel(self.config(), impl)))
        model = model.to(dev).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler("cuda") if dtype == "float16" else None
        batch = make_train_batch(self.config(), self.batch_size, seed=self.seed, device=dev)
        precision = _PRECISION[dtype]

        def step() -> float:
            return train_step(model, batch, optimizer, precision=precision, scaler=scaler)

        return Workload(self.name, impl, dev, dtype, step)


TRAINING_CASES: dict[str, TrainingCase] = {
    # The default widths (reference.training.ModelConfig): 224 px, 49 image tokens, D=128,
    # batch 32 as the seed's loader delivers it: projections and MLPs dominate.
    "clip-tiny-b32": TrainingCase("clip-tiny-b32", batch_size=32),
    # 1024 image tokens (256 px in 8 px patches), D=64: attention dominates the step.
    "long-1024": TrainingCase("long-1024", batch_size=2, model={
        "image_size": 256, "patch_size": 8, "dim": 64, "image_layers": 1, "text_layers": 1,
        "context_length": 16, "vocab_size": 512}),
    # A model so small that a loop feeding it is bound by its loader (224 px, D=32, B=8).
    "micro-b8": TrainingCase("micro-b8", batch_size=8, model={
        "dim": 32, "heads": 2, "image_layers": 1, "text_layers": 1, "context_length": 16,
        "vocab_size": 256}),
}


LOADER_TRAINING_IMPLS: tuple[str, ...] = ("seed", "fast")


@dataclass(frozen=True)
class LoaderTrainingCase:
    """A loader feeding :func:`reference.training.train_step` for ``steps`` steps.

    ``seed``: :func:`reference.preprocess.make_seed_loader` with the article's settings
    (batch_size=32 unless ``batch_size`` says otherwise, 4 workers, pinned, persistent);
    ``fast``: ``make_fast_loader`` with ``workers`` workers. Both over the same JPEG files, into
    the ``training`` case's model (224 px); workers and the model share the host's cores. A
    call runs ``steps`` timed steps (:func:`reference.training.run_loader_training`, no
    warm-up: ``build`` runs one step, which starts the persistent workers).
    """

    name: str
    images: int
    min_side: int
    max_side: int
    batch_size: int = 32
    steps: int = 2
    training: str = "clip-tiny-b32"
    quality: int = 90
    workers: int = 2
    seed: int = 0

    def dataset(self) -> JpegDataset:
        spec = BatchSpec(batch_size=self.images, min_side=self.min_side, max_side=self.max_side)
        return jpeg_dataset(self.name, spec, self.seed, self.quality)

    def build(self, impl: str, dtype: str = "float32", device: str = "cpu") -> Workload:
        check_choice(impl, LOADER_TRAINING_IMPLS, f"loader impl for case {self.name!r}")
        check_choice(dtype, ("float32",), f"dtype for loader-training case {self.name!r}")
        dev = resolve_device(device)
        data = self.dataset()
        paths, captions = [str(p) for p in data.paths], list(data.captions)
        from pytest_mmperf.data.synthetic import SimpleTokenizer
        from reference.preprocess import make_fast_loader, make_seed_loader
        from reference.training import ImageTextModel, run_loader_training

        train = TRAINING_CASES[self.training]
        config = train.config()
        loader: Any
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=SEED_LOADER_WARNINGS)
            if impl == "seed":
                loader = make_seed_loader(paths, captions, batch_size=self.batch_size)
            else:
                loader = make_fast_loader(paths, captions, batch_size=self.batch_size,
                                          num_workers=self.workers,
                                          device=None if dev == "cpu" else dev)
        model = cast(Any, seeded(train.seed, lambda: ImageTextModel(config, "sdpa")))
        model = model.to(dev).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        tokenizer = SimpleTokenizer(vocab_size=config.vocab_size,
                                    context_length=config.context_length)

        def run(steps: int = self.steps) -> Any:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=SEED_LOADER_WARNINGS)
                return run_loader_training(loader, model, optimizer, tokenizer, steps=steps,
                                           warmup_steps=0)

        run(1)  # starts the persistent workers; not part of any measurement
        return Workload(self.name, impl, dev, dtype, run,
                        close=lambda: close_loader_workers(loader))


LOADER_TRAINING_CASES: dict[str, LoaderTrainingCase] = {
    # 128 JPEGs of 640-800 px, batches of 32 (the seed's): one epoch of four steps per call.
    "jpeg128-b32": LoaderTrainingCase("jpeg128-b32", images=128, min_side=640, max_side=800,
                                      steps=4),
}


# --- report helpers: dicts of zero-argument callables for ``mmperf_report.family`` -----------


def training_family(case: str = "clip-tiny-b32", impls: tuple[str, ...] = TRAIN_IMPLS,
                    dtypes: tuple[str, ...] = ("float32", "bfloat16"), device: str = "cpu",
                    ) -> dict[str, Workload]:
    """``{"<impl> <dtype>": step}`` for one training case: every combination this host can run
    (bf16 included where it is emulated: the report states the hardware condition, see
    :func:`bf16_condition`). Items per call: ``TRAINING_CASES[case].batch_size`` images."""
    out: dict[str, Workload] = {}
    for impl in impls:
        for dtype in dtypes:
            try:
                out[f"{impl} {dtype}"] = TRAINING_CASES[case].build(impl, dtype, device,
                                                                    emulated_ok=True)
            except NotImplementedError:
                continue
    return out


def mixed_precision_pair(case: str = "clip-tiny-b32", impl: str = "sdpa", device: str = "cpu",
                         ) -> dict[str, Workload]:
    """The seed's "mixed precision significantly reduces training time", as two steps:
    ``{"bf16 autocast": ..., "fp32": ...}`` (baseline ``"fp32"``)."""
    spec = TRAINING_CASES[case]
    return {"bf16 autocast": spec.build(impl, "bfloat16", device, emulated_ok=True),
            "fp32": spec.build(impl, "float32", device)}


def bf16_condition(device: str = "cpu") -> str:
    """The hardware condition under which a bf16 verdict holds, in words."""
    from pytest_mmperf.devices import cpu_model, has_native_bf16

    where = cpu_model() if device == "cpu" else device
    if has_native_bf16(device):
        return f"{where}: native bf16 (AVX512-BF16 / AMX or a bf16 GPU)"
    return f"{where}: no native bf16, autocast emulates it (expect a slowdown)"


def loader_training_family(case: str = "jpeg128-b32") -> dict[str, Workload]:
    """``{"seed DataLoader": ..., "fast loader": ...}``: each call trains ``steps`` steps fed
    by that loader and returns its :class:`reference.training.LoaderTrainingResult` (images/s,
    stall fraction). Close the workloads (``.close()``) when done: they hold worker processes.
    Items per call: ``steps * batch_size`` images."""
    spec = LOADER_TRAINING_CASES[case]
    return {"seed DataLoader": spec.build("seed"), "fast loader": spec.build("fast")}


def loader_training_results(case: str = "jpeg128-b32", repeats: int = 3
                            ) -> dict[str, list[Any]]:
    """Run each loader of :func:`loader_training_family` ``repeats`` times, interleaved, and
    return their :class:`~reference.training.LoaderTrainingResult` lists (workers closed)."""
    family = loader_training_family(case)
    results: dict[str, list[Any]] = {name: [] for name in family}
    try:
        for _ in range(repeats):
            for name, work in family.items():
                results[name].append(work())
    finally:
        for work in family.values():
            work.close()
    return results
