"""Problems that doom a run are one usage error (exit 4) before the first test: an output path
that cannot be written, a snapshot file that cannot be read. And a failing timing guard says
how to re-run just that test with a larger budget."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from user_code import WORK

pytest_plugins = ["pytester"]

# A test that leaves a trace when it runs: a usage error must come before it.
TRACE = """
from pathlib import Path

def test_ran(mmperf_seed):
    Path("ran.txt").write_text("yes")
"""


def _assert_nothing_ran(result: pytest.RunResult, pytester: pytest.Pytester) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert not (pytester.path / "ran.txt").exists()
    assert "passed" not in result.stdout.str() and "collected" not in result.stdout.str()


def test_json_under_a_regular_file_is_a_usage_error_before_any_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_trace=TRACE)
    (pytester.path / "file").write_text("not a folder")
    result = pytester.runpytest("--mmperf-json=file/sub/out.json")
    _assert_nothing_ran(result, pytester)
    target = pytester.path / "file" / "sub" / "out.json"
    result.stderr.fnmatch_lines([
        f"*pytest-mmperf: cannot write --mmperf-json '{target}' (from --mmperf-json): "
        f"{pytester.path / 'file'} is a regular file, so no file can be created under it."
        " Accepted: a file path whose folder exists or can be created, and is writable*"])
    assert (pytester.path / "file").read_text() == "not a folder"


def test_html_that_is_a_folder_names_its_env_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_trace=TRACE)
    (pytester.path / "reports").mkdir()
    monkeypatch.setenv("PYTEST_MMPERF_HTML", "reports")
    result = pytester.runpytest()
    _assert_nothing_ran(result, pytester)
    result.stderr.fnmatch_lines([
        "*cannot write --mmperf-html '*reports' (from environment variable PYTEST_MMPERF_HTML):"
        " it is a folder.*"])


def test_snapshot_file_is_checked_only_when_updating(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_trace=TRACE)
    (pytester.path / "file").write_text("")
    pytester.makeini("[pytest]\nmmperf_snapshots = file/snaps.json\n")
    assert pytester.runpytest().ret == 0  # a check-only run never writes it
    (pytester.path / "ran.txt").unlink()
    result = pytester.runpytest("--mmperf-update-snapshots")
    _assert_nothing_ran(result, pytester)
    result.stderr.fnmatch_lines([
        "*cannot write --mmperf-snapshots '*snaps.json' (from ini file *tox.ini key "
        "mmperf_snapshots) (rewritten by --mmperf-update-snapshots): *file is a regular file*"])


SNAPSHOTTING = """
import torch

def test_one(mmperf_guard):
    mmperf_guard.snapshot("one", lambda: torch.ones(2) + 1, metrics=("ops",))

def test_two(mmperf_guard):
    mmperf_guard.snapshot("two", lambda: torch.ones(2) * 2, metrics=("ops",))
"""


def test_malformed_snapshot_file_is_one_usage_error_even_when_updating(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_snap=SNAPSHOTTING)
    snapshots = pytester.path / "mmperf-snapshots.json"
    snapshots.write_text('{"version": 1, "cases": {\n<<<<<<< HEAD\n')
    for args in ((), ("--mmperf-update-snapshots",)):
        result = pytester.runpytest(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert "test_one" not in result.stdout.str()
        result.stderr.fnmatch_lines([
            f"*snapshot file {snapshots}: invalid JSON at line 2 column 1: *(the snapshot file "
            "from the default, mmperf-snapshots.json in the rootdir). Fix the file *, or delete "
            "it and rerun with --mmperf-update-snapshots to record every case again*"])
        assert result.stderr.str().count("invalid JSON") == 1
    snapshots.unlink()  # the documented way out
    pytester.runpytest("--mmperf-update-snapshots").assert_outcomes(passed=2)
    assert sorted(json.loads(snapshots.read_text())["cases"]) == ["one", "two"]


# --------------------------------------------------------------------------- re-run command


def test_failing_timing_guard_ends_with_the_command_that_reruns_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\n")
    tests = pytester.mkdir("tests")
    (tests / "test_rerun.py").write_text(WORK + """
@pytest.mark.parametrize("n", [4], ids=["four times"])
def test_pair(mmperf_guard, n):
    mmperf_guard.faster(work(n), work(1), at_least=1.5)
