"""Which functions are timing tests: calls of timing guards seen through the test's own source,
its helpers (recursively, within the repository) and nothing outside it."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from pytest_mmperf.glue.timing_marker import TimingDetector

SOURCE = '''
import helpers_mod


def direct(g):
    g.faster(a, b, at_least=1.5)


def memory_scaling(g):
    g.scaling(f, [1, 2], metric="memory")


def memory_scaling_positional(g):
    g.scaling(f, [1, 2], "memory")


def default_scaling(g):
    g.scaling(f, [1, 2])


def time_scaling(g):
    g.scaling(f, [1, 2], metric="time")


def report_scaling_memory_only(r):
    r.scaling("n", f, [1, 2], metrics=("memory",))


def report_scaling_with_time(r):
    r.scaling("n", f, [1, 2], metrics=("time", "memory"))


def dynamic_metric(g, m):
    g.scaling(f, [1, 2], metric=m)


def family(r):
    r.family("x", {}, baseline="a")


def counters_only(g):
    g.max_ops(f, 1)
    g.snapshot("s", f)


def via_helper(g):
    helper(g)


def helper(g):
    deeper(g)


def deeper(g):
    g.not_slower(a, b)


def via_module_helper(g):
    helpers_mod.check(g)


def cycle_a(g):
    cycle_b(g)


def cycle_b(g):
    cycle_a(g)


def via_library(g):
    len(g)
    sorted([g])
'''

HELPERS = '''
def check(g):
    g.faster(a, b)
'''


@pytest.fixture()
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    (tmp_path / "helpers_mod.py").write_text(HELPERS)
    (tmp_path / "probe_mod.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("probe_mod", "helpers_mod"):
        sys.modules.pop(name, None)
    import probe_mod

    return probe_mod


@pytest.mark.parametrize(("name", "timing"), [
    ("direct", True), ("memory_scaling", False), ("memory_scaling_positional", False),
    ("default_scaling", True), ("time_scaling", True), ("report_scaling_memory_only", False),
    ("report_scaling_with_time", True), ("dynamic_metric", True), ("family", True),
    ("counters_only", False), ("via_helper", True), ("via_module_helper", True),
    ("cycle_a", False), ("via_library", False),
])
def test_detects_timing_calls(module: ModuleType, tmp_path: Path, name: str,
                              timing: bool) -> None:
    detector = TimingDetector(tmp_path)
    assert detector.calls_timing(getattr(module, name)) is timing


def test_helpers_outside_the_root_are_not_followed(module: ModuleType, tmp_path: Path) -> None:
    # Rooted elsewhere, helpers_mod is a library: its call is not followed; the direct call is.
    detector = TimingDetector(tmp_path / "elsewhere")
    assert detector.calls_timing(module.via_module_helper) is False
    assert detector.calls_timing(module.direct) is True
