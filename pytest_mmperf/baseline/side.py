"""One side of a comparison across commits: the process that runs a benchmark when asked.

The parent starts each side as a pytest process re-running one test item, with a
:class:`SideSpec` in ``PYTEST_MMPERF_SIDE``. The side connects to the parent at start-up
(:class:`SideConnection`), runs the test until its benchmark call (the ``benchmark`` fixture's
call, or one implementation of a report family), warms the callable up and then serves blocks
(:func:`serve`) until the parent says stop. A test that fails before its benchmark reports the
error instead. In REV's side the repository's modules come from REV's files
(:mod:`pytest_mmperf.baseline.imports`).

Pytest-free; torch is imported when a block is served.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_mmperf.baseline.lockstep import SIDES, Channel
from pytest_mmperf.constants import SIDE_ENV
from pytest_mmperf.timing.measure import (
    DEFAULT_BLOCK_S,
    DEFAULT_WARMUP_S,
    BlockTimer,
    calibrate_number,
)

BENCHMARK_TARGET = "benchmark"
# Seconds a side waits for the parent's next command before giving up (an orphaned side).
IDLE_TIMEOUT_S = 900.0


def family_target(family: str, implementation: str) -> str:
    """The target naming one implementation of a report family."""
    return f"family:{family}:{implementation}"


@dataclass(frozen=True)
class SideSpec:
    """What a side process does, passed as JSON in ``PYTEST_MMPERF_SIDE``.

    side: ``head`` (the working tree) or ``rev``; address/token: the parent's rendezvous;
    nodeid: the test; target: ``benchmark`` or :func:`family_target`; rev_root: REV's files
    (REV's side only); repo_root and repo_files (a file listing the repository's own files, one
    per line) for the import redirection; test_patterns: pytest's ``python_files``.
    """

    side: str
    address: str | list[Any]
    token: str
    nodeid: str
    target: str
    repo_root: str
    rev_root: str | None = None
    repo_files: str | None = None
    test_patterns: tuple[str, ...] = ()
    block_s: float = DEFAULT_BLOCK_S
    warmup_s: float = DEFAULT_WARMUP_S
    extra: dict[str, Any] = field(default_factory=dict)

    def to_env(self) -> str:
        # Both sides' environments have the same size (a process's layout shifts its timings;
        # see baseline.revision.COPY_PREFIX): "rev" is padded to the length of "head".
        return json.dumps(asdict(self)) + " " * (4 - len(self.side))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SideSpec | None:
        """The spec in ``environ`` (default ``os.environ``), or None outside a side process;
        ``ValueError`` naming the variable for a malformed value."""
        raw = (os.environ if environ is None else environ).get(SIDE_ENV)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            spec = cls(**{**data, "test_patterns": tuple(data.get("test_patterns", ()))})
        except (ValueError, TypeError) as exc:
            raise ValueError(f"environment {SIDE_ENV}={raw[:200]!r} is not a valid side spec "
                             f"({exc}); it is set by pytest-mmperf for its own baseline "
                             "processes: unset it") from exc
        if spec.side not in SIDES:
            raise ValueError(f"environment {SIDE_ENV}: side {spec.side!r} is not one of {SIDES}")
        return spec


class SideConnection:
    """The side's connection to the parent, opened when the process starts."""

    def __init__(self, spec: SideSpec) -> None:
        self.spec = spec
        if isinstance(spec.address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(spec.address)
        else:
            sock = socket.create_connection((str(spec.address[0]), int(spec.address[1])))
        self.channel = Channel(sock, spec.side)
        self.channel.send({"hello": True, "side": spec.side, "token": spec.token,
                           "pid": os.getpid()})
        self.reported = False  # an error or a served benchmark went to the parent

    def error(self, message: str, kind: str = "error") -> None:
        """Tell the parent the test failed before (or at) its benchmark; only the first counts."""
        if self.reported:
            return
        self.reported = True
        try:
            self.channel.send({"error": message, "kind": kind})
        except OSError:
            pass

    def close(self) -> None:
        self.channel.close()


@dataclass
class Benchmarked:
    """The callable a side measures: ``fn(*args, **kwargs)``, or with ``setup`` (pytest-benchmark's
    pedantic mode) a fresh ``(args, kwargs)`` from ``setup()`` before every call, which is then
    timed alone, with ``teardown(*args, **kwargs)`` after it."""

    fn: Callable[..., object]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    setup: Callable[[], Any] | None = None
    teardown: Callable[..., object] | None = None

    def call(self) -> None:
        self.fn(*self.args, **self.kwargs)

    def block(self, timer: BlockTimer, number: int) -> float:
        """Seconds of ``number`` calls (setup and teardown excluded)."""
        if self.setup is None:
            return timer(self.call, number)
        total = 0.0
        for _ in range(number):
            args, kwargs = self._fresh()

            def one(args: tuple[Any, ...] = args, kwargs: dict[str, Any] = kwargs) -> None:
                self.fn(*args, **kwargs)

            total += timer(one, 1)
            if self.teardown is not None:
                self.teardown(*args, **kwargs)
        return total

    def _fresh(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        assert self.setup is not None
        made = self.setup()
        if made is None:
            return self.args, self.kwargs
        args, kwargs = made
        return tuple(args), dict(kwargs or {})

    def once(self) -> None:
        self.block(BlockTimer("cpu"), 1) if self.setup is not None else self.call()


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _warm(work: Benchmarked, timer: BlockTimer, warmup_s: float, block_s: float) -> int:
    """At least two calls and ``warmup_s`` seconds, then the calls per block (1 with setup)."""
    start, calls = timer.clock(), 0
    while calls < 2 or timer.clock() - start < warmup_s:
        work.block(timer, 1)
        calls += 1
    if work.setup is not None:
        return 1
    return calibrate_number(work.call, timer, block_s)


def serve(connection: SideConnection, work: Benchmarked, device: str = "cpu",
          leaks: list[tuple[str, str]] | None = None, timer: BlockTimer | None = None) -> None:
    """Warm ``work`` up, tell the parent, then answer its commands until it says stop.

    ``leaks``: repository modules REV's side loaded from the working tree; they are reported as
    an error instead of measuring (the comparison would otherwise measure the same code twice).
    ``timer``: injectable for tests (default: a :class:`BlockTimer` on ``device``).
    """
    spec, channel = connection.spec, connection.channel
    if leaks:
        shown = ", ".join(f"{name} ({path})" for name, path in leaks[:5])
        connection.error(f"the {spec.side} process imported modules of the repository from the "
                         f"working tree instead of its copy: {shown}; they were loaded before "
                         "pytest-mmperf could redirect the repository's imports (e.g. by a pytest "
                         "plugin of the repository itself)", kind="imports")
        return
    import torch

    timer = BlockTimer(device) if timer is None else timer
    number = _warm(work, timer, spec.warmup_s, spec.block_s)
    connection.reported = True
    channel.send({"ready": True, "number": number, "threads": _threads()})
    while True:
        command = channel.receive(IDLE_TIMEOUT_S)
        if command.get("stop"):
            return
        if "threads" in command:  # the parent asks one side at a time: calibrated alone
            if _threads() != int(command["threads"]):
                torch.set_num_threads(int(command["threads"]))
            number = _warm(work, timer, 0.0, spec.block_s)
            channel.send({"ready": True, "number": number, "threads": _threads()})
        elif "block" in command:
            number = int(command["block"])
            if number > 1 and command.get("warm"):
                work.block(timer, 1)  # untimed: caches and threads warm again after the other side
            channel.send({"seconds": work.block(timer, number)})
        elif "stages" in command:
            channel.send({"stages": _stages(work, device)})
        else:
            channel.send({"error": f"unknown command {command!r}", "kind": "lost"})


def _stages(work: Benchmarked, device: str) -> dict[str, float]:
    """Seconds per call by ``mmperf::`` stage (empty when the code has no labels)."""
    from pytest_mmperf.report.stages import stage_breakdown

    try:
        breakdown = stage_breakdown(work.once, device=device, repeats=3)
    except Exception:  # noqa: BLE001 - a breakdown is a hint in a message, never a failure
        return {}
    return dict(breakdown.stages)
