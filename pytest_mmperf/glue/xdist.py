"""pytest-xdist: workers hand their guard results, figures and snapshot updates to the
controller, which reports them and writes every file once.

Under ``pytest -n N`` the tests run in worker processes and the controller runs none. A worker
records as in a plain run, writes nothing, and at the end of its session puts its records into
``config.workeroutput["mmperf"]`` (xdist's documented channel; a JSON string, so every value a
record holds arrives as it would in the JSON report). The controller receives each worker's
records in ``pytest_testnodedown`` and merges them deterministically, whatever worker ran what:

* guard results and figures are ordered by the test's position in the collection (the same in
  every worker: xdist checks it), then by call order within the test: the order of a run without
  xdist over the same tests;
* the snapshot cases the workers updated are recorded into the controller's store in that
  order (when two tests record the same case, the later one in collection order wins, as without
  xdist) and saved once at the end, so the file is byte-identical to one written without xdist;
* the isolation counts of the timing workers are added up; the ``mmperf:`` header lines (which
  need the collected items) are printed once in the controller's summary.

Registered by :func:`pytest_mmperf.plugin.pytest_configure` only when xdist is loaded, so the
plugin does not depend on xdist. A worker that crashes sends nothing: the summary names it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_mmperf.glue.guard_fixture import (
    ISOLATION_KEY,
    RESULTS_KEY,
    SNAPSHOT_UPDATES_KEY,
    snapshot_store,
)
from pytest_mmperf.glue.report_fixture import FIGURES_KEY
from pytest_mmperf.guards import GuardResult

OUTPUT_KEY = "mmperf"  # in config.workeroutput
PAYLOAD_VERSION = 1
# Merged state kept on the controller: worker id -> payloads, and the lost workers' notes.
RECEIVED_KEY = pytest.StashKey[dict[str, list[dict[str, Any]]]]()
LOST_KEY = pytest.StashKey[list[str]]()
HEADER_KEY = pytest.StashKey[list[str]]()


def register(config: pytest.Config) -> None:
    """Register the worker or the controller side (called when xdist is loaded)."""
    if hasattr(config, "workerinput"):
        config.pluginmanager.register(WorkerSide(), "mmperf-xdist-worker")
    else:  # without -n no worker goes down, and it stays idle
        config.pluginmanager.register(ControllerSide(config), "mmperf-xdist-controller")


def worker_payload(session: pytest.Session) -> dict[str, Any]:
    """A worker's records, each tagged with the position of its test in the collection."""
    from pytest_mmperf.glue.header import header_lines

    config = session.config
    items = list(getattr(session, "items", None) or [])
    positions: dict[str, int] = {}
    for index, item in enumerate(items):
        positions.setdefault(item.nodeid, index)

    def where(nodeid: str) -> list[Any]:
        return [positions.get(nodeid, len(items)), nodeid]

    results: list[GuardResult] = config.stash.get(RESULTS_KEY, [])  # type: ignore[arg-type]
    figures: list[dict[str, Any]] = config.stash.get(FIGURES_KEY, [])  # type: ignore[arg-type]
    updates = config.stash.get(SNAPSHOT_UPDATES_KEY, [])
    noted: dict[str, Any] | None = config.stash.get(ISOLATION_KEY, None)
    isolation = dict(noted or {})
    return {
        "version": PAYLOAD_VERSION,
        "guards": [[*where(r.nodeid), r.to_dict()] for r in results],
        "figures": [[*where(str(f.get("nodeid", ""))), f] for f in figures],
        "snapshots": [[*where(nodeid), case, values] for nodeid, case, values in updates],
        "isolation": isolation,
        "header": header_lines(config, items),
    }


class WorkerSide:
    """In an xdist worker: hand the records to the controller at the end of the session."""

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        output = getattr(session.config, "workeroutput", None)
        if output is not None:
            output[OUTPUT_KEY] = json.dumps(worker_payload(session), default=str)


def _ordered(received: dict[str, list[dict[str, Any]]], field: str) -> list[list[Any]]:
    """The ``field`` entries of every payload, sorted by (position, nodeid, worker, call)."""
    keyed = []
    for worker, payloads in received.items():
        for number, payload in enumerate(payloads):
            for seq, entry in enumerate(payload.get(field, [])):
                keyed.append(((entry[0], entry[1], worker, number, seq), entry))
    return [entry for _, entry in sorted(keyed, key=lambda pair: pair[0])]


class ControllerSide:
    """On the xdist controller: merge what the workers send."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        config.stash[RECEIVED_KEY] = {}
        config.stash[LOST_KEY] = []

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        config = self.config
        worker = str(getattr(getattr(node, "gateway", None), "id", "") or id(node))
        raw = (getattr(node, "workeroutput", None) or {}).get(OUTPUT_KEY)
        if raw is None:
            if error:
                config.stash[LOST_KEY].append(
                    f"mmperf: xdist worker {worker} went down ({error}) before handing over its "
                    "guard results, figures and snapshot updates: they are missing")
            return
        payload = json.loads(raw)
        config.stash[RECEIVED_KEY].setdefault(worker, []).append(payload)
        received = config.stash[RECEIVED_KEY]
        config.stash[RESULTS_KEY] = [GuardResult(**entry[2])
                                     for entry in _ordered(received, "guards")]
        config.stash[FIGURES_KEY] = [entry[2] for entry in _ordered(received, "figures")]
        isolation: dict[str, Any] = {"fork": 0, "spawn": 0, "fallback": None}
        for name in sorted(received):
            for got in received[name]:
                noted = got.get("isolation") or {}
                for mode in ("fork", "spawn"):
                    isolation[mode] += int(noted.get(mode, 0))
                isolation["fallback"] = isolation["fallback"] or noted.get("fallback")
        config.stash[ISOLATION_KEY] = isolation
        headers = [got.get("header") for name in sorted(received) for got in received[name]]
        config.stash[HEADER_KEY] = next((h for h in headers if h), [])

    @pytest.hookimpl(tryfirst=True)  # before the session plugin saves the store (trylast)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        received = self.config.stash.get(RECEIVED_KEY, {})
        entries = _ordered(received, "snapshots")
        if not entries:
            return
        store = snapshot_store(self.config)
        for _, _, case, values in entries:
            store.record(case, values)
