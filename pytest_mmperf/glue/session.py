"""End-of-session glue: guard table, report figures, ``--mmperf-json``/``--mmperf-html``, snapshots.

Registered by :func:`pytest_mmperf.plugin.pytest_configure` as a second plugin object so that
``plugin.py`` stays thin. Under pytest-xdist only the controller writes and reports, after
:mod:`pytest_mmperf.glue.xdist` has merged the workers' records into its stash. Nothing here
imports torch unless the run recorded guard results or was asked for a report file (then torch
is loaded already, or needed for the machine description).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_mmperf.glue import options as cfg
from pytest_mmperf.glue.guard_fixture import RESULTS_KEY, SNAPSHOT_STORE_KEY, isolation_used
from pytest_mmperf.glue.report_fixture import FIGURES_KEY
from pytest_mmperf.report import json_report
from pytest_mmperf.report.guard_table import format_guard_table

_BENCHMARKS_KEY = pytest.StashKey[list[SimpleNamespace]]()


@pytest.hookimpl(wrapper=True, optionalhook=True)
def pytest_benchmark_group_stats(config: pytest.Config, benchmarks: list[dict[str, Any]],
                                 group_by: str) -> Any:
    """pytest-benchmark's public hook, called once at session finish with every benchmark that
    timed (before this plugin's ``pytest_sessionfinish``): keep this run's rows for the report.

    ``benchmarks`` are flat dicts (``name``, ``fullname``, ``group``, ``extra_info`` and the
    statistics); rows of a ``--benchmark-compare`` file carry their ``path`` and are left out.
    ``optionalhook``: the hook exists only while pytest-benchmark is loaded (``-p no:benchmark``).
    """
    config.stash[_BENCHMARKS_KEY] = [_metadata(bench) for bench in benchmarks
                                     if bench.get("path") is None]
    return (yield)


def _metadata(bench: Mapping[str, Any]) -> SimpleNamespace:
    """A flat benchmark dict in the shape :func:`json_report.benchmark_rows` reads
    (``bench.name``, ``bench.stats.median``, ...)."""
    fields = {key: value for key, value in bench.items() if key != "stats"}
    return SimpleNamespace(**fields, stats=SimpleNamespace(**fields))


def _benchmark_rows(config: pytest.Config) -> list[dict[str, Any]]:
    rows: list[SimpleNamespace] = config.stash.get(_BENCHMARKS_KEY, [])
    return json_report.benchmark_rows(rows)


def build_session_report(config: pytest.Config, *, with_machine: bool) -> dict[str, Any]:
    """The run's report (see :mod:`pytest_mmperf.report.json_report` for the layout)."""
    guards = [r.to_dict() for r in config.stash.get(RESULTS_KEY, [])]
    machine: Mapping[str, Any] = {}
    if with_machine:
        from pytest_mmperf.devices import machine_info

        machine = machine_info()
    settings = config.stash.get(cfg.SETTINGS_KEY, None)
    as_dict = cfg.settings_as_dict(settings) if settings is not None else {}
    return json_report.build_report(
        guards=guards,
        benchmarks=_benchmark_rows(config),
        figures=config.stash.get(FIGURES_KEY, []),  # type: ignore[arg-type]
        machine=machine,
        settings={**as_dict, **isolation_used(config)},
    )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return  # xdist workers: the controller writes the files (glue/xdist.py)
    store = config.stash.get(SNAPSHOT_STORE_KEY, None)
    if store is not None:
        store.save()
    settings = config.stash.get(cfg.SETTINGS_KEY, None)
    if settings is None or not (settings.json or settings.html):
        return
    data = build_session_report(config, with_machine=True)
    config.stash[_WRITTEN_KEY] = []
    if settings.json:
        config.stash[_WRITTEN_KEY].append(str(json_report.write_json(settings.json, data)))
    if settings.html:
        from pytest_mmperf.report.html import write_html

        config.stash[_WRITTEN_KEY].append(str(write_html(settings.html, data)))


_WRITTEN_KEY = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    from pytest_mmperf.glue.xdist import HEADER_KEY, LOST_KEY

    notes = [*config.stash.get(HEADER_KEY, []), *config.stash.get(LOST_KEY, [])]
    isolation = isolation_used(config)
    if isolation["isolation_fallback"]:  # said once, however many workers fell back
        workers = isolation["isolation_workers"]
        notes.append(f"mmperf: timing workers: spawn ({isolation['isolation_fallback']}; "
                     f"{workers['spawn']} of {sum(workers.values())} started as fresh "
                     "interpreters)")
    if notes:
        terminalreporter.write_sep("=", "mmperf")
        for line in notes:
            terminalreporter.write_line(line)
    results = config.stash.get(RESULTS_KEY, [])
    figures = config.stash.get(FIGURES_KEY, [])
    if results:
        terminalreporter.write_sep("=", "mmperf guards")
        for line in format_guard_table([r.to_dict() for r in results]):
            terminalreporter.write_line(line)
        if any(r.decided_by == "estimate" for r in results):
            terminalreporter.write_line(
                "~ : interval straddled the threshold; the point estimate decided "
                "(raise --mmperf-budget/--mmperf-processes or run pytest --benchmark)")
        if any(r.kind == "baseline" for r in results):
            from pytest_mmperf.report.comparisons import terminal_lines

            terminalreporter.write_sep("=", "mmperf vs baseline")
            for line in terminal_lines([r.to_dict() for r in results]):
                terminalreporter.write_line(line)
    if figures:
        from pytest_mmperf.report.terminal import terminal_family_lines

        data = build_session_report(config, with_machine=False)
        terminalreporter.write_sep("=", "mmperf report")
        for line in terminal_family_lines(data):
            terminalreporter.write_line(line)
    for path in config.stash.get(_WRITTEN_KEY, []):
        terminalreporter.write_line(f"mmperf report written to {path}")
