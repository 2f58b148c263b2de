"""Two processes, one per side, measured in lockstep: one block at a time, in random order.

A comparison across commits runs the same benchmark in a process of the working tree (``head``)
and one of the baseline revision (``rev``). Both connect to the parent's :class:`Rendezvous`,
reach the benchmark call and warm it up; then the parent asks one side at a time for a block
(``number`` back-to-back calls, timed by the side) in a random order per round, so drift and
other jobs' load fall on both sides, and only one process measures at a time. The rounds become
a :class:`~pytest_mmperf.timing.measure.PairSamples` with the working tree as the candidate,
which the timing guards' statistics pool across pairs of processes.

Protocol: one JSON object per line over a local socket. The side says ``hello`` when it starts,
``ready`` (with its calls per block) once warm, or ``error`` if its test failed first; the parent
sends ``threads``, ``block``, ``stages`` and ``stop``. Pytest-free; torch only inside the side.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import select
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mmperf.settings import Threads
from pytest_mmperf.timing.contention import OtherCpuUse, available_cores
from pytest_mmperf.timing.measure import (
    DEFAULT_MAX_BLOCKS,
    DEFAULT_MIN_BLOCKS,
    PairSamples,
    choose_threads,
)

SIDES = ("head", "rev")
# Seconds the parent samples other processes' CPU use, with both sides idle, to pick threads.
CONTENTION_SAMPLE_S = 0.2
# Before a block of the other side: the side that just measured keeps its OpenMP threads
# spinning for a few milliseconds (libgomp's default wait policy), which slowed the next
# side's block; and the first call of a block after the other side's refills caches, so it
# runs untimed (docs/measurements.md#lockstep).
SWITCH_GAP_S = 0.01


class SideError(RuntimeError):
    """A side did not reach its benchmark, failed there, or stopped answering.

    kind: ``missing`` (the benchmark or the code it calls does not exist at REV), ``error`` (its
    test raised), ``imports`` (REV's process loaded working-tree modules), ``lost`` (the process
    died or timed out)."""

    def __init__(self, side: str, kind: str, message: str) -> None:
        super().__init__(f"{side}: {message}")
        self.side, self.kind, self.message = side, kind, message


class Channel:
    """One end of a side's connection: JSON lines with a read timeout."""

    def __init__(self, sock: socket.socket, side: str = "?") -> None:
        self.sock, self.side = sock, side
        self._buffer = b""

    def send(self, payload: Mapping[str, Any]) -> None:
        self.sock.sendall(json.dumps(dict(payload)).encode() + b"\n")

    def receive(self, timeout_s: float | None) -> dict[str, Any]:
        """The next message; ``SideError`` (lost) on end of stream or after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                raise SideError(self.side, "lost", f"no answer within {timeout_s:.0f} s")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SideError(self.side, "lost", "the process ended without an answer")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return dict(json.loads(line))

    def ask(self, payload: Mapping[str, Any], timeout_s: float | None) -> dict[str, Any]:
        self.send(payload)
        reply = self.receive(timeout_s)
        if "error" in reply:
            raise SideError(self.side, str(reply.get("kind", "error")), str(reply["error"]))
        return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Rendezvous:
    """The parent's listening socket for the sides of one pair (a Unix socket where there are
    those, else loopback TCP); each connection proves itself with ``token``."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(16)
        self._dir: str | None = None
        if hasattr(socket, "AF_UNIX"):
            self._dir = tempfile.mkdtemp(prefix="mmperf-rdv-")
            self.address: str | tuple[str, int] = os.path.join(self._dir, "s")
            self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.server.bind(self.address)
        else:  # pragma: no cover - platforms without Unix sockets
            self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.server.bind(("127.0.0.1", 0))
            self.address = self.server.getsockname()
        self.server.listen(4)

    def accept(self, sides: tuple[str, ...], timeout_s: float,
               failed: Callable[[], SideError | None] = lambda: None) -> dict[str, Channel]:
        """Channels of every side in ``sides`` once each has said hello. ``failed()`` is polled
        while waiting: a side whose process already ended raises its error."""
        channels: dict[str, Channel] = {}
        deadline = time.monotonic() + timeout_s
        while len(channels) < len(sides):
            error = failed()
            if error is not None:
                raise error
            ready, _, _ = select.select([self.server], [], [], 0.2)
            if not ready:
                if time.monotonic() > deadline:
                    waiting = [s for s in sides if s not in channels]
                    raise SideError("/".join(waiting), "lost",
                                    f"did not connect within {timeout_s:.0f} s")
                continue
            sock, _ = self.server.accept()
            channel = Channel(sock)
            try:
                hello = channel.receive(10.0)
            except SideError:
                channel.close()
                continue
            if hello.get("token") != self.token or hello.get("side") not in sides:
                channel.close()
                continue
            channel.side = str(hello["side"])
            channels[channel.side] = channel
        return channels

    def close(self) -> None:
        self.server.close()
        if self._dir is not None:
            Path(self.address).unlink(missing_ok=True)  # type: ignore[arg-type]
            os.rmdir(self._dir)


