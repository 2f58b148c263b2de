"""``--mmperf-baseline=REV``: every benchmark of the run measured against REV in the same run.

In the parent run, a test's ``benchmark(fn, ...)`` / ``benchmark.pedantic(...)`` call and each
implementation of ``mmperf_report.family`` are compared across commits after pytest-benchmark
(or the family) has done its own measuring: pairs of side processes re-run the test item, one
with the working tree and one with REV's files (:mod:`pytest_mmperf.baseline`), and the parent
measures them in lockstep and decides. A confirmed slowdown fails the test with a
``GuardFailure``; ``new`` and ``rev-error`` results are reported and pass.

In a side process (``PYTEST_MMPERF_SIDE`` set), the plugin connects to the parent before any
conftest is imported, redirects the repository's imports to REV's files on REV's side, turns
every guard call into a placeholder, serves the benchmark when the test reaches it and reports
the test's error otherwise.
"""

from __future__ import annotations

import mmap
import os
import random
import re
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_mmperf.baseline import revision as rev
from pytest_mmperf.baseline.compare import CompareSettings, compare
from pytest_mmperf.baseline.imports import RevisionImports
from pytest_mmperf.baseline.lockstep import Rendezvous, SideError, Sides, wait_ready
from pytest_mmperf.baseline.side import (
    BENCHMARK_TARGET,
    Benchmarked,
    SideConnection,
    SideSpec,
    family_target,
    serve,
)
from pytest_mmperf.constants import SIDE_ENV
from pytest_mmperf.glue.options import get_settings
from pytest_mmperf.glue.workers import option_takes_value, worker_command
from pytest_mmperf.guards import GuardFailure, GuardResult
from pytest_mmperf.outcomes import MmperfInconclusiveWarning
from pytest_mmperf.timing.isolation import WORKER_ENV

XDIST_SKIP_REASON = ("comparisons across commits (--mmperf-baseline) are skipped under "
                     "pytest-xdist: parallel workers distort timing")
RUN_KEY = pytest.StashKey["BaselineRun"]()
SIDE_KEY = pytest.StashKey["SideRun"]()
OUTPUT_TAIL = 1500
# A comparison pools up to this many pairs per --mmperf-processes: pairs are added only while
# the interval straddles the threshold, and pairs of identical code can disagree by several per
# cent, which three pairs could not always decide (docs/measurements.md#lockstep).
PAIRS_PER_PROCESS = 2


