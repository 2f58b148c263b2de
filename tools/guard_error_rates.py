"""Measure the timing guards' error rates on this machine (the figures quoted in the README).

Three scenarios, each repeated ``--runs`` times as separate tests of one pytest session, at the
default budget and process count (every guard pools fresh worker processes as in any run):

* ``identical``: candidate and baseline do the same work; ``not_slower(tolerance=0.10)`` must pass
  (a failure is a false alarm);
* ``slower25``: the candidate does 25 % more of the same work; ``not_slower(tolerance=0.10)`` must
  fail (a pass is a missed regression);
* ``twice``: the baseline does twice the candidate's work; ``faster(at_least=1.5)`` must pass.

The work is ``k`` float32 matrix products of 256 x 256 (about 0.5 ms each here): ``4`` against
``4``, ``5`` against ``4`` and ``4`` against ``8``.

Usage::

    python tools/guard_error_rates.py [--runs-identical 50] [--runs-slower 20] [--runs-twice 50]
                                      [--json PATH] [-- extra pytest args]

Prints one line per scenario (counts of each verdict, estimates' median and range, processes
used) and exits 0 when all three rates meet the targets of the guards issue (at most 1 false
alarm in 50, at least 19 of 20 slowdowns caught, at most 1 failure in 50 for the 2x pair).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


@pytest.mark.parametrize("run", range({identical}))
def test_identical(mmperf_guard, run):
    mmperf_guard.not_slower(work(4), work(4), tolerance=0.10)


@pytest.mark.parametrize("run", range({slower}))
def test_slower25(mmperf_guard, run):
    mmperf_guard.not_slower(work(5), work(4), tolerance=0.10)


@pytest.mark.parametrize("run", range({twice}))
def test_twice(mmperf_guard, run):
    mmperf_guard.faster(work(4), work(8), at_least=1.5)
'''

# scenario -> (verdict that counts as correct, at most this many wrong per that many runs)
TARGETS = {"identical": ("pass", 1, 50), "slower25": ("fail", 1, 20), "twice": ("pass", 1, 50)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-identical", type=int, default=50)
    parser.add_argument("--runs-slower", type=int, default=20)
    parser.add_argument("--runs-twice", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the guard results here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mmperf-error-rates-") as tmp:
        root = Path(tmp)
        (root / "test_error_rates.py").write_text(TEST_FILE.format(
            identical=args.runs_identical, slower=args.runs_slower, twice=args.runs_twice))
        (root / "pytest.ini").write_text("[pytest]\n")
        report = root / "report.json"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-W", "ignore::pytest_mmperf.guards.MmperfInconclusiveWarning",
                   f"--mmperf-json={report}", *args.pytest_args]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if not report.exists():
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
            print(f"no report written (pytest exit {proc.returncode})", file=sys.stderr)
            return 2
        data = json.loads(report.read_text())
        if args.json:
            args.json.write_text(json.dumps(data, indent=1))
    guards = data.get("guards", [])
    ok = True
    print(f"{len(guards)} guards in {seconds:.0f} s ({' '.join(command[3:])})")
    for scenario, (correct, max_wrong, per) in TARGETS.items():
        rows = [g for g in guards if f"test_{scenario}[" in g["nodeid"]]
        if not rows:
            continue
        verdicts = [g["verdict"] for g in rows]
        wrong = sum(v != correct for v in verdicts)
        estimates = [g["estimate"] for g in rows if g["estimate"] is not None]
        by_estimate = sum(g["decided_by"] == "estimate" for g in rows)
        processes = [g["n_processes"] for g in rows]
        allowed = max_wrong * len(rows) / per
        ok &= wrong <= allowed
        print(f"{scenario:>9}: {len(rows)} runs, wrong verdict {wrong} (allowed {allowed:g}); "
              f"decided by the point estimate {by_estimate}; estimate median "
              f"{statistics.median(estimates):.3f} range {min(estimates):.3f}-"
              f"{max(estimates):.3f}; processes median {statistics.median(processes):g} "
              f"max {max(processes)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