@dataclass
class Sides:
    """The two ready sides of a pair and what they reported when warm."""

    head: Channel
    rev: Channel
    numbers: dict[str, int] = field(default_factory=dict)
    threads: dict[str, int] = field(default_factory=dict)

    def channel(self, side: str) -> Channel:
        return self.head if side == "head" else self.rev

    def close(self, timeout_s: float = 5.0) -> None:
        for channel in (self.head, self.rev):
            try:
                channel.send({"stop": True})
            except OSError:
                pass
            channel.close()


def wait_ready(sides: Sides, timeout_s: float) -> None:
    """Both sides warm at their benchmark call (a side error propagates)."""
    for side in SIDES:
        reply = sides.channel(side).receive(timeout_s)
        if "error" in reply:
            raise SideError(side, str(reply.get("kind", "error")), str(reply["error"]))
        sides.numbers[side] = int(reply["number"])
        sides.threads[side] = int(reply["threads"])


def set_threads(sides: Sides, threads: Threads, timeout_s: float = 60.0,
                sample_s: float = CONTENTION_SAMPLE_S) -> tuple[int, float | None]:
    """Pick one intra-op thread count for both sides (:func:`choose_threads`, from other
    processes' CPU use sampled while both sides wait) and have them re-warm with it."""
    busy = None
    if threads == "auto":
        others = OtherCpuUse.start()
        time.sleep(sample_s)
        busy = others.cores()
    n = choose_threads(threads, busy, min(sides.threads.values()))
    for side in SIDES:  # one at a time, so each calibrates its block on a quiet machine
        reply = sides.channel(side).ask({"threads": n}, timeout_s)
        sides.numbers[side], sides.threads[side] = int(reply["number"]), int(reply["threads"])
    # Both sides time blocks of the same number of calls, sized for the slower one: a block's
    # length changes what a call costs (its first calls find caches and threads cold after the
    # other side's block), so blocks of different lengths would bias the ratio.
    common = min(sides.numbers.values())
    sides.numbers = dict.fromkeys(SIDES, common)
    return n, busy


def measure_rounds(sides: Sides, *, budget_s: float, device: str,
                   min_blocks: int = DEFAULT_MIN_BLOCKS, max_blocks: int = DEFAULT_MAX_BLOCKS,
                   seed: int | None = None,
                   should_stop: Callable[[PairSamples], bool] | None = None,
                   block_timeout_s: float = 120.0, threads_requested: str | None = None,
                   warmup_other_cpu_cores: float | None = None) -> PairSamples:
    """Rounds of one block per side in random order until ``min_blocks`` rounds and the budget
    (or ``should_stop``) say stop: the working tree is the candidate, REV the baseline."""
    rng = random.Random(seed)
    threads = min(sides.threads.values())
    samples = PairSamples([], [], sides.numbers["head"], sides.numbers["rev"], "", device,
                          threads, False, float(budget_s), threads_requested=threads_requested,
                          cores=available_cores(), warmup_other_cpu_cores=warmup_other_cpu_cores)
    order: list[str] = []
    last = ""
    start = time.perf_counter()
    others = OtherCpuUse.start()
    while True:
        first = "head" if rng.random() < 0.5 else "rev"
        seconds = {}
        for side in (first, "rev" if first == "head" else "head"):
            switched = side != last
            if switched:
                time.sleep(SWITCH_GAP_S)
            reply = sides.channel(side).ask({"block": sides.numbers[side], "warm": switched},
                                            block_timeout_s)
            last = side
            seconds[side] = max(float(reply["seconds"]), 1e-12) / sides.numbers[side]
        samples.candidate_s.append(seconds["head"])
        samples.baseline_s.append(seconds["rev"])
        order.append("c" if first == "head" else "b")
        samples.order = "".join(order)
        samples.elapsed_s = time.perf_counter() - start
        n = samples.n_blocks
        if n >= min_blocks and (n >= max_blocks
                                or (should_stop is not None and should_stop(samples))
                                or samples.elapsed_s >= budget_s):
            break
    samples.other_cpu_cores = others.cores()
    return samples


def ask_stages(sides: Sides, timeout_s: float = 120.0) -> dict[str, dict[str, float]]:
    """Each side's stage breakdown (seconds per call by ``mmperf::`` label; empty without
    labels)."""
    out = {}
    for side in SIDES:
        reply = sides.channel(side).ask({"stages": True}, timeout_s)
        out[side] = {str(k): float(v) for k, v in dict(reply.get("stages", {})).items()}
    return out
