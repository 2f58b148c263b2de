"""The README's Python examples are real code: extract every ```python block and run it.

* a block with ``def test_`` is a test module, run through the plugin (pytester, in-process);
* a block that defines ``pytest_mmperf_*`` hooks is a ``conftest.py``, run under a test that
  checks the hooks took effect;
* any other block is a script, run in a fresh interpreter (it uses the plugin without pytest).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks() -> list[str]:
    return _BLOCK.findall(README.read_text(encoding="utf-8"))


def _example_blocks() -> list[str]:
    blocks = [b for b in _blocks() if "def test_" in b]
    assert blocks, "README.md has no runnable examples"
    return blocks


def _hook_blocks() -> list[str]:
    return [b for b in _blocks() if "def test_" not in b and "def pytest_mmperf_" in b]


def _script_blocks() -> list[str]:
    return [b for b in _blocks() if "def test_" not in b and "def pytest_mmperf_" not in b]


def test_every_python_block_is_run() -> None:
    """Each block falls in exactly one of the three kinds above, and there is at least one of
    each kind this README promises (tests, a conftest with hooks, a script without pytest)."""
    assert len(_example_blocks()) + len(_hook_blocks()) + len(_script_blocks()) == len(_blocks())
    assert _hook_blocks() and _script_blocks()


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


@pytest.mark.parametrize("index", range(len(_hook_blocks())))
def test_readme_hooks_take_effect(pytester: pytest.Pytester, index: int) -> None:
    """The README's conftest: `auto` becomes cpu and the default batch has 4 images."""
    source = _hook_blocks()[index]
    pytester.makeconftest(source)
    pytester.makepyfile(test_hooks="""
        def test_hooks(mmperf_device, mmperf_batch_spec, request):
            assert mmperf_device.type == "cpu"
            assert mmperf_batch_spec.batch_size == 4
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--mmperf-device=auto")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*hook pytest_mmperf_default_device*"])


@pytest.mark.parametrize("index", range(len(_script_blocks())))
def test_readme_script_runs(pytester: pytest.Pytester, index: int) -> None:
    """A block without tests or hooks runs as a plain Python script (the plugin without pytest)."""
    script = pytester.makepyfile(**{f"readme_script_{index}": _script_blocks()[index]})
    result = pytester.run(sys.executable, str(script), timeout=300)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
