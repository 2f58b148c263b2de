"""``tools/perf_gate.py --check``: asv check and the in-process quick pass, on tiny asv suites."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import perf_gate  # noqa: E402

SUITE = """
import os
import time

CALLS = []


class Grid:
    params = [[1, 2], ["a", "b"]]
    param_names = ["n", "s"]

    def setup(self, n, s):
        if (n, s) == (2, "b"):
            raise NotImplementedError("not on this host")

    def track_n(self, n, s):
        CALLS.append((n, s))
        return n


class Broken:
    def time_broken(self):
        raise RuntimeError("boom in the benchmark")


class Malformed:
    params = [[1, 2]]

    def track_takes_no_parameter(self):  # what asv check rejects
        return 1


class Slow:
    timeout = 0.5

    def track_sleep(self):
        time.sleep(30)
        return 1


class Cached:
    def setup_cache(self):
        return {"built": 3}

    def track_cache(self, cache):
        return cache["built"]


def time_free():
    CALLS.append("free")


def track_quick_env():
    CALLS.append(os.environ.get("MMPERF_BENCH_QUICK"))
    return 1
"""


def write_suite(root: Path, name: str, body: str = SUITE) -> Path:
    """An asv project in ``root`` whose benchmark package ``name`` holds ``body``."""
    suite = root / name
    suite.mkdir(parents=True)
    (suite / "__init__.py").write_text("")
    (suite / "bench_tiny.py").write_text(textwrap.dedent(body))
    (root / "asv.conf.json").write_text(json.dumps({
        "version": 1, "project": "tiny", "repo": ".", "benchmark_dir": name,
        "environment_type": "virtualenv", "default_benchmark_timeout": 60}))
    return suite


def test_quick_pass_runs_every_combination_once_and_names_what_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = write_suite(tmp_path, "mmperf_quick_suite_a")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = perf_gate.quick_pass(suite)
    base = "bench_tiny"
    assert sorted(result.ran) == sorted([f"{base}.Grid.track_n-{i}" for i in range(3)]
                                        + [f"{base}.time_free", f"{base}.track_quick_env",
                                           f"{base}.Cached.track_cache"])
    assert result.skipped == [f"{base}.Grid.track_n-3"]
    failed = dict(result.failed)
    assert set(failed) == {f"{base}.Broken.time_broken", f"{base}.Slow.track_sleep",
                           f"{base}.Malformed.track_takes_no_parameter"}
    assert "malformed (asv check)" in failed[f"{base}.Malformed.track_takes_no_parameter"]
    assert "RuntimeError: boom in the benchmark" in failed[f"{base}.Broken.time_broken"]
    assert "ran past its asv timeout of 0.5 s" in failed[f"{base}.Slow.track_sleep"]
    calls = sys.modules["mmperf_quick_suite_a.bench_tiny"].CALLS
    assert sorted(c for c in calls if isinstance(c, tuple)) == [(1, "a"), (1, "b"), (2, "a")]


def test_quick_pass_selection_is_a_regex_on_names(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    suite = write_suite(tmp_path, "mmperf_quick_suite_b")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = perf_gate.quick_pass(suite, selection=r"Grid\.")
    assert len(result.ran) == 3 and len(result.skipped) == 1 and not result.failed


def test_check_exits_2_naming_the_failed_benchmark_and_0_when_all_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole ``--check``: the quick pass with ``MMPERF_BENCH_QUICK=1`` (set only while it
    runs), and a suite that does not import."""
    monkeypatch.delenv(perf_gate.QUICK_ENV, raising=False)
    suite = write_suite(tmp_path / "bad", "mmperf_quick_suite_c")
    monkeypatch.syspath_prepend(str(suite.parent))
    assert perf_gate.main(["--check", "--config", str(suite.parent / "asv.conf.json")]) == 2
    out = capsys.readouterr().out
    assert "RuntimeError: boom in the benchmark" in out
    assert "perf-gate --check FAIL" in out and "bench_tiny.Broken.time_broken" in out
    assert perf_gate.QUICK_ENV not in os.environ

    good = write_suite(tmp_path / "good", "mmperf_quick_suite_d",
                       SUITE.split("class Broken")[0] + "\n\ndef time_free():\n    pass\n")
    monkeypatch.syspath_prepend(str(good.parent))
    assert perf_gate.main(["--check", "--config", str(good.parent / "asv.conf.json")]) == 0
    assert "perf-gate --check PASS" in capsys.readouterr().out

    broken = write_suite(tmp_path / "no-import", "mmperf_quick_suite_e",
                         "import no_such_module_anywhere\n")
    monkeypatch.syspath_prepend(str(broken.parent))
    assert perf_gate.main(["--check", "--config", str(broken.parent / "asv.conf.json")]) == 2
    out = capsys.readouterr().out
    assert "No module named 'no_such_module_anywhere'" in out and "does not import" in out
    assert sys.modules["mmperf_quick_suite_c.bench_tiny"].CALLS.count("1") == 1
