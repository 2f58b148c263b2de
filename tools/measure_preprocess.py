"""Side-by-side measurements behind the preprocessing choices of ``reference/``.

Usage (from the repository root)::

    .venv/bin/python tools/measure_preprocess.py inmemory --rounds 21 --processes 3
    .venv/bin/python tools/measure_preprocess.py components
    .venv/bin/python tools/measure_preprocess.py breakdown
    .venv/bin/python tools/measure_preprocess.py loader
    .venv/bin/python tools/measure_preprocess.py attention --rounds 5

Every experiment interleaves its variants round by round (so the machine's load hits all of
them alike) and prints, per variant, the median time per call with its quartiles and the ratio
of medians against the first variant; ``--processes N`` repeats it in N fresh processes, since
the spread between processes is large on a shared machine. The machine line (CPU model, torch
CPU capability, threads, Pillow) comes first: results belong in docs/reference-results.md under
that machine, never in a docstring. What each experiment measures: the ``exp_*`` functions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine_line() -> str:
    """CPU model, torch's CPU capability and threads, Pillow and torch versions."""
    import PIL
    import torch

    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next(line.split(":", 1)[1].strip() for line in info
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"(capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads), Pillow {PIL.__version__}")


def interleaved(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, one call of each per round, after one warm-up each."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 \
        else [values[0]] * 3
    return q[0], q[1], q[2]


def print_table(times: dict[str, list[float]], per: str = "call") -> None:
    first = next(iter(times))
    base = statistics.median(times[first])
    for name, values in times.items():
        q1, med, q3 = quartiles(values)
        print(f"  {name:34s} median {med * 1e3:8.2f} ms per {per}  IQR {q1 * 1e3:7.2f}-"
              f"{q3 * 1e3:7.2f}  {first}/this {base / med:5.2f}x")


def exp_inmemory(rounds: int) -> None:
    """The seed's loop against the batched path (default threads, one thread, and with the
    zero-copy export disabled, i.e. the unpack-then-resize path), 16 images of 480-800 px
    (``benchmarks.cases.PREPROCESS_CASES["varied16"]``)."""
    from benchmarks.cases import PREPROCESS_CASES
    from reference.preprocess import BatchedPreprocessor, NaivePreprocessor

    images = PREPROCESS_CASES["varied16"].images()
    fast, one = BatchedPreprocessor(), BatchedPreprocessor(num_threads=1)
    unpack = BatchedPreprocessor(zero_copy=False)

    print(f"  batched strategy: {fast.strategy}")
    print_table(interleaved({
        "naive (seed loop)": lambda: NaivePreprocessor()(images),
        "batched (default)": lambda: fast(images),
        "batched num_threads=1": lambda: one(images),
        "batched zero_copy=False (unpack)": lambda: unpack(images),
    }, rounds))


def exp_components(rounds: int) -> None:
    """Getting the pixels out of Pillow (``np.asarray`` / ``tobytes`` / the Arrow view) and
    resizing them (3-channel against 4-channel uint8, Pillow), per 16 images."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F2

    from benchmarks.cases import PREPROCESS_CASES
    from reference._arrow import rgbx_view

    images = PREPROCESS_CASES["varied16"].images()
    hwc3 = [np.array(im) for im in images]
    import torch

    t3 = [torch.from_numpy(a).permute(2, 0, 1) for a in hwc3]
    t4 = [v.permute(2, 0, 1).unsqueeze(0) for v in (rgbx_view(im) for im in images)
          if v is not None]

    def resize(x: Any) -> object:
        return F2.resize(x, [224, 224], interpolation=InterpolationMode.BILINEAR, antialias=True)

    print_table(interleaved({
        "np.asarray (RGB unpack)": lambda: [np.asarray(im) for im in images],
        "Image.tobytes": lambda: [im.tobytes() for im in images],
        "Arrow view (zero copy)": lambda: [rgbx_view(im) for im in images],
        "uint8 resize, 3-channel HWC view": lambda: [resize(x) for x in t3],
        "uint8 resize, 4-channel RGBX view": lambda: [resize(x) for x in t4],
        "Pillow resize BILINEAR": lambda: [im.resize((224, 224), Image.Resampling.BILINEAR)
                                           for im in images],
    }, rounds), per="16 images")


def exp_breakdown(rounds: int) -> None:
    """The stage breakdown of the batched call (``num_threads=1``) against direct timing of its
    ``normalize_uint8`` call inside the same call, and the figure a plain mean of all profiled
    calls would give (the breakdown takes its central calls)."""
    from benchmarks.cases import PREPROCESS_CASES
    from pytest_mmperf.report.stages import format_breakdown, stage_breakdown
    from reference import _pixels, preprocess

    images = PREPROCESS_CASES["varied16"].images()
    # One thread: every stage is labelled on the calling thread (pool threads' labels are not
    # seen by the profiler's main-thread tree), as in the report's breakdown.
    pre = preprocess.BatchedPreprocessor(num_threads=1)
    inner: list[float] = []
    original = _pixels.normalize_uint8

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            inner.append(time.perf_counter() - t0)

    preprocess.normalize_uint8 = timed  # type: ignore[assignment]
    try:
        for _ in range(rounds):
            pre(images)
        direct = list(inner)
        inner.clear()
        result = stage_breakdown(lambda: pre(images), repeats=rounds)
    finally:
        preprocess.normalize_uint8 = original
    q1, med, q3 = quartiles(direct)
    mean_all = statistics.fmean(c.get("normalize", 0.0) for c in result.calls)
    print(f"  normalize timed directly inside the call: median {med * 1e3:.2f} ms "
          f"(IQR {q1 * 1e3:.2f}-{q3 * 1e3:.2f}, max {max(direct) * 1e3:.2f})")
    print(f"  breakdown (central calls): {result.stages.get('normalize', 0.0) * 1e3:.2f} ms; "
          f"mean of all {rounds} profiled calls: {mean_all * 1e3:.2f} ms")
    print("  " + format_breakdown(result).replace("\n", "\n  "))


def exp_loader(rounds: int) -> None:
    """Decode-only throughput of the loader's files (Pillow with ``draft`` against
    ``torchvision.io.decode_jpeg``) against the seed's DataLoader and the fast loader."""
    from PIL import Image
    from torchvision.io import decode_jpeg, read_file

    from benchmarks.cases import LOADER_CASES
    from reference.preprocess import make_fast_loader, make_seed_loader

    case = LOADER_CASES["jpeg16"]
    data = case.dataset()
    paths = [str(p) for p in data.paths]
    captions = list(data.captions)

    def pil_draft() -> object:
        out = []
        for path in paths:
            with Image.open(path) as im:
                im.draft("RGB", (224, 224))
                im.load()
                out.append(im.size)
        return out

    def tv_decode() -> object:
        return [decode_jpeg(read_file(p)) for p in paths]

    from concurrent.futures import ThreadPoolExecutor

    from reference.preprocess import FastJpegDataset

    items = FastJpegDataset(paths, captions)
    pool = ThreadPoolExecutor(case.workers)  # decoders release the GIL: same parallelism

    def draft_decode(part: list[str]) -> None:
        for path in part:
            with Image.open(path) as im:
                im.draft("RGB", (224, 224))
                im.load()

    def decode_parallel() -> object:
        bounds = [paths[k::case.workers] for k in range(case.workers)]
        return list(pool.map(draft_decode, bounds))

    fast = make_fast_loader(paths, captions, batch_size=len(paths), num_workers=case.workers)
    seed = make_seed_loader(paths, captions, batch_size=len(paths))
    try:
        print_table(interleaved({
            "seed DataLoader (epoch)": lambda: list(seed),
            "fast loader (epoch)": lambda: list(fast),
            f"decode only: Pillow draft, {case.workers} threads": decode_parallel,
            "decode only: Pillow draft, 1 thread": pil_draft,
            "decode only: decode_jpeg, 1 thread": tv_decode,
            "fast items (draft + resize), 1 thread": lambda: [items[i] for i in range(len(items))],
        }, rounds), per=f"{len(paths)} files")
    finally:
        from benchmarks.inputs import close_loader_workers

        for loader in (fast.loader, seed):
            close_loader_workers(loader)


