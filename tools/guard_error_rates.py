"""Measure the timing guards' and ``--mmperf-baseline``'s error rates and costs on this machine.

Guard scenarios repeat one guard (``faster`` / ``not_slower`` on ``k`` float32 256 x 256 matrix
products against ``j`` of them) as separate tests of one pytest session, quiet, with one core
burnt by another process ("load"), or with fresh interpreters ("spawn"). Commit scenarios build
a small git repository whose second commit changes nothing or slows ``work()`` by 10 or 20 %,
and run ``pytest --mmperf-baseline=HEAD~1`` there; the ``pb_*`` rows are pytest-benchmark's
``--benchmark-compare-fail`` on the same two commits (a saved run at HEAD~1, compared at HEAD),
measured as often. Each scenario has a goal (``--list`` prints them with their run counts and
durations); results go to docs/guard-error-rates.md.

Usage::

    python tools/guard_error_rates.py [--scale 1.0] [--only NAME ...] [--json PATH [--resume]]
    python tools/guard_error_rates.py --list [--scale S] [--only NAME ...]

``--scale`` multiplies every scenario's run count (0.2 for a quick look). ``--json`` writes the
machine and the summary rows after every scenario; with ``--resume`` the scenarios already in
that file (same name, run count and machine) are not measured again. Prints a Markdown table
(wrong verdicts, undecided intervals, verdicts the point estimate decided, estimates, processes
or pairs, wall time against measuring time, start-up per worker or per pair of side processes)
and the machine and date; exits 0 when every goal holds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commit_repos import (
    BASELINE_FILE,
    archive,
    checkout_state,
    commits_repo,
    leftovers,
    load_note,
    machine_info,
    machine_line,
    pb_compare,
    same_machine,
)

TEST_FILE = '''
import pytest
import torch

A = torch.randn(256, 256)
B = torch.randn(256, 256)


def work(k):
    def run():
        for _ in range(k):
            torch.mm(A, B)
    return run


@pytest.mark.parametrize("run", range({runs}))
def test_{name}(mmperf_guard, run):
    mmperf_guard.{call}
'''

REV = "HEAD~1"


@dataclass(frozen=True)
class Scenario:
    name: str
    # guard: the guard call on work(k); baseline: the revision; pytest-benchmark: the
    # --benchmark-compare-fail expression
    call: str
    correct: str  # the right verdict
    runs: int
    max_wrong: float | None  # per ``per`` runs; None: reported only
    per: int
    args: tuple[str, ...] = ()
    load: bool = False
    kind: str = "guard"  # guard | baseline | pytest-benchmark
    ks: tuple[int, int] = (0, 0)  # products at REV and at HEAD (commit scenarios)
    max_undecided: float | None = None  # per ``undecided_per`` runs; None: no goal
    undecided_per: int = 10
    run_s: float = 2.0  # rough seconds per run on a quiet machine (--list)

    @property
    def budget(self) -> str:
        if self.kind == "pytest-benchmark":
            return "pytest-benchmark defaults"
        return "--benchmark" if "--benchmark" in self.args else "default"

    @property
    def label(self) -> str:
        """What is measured, for the table's second column."""
        if self.kind == "baseline":
            tolerance = next((a.split("=", 1)[1] for a in self.args
                              if a.startswith("--mmperf-baseline-tolerance=")), "0.10")
            return f"--mmperf-baseline={self.call}, tolerance {tolerance}"
        if self.kind == "pytest-benchmark":
            return f"--benchmark-compare-fail={self.call}"
        return self.call.split("(")[0] + "(" + self.call.split(", ", 2)[-1]

    @property
    def title(self) -> str:
        """The scenario column: the name, and for commit scenarios the products at each side."""
        if self.kind == "guard":
            return self.name
        return f"{self.name} ({self.ks[1]} vs {self.ks[0]})"


