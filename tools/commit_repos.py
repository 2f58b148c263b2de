"""Small git repositories for the across-commits study and demo, and pytest-benchmark's compare.

Shared by ``tools/guard_error_rates.py`` (the ``commit_*`` and ``pb_*`` scenarios) and
``tools/baseline_demo.py``: build a repository commit by commit in a temporary directory, copy
a revision's files out with ``git archive``, record what ``--mmperf-baseline`` must leave as it
was (status, HEAD, worktree list), run one pytest-benchmark (save at REV, compare at HEAD) pair
of sessions and read its verdict, and describe the machine for the docs.

pytest-benchmark reports a regression found by ``--benchmark-compare-fail`` by raising
``PerformanceRegression`` in its terminal summary (pytest-benchmark 5.3.1): the session prints
"Performance has regressed" and a traceback and exits 1, while the test itself passed (the
"1 passed" line is never printed; JUnit XML shows no failure). :func:`pb_result` counts a run
as failed on the text and checks that the exit status agrees.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

GIT_IDENTITY = ("-c", "user.name=mmperf study", "-c", "user.email=study@example.com",
                "-c", "commit.gpgsign=false")
REGRESSED = "Performance has regressed"

# The study's repository: ``mypkg.work.work()`` does k products of 256 x 256 float32 matrices.
WORK_MODULE = '''"""The work of the study: k products of 256 x 256 float32 matrices."""

import torch

_GENERATOR = torch.Generator().manual_seed(0)
A = torch.randn(256, 256, generator=_GENERATOR)
B = torch.randn(256, 256, generator=_GENERATOR)
{note}

def work():
    for _ in range({k}):
        torch.mm(A, B)
'''
BASELINE_TESTS = '''import pytest

from mypkg.work import work


@pytest.mark.parametrize("run", range({runs}))
def test_x(benchmark, run):
    benchmark(work)
'''
SINGLE_TEST = '''from mypkg.work import work


def test_x(benchmark):
    benchmark(work)
'''
BASELINE_FILE, SINGLE_FILE = "test_bench.py", "test_single.py"
NEUTRAL_NOTE = "# Reviewed: no functional change in this commit.\n"


# ------------------------------------------------------------------ git
def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` (arguments only, no shell); its stdout, stripped."""
    done = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=repo, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def commit_files(repo: Path, files: dict[str, str], message: str) -> str:
    """Write ``files`` (relative path -> text) into ``repo`` (made a repository on first use),
    commit everything and return the commit id."""
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        git(repo, "init", "-q")
    for name, text in files.items():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def checkout_state(repo: Path) -> tuple[str, str, str]:
    """What --mmperf-baseline must leave as it was: status, HEAD and the worktree list."""
    return (git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD"),
            git(repo, "worktree", "list", "--porcelain"))


def leftovers(tmp: Path) -> list[str]:
    """pytest-mmperf's temporary files and folders left in ``tmp`` (its copies of REV are
    ``mmperf-head-*`` / ``mmperf-base-*``)."""
    return sorted(p.name for p in tmp.glob("mmperf-*"))


def archive(repo: Path, revision: str, target: Path) -> Path:
    """The files of ``revision`` written into ``target`` (``git archive``; no .git there)."""
    done = subprocess.run(["git", "archive", "--format=tar", revision, "--"], cwd=repo,
                          capture_output=True, check=True)
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


def commits_repo(repo: Path, ks: tuple[int, int], runs: int) -> Path:
    """The study's repository: HEAD~1 does ``ks[0]`` products and HEAD ``ks[1]`` (the same
    number: HEAD adds a comment only), with ``runs`` parametrised benchmark tests in
    BASELINE_FILE and one in SINGLE_FILE."""
    k_rev, k_head = ks
    commit_files(repo, {
        ".gitignore": "__pycache__/\n.benchmarks/\n",
        "pytest.ini": "[pytest]\n",
        "mypkg/__init__.py": "",
        "mypkg/work.py": WORK_MODULE.format(k=k_rev, note=""),
        BASELINE_FILE: BASELINE_TESTS.format(runs=runs),
        SINGLE_FILE: SINGLE_TEST,
    }, f"work: {k_rev} products")
    note = NEUTRAL_NOTE if k_head == k_rev else ""
    message = ("work: a comment (no functional change)" if k_head == k_rev
               else f"work: {k_head} products instead of {k_rev}")
    commit_files(repo, {"mypkg/work.py": WORK_MODULE.format(k=k_head, note=note)}, message)
    return repo


