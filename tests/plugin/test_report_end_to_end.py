"""The report end to end: a run of a small repository's report tests (two families, one with
stage labels and a byte count, and a scaling) writes the terminal summary, ``--mmperf-json`` and
``--mmperf-html``, and the three agree. (``tests/perf/test_report_figures.py`` records the
families of ``reference/`` in the suite's own run; it is not run a second time here.)"""

from __future__ import annotations

import contextlib
import html as htmllib
import io
import json
import os
import re
import time
from typing import Any

import pytest

from pytest_mmperf.report.html import format_value

REPOSITORY_TESTS = """
import torch
from torch.profiler import record_function

X = torch.randn(256, 256)


def per_row():
    with record_function("mmperf::rows"):
        rows = [row * 2.0 for row in X]
    with record_function("mmperf::stack"):
        return torch.stack(rows)


def whole():
    with record_function("mmperf::scale"):
        return X * 2.0


def test_families(mmperf_report):
    mmperf_report.family("scale", {"per row": per_row, "whole": whole}, baseline="per row",
                         items=256, unit="rows", bytes=2 * X.numel() * 4,
                         title="Scaling a matrix by two")
    mmperf_report.family("add", {"add": lambda: X + 1.0, "add_": lambda: X.clone().add_(1.0)},
                         baseline="add", breakdown=False, title="Adding one")


def test_scaling(mmperf_report):
    mmperf_report.scaling("square", lambda n: (lambda: torch.ones(int(n), int(n)) * 2.0),
                          [64, 128, 256])
"""
FAMILIES = {"scale", "add"}
NO_BREAKDOWN = {"add"}  # families recorded with breakdown=False


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str, float]:
    """One run of the repository's report tests, in this process (as pytester's inline runs do:
    no second interpreter or torch import)."""
    out = tmp_path_factory.mktemp("report")
    repo = tmp_path_factory.mktemp("repo")
    (repo / "test_report_repo.py").write_text(REPOSITORY_TESTS, encoding="utf-8")
    terminal = io.StringIO()
    start = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        with contextlib.redirect_stdout(terminal):  # the inner terminal reporter writes here
            code = pytest.main(
                ["test_report_repo.py", "-q", "-p", "no:cacheprovider", f"--rootdir={repo}",
                 f"--mmperf-json={out / 'r.json'}", f"--mmperf-html={out / 'r.html'}"])
    finally:
        os.chdir(cwd)
    seconds = time.perf_counter() - start
    assert code == 0, terminal.getvalue()[-6000:]
    report = json.loads((out / "r.json").read_text(encoding="utf-8"))
    page = (out / "r.html").read_text(encoding="utf-8")
    return report, page, terminal.getvalue(), seconds


def _visible(page: str) -> str:
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_json_has_every_family_with_breakdowns_and_scaling(
        smoke_run: tuple[dict[str, Any], str, str, float]) -> None:
    report = smoke_run[0]
    kinds: dict[str, list[dict[str, Any]]] = {}
    for figure in report["figures"]:
        kinds.setdefault(figure["kind"], []).append(figure)
    assert {f["family"] for f in kinds["family"]} == FAMILIES
    assert {b["family"] for b in kinds["breakdown"]} == FAMILIES - NO_BREAKDOWN
    assert {s["metric"] for s in kinds["scaling"]} == {"time", "memory"}
    assert kinds["efficiency"] and all(0 < e["fraction"] for e in kinds["efficiency"])
    for family in kinds["family"]:
        baseline = next(r for r in family["rows"] if r["implementation"] == family["baseline"])
        assert baseline["speedup"] == 1.0 and baseline["speedup_ci"] is None  # no [1, 1]
        for row in family["rows"]:
            assert row["median_s"] > 0 and row["q1_s"] <= row["median_s"] <= row["q3_s"]
            if row is not baseline:
                low, high = row["speedup_ci"]
                assert low < row["speedup"] < high
    machine = report["machine"]
    assert machine["torch"] and machine["torchvision"] and machine["cpu_capability"]


def test_html_shows_the_json_numbers_inline_and_offline(
        smoke_run: tuple[dict[str, Any], str, str, float]) -> None:
    report, page = smoke_run[0], smoke_run[1]
    text = _visible(page)
    for family in (f for f in report["figures"] if f["kind"] == "family"):
        assert family["title"] in text
        for row in family["rows"]:
            assert format_value(row["median_s"], "median_s") in text, (family["family"], row)
    assert page.count("<svg") >= 3  # speedup bars, stage breakdown, scaling plots
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script src" not in page and "@import" not in page


def test_terminal_summary_carries_the_families(
        smoke_run: tuple[dict[str, Any], str, str, float]) -> None:
    report, terminal = smoke_run[0], smoke_run[2]
    for family in (f for f in report["figures"] if f["kind"] == "family"):
        assert family["title"] in terminal
    assert "stage breakdown" in terminal and "scaling" in terminal
    assert all(len(line) <= 100 for line in terminal.splitlines()
               if line and not line.startswith(("test_report_repo.py", "mmperf report written")))
