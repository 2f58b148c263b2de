"""Fast checks of tools/guard_error_rates.py and tools/commit_repos.py (no measuring study).

The scenarios' goals, the summaries and the Markdown table from synthetic JSON rows, reading
pytest-benchmark's verdict, the two-commit repository and its copies, ``--list``, ``--resume``
bookkeeping; one real pair of pytest-benchmark sessions whose slowdown is a 20 ms sleep, to pin
how pytest-benchmark reports a failed ``--benchmark-compare-fail``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import commit_repos  # noqa: E402
import guard_error_rates as study  # noqa: E402

BY_NAME = {s.name: s for s in study.SCENARIOS}


def guard_row(verdict: str = "pass", *, decided_by: str = "interval", estimate: float = 1.0,
              interval: str = "pass", pairs: int = 3, wall: float = 5.0,
              elapsed: tuple[float, ...] = (1.0, 1.0, 1.0), kind: str = "baseline",
              **extra: Any) -> dict[str, Any]:
    """A row of the plugin's JSON ``guards`` list, as compare() / the guards write it."""
    return {"kind": kind, "nodeid": "test_bench.py::test_x[0]", "verdict": verdict,
            "decided_by": decided_by, "estimate": estimate, "ci_low": estimate - 0.05,
            "ci_high": estimate + 0.05, "n_processes": pairs,
            "extra": {"guard_wall_s": wall, "elapsed_s": list(elapsed), "tau": 0.03,
                      "tau_dl": 0.01, "interval_decision": interval, "threads": 1,
                      "other_cpu_cores": [0.0] * pairs, **extra}}


def side_failure_row(verdict: str = "error") -> dict[str, Any]:
    """compare()'s row when a side could not be measured: no interval, no wall time."""
    return {"kind": "baseline", "nodeid": "test_bench.py::test_x[1]", "verdict": verdict,
            "decided_by": "error", "estimate": None, "ci_low": None, "ci_high": None,
            "n_processes": 0, "extra": {"side": "rev", "side_error": "error"}}


# ------------------------------------------------------------------ scenarios and goals
def test_scenario_names_are_unique_and_every_kind_is_known() -> None:
    names = [s.name for s in study.SCENARIOS]
    assert len(names) == len(set(names))
    assert {s.kind for s in study.SCENARIOS} == {"guard", "baseline", "pytest-benchmark"}
    for s in study.SCENARIOS:
        assert s.correct in ("pass", "fail")
        if s.kind != "guard":
            assert s.ks[0] >= 1 and s.ks[1] >= s.ks[0]
            assert (s.correct == "pass") == (s.ks[0] == s.ks[1]), s.name


def test_commit_goals_are_those_of_issue_22() -> None:
    identical, identical05 = BY_NAME["commit_identical"], BY_NAME["commit_identical05"]
    slower10, slower20 = BY_NAME["commit_slower10"], BY_NAME["commit_slower20"]
    assert (identical.max_wrong, identical.per, identical.runs) == (1, 50, 50)
    assert identical.budget == "default" and "tolerance 0.10" in identical.label
    assert (identical05.max_wrong, identical05.per, identical05.budget) == (1, 50, "--benchmark")
    assert "tolerance 0.05" in identical05.label
    assert (slower10.max_wrong, slower10.per, slower10.runs) == (1, 20, 20)
    assert slower10.budget == "--benchmark" and "tolerance 0.05" in slower10.label
    assert slower10.ks == (10, 11) and slower20.ks == (5, 6)
    assert (slower20.max_wrong, slower20.per, slower20.budget) == (1, 20, "default")


def test_pytest_benchmark_rows_mirror_the_commit_rows_and_are_reported_only() -> None:
    for name, expr in (("identical", "median:10%"), ("identical05", "median:5%"),
                       ("slower10", "median:5%"), ("slower20", "median:10%")):
        ours, theirs = BY_NAME[f"commit_{name}"], BY_NAME[f"pb_{name}"]
        assert (theirs.ks, theirs.runs, theirs.correct) == (ours.ks, ours.runs, ours.correct)
        assert theirs.call == expr and theirs.max_wrong is None
        assert theirs.label == f"--benchmark-compare-fail={expr}"


def test_busy_runner_goals_are_those_of_issue_24() -> None:
    identical, slower = BY_NAME["identical_load"], BY_NAME["slower25_load"]
    assert identical.load and identical.max_wrong == 0
    assert (identical.max_undecided, identical.undecided_per) == (1, 10)
    assert slower.load and (slower.max_wrong, slower.per, slower.runs) == (1, 20, 20)


