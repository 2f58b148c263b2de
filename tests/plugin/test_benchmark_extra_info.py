"""pytest-benchmark tests that use our fixtures carry device, spec and throughput in extra_info."""

from __future__ import annotations

import json

import pytest

TESTS = """
import pytest


@pytest.mark.mmperf_batch(batch_size=3, image_size=(32, 48))
def test_batch(benchmark, mmperf_batch, mmperf_device):
    benchmark(lambda: [image.size for image in mmperf_batch.images])


@pytest.mark.mmperf_features(batch_size=2, image_tokens=10, text_tokens=6, dim=8, heads=2)
def test_features(benchmark, mmperf_features):
    benchmark.extra_info["flops"] = 1000
    benchmark(lambda: mmperf_features.image_tokens.sum())


def test_own_count_wins(benchmark, mmperf_batch_factory):
    batch = mmperf_batch_factory(batch_size=2, image_size=(16, 16))
    benchmark.extra_info["images"] = 4
    benchmark(lambda: batch.images)


def test_plain(benchmark):
    benchmark(lambda: None)
"""


def _run(pytester: pytest.Pytester, *args: str) -> dict[str, dict]:
    pytester.makepyfile(test_bench=TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--mmperf-device=cpu",
                                "--benchmark-json=out.json", *args)
    result.assert_outcomes(passed=4)
    data = json.loads((pytester.path / "out.json").read_text())
    return {b["name"].split("[")[0]: b for b in data["benchmarks"]}


def test_extra_info_has_device_spec_and_throughput(pytester: pytest.Pytester) -> None:
    benches = _run(pytester, "--benchmark-max-time=0.05")
    batch = benches["test_batch"]
    info, median = batch["extra_info"], batch["stats"]["median"]
    assert info["device"] == "cpu"
    assert info["batch_spec"]["batch_size"] == 3 and info["batch_spec"]["image_size"] == [32, 48]
    assert info["images"] == 3
    assert info["images_per_s"] == pytest.approx(3 / median, rel=1e-6)
    assert info["units"]["images_per_s"] == "images/s"

    feats = benches["test_features"]
    info, median = feats["extra_info"], feats["stats"]["median"]
    assert info["feature_spec"]["image_tokens"] == 10 and info["tokens"] == 2 * (10 + 6)
    assert info["tokens_per_s"] == pytest.approx(32 / median, rel=1e-6)
    assert info["gflops_per_s"] == pytest.approx(1000e-9 / median, rel=1e-6)
    assert info["units"] == {"tokens_per_s": "tokens/s", "gflops_per_s": "GFLOP/s"}

    own = benches["test_own_count_wins"]["extra_info"]
    assert own["images"] == 4 and "batch_spec" not in own  # a factory's spec is the test's own
    assert own["images_per_s"] == pytest.approx(4 / benches["test_own_count_wins"]["stats"]
                                                ["median"], rel=1e-6)
    assert benches["test_plain"]["extra_info"] == {}


def test_mmperf_json_has_this_runs_benchmark_rows(pytester: pytest.Pytester) -> None:
    """The report's benchmark rows come from pytest-benchmark's public hook
    (``pytest_benchmark_group_stats``): every run that timed, not only runs writing its JSON;
    none when timing is off; a ``--benchmark-compare`` file's rows are not this run's."""
    pytester.makepyfile(test_bench=TESTS)
    args = ("-p", "no:cacheprovider", "--mmperf-device=cpu", "--benchmark-max-time=0.01",
            "--mmperf-json=report.json")
    pytester.runpytest(*args, "--benchmark-autosave").assert_outcomes(passed=4)
    report = json.loads((pytester.path / "report.json").read_text())
    rows = {row["name"].split("[")[0]: row for row in report["benchmarks"]}
    assert set(rows) == {"test_batch", "test_features", "test_own_count_wins", "test_plain"}
    batch = rows["test_batch"]
    assert 0 < batch["q1_s"] <= batch["median_s"] <= batch["q3_s"] and batch["rounds"] >= 1
    assert batch["extra_info"]["images"] == 3 and batch["fullname"].endswith("test_batch[cpu]")
    compared = pytester.runpytest(*args, "--benchmark-compare")
    compared.assert_outcomes(passed=4)
    report = json.loads((pytester.path / "report.json").read_text())
    assert len(report["benchmarks"]) == 4, report["benchmarks"]
    pytester.runpytest(*args, "--benchmark-disable").assert_outcomes(passed=4)
    assert json.loads((pytester.path / "report.json").read_text())["benchmarks"] == []


def test_without_pytest_benchmark_the_session_still_reports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(mmperf_seed):\n    assert mmperf_seed >= 0\n")
    result = pytester.runpytest("-p", "no:benchmark", "--mmperf-json=report.json")
    result.assert_outcomes(passed=1)
    assert json.loads((pytester.path / "report.json").read_text())["benchmarks"] == []
