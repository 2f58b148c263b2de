"""Process isolation for timing guards: re-run one pytest item in fresh worker processes.

Why: the same time ratio measured in different fresh processes differs by far more than its
within-process interval (docs/measurements.md#between-process-noise), because memory placement,
thread-pool start-up and the kernels chosen at first use differ per process. A decision about a
10–25 % difference must therefore pool *processes*, not only more blocks of one.

How: the parent (the user's pytest run) runs ``<python> -m pytest <nodeid> ...`` in the rootdir
(the command line is the pytest glue's: :func:`pytest_mmperf.glue.workers.worker_command`) with
``PYTEST_MMPERF_WORKER`` set to a JSON :class:`WorkerSpec`. In that process the guard fixture is
built in worker mode: guard calls before ``index`` return placeholders without measuring, the call
at ``index`` measures for ``budget_s`` and writes its samples as JSON to ``output``, then stops
the test with ``pytest.skip``. Workers run one after another, never in parallel (parallel
workers would distort each other's timing).

This module imports neither pytest nor torch; the guard does the pytest side. A worker that
produces no samples raises :class:`~pytest_mmperf.timing.ratio.WorkerError`, the error of the
spawner contract that the ratio procedure defines.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_mmperf.files import write_atomic
from pytest_mmperf.timing.forkserver import ForkServer, ForkServerError
from pytest_mmperf.timing.measure import PairSamples
from pytest_mmperf.timing.ratio import WorkerError

__all__ = ["TAIL_CHARS", "WORKER_ENV", "WorkerError", "WorkerSpec", "run_pytest_command",
           "run_worker", "write_worker_output"]

WORKER_ENV = "PYTEST_MMPERF_WORKER"
# Output longer than this is cut to its tail in failure messages.
TAIL_CHARS = 2000


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
