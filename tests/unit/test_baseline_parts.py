"""Across commits, piece by piece: revisions, the import redirection, the lockstep protocol and
the decision on pairs (with synthetic samples, so exact and fast)."""

from __future__ import annotations

import importlib
import math
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from pytest_mmperf.baseline import compare as compare_module
from pytest_mmperf.baseline import revision as rev
from pytest_mmperf.baseline.compare import CompareSettings, compare
from pytest_mmperf.baseline.imports import RevisionImports
from pytest_mmperf.baseline.lockstep import (
    Rendezvous,
    SideError,
    Sides,
    measure_rounds,
    set_threads,
    wait_ready,
)
from pytest_mmperf.baseline.side import Benchmarked, SideConnection, SideSpec, serve
from pytest_mmperf.constants import OTHER_STAGE
from pytest_mmperf.timing import stats
from pytest_mmperf.timing.measure import BlockTimer, PairSamples


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with two commits: ``pkg/core.py`` says ``"old"``, then ``"new"``."""
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / ".gitignore").write_text(".venv/\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "core.py").write_text("WHO = 'old'\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "old")
    (root / "pkg" / "core.py").write_text("WHO = 'new'\n")
    git(root, "commit", "-q", "-am", "new")
    return root


# ------------------------------------------------------------------------------ revisions
def test_revision_names_that_git_could_read_as_options_are_refused() -> None:
    for bad, reason in (("", "empty"), ("  ", "empty"), ("-x", "starts with '-'"),
                        ("--upload-pack=evil", "starts with '-'"), ("a\nb", "control")):
        with pytest.raises(rev.RevisionError, match=reason):
            rev.check_name(bad)
    assert rev.check_name(" origin/main ") == "origin/main"


def test_resolve_materialise_and_remove(repo: Path, tmp_path: Path) -> None:
    revision = rev.resolve("HEAD~1", repo / "pkg")
    assert revision.repo_root == repo.resolve() and not revision.dirty
    assert revision.commit == git(repo, "rev-parse", "HEAD~1") != revision.head
    assert not revision.same_as_working_tree and "against HEAD~1 (" in revision.describe()
    copy = rev.materialise(revision)
    try:
        assert (copy / "pkg" / "core.py").read_text() == "WHO = 'old'\n"
        assert not (copy / ".git").exists() and not copy.is_relative_to(repo)
    finally:
        rev.remove(copy)
    assert not copy.exists()
    assert git(repo, "status", "--porcelain") == ""
    (repo / "pkg" / "core.py").write_text("WHO = 'dirty'\n")
    dirty = rev.resolve("HEAD", repo)
    assert dirty.dirty and not dirty.same_as_working_tree
    assert "with uncommitted changes" in dirty.describe()
    git(repo, "checkout", "-q", "--", "pkg/core.py")
    assert rev.resolve("HEAD", repo).same_as_working_tree


def test_unknown_revision_and_no_repository(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(rev.RevisionError, match="'nope' is not a commit.*git fetch"):
        rev.resolve("nope", repo)
    outside = tmp_path / "plain"
    outside.mkdir()
    with pytest.raises(rev.RevisionError, match="not inside a git repository"):
        rev.resolve("HEAD", outside)


def test_repository_files_leave_ignored_folders_out(repo: Path) -> None:
    (repo / ".venv" / "lib").mkdir(parents=True)
    (repo / ".venv" / "lib" / "dep.py").write_text("")
    (repo / "pkg" / "untracked.py").write_text("")
    files = rev.repository_files(repo)
    assert {"pkg/core.py", "pkg/__init__.py", "pkg/untracked.py"} <= files
    assert not any(f.startswith(".venv/") for f in files)


# ------------------------------------------------------------------------------ the finder
def _import_fresh(monkeypatch: pytest.MonkeyPatch, name: str) -> Any:
    for module in [m for m in sys.modules if m == name.split(".")[0] or
                   m.startswith(name.split(".")[0] + ".")]:
        monkeypatch.delitem(sys.modules, module)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def test_rev_side_imports_rev_files_and_reports_what_rev_lacks(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "pkg" / "added.py").write_text("X = 1\n")  # in the working tree only
    (repo / "test_thing.py").write_text("")
    copy = rev.materialise(rev.resolve("HEAD~1", repo))
    monkeypatch.syspath_prepend(str(repo))
    finder = RevisionImports(repo, copy, rev.repository_files(repo),
                             test_file=repo / "test_thing.py")
    try:
        finder.install()
        core = _import_fresh(monkeypatch, "pkg.core")
        assert core.WHO == "old" and Path(core.__file__).is_relative_to(copy.resolve())
        with pytest.raises(ModuleNotFoundError, match="at the baseline revision"):
            importlib.import_module("pkg.added")
        assert finder.missing == ["pkg.added"]
        assert finder.leaks() == []
        # the test file stays the working tree's (and would be a leak if it were not test side)
        assert finder.is_test_side(repo / "test_thing.py")
        assert finder.is_test_side(repo / "conftest.py")
        assert not finder.is_test_side(repo / "pkg" / "core.py")
    finally:
        finder.uninstall()
        rev.remove(copy)


def test_a_src_layout_behind_an_editable_finder_is_redirected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An editable install maps the package to the working tree with a finder appended to
    sys.meta_path; REV's side must still import REV's files, submodules included."""
    root = tmp_path / "repo"
    (root / "src" / "lib" / "sub").mkdir(parents=True)
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    for path, text in {"src/lib/__init__.py": "", "src/lib/sub/__init__.py": "",
                       "src/lib/sub/deep.py": "WHO = 'old'\n"}.items():
        (root / path).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "old")
    (root / "src" / "lib" / "sub" / "deep.py").write_text("WHO = 'new'\n")

    class Editable:  # what setuptools' editable finder does, in a few lines
        @staticmethod
        def find_spec(name: str, path: Any = None, target: Any = None) -> Any:
            if name == "lib":
                return importlib.machinery.PathFinder.find_spec(name, [str(root / "src")])
            return None

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Editable])
    assert _import_fresh(monkeypatch, "lib.sub.deep").WHO == "new"  # without the finder
    copy = rev.materialise(rev.resolve("HEAD", root))
    finder = RevisionImports(root, copy, rev.repository_files(root))
    try:
        finder.install()
        assert _import_fresh(monkeypatch, "lib.sub.deep").WHO == "old"
        assert set(finder.redirected) == {"lib"}  # submodules follow the package's __path__
    finally:
        finder.uninstall()
        rev.remove(copy)


