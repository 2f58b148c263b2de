"""`pytest --benchmark` (selection, pytest-benchmark timing despite --benchmark-disable) and the
automatic mmperf_timing marker that `-m "not mmperf_timing"` deselects."""

from __future__ import annotations

import pytest

GUARDED = """
import pytest

def test_faster(mmperf_guard):
    mmperf_guard.faster(lambda: None, lambda: None, at_least=1.0)

def test_not_slower(mmperf_guard):
    mmperf_guard.not_slower(lambda: None, lambda: None)

def test_scaling_time(mmperf_guard):
    mmperf_guard.scaling(lambda n: None, sizes=[1, 2], metric="time", max_exponent=1.0)

def test_counter(mmperf_guard):
    mmperf_guard.max_ops(lambda: None, {"aten::add": 1})

def test_scaling_ops(mmperf_guard):
    mmperf_guard.scaling(lambda n: None, sizes=[1, 2], metric="ops", max_exponent=1.0)

def test_bench(benchmark):
    benchmark(lambda: None)

def test_plain():
    pass

@pytest.mark.mmperf_timing
def test_marked():
    pass
"""


def _collected(result: pytest.RunResult) -> set[str]:
    return {line.split("::", 1)[1] for line in result.outlines if "::" in line}


def test_timing_guards_are_marked_so_m_deselects_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(GUARDED)
    result = pytester.runpytest("--collect-only", "-q", "-m", "not mmperf_timing")
    assert _collected(result) == {"test_counter", "test_scaling_ops", "test_bench", "test_plain"}
    result = pytester.runpytest("--collect-only", "-q", "-m", "mmperf_timing")
    assert _collected(result) == {"test_faster", "test_not_slower", "test_scaling_time",
                                  "test_marked"}


def test_a_timing_guard_reached_through_a_fixture_marks_the_test(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.fixture
        def timed(mmperf_guard):
            mmperf_guard.faster(lambda: None, lambda: None, at_least=1.0)

        def test_through_fixture(timed):
            pass

        def test_counter(mmperf_guard):
            mmperf_guard.max_ops(lambda: None, 1)
    """)
    result = pytester.runpytest("--collect-only", "-q", "-m", "mmperf_timing")
    assert _collected(result) == {"test_through_fixture"}


def test_item_functions_sees_the_fixture_definitions(pytester: pytest.Pytester) -> None:
    """The one reader of pytest's private ``item._fixtureinfo``: fails when it disappears."""
    from pytest_mmperf.plugin import item_functions

    item = pytester.getitem("""
        import pytest

        @pytest.fixture
        def helper(tmp_path):
            return tmp_path

        def test_func(helper):
            pass
    """)
    names = [function.__name__ for function in item_functions(item)]
    assert names[0] == "test_func" and {"helper", "tmp_path"} <= set(names), names


def test_benchmark_selects_benchmarks_and_timing_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(GUARDED)
    result = pytester.runpytest("--benchmark", "--collect-only", "-q")
    assert _collected(result) == {"test_faster", "test_not_slower", "test_scaling_time",
                                  "test_bench", "test_marked"}
    result.stdout.fnmatch_lines(["*5/8 tests collected (3 deselected)*"])
    assert len(_collected(pytester.runpytest("--collect-only", "-q"))) == 8  # plain run: all


BENCH = """
def test_bench(benchmark):
    benchmark(lambda: None)
    print("TIMED", not benchmark.disabled)

def test_plain():
    pass
"""
FAST = ["--benchmark-max-time=0.001", "--benchmark-min-rounds=1", "--benchmark-warmup=off"]


@pytest.mark.parametrize("addopts", ["--benchmark-disable", "--benchmark-skip"])
def test_benchmark_enables_timing_despite_addopts(pytester: pytest.Pytester, addopts: str) -> None:
    pytester.makeini(f"[pytest]\naddopts = {addopts} -p no:cacheprovider\n")
    pytester.makepyfile(BENCH)
    plain = pytester.runpytest("-s", *FAST)
    if addopts == "--benchmark-disable":
        plain.assert_outcomes(passed=2)
        assert "TIMED False" in plain.stdout.str()  # pytest-benchmark's own behaviour kept
    else:
        plain.assert_outcomes(passed=1, skipped=1)
    perf = pytester.runpytest("-s", "--benchmark", *FAST)
    perf.assert_outcomes(passed=1, deselected=1)
    assert "TIMED True" in perf.stdout.str()