# ======================================================================== the parent
class BaselineRun:
    """The session's comparisons: REV resolved at configure, its files written at the first
    comparison and removed at the end of the session (also after a failure or Ctrl-C)."""

    def __init__(self, config: pytest.Config, revision: rev.Revision) -> None:
        self.config, self.revision = config, revision
        self._copies: dict[str, Path] = {}
        self._files_list: Path | None = None
        self._processes: list[_SideProcess] = []

    # ------------------------------------------------------------------ set-up and clean-up
    def copy_of(self, side: str) -> Path:
        """The files ``side`` imports the repository from: REV's (``git archive``) or the
        working tree's, as it is (:func:`~pytest_mmperf.baseline.revision.copy_working_tree`);
        made at the first comparison."""
        if side not in self._copies:
            if side == "rev":
                self._copies[side] = rev.materialise(self.revision)
            else:
                self._copies[side] = rev.copy_working_tree(self.revision.repo_root,
                                                           self._repository_files())
        return self._copies[side]

    def _repository_files(self) -> frozenset[str]:
        return rev.repository_files(self.revision.repo_root)

    def files_list(self) -> Path:
        if self._files_list is None:
            fd, name = tempfile.mkstemp(prefix="mmperf-repo-files-", suffix=".txt")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("\n".join(sorted(self._repository_files())))
            self._files_list = Path(name)
        return self._files_list

    def _kill_all(self, grace_s: float) -> None:
        """End every side process: after ``grace_s`` seconds (shared) those still running are
        killed."""
        deadline = time.monotonic() + grace_s
        for process in self._processes:
            process.kill(max(0.0, deadline - time.monotonic()))
        self._processes.clear()

    def close(self) -> None:
        self._kill_all(grace_s=0.0)
        for copy in self._copies.values():
            rev.remove(copy)
        self._copies.clear()
        if self._files_list is not None:
            self._files_list.unlink(missing_ok=True)
            self._files_list = None

    # ------------------------------------------------------------------ comparing
    def settings(self) -> CompareSettings:
        s = get_settings(self.config)
        return CompareSettings(tolerance=s.baseline_tolerance, budget_s=s.budget,
                               pairs=PAIRS_PER_PROCESS * s.processes, confidence=s.confidence,
                               inconclusive=s.inconclusive, threads=s.threads, seed=s.seed)

    def compare(self, nodeid: str, target: str, name: str | None, device: str,
                recorder: Callable[[GuardResult], None]) -> GuardResult:
        """Compare one target of test ``nodeid``; record the result; raise ``GuardFailure`` for a
        confirmed slowdown and fail the test for a broken comparison."""
        __tracebackhide__ = True
        settings = self.settings()
        try:
            result = compare(lambda k: self._start_pair(nodeid, target, k, settings),
                             revision=self.revision, settings=settings, nodeid=nodeid,
                             name=name, device=device, budget_note=_budget_note())
        except BaseException:  # Ctrl-C, or a bug: no side may outlive the comparison
            self._kill_all(grace_s=0.0)
            raise
        self._kill_all(grace_s=5.0)  # told to stop: they end on their own
        recorder(result)
        if result.decided_by == "estimate":  # as an undecided timing guard says it
            warnings.warn(MmperfInconclusiveWarning(f"{nodeid}: {result.message}"), stacklevel=2)
        if result.verdict == "fail" or (result.verdict == "inconclusive"
                                        and settings.inconclusive == "fail"):
            from pytest_mmperf.glue.guard_fixture import rerun_command

            raise GuardFailure(result.message + "\n  re-run with a larger budget: "
                               + rerun_command(self.config, nodeid), result)
        if result.verdict == "inconclusive" and settings.inconclusive == "skip":
            pytest.skip(result.message)
        if result.verdict == "error":
            pytest.fail(result.message, pytrace=False)
        return result

    def _start_pair(self, nodeid: str, target: str, k: int, settings: CompareSettings
                    ) -> Sides:
        rendezvous = Rendezvous()
        started: dict[str, _SideProcess] = {}
        try:
            for side in ("head", "rev"):
                started[side] = self._start_side(side, rendezvous, nodeid, target)
            timeout = 120.0 + 10.0 * settings.budget_s

            def ended() -> SideError | None:
                for side, process in started.items():
                    if process.ended():
                        return SideError(side, "lost", "the process ended before it connected:"
                                         f"\n{process.output_tail()}")
                return None

            channels = rendezvous.accept(("head", "rev"), timeout, ended)
            sides = Sides(channels["head"], channels["rev"])
            try:
                wait_ready(sides, timeout)
            except SideError as exc:
                sides.close()
                if exc.kind == "lost":
                    tail = started[exc.side].output_tail()
                    raise SideError(exc.side, exc.kind, f"{exc.message}\n{tail}") from None
                raise
            except BaseException:
                sides.close()
                raise
            return sides
        finally:
            rendezvous.close()

    def _start_side(self, side: str, rendezvous: Rendezvous, nodeid: str, target: str
                    ) -> _SideProcess:
        from pytest_mmperf.glue.guard_fixture import fork_server

        config = self.config
        patterns = tuple(str(p) for p in (config.getini("python_files") or ()))
        spec = SideSpec(side=side, address=_address(rendezvous), token=rendezvous.token,
                        nodeid=nodeid, target=target,
                        repo_root=str(self.revision.repo_root),
                        rev_root=str(self.copy_of(side)),
                        repo_files=str(self.files_list()), test_patterns=patterns)
        command = worker_command(nodeid, rootdir=config.rootpath, inifile=config.inipath,
                                 parent_args=tuple(config.invocation_params.args),
                                 xdist_loaded=config.pluginmanager.hasplugin("xdist"),
                                 takes_value=option_takes_value(config))
        env = {k: v for k, v in os.environ.items()
               if k not in (WORKER_ENV, "PYTEST_XDIST_WORKER")}
        env[SIDE_ENV] = spec.to_env()
        process = _SideProcess.start(command, env=env, cwd=config.rootpath,
                                     server=fork_server(config))
        self._processes.append(process)
        return process


def _address(rendezvous: Rendezvous) -> str | list[Any]:
    address = rendezvous.address
    return address if isinstance(address, str) else list(address)


def _budget_note() -> str:
    return "; raise --mmperf-budget / --mmperf-processes or run pytest --benchmark to decide"


