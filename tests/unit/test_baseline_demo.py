"""Fast checks of tools/baseline_demo.py (no comparison is measured).

The demo's history (each commit changes what it says and only that; the slowed and swapped
functions still compute the same thing), its test file runs (benchmarks disabled), and the
parts that read a run: JUnit failures, the JSON comparisons, the judgement and the tables.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import baseline_demo as demo  # noqa: E402
from commit_repos import commit_files, git  # noqa: E402

CHANGES = {c.name: c for c in demo.CHANGES}


def history(path: Path) -> Path:
    """The demo's repository with all its commits (as demo() makes them, without the runs)."""
    commit_files(path, demo.base_files(), "base")
    for change in demo.CHANGES:
        commit_files(path, change.files, change.message)
    return path


def changed_lines(repo: Path, rev: str, *paths: str) -> list[str]:
    diff = git(repo, "diff", "-U0", f"{rev}~1", rev, "--", *paths)
    return [line for line in diff.splitlines()
            if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]


def test_each_commit_changes_what_it_says_and_only_that(tmp_path: Path) -> None:
    repo = history(tmp_path / "repo")
    assert git(repo, "rev-list", "--count", "HEAD") == "4"
    neutral = git(repo, "diff", "--name-only", "HEAD~3", "HEAD~2").split()
    assert sorted(neutral) == ["README.md", "mypkg/model.py"]
    assert changed_lines(repo, "HEAD~2", "mypkg/model.py") == [f'-"""{demo.DOC}"""',
                                                              f'+"""{demo.DOC_NEUTRAL}"""']
    assert git(repo, "diff", "--name-only", "HEAD~2", "HEAD~1").split() == ["mypkg/text.py"]
    assert git(repo, "diff", "--name-only", "HEAD~1", "HEAD").split() == ["mypkg/model.py"]
    swap = changed_lines(repo, "HEAD")
    assert any("scaled_dot_product_attention" in line for line in swap if line[0] == "-")
    assert any("torch.softmax" in line for line in swap if line[0] == "+")
    assert git(repo, "status", "--porcelain") == ""


def test_changes_expect_the_failures_of_issue_22() -> None:
    assert CHANGES["neutral"].expected_failures == ()
    assert CHANGES["slower20"].expected_failures == ("test_tokenize",)
    assert CHANGES["explicit_attention"].expected_failures == ("test_cross_attention",)
    assert set(demo.TEST_NAMES) == {line.split("(")[0].removeprefix("def ")
                                    for line in demo.TESTS.splitlines()
                                    if line.startswith("def test_")}


@pytest.mark.parametrize("name", ["slower20", "explicit_attention"])
def test_the_changed_function_computes_the_same(name: str) -> None:
    change = CHANGES[name]
    before = {**demo.base_files(), **CHANGES["neutral"].files}
    if name == "explicit_attention":
        before.update(CHANGES["slower20"].files)
    result = demo.check_change(change, before[change.module], change.files[change.module],
                               rounds=1)
    assert result["outputs_agree"] and result["ratio"] > 0


def test_the_slowdown_is_a_fifth_more_tokenizing() -> None:
    text = CHANGES["slower20"].files["mypkg/text.py"]
    module = demo._load(text, "demo_text_check")
    calls: list[int] = []
    original = module._tokenize

    def counting(texts: list[str], length: int) -> Any:
        calls.append(len(texts))
        return original(texts, length)

    module._tokenize = counting
    module.tokenize([f"a photo of the red cat {i}" for i in range(500)])
    assert calls == [500, 100]


def test_the_demo_tests_run_at_every_commit(tmp_path: Path) -> None:
    """The test file and pytest.ini work as a user's would (benchmarks disabled: each
    function called once), at the base commit and at the last one."""
    repo = tmp_path / "repo"
    commit_files(repo, demo.base_files(), "base")
    for stage in ("base", "last"):
        if stage == "last":
            for change in demo.CHANGES:
                commit_files(repo, change.files, change.message)
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "--benchmark-disable"], cwd=repo, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "5 passed" in done.stdout


