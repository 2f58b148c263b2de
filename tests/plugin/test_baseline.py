"""``--mmperf-baseline=REV`` through pytest, on small git repositories made by each test.

Each repository has a package ``mypkg`` whose functions do single-threaded element-wise work
(stable on a busy CI runner), committed once or twice; the tests run pytest-benchmark tests
and report families against an earlier commit. Slowdowns are 4x, so that the verdicts are not in
doubt at a small budget; the statistics themselves are tested in tests/unit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

# pytest-benchmark runs each benchmark once (its own timing is not what these tests are about);
# a 1.3x tolerance decides identical code in the fewest pairs and a 4x slowdown still fails.
FAST_ARGS = ("--mmperf-budget=0.3", "--mmperf-processes=3", "--mmperf-baseline-tolerance=0.3",
             "-p", "no:randomly", "-p", "no:cacheprovider", "--mmperf-json=report.json",
             "--benchmark-disable")

WORK = """
import torch

X = torch.randn(512)


def spin(n):
    for _ in range(n):
        torch.add(X, 1.0)


def fast():
    spin({fast})


def steady():
    spin(25)
"""

BENCH_TESTS = """
from mypkg import work


def test_fast(benchmark):
    benchmark(work.fast)


def test_steady(benchmark):
    benchmark.pedantic(work.steady, rounds=3)
