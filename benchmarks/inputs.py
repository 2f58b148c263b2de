"""What a case runs on: seeded inputs cached per process, and the :class:`Workload` it builds.

Inputs come from :mod:`pytest_mmperf.data.synthetic` (the generator the tests use) and are cached
per process, keyed by their spec and seed (asv calls ``setup`` for every benchmark and
parameter). Modules are built under a forked, seeded RNG: the same weights in every process, the
caller's RNG intact. JPEG datasets are written once into :func:`cache_dir` and reused.

Devices and dtypes are checked here: a combination this host cannot run (no CUDA, no native
bf16) raises ``NotImplementedError`` (asv: ``n/a``; pytest: a skip).
"""

from __future__ import annotations

import functools
import os
import pathlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

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


# ------------------------------------------------------------------------------ checks
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


def check_choice(value: str, accepted: tuple[str, ...], what: str) -> None:
    """``ValueError`` naming ``what`` when ``value`` is not one of ``accepted``."""
    if value not in accepted:
        raise ValueError(f"{what} {value!r} is not known; accepted: {', '.join(accepted)}")


# ------------------------------------------------------------------------------ running
def seeded(seed: int, make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build a module with weights drawn from ``seed`` without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make().eval()


def inference(op: Callable[[], Any], device: str, dtype: str) -> Callable[[], Any]:
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


def close_loader_workers(loader: Any) -> None:
    """Stop a loader's persistent worker processes now (they exit when their iterator is
    collected otherwise). DataLoader exposes no public call for it: this function alone reaches
    its ``_iterator``, and does nothing when that is gone."""
    inner = getattr(loader, "loader", loader)
    iterator = getattr(inner, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


# ------------------------------------------------------------------------------ cached inputs
@functools.cache
def cache_dir() -> pathlib.Path:
    """Where on-disk inputs (JPEG datasets) live: ``$MMPERF_BENCH_CACHE`` or a fixed folder in
    the temp dir, shared by processes and runs (the dataset writer is idempotent)."""
    root = os.environ.get("MMPERF_BENCH_CACHE") or os.path.join(
        tempfile.gettempdir(), "pytest-mmperf-bench")
    path = pathlib.Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def jpeg_dataset(name: str, spec: BatchSpec, seed: int, quality: int) -> JpegDataset:
    """``spec.batch_size`` JPEG files with captions, written once into :func:`cache_dir`."""
    root = cache_dir() / f"{name}-s{seed}-q{quality}"
    return write_jpeg_dataset(root, spec, seed=seed, quality=quality)


@functools.lru_cache(maxsize=4)
def batch_images(spec: BatchSpec, seed: int) -> list[Any]:
    """The images of one synthetic batch (never modified by the pipelines)."""
    return list(make_batch(spec, seed=seed).images)


@functools.lru_cache(maxsize=8)
def cross_features(spec: FeatureSpec, seed: int, device: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Text tokens (B, N_txt, D) and image tokens (B, N_img, D) on ``device``."""
    feats = make_features(spec, seed=seed, device=device)
    return feats.text_tokens, feats.image_tokens


@functools.lru_cache(maxsize=16)
def cross_attention(impl: str, dim: int, heads: int, seed: int, device: str) -> torch.nn.Module:
    """The seed's cross-attention module (``impl="seed"``) or the corrected one with backend
    ``impl``, weights drawn from ``seed`` (every backend gets the same weights)."""
    from reference.attention import CrossAttention, SeedCrossAttention

    if impl == "seed":
        module = seeded(seed, lambda: SeedCrossAttention(dim, heads))
    else:
        module = seeded(seed, lambda: CrossAttention(dim, heads, backend=impl))
    return module.to(device)


@functools.lru_cache(maxsize=4)
def joint_qkv(spec: FeatureSpec, seed: int, device: str
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, k, v), each (B, H, N, D/H) float32 on ``device``: the joint text+image sequence of
    ``spec`` (N = text + image tokens, text first) projected by a seeded self-attention."""
    from reference.attention import SelfAttention, joint_sequence

    feats = make_features(spec, seed=seed)
    tokens, _ = joint_sequence(feats.text_tokens, feats.image_tokens)  # (B, N, D)
    module = cast(SelfAttention, seeded(seed, lambda: SelfAttention(spec.dim, spec.heads)))
    w = module.weights()
    with torch.inference_mode():
        q = F.linear(tokens, w.q_weight, w.q_bias)
        k, v = F.linear(tokens, w.kv_weight, w.kv_bias).chunk(2, dim=-1)
        b, n, d = q.shape
        heads = [x.reshape(b, n, spec.heads, d // spec.heads).transpose(1, 2).contiguous()
                 for x in (q, k, v)]
    # Plain tensors (not inference tensors), so callers outside inference mode can use them.
    q_h, k_h, v_h = (x.clone().to(device) for x in heads)
    return q_h, k_h, v_h


def clear_caches() -> None:
    """Forget every cached input (tests of determinism rebuild them)."""
    for cached in (batch_images, cross_features, cross_attention, joint_qkv):
        cached.cache_clear()