# ------------------------------------------------------------------ reading a run
JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_benchmarks" name="test_preprocess" time="1.0" />
<testcase classname="tests.test_benchmarks" name="test_tokenize" time="1.0">
<failure message="GuardFailure">...</failure></testcase>
<testcase classname="tests.test_benchmarks" name="test_mlp" time="1.0">
<error message="error">...</error></testcase>
<testcase classname="tests.test_benchmarks" name="test_patch_embed" time="1.0">
<skipped message="skip" /></testcase>
</testsuite></testsuites>"""


def test_failed_tests_reads_failures_and_errors(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    assert demo.failed_tests(junit) == ["test_mlp", "test_tokenize"]


def baseline(test: str, verdict: str = "pass", estimate: float | None = 1.0) -> dict[str, Any]:
    return {"kind": "baseline", "nodeid": f"tests/test_benchmarks.py::{test}",
            "verdict": verdict, "estimate": estimate, "ci_low": 0.95, "ci_high": 1.05,
            "n_processes": 3, "decided_by": "interval",
            "message": f"vs HEAD~1: {verdict.upper()}: ...\n  more",
            "extra": {"change": "same", "threads": 1, "guard_wall_s": 4.0}}


def test_comparisons_join_the_json_reports() -> None:
    report = {"guards": [baseline("test_mlp"), {"kind": "not_slower", "nodeid": "x"},
                         baseline("test_tokenize", "fail", 1.2)]}
    bench = {"benchmarks": [{"name": "test_mlp", "stats": {"median": 0.002}}]}
    rows = demo.comparisons(report, bench)
    assert [r["test"] for r in rows] == ["test_mlp", "test_tokenize"]
    assert rows[0]["per_call_s"] == 0.002 and rows[1]["per_call_s"] is None
    assert rows[1]["verdict"] == "fail" and rows[1]["message"] == "vs HEAD~1: FAIL: ..."
    assert demo.comparisons(report, None)[0]["per_call_s"] is None


def rows_for(*failing: str) -> list[dict[str, Any]]:
    return [{"test": t, "verdict": "fail" if t in failing else "pass"} for t in demo.TEST_NAMES]


def test_judge() -> None:
    slow = CHANGES["slower20"]
    assert demo.judge(slow, ["test_tokenize"], rows_for("test_tokenize"), 60.0, True)["ok"]
    wrong = demo.judge(slow, ["test_mlp", "test_tokenize"], rows_for(), 60.0, True)
    assert not wrong["ok"] and "expected ['test_tokenize']" in wrong["problems"][0]
    slow_run = demo.judge(CHANGES["neutral"], [], rows_for(), 121.0, True)
    assert slow_run["problems"] == ["took 121 s > 120 s"]
    dirty = demo.judge(CHANGES["neutral"], [], rows_for(), 10.0, False)
    assert not dirty["ok"]
    partial = demo.judge(CHANGES["neutral"], [], rows_for()[:4], 10.0, True)
    assert partial["problems"] == ["not compared: ['test_patch_embed']"]
    odd = [*rows_for()[:4], {"test": "test_patch_embed", "verdict": "rev-error"}]
    assert "rev-error" in demo.judge(CHANGES["neutral"], [], odd, 10.0, True)["problems"][0]


def test_markdown_tables() -> None:
    comparison = demo.comparisons({"guards": [baseline("test_tokenize", "fail", 1.21)]},
                                  {"benchmarks": [{"name": "test_tokenize",
                                                   "stats": {"median": 0.0021}}]})[0]
    run = {"change": "slower20", "commit": "0123456789ab", "expected": ["test_tokenize"],
           "failed": ["test_tokenize"], "ok": True, "problems": [], "wall_s": 57.2,
           "untouched": True, "comparisons": [comparison]}
    check = {"change": "slower20", "function": "mypkg/text.py", "ratio": 1.21,
             "outputs_agree": True, "threads": 1}
    text = demo.markdown([{"checks": [check], "runs": [run]}])
    tables = [block.splitlines() for block in text.split("\n\n")]
    assert len(tables) == 3
    for table in tables:
        assert len({line.count("|") for line in table}) == 1
    assert "| 1 | slower20 (0123456) | test_tokenize | test_tokenize | yes | 57 s | yes |" \
        in tables[0]
    assert "1.21 [0.950, 1.05]" in tables[1][2] and "2.10 ms" in tables[1][2]
    assert "| 4.0 s |" in tables[1][2]
    assert "1.210" in tables[2][2]
    no_checks = demo.markdown([{"checks": [], "runs": [run]}])
    assert len(no_checks.split("\n\n")) == 2


def test_repeat_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        demo.main(["--repeat", "0"])
