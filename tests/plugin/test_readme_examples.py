"""The README's Python examples are real tests: extract them and run them through the plugin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _example_blocks() -> list[str]:
    blocks = [b for b in _BLOCK.findall(README.read_text(encoding="utf-8")) if "def test_" in b]
    assert blocks, "README.md has no runnable examples"
    return blocks


@pytest.mark.parametrize("index", range(len(_example_blocks())))
def test_readme_example_runs(pytester: pytest.Pytester, index: int) -> None:
    source = _example_blocks()[index]
    pytester.makepyfile(**{f"test_readme_{index}": source})
    tests = re.findall(r"^def (test_\w+)", source, re.M)
    # The default budget and processes: the examples run as a user would run them (in-process:
    # timing-guard workers still start fresh, forked from the session's shared server).
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    outcomes = result.parseoutcomes()
    # every example test passes, except those restricted to a device kind this machine lacks
    restricted = source.count("mmperf_devices(")
    xfails = source.count("mark.xfail(")  # held expected failures: strict, so they must fail
    assert outcomes.get("xfailed", 0) == xfails, result.stdout.str()
    assert outcomes.get("passed", 0) >= len(tests) - restricted - xfails, result.stdout.str()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    if "faster(" in source:
        result.stdout.fnmatch_lines(["*mmperf guards*", "*speedup*pass*"])