class _SideProcess:
    """A side process: forked from the session's fork server, or a fresh interpreter."""

    def __init__(self, pid: int, output: Path, popen: Any = None) -> None:
        self.pid, self.output, self.popen = pid, output, popen

    @classmethod
    def start(cls, command: list[str], *, env: Mapping[str, str], cwd: Path,
              server: Any) -> _SideProcess:
        import subprocess

        fd, name = tempfile.mkstemp(prefix="mmperf-side-", suffix=".log")
        os.close(fd)
        output = Path(name)
        if server is not None and not server.broken:
            from pytest_mmperf.timing.forkserver import ForkServerError

            try:
                return cls(server.start(command[3:], env=env, output=name, cwd=cwd), output)
            except ForkServerError:
                pass
        handle = output.open("w")
        popen = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=handle,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        handle.close()
        return cls(popen.pid, output, popen)

    def ended(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is not None
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii", errors="replace") as handle:
                state = handle.read().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            return not _pid_alive(self.pid)
        return state in ("Z", "X")

    def output_tail(self) -> str:
        try:
            text = self.output.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""
        return "output tail:\n" + (text if len(text) <= OUTPUT_TAIL else "…" + text[-OUTPUT_TAIL:])

    def kill(self, grace_s: float = 5.0) -> None:
        deadline = time.monotonic() + grace_s
        while not self.ended() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.ended():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.popen is not None:
            self.popen.wait()
        self.output.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def configure(config: pytest.Config) -> None:
    """Resolve ``--mmperf-baseline`` (usage error when it cannot be compared against) and
    register the run; nothing happens without the setting or in a side process."""
    settings = get_settings(config)
    if not settings.baseline or SIDE_ENV in os.environ or os.environ.get(WORKER_ENV):
        return
    try:
        revision = rev.resolve(settings.baseline, config.rootpath)
    except rev.RevisionError as exc:
        raise pytest.UsageError(
            f"pytest-mmperf: invalid baseline {settings.baseline!r} from "
            f"{settings.source('baseline')}: {exc}") from None
    run = config.stash[RUN_KEY] = BaselineRun(config, revision)
    config.add_cleanup(run.close)


def active_run(config: pytest.Config) -> BaselineRun | None:
    return config.stash.get(RUN_KEY, None)


def header_line(config: pytest.Config) -> str | None:
    run = active_run(config)
    return None if run is None else f"mmperf baseline: {run.revision.describe()}"


# ======================================================================== the benchmark fixture
class ComparedBenchmark:
    """pytest-benchmark's fixture, compared against REV after it measured."""

    def __init__(self, fixture: Any, after: Callable[[], None]) -> None:
        object.__setattr__(self, "_fixture", fixture)
        object.__setattr__(self, "_after", after)

    def __call__(self, function_to_benchmark: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> Any:
        __tracebackhide__ = True
        value = self._fixture(function_to_benchmark, *args, **kwargs)
        self._after()
        return value

    def pedantic(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        value = self._fixture.pedantic(target, *args, **kwargs)
        self._after()
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fixture, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._fixture, name, value)


class ServedBenchmark:
    """In a side process: the benchmark call serves the parent instead of measuring here."""

    def __init__(self, fixture: Any, side: SideRun, device: str) -> None:
        object.__setattr__(self, "_fixture", fixture)
        object.__setattr__(self, "_side", side)
        object.__setattr__(self, "_device", device)

    def __call__(self, function_to_benchmark: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> Any:
        self._side.serve(Benchmarked(function_to_benchmark, args, dict(kwargs)), self._device)

    def pedantic(self, target: Callable[..., Any], args: tuple[Any, ...] = (),
                 kwargs: dict[str, Any] | None = None, setup: Callable[[], Any] | None = None,
                 teardown: Callable[..., Any] | None = None, rounds: int = 1,
                 warmup_rounds: int = 0, iterations: int = 1) -> Any:
        self._side.serve(Benchmarked(target, tuple(args), dict(kwargs or {}), setup, teardown),
                         self._device)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fixture, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._fixture, name, value)


def wrap_benchmark(item: pytest.Item) -> Any:
    """Before a test that uses ``benchmark`` runs: compare it (parent) or serve it (side).
    Returns pytest-benchmark's fixture when it was wrapped (the caller puts it back after the
    call: pytest-benchmark's report hook checks its type), else None."""
    funcargs = getattr(item, "funcargs", None)
    if not funcargs or "benchmark" not in funcargs:
        return None
    original = funcargs["benchmark"]
    side = item.config.stash.get(SIDE_KEY, None)
    device = str(funcargs.get("mmperf_device", "cpu"))
    if side is not None:
        if side.spec.target == BENCHMARK_TARGET and side.spec.nodeid == item.nodeid:
            funcargs["benchmark"] = ServedBenchmark(original, side, device)
            return original
        return None
    run = active_run(item.config)
    if run is None:
        return None
    from pytest_mmperf.glue.guard_fixture import RESULTS_KEY, under_xdist

    if under_xdist(item.config):
        pytest.skip(XDIST_SKIP_REASON)
    recorder = item.config.stash.setdefault(RESULTS_KEY, []).append

    def after() -> None:
        __tracebackhide__ = True
        run.compare(item.nodeid, BENCHMARK_TARGET, None, device, recorder)

    funcargs["benchmark"] = ComparedBenchmark(original, after)
    return original


# ======================================================================== report families
class FamilyCommits:
    """What ``mmperf_report.family`` does across commits: compare every implementation (parent)
    or serve the one its side was started for."""

    def __init__(self, config: pytest.Config, nodeid: str,
                 recorder: Callable[[GuardResult], None]) -> None:
        self.config, self.nodeid, self.recorder = config, nodeid, recorder

    def before(self, family: str, implementations: Mapping[str, Callable[[], object]],
               device: str) -> None:
        """In a side process started for one of these implementations: serve it (and end the
        test there)."""
        side = self.config.stash.get(SIDE_KEY, None)
        if side is None or side.spec.nodeid != self.nodeid:
            return
        for name, fn in implementations.items():
            if side.spec.target == family_target(family, name):
                side.serve(Benchmarked(fn), device)

    def after(self, family: str, implementations: Mapping[str, Callable[[], object]],
              device: str) -> None:
        """In the parent: compare each implementation with REV's."""
        __tracebackhide__ = True
        run = active_run(self.config)
        if run is None or self.config.stash.get(SIDE_KEY, None) is not None:
            return
        from pytest_mmperf.glue.guard_fixture import under_xdist

        if under_xdist(self.config):
            return
        failures: list[GuardFailure] = []
        for name in implementations:
            try:
                run.compare(self.nodeid, family_target(family, name), f"{family}/{name}",
                            device, self.recorder)
            except GuardFailure as exc:
                failures.append(exc)
        if failures:
            raise GuardFailure("\n".join(str(f) for f in failures), failures[0].result)


def family_commits(request: pytest.FixtureRequest,
                   recorder: Callable[[GuardResult], None]) -> FamilyCommits | None:
    config = request.config
    if active_run(config) is None and config.stash.get(SIDE_KEY, None) is None:
        return None
    return FamilyCommits(config, request.node.nodeid, recorder)


# ======================================================================== a side process
class SideRun:
    """This process is one side of a comparison (see the module docstring)."""

    def __init__(self, spec: SideSpec, connection: SideConnection,
                 imports: RevisionImports | None) -> None:
        self.spec, self.connection, self.imports = spec, connection, imports

    def serve(self, work: Benchmarked, device: str) -> None:
        """Serve the parent, then end the test (it has done its job in this process)."""
        leaks = self.imports.leaks() if self.imports is not None else None
        try:
            serve(self.connection, work, device, leaks)
        except Exception as exc:  # the benchmark raised here: the parent reports it
            text = f"{type(exc).__name__}: {exc}"
            self.connection.reported = False
            self.connection.error(text, self.classify(text))
            raise
        finally:
            self.connection.close()
        pytest.skip(f"mmperf baseline side {self.spec.side}: served {self.spec.target}")

    def classify(self, text: str) -> str:
        """``missing`` when the failure is code that REV does not have, else ``error``."""
        if self.spec.side != "rev":
            return "error"
        if self.imports is not None and self.imports.missing:
            return "missing"
        rev_root = self.spec.rev_root or "\0"
        if "ImportError" in text and (rev_root in text or "at the baseline revision" in text):
            return "missing"  # cannot import name 'x' from 'pkg' (<REV's file>)
        for module in re.findall(r"module '([\w.]+)' has no attribute", text):
            file = getattr(sys.modules.get(module), "__file__", None) or ""
            if file.startswith(rev_root):
                return "missing"  # a function the working tree has and REV's module not
        return "error"

    # ------------------------------------------------------------------ hooks of the side
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            text = str(report.longrepr)
            self.connection.error(_tail(text), self.classify(text))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]
                                  ) -> Any:
        report = yield
        if report.failed and call.excinfo is not None:
            text = f"{call.excinfo.typename}: {call.excinfo.value}"
            self.connection.error(text, self.classify(
                text + "\n" + str(report.longrepr)))
        return report

    def pytest_sessionfinish(self) -> None:
        if not self.connection.reported:
            what = ("its benchmark() call" if self.spec.target == BENCHMARK_TARGET
                    else self.spec.target.split(":", 1)[1].replace(":", " / "))
            self.connection.error(f"the test ended without reaching {what}", "missing")
        self.connection.close()


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= OUTPUT_TAIL else "…" + text[-OUTPUT_TAIL:]


