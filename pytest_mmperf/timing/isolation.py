"""Process isolation for timing guards: re-run one pytest item in fresh worker processes.

Why: the same time ratio measured in different fresh processes differs by far more than its
within-process interval (docs/measurements.md#between-process-noise), because memory placement,
thread-pool start-up and the kernels chosen at first use differ per process. A decision about a
10–25 % difference must therefore pool *processes*, not only more blocks of one.

How: the parent (the user's pytest run) runs::

    <python> -m pytest <nodeid> -p no:cacheprovider -q -x --rootdir=<rootdir> [-c <inifile>]
        -p no:randomly [-n 0] [the parent's -p/-o/--mmperf-* options]

in the rootdir with ``PYTEST_MMPERF_WORKER`` set to a JSON :class:`WorkerSpec`. In that process
the guard fixture is built in worker mode: guard calls before ``index`` return placeholders
without measuring, the call at ``index`` measures for ``budget_s`` and writes its samples as JSON
to ``output``, then stops the test with ``pytest.skip``. Workers run one after another, never in
parallel (parallel workers would distort each other's timing).

This module imports neither pytest nor torch; the guard does the pytest side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_mmperf.files import write_atomic
from pytest_mmperf.timing.forkserver import ForkServer, ForkServerError
from pytest_mmperf.timing.measure import PairSamples

WORKER_ENV = "PYTEST_MMPERF_WORKER"
# Output longer than this is cut to its tail in failure messages.
TAIL_CHARS = 2000

# Options of the parent's command line that change what a node id resolves to or how the
# plugin behaves, and so must reach the worker. Value-taking options are listed with their
# arity; ``--opt=value`` spellings are handled too. Everything else (selection, reporting,
# -x/--lf, xdist's -n) is deliberately dropped.
_PASS_WITH_VALUE = ("-p", "-o", "--override-ini", "--import-mode", "--confcutdir", "-W",
                    "--pythonwarnings")
_PASS_FLAGS = ("--noconftest", "--pyargs", "--benchmark")
_PASS_PREFIXES = ("--mmperf-",)
# ...except report outputs (the parent writes those) and snapshot updates (workers never check).
_DROP = ("--mmperf-json", "--mmperf-html", "--mmperf-update-snapshots")


class WorkerError(RuntimeError):
    """A worker process did not produce samples. The message says which worker and why."""

    def __init__(
        self, message: str, *, returncode: int | None = None, output_tail: str = ""
    ) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output_tail = output_tail


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process must do, passed as JSON in ``PYTEST_MMPERF_WORKER``."""

    nodeid: str
    index: int  # which guard call of the test to measure (0-based, in call order)
    output: str  # JSON file the worker writes
    budget_s: float
    seed: int = 0
    process: int = 1  # 0 = the parent; workers are numbered 1, 2, ...
    # Earlier guard calls of the test that failed in the parent: the worker raises there too
    # (without measuring), so a test that holds an expected failure takes the same path.
    failed: tuple[int, ...] = ()

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSpec | None:
        """The spec in ``environ`` (default ``os.environ``), or None outside a worker.

        A malformed value raises ``ValueError`` naming the variable and the expected keys.
        """
        env = os.environ if environ is None else environ
        raw = env.get(WORKER_ENV)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            spec = cls(
                nodeid=str(data["nodeid"]), index=int(data["index"]), output=str(data["output"]),
                budget_s=float(data["budget_s"]), seed=int(data.get("seed", 0)),
                process=int(data.get("process", 1)),
                failed=tuple(int(i) for i in data.get("failed", ())),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"environment {WORKER_ENV}={raw!r} is not a valid worker spec ({exc}); expected "
                "JSON with keys nodeid, index, output, budget_s[, seed, process]. It is set by "
                "pytest-mmperf for its own worker processes: unset it."
            ) from exc
        if spec.index < 0 or spec.budget_s < 0:
            raise ValueError(
                f"environment {WORKER_ENV}: index and budget_s must be >= 0, got {raw!r}"
            )
        return spec