"""


def git(path: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def commit(path: Path, files: dict[str, str], message: str) -> str:
    """Write ``files`` (relative path -> text) and commit everything; returns the commit id."""
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    if not (path / ".git").exists():
        git(path, "init", "-q")
        git(path, "config", "user.email", "t@example.com")
        git(path, "config", "user.name", "t")
        (path / ".gitignore").write_text("report.json\n__pycache__/\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return git(path, "rev-parse", "HEAD")


def repository(pytester: pytest.Pytester, fast: int = 25) -> str:
    """A repository with ``mypkg`` and two benchmark tests; returns the first commit."""
    return commit(pytester.path, {"mypkg/__init__.py": "", "mypkg/work.py": WORK.format(fast=fast),
                                  "test_bench.py": BENCH_TESTS}, "first")


def guards(pytester: pytest.Pytester) -> dict[str, dict[str, Any]]:
    rows = json.loads((pytester.path / "report.json").read_text())["guards"]
    return {(r["nodeid"].split("::")[-1] + (f"[{r['name']}]" if r["name"] else "")): r
            for r in rows if r["kind"] == "baseline"}


def leftovers() -> list[str]:
    return sorted(p.name for p in Path(tempfile.gettempdir()).glob("mmperf-*")
                  if p.name.startswith(("mmperf-head-", "mmperf-base-")))


def test_a_slower_commit_fails_its_test_and_an_unchanged_benchmark_passes(
        pytester: pytest.Pytester) -> None:
    first = repository(pytester)
    commit(pytester.path, {"mypkg/work.py": WORK.format(fast=100)}, "fast() 4x slower")
    before = (git(pytester.path, "status", "--porcelain"), git(pytester.path, "worktree", "list"),
              leftovers())
    result = pytester.runpytest("--mmperf-baseline=HEAD~1", *FAST_ARGS)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        f"mmperf baseline: the working tree against HEAD~1 ({first[:12]})",
        "*GuardFailure: vs HEAD~1: FAIL: the working tree is slower than HEAD~1 "
        f"({first[:12]}): time ratio *x, 95% interval [[]*, *[]], tolerated 1.3x",
        "*median time per call: working tree *, HEAD~1 *",
        "*rounds x * pairs of processes in lockstep on cpu*",
        "*re-run with a larger budget: pytest test_bench.py::test_fast *--mmperf-baseline=HEAD~1* "
        "*--mmperf-budget=* --mmperf-processes=*",
    ])
    rows = guards(pytester)
    slow, steady = rows["test_fast"], rows["test_steady"]
    assert slow["verdict"] == "fail" and slow["ci_low"] > 1.3, slow["message"]  # by the interval
    assert slow["extra"]["commit"] == first and slow["extra"]["revision"] == "HEAD~1"
    assert slow["extra"]["change"] == "slower" and slow["n_processes"] >= 2
    assert steady["verdict"] == "pass" and steady["ci_low"] < 1.1, steady["message"]
    # the checkout, the index, the worktree list and the temporary folder are as they were
    assert (git(pytester.path, "status", "--porcelain"), git(pytester.path, "worktree", "list"),
            leftovers()) == before


def test_code_missing_at_rev_is_new_and_an_error_at_rev_is_reported(
        pytester: pytest.Pytester) -> None:
    first = commit(pytester.path, {
        "mypkg/__init__.py": "",
        "mypkg/work.py": WORK.format(fast=25) + "\n\ndef fragile():\n"
                                               "    raise RuntimeError('broken at this commit')\n",
    }, "first")
    commit(pytester.path, {
        "mypkg/work.py": WORK.format(fast=25) + "\n\ndef fragile():\n    spin(25)\n\n\n"
                                               "def added():\n    spin(25)\n",
        "mypkg/extra.py": "from mypkg.work import spin\n\n\ndef more():\n    spin(25)\n",
        "test_bench.py": """
            from mypkg import work


            def test_fragile(benchmark):
                benchmark(work.fragile)


            def test_added(benchmark):
                benchmark(work.added)


            def test_new_module(benchmark):
                from mypkg.extra import more
                benchmark(more)
        """}, "second")
    result = pytester.runpytest("--mmperf-baseline=HEAD~1", *FAST_ARGS)
    result.assert_outcomes(passed=3)
    rows = guards(pytester)
    assert rows["test_fragile"]["verdict"] == "rev-error", rows["test_fragile"]["message"]
    assert "RuntimeError: broken at this commit" in rows["test_fragile"]["message"]
    assert rows["test_added"]["verdict"] == "new", rows["test_added"]["message"]
    assert "added" in rows["test_added"]["message"]
    assert rows["test_new_module"]["verdict"] == "new", rows["test_new_module"]["message"]
    assert "mypkg.extra" in rows["test_new_module"]["message"]
    assert all(r["extra"]["commit"] == first for r in rows.values())
    result.stdout.fnmatch_lines(["*test_fragile*rev-error*", "*test_added*new*"])


def test_an_uncommitted_change_is_measured_against_head(pytester: pytest.Pytester) -> None:
    head = repository(pytester)
    (pytester.path / "mypkg" / "work.py").write_text(WORK.format(fast=100))
    result = pytester.runpytest("--mmperf-baseline=HEAD", *FAST_ARGS, "-k", "fast")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"mmperf baseline: the working tree with uncommitted changes against HEAD ({head[:12]})"])
    row = guards(pytester)["test_fast"]
    assert row["verdict"] == "fail" and row["extra"]["dirty"] is True
    assert git(pytester.path, "status", "--porcelain") == "M mypkg/work.py"


def test_head_against_a_clean_head_is_an_a_a_run(pytester: pytest.Pytester) -> None:
    repository(pytester)
    result = pytester.runpytest("--mmperf-baseline=HEAD", *FAST_ARGS, "-k", "steady")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*REV is HEAD and the tree is clean, an A/A run*"])
    row = guards(pytester)["test_steady"]
    assert row["verdict"] == "pass" and row["extra"]["a_a"] is True
    assert row["ci_low"] <= 1.0 <= row["ci_high"]


def test_each_family_implementation_is_compared(pytester: pytest.Pytester) -> None:
    repository(pytester)
    commit(pytester.path, {"mypkg/work.py": WORK.format(fast=100), "test_family.py": """
        from mypkg import work


        def test_family(mmperf_report):
            mmperf_report.family("spins", {"fast": work.fast, "steady": work.steady},
                                 baseline="steady")
    """}, "family; fast() 4x slower")
    result = pytester.runpytest("--mmperf-baseline=HEAD~1", *FAST_ARGS, "test_family.py")
    result.assert_outcomes(failed=1)
    rows = guards(pytester)
    assert rows["test_family[spins/fast]"]["verdict"] == "fail"
    assert rows["test_family[spins/steady]"]["verdict"] == "pass"
    result.stdout.fnmatch_lines(["*spins/fast vs HEAD~1: FAIL: the working tree is slower*"])


def test_rev_side_that_loaded_working_tree_modules_is_an_error(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module of the repository imported before the redirection (here as a ``-p`` plugin)
    would make REV's side run the working tree's code: an error, never a silent 1.00x."""
    monkeypatch.syspath_prepend(str(pytester.path))  # `-p mypkg.early` is imported that early
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))  # ... in the side processes too
    repository(pytester)
    commit(pytester.path, {"mypkg/early.py": "from mypkg import work  # noqa: F401\n"}, "plugin")
    result = pytester.runpytest("--mmperf-baseline=HEAD", *FAST_ARGS, "-p", "mypkg.early",
                                "-k", "steady")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ERROR: the comparison with HEAD*imported modules of the "
                                 "repository from the working tree instead of its copy: mypkg*"])
    assert guards(pytester)["test_steady"]["verdict"] == "error"