_LAYOUT_SHIFT: list[object] = []


def shift_memory_layout(seed: str | None = None) -> None:
    """Move this process's later heap and mmap allocations by a random amount, as a fresh
    interpreter's address-space and hash randomisation would.

    Side processes are forked from one server, so without this every side of a session shares
    the server's layout and differs from the other side only in what it did after the fork: a
    difference that is the same for every pair of the session, so it biased the comparison
    (by up to a few per cent for identical code) instead of averaging out across pairs. The two
    sides of one pair shift by the same amount (``seed``: the pair's token), each pair by another:
    a layout that slows one side's code by several per cent then varies between pairs instead of
    within them, and identical code gets identical layouts on both sides.

    The server's heap may be fragmented, and one random allocation can land in any free chunk
    and move nothing; so blocks of log-uniform random sizes (64 B to 16 MiB) are taken from the
    C allocator and kept, which splits free chunks of every size, and an anonymous mapping of a
    random number of pages is made directly (malloc's own mmap cut moves with what it freed).
    The blocks are never written, so they cost address space, not memory."""
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    import ctypes

    malloc = _libc_function("malloc", ctypes.c_void_p, [ctypes.c_size_t])
    for _ in range(rng.randrange(24, 64)):
        size = rng.randrange(1, 1 << rng.randrange(6, 25))
        _LAYOUT_SHIFT.append(malloc(size) if malloc is not None else bytearray(size))
    _LAYOUT_SHIFT.append(mmap.mmap(-1, 4096 * rng.randrange(1, 1024)))


