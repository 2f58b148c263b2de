"""Timing guards through pytest: fresh worker processes, failure messages, xdist, markers.

These run real (small) measurements in real worker processes, so each costs a few seconds; the
pairs differ 4x in work so that the verdicts are not in doubt even on a busy CI runner.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from user_code import WORK

pytest_plugins = ["pytester"]

# Results of the run, dumped by a conftest hook (in the parent only) so tests can inspect them
# independently of the terminal report.
CONFTEST = """
import json, os

def pytest_sessionfinish(session):
    if os.environ.get("PYTEST_MMPERF_WORKER"):
        return
    from pytest_mmperf.glue.guard_fixture import session_results
    with open("guard-results.json", "w") as handle:
        json.dump([r.to_dict() for r in session_results(session.config)], handle)
"""


FAST_ARGS = ("--mmperf-budget=0.3", "--mmperf-processes=2", "-p", "no:randomly")


def results(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    return json.loads((pytester.path / "guard-results.json").read_text())


def test_reversed_pair_fails_with_the_numbers(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(WORK + """
def test_pair(mmperf_guard):
    mmperf_guard.faster(work(4), work(1), at_least=1.5)
""")
    run = pytester.runpytest(*FAST_ARGS)
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines([
        "*faster(): FAIL: speedup 0.*x, 95% interval [[]*, *[]], required at least 1.5x",
        # 0.25x against 1.5x is clear-cut: the parent decides alone
        "*samples: * rounds x 1 process on cpu (* thread*, inference_mode=True)*",
    ])
    assert "Traceback" not in run.stdout.str()  # pytrace=False: the message is the report
    (res,) = results(pytester)
    assert res["verdict"] == "fail" and res["estimate"] < 0.5


def test_worker_that_fails_is_reported_with_its_output(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(WORK + """
import os

def test_pair(mmperf_guard):
    if os.environ.get("PYTEST_MMPERF_WORKER"):
        raise RuntimeError("only-in-the-worker")
    mmperf_guard.faster(work(1), work(4), at_least=1.5, min_processes=2)
""")
    run = pytester.runpytest(*FAST_ARGS)
    run.assert_outcomes(failed=1)
    out = run.stdout.str()
    assert "mmperf worker 1 for test_worker_that_fails_is_reported_with_its_output.py::test_pair" \
        in out
    assert "without writing samples" in out and "only-in-the-worker" in out
    (res,) = results(pytester)
    assert res["verdict"] == "fail" and res["decided_by"] == "worker-error"


def test_faster_pools_a_fresh_worker_and_earlier_guards_are_placeholders_there(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(WORK + """
import os

def test_two(mmperf_guard):
    first = mmperf_guard.max_flops(work(1), 10**9)
    if os.environ.get("PYTEST_MMPERF_WORKER"):
        assert first.verdict == "skipped"  # not counted again in the worker
    mmperf_guard.faster(work(1), work(4), at_least=1.5, name="1x-vs-4x", min_processes=2)
    mmperf_guard.not_slower(work(1), work(1), tolerance=1.0)  # clear-cut: the parent alone
""")
    run = pytester.runpytest(*FAST_ARGS, "--mmperf-json=out.json")
    run.assert_outcomes(passed=1)
    flops, fast, same = results(pytester)
    settings = json.loads((pytester.path / "out.json").read_text())["settings"]
    assert settings["isolation_used"] == "fork" and settings["isolation_fallback"] is None
    workers = settings["isolation_workers"]  # a busy machine may pool the last guard too
    assert workers["fork"] >= 1 and workers["spawn"] == 0
    assert "timing workers:" not in run.stdout.str()  # said only when it falls back
    assert (flops["kind"], flops["n_processes"], flops["verdict"]) == ("max_flops", 1, "pass")
    assert fast["kind"] == "faster" and fast["name"] == "1x-vs-4x" and fast["verdict"] == "pass"
    assert fast["n_processes"] == 2 and len(fast["samples_per_process"]) == 2
    assert all(n >= 8 for n in fast["samples_per_process"])
    pids = fast["extra"]["pids"]
    assert pids[0] == os.getpid() and pids[1] != pids[0]  # the second one is a fresh process
    # On a busy machine two processes may not agree well enough for a clear interval (t with
    # 1 degree of freedom); the estimate then decides, which this 4x pair passes either way.
    assert fast["estimate"] > 2 and fast["ci_low"] < fast["estimate"] < fast["ci_high"]
    assert same["kind"] == "not_slower" and same["n_processes"] == 1


def test_not_mmperf_timing_deselects_timing_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(WORK + """
def test_timed(mmperf_guard):
    mmperf_guard.not_slower(work(1), work(1))