def test_leaks_name_working_tree_modules_loaded_before_the_finder(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(repo))
    _import_fresh(monkeypatch, "pkg.core")  # loaded from the working tree, as a plugin would be
    copy = rev.materialise(rev.resolve("HEAD~1", repo))
    finder = RevisionImports(repo, copy, rev.repository_files(repo))
    try:
        leaks = finder.leaks()
    finally:
        rev.remove(copy)
    assert [name for name, _ in leaks] == ["pkg", "pkg.core"]


# ------------------------------------------------------------------------------ lockstep
def test_lockstep_over_real_sockets_with_two_served_sides() -> None:
    """Two sides served from threads of this process: the head side's callable takes twice the
    time (by a fake clock), so every round's ratio is exactly 2."""
    rendezvous = Rendezvous()
    errors: list[BaseException] = []

    def side(name: str, cost: float) -> None:
        try:
            spec = SideSpec(side=name, address=rendezvous.address, token=rendezvous.token,
                            nodeid="t.py::x", target="benchmark", repo_root="/", warmup_s=0.0)
            connection = SideConnection(spec)
            clock = [0.0]

            def work() -> None:
                clock[0] += cost

            serve(connection, Benchmarked(work), timer=BlockTimer("cpu", lambda: clock[0]))
            connection.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=side, args=("head", 0.002)),
               threading.Thread(target=side, args=("rev", 0.001))]
    for t in threads:
        t.start()
    try:
        channels = rendezvous.accept(("head", "rev"), 30.0)
        sides = Sides(channels["head"], channels["rev"])
        wait_ready(sides, 30.0)
        threads_used, _ = set_threads(sides, None)
        samples = measure_rounds(sides, budget_s=0.0, device="cpu", min_blocks=5, seed=1)
        sides.close()
    finally:
        rendezvous.close()
        for t in threads:
            t.join(10)
    assert not errors, errors
    assert samples.n_blocks == 5 and len(set(samples.order)) == 2
    # both sides time blocks of the same number of calls (sized for the slower side)
    assert samples.candidate_number == samples.baseline_number >= 1
    assert all(math.isclose(r, math.log(2.0)) for r in samples.log_ratios())
    assert threads_used == samples.threads >= 1


def test_a_side_that_never_connects_or_says_no(tmp_path: Path) -> None:
    rendezvous = Rendezvous()
    try:
        with pytest.raises(SideError, match="did not connect within"):
            rendezvous.accept(("head",), 0.3)
        with pytest.raises(SideError, match="ended before"):
            rendezvous.accept(("head",), 30.0, lambda: SideError("head", "lost", "ended before"))
    finally:
        rendezvous.close()


