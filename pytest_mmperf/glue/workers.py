"""The command line of a timing-guard worker: a pytest run of one test item.

:mod:`pytest_mmperf.timing.isolation` runs a worker and reads its samples; this module decides
what the worker's ``python -m pytest`` command repeats of the parent's: the options that change
what a node id resolves to or how the plugin behaves (``-p``, ``-o``, ``--import-mode``, ...,
and every ``--mmperf-*`` option except the report outputs and snapshot updates, which are the
parent's job). Selection, reporting, ``-x``/``--lf`` and xdist's ``-n`` are dropped.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from pytest_mmperf.glue.options import SETTINGS_BY_NAME
from pytest_mmperf.timing.forkserver import ForkServer
from pytest_mmperf.timing.isolation import WorkerSpec, run_worker
from pytest_mmperf.timing.measure import PairSamples

# Value-taking options are listed with their arity; ``--opt=value`` spellings are handled too.
_PASS_WITH_VALUE = ("-p", "-o", "--override-ini", "--import-mode", "--confcutdir", "-W",
                    "--pythonwarnings")
_PASS_FLAGS = ("--noconftest", "--pyargs", SETTINGS_BY_NAME["benchmark"].option)
_PASS_PREFIXES = ("--mmperf-",)
# ...except report outputs (the parent writes those) and snapshot updates (workers never check).
_DROP = tuple(SETTINGS_BY_NAME[name].option for name in ("json", "html", "update_snapshots"))


def option_takes_value(config: pytest.Config) -> Callable[[str], bool]:
    """``takes_value(option)``: whether ``--option`` consumes the next argument, as this run's
    parsed options say (an option pytest does not know is assumed to take one)."""

    def takes_value(option: str) -> bool:
        try:
            value = config.getoption(option[2:].replace("-", "_"))
        except ValueError:
            return True
        return not isinstance(value, bool)

    return takes_value


def passthrough_args(
    args: Sequence[str], takes_value: Callable[[str], bool] | None = None
) -> list[str]:
    """The options of a parent command line that the worker must repeat (module docstring).

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
    """The command line of a worker that re-runs ``nodeid``: ``python -m pytest <nodeid>
    -p no:cacheprovider -q -x --rootdir=<rootdir> [-c <inifile>] -p no:randomly [-n 0]`` and the
    parent's options that :func:`passthrough_args` keeps."""
    # -k "" / -m "" undo any selection in addopts: the node id alone selects the test.
    cmd = [python or sys.executable, "-m", "pytest", nodeid, "-p", "no:cacheprovider", "-q", "-x",
           f"--rootdir={os.fspath(rootdir)}", "-p", "no:randomly", "-k", "", "-m", "",
           # its gc.collect() at exit is a large part of a worker's cost with torch loaded
           # (docs/measurements.md#worker-start-up); the parent
           # reports unraisable exceptions of the test anyway
           "-p", "no:unraisableexception"]
    if inifile:
        cmd += ["-c", os.fspath(inifile)]
    if xdist_loaded:
        cmd += ["-n", "0"]  # addopts may hold "-n auto": the worker must run in-process
    cmd += passthrough_args(parent_args, takes_value)
    return cmd


def pytest_spawner(config: pytest.Config, nodeid: str,
                   failed_calls: Callable[[], Sequence[int]] = tuple,
                   fork_server: Callable[[], ForkServer | None] = lambda: None,
                   ) -> Callable[[int, int, float, int], PairSamples]:
    """A guard spawner for a pytest run: ``spawn(index, process, budget_s, seed) -> samples``.

    ``config`` is the parent's. ``failed_calls()``: the indices of the test's earlier guard
    calls that failed, handed to the worker (:attr:`WorkerSpec.failed`). ``fork_server()``: the
    session's :class:`~pytest_mmperf.timing.forkserver.ForkServer` (None: start fresh
    interpreters); once it fails, the rest of the session starts fresh interpreters.
    """
    rootdir = config.rootpath
    inifile = config.inipath
    args = tuple(config.invocation_params.args)
    xdist_loaded = bool(config.pluginmanager.hasplugin("xdist"))
    takes_value = option_takes_value(config)

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
