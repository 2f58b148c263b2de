"""The performance cases: one source of truth for the asv suite and the pytest guards.

A *case* is a frozen dataclass naming one workload size (``PreprocessCase``, ``LoaderCase``,
``AttentionCase``, ``LongSequenceCase``). ``case.build(impl, ...)`` returns a :class:`Workload`:
a zero-argument callable that runs one implementation of ``reference/`` once on cached, seeded
inputs made by :mod:`pytest_mmperf.data.synthetic` (the generator the tests use), plus its metadata.

* asv (``bench_*.py``) enumerates the registries below as ``params``; a combination this host
  cannot run (no CUDA, no native bf16) raises ``NotImplementedError`` from ``build``, which asv
  reports as skipped (``n/a``) when it happens in ``setup``.
* pytest (``tests/perf``) imports the same registries (``from benchmarks.common import ...``,
  with the repository root on ``sys.path``: run ``python -m pytest`` from the root) and turns
  ``NotImplementedError`` into ``pytest.skip``.

Adding a case: add one entry to a registry (e.g. ``ATTENTION_CASES``). The asv classes take their
``params`` from the registry keys, and the pytest guards parametrise over the same dict, so the
case is benchmarked per commit and guarded in the test suite without further code.

Parameters never depend on the host: every registry, implementation list and device list is a
constant, so result files from different machines line up; availability is decided in ``build``.

Inputs are cached per process (asv calls ``setup`` for every benchmark and parameter). Modules
are built under a forked, seeded RNG: the same weights in every process, the caller's RNG intact.
"""

from __future__ import annotations

import functools
import os
import pathlib
import statistics
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F

from pytest_mmperf.data.synthetic import (
    BatchSpec,
    FeatureSpec,
    JpegDataset,
    make_batch,
    make_features,
    write_jpeg_dataset,
)

# Listed on every host (asv needs the same params everywhere; unavailable ones skip in setup).
DEVICES: tuple[str, ...] = ("cpu", "cuda")
DTYPES: tuple[str, ...] = ("float32", "bfloat16")

# Set by ``tools/perf_gate.py --check``: ratios then time one call of each side (a smoke run).
QUICK_ENV = "MMPERF_BENCH_QUICK"


def quick_mode() -> bool:
    """True when the suite runs as a smoke check (``MMPERF_BENCH_QUICK=1``)."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


# torch intra-op threads in asv benchmark processes. One, because on a shared 2-core machine
# two OpenMP threads wait on each other whenever another job holds a core: measured here under
# load ~3.5, the naive preprocessing loop took 71-80 ms (median) with 1 thread and 455-524 ms
# with 2, with max/min 1.2-1.4 against ~4; cross-attention 86-113 ms against 202-219 ms. A
# fixed count also makes thread-dependent counters (SDPA's per-thread buffers) host-independent.
THREADS_ENV = "MMPERF_BENCH_THREADS"


def bench_threads() -> int:
    """Threads for benchmark processes: ``$MMPERF_BENCH_THREADS`` or 1."""
    raw = os.environ.get(THREADS_ENV, "").strip() or "1"
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"environment {THREADS_ENV}={raw!r} is not a thread count; accepted: an "
                         "integer >= 1 (unset: 1)")
    return threads


def use_bench_threads() -> int:
    """Set torch's intra-op threads to :func:`bench_threads` (asv ``setup`` calls this)."""
    threads = bench_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def check_code_under_test() -> None:
    """Under asv in a built environment, ``reference`` must be the installed commit's copy,
    never the checkout beside asv.conf.json (that would benchmark the working tree for every
    commit). asv sets ``ASV_CONF_DIR`` / ``ASV_ENV_TYPE`` in benchmark processes."""
    conf, env_type = os.environ.get("ASV_CONF_DIR"), os.environ.get("ASV_ENV_TYPE")
    if not conf or env_type in (None, "existing"):
        return
    import reference

    origin = pathlib.Path(reference.__file__).resolve().parent
    if origin == pathlib.Path(conf).resolve() / "reference":
        raise ImportError(f"benchmarks import reference from the checkout ({origin}), not from "
                          f"the asv environment's install of the commit under test")


