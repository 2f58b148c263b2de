"""A fork server for timing-guard workers: import pytest and torch once, fork a child per worker.

A worker re-runs one test item in a fresh process (:mod:`pytest_mmperf.timing.isolation`). Started
as a
new interpreter, it spends seconds before measuring anything: the interpreter, ``import torch``
and the plugin (docs/measurements.md#worker-start-up). The server is a process started once per
pytest session that has imported pytest, torch and the plugin and *nothing else*: no torch op
has run in it, so no OpenMP pool or CUDA context exists to be broken by ``fork``. Each worker is
a child forked from it that runs ``pytest.main(argv)`` with the worker's environment; the test
module, its inputs and every kernel choice are made in the child, as in a fresh interpreter.

Protocol (one JSON object per line): the server prints ``{"ready": pid}``; for each request
``{"argv": [...], "cwd": ..., "env": {...}, "output": path}`` it forks, prints
``{"child": pid}``, waits and prints ``{"returncode": rc}``; the child's stdout and stderr go to
``output``. ``{"exit": true}`` or end of input stops it. POSIX only (``os.fork``); elsewhere the
plugin starts fresh interpreters. Pytest-free at import (the server imports pytest itself).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

PRELOAD = ("pytest", "torch", "pytest_mmperf.plugin", "pytest_mmperf.glue.guard_fixture",
           "pytest_mmperf.counting.counters", "pytest_mmperf.timing.measure")
# Imported too when the session that starts the server has imported them (its tests will
# again): importing torchvision alone takes seconds (it imports torch._dynamo;
# docs/measurements.md#worker-start-up) and starts no thread, so every worker would otherwise
# pay it again; a session without it pays nothing.
PRELOAD_IF_IMPORTED = ("numpy", "PIL.Image", "torchvision", "torchvision.transforms.v2")
START_TIMEOUT_S = 120.0


class ForkServerError(RuntimeError):
    """The server could not start or stopped answering; the caller falls back to spawning."""


def fork_available() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"


class ForkServer:
    """Client side: start the server lazily, run workers through it, close it at the end.

    :meth:`shared` hands every pytest session of one process the same server (pytester's
    in-process runs, a tool that calls ``pytest.main`` repeatedly), so its imports are paid
    once; each request carries its own working directory and environment.
    """

    _shared: dict[tuple[str, str | None], ForkServer] = {}

    @classmethod
    def shared(cls, python: str, cwd: str | os.PathLike[str]) -> ForkServer:
        """The process's server for ``python`` (a new one after a failure); closed at exit.
        Keyed by PYTHONPATH too: the server's own entries stay on every child's sys.path."""
        key = (python, os.environ.get("PYTHONPATH"))
        server = cls._shared.get(key)
        if server is None or server.broken:
            server = cls._shared[key] = cls(python, cwd)
            if len(cls._shared) == 1:
                atexit.register(cls._close_shared)
        return server

    @classmethod
    def _close_shared(cls) -> None:
        for server in cls._shared.values():
            server.close()
        cls._shared.clear()

    def __init__(self, python: str, cwd: str | os.PathLike[str],
                 env: Mapping[str, str] | None = None,
                 preload: Sequence[str] | None = None) -> None:
        """``preload``: optional modules the server imports besides :data:`PRELOAD` (default:
        those of :data:`PRELOAD_IF_IMPORTED` that this process has imported when it starts)."""
        self.python, self.cwd = python, os.fspath(cwd)
        self.preload = preload
        self.env = dict(os.environ if env is None else env)
        self._proc: subprocess.Popen[str] | None = None
        self.start_s: float | None = None  # seconds the server took to start (imports)
        self.broken = False  # set by the first failure; callers then spawn interpreters
        self.failure: str | None = None  # what broke it, for the run's report
        self._ready = False
        self._launched = 0.0

    def _preload_now(self) -> list[str]:
        if self.preload is not None:
            return list(self.preload)
        return [name for name in PRELOAD_IF_IMPORTED if name in sys.modules]

    def _launch(self) -> None:
        env = {k: v for k, v in self.env.items() if k != "PYTEST_MMPERF_WORKER"}
        self._launched = time.perf_counter()
        self._ready = False
        try:
            self._proc = subprocess.Popen(
                [self.python, "-c", "import sys; from pytest_mmperf.timing.forkserver import "
                 "serve; serve(preload=sys.argv[1:])", *self._preload_now()],
                cwd=self.cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as exc:
            self.broken, self.failure = True, f"could not start: {exc}"
            raise ForkServerError(f"the fork server could not start: {exc}") from exc

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._ready and self._proc.poll() is None:
            return self._proc
        if self.broken:
            raise ForkServerError("the fork server failed earlier in this session")
        if not fork_available():
            self.broken, self.failure = True, "os.fork is not available on this platform"
            raise ForkServerError("os.fork is not available on this platform")
        if self._proc is None or self._proc.poll() is not None:
            self._launch()
        ready = self._read(START_TIMEOUT_S)
        if "ready" not in ready:
            self._fail(f"did not start: {ready}")
            raise ForkServerError(f"the fork server did not start: {ready}")
        self._ready = True
        self.start_s = time.perf_counter() - self._launched
        assert self._proc is not None
        return self._proc

    def _read(self, timeout_s: float | None) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready:
            return {"timeout": True}
        line = proc.stdout.readline()
        if not line:
            return {"eof": True, "returncode": proc.poll()}
        return dict(json.loads(line))

    def start(self, argv: Sequence[str], *, env: Mapping[str, str], output: str,
              cwd: str | os.PathLike[str] | None = None) -> int:
        """Like :meth:`run` without waiting: returns the child's pid at once, so that several
        children can run side by side (the two sides of a comparison across commits). The
        server reaps them; the caller may kill them, and learns their end by other means."""
        proc = self._start()
        assert proc.stdin is not None
        request = {"argv": list(argv), "cwd": os.fspath(self.cwd if cwd is None else cwd),
                   "env": dict(env), "output": output, "detach": True}
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
        except OSError as exc:
            reason = f"the fork server stopped accepting work: {exc}"
            self._fail(reason)
            raise ForkServerError(reason) from exc
        child = self._read(30.0).get("child")
        if child is None:
            reason = "the fork server did not fork a worker"
            self._fail(reason)
            raise ForkServerError(reason)
        return int(child)

    def run(self, argv: Sequence[str], *, env: Mapping[str, str], output: str,
            timeout_s: float | None, cwd: str | os.PathLike[str] | None = None) -> int:
        """Run ``pytest.main(argv)`` in a forked child with ``env`` in ``cwd`` (default: the
        server's); its output goes to the file ``output``. Returns the exit code; raises
        ``subprocess.TimeoutExpired`` after ``timeout_s`` (the child is killed) and
        :class:`ForkServerError` if the server died."""
        proc = self._start()
        assert proc.stdin is not None
        request = {"argv": list(argv), "cwd": os.fspath(self.cwd if cwd is None else cwd),
                   "env": dict(env), "output": output}
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
        except OSError as exc:
            self._fail(f"stopped accepting work: {exc}")
            raise ForkServerError(f"the fork server stopped accepting work: {exc}") from exc
        child = self._read(30.0).get("child")
        if child is None:
            self._fail("did not fork a worker")
            raise ForkServerError("the fork server did not fork a worker")
        reply = self._read(timeout_s)
        if reply.get("timeout"):
            try:
                os.kill(int(child), signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._read(30.0)  # the server reports the killed child's exit
            raise subprocess.TimeoutExpired(list(argv), timeout_s or 0.0)  # only with a limit
        if "returncode" not in reply or reply.get("eof"):
            self._fail(f"died while a worker ran: {reply}")
            raise ForkServerError(f"the fork server died while a worker ran: {reply}")
        return int(reply["returncode"])

    def _fail(self, reason: str) -> None:
        self.broken, self.failure = True, reason
        self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.write(json.dumps({"exit": True}) + "\n")
                proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.wait()


def _child(request: Mapping[str, Any]) -> int:
    """In the forked child: the worker's environment, output and ``pytest.main``."""
    import pytest

    fd = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.clear()
    os.environ.update(request["env"])
    # A fresh interpreter would put the request's PYTHONPATH on sys.path: so does the child.
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep)
             if p and p not in sys.path]
    sys.path[1:1] = extra
    os.chdir(request["cwd"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return int(pytest.main(list(request["argv"])))


def _pytest_plugin_modules() -> list[str]:
    """The modules of pytest's own plugins and of installed ``pytest11`` entry points, which
    every worker's ``pytest.main`` imports (docs/measurements.md#worker-start-up).

    pytest lists its own plugins only in the private ``_pytest.config.default_plugins``; this
    function alone reads it. Should a pytest release drop it, the server preloads the entry
    points only (workers then import pytest's plugins themselves, a little slower) and
    ``tests/unit/test_forkserver.py`` fails.
    """
    from importlib.metadata import entry_points

    try:
        from _pytest.config import default_plugins
        builtin: tuple[str, ...] = tuple(default_plugins)
    except ImportError:
        builtin = ()
    names = [f"_pytest.{name}" for name in builtin]
    names += [ep.value.split(":")[0] for ep in entry_points(group="pytest11")]
    return names


def _reap_detached() -> None:
    """Collect the exit status of detached children that have ended (no zombies left)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(stdin: IO[str] | None = None, stdout: IO[str] | None = None,
          preload: Sequence[str] = ()) -> None:
    """The server loop (run by :class:`ForkServer` as ``python -c "...; serve(preload=...)"``);
    ``preload``: optional modules to import besides :data:`PRELOAD` and pytest's plugins."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    for name in (*preload, *_pytest_plugin_modules()):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - optional: the worker imports (and reports) it itself
            pass
    inp, out = stdin or sys.stdin, stdout or sys.stdout
    out.write(json.dumps({"ready": os.getpid()}) + "\n")
    out.flush()
    for line in inp:
        _reap_detached()
        request = json.loads(line)
        if request.get("exit"):
            break
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                code = _child(request)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - reported through the output file
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        out.write(json.dumps({"child": pid}) + "\n")
        out.flush()
        if request.get("detach"):
            continue  # reaped below, once it has ended
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        out.flush()