# glibc's mallopt parameters (malloc.h) and the values a side sets: blocks below 32 MiB (the
# largest mmap threshold glibc accepts on 64-bit) come from the heap, which is never trimmed.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
SIDE_MMAP_THRESHOLD = 32 * 1024 * 1024
SIDE_TRIM_THRESHOLD = 1 << 30


def steady_allocator() -> bool:
    """Fix glibc malloc's mmap and trim thresholds in this process, so that a buffer allocated
    and freed every call is reused from the heap instead of being mapped, faulted in and
    returned to the system again on some calls and not others.

    glibc raises its mmap threshold when a mapped block is freed and trims the heap's top when
    it is free; which of the two a process ends up in depends on what else it allocated, so
    two processes running the same code could read very different per-call times and pairs
    could not agree (docs/measurements.md#lockstep). A long-running training or serving
    process reaches the steady state this sets. False where the C library has no mallopt
    (not glibc)."""
    import ctypes

    mallopt = _libc_function("mallopt", ctypes.c_int, [ctypes.c_int, ctypes.c_int])
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, SIDE_MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, SIDE_TRIM_THRESHOLD))


def _libc_function(name: str, restype: Any, argtypes: list[Any]) -> Callable[..., Any] | None:
    """The C library's function ``name`` with its signature set, or None where ctypes cannot
    find it."""
    try:
        import ctypes

        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.restype, function.argtypes = restype, argtypes
    return function


def start_side(config: pytest.Config) -> None:
    """In a side process, before any conftest: connect to the parent and, on REV's side,
    redirect the repository's imports to REV's files."""
    try:
        spec = SideSpec.from_env()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if spec is None or config.stash.get(SIDE_KEY, None) is not None:
        return
    steady_allocator()
    shift_memory_layout(spec.token)
    connection = SideConnection(spec)
    imports = None
    if spec.rev_root:  # both sides import the repository from their copy
        files = Path(spec.repo_files).read_text(encoding="utf-8").splitlines() \
            if spec.repo_files else []
        test_file = Path(config.rootpath) / spec.nodeid.split("::", 1)[0]
        imports = RevisionImports(spec.repo_root, spec.rev_root, files,
                                  test_patterns=spec.test_patterns or ("test_*.py", "*_test.py"),
                                  test_file=test_file).install()
    side = config.stash[SIDE_KEY] = SideRun(spec, connection, imports)
    config.pluginmanager.register(side, "mmperf-baseline-side")


def side_of(config: pytest.Config) -> SideRun | None:
    return config.stash.get(SIDE_KEY, None)