# ------------------------------------------------------------------------------ workloads


@dataclass(frozen=True)
class Workload:
    """One implementation of one case, ready to call.

    ``fn()`` runs the operation once (under ``torch.inference_mode``, and autocast for bf16) and
    returns its result. On CUDA it does not wait for the GPU: use :meth:`run_synced` when timing
    with a host clock (asv's ``time_*``), or pass ``device`` to a synchronising timer.
    ``flops`` is the analytic FLOP count of one call where it is known, else None.
    """

    case: str
    impl: str
    device: str
    dtype: str
    fn: Callable[[], Any]
    flops: int | None = None
    close: Callable[[], None] = field(default=lambda: None, repr=False)

    def __call__(self) -> Any:
        return self.fn()

    def run_synced(self) -> None:
        """Run once and wait for the device: what a host-side timer must measure."""
        self.fn()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)


def resolve_device(device: str) -> str:
    """``"cpu"`` -> ``"cpu"``; ``"cuda"`` -> ``"cuda:0"`` if a GPU is usable, else
    ``NotImplementedError`` (asv: skipped). Unknown names raise ``ValueError``."""
    if device == "cpu":
        return "cpu"
    if device in ("cuda", "cuda:0"):
        if not torch.cuda.is_available():
            raise NotImplementedError(f"device {device!r}: no CUDA device on this host")
        return "cuda:0"
    raise ValueError(f"device {device!r} is not a benchmark device; accepted: {', '.join(DEVICES)}")