@pytest.mark.parametrize(("setup", "rev", "expected"), [
    ("none", "HEAD", "is not inside a git repository"),
    ("repo", "no-such-branch", "not a commit of the repository*git fetch origin main"),
    ("repo", "-x", "starts with '-'*refused so that it cannot be read as a git option"),
    ("shallow", "HEAD~1", "shallow clone*fetch-depth: 0"),
])
def test_revisions_that_cannot_be_compared_are_usage_errors(
        pytester: pytest.Pytester, setup: str, rev: str, expected: str) -> None:
    path = pytester.path
    if setup != "none":
        repository(pytester)
    if setup == "shallow":
        commit(path, {"mypkg/work.py": WORK.format(fast=30)}, "second")
        clone = path.parent / f"{path.name}-clone"
        git(path, "clone", "-q", "--depth", "1", f"file://{path}", str(clone))
        path = clone
    (path / "test_never_runs.py").write_text("def test_never():\n    raise AssertionError\n")
    result = subprocess.run([sys.executable, "-m", "pytest", f"--mmperf-baseline={rev}",
                             "-p", "no:cacheprovider"], cwd=path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert pytest.LineMatcher(result.stderr.splitlines()).fnmatch_lines(
        [f"*pytest-mmperf: invalid baseline {rev!r} from --mmperf-baseline:*{expected}*"]) is None
    assert "test_never" not in result.stdout


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32",
                    reason="sends SIGINT to a pytest process")
def test_ctrl_c_during_a_comparison_leaves_nothing_behind(pytester: pytest.Pytester,
                                                          tmp_path: Path) -> None:
    """Interrupted while both sides measure: pytest ends (exit 2), REV's copy is removed and no
    side process survives."""
    repository(pytester)
    commit(pytester.path, {"test_slow.py": """
        import random
        import time
        from mypkg import work


        def test_slow(benchmark):
            # Calls of 0-20 ms at random: no pair can stop before its 30 s budget.
            benchmark.pedantic(lambda: (time.sleep(random.uniform(0.0, 0.02)), work.steady()),
                               rounds=1)
    """}, "slow benchmark")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "test_slow.py", "-p", "no:randomly",
                             "--mmperf-baseline=HEAD", "--mmperf-budget=30",
                             "--benchmark-disable"],
                            cwd=pytester.path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            # a shell's background job ignores SIGINT, and Python keeps an
                            # ignored SIGINT ignored: the run under test must have Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(list(scratch.glob("mmperf-side-*.log"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # REV's copy is made when its side starts, after the working tree's
    assert list(scratch.glob("mmperf-base-*")), "REV's copy was never made"
    time.sleep(1.5)  # both sides warm and measuring
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert not list(scratch.glob("mmperf-base-*")) + list(scratch.glob("mmperf-head-*")), out
    time.sleep(0.5)
    assert _processes_in(pytester.path) == [], out


def _processes_in(folder: Path) -> list[int]:
    """Processes (other than this one) whose working directory is ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder:
                found.append(int(entry.name))
        except OSError:
            continue
    return found