_TOL05 = ("--benchmark", "--mmperf-baseline-tolerance=0.05")
SCENARIOS = (
    Scenario("identical", "not_slower(work(4), work(4), tolerance=0.10)", "pass", 50, 1, 50,
             run_s=1.7),
    Scenario("twice", "faster(work(4), work(8), at_least=1.5)", "pass", 50, 1, 50, run_s=1.1),
    Scenario("slower25", "not_slower(work(5), work(4), tolerance=0.10)", "fail", 20, 1, 20,
             run_s=1.6),
    Scenario("slower10", "not_slower(work(11), work(10), tolerance=0.05)", "fail", 20, 1, 20,
             ("--benchmark",), run_s=3.5),
    Scenario("identical05", "not_slower(work(4), work(4), tolerance=0.05)", "pass", 50, 1, 50,
             ("--benchmark",), run_s=3.3),
    # Issue 24 "Busy runner": never fails, decided by the interval in at least 9 of 10 runs.
    Scenario("identical_load", "not_slower(work(4), work(4), tolerance=0.10)", "pass", 50, 0,
             50, load=True, max_undecided=1, undecided_per=10, run_s=6.4),
    # Issue 24: a 25 % slowdown caught at least 19 of 20 times with one core busy.
    Scenario("slower25_load", "not_slower(work(5), work(4), tolerance=0.10)", "fail", 20, 1,
             20, load=True, run_s=6.0),
    Scenario("identical_spawn", "not_slower(work(4), work(4), tolerance=0.10)", "pass", 20, 1,
             50, ("--mmperf-isolation=spawn",), run_s=5.0),
    # Clear-cut ratios: the parent decides alone when its interval, with the between-process sd
    # assumed for one process (ratio.SINGLE_PROCESS_TAU), clears the threshold.
    Scenario("clear4x", "faster(work(4), work(16), at_least=1.5)", "pass", 50, 1, 50,
             run_s=0.6),
    Scenario("slower2x", "not_slower(work(8), work(4), tolerance=0.10)", "fail", 20, 1, 20,
             run_s=0.6),
    # Under load the parent may not decide alone (ratio.quiet): these pool workers, as above.
    Scenario("clear4x_load", "faster(work(4), work(16), at_least=1.5)", "pass", 20, 1, 50,
             load=True, run_s=6.5),
    Scenario("slower2x_load", "not_slower(work(8), work(4), tolerance=0.10)", "fail", 10, None,
             20, load=True, run_s=4.5),
    # Across commits (issue 22): --mmperf-baseline, then pytest-benchmark on the same commits.
    Scenario("commit_identical", REV, "pass", 50, 1, 50, kind="baseline", ks=(5, 5), run_s=7.0),
    Scenario("commit_identical05", REV, "pass", 50, 1, 50, _TOL05, kind="baseline",
             ks=(10, 10), run_s=10.0),
    Scenario("commit_slower10", REV, "fail", 20, 1, 20, _TOL05, kind="baseline", ks=(10, 11),
             run_s=15.0),
    Scenario("commit_slower20", REV, "fail", 20, 1, 20, kind="baseline", ks=(5, 6), run_s=8.0),
    Scenario("pb_identical", "median:10%", "pass", 50, None, 50, kind="pytest-benchmark",
             ks=(5, 5), run_s=8.0),
    Scenario("pb_identical05", "median:5%", "pass", 50, None, 50, kind="pytest-benchmark",
             ks=(10, 10), run_s=8.0),
    Scenario("pb_slower10", "median:5%", "fail", 20, None, 20, kind="pytest-benchmark",
             ks=(10, 11), run_s=8.0),
    Scenario("pb_slower20", "median:10%", "fail", 20, None, 20, kind="pytest-benchmark",
             ks=(5, 6), run_s=8.0),
)
SESSION_S = 5.0  # rough start-up of one pytest session (--list)


def scaled_runs(scenario: Scenario, scale: float) -> int:
    return max(2, round(scenario.runs * scale))


# ------------------------------------------------------------------ guard scenarios
def run_scenario(scenario: Scenario, runs: int, root: Path) -> tuple[list[dict[str, Any]], float]:
    """The guard results of ``runs`` repetitions in one pytest session, and its wall time."""
    test = root / f"test_{scenario.name}.py"
    test.write_text(TEST_FILE.format(runs=runs, name=scenario.name, call=scenario.call))
    report = root / f"{scenario.name}.json"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test),
               "-W", "ignore::pytest_mmperf.guards.MmperfInconclusiveWarning",
               f"--mmperf-json={report}", *scenario.args]
    burner = None
    if scenario.load:  # one core kept busy for the whole session
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    seconds = time.perf_counter() - start
    if not report.exists():
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"{scenario.name}: no report written (pytest exit {proc.returncode})")
    return json.loads(report.read_text())["guards"], seconds