def test_counted(mmperf_guard):
    mmperf_guard.max_ops(work(2), {"add": 50})
""")
    # In-process: the conftest imported torch._dynamo (which counting ops needs) beforehand.
    run = pytester.runpytest("-m", "not mmperf_timing", "-v")
    run.assert_outcomes(passed=1, deselected=1)
    run.stdout.fnmatch_lines(["*test_counted PASSED*"])


# Helpers that call timing guards, in the test module and in a conftest: collection must see them.
HELPER_CONFTEST = CONFTEST + """

def assert_not_slower(guard, fn):
    guard.not_slower(fn, fn, tolerance=0.5)
"""
HELPER_TESTS = WORK + """
import pytest
from conftest import assert_not_slower


def check_faster(guard):
    guard.faster(work(1), work(4), at_least=1.5)


def test_via_module_helper(mmperf_guard):
    check_faster(mmperf_guard)


def test_via_conftest_helper(mmperf_guard):
    assert_not_slower(mmperf_guard, work(1))


def test_counter_only(mmperf_guard):
    mmperf_guard.max_ops(work(1), {"add": 25})


def test_memory_scaling_is_not_timing(mmperf_guard):
    mmperf_guard.scaling(lambda n: (lambda: X.new_empty(n) + 1), [256, 1024], metric="memory",
                         max_exponent=1.2)
"""


def test_timing_tests_found_through_helpers(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HELPER_CONFTEST)
    pytester.makepyfile(test_helpers=HELPER_TESTS)
    timing = {"test_via_module_helper", "test_via_conftest_helper"}
    for args, expected in ((["-m", "not mmperf_timing"], {"test_counter_only",
                                                         "test_memory_scaling_is_not_timing"}),
                           (["-m", "mmperf_timing"], timing),
                           (["--benchmark"], timing)):
        run = pytester.runpytest("--collect-only", "-q", *args)
        selected = {line.split("::")[-1] for line in run.stdout.lines if "::" in line}
        assert selected == expected, (args, run.stdout.str())
    run = pytester.runpytest(*FAST_ARGS, "-m", "mmperf_timing")
    run.assert_outcomes(passed=2)


def test_timing_guard_out_of_sight_fails_naming_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(WORK + """
def test_dynamic(mmperf_guard):
    method = getattr(mmperf_guard, "fast" + "er")  # no call the analysis can see
    method(work(1), work(4), at_least=1.5)


import pytest

@pytest.mark.mmperf_timing
def test_dynamic_marked(mmperf_guard):
    method = getattr(mmperf_guard, "fast" + "er")
    method(work(1), work(4), at_least=1.5)
""")
    run = pytester.runpytest(*FAST_ARGS)
    run.assert_outcomes(failed=1, passed=1)
    run.stdout.fnmatch_lines(["*test_dynamic calls the timing guard faster() but is not marked"
                              "*Add @pytest.mark.mmperf_timing to the test*"])


def test_failing_guards_are_assertion_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(WORK + """
import pytest
from pytest_mmperf import GuardFailure


def test_counter_failure_held(mmperf_guard):
    with pytest.raises(AssertionError) as info:
        mmperf_guard.max_ops(work(1), {"add": 3})
    assert isinstance(info.value, GuardFailure) and info.value.result.verdict == "fail"
    assert "op counts add: 25 (max 3)" in str(info.value)


def test_timing_failure_held(mmperf_guard):
    with pytest.raises(AssertionError, match="FAIL: speedup"):
        mmperf_guard.faster(work(4), work(1), at_least=1.5)


@pytest.mark.xfail(raises=GuardFailure, strict=True)
def test_expected_regression(mmperf_guard):
    mmperf_guard.max_ops(work(2), {"add": 25})
""")
    run = pytester.runpytest(*FAST_ARGS)
    run.assert_outcomes(passed=2, xfailed=1)
