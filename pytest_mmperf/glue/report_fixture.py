"""The ``mmperf_report`` fixture: a :class:`~pytest_mmperf.report.api.MmperfReport` bound to the
test, whose figures (families, breakdowns, scaling, claims) join the session's report."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mmperf.constants import SIDE_ENV
from pytest_mmperf.glue import options as cfg

if TYPE_CHECKING:
    from pytest_mmperf.report.api import MmperfReport

FIGURES_KEY = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture
def mmperf_report(request: pytest.FixtureRequest) -> MmperfReport:
    """Measure and record figures for the run's report: ``family``, ``scaling``, ``claim``,
    ``breakdown`` (see :mod:`pytest_mmperf.report.api`)."""
    from pytest_mmperf.glue.guard_fixture import guard_for_request
    from pytest_mmperf.report.api import MmperfReport

    figures = request.config.stash.setdefault(FIGURES_KEY, [])
    guard = guard_for_request(request)
    commits = None
    if cfg.get_settings(request.config).baseline or os.environ.get(SIDE_ENV):
        from pytest_mmperf.glue.baseline import family_commits
        from pytest_mmperf.glue.guard_fixture import RESULTS_KEY

        commits = family_commits(request, request.config.stash.setdefault(RESULTS_KEY, []).append)
    return MmperfReport(figures, request.node.nodeid, guard,
                        benchmark=cfg.get_settings(request.config).benchmark,
                        device=guard.device, commits=commits)