# ------------------------------------------------------------------------------ the decision
class FakePairs:
    """``start_pair`` for :func:`compare` with synthetic pairs: pair k's ratio is
    ``ratios[k]`` with small noise; sides that fail are given as ``fail={k: SideError}``."""

    def __init__(self, ratios: list[float], fail: dict[int, SideError] | None = None,
                 stages: dict[str, dict[str, float]] | None = None) -> None:
        self.ratios, self.fail, self.stages = ratios, fail or {}, stages
        self.started: list[int] = []
        self.closed = 0

    def start(self, k: int) -> Any:
        self.started.append(k)
        if k in self.fail:
            raise self.fail[k]
        pairs = self

        class FakeSides:
            k_ = k

            def close(self) -> None:
                pairs.closed += 1

        return FakeSides()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def rounds(sides: Any, **kw: Any) -> PairSamples:
            rng = random.Random(sides.k_)
            base = [0.001] * 12
            head = [0.001 * self.ratios[sides.k_] * math.exp(rng.gauss(0, 0.01)) for _ in base]
            return PairSamples(head, base, 10, 10, "cb" * 6, "cpu", 1, False, 1.0,
                               other_cpu_cores=0.0, cores=2, threads_requested="auto")

        monkeypatch.setattr(compare_module, "set_threads", lambda sides, threads: (1, 0.0))
        monkeypatch.setattr(compare_module, "measure_rounds", rounds)
        monkeypatch.setattr(compare_module, "ask_stages", lambda sides: self.stages)


REVISION = rev.Revision(name="main", commit="a" * 40, repo_root=Path("/r"), head="b" * 40,
                        dirty=False)


def _compare(fake: FakePairs, **settings: Any) -> Any:
    return compare(fake.start, revision=REVISION, settings=CompareSettings(**settings),
                   nodeid="t.py::test_x", name=None, device="cpu")


