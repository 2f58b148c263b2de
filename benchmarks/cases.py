"""The case registry: one source of truth for the asv suite and the pytest guards.

A *case* is a frozen dataclass naming one workload size (``PreprocessCase``, ``LoaderCase``,
``AttentionCase``, ``LongSequenceCase``; the training cases are in
:mod:`benchmarks.training_cases`). ``case.build(impl, dtype, device)`` returns a
:class:`~benchmarks.inputs.Workload`: a zero-argument callable that runs one implementation of
``reference/`` once on the cached, seeded inputs of :mod:`benchmarks.inputs`.

* asv (``bench_*.py``) enumerates the registries below as ``params``; a combination this host
  cannot run (no CUDA, no native bf16) raises ``NotImplementedError`` from ``build``, which asv
  reports as skipped (``n/a``) when it happens in ``setup``.
* pytest (``tests/perf``) imports the same registries (``from benchmarks.cases import ...``,
  with the repository root on ``sys.path``: run ``python -m pytest`` from the root) and turns
  ``NotImplementedError`` into ``pytest.skip``.

Adding a case: add one entry to a registry (e.g. ``ATTENTION_CASES``). The asv classes take their
``params`` from the registry keys, and the pytest guards parametrise over the same dict, so the
case is benchmarked per commit and guarded in the test suite without further code. Parameters
never depend on the host: every registry and implementation list is a constant, so result files
from different machines line up; availability is decided in ``build``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_mmperf.data.synthetic import BatchSpec, FeatureSpec, JpegDataset

from .inputs import (
    Workload,
    batch_images,
    check_choice,
    check_dtype,
    close_loader_workers,
    cross_attention,
    cross_features,
    inference,
    joint_qkv,
    jpeg_dataset,
    resolve_device,
)

# ------------------------------------------------------------------------------ preprocessing


PREPROCESS_IMPLS: tuple[str, ...] = ("naive", "seed", "batched")
PREPROCESS_BASELINE = "naive"


@dataclass(frozen=True)
class PreprocessCase:
    """B RGB images of varied size (long side in [min_side, max_side]) -> (B, 3, 224, 224).

    Implementations (:mod:`reference.preprocess`): ``naive`` (the seed's per-image v1 loop),
    ``seed`` (the seed's "optimised" per-image transform, in memory), ``batched`` (the corrected
    uint8 path with ``threads`` resize threads: fixed, so the case means the same on every host).
    On CUDA the naive versions copy their float32 batch to the device, as the seed would; the
    batched one sends uint8 and normalises there.
    """

    name: str
    batch_size: int
    min_side: int
    max_side: int
    image_format: str = "pil"
    threads: int = 2
    seed: int = 0

    def batch_spec(self) -> BatchSpec:
        return BatchSpec(batch_size=self.batch_size, min_side=self.min_side,
                         max_side=self.max_side, image_format=self.image_format)

    def images(self) -> list[Any]:
        """The case's images (cached per process; never modified by the pipelines)."""
        return batch_images(self.batch_spec(), self.seed)

    def build(self, impl: str, dtype: str = "float32", device: str = "cpu") -> Workload:
        check_choice(impl, PREPROCESS_IMPLS, f"preprocess impl for case {self.name!r}")
        check_choice(dtype, ("float32",), f"dtype for preprocess case {self.name!r}")
        dev = resolve_device(device)
        images = self.images()
        from reference.preprocess import (
            BatchedPreprocessor,
            NaivePreprocessor,
            SeedOptimizedPreprocessor,
        )

        op: Callable[[], Any]
        if impl == "batched":
            batched = BatchedPreprocessor(num_threads=self.threads,
                                          device=None if dev == "cpu" else dev)
            op = lambda: batched(images)  # noqa: E731
        else:
            loop = NaivePreprocessor() if impl == "naive" else SeedOptimizedPreprocessor()
            if dev == "cpu":
                op = lambda: loop(images)  # noqa: E731
            else:
                op = lambda: loop(images).to(dev)  # noqa: E731
        # No inference_mode: nothing needs grad, and the batched path works on pool threads,
        # where a caller's (thread-local) inference mode would not apply anyway.
        return Workload(self.name, impl, dev, dtype, op)


PREPROCESS_CASES: dict[str, PreprocessCase] = {
    # 16 photos of 480-800 px (aspect 1:2 .. 2:1), as a CLIP-style loader would get them.
    "varied16": PreprocessCase("varied16", batch_size=16, min_side=480, max_side=800),
}


LOADER_IMPLS: tuple[str, ...] = ("seed", "fast")
SEED_LOADER_WARNINGS = r".*(worker processes in total|'pin_memory' argument is set as true)"
LOADER_BASELINE = "seed"


@dataclass(frozen=True)
class LoaderCase:
    """Reading a JPEG dataset from disk into one normalised (B, 3, 224, 224) batch.

    ``seed``: the article's ``OptimizedDataset`` + ``DataLoader(batch_size=32, num_workers=4,
    pin_memory=True, persistent_workers=True)`` as written. ``fast``: :func:`make_fast_loader`
    (reduced-size decode, uint8 workers, one fused normalise) with ``workers`` processes, fixed
    so that the case is the same on every host. Workers persist between iterations, as in
    training; the first iteration (which starts them) happens before any measurement.
    """

    name: str
    images: int
    min_side: int
    max_side: int
    quality: int = 90
    workers: int = 2
    seed: int = 0

    def batch_spec(self) -> BatchSpec:
        return BatchSpec(batch_size=self.images, min_side=self.min_side,
                         max_side=self.max_side)

    def dataset(self) -> JpegDataset:
        """The JPEG files (written once into :func:`~benchmarks.inputs.cache_dir`, reused)."""
        return jpeg_dataset(self.name, self.batch_spec(), self.seed, self.quality)

    def build(self, impl: str, dtype: str = "float32", device: str = "cpu") -> Workload:
        check_choice(impl, LOADER_IMPLS, f"loader impl for case {self.name!r}")
        check_choice(dtype, ("float32",), f"dtype for loader case {self.name!r}")
        dev = resolve_device(device)
        data = self.dataset()
        paths = [str(p) for p in data.paths]
        from reference.preprocess import make_fast_loader, make_seed_loader

        loader: Any
        if impl == "seed":
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=SEED_LOADER_WARNINGS)
                loader = make_seed_loader(paths, list(data.captions))
        else:
            loader = make_fast_loader(paths, list(data.captions), num_workers=self.workers,
                                      device=None if dev == "cpu" else dev)

        def epoch() -> Any:
            last = None
            with warnings.catch_warnings():
                # The seed's settings warn on every new iterator (more workers than cores,
                # pin_memory without a GPU): known and intended, so keep them out of the logs.
                warnings.filterwarnings("ignore", message=SEED_LOADER_WARNINGS)
                for images, _ in loader:
                    last = images.to(dev) if dev != "cpu" else images
            return last

        return Workload(self.name, impl, dev, dtype, epoch,
                        close=lambda: close_loader_workers(loader))