def write_worker_output(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write the worker's JSON result atomically (the parent never reads half a file)."""
    write_atomic(path, json.dumps(dict(payload)), fsync=False)


def passthrough_args(
    args: Sequence[str], takes_value: Callable[[str], bool] | None = None
) -> list[str]:
    """The options of a parent command line that the worker must repeat (see module docs).

    ``takes_value(option_name)`` says whether a ``--mmperf-*`` option consumes the next argument
    (the guard asks pytest's parsed options); without it, an option is assumed to take a value
    when the next argument does not start with ``-``.
    """
    out: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        name, has_inline_value = arg.split("=", 1)[0], "=" in arg
        nxt = items[i + 1] if i + 1 < len(items) else None
        if name in _PASS_WITH_VALUE:
            if has_inline_value:
                out.append(arg)
            elif nxt is not None:
                out += [arg, nxt]
                i += 1
        elif arg[:2] in ("-p", "-o", "-W") and len(arg) > 2 and not arg.startswith("--"):
            out.append(arg)  # glued short form: -pNAME, -oKEY=VALUE
        elif name in _PASS_FLAGS:
            out.append(arg)
        elif name.startswith(_PASS_PREFIXES):
            keep = name not in _DROP
            if keep:
                out.append(arg)
            if has_inline_value or nxt is None:
                wants = False
            elif takes_value is not None:
                wants = takes_value(name)
            else:
                wants = not nxt.startswith("-")
            if not has_inline_value and wants and nxt is not None:
                if keep:
                    out.append(nxt)
                i += 1
        i += 1
    return out


def worker_command(
    nodeid: str,
    *,
    rootdir: str | os.PathLike[str],
    inifile: str | os.PathLike[str] | None = None,
    parent_args: Sequence[str] = (),
    xdist_loaded: bool = False,
    takes_value: Callable[[str], bool] | None = None,
    python: str | None = None,
) -> list[str]:
    """The command line of a worker that re-runs ``nodeid`` (see the module docstring)."""
    # -k "" / -m "" undo any selection in addopts: the node id alone selects the test.
    cmd = [python or sys.executable, "-m", "pytest", nodeid, "-p", "no:cacheprovider", "-q", "-x",
           f"--rootdir={os.fspath(rootdir)}", "-p", "no:randomly", "-k", "", "-m", "",
           # its gc.collect() at exit is a large part of a worker's cost with torch loaded
           # (docs/measurements.md#worker-start-up); the parent reports unraisable exceptions
           # of the test anyway
           "-p", "no:unraisableexception"]
    if inifile:
        cmd += ["-c", os.fspath(inifile)]
    if xdist_loaded:
        cmd += ["-n", "0"]  # addopts may hold "-n auto": the worker must run in-process
    cmd += passthrough_args(parent_args, takes_value)
    return cmd


def _tail(text: str, limit: int = TAIL_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def run_pytest_command(command: Sequence[str], *, cwd: str | os.PathLike[str],
                       env: Mapping[str, str], timeout_s: float | None,
                       server: ForkServer | None = None) -> tuple[int, str]:
    """Exit code and output of ``command``: forked from ``server`` when it is
    ``python -m pytest ARGS`` and the server works, else (or once the server fails) run as a
    fresh interpreter. ``subprocess.TimeoutExpired`` after ``timeout_s`` (None: no limit)."""
    if server is not None and not server.broken and list(command[1:3]) == ["-m", "pytest"]:
        fd, out = tempfile.mkstemp(prefix="mmperf-worker-", suffix=".log")
        os.close(fd)
        try:
            code = server.run(command[3:], env=env, output=out, timeout_s=timeout_s, cwd=cwd)
            return code, Path(out).read_text(encoding="utf-8", errors="replace")
        except subprocess.TimeoutExpired as exc:
            exc.output = Path(out).read_text(encoding="utf-8", errors="replace")
            raise
        except ForkServerError:
            pass  # server.broken is set: fresh interpreters from now on
        finally:
            Path(out).unlink(missing_ok=True)
    proc = subprocess.run(list(command), cwd=os.fspath(cwd), env=dict(env), capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    return proc.returncode, (proc.stdout or "") + "\n" + (proc.stderr or "")


def run_worker(
    spec: WorkerSpec,
    command: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    server: ForkServer | None = None,
) -> PairSamples:
    """Run one worker to completion and return its samples (``wall_s``: the worker's whole
    wall time, start-up included).

    Raises :class:`WorkerError` with the worker number, exit code and output tail when the worker
    times out, crashes, never reaches the guard, or reports an error of its own.
    """
    full_env = dict(os.environ if env is None else env)
    full_env[WORKER_ENV] = spec.to_env()
    full_env.pop("PYTEST_XDIST_WORKER", None)  # the worker is not an xdist worker
    if timeout_s is None:
        timeout_s = 120.0 + 10.0 * spec.budget_s  # interpreter + torch import + collection
    Path(spec.output).unlink(missing_ok=True)
    start = time.perf_counter()
    who = f"mmperf worker {spec.process} for {spec.nodeid} (guard call #{spec.index + 1})"
    try:
        returncode, raw = run_pytest_command(command, cwd=cwd, env=full_env,
                                             timeout_s=timeout_s, server=server)
    except subprocess.TimeoutExpired as exc:
        parts = [p.decode(errors="replace") if isinstance(p, bytes) else (p or "")
                 for p in (exc.stdout, exc.stderr)]
        out = "\n".join(parts)
        raise WorkerError(
            f"{who} timed out after {timeout_s:.0f} s; command: {' '.join(command)}\n"
            f"output tail:\n{_tail(out)}",
            output_tail=_tail(out),
        ) from exc
    wall_s = time.perf_counter() - start
    output = _tail(raw)
    path = Path(spec.output)
    if not path.exists():
        raise WorkerError(
            f"{who} exited with code {returncode} after {wall_s:.1f} s "
            f"without writing samples (did the test fail before the guard, or take a different "
            f"path in a fresh process?); command: {' '.join(command)}\noutput tail:\n{output}",
            returncode=returncode, output_tail=output,
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    finally:
        path.unlink(missing_ok=True)
    if "error" in payload:
        raise WorkerError(f"{who} reported: {payload['error']}", returncode=returncode,
                          output_tail=output)
    try:
        samples = PairSamples.from_dict(payload["samples"])
    except (KeyError, ValueError, TypeError) as exc:
        raise WorkerError(f"{who} wrote unreadable samples to {path}: {exc}",
                          returncode=returncode, output_tail=output) from exc
    samples.wall_s = wall_s
    return samples


def pytest_spawner(config: Any, nodeid: str,
                   failed_calls: Callable[[], Sequence[int]] = tuple,
                   fork_server: Callable[[], ForkServer | None] = lambda: None,
                   ) -> Callable[[int, int, float, int], PairSamples]:
    """A guard spawner for a pytest run: ``spawn(index, process, budget_s, seed) -> samples``.

    ``config`` is the parent's ``pytest.Config`` (only its public attributes are read, so this
    module still does not import pytest). ``failed_calls()``: the indices of the test's earlier
    guard calls that failed, handed to the worker (:attr:`WorkerSpec.failed`).
    ``fork_server()``: the session's :class:`~pytest_mmperf.timing.forkserver.ForkServer` (None:
    start
    fresh interpreters); once it fails, the rest of the session starts fresh interpreters.
    """
    rootdir = config.rootpath
    inifile = config.inipath
    args = tuple(config.invocation_params.args)
    xdist_loaded = bool(config.pluginmanager.hasplugin("xdist"))

    def takes_value(option: str) -> bool:
        try:
            value = config.getoption(option[2:].replace("-", "_"))
        except ValueError:
            return True
        return not isinstance(value, bool)

    def spawn(index: int, process: int, budget_s: float, seed: int) -> PairSamples:
        fd, out = tempfile.mkstemp(prefix="mmperf-worker-", suffix=".json")
        os.close(fd)
        spec = WorkerSpec(nodeid, index, out, budget_s, seed, process,
                          tuple(i for i in failed_calls() if i < index))
        command = worker_command(nodeid, rootdir=rootdir, inifile=inifile, parent_args=args,
                                 xdist_loaded=xdist_loaded, takes_value=takes_value)
        try:
            return run_worker(spec, command, cwd=rootdir, server=fork_server())
        finally:
            Path(out).unlink(missing_ok=True)

    return spawn
