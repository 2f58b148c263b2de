"""Measure the timing guards' error rates and costs on this machine (the README's table).

Each scenario is repeated as separate tests of one pytest session; every guard pools worker
processes as in any run. The work is ``k`` float32 matrix products of 256 x 256 (0.1-0.5 ms
each), so "identical" is 4 against 4, "25 % slower" 5 against 4, "10 % slower" 11 against 10,
"2x" 4 against 8.

===================  =======================  ===========  =============================
scenario             guard                    budget       goal
===================  =======================  ===========  =============================
identical            not_slower(tol=0.10)     default      <= 1 of 50 fail
twice                faster(at_least=1.5)     default      <= 1 of 50 fail
slower25             not_slower(tol=0.10)     default      >= 19 of 20 caught
slower10             not_slower(tol=0.05)     --benchmark  >= 19 of 20 caught
identical05          not_slower(tol=0.05)     --benchmark  <= 1 of 50 fail
identical-load       not_slower(tol=0.10)     default      <= 1 of 50 fail (one core busy)
slower25-load        not_slower(tol=0.10)     default      reported (one core busy)
identical-spawn      not_slower(tol=0.10)     default      <= 1 of 50 fail; fresh interpreters
clear4x              faster(at_least=1.5)     default      <= 1 of 50 fail (4x: one process)
slower2x             not_slower(tol=0.10)     default      >= 19 of 20 caught (2x: one process)
clear4x-load         faster(at_least=1.5)     default      0 of 20 fail (one core busy)
slower2x-load        not_slower(tol=0.10)     default      reported (one core busy)
===================  =======================  ===========  =============================

"Under load" runs a second process that burns one of the two cores for the whole session.
"spawn" runs with ``--mmperf-isolation=spawn``, to compare the between-process spread that
forked workers sample with that of fresh interpreters.

Usage::

    python tools/guard_error_rates.py [--scale 1.0] [--only NAME ...] [--json PATH]

``--scale`` multiplies every scenario's run count (0.2 for a quick look). Prints a Markdown
table (wrong verdicts, undecided intervals, verdicts the point estimate decided and how many of
those were wrong, estimates, processes, wall time against measuring time per guard) and exits
0 when every goal holds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Scenario:
    name: str
    call: str  # the guard call, on work(k)
    correct: str  # the right verdict
    runs: int
    max_wrong: float | None  # per ``per`` runs; None: reported only
    per: int
    args: tuple[str, ...] = ()
    load: bool = False

    @property
    def budget(self) -> str:
        return "--benchmark" if "--benchmark" in self.args else "default"


SCENARIOS = (
    Scenario("identical", "not_slower(work(4), work(4), tolerance=0.10)", "pass", 50, 1, 50),
    Scenario("twice", "faster(work(4), work(8), at_least=1.5)", "pass", 50, 1, 50),
    Scenario("slower25", "not_slower(work(5), work(4), tolerance=0.10)", "fail", 20, 1, 20),
    Scenario("slower10", "not_slower(work(11), work(10), tolerance=0.05)", "fail", 20, 1, 20,
             ("--benchmark",)),
    Scenario("identical05", "not_slower(work(4), work(4), tolerance=0.05)", "pass", 50, 1, 50,
             ("--benchmark",)),
    Scenario("identical_load", "not_slower(work(4), work(4), tolerance=0.10)", "pass", 50, 1,
             50, load=True),
    Scenario("slower25_load", "not_slower(work(5), work(4), tolerance=0.10)", "fail", 20, None,
             20, load=True),
    Scenario("identical_spawn", "not_slower(work(4), work(4), tolerance=0.10)", "pass", 20, 1,
             50, ("--mmperf-isolation=spawn",)),
    # Clear-cut ratios: the parent decides alone when its interval, with the between-process sd
    # assumed for one process (ratio.SINGLE_PROCESS_TAU), clears the threshold.
    Scenario("clear4x", "faster(work(4), work(16), at_least=1.5)", "pass", 50, 1, 50),
    Scenario("slower2x", "not_slower(work(8), work(4), tolerance=0.10)", "fail", 20, 1, 20),
    # Under load the parent may not decide alone (ratio.quiet): these pool workers, as above.
    Scenario("clear4x_load", "faster(work(4), work(16), at_least=1.5)", "pass", 20, 1, 50,
             load=True),
    Scenario("slower2x_load", "not_slower(work(8), work(4), tolerance=0.10)", "fail", 10, None,
             20, load=True),
)


def run_scenario(scenario: Scenario, runs: int, root: Path) -> tuple[list[dict[str, Any]], float]:
    """The guard results of ``runs`` repetitions in one pytest session, and its wall time."""
    test = root / f"test_{scenario.name}.py"
    test.write_text(TEST_FILE.format(runs=runs, name=scenario.name, call=scenario.call))
    report = root / f"{scenario.name}.json"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test),
               "-W", "ignore::pytest_mmperf.guards.MmperfInconclusiveWarning",
               f"--mmperf-json={report}", *scenario.args]
    burner = None
    if scenario.load:  # one of the two cores busy for the whole session
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


def summarise(scenario: Scenario, guards: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    verdicts = [g["verdict"] for g in guards]
    wrong = sum(v != scenario.correct for v in verdicts)
    by_estimate = [g for g in guards if g["decided_by"] == "estimate"]
    estimates = [g["estimate"] for g in guards if g["estimate"] is not None]
    extra = [g["extra"] for g in guards]
    walls = [e.get("guard_wall_s", math.nan) for e in extra]
    measuring = [sum(e.get("elapsed_s", [])) for e in extra]
    overhead = [w - el for e in extra
                for w, el in zip(e.get("worker_wall_s", []), e.get("elapsed_s", [])[1:],
                                 strict=False)]
    allowed = (None if scenario.max_wrong is None
               else scenario.max_wrong * len(guards) / scenario.per)
    return {
        "scenario": scenario.name, "guard": scenario.call.split("(")[0] + "(" +
        scenario.call.split(", ", 2)[-1], "budget": scenario.budget, "load": scenario.load,
        "runs": len(guards), "correct": scenario.correct, "wrong": wrong, "allowed": allowed,
        "ok": allowed is None or wrong <= allowed,
        "undecided": sum(e.get("interval_decision") == "inconclusive" for e in extra),
        "by_estimate": len(by_estimate),
        "by_estimate_wrong": sum(g["verdict"] != scenario.correct for g in by_estimate),
        "estimate_median": statistics.median(estimates) if estimates else None,
        "estimate_range": [min(estimates), max(estimates)] if estimates else None,
        "processes_median": statistics.median(g["n_processes"] for g in guards),
        "tau_median": statistics.median(e.get("tau", math.nan) for e in extra),
        # the between-process spread the processes showed, before the floor (fork vs spawn)
        "tau_dl_median": statistics.median(e.get("tau_dl", math.nan) for e in extra),
        "guard_wall_median_s": statistics.median(walls),
        "measuring_median_s": statistics.median(measuring),
        "worker_overhead_median_s": statistics.median(overhead) if overhead else None,
        "session_s": seconds,
        # per guard, for a closer look: verdict, decided by, estimate, processes, others' cores
        "guards": [[g["verdict"], g["decided_by"], g["estimate"], g["n_processes"],
                    g["extra"].get("other_cpu_cores")] for g in guards],
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| scenario | guard | budget | wrong / runs (allowed) | undecided | decided by "
            "estimate (wrong) | estimate median (range) | processes | wall / measuring per "
            "guard | worker start-up |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        rng = r["estimate_range"]
        lines.append(
            f"| {r['scenario']} | `{r['guard']}` | {r['budget']} | {r['wrong']} / {r['runs']} "
            f"({_fmt(r['allowed'], 2) if r['allowed'] is not None else 'reported'}) | "
            f"{r['undecided']} | {r['by_estimate']} ({r['by_estimate_wrong']}) | "
            f"{_fmt(r['estimate_median'])} ({_fmt(rng[0]) if rng else '-'}–"
            f"{_fmt(rng[1]) if rng else '-'}) | {_fmt(r['processes_median'])} | "
            f"{r['guard_wall_median_s']:.2f} s / {r['measuring_median_s']:.2f} s | "
            f"{_fmt(r['worker_overhead_median_s'], 2)} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every scenario's run count (default 1)")
    parser.add_argument("--only", nargs="*", choices=[s.name for s in SCENARIOS],
                        help="run only these scenarios")
    parser.add_argument("--json", type=Path, help="also write the summary rows here")
    args = parser.parse_args(argv)
    if not args.scale > 0:
        parser.error(f"--scale must be > 0, got {args.scale}")
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    rows = []
    total = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmperf-error-rates-") as tmp:
        root = Path(tmp)
        (root / "pytest.ini").write_text("[pytest]\n")
        for scenario in chosen:
            runs = max(2, round(scenario.runs * args.scale))
            guards, seconds = run_scenario(scenario, runs, root)
            rows.append(summarise(scenario, guards, seconds))
            r = rows[-1]
            print(f"{scenario.name}: {r['wrong']}/{r['runs']} wrong, {r['undecided']} undecided, "
                  f"{seconds:.0f} s", file=sys.stderr, flush=True)
    print(markdown(rows))
    print(f"\n{sum(r['runs'] for r in rows)} guards in {time.perf_counter() - total:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