# ------------------------------------------------------------------ commit scenarios
def run_baseline(scenario: Scenario, runs: int, root: Path
                 ) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
    """The baseline rows of ``runs`` comparisons in one pytest session, its wall time and what
    the session left behind (checkout changed, copies of REV left in its temporary folder)."""
    repo = commits_repo(root / scenario.name, scenario.ks, runs)
    report = root / f"{scenario.name}.json"
    tmp = root / f"{scenario.name}-tmp"  # the session's own TMPDIR: leftovers are its own
    tmp.mkdir()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-p", "no:randomly", BASELINE_FILE,
               "-W", "ignore::pytest_mmperf.guards.MmperfInconclusiveWarning",
               f"--mmperf-baseline={scenario.call}", f"--mmperf-json={report}", *scenario.args]
    before = checkout_state(repo)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False,
                          env={**os.environ, "TMPDIR": str(tmp)})
    seconds = time.perf_counter() - start
    if not report.exists():
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"{scenario.name}: no report written (pytest exit {proc.returncode})")
    rows = [g for g in json.loads(report.read_text())["guards"] if g["kind"] == "baseline"]
    checks = {"exit": proc.returncode, "checkout_untouched": checkout_state(repo) == before,
              "leftovers": leftovers(tmp)}
    return rows, seconds, checks


def run_pytest_benchmark(scenario: Scenario, runs: int, root: Path
                         ) -> tuple[list[dict[str, Any]], float]:
    """``runs`` (save at REV, compare at HEAD) pairs of pytest-benchmark sessions."""
    repo = commits_repo(root / scenario.name, scenario.ks, 1)
    rev_dir = archive(repo, REV, root / f"{scenario.name}-rev")
    head_dir = archive(repo, "HEAD", root / f"{scenario.name}-head")
    results = []
    start = time.perf_counter()
    for i in range(runs):
        result, output = pb_compare(rev_dir, head_dir,
                                    root / f"{scenario.name}-storage" / f"run{i:03d}",
                                    root / f"{scenario.name}-compared-{i:03d}.json",
                                    scenario.call)
        if result["error"]:
            print(f"{scenario.name} run {i}: {result['error']}\n{output[-2000:]}",
                  file=sys.stderr)
        results.append(result)
    return results, time.perf_counter() - start


# ------------------------------------------------------------------ summaries
def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(kept) if kept else None


def _allowed(limit: float | None, runs: int, per: int) -> float | None:
    return None if limit is None else limit * runs / per


def summarise(scenario: Scenario, guards: list[dict[str, Any]], seconds: float,
              expected_runs: int | None = None) -> dict[str, Any]:
    """A table row from the JSON rows of timing guards or baseline comparisons.

    ``expected_runs``: how many rows the session should have written (a shortfall fails the
    row's goal)."""
    verdicts = [g["verdict"] for g in guards]
    wrong = sum(v != scenario.correct for v in verdicts)
    by_estimate = [g for g in guards if g["decided_by"] == "estimate"]
    estimates = [g["estimate"] for g in guards if g["estimate"] is not None]
    extra = [g.get("extra") or {} for g in guards]
    walls = [e.get("guard_wall_s") for e in extra]
    measuring = [sum(e.get("elapsed_s", [])) for e in extra]
    if scenario.kind == "baseline":  # side start-up, warm-up and calibration, per pair
        overhead = [(w - m) / g["n_processes"] for g, w, m in zip(guards, walls, measuring,
                                                                  strict=True)
                    if w is not None and g["n_processes"]]
    else:
        overhead = [w - el for e in extra
                    for w, el in zip(e.get("worker_wall_s", []), e.get("elapsed_s", [])[1:],
                                     strict=False)]
    undecided = sum(e.get("interval_decision", "inconclusive") == "inconclusive" for e in extra)
    allowed = _allowed(scenario.max_wrong, len(guards), scenario.per)
    allowed_undecided = _allowed(scenario.max_undecided, len(guards), scenario.undecided_per)
    complete = expected_runs is None or len(guards) == expected_runs
    return {
        "scenario": scenario.name, "title": scenario.title, "kind": scenario.kind,
        "guard": scenario.label, "budget": scenario.budget, "load": scenario.load,
        "runs": len(guards), "expected_runs": expected_runs, "correct": scenario.correct,
        "wrong": wrong, "allowed": allowed,
        "other_verdicts": sorted({v for v in verdicts if v not in ("pass", "fail")}),
        "undecided": undecided, "allowed_undecided": allowed_undecided,
        "ok": complete and (allowed is None or wrong <= allowed)
        and (allowed_undecided is None or undecided <= allowed_undecided),
        "by_estimate": len(by_estimate),
        "by_estimate_wrong": sum(g["verdict"] != scenario.correct for g in by_estimate),
        "estimate_median": _median(estimates),
        "estimate_range": [min(estimates), max(estimates)] if estimates else None,
        "processes_median": _median([g["n_processes"] for g in guards]),
        "threads": sorted({e["threads"] for e in extra if e.get("threads") is not None}),
        "tau_median": _median([e.get("tau") for e in extra]),
        # the between-process spread the processes showed, before the floor (fork vs spawn)
        "tau_dl_median": _median([e.get("tau_dl") for e in extra]),
        "guard_wall_median_s": _median(walls),
        "measuring_median_s": _median(measuring),
        "worker_overhead_median_s": _median(overhead),
        "session_s": seconds,
        # per guard, for a closer look: verdict, decided by, estimate, processes, others' cores,
        # interval
        "guards": [[g["verdict"], g["decided_by"], g["estimate"], g["n_processes"],
                    (g.get("extra") or {}).get("other_cpu_cores"), g.get("ci_low"),
                    g.get("ci_high")] for g in guards],
    }


