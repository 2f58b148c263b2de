"""End-of-session glue: guard table, report figures, ``--mmperf-json``/``--mmperf-html``, snapshots.

Registered by :func:`pytest_mmperf.plugin.pytest_configure` as a second plugin object so that
``plugin.py`` stays thin. Nothing here imports torch unless the run recorded guard results or was
asked for a report file (then torch is loaded already, or needed for the machine description).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from pytest_mmperf import config as cfg
from pytest_mmperf import report
from pytest_mmperf.guard_fixture import RESULTS_KEY, SNAPSHOT_STORE_KEY

FIGURES_KEY = pytest.StashKey[list[dict[str, Any]]]()


class ReportFigures:
    """What a test adds to the run's report besides guards (the ``mmperf_report`` fixture).

    Figure records are plain dicts with a ``kind`` (``family``, ``breakdown``, ``scaling``,
    ``efficiency``, ``claim``, or any other kind, rendered as a table); see
    :mod:`pytest_mmperf.html`.
    """

    def __init__(self, figures: list[dict[str, Any]], nodeid: str) -> None:
        self._figures = figures
        self._nodeid = nodeid

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Record a figure of ``kind`` with ``fields``; returns the stored record."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"mmperf_report.add: kind must be a non-empty string, got {kind!r}")
        record = {"kind": kind, "nodeid": self._nodeid, **fields}
        self._figures.append(record)
        return record

    def breakdown(self, fn: Callable[[], Any], *, family: str, implementation: str,
                  device: str = "cpu", repeats: int = 3) -> dict[str, Any]:
        """Profile ``fn`` and record where its time goes, by ``torch.profiler.record_function``
        labels starting with ``mmperf::`` (see :func:`pytest_mmperf.stages.stage_breakdown`)."""
        from pytest_mmperf.stages import stage_breakdown

        result = stage_breakdown(fn, repeats=repeats, device=device)
        return self.add(**result.to_figure(family, implementation))

    @property
    def figures(self) -> list[dict[str, Any]]:
        return list(self._figures)


@pytest.fixture
def mmperf_report(request: pytest.FixtureRequest) -> ReportFigures:
    """Add figures (speedup families, stage breakdowns, scaling, claims) to the run's report."""
    figures = request.config.stash.setdefault(FIGURES_KEY, [])
    return ReportFigures(figures, request.node.nodeid)


def _benchmark_rows(config: pytest.Config) -> list[dict[str, Any]]:
    session = getattr(config, "_benchmarksession", None)
    return report.benchmark_rows(getattr(session, "benchmarks", []) or [])


def build_session_report(config: pytest.Config, *, with_machine: bool) -> dict[str, Any]:
    """The run's report (see :mod:`pytest_mmperf.report` for the layout)."""
    guards = [r.to_dict() for r in config.stash.get(RESULTS_KEY, [])]
    machine: Mapping[str, Any] = {}
    if with_machine:
        from pytest_mmperf.devices import machine_info

        machine = machine_info()
    settings = config.stash.get(cfg.SETTINGS_KEY, None)
    return report.build_report(
        guards=guards,
        benchmarks=_benchmark_rows(config),
        figures=config.stash.get(FIGURES_KEY, []),
        machine=machine,
        settings=cfg.settings_as_dict(settings) if settings is not None else {},
    )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return  # xdist workers: the controller writes the files
    store = config.stash.get(SNAPSHOT_STORE_KEY, None)
    if store is not None:
        store.save()
    settings = config.stash.get(cfg.SETTINGS_KEY, None)
    if settings is None or not (settings.json or settings.html):
        return
    data = build_session_report(config, with_machine=True)
    config.stash[_WRITTEN_KEY] = []
    if settings.json:
        config.stash[_WRITTEN_KEY].append(str(report.write_json(settings.json, data)))
    if settings.html:
        from pytest_mmperf.html import write_html

        config.stash[_WRITTEN_KEY].append(str(write_html(settings.html, data)))


_WRITTEN_KEY = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS_KEY, [])
    figures = config.stash.get(FIGURES_KEY, [])
    if results:
        terminalreporter.write_sep("=", "mmperf guards")
        for line in report.format_guard_table([r.to_dict() for r in results]):
            terminalreporter.write_line(line)
        if any(r.decided_by == "estimate" for r in results):
            terminalreporter.write_line(
                "~ : interval straddled the threshold; the point estimate decided "
                "(raise --mmperf-budget/--mmperf-processes or run pytest --benchmark)")
    if figures:
        from pytest_mmperf.summary import terminal_family_lines

        data = build_session_report(config, with_machine=False)
        terminalreporter.write_sep("=", "mmperf report")
        for line in terminal_family_lines(data):
            terminalreporter.write_line(line)
    for path in config.stash.get(_WRITTEN_KEY, []):
        terminalreporter.write_line(f"mmperf report written to {path}")