""")
    monkeypatch.chdir(tests)  # invoked from tests/: the command names the file from there
    result = pytester.runpytest("--mmperf-budget=0.3", "--mmperf-processes", "2",
                                "-p", "no:randomly", "--mmperf-seed=3")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    command = ("re-run with a larger budget: pytest 'test_rerun.py::test_pair[four times]' "
               "-p no:randomly --mmperf-seed=3 --mmperf-budget=8 --mmperf-processes=5")
    assert command in out
    # the message ends with it: the next line of the report is pytest's own
    after = out.split(command, 1)[1].lstrip("\n").splitlines()[0]
    assert "mmperf" not in after and "re-run" not in after


INCONCLUSIVE = WORK + """
def test_even(mmperf_guard):
    # the same work on both sides against a ratio of exactly 1: with one process and a tiny
    # budget the interval straddles it
    mmperf_guard.not_slower(work(1), work(1), tolerance=0.0)
"""
TINY = ("--mmperf-budget=0.05", "--mmperf-processes=1", "-p", "no:randomly")


def test_inconclusive_under_policy_fail_names_the_rerun_command(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_even=INCONCLUSIVE)
    result = pytester.runpytest(*TINY, "--mmperf-inconclusive=fail")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*not_slower(): INCONCLUSIVE*",
        "*re-run with a larger budget: pytest test_even.py::test_even -p no:randomly "
        "--mmperf-inconclusive=fail --mmperf-budget=8 --mmperf-processes=5"])


def test_inconclusive_warning_can_be_an_error_through_the_ini_file(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nfilterwarnings =\n"
                     "    error::pytest_mmperf.MmperfInconclusiveWarning\n")
    pytester.makepyfile(test_even=INCONCLUSIVE + """
import warnings
from pytest_mmperf import MmperfInconclusiveWarning

def test_warn():
    warnings.warn(MmperfInconclusiveWarning("straddles"))
""")
    result = pytester.runpytest(*TINY)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # accepted: no usage error
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines_random([
        "*MmperfInconclusiveWarning: straddles*",
        "*MmperfInconclusiveWarning: test_even.py::test_even: not_slower(): *",
        "*INCONCLUSIVE: the interval straddles 1 *"])


# --------------------------------------------------------------------------- isolation, once
PAIR = WORK + """
def test_pair(mmperf_guard):
    mmperf_guard.faster(work(1), work(4), at_least=1.5, min_processes=2)
"""


@pytest.mark.parametrize("broken", ["server", "fork"])
def test_isolation_fallback_is_said_once_and_recorded(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    from pytest_mmperf.glue import guard_fixture
    from pytest_mmperf.timing.forkserver import ForkServer

    if broken == "server":  # the server cannot start: its interpreter does not exist
        monkeypatch.setattr(ForkServer, "shared", classmethod(
            lambda cls, python, cwd: cls(os.fspath(pytester.path / "no-python"), cwd)))
        reason = "fork server failed: could not start: *No such file or directory*"
    else:
        monkeypatch.setattr(guard_fixture, "fork_available", lambda: False)
        reason = "fork unavailable: os.fork does not exist on *"
    pytester.makepyfile(test_pair=PAIR)
    result = pytester.runpytest("--mmperf-budget=0.2", "--mmperf-processes=2",
                                "-p", "no:randomly", "--mmperf-json=out.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        f"mmperf: timing workers: spawn ({reason}; 1 of 1 started as fresh interpreters)"])
    assert result.stdout.str().count("timing workers:") == 1
    settings = json.loads(Path(pytester.path / "out.json").read_text())["settings"]
    assert settings["isolation_used"] == "spawn"
    assert settings["isolation_workers"] == {"fork": 0, "spawn": 1}
    assert settings["isolation_fallback"].split(":")[0] == reason.split(":")[0]


def test_no_timing_worker_records_isolation_none(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_trace=TRACE)
    pytester.runpytest("--mmperf-json=out.json").assert_outcomes(passed=1)
    settings = json.loads((pytester.path / "out.json").read_text())["settings"]
    assert (settings["isolation_used"], settings["isolation_fallback"]) == ("none", None)
    assert settings["isolation"] == "fork"  # what was asked for stays next to it