def summarise_pb(scenario: Scenario, results: list[dict[str, Any]], seconds: float
                 ) -> dict[str, Any]:
    """A table row from pytest-benchmark comparisons (see :func:`pb_result`)."""
    estimates = [r["estimate"] for r in results if r["estimate"] is not None]
    wrong = sum(r["verdict"] != scenario.correct for r in results)
    allowed = _allowed(scenario.max_wrong, len(results), scenario.per)
    return {
        "scenario": scenario.name, "title": scenario.title, "kind": scenario.kind,
        "guard": scenario.label, "budget": scenario.budget, "load": scenario.load,
        "runs": len(results), "expected_runs": len(results), "correct": scenario.correct,
        "wrong": wrong, "allowed": allowed,
        "other_verdicts": sorted({r["verdict"] for r in results} - {"pass", "fail"}),
        "errors": [r["error"] for r in results if r["error"]],
        "undecided": None, "allowed_undecided": None,
        "ok": allowed is None or wrong <= allowed,
        "by_estimate": None, "by_estimate_wrong": None,
        "estimate_median": _median(estimates),
        "estimate_range": [min(estimates), max(estimates)] if estimates else None,
        "processes_median": None, "tau_median": None, "tau_dl_median": None,
        "guard_wall_median_s": _median([r["wall_s"] for r in results]),
        "measuring_median_s": None, "worker_overhead_median_s": None, "session_s": seconds,
        "guards": [[r["verdict"], r["estimate"], r["wall_s"], r["exit"]] for r in results],
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _ratio(value: float | None) -> str:
    """Three significant digits, trailing zeros kept (1.00, not 1)."""
    return "-" if value is None else f"{value:#.3g}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| scenario | guard | budget | wrong / runs (allowed) | undecided | decided by "
            "estimate (wrong) | estimate median (range) | processes | wall / measuring per "
            "guard | worker start-up |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        rng = r["estimate_range"]
        runs = f"{r['runs']}" + (f" of {r['expected_runs']} expected"
                                 if r.get("expected_runs") not in (None, r["runs"]) else "")
        allowed = _fmt(r["allowed"], 2) if r["allowed"] is not None else "reported"
        undecided = "–" if r["undecided"] is None else str(r["undecided"])
        if r.get("allowed_undecided") is not None:
            undecided += f" (allowed {_fmt(r['allowed_undecided'], 2)})"
        estimate_by = ("–" if r["by_estimate"] is None
                       else f"{r['by_estimate']} ({r['by_estimate_wrong']})")
        processes = {"baseline": " pairs", "pytest-benchmark": "2 sessions"}.get(
            r.get("kind", "guard"), "")
        processes = (_fmt(r["processes_median"]) if r["processes_median"] is not None
                     else "") + processes
        others = f" [{', '.join(r['other_verdicts'])}]" if r.get("other_verdicts") else ""
        lines.append(
            f"| {r.get('title', r['scenario'])} | `{r['guard']}` | {r['budget']} | "
            f"{r['wrong']} / {runs} ({allowed}){others} | {undecided} | {estimate_by} | "
            f"{_ratio(r['estimate_median'])} ({_ratio(rng[0]) if rng else '-'}–"
            f"{_ratio(rng[1]) if rng else '-'}) | {processes.strip()} | "
            f"{_seconds(r['guard_wall_median_s'])} / {_seconds(r['measuring_median_s'])} | "
            f"{_seconds(r['worker_overhead_median_s'])} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ list, resume
def listing(chosen: Sequence[Scenario], scale: float) -> str:
    """The scenarios with their run counts and rough durations on a quiet machine."""
    lines = [f"{'scenario':<20} {'kind':<17} {'runs':>5} {'~minutes':>9}  goal"]
    total = 0.0
    for s in chosen:
        runs = scaled_runs(s, scale)
        seconds = SESSION_S + runs * s.run_s
        total += seconds
        goal = ("reported" if s.max_wrong is None
                else f"wrong <= {_fmt(_allowed(s.max_wrong, runs, s.per), 2)}")
        if s.max_undecided is not None:
            goal += f", undecided <= {_fmt(_allowed(s.max_undecided, runs, s.undecided_per), 2)}"
        lines.append(f"{s.name:<20} {s.kind:<17} {runs:>5} {seconds / 60:>9.1f}  {goal}")
    lines.append(f"total: {len(chosen)} scenarios, about {total / 60:.0f} min on a quiet "
                 "machine (rough; a busy one takes longer)")
    return "\n".join(lines)


def load_previous(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The machine and rows of an earlier ``--json`` file (a bare list: rows only)."""
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return None, data
    return data.get("machine"), list(data.get("rows", []))


def complete(row: dict[str, Any], runs: int) -> bool:
    """Whether an earlier row measured ``runs`` runs in full (it can be kept on --resume)."""
    return row["runs"] == runs and row.get("expected_runs") in (None, runs)


def merged(rows: list[dict[str, Any]], previous: dict[str, dict[str, Any]]
           ) -> list[dict[str, Any]]:
    """This run's rows, then the earlier file's rows of scenarios not measured now."""
    names = {r["scenario"] for r in rows}
    return rows + [r for name, r in previous.items() if name not in names]


def save(path: Path, info: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write the file in one step (an interrupted write never leaves half a file)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    partial.replace(path)


def measure(scenario: Scenario, runs: int, root: Path) -> dict[str, Any]:
    """Run one scenario and summarise it."""
    if scenario.kind == "pytest-benchmark":
        results, seconds = run_pytest_benchmark(scenario, runs, root)
        return summarise_pb(scenario, results, seconds)
    if scenario.kind == "baseline":
        rows, seconds, checks = run_baseline(scenario, runs, root)
        row = summarise(scenario, rows, seconds, expected_runs=runs)
        row.update(checks)
        if not checks["checkout_untouched"] or checks["leftovers"]:
            row["ok"] = False
            print(f"{scenario.name}: the session left the checkout changed or copies behind: "
                  f"{checks}", file=sys.stderr)
        return row
    guards, seconds = run_scenario(scenario, runs, root)
    return summarise(scenario, guards, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every scenario's run count (default 1)")
    parser.add_argument("--only", nargs="*", choices=[s.name for s in SCENARIOS],
                        help="run only these scenarios")
    parser.add_argument("--json", type=Path, help="also write the machine and the summary rows "
                        "here (after every scenario)")
    parser.add_argument("--resume", action="store_true", help="keep the scenarios already in "
                        "--json (same run count, same machine) and measure only the others")
    parser.add_argument("--list", action="store_true", help="print the scenarios, their run "
                        "counts and rough durations, and exit")
    args = parser.parse_args(argv)
    if not args.scale > 0:
        parser.error(f"--scale must be > 0, got {args.scale}")
    if args.resume and not args.json:
        parser.error("--resume needs --json PATH (the file of the interrupted study)")
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    if args.list:
        print(listing(chosen, args.scale))
        return 0
    info = machine_info()
    previous: dict[str, dict[str, Any]] = {}
    if args.resume and args.json.exists():
        earlier, old_rows = load_previous(args.json)
        if earlier is None or not same_machine(earlier, info):
            parser.error(f"{args.json} has no machine record or was measured on another "
                         f"machine or torch ({earlier}); move it away to start afresh")
        info["started"] = earlier.get("started", earlier["date"])
        previous = {r["scenario"]: r for r in old_rows}
    note = load_note()
    if note:
        print(f"at the start, {note}", file=sys.stderr)
    rows = []
    total = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmperf-error-rates-") as tmp:
        root = Path(tmp)
        (root / "pytest.ini").write_text("[pytest]\n")
        for scenario in chosen:
            runs = scaled_runs(scenario, args.scale)
            earlier_row = previous.get(scenario.name)
            if earlier_row is not None and complete(earlier_row, runs):
                print(f"{scenario.name}: kept from {args.json}", file=sys.stderr, flush=True)
                rows.append(earlier_row)
                continue
            load_before = os.getloadavg()[0]
            row = measure(scenario, runs, root)
            row["load_before"] = load_before
            rows.append(row)
            undecided = "-" if row["undecided"] is None else row["undecided"]
            print(f"{scenario.name}: {row['wrong']}/{row['runs']} wrong, {undecided} "
                  f"undecided, {row['session_s']:.0f} s", file=sys.stderr, flush=True)
            if args.json:
                save(args.json, info, merged(rows, previous))
    print(markdown(rows))
    print(f"\n{sum(r['runs'] for r in rows)} guards and comparisons in "
          f"{time.perf_counter() - total:.0f} s")
    print(machine_line(info))
    if args.json:
        save(args.json, info, merged(rows, previous))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