LOADER_CASES: dict[str, LoaderCase] = {
    # 16 JPEGs of 896-1152 px (q90): large enough that reduced-size decoding matters.
    "jpeg16": LoaderCase("jpeg16", images=16, min_side=896, max_side=1152),
}


# ------------------------------------------------------------------------------ attention
ATTENTION_IMPLS: tuple[str, ...] = ("seed", "math", "sdpa", "mha")
ATTENTION_BASELINE = "math"  # the obviously correct explicit version ("naive")


@dataclass(frozen=True)
class AttentionCase:
    """Text tokens (B, N_txt, D) attending to image tokens (B, N_img, D) through a full module.

    Implementations: ``seed`` (the article's module as written: other maths, kept as the
    "before"), ``math`` / ``sdpa`` / ``mha`` (:class:`reference.attention.CrossAttention`
    backends, identical maths and weights). The text padding mask of the synthetic batch is not
    passed: the seed module cannot take one, and text padding never changes real positions.
    """

    name: str
    batch_size: int
    text_tokens: int
    image_tokens: int
    dim: int = 768
    heads: int = 12
    seed: int = 0
    # (impl, dtype) pairs left out on purpose, with the reason asv/pytest report.
    excluded: tuple[tuple[str, str, str], ...] = ()

    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(batch_size=self.batch_size, image_tokens=self.image_tokens,
                           text_tokens=self.text_tokens, dim=self.dim, heads=self.heads)

    def flops(self, impl: str) -> int:
        from reference.attention import attention_flops, seed_attention_flops

        if impl == "seed":
            return seed_attention_flops(self.batch_size, self.text_tokens, self.image_tokens,
                                        self.dim)
        return attention_flops(self.batch_size, self.text_tokens, self.image_tokens, self.dim,
                               self.heads)

    def build(self, impl: str, dtype: str = "float32", device: str = "cpu") -> Workload:
        """Workload of ``impl`` at ``dtype`` on ``device`` (NotImplementedError if unavailable)."""
        check_choice(impl, ATTENTION_IMPLS, f"attention impl for case {self.name!r}")
        for ex_impl, ex_dtype, reason in self.excluded:
            if (ex_impl, ex_dtype) == (impl, dtype):
                raise NotImplementedError(f"{self.name}: {impl} at {dtype} is excluded: {reason}")
        dev = resolve_device(device)
        check_dtype(dtype, dev)
        text, image = cross_features(self.feature_spec(), self.seed, dev)
        module = cross_attention(impl, self.dim, self.heads, self.seed, dev)
        if impl == "seed":
            op: Callable[[], Any] = lambda: module(text, image)  # noqa: E731
        else:
            op = lambda: module(text, image, None)  # noqa: E731
        return Workload(self.name, impl, dev, dtype, inference(op, dev, dtype), self.flops(impl))