def test_identical_code_passes_after_the_pairs_it_needs(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    pairs = FakePairs([1.0] * 5)
    pairs.install(monkeypatch)
    result = _compare(pairs, pairs=5)
    assert result.verdict == "pass" and result.extra["change"] == "same"
    assert result.kind == "baseline" and 2 <= result.n_processes <= 5
    assert result.ci_low < 1.0 < result.ci_high <= 1.1 and pairs.closed == len(pairs.started)
    assert result.extra["commit"] == "a" * 40 and result.extra["revision"] == "main"
    assert "as fast as main (aaaaaaaaaaaa)" in result.message


def test_a_clear_slowdown_needs_two_agreeing_pairs_and_names_the_stage_that_grew(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stages = {"head": {"resize": 0.004, "normalise": 0.001, OTHER_STAGE: 0.0002},
              "rev": {"resize": 0.001, "normalise": 0.001, OTHER_STAGE: 0.0002}}
    pairs = FakePairs([3.0, 3.0, 3.0], stages=stages)
    pairs.install(monkeypatch)
    result = _compare(pairs, pairs=3)
    assert result.verdict == "fail" and result.n_processes == 2  # never one pair alone
    assert result.extra["change"] == "slower" and result.ci_low > 2.0
    assert "stage that grew most: resize +3.00 ms per call (1.00 ms at REV -> 4.00 ms)" \
        in result.message
    faster = FakePairs([0.5, 0.5])
    faster.install(monkeypatch)
    quick = _compare(faster, pairs=3)
    assert quick.verdict == "pass" and quick.extra["change"] == "faster"
    assert "faster than main" in quick.message


def test_pairs_in_lockstep_assume_a_smaller_spread_than_timing_guard_processes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Five agreeing pairs 8 % slower against a 5 % tolerance: decided by the interval with the
    lockstep floor; with the timing guards' floor (0.03) the same pairs stay undecided."""
    pairs = FakePairs([1.08] * 5)
    pairs.install(monkeypatch)
    result = _compare(pairs, pairs=5, tolerance=0.05)
    assert result.verdict == "fail" and result.decided_by == "interval", result.message
    assert compare_module.LOCKSTEP_TAU_FLOOR < stats.DEFAULT_TAU_FLOOR
    wide = _compare(pairs, pairs=5, tolerance=0.05, tau_floor=stats.DEFAULT_TAU_FLOOR)
    assert wide.decided_by == "estimate" and wide.ci_low < 1.05 < wide.ci_high


def test_an_undecided_comparison_uses_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = FakePairs([1.05, 1.2, 0.95])
    pairs.install(monkeypatch)
    result = _compare(pairs, pairs=3)
    assert result.decided_by == "estimate" and result.extra["change"] == "undecided"
    assert "INCONCLUSIVE" in result.message and pairs.started == [0, 1, 2]


@pytest.mark.parametrize(("side", "kind", "verdict"), [
    ("rev", "missing", "new"), ("rev", "error", "rev-error"), ("rev", "imports", "error"),
    ("head", "error", "error"), ("rev", "lost", "error")])
def test_side_failures_become_verdicts(monkeypatch: pytest.MonkeyPatch, side: str, kind: str,
                                       verdict: str) -> None:
    pairs = FakePairs([1.0, 1.0], fail={1: SideError(side, kind, "what happened")})
    pairs.install(monkeypatch)
    result = _compare(pairs, pairs=3)
    assert result.verdict == verdict and "what happened" in result.message
    assert result.extra["side"] == side and result.extra["pairs_measured"] == 1


def test_compare_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="CompareSettings tolerance must be a number >= 0"):
        CompareSettings(tolerance=-0.1)
    with pytest.raises(ValueError, match="CompareSettings pairs must be an integer >= 1"):
        CompareSettings(pairs=0)


_LAYOUT_PROBE = """
import ctypes, importlib, os
from pytest_mmperf.timing.forkserver import PRELOAD
for name in PRELOAD:  # the fork server's state when it forks a side
    importlib.import_module(name)
from pytest_mmperf.glue.baseline import shift_memory_layout
SIZES = (5000, 200_000, 1 << 20, 4 << 20)  # small heap chunks up to mmapped blocks

def children(mode, count=4):
    # Pipes first and forks back to back: the parent's heap is the same at every fork.
    pipes = [os.pipe() for _ in range(count)]
    pids = [0] * count
    for i in range(count):
        pids[i] = os.fork()
        if pids[i] == 0:
            if mode == "shift":
                shift_memory_layout()
            elif mode == "seeded":  # the two sides of one pair
                shift_memory_layout("one pair's token")
            buffers = [bytearray(size) for size in SIZES]
            addresses = [ctypes.addressof((ctypes.c_char * len(b)).from_buffer(b))
                         for b in buffers]
            os.write(pipes[i][1], ",".join(map(str, addresses)).encode())
            os._exit(0)
    rows = []
    for (read, write), pid in zip(pipes, pids):
        os.close(write)
        with os.fdopen(read) as handle:
            rows.append(handle.read().split(","))
        os.waitpid(pid, 0)
    return [len(set(column)) for column in zip(*rows)]

for mode in ("same", "shift", "seeded"):
    print(mode, *children(mode))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="side processes are forked on POSIX only")
def test_side_processes_forked_from_one_server_get_their_own_memory_layout() -> None:
    """Children forked from a server-like process (pytest and torch imported) share its
    address-space layout, so an allocation of each size lands at one address in all four (the
    control); after shift_memory_layout() every size lands at more than one address, as in
    fresh interpreters; with one seed (the two sides of a pair) at one address again."""
    result = subprocess.run([sys.executable, "-c", _LAYOUT_PROBE], check=True,
                            capture_output=True, text=True, timeout=120)
    distinct = {mode: [int(n) for n in counts]
                for mode, *counts in (line.split() for line in result.stdout.splitlines())}
    assert max(distinct["same"]) == 1, distinct
    assert min(distinct["shift"]) > 1, distinct
    assert max(distinct["seeded"]) == 1, distinct


_FAULT_PROBE = """
import ctypes, resource, sys
from pytest_mmperf.glue.baseline import M_MMAP_THRESHOLD, steady_allocator
ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024)  # every large block mapped afresh
if sys.argv[1] == "steady":
    assert steady_allocator()
bytearray(20 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    bytearray(20 << 20)  # allocated, written and freed, as a fresh tensor every call
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_side_reuses_large_blocks_instead_of_faulting_them_in_every_call() -> None:
    """A 20 MiB block allocated and freed every call: mapped and faulted in again every time
    in the control (5,120 faults of 4 KiB pages), reused from the heap after steady_allocator()."""

    def faults_per_call(mode: str) -> float:
        result = subprocess.run([sys.executable, "-c", _FAULT_PROBE, mode], check=True,
                                capture_output=True, text=True, timeout=60)
        return float(result.stdout)

    assert faults_per_call("control") > 1000
    assert faults_per_call("steady") < 100