def test_the_guard_scenarios_keep_their_calls() -> None:
    assert BY_NAME["identical"].call == "not_slower(work(4), work(4), tolerance=0.10)"
    assert BY_NAME["identical"].label == "not_slower(tolerance=0.10)"
    assert BY_NAME["slower10"].args == ("--benchmark",)
    assert BY_NAME["identical_spawn"].args == ("--mmperf-isolation=spawn",)
    assert BY_NAME["slower2x_load"].max_wrong is None


# ------------------------------------------------------------------ summaries
def test_summary_of_baseline_rows_counts_wrong_undecided_and_startup_per_pair() -> None:
    scenario = BY_NAME["commit_identical"]
    rows = [guard_row(estimate=1.0), guard_row(estimate=1.02),
            guard_row("fail", decided_by="estimate", interval="inconclusive", estimate=1.3,
                      wall=8.0, elapsed=(2.0, 2.0, 2.0))]
    row = study.summarise(scenario, rows, 30.0, expected_runs=3)
    assert (row["runs"], row["wrong"], row["undecided"]) == (3, 1, 1)
    assert (row["by_estimate"], row["by_estimate_wrong"]) == (1, 1)
    assert row["allowed"] == pytest.approx(3 / 50) and not row["ok"]
    assert row["estimate_range"] == [1.0, 1.3] and row["estimate_median"] == 1.02
    # (wall - measuring) / pairs: (5 - 3) / 3 twice, (8 - 6) / 3 once
    assert row["worker_overhead_median_s"] == pytest.approx(2 / 3)
    assert row["threads"] == [1] and row["kind"] == "baseline"
    assert row["guards"][2][:2] == ["fail", "estimate"]


def test_summary_survives_side_failures_and_a_short_session_fails_the_goal() -> None:
    scenario = BY_NAME["commit_slower20"]
    rows = [guard_row("fail", estimate=1.2), side_failure_row("rev-error")]
    row = study.summarise(scenario, rows, 10.0, expected_runs=3)
    assert row["wrong"] == 1 and row["other_verdicts"] == ["rev-error"]
    assert row["undecided"] == 1  # a row without an interval did not decide by one
    assert row["estimate_median"] == 1.2 and row["guard_wall_median_s"] == 5.0
    assert not row["ok"]  # 2 rows of 3 expected, even though 1 wrong of 20 would be allowed
    table = study.markdown([row])
    assert "2 of 3 expected" in table and "[rev-error]" in table


def test_undecided_goal_of_the_busy_runner() -> None:
    scenario = BY_NAME["identical_load"]
    decided = [guard_row(kind="not_slower") for _ in range(9)]
    undecided = guard_row(kind="not_slower", decided_by="estimate", interval="inconclusive")
    assert study.summarise(scenario, [*decided, undecided], 1.0)["ok"]
    row = study.summarise(scenario, [*decided[:8], undecided, undecided], 1.0)
    assert row["allowed_undecided"] == pytest.approx(1.0) and not row["ok"]
    assert "2 (allowed 1)" in study.markdown([row])
    failed = study.summarise(scenario, [*decided, guard_row("fail", kind="not_slower")], 1.0)
    assert failed["allowed"] == 0 and not failed["ok"]  # never fails


def test_guard_rows_keep_the_worker_startup_column() -> None:
    rows = [guard_row(kind="not_slower", elapsed=(1.0, 1.0), worker_wall_s=[1.25])]
    row = study.summarise(BY_NAME["identical"], rows, 3.0)
    assert row["worker_overhead_median_s"] == pytest.approx(0.25)
    assert row["ok"] and row["title"] == "identical"


def test_summary_of_pytest_benchmark_runs() -> None:
    scenario = BY_NAME["pb_identical"]
    runs = [{"verdict": "fail", "error": None, "estimate": 1.2, "wall_s": 8.0, "exit": 1},
            {"verdict": "pass", "error": None, "estimate": 0.9, "wall_s": 7.0, "exit": 0},
            {"verdict": "error", "error": "nothing to compare against", "estimate": None,
             "wall_s": 3.0, "exit": 0}]
    row = study.summarise_pb(scenario, runs, 20.0)
    assert row["wrong"] == 2 and row["ok"]  # reported: no goal of ours
    assert row["errors"] == ["nothing to compare against"]
    assert row["estimate_range"] == [0.9, 1.2] and row["guard_wall_median_s"] == 7.0
    line = study.markdown([row]).splitlines()[-1]
    assert "2 / 3 (reported) [error]" in line and "2 sessions" in line
    assert "| – | – |" in line  # no undecided count, no point-estimate decisions