def check_dtype(dtype: str, device: str) -> None:
    """``"float32"`` always runs; ``"bfloat16"`` (autocast) only with native bf16 support."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not a benchmark dtype; accepted: {', '.join(DTYPES)}")
    if dtype == "bfloat16":
        from pytest_mmperf.devices import has_native_bf16

        if not has_native_bf16(device):
            raise NotImplementedError(
                f"dtype 'bfloat16' on {device}: no native bf16 (AVX512-BF16/AMX or a bf16 GPU); "
                "autocast would emulate it and measure a slowdown, not the implementation"
            )


def _check_choice(value: str, accepted: tuple[str, ...], what: str) -> None:
    if value not in accepted:
        raise ValueError(f"{what} {value!r} is not known; accepted: {', '.join(accepted)}")


@functools.cache
def cache_dir() -> pathlib.Path:
    """Where on-disk inputs (JPEG datasets) live: ``$MMPERF_BENCH_CACHE`` or a fixed folder in
    the temp dir, shared by processes and runs (the dataset writer is idempotent)."""
    root = os.environ.get("MMPERF_BENCH_CACHE") or os.path.join(
        tempfile.gettempdir(), "pytest-mmperf-bench")
    path = pathlib.Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _seeded(seed: int, make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build a module with weights drawn from ``seed`` without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make().eval()


def _wrap(op: Callable[[], Any], device: str, dtype: str) -> Callable[[], Any]:
    """Run ``op`` under inference mode, and bf16 autocast when ``dtype`` asks for it."""
    if dtype == "bfloat16":
        from reference.attention import autocast_context

        def run_autocast() -> Any:
            with torch.inference_mode(), autocast_context(device, torch.bfloat16):
                return op()

        return run_autocast

    def run() -> Any:
        with torch.inference_mode():
            return op()

    return run


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
        return _images(self)

    def build(self, impl: str, dtype: str = "float32", device: str = "cpu") -> Workload:
        _check_choice(impl, PREPROCESS_IMPLS, f"preprocess impl for case {self.name!r}")
        _check_choice(dtype, ("float32",), f"dtype for preprocess case {self.name!r}")
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


@functools.lru_cache(maxsize=4)
def _images(case: PreprocessCase) -> list[Any]:
    return list(make_batch(case.batch_spec(), seed=case.seed).images)


PREPROCESS_CASES: dict[str, PreprocessCase] = {
    # 16 photos of 480-800 px (aspect 1:2 .. 2:1), as a CLIP-style loader would get them.
    "varied16": PreprocessCase("varied16", batch_size=16, min_side=480, max_side=800),
}


LOADER_IMPLS: tuple[str, ...] = ("seed", "fast")
_SEED_LOADER_WARNINGS = r".*(worker processes in total|'pin_memory' argument is set as true)"
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
        """The JPEG files (written once into :func:`cache_dir`, reused afterwards)."""
        root = cache_dir() / f"{self.name}-s{self.seed}-q{self.quality}"
        return write_jpeg_dataset(root, self.batch_spec(), seed=self.seed, quality=self.quality)

    def build(self, impl: str, dtype: str = "float32", device: str = "cpu") -> Workload:
        _check_choice(impl, LOADER_IMPLS, f"loader impl for case {self.name!r}")
        _check_choice(dtype, ("float32",), f"dtype for loader case {self.name!r}")
        dev = resolve_device(device)
        data = self.dataset()
        paths = [str(p) for p in data.paths]
        from reference.preprocess import make_fast_loader, make_seed_loader

        loader: Any
        if impl == "seed":
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_SEED_LOADER_WARNINGS)
                loader = make_seed_loader(paths, list(data.captions))
        else:
            loader = make_fast_loader(paths, list(data.captions), num_workers=self.workers,
                                      device=None if dev == "cpu" else dev)

        def epoch() -> Any:
            last = None
            with warnings.catch_warnings():
                # The seed's settings warn on every new iterator here (4 workers on 2 cores,
                # pin_memory without a GPU): known and intended, so keep them out of the logs.
                warnings.filterwarnings("ignore", message=_SEED_LOADER_WARNINGS)
                for images, _ in loader:
                    last = images.to(dev) if dev != "cpu" else images
            return last

        def close() -> None:
            # Persistent workers exit when their iterator is collected; make it explicit.
            inner = getattr(loader, "loader", loader)
            iterator = getattr(inner, "_iterator", None)
            if iterator is not None:
                iterator._shutdown_workers()

        return Workload(self.name, impl, dev, dtype, epoch, close=close)


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
        _check_choice(impl, ATTENTION_IMPLS, f"attention impl for case {self.name!r}")
        for ex_impl, ex_dtype, reason in self.excluded:
            if (ex_impl, ex_dtype) == (impl, dtype):
                raise NotImplementedError(f"{self.name}: {impl} at {dtype} is excluded: {reason}")
        dev = resolve_device(device)
        check_dtype(dtype, dev)
        text, image = _cross_inputs(self, dev)
        module = _attention_module(self, impl, dev)
        if impl == "seed":
            op: Callable[[], Any] = lambda: module(text, image)  # noqa: E731
        else:
            op = lambda: module(text, image, None)  # noqa: E731
        return Workload(self.name, impl, dev, dtype, _wrap(op, dev, dtype), self.flops(impl))


@functools.lru_cache(maxsize=8)
def _cross_inputs(case: AttentionCase, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    feats = make_features(case.feature_spec(), seed=case.seed, device=device)
    return feats.text_tokens, feats.image_tokens


@functools.lru_cache(maxsize=16)
def _attention_module(case: AttentionCase, impl: str, device: str) -> torch.nn.Module:
    from reference.attention import CrossAttention, SeedCrossAttention

    if impl == "seed":
        module = _seeded(case.seed, lambda: SeedCrossAttention(case.dim, case.heads))
    else:
        module = _seeded(case.seed, lambda: CrossAttention(case.dim, case.heads, backend=impl))
    return module.to(device)


_MHA_BF16 = ("mha", "bfloat16",
             "nn.MultiheadAttention's function leaves its fused path under bf16 autocast on CPU "
             "(~1.4 s against 0.02 s for sdpa here): too slow to time per commit")

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

    def flops(self, impl: str) -> int:
        from reference.attention import attention_flops

        window = self.window if impl == "local" else None
        return attention_flops(self.batch_size, self.tokens, self.tokens, self.dim, self.heads,
                               window, projections=False)

    def build(self, impl: str, dtype: str = "float32", device: str = "cpu") -> Workload:
        _check_choice(impl, LONG_IMPLS, f"long-sequence impl for case {self.name!r}")
        dev = resolve_device(device)
        check_dtype(dtype, dev)
        q, k, v = _long_inputs(self, dev)
        from reference.attention import attention_core, local_attention

        if impl == "local":
            op: Callable[[], Any] = lambda: local_attention(q, k, v, self.window)  # noqa: E731
        else:
            op = lambda: attention_core(q, k, v, impl)  # noqa: E731
        return Workload(self.name, impl, dev, dtype, _wrap(op, dev, dtype), self.flops(impl))


@functools.lru_cache(maxsize=4)
def _long_inputs(case: LongSequenceCase, device: str
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, k, v), each (B, H, N, D/H) float32 on ``device``."""
    from reference.attention import SelfAttention, joint_sequence

    spec = FeatureSpec(batch_size=case.batch_size, image_tokens=case.tokens - case.text_tokens,
                       text_tokens=case.text_tokens, dim=case.dim, heads=case.heads)
    feats = make_features(spec, seed=case.seed)
    tokens, _ = joint_sequence(feats.text_tokens, feats.image_tokens)  # (B, N, D)
    module = cast(SelfAttention, _seeded(case.seed, lambda: SelfAttention(case.dim, case.heads)))
    w = module.weights()
    with torch.inference_mode():
        q = F.linear(tokens, w.q_weight, w.q_bias)
        k, v = F.linear(tokens, w.kv_weight, w.kv_bias).chunk(2, dim=-1)
        b, n, d = q.shape
        heads = [x.reshape(b, n, case.heads, d // case.heads).transpose(1, 2).contiguous()
                 for x in (q, k, v)]
    # Plain tensors (not inference tensors), so callers outside inference mode can use them.
    q_h, k_h, v_h = (x.clone().to(device) for x in heads)
    return q_h, k_h, v_h


LONG_CASES: dict[str, LongSequenceCase] = {
    # 4096 joint tokens: where the window (256) is small next to N, so O(N·w) vs O(N²) shows.
    # (At 2048 sparse and fused dense were within 1.5x here: not worth a second case per commit.)
    "joint-4096": LongSequenceCase("joint-4096", tokens=4096),
}


# ------------------------------------------------------------------------------ measurement


def interleaved_ratio(candidate: Workload, baseline: Workload, *, budget_s: float = 3.0,
                      min_blocks: int = 6) -> float:
    """Median over rounds of time(candidate) / time(baseline), measured interleaved in this
    process (:func:`pytest_mmperf.timing.measure.time_pair`: calibrated blocks, random order per
    round,
    device synchronisation). Larger is worse, as asv assumes. ``MMPERF_BENCH_QUICK=1`` cuts it to
    one call of each (a smoke run)."""
    from pytest_mmperf.timing.measure import BlockTimer, time_pair

    if candidate.device != baseline.device:
        raise ValueError(f"interleaved_ratio: candidate on {candidate.device} but baseline on "
                         f"{baseline.device}; a ratio needs one device")
    if quick_mode():
        # Smoke run: one synchronised call of each side proves the pair runs (time_pair would
        # add two warm-up and one calibration call per side: ~10 s for explicit 4096 attention).
        timer = BlockTimer(candidate.device)
        return timer(candidate.fn, 1) / max(timer(baseline.fn, 1), 1e-12)
    samples = time_pair(candidate.fn, baseline.fn, candidate.device, budget_s=budget_s,
                        min_blocks=min_blocks, warmup_s=0.1, inference_mode=False, seed=0)
    return statistics.median(c / b for c, b in zip(samples.candidate_s, samples.baseline_s,
                                                   strict=True))


def counters(work: Workload, metric: str) -> int:
    """One deterministic counter of one call of ``work``: ``"ops"`` (dispatched aten ops),
    ``"flops"`` or ``"peak_memory"`` (bytes of tensor memory), via
    :func:`pytest_mmperf.counting.counters.measure_counters`."""
    from pytest_mmperf.counting.counters import measure_counters

    # Op and FLOP counts are the same on the first call; peak memory needs a warm-up call so
    # that one-time allocations (thread pools, kernel workspaces) are not counted.
    warmup = 1 if metric == "peak_memory" else 0
    report = measure_counters(work.fn, work.device, metrics=(metric,), warmup=warmup)
    if metric == "ops":
        return report.total_ops()
    value = report.scalars().get("peak_memory_bytes" if metric == "peak_memory" else metric)
    if value is None:
        raise ValueError(f"counter {metric!r} is not available for {work.case}/{work.impl} on "
                         f"{work.device}; accepted: ops, flops, peak_memory")
    return int(value)



# ------------------------------------------------------------------------------ asv base classes
# asv calls setup and benchmarks with the parameters positionally, in ``param_names`` order
# (``impl``, [``dtype``,] ``device``, ``case``); a class without ``dtype`` measures float32.
# The names start with "_" so that asv does not collect the bases themselves.


class _CaseBenchmark:
    """One registry's cases: ``setup`` builds ``self.work`` for the parameters; ``teardown``
    closes whatever workloads were built (after a skipped ``setup`` too)."""

    registry: ClassVar[Mapping[str, Any]] = {}
    param_names: ClassVar[list[str]] = ["impl", "device", "case"]
    timeout = 120

    def _args(self, params: tuple[Any, ...]) -> dict[str, Any]:
        args = dict(zip(self.param_names, params, strict=True))
        args.setdefault("dtype", "float32")
        return args

    def _case(self, name: str) -> Any:
        return quick_case(self.registry[name])

    def _build(self, impl: str, params: tuple[Any, ...]) -> Workload:
        args = self._args(params)
        return self._case(args["case"]).build(impl, args["dtype"], args["device"])

    def setup(self, *params: Any) -> None:
        use_bench_threads()
        self.work: Workload = self._build(self._args(params)["impl"], params)

    def teardown(self, *params: Any) -> None:
        for name in ("work", "candidate", "baseline"):
            work = getattr(self, name, None)
            if work is not None:
                work.close()


class _CounterBenchmark(_CaseBenchmark):
    """Deterministic counters of one call (the same in every process)."""

    def track_ops(self, *params: Any) -> int:
        return counters(self.work, "ops")

    track_ops.unit = "ops"  # type: ignore[attr-defined]

    def track_peak_memory(self, *params: Any) -> int:
        return counters(self.work, "peak_memory")

    track_peak_memory.unit = "bytes"  # type: ignore[attr-defined]


class _RatioBenchmark(_CaseBenchmark):
    """time(candidate) / time(``baseline_impl`` in float32), interleaved in one process;
    subclasses name the tracked method after their baseline and return :meth:`ratio`."""

    baseline_impl: ClassVar[str] = ""
    ratio_options: ClassVar[dict[str, Any]] = {}

    def setup(self, *params: Any) -> None:
        use_bench_threads()
        args = self._args(params)
        if (args["impl"], args["dtype"]) == (self.baseline_impl, "float32"):
            raise NotImplementedError("the baseline itself (ratio 1 by definition)")
        self.candidate: Workload = self._build(args["impl"], params)
        self.baseline: Workload = self._case(args["case"]).build(
            self.baseline_impl, "float32", args["device"])

    def ratio(self) -> float:
        return interleaved_ratio(self.candidate, self.baseline, **self.ratio_options)


def quick_case(case: Any) -> Any:
    """``case`` itself, or under ``MMPERF_BENCH_QUICK`` (the smoke pass of ``make test``) the same
    case at a smoke size: training steps at batch 4, long sequences at 1024 tokens (still 4
    windows of 256). That pass checks that every benchmark and parameter runs, not what it costs;
    the two kinds took 63 of its 85 s at full size."""
    if not quick_mode():
        return case
    if isinstance(case, TrainingCase):
        return replace(case, batch_size=min(case.batch_size, 4))
    if isinstance(case, LongSequenceCase):
        return replace(case, tokens=min(case.tokens, 1024))
    return case


def case_params(impls: Iterable[str], cases: Mapping[str, Any], *, dtypes: Iterable[str] = (),
                exclude: Iterable[str] = ()) -> list[list[str]]:
    """asv ``params``: implementations (less ``exclude``), [dtypes,] devices, case names."""
    dropped = set(exclude)
    params = [[i for i in impls if i not in dropped]]
    if dtypes:
        params.append(list(dtypes))
    return [*params, list(DEVICES), list(cases)]


# ------------------------------------------------------------------------------ training
# The seed's training side (issue 13): reference/training.py's model, step and loader loop.


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
        _check_choice(impl, TRAIN_IMPLS, f"training impl for case {self.name!r}")
        _check_choice(dtype, TRAIN_DTYPES, f"dtype for training case {self.name!r}")
        dev = resolve_device(device)
        if dtype == "float16" and not dev.startswith("cuda"):
            raise NotImplementedError(f"{self.name}: float16 training (autocast + GradScaler) "
                                      f"needs CUDA, not {dev}")
        if dtype == "bfloat16" and not emulated_ok:
            check_dtype(dtype, dev)
        from reference.training import ImageTextModel, make_train_batch, train_step

        model = cast(Any, _seeded(self.seed, lambda: ImageTextModel(self.config(), impl)))
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
        root = cache_dir() / f"{self.name}-s{self.seed}-q{self.quality}"
        spec = BatchSpec(batch_size=self.images, min_side=self.min_side, max_side=self.max_side)
        return write_jpeg_dataset(root, spec, seed=self.seed, quality=self.quality)

    def build(self, impl: str, dtype: str = "float32", device: str = "cpu") -> Workload:
        _check_choice(impl, LOADER_TRAINING_IMPLS, f"loader impl for case {self.name!r}")
        _check_choice(dtype, ("float32",), f"dtype for loader-training case {self.name!r}")
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
            warnings.filterwarnings("ignore", message=_SEED_LOADER_WARNINGS)
            if impl == "seed":
                loader = make_seed_loader(paths, captions, batch_size=self.batch_size)
            else:
                loader = make_fast_loader(paths, captions, batch_size=self.batch_size,
                                          num_workers=self.workers,
                                          device=None if dev == "cpu" else dev)
        model = cast(Any, _seeded(train.seed, lambda: ImageTextModel(config, "sdpa")))
        model = model.to(dev).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        tokenizer = SimpleTokenizer(vocab_size=config.vocab_size,
                                    context_length=config.context_length)

        def run(steps: int = self.steps) -> Any:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_SEED_LOADER_WARNINGS)
                return run_loader_training(loader, model, optimizer, tokenizer, steps=steps,
                                           warmup_steps=0)

        def close() -> None:
            inner = getattr(loader, "loader", loader)
            iterator = getattr(inner, "_iterator", None)
            if iterator is not None:
                iterator._shutdown_workers()

        run(1)  # starts the persistent workers; not part of any measurement
        return Workload(self.name, impl, dev, dtype, run, close=close)


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
