"""What every asv benchmark class of ``bench_*.py`` shares: base classes, parameters, threads.

asv calls ``setup`` and the benchmarks with the parameters positionally, in ``param_names``
order (``impl``, [``dtype``,] ``device``, ``case``); a class without ``dtype`` measures float32.
The base classes' names start with ``_`` so that asv does not collect them. Under
``MMPERF_BENCH_QUICK`` (the smoke pass of ``make test``) :func:`quick_case` shrinks the costly
cases, and :func:`check_code_under_test` makes sure asv measures the commit's ``reference``.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, ClassVar

import torch

from .cases import LongSequenceCase
from .inputs import DEVICES, Workload
from .ratios import counters, interleaved_ratio, quick_mode
from .training_cases import LoaderTrainingCase, TrainingCase

# torch intra-op threads in asv benchmark processes. One, because on a shared machine with few cores
# two OpenMP threads wait on each other whenever another job holds a core, which slows a
# two-thread run and makes it far less steady (docs/measurements.md#between-process-noise,
# docs/measurements.md#busy-runner). A fixed count also makes thread-dependent counters (SDPA's
# per-thread buffers) host-independent.
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
    windows of 256), a loader feeding training for one batch and one step. That pass checks that
    every benchmark and parameter runs, not what it costs; at full size these cases took most of
    its time."""
    if not quick_mode():
        return case
    if isinstance(case, TrainingCase):
        return replace(case, batch_size=min(case.batch_size, 4))
    if isinstance(case, LongSequenceCase):
        return replace(case, tokens=min(case.tokens, 1024))
    if isinstance(case, LoaderTrainingCase):  # one batch, one step; its own cached dataset
        return replace(case, name=f"{case.name}-quick", images=min(case.images, case.batch_size),
                       steps=1)
    return case


def case_params(impls: Iterable[str], cases: Mapping[str, Any], *, dtypes: Iterable[str] = (),
                exclude: Iterable[str] = ()) -> list[list[str]]:
    """asv ``params``: implementations (less ``exclude``), [dtypes,] devices, case names."""
    dropped = set(exclude)
    params = [[i for i in impls if i not in dropped]]
    if dtypes:
        params.append(list(dtypes))
    return [*params, list(DEVICES), list(cases)]