# ------------------------------------------------------------------ pytest-benchmark's compare
def benchmark_session(cwd: Path, test_file: str, *args: str
                      ) -> tuple[subprocess.CompletedProcess[str], float]:
    """A pytest-benchmark session as a user without pytest-mmperf would run it; its wall time."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-p", "no:randomly", "-p", "no:mmperf", test_file, "--benchmark-only", *args]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    return proc, time.perf_counter() - start


def single_median(report: dict[str, Any] | None) -> float | None:
    """The median of a pytest-benchmark JSON report holding exactly one benchmark."""
    benches = (report or {}).get("benchmarks") or []
    return float(benches[0]["stats"]["median"]) if len(benches) == 1 else None


def pb_result(save_rc: int, compare_rc: int, compare_output: str, saved: dict[str, Any] | None,
              compared: dict[str, Any] | None, wall_s: float) -> dict[str, Any]:
    """One pytest-benchmark comparison: ``verdict`` fail (it printed "Performance has
    regressed"), pass, or error (a session failed, nothing to compare, or the exit status
    disagrees with the text); ``estimate`` = median at HEAD / median at REV."""
    regressed = REGRESSED in compare_output
    error = None
    if save_rc != 0:
        error = f"the saving session exited {save_rc}"
    elif "Can't compare" in compare_output:
        error = "nothing to compare against"
    elif compare_rc != (1 if regressed else 0):
        error = (f"the comparing session exited {compare_rc} "
                 f"{'after' if regressed else 'without'} {REGRESSED!r}")
    head, rev = single_median(compared), single_median(saved)
    if error is None and (head is None or rev is None):
        error = "a session wrote no single benchmark"
    estimate = head / rev if head is not None and rev else None
    return {"verdict": "error" if error else ("fail" if regressed else "pass"), "error": error,
            "estimate": estimate, "wall_s": wall_s, "exit": compare_rc}


def pb_compare(rev_dir: Path, head_dir: Path, storage: Path, compared_path: Path,
               compare_fail: str, test_file: str = SINGLE_FILE) -> tuple[dict[str, Any], str]:
    """One pytest-benchmark comparison as its docs describe it: save a run at REV
    (``--benchmark-autosave``), then compare HEAD's run with it
    (``--benchmark-compare --benchmark-compare-fail=...``), both in ``storage``. Returns
    :func:`pb_result` and the comparing session's output."""
    save, save_s = benchmark_session(rev_dir, test_file, "--benchmark-autosave",
                                     f"--benchmark-storage=file://{storage}")
    compare, compare_s = benchmark_session(head_dir, test_file, "--benchmark-compare",
                                           f"--benchmark-compare-fail={compare_fail}",
                                           f"--benchmark-storage=file://{storage}",
                                           f"--benchmark-json={compared_path}")
    saved_files = sorted(storage.rglob("*.json"))
    saved = json.loads(saved_files[-1].read_text()) if saved_files else None
    compared = json.loads(compared_path.read_text()) if compared_path.exists() else None
    output = compare.stdout + compare.stderr
    if save.returncode != 0:
        output = save.stdout + save.stderr + "\n" + output
    return pb_result(save.returncode, compare.returncode, output, saved, compared,
                     save_s + compare_s), output


# ------------------------------------------------------------------ the machine
def machine_info() -> dict[str, Any]:
    """What docs/ quote with a measurement: CPU, cores, torch, date."""
    import importlib.metadata

    import torch

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        benchmark_version: str | None = importlib.metadata.version("pytest-benchmark")
    except importlib.metadata.PackageNotFoundError:
        benchmark_version = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": os.cpu_count(), "usable_cores": usable,
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "pytest_benchmark": benchmark_version,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def machine_line(info: dict[str, Any]) -> str:
    started = info.get("started")
    when = f"{started} to {info['date']}" if started else info["date"]
    return (f"Machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
            f"torch {info['torch']} (CPU capability {info['cpu_capability']}), Python "
            f"{info['python']}, pytest-benchmark {info.get('pytest_benchmark') or '-'}; "
            f"measured {when}")


def same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("cpu", "cores", "torch", "cpu_capability"))


def load_note() -> str | None:
    """A warning when other processes keep the machine busy (None when it looks quiet)."""
    load = os.getloadavg()[0]
    if load <= 0.5:
        return None
    return (f"load average {load:.2f}: other processes are running; these are not "
            "quiet-machine numbers")