def exp_attention(rounds: int) -> None:
    """The calibrated float32 matmul peak (every size, :mod:`pytest_mmperf.report.calibrate`) and
    the dense SDPA core against local (w=256) attention at 4096 tokens, 12 heads of 64."""
    import torch
    import torch.nn.functional as F

    from pytest_mmperf.report.calibrate import matmul_peak
    from reference._sparse import local_attention, local_pair_count

    peak = matmul_peak("float32", "cpu")
    sizes = ", ".join(f"n={n}: {v:.1f}" for n, v in peak.sizes.items())
    print(f"  float32 matmul peak {peak.value:.1f} GFLOP/s ({sizes}; best size's blocks "
          f"q1-q3 {peak.q1_value:.1f}-{peak.q3_value:.1f})")
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 12, 4096, 64, generator=gen) for _ in range(3))
    dense = 4 * 12 * 4096 * 4096 * 64
    useful = 4 * 12 * local_pair_count(4096, 4096, 256) * 64
    with torch.inference_mode():
        times = interleaved({
            "sdpa (dense core)": lambda: F.scaled_dot_product_attention(q, k, v),
            "local w=256 (blocked)": lambda: local_attention(q, k, v, 256),
        }, rounds)
    print_table(times)
    for name, flops in (("sdpa (dense core)", dense), ("local w=256 (blocked)", useful)):
        rate = flops / statistics.median(times[name]) / 1e9
        print(f"  {name}: {rate:.1f} GFLOP/s (useful FLOPs) = {100 * rate / peak.value:.0f} % "
              f"of the peak")


EXPERIMENTS: dict[str, Callable[[int], None]] = {
    "inmemory": exp_inmemory, "components": exp_components, "breakdown": exp_breakdown,
    "loader": exp_loader, "attention": exp_attention,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--processes", type=int, default=1,
                        help="repeat in this many fresh processes")
    args = parser.parse_args(argv)
    if args.processes > 1:
        for i in range(args.processes):
            print(f"process {i + 1}/{args.processes}", flush=True)
            subprocess.run([sys.executable, __file__, args.experiment, "--rounds",
                            str(args.rounds)], check=True)
        return 0
    print(machine_line())
    EXPERIMENTS[args.experiment](args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