_MHA_BF16 = ("mha", "bfloat16",
             "nn.MultiheadAttention's function leaves its fused path under bf16 autocast on CPU "
             "(far slower than sdpa): too slow to time per commit")

ATTENTION_CASES: dict[str, AttentionCase] = {
    # CLIP ViT-L/14 @ 336 px image tokens (577) and CLIP text (77), D=768, 12 heads.
    "clip-b4": AttentionCase("clip-b4", batch_size=4, text_tokens=77, image_tokens=577,
                             excluded=(_MHA_BF16,)),
}


LONG_IMPLS: tuple[str, ...] = ("math", "sdpa", "local")
LONG_BASELINE = "math"


@dataclass(frozen=True)
class LongSequenceCase:
    """Self-attention core over one joint text+image sequence of ``tokens`` tokens.

    q, k, v (B, H, N, d) are the synthetic joint sequence (``text_tokens`` text tokens first)
    projected by a seeded module, so only the attention pattern is timed: ``math`` (explicit
    matmul/softmax/matmul, O(N²) memory), ``sdpa`` (fused dense), ``local`` (sliding window of
    ``window`` keys, O(N·w)). Projections are left out: at D=768 they cost as much as the
    attention itself and would hide the difference being tracked.
    """

    name: str
    tokens: int
    batch_size: int = 1
    text_tokens: int = 77
    dim: int = 768
    heads: int = 12
    window: int = 256
    seed: int = 0

    def feature_spec(self) -> FeatureSpec:
        """The joint sequence as synthetic features: ``text_tokens`` text, the rest image."""
        return FeatureSpec(batch_size=self.batch_size, image_tokens=self.tokens - self.text_tokens,
                           text_tokens=self.text_tokens, dim=self.dim, heads=self.heads)

    def flops(self, impl: str) -> int:
        from reference.attention import attention_flops

        window = self.window if impl == "local" else None
        return attention_flops(self.batch_size, self.tokens, self.tokens, self.dim, self.heads,
                               window, projections=False)

    def build(self, impl: str, dtype: str = "float32", device: str = "cpu") -> Workload:
        check_choice(impl, LONG_IMPLS, f"long-sequence impl for case {self.name!r}")
        dev = resolve_device(device)
        check_dtype(dtype, dev)
        q, k, v = joint_qkv(self.feature_spec(), self.seed, dev)
        from reference.attention import attention_core, local_attention

        if impl == "local":
            op: Callable[[], Any] = lambda: local_attention(q, k, v, self.window)  # noqa: E731
        else:
            op = lambda: attention_core(q, k, v, impl)  # noqa: E731
        return Workload(self.name, impl, dev, dtype, inference(op, dev, dtype), self.flops(impl))


LONG_CASES: dict[str, LongSequenceCase] = {
    # 4096 joint tokens: where the window (256) is small next to N, so O(N·w) vs O(N²) shows.
    # (At 2048 tokens sparse and fused dense come close, docs/regression-suite.md: not worth a
    # second case per commit.)
    "joint-4096": LongSequenceCase("joint-4096", tokens=4096),
}
