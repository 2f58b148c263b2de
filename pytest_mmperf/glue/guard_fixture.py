"""The pytest side of the guards: the ``mmperf_guard`` fixture's :class:`PytestGuard`.

:class:`pytest_mmperf.guards.Guard` measures, decides and counts without pytest. This module
adds what only a pytest run has:

* settings from ``--mmperf-*`` / ini / env, results recorded for the session's report;
* worker hand-off: a timing guard pools fresh processes that re-run the same test item
  (:mod:`pytest_mmperf.timing.isolation`, :mod:`pytest_mmperf.glue.workers`); in such a worker,
  guard calls before the one being measured return placeholders, the measured one writes its
  samples and ends the test with a skip;
* skips: under pytest-xdist timing guards and report families skip (parallel workers distort
  timing), ``no_sync`` off CUDA and the inconclusive policy ``skip`` use ``pytest.skip``;
* under pytest-xdist, the snapshot cases a worker updates are logged for the controller
  (:mod:`pytest_mmperf.glue.xdist`), which saves the file once;
* a failing timing guard's message ends with the command that re-runs just that test with a
  larger budget (:func:`rerun_command`);
* which isolation the timing workers really got (fork server, or fresh interpreters after a
  fallback), for the terminal summary and the JSON ``settings`` (:func:`isolation_used`);
* the timing marker: a timing guard in a test without ``mmperf_timing`` fails at once, naming the
  marker to add (collection marks the tests it can see calling timing guards:
  :mod:`pytest_mmperf.glue.timing_marker`), so ``-m "not mmperf_timing"`` and ``pytest --benchmark``
  select what they promise.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import pytest

from pytest_mmperf.constants import BENCHMARK_BUDGET_S, BENCHMARK_PROCESSES, DEFAULT_SNAPSHOTS
from pytest_mmperf.glue.options import SETTINGS_BY_NAME, get_settings
from pytest_mmperf.glue.workers import option_takes_value, passthrough_args, pytest_spawner
from pytest_mmperf.guards import (
    Guard,
    GuardFailure,
    GuardResult,
    GuardSettings,
    Instruments,
    Spawner,
)
from pytest_mmperf.timing.forkserver import ForkServer, fork_available
from pytest_mmperf.timing.isolation import WorkerSpec, write_worker_output
from pytest_mmperf.timing.measure import PairSamples

XDIST_SKIP_REASON = ("timing guards and report families are skipped under pytest-xdist: parallel "
                     "workers distort timing (run them with -n 0)")
RESULTS_KEY = pytest.StashKey[list[GuardResult]]()
SNAPSHOT_STORE_KEY = pytest.StashKey[Any]()
# In a pytest-xdist worker: (nodeid, case, values) of every snapshot case updated, in order.
SNAPSHOT_UPDATES_KEY = pytest.StashKey[list[tuple[str, str, dict[str, Any]]]]()
FORK_SERVER_KEY = pytest.StashKey[list[Any]]()
# How the session's timing workers started: {"fork": n, "spawn": n, "fallback": reason | None}.
ISOLATION_KEY = pytest.StashKey[dict[str, Any]]()
RATIO_KINDS = ("faster", "not_slower")
TIMING_MARKER = "mmperf_timing"
# The options the messages name where the core names GuardSettings fields.
_BUDGET, _PROCESSES, _BENCHMARK, _UPDATE = (
    SETTINGS_BY_NAME[name].option for name in ("budget", "processes", "benchmark",
                                               "update_snapshots"))
UPDATE_HINT = f"rerun pytest with {_UPDATE} to record the new values"


def session_results(config: pytest.Config) -> list[GuardResult]:
    """Every guard result recorded in this session, in call order."""
    recorded: list[GuardResult] = config.stash.get(RESULTS_KEY, [])  # type: ignore[arg-type]
    return list(recorded)


def snapshot_store(config: pytest.Config) -> Any:
    """The session's snapshot store, created on first use (the plugin saves it at session end)."""
    store = config.stash.get(SNAPSHOT_STORE_KEY, None)
    if store is None:
        from pytest_mmperf.counting.snapshots import SnapshotStore

        path = get_settings(config).snapshots or config.rootpath / DEFAULT_SNAPSHOTS
        store = config.stash[SNAPSHOT_STORE_KEY] = SnapshotStore(path, UPDATE_HINT)
    return store