def test_markdown_lines_up_with_its_header() -> None:
    rows = [study.summarise(BY_NAME["commit_identical"], [guard_row()], 5.0, expected_runs=1),
            study.summarise(BY_NAME["identical"], [guard_row(kind="not_slower")], 5.0),
            study.summarise_pb(BY_NAME["pb_slower20"], [{"verdict": "fail", "error": None,
                                                         "estimate": 1.2, "wall_s": 8.0,
                                                         "exit": 1}], 8.0)]
    lines = study.markdown(rows).splitlines()
    assert len({line.count("|") for line in lines}) == 1
    assert "commit_identical (5 vs 5)" in lines[2] and "3 pairs" in lines[2]
    assert "| 1.00 (1.00–1.00) |" in lines[2]  # ratios keep their trailing zeros
    assert "`--mmperf-baseline=HEAD~1, tolerance 0.10`" in lines[2]


# ------------------------------------------------------------------ pytest-benchmark's verdict
def report(median: float) -> dict[str, Any]:
    return {"benchmarks": [{"name": "test_x", "stats": {"median": median}}]}


def test_pb_result_reads_the_regression_from_the_text_and_checks_the_exit_status() -> None:
    failed = commit_repos.pb_result(0, 1, "...\nPerformance has regressed:\n\ttest_x ...",
                                    report(1.0), report(1.25), 5.0)
    assert failed["verdict"] == "fail" and failed["estimate"] == pytest.approx(1.25)
    passed = commit_repos.pb_result(0, 0, "1 passed", report(1.0), report(1.02), 5.0)
    assert passed["verdict"] == "pass" and passed["error"] is None
    silent = commit_repos.pb_result(0, 1, "1 failed", report(1.0), report(1.0), 5.0)
    assert silent["verdict"] == "error" and "exited 1 without" in silent["error"]
    text_only = commit_repos.pb_result(0, 0, "Performance has regressed", report(1.0),
                                       report(2.0), 5.0)
    assert text_only["verdict"] == "error"
    nothing = commit_repos.pb_result(0, 0, "Can't compare. No benchmark files", None,
                                     report(1.0), 5.0)
    assert nothing["verdict"] == "error" and nothing["estimate"] is None
    unsaved = commit_repos.pb_result(2, 0, "", None, report(1.0), 5.0)
    assert "saving session exited 2" in unsaved["error"]


def test_pytest_benchmark_fails_a_compare_by_exit_1_and_its_text(tmp_path: Path) -> None:
    """The contract pb_result relies on, with the installed pytest-benchmark: a slowdown that
    no machine can miss (a 20 ms sleep against none) is reported with exit status 1 and
    "Performance has regressed", although the test itself passed."""
    test = "import time\n\n\ndef test_x(benchmark):\n    benchmark(time.sleep, {s})\n"
    rev, head = tmp_path / "rev", tmp_path / "head"
    for path, seconds in ((rev, 0), (head, 0.02)):
        path.mkdir()
        (path / "pytest.ini").write_text("[pytest]\n")
        (path / "test_single.py").write_text(test.format(s=seconds))
    result, output = commit_repos.pb_compare(rev, head, tmp_path / "storage",
                                             tmp_path / "compared.json", "median:10%")
    assert result["verdict"] == "fail", output
    assert result["exit"] == 1 and result["estimate"] > 10
    assert "1 passed" not in output  # the test passed; the summary raised before saying so


# ------------------------------------------------------------------ the repository
def test_commits_repo_has_the_two_commits_and_a_clean_checkout(tmp_path: Path) -> None:
    repo = commit_repos.commits_repo(tmp_path / "repo", (5, 6), runs=7)
    assert commit_repos.git(repo, "rev-list", "--count", "HEAD") == "2"
    rev = commit_repos.git(repo, "show", "HEAD~1:mypkg/work.py")
    head = (repo / "mypkg" / "work.py").read_text()
    assert "range(5)" in rev and "range(6)" in head
    assert "range(7)" in (repo / commit_repos.BASELINE_FILE).read_text()
    status, head_id, _ = commit_repos.checkout_state(repo)
    assert status == "" and head_id == commit_repos.git(repo, "rev-parse", "HEAD")
    assert len(commit_repos.git(repo, "worktree", "list").splitlines()) == 1
    namespace: dict[str, Any] = {}
    exec(compile(head, "work.py", "exec"), namespace)  # the module runs
    namespace["work"]()