def under_xdist(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker (env var or ``config.workerinput``)."""
    return bool(os.environ.get("PYTEST_XDIST_WORKER")) or hasattr(config, "workerinput")


class _LazySnapshotStore:
    """Loads the store (and snapshots.py) only when a test snapshots; in a pytest-xdist worker,
    logs the cases it updates (the worker never saves: the controller does, once)."""

    def __init__(self, config: pytest.Config, nodeid: str = "") -> None:
        self._config, self._nodeid = config, nodeid

    def check(self, *args: Any, **kwargs: Any) -> Any:
        outcome = snapshot_store(self._config).check(*args, **kwargs)
        if outcome.status == "updated" and hasattr(self._config, "workerinput"):
            log = self._config.stash.setdefault(SNAPSHOT_UPDATES_KEY, [])
            log.append((self._nodeid, outcome.name, dict(outcome.new)))
        return outcome


class PytestGuard(Guard):
    """A :class:`Guard` bound to one test item of a pytest run."""

    # The core's advice in GuardSettings terms, spelled as this run's command-line options.
    how_to_decide = (f"raise {_BUDGET} / {_PROCESSES}, or run `pytest {_BENCHMARK}`, for a clear "
                     "decision")
    isolation_off = f"{_PROCESSES}=1 turns it off"

    def __init__(self, settings: GuardSettings, *, nodeid: str, device: str,
                 recorder: Callable[[GuardResult], None], spawner: Spawner | None,
                 snapshot_store: Any, worker: WorkerSpec | None, under_xdist: bool,
                 is_marked: Callable[[], bool], instruments: Instruments | None = None,
                 placeholders: bool = False) -> None:
        super().__init__(settings, nodeid=nodeid, device=device, recorder=recorder,
                         spawner=spawner, snapshot_store=snapshot_store, instruments=instruments)
        self.worker, self.under_xdist, self.is_marked = worker, under_xdist, is_marked
        # In a side process of a comparison across commits every guard call is a placeholder:
        # the process is there to reach and serve one benchmark, not to check anything.
        self.placeholders = placeholders
        self.failed_calls: list[int] = []  # indices of this test's guard calls that failed
        # rerun(processes=...) -> the shell command that re-runs this test with a larger budget
        self.rerun: Callable[..., str] | None = None

    def _fail(self, result: GuardResult) -> NoReturn:
        __tracebackhide__ = True
        self.failed_calls.append(self.call_index)
        timing = result.kind in RATIO_KINDS or (result.kind == "scaling"
                                                and result.extra.get("metric") == "time")
        if timing and result.decided_by != "worker-error" and self.rerun is not None:
            # The recorded result keeps the core's message; the failure names the command.
            hint = self.rerun(processes=result.kind in RATIO_KINDS)
            raise GuardFailure(f"{result.message}\nre-run with a larger budget: {hint}", result)
        super()._fail(result)

    def _skip(self, reason: str, result: GuardResult | None = None) -> NoReturn:
        pytest.skip(reason)

    def _record(self, result: GuardResult) -> None:
        if self.worker is None:  # a worker's results belong to the parent's guard
            super()._record(result)

    def _start(self, kind: str, name: str | None, device: str, *, timing: bool,
               timing_run: Callable[[float, int], PairSamples] | None = None
               ) -> GuardResult | None:
        __tracebackhide__ = True
        super()._start(kind, name, device, timing=timing, timing_run=timing_run)
        if self.placeholders:
            return GuardResult(nodeid=self.nodeid, kind=kind, name=name, metric=kind,
                               estimate=None, threshold=None, verdict="skipped",
                               decided_by="worker", n_processes=0, device=device,
                               message="not checked in a baseline side process")
        if self.worker is not None:
            return self._in_worker(kind, name, device, timing_run)
        if not timing:
            return None
        if self.under_xdist:
            label = f"{kind}({name})" if name else f"{kind}()"
            self._record(GuardResult(nodeid=self.nodeid, kind=kind, name=name, metric=kind,
                                     estimate=None, threshold=None, verdict="skipped",
                                     decided_by="skip", n_processes=0, device=device,
                                     message=XDIST_SKIP_REASON))
            pytest.skip(f"{label}: {XDIST_SKIP_REASON}")
        if not self.is_marked():
            pytest.fail(
                f"{self.nodeid} calls the timing guard {kind}() but is not marked as a timing "
                f"test, so `-m \"not {TIMING_MARKER}\"` and `pytest --benchmark` cannot select it "
                f"correctly. Add @pytest.mark.{TIMING_MARKER} to the test (or "
                f"pytestmark = pytest.mark.{TIMING_MARKER} to its module); pytest-mmperf marks "
                "tests automatically only when it can see the call in the test, its fixtures or "
                "the helper functions of the test module and conftest files.", pytrace=False)
        return None

    def _in_worker(self, kind: str, name: str | None, device: str,
                   timing_run: Callable[[float, int], PairSamples] | None) -> GuardResult:
        """Worker mode: placeholders before the target call, measure-and-stop at it."""
        spec = self.worker
        assert spec is not None
        index = self.call_index
        if index < spec.index:
            failed = index in spec.failed
            placeholder = GuardResult(
                nodeid=self.nodeid, kind=kind, name=name, metric=kind, estimate=None,
                threshold=None, verdict="fail" if failed else "skipped", decided_by="worker",
                n_processes=0, device=device,
                message=f"{kind}(): failed in the parent process (not measured in an mmperf "
                        "worker)" if failed else "not measured in an mmperf worker")
            if failed:  # the same control flow as in the parent (pytest.raises, try blocks)
                super()._fail(placeholder)
            return placeholder
        error = None
        if spec.nodeid != self.nodeid:
            error = f"worker ran {self.nodeid!r} but was asked to measure {spec.nodeid!r}"
        elif index > spec.index or timing_run is None:
            error = (f"guard call #{spec.index + 1} of {self.nodeid} is {kind}() in the worker, "
                     "not the ratio guard the parent measured: the test takes a different path "
                     "in a fresh process (make its guard calls deterministic)")
        if error is not None:
            write_worker_output(spec.output, {"error": error})
            pytest.skip(f"mmperf worker {spec.process}: {error}")
        assert timing_run is not None
        samples = timing_run(spec.budget_s, spec.seed)
        write_worker_output(spec.output, {"samples": samples.to_dict()})
        pytest.skip(f"mmperf worker {spec.process}: measured guard call #{index + 1} "
                    f"({samples.n_blocks} rounds), samples written")


def guard_settings(config: pytest.Config) -> GuardSettings:
    """The run's :class:`GuardSettings` (``--benchmark`` defaults resolved by config)."""
    s = get_settings(config)
    return GuardSettings(budget_s=s.budget, processes=s.processes, confidence=s.confidence,
                         inconclusive=s.inconclusive, seed=s.seed,
                         update_snapshots=s.update_snapshots, threads=s.threads)


def guard_for_request(request: pytest.FixtureRequest) -> PytestGuard:
    """The guard of the requesting test, configured from the run's mmperf settings."""
    config = request.config
    device = "cpu"
    if "mmperf_device" in request.fixturenames:
        device = str(request.getfixturevalue("mmperf_device"))
    try:
        worker = WorkerSpec.from_env()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    node = request.node
    from pytest_mmperf.constants import SIDE_ENV

    guard = PytestGuard(guard_settings(config), nodeid=node.nodeid, device=device,
                        recorder=config.stash.setdefault(RESULTS_KEY, []).append,
                        spawner=None, snapshot_store=_LazySnapshotStore(config, node.nodeid),
                        worker=worker, under_xdist=under_xdist(config),
                        is_marked=lambda: node.get_closest_marker(TIMING_MARKER) is not None,
                        placeholders=bool(os.environ.get(SIDE_ENV)))
    guard.spawner = _noting_isolation(config, pytest_spawner(
        config, node.nodeid, lambda: guard.failed_calls, lambda: fork_server(config)))
    guard.rerun = lambda processes: rerun_command(config, node.nodeid, processes=processes)
    return guard


def rerun_command(config: pytest.Config, nodeid: str, *, processes: bool = True) -> str:
    """The shell command that re-runs just ``nodeid`` with a larger timing budget.

    The budget is the ``--benchmark`` default (8 s per process, 5 processes), or twice this
    run's budget and two more processes when the run already used as much. The test's path is
    relative to the directory pytest was invoked from; the options of the run that change what
    the node id means or how the plugin measures (``-p``, ``-o``, ``--mmperf-*``, as a timing
    worker gets them) are kept. ``processes``: name ``--mmperf-processes`` too (ratio guards;
    a time scaling guard measures in one process).
    """
    s = get_settings(config)
    path, sep, rest = nodeid.partition("::")
    target = nodeid
    if path:
        try:
            target = os.path.relpath(config.rootpath / path, config.invocation_params.dir)
        except ValueError:  # another drive (Windows)
            target = os.fspath(config.rootpath / path)
        target += sep + rest

    kept: list[str] = []
    args = passthrough_args(config.invocation_params.args, option_takes_value(config))
    skip_next = False
    for arg in args:  # drop the budget and processes this run had: the command sets them
        if skip_next:
            skip_next = False
        elif arg.split("=", 1)[0] in (_BUDGET, _PROCESSES):
            skip_next = "=" not in arg
        else:
            kept.append(arg)
    budget = max(BENCHMARK_BUDGET_S, 2 * s.budget)
    command = ["pytest", target, *kept, f"{_BUDGET}={budget:g}"]
    if processes:
        command.append(f"{_PROCESSES}={max(BENCHMARK_PROCESSES, s.processes + 2)}")
    return " ".join(shlex.quote(part) for part in command)


def isolation_used(config: pytest.Config) -> dict[str, Any]:
    """How this session's timing workers started, for the report's ``settings``:
    ``isolation_used`` ``"none"`` (no worker), ``"fork"``, ``"spawn"`` or ``"fork+spawn"`` (the
    fork server failed midway), ``isolation_workers`` {mode: count} and ``isolation_fallback``
    (why workers were fresh interpreters although ``--mmperf-isolation=fork`` asked for the
    fork server; None when they were not, or when ``spawn`` was asked for)."""
    noted = config.stash.get(ISOLATION_KEY, None) or {}
    counts = {mode: int(noted.get(mode, 0)) for mode in ("fork", "spawn")}
    used = "+".join(mode for mode in ("fork", "spawn") if counts[mode]) or "none"
    return {"isolation_used": used, "isolation_workers": counts,
            "isolation_fallback": noted.get("fallback")}


def note_isolation(config: pytest.Config, mode: str, fallback: str | None = None) -> None:
    """Count one timing worker started by ``mode``; keep the first fallback reason."""
    noted = config.stash.setdefault(ISOLATION_KEY, {"fork": 0, "spawn": 0, "fallback": None})
    noted[mode] = noted.get(mode, 0) + 1
    if fallback and not noted.get("fallback"):
        noted["fallback"] = fallback


def _noting_isolation(config: pytest.Config, spawn: Spawner) -> Spawner:
    """``spawn``, noting after each worker whether it was forked or a fresh interpreter."""

    def noting(index: int, process: int, budget_s: float, seed: int) -> PairSamples:
        server = fork_server(config)
        try:
            return spawn(index, process, budget_s, seed)
        finally:
            if server is not None and not server.broken:
                note_isolation(config, "fork")
            elif server is not None:
                note_isolation(config, "spawn", f"fork server failed: {server.failure}")
            elif get_settings(config).isolation == "fork":
                note_isolation(config, "spawn", f"fork unavailable: os.fork does not exist on "
                                                f"{sys.platform}")
            else:
                note_isolation(config, "spawn")

    return noting


def fork_server(config: pytest.Config) -> ForkServer | None:
    """The fork server for the session's timing-guard workers (started at the first worker,
    shared with later sessions of this process, closed at exit); None under
    ``--mmperf-isolation=spawn`` or without os.fork."""
    holder = config.stash.get(FORK_SERVER_KEY, None)
    if holder is None:
        server = None
        if get_settings(config).isolation == "fork" and fork_available():
            server = ForkServer.shared(sys.executable, config.rootpath)
        holder = config.stash[FORK_SERVER_KEY] = [server]
    return holder[0]