def test_identical_commits_differ_by_a_comment_only(tmp_path: Path) -> None:
    repo = commit_repos.commits_repo(tmp_path / "repo", (10, 10), runs=2)
    diff = commit_repos.git(repo, "diff", "-U0", "HEAD~1", "HEAD")
    added = [line for line in diff.splitlines()
             if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]
    assert added == ["+" + commit_repos.NEUTRAL_NOTE.strip()]
    assert "no functional change" in commit_repos.git(repo, "log", "-1", "--format=%s")


def test_archive_copies_a_revision_without_git(tmp_path: Path) -> None:
    repo = commit_repos.commits_repo(tmp_path / "repo", (5, 6), runs=1)
    copy = commit_repos.archive(repo, "HEAD~1", tmp_path / "rev")
    assert "range(5)" in (copy / "mypkg" / "work.py").read_text()
    assert (copy / commit_repos.SINGLE_FILE).exists() and not (copy / ".git").exists()
    assert commit_repos.git(repo, "status", "--porcelain") == ""


def test_git_errors_name_the_command(tmp_path: Path) -> None:
    commit_repos.commits_repo(tmp_path / "repo", (5, 5), runs=1)
    with pytest.raises(RuntimeError, match="git rev-parse no-such-rev"):
        commit_repos.git(tmp_path / "repo", "rev-parse", "no-such-rev")


def test_leftovers_lists_only_pytest_mmperf_files(tmp_path: Path) -> None:
    (tmp_path / "mmperf-baseline-abc").mkdir()
    (tmp_path / "other").mkdir()
    assert commit_repos.leftovers(tmp_path) == ["mmperf-baseline-abc"]


# ------------------------------------------------------------------ machine, list, resume
def test_machine_info_and_line() -> None:
    info = commit_repos.machine_info()
    assert info["cores"] >= 1 and info["torch"] and info["date"].endswith("UTC")
    line = commit_repos.machine_line(info)
    assert line.startswith("Machine: ") and info["torch"] in line and info["date"] in line
    assert commit_repos.same_machine(info, dict(info, date="another day"))
    assert not commit_repos.same_machine(info, dict(info, cores=info["cores"] + 1))
    assert "to " + info["date"] in commit_repos.machine_line(dict(info, started="earlier"))


def test_listing_scales_runs_and_sums_durations() -> None:
    chosen = [BY_NAME["identical"], BY_NAME["pb_slower20"]]
    text = study.listing(chosen, 0.1)
    assert "identical" in text and "pb_slower20" in text
    lines = text.splitlines()
    assert lines[1].split()[2] == "5" and lines[2].split()[2] == "2"  # 50 * 0.1, max(2, 2)
    assert lines[-1].startswith("total: 2 scenarios")
    assert "reported" in lines[2] and "wrong <= 0.1" in lines[1]


def test_list_option_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert study.main(["--list", "--only", "commit_identical", "pb_identical"]) == 0
    out = capsys.readouterr().out
    assert "commit_identical" in out and "pb_identical" in out and "identical05" not in out


def test_resume_needs_json() -> None:
    with pytest.raises(SystemExit):
        study.main(["--resume", "--only", "identical"])


def test_saved_rows_round_trip_and_resume_keeps_complete_rows(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    info = {"cpu": "x", "cores": 2, "torch": "2", "cpu_capability": "AVX2", "date": "d"}
    done = study.summarise(BY_NAME["commit_identical"], [guard_row()] * 3, 5.0, expected_runs=3)
    short = study.summarise(BY_NAME["commit_slower20"], [guard_row("fail")], 5.0,
                            expected_runs=2)
    study.save(path, info, [done, short])
    assert not path.with_name("study.json.partial").exists()
    machine, rows = study.load_previous(path)
    assert machine == info and [r["scenario"] for r in rows] == ["commit_identical",
                                                                  "commit_slower20"]
    assert study.complete(rows[0], 3) and not study.complete(rows[0], 5)
    assert not study.complete(rows[1], 2)  # the session wrote fewer rows than it should
    path.write_text(json.dumps([done]))  # the older format: a bare list of rows
    assert study.load_previous(path) == (None, [done])
    previous = {"commit_identical": done, "pb_identical": {"scenario": "pb_identical"}}
    assert [r["scenario"] for r in study.merged([short], previous)] == [
        "commit_slower20", "commit_identical", "pb_identical"]


def test_the_tool_runs_as_a_script() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "guard_error_rates.py"),
                           "--list", "--scale", "0.06"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "commit_slower10" in done.stdout and "total: " in done.stdout
