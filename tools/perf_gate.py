#!/usr/bin/env python3
"""Performance gate over the asv suite in ``benchmarks/`` (the gate runs ``asv`` as a child).

Gate (CI, ``make perf-gate BASE=<rev>``)::

    python tools/perf_gate.py [BASE] [--head REV] [--factor 1.25] [-b REGEX]

runs ``asv continuous --factor F -e --interleave-rounds BASE HEAD`` (BASE and HEAD alternate
round by round, so load from other jobs falls on both), prints ``asv compare --split``'s table
and ends with one line naming every benchmark that got slower or errored. A benchmark fails the
gate only when asv flags it in the full pass *and again* in an immediate re-run of just the
flagged benchmarks (``--no-confirm`` skips it): on a shared runner a single flag is often another
job's load, while the regressions the suite exists for are far beyond the one factor of 1.25
(docs/perf-gate.md). BASE defaults to the merge base with ``main`` (:func:`resolve_base`).

Exit status: 0 nothing got worse; 1 a benchmark is worse (confirmed) or started failing (asv's
``!``); 2 a benchmark errored at HEAD or asv itself failed; 3 bad usage.

Quick check (``make test``): ``python tools/perf_gate.py --check`` runs asv's checks and one
quick pass of the whole suite in this process through asv's runner (:func:`check`; it imports
``asv_runner`` and the suite, so torch).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

DEFAULT_FACTOR = 1.25
EXIT_OK, EXIT_REGRESSION, EXIT_ERROR, EXIT_USAGE = 0, 1, 2, 3
QUICK_ENV = "MMPERF_BENCH_QUICK"
ROOT = Path(__file__).resolve().parent.parent


class GateError(Exception):
    """A problem outside the benchmarks (git, asv missing, bad revision): exit 2 or 3."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Row:
    """One line of an asv comparison table."""

    mark: str  # "+" worse, "-" better, "!" newly failing, "*" fixed, "x" not comparable, " "
    before: str  # e.g. "1.23±0.01ms", "failed", "n/a"
    after: str
    ratio: str  # e.g. "1.90", "~1.10" (beyond the factor but not significant), "n/a"
    name: str  # benchmark and its parameters, e.g. "bench_x.Y.time_z('sdpa', 'cpu')"


# ------------------------------------------------------------------------------------ helpers


def asv_command() -> list[str]:
    """``python -m asv`` with the interpreter running this script (the project venv), else the
    ``asv`` on PATH."""
    try:
        import asv  # noqa: F401
    except ImportError:
        found = shutil.which("asv")
        if found is None:
            raise GateError(
                f"asv is not installed for {sys.executable} and not on PATH; install the dev "
                "extras: pip install -e '.[dev]'"
            ) from None
        return [found]
    return [sys.executable, "-m", "asv"]


def git(*args: str, cwd: Path = ROOT) -> str:
    """Run git and return stdout stripped; raise GateError naming the command on failure."""
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GateError(f"`git {' '.join(args)}` failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def rev_parse(rev: str, what: str, cwd: Path = ROOT) -> str:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=cwd)
    except GateError:
        raise GateError(
            f"{what} {rev!r} is not a commit in {cwd}; pass a branch, tag or hash "
            "(in a shallow CI checkout fetch history first: git fetch --unshallow)",
            EXIT_USAGE,
        ) from None


def resolve_base(base: str | None, head: str, cwd: Path = ROOT) -> str:
    """BASE as a full hash: the given revision, else ``git merge-base HEAD main``
    (``origin/main`` when there is no local ``main``), else HEAD~1 (when that merge base is
    HEAD itself: running on main)."""
    if base:
        return rev_parse(base, "BASE", cwd)
    for main in ("main", "origin/main"):
        try:
            rev_parse(main, "main", cwd)
        except GateError:
            continue
        merge_base = git("merge-base", head, main, cwd=cwd)
        if merge_base != head:
            return merge_base
        break
    return rev_parse(f"{head}~1", "HEAD~1 (default BASE)", cwd)


def ensure_machine(asv: list[str], config: Path) -> None:
    """asv refuses to run without ~/.asv-machine.json: create it non-interactively (CI)."""
    machine_file = Path(os.environ.get("ASV_MACHINE_FILE", Path.home() / ".asv-machine.json"))
    if machine_file.exists():
        return
    proc = subprocess.run([*asv, "--config", str(config), "machine", "--yes"],
                          cwd=config.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GateError(f"`asv machine --yes` failed:\n{proc.stdout}{proc.stderr}")


def run_streaming(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None
                  ) -> tuple[int, str]:
    """Run ``cmd``, echoing its merged stdout/stderr live, and return (exit status, output)."""
    print(f"$ {' '.join(cmd)}", flush=True)
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    sys.stdout.flush()
    return proc.wait(), "".join(lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_tables(text: str) -> list[Row]:
    """Rows of every asv comparison table in ``text`` (``asv compare`` / ``asv continuous``).

    asv 0.6 prints GitHub-style pipe tables (``| + | 1.2ms | 2.4ms | 2.00 | name(...) |``);
    older versions a plain table whose columns are located from the ``----`` rule under the
    header (the benchmark column holds spaces, e.g. ``('sdpa', 'cpu')``). Both are read.
    """
    rows: list[Row] = []
    lines = [_ANSI.sub("", line.rstrip("\n")) for line in text.splitlines()]
    i = 0
    while i < len(lines) - 1:
        header, rule = lines[i], lines[i + 1]
        if "Benchmark (Parameter)" not in header:
            i += 1
            continue
        i += 2
        if header.lstrip().startswith("|"):
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if len(cells) >= 5:
                    # A parameter value could hold "|": the name is everything after column 4.
                    name = "|".join(cells[4:]).strip()
                    rows.append(Row(cells[0][:1] or " ", cells[1], cells[2], cells[3], name))
                i += 1
            continue
        spans = [m.start() for m in re.finditer(r"-+", rule)]
        if len(spans) != 5 or not re.fullmatch(r"[- ]+", rule.strip() or "x"):
            continue
        while i < len(lines) and lines[i].strip():
            line = lines[i]
            ends = spans[1:] + [len(line) + 1]
            cells = [line[a:b].strip() for a, b in zip(spans, ends, strict=True)]
            cells[4] = line[spans[4]:].strip()
            rows.append(Row(cells[0][:1] or " ", cells[1], cells[2], cells[3], cells[4]))
            i += 1
    return rows


def summarise(rows: Sequence[Row]) -> tuple[list[str], list[str], list[str]]:
    """(worse, newly failing, failing at HEAD) benchmark names, each sorted and unique."""
    worse = sorted({r.name for r in rows if r.mark == "+"})
    broken = sorted({r.name for r in rows if r.mark == "!"})
    failing = sorted({r.name for r in rows if r.after == "failed"})
    return worse, broken, failing


# ---------------------------------------------------------------------------------- commands


def _continuous(asv: list[str], config: Path, factor: float, split: bool, selection: list[str],
                base_hash: str, head_hash: str) -> tuple[int, list[Row]]:
    """One ``asv continuous`` pass, then the full ``asv compare`` table; (asv status, rows)."""
    common = [*asv, "--config", str(config)]
    splitting = ["--split"] if split else []
    rc, out = run_streaming(
        [*common, "continuous", "--factor", str(factor), "-e", "--interleave-rounds",
         *splitting, *selection, base_hash, head_hash], config.parent)
    # The full table: asv continuous shows only changed rows, and no table at all on errors.
    print("\n==> full comparison (asv compare)", flush=True)
    _, table = run_streaming([*common, "compare", "--factor", str(factor), *splitting,
                              base_hash, head_hash], config.parent)
    return rc, parse_tables(table) or parse_tables(out)


def selection_regex(names: Sequence[str]) -> str:
    """asv ``-b`` regex selecting exactly the benchmarks in ``names``, as the comparison table
    names them: asv matches a parametrised benchmark as ``name('a', 'b')``, so only the flagged
    parameter combinations run again."""
    return "^(" + "|".join(re.escape(name) for name in sorted(set(names))) + ")$"


def gate(base: str | None, head: str, factor: float, bench: str | None, config: Path,
         split: bool = True, confirm: bool = True) -> int:
    """Run asv continuous BASE..HEAD and return the gate's exit status (module docstring).

    A flag (asv's ``+``: worse than BASE by more than ``factor`` and, where samples exist,
    significant) counts only if the re-run repeats it; flags it does not repeat are listed as
    noise. When a benchmark errors, asv exits 2 and prints no table: the table then comes from
    ``asv compare``.
    """
    if not factor > 1.0:
        raise GateError(f"--factor must be > 1.0 (1.25 = 25 % slower), got {factor}", EXIT_USAGE)
    cwd = config.parent
    head_hash = rev_parse(head, "HEAD", cwd)
    base_hash = resolve_base(base, head_hash, cwd)
    if base_hash == head_hash:
        raise GateError(f"BASE and HEAD are the same commit {head_hash[:8]}; nothing to compare",
                        EXIT_USAGE)
    asv = asv_command()
    ensure_machine(asv, config)
    started = time.monotonic()
    rc, rows = _continuous(asv, config, factor, split, ["-b", bench] if bench else [],
                           base_hash, head_hash)
    worse, broken, failing = summarise(rows)
    unconfirmed: list[str] = []
    if worse and confirm and rc in (0, 1):
        # A timing benchmark flagged once may be another job's load: re-run just the flagged
        # benchmarks (fresh processes, interleaved again) and keep what is flagged both times.
        print(f"\n==> confirming {len(worse)} flagged benchmark(s) with a re-run", flush=True)
        rc2, rows2 = _continuous(asv, config, factor, split, ["-b", selection_regex(worse)],
                                 base_hash, head_hash)
        worse2, broken2, failing2 = summarise(rows2)
        unconfirmed = [name for name in worse if name not in worse2]
        worse = [name for name in worse if name in worse2]
        broken = sorted(set(broken) | set(broken2))
        failing = sorted(set(failing) | set(failing2))
        rc = rc2 if rc2 == 2 else (1 if worse or broken else 0)
    took = time.monotonic() - started
    span = f"{base_hash[:8]}..{head_hash[:8]}"
    problems = []
    if worse:
        again = " (confirmed by a re-run)" if confirm else ""
        problems.append(f"{len(worse)} slower than {factor}x BASE{again}: {', '.join(worse)}")
    if broken:
        problems.append(f"{len(broken)} newly failing: {', '.join(broken)}")
    failing_only = [name for name in failing if name not in broken]
    if failing_only:
        problems.append(f"{len(failing_only)} failing at HEAD: {', '.join(failing_only)}")
    if rc == 2 or failing:
        code = EXIT_ERROR
    elif worse or broken:
        code = EXIT_REGRESSION
    elif rc == 1 and not unconfirmed:
        # asv also exits 1 on its own errors (unknown commit, environment build failure).
        code = EXIT_ERROR
        problems.append(f"asv continuous exited {rc} without a regression table (see above)")
    elif rc not in (0, 1):
        code = EXIT_ERROR
        problems.append(f"asv continuous exited {rc} (see the output above)")
    else:
        code = EXIT_OK
    if code == EXIT_ERROR and not problems:
        problems.append(f"asv continuous exited {rc} (see the output above)")
    verdict = "PASS" if code == EXIT_OK else "FAIL"
    detail = "; ".join(problems) if problems else (
        f"no benchmark slower than {factor}x BASE ({len(rows)} compared)")
    if unconfirmed:
        detail += (f"; not confirmed by the re-run (noise, not failing): "
                   f"{', '.join(unconfirmed)}")
    print(f"\nperf-gate {verdict} {span} (factor {factor}, {took:.0f} s): {detail}", flush=True)
    return code


# asv run --quick's settings for every benchmark: one call, no warm-up, one round.
QUICK_PARAMS = {"number": 1, "repeat": 1, "warmup_time": 0, "rounds": 1}


@dataclass
class QuickPass:
    """What :func:`quick_pass` ran: benchmark ids that ran, were skipped (``NotImplementedError``
    in ``setup``: a combination this host cannot run) and failed (id and traceback)."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def benchmark_ids(benchmark: Any) -> list[str]:
    """asv's ids of one benchmark: ``name-i`` for each parameter combination, else ``name``."""
    if not benchmark.params:
        return [benchmark.name]
    count = len(list(itertools.product(*benchmark.params)))
    return [f"{benchmark.name}-{index}" for index in range(count)]


def _run_once(root: str, bench_id: str, timeout: float) -> bool:
    """setup, one run and teardown of one benchmark id with asv's quick settings, as asv's
    benchmark process does (asv_runner.run); False when ``setup`` skipped it. A run longer
    than the benchmark's asv ``timeout`` raises ``TimeoutError``."""
    from asv_runner.benchmarks.mark import SkipNotImplemented
    from asv_runner.discovery import get_benchmark_from_name

    benchmark = get_benchmark_from_name(root, bench_id, extra_params=QUICK_PARAMS)
    if benchmark.setup_cache_key is not None:  # asv runs setup_cache once, before the benchmark
        benchmark.set_cache(benchmark.do_setup_cache())

    def overran(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{bench_id} ran past its asv timeout of {timeout:g} s")

    previous = signal.signal(signal.SIGALRM, overran)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # asv_runner's "asv: skipped" lines
            if benchmark.do_setup():
                return False
            try:
                benchmark.do_run()
            except SkipNotImplemented:
                return False
            finally:
                benchmark.do_teardown()
        return True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def quick_pass(benchmark_dir: Path, selection: str | None = None,
               timeout: float = 120.0) -> QuickPass:
    """asv's checks and every benchmark at every parameter combination once, in this process,
    through asv's own runner (``asv_runner``): the discovery and argument-count check that
    ``asv check`` runs, then the ``setup``, run and ``teardown`` that ``asv run --quick`` does
    in one forked process per benchmark. One process, because each fork of asv's server pays
    torch's first-call costs again: the pass is about whether the benchmarks run, not what
    they cost. ``selection``: a regex on benchmark names, as ``-b``."""
    from asv_runner.discovery import disc_benchmarks

    result = QuickPass()
    pattern = re.compile(selection) if selection else None
    if str(benchmark_dir.parent) not in sys.path:  # as asv's benchmark process sets it up
        sys.path.insert(0, str(benchmark_dir.parent))
    for benchmark in disc_benchmarks(str(benchmark_dir)):
        if pattern is not None and not pattern.search(benchmark.name):
            continue
        started = time.monotonic()
        said = io.StringIO()
        with contextlib.redirect_stdout(said):  # asv check's test: each call's argument count
            well_formed = benchmark.check(str(benchmark_dir))
        if not well_formed:
            result.failed.append((benchmark.name, f"malformed (asv check): {said.getvalue()}"))
            print(f"{benchmark.name:<70} failed malformed ({said.getvalue().strip()})", flush=True)
            continue
        limit = float(getattr(benchmark, "timeout", None) or timeout)
        ran = skipped = failed = 0
        for bench_id in benchmark_ids(benchmark):
            try:
                if _run_once(str(benchmark_dir), bench_id, limit):
                    result.ran.append(bench_id)
                    ran += 1
                else:
                    result.skipped.append(bench_id)
                    skipped += 1
            except Exception:  # a failing benchmark is the finding, whatever it raised
                result.failed.append((bench_id, traceback.format_exc()))
                failed += 1
        state = "failed" if failed else "ok"
        print(f"{benchmark.name:<70} {state:<6} {ran} ran, {skipped} n/a"
              f"{f', {failed} failed' if failed else ''} ({time.monotonic() - started:.1f} s)",
              flush=True)
    return result


def check(bench: str | None, config: Path) -> int:
    """asv's checks of the suite and one quick pass (:func:`quick_pass`) in this process; the
    exit status.

    The suite must import, every benchmark must take the parameters it is given (what ``asv
    check`` tests) and run at every parameter combination (``MMPERF_BENCH_QUICK=1``:
    smoke-sized cases and the ratio benchmarks' smallest budget). Any failure exits 2 and
    prints the benchmark's traceback.
    """
    try:
        from asv.config import Config  # asv's reader: asv.conf.json may hold // comments
    except ImportError:
        raise GateError(f"asv is not installed for {sys.executable}; install the dev extras: "
                        "pip install -e '.[dev]'") from None
    cwd = config.parent
    settings = Config.load(str(config))
    benchmark_dir = cwd / settings.benchmark_dir
    timeout = float(settings.default_benchmark_timeout)
    started = time.monotonic()
    try:
        with mock.patch.dict(os.environ, {QUICK_ENV: "1"}):
            result = quick_pass(benchmark_dir, bench, timeout)
    except Exception:  # the suite itself does not import
        print(f"{traceback.format_exc()}\nperf-gate --check FAIL: the asv suite in "
              f"{benchmark_dir} does not import (see above)", flush=True)
        return EXIT_ERROR
    took = time.monotonic() - started
    for bench_id, trace in result.failed:
        print(f"\n--- {bench_id} failed:\n{trace}", flush=True)
    if result.failed:
        names = ", ".join(bench_id for bench_id, _ in result.failed)
        print(f"\nperf-gate --check FAIL ({took:.0f} s): {len(result.failed)} benchmark "
              f"run(s) failed: {names}", flush=True)
        return EXIT_ERROR
    if not result.ran:
        print(f"\nperf-gate --check FAIL: no benchmark ran (selection {bench!r})", flush=True)
        return EXIT_ERROR
    print(f"\nperf-gate --check PASS: suite imports and is well formed, every benchmark ran once ("
          f"{len(result.ran)} parameter combinations ran, {len(result.skipped)} n/a on this host; "
          f"{took:.0f} s)", flush=True)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="perf_gate.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", nargs="?", default=None,
                        help="base revision (default: merge base with main, or HEAD~1 on main)")
    parser.add_argument("--head", default="HEAD", help="revision to test (default: HEAD)")
    parser.add_argument("--factor", type=float, default=DEFAULT_FACTOR,
                        help=f"slowdown factor that fails the gate (default {DEFAULT_FACTOR})")
    parser.add_argument("-b", "--bench", default=None, help="regex selecting benchmarks")
    parser.add_argument("--config", type=Path, default=ROOT / "asv.conf.json",
                        help="asv config (default: the repository's asv.conf.json)")
    parser.add_argument("--no-split", action="store_true", help="one table instead of groups")
    parser.add_argument("--no-confirm", action="store_true",
                        help="fail on the first pass's flags, without re-running them")
    parser.add_argument("--check", action="store_true",
                        help="asv check + one quick pass in the current environment (make test)")
    args = parser.parse_args(argv)
    config = args.config.resolve()
    try:
        if not config.is_file():
            raise GateError(f"asv config {config} does not exist (--config)", EXIT_USAGE)
        if args.check:
            return check(args.bench, config)
        return gate(args.base, args.head, args.factor, args.bench, config,
                    not args.no_split, not args.no_confirm)
    except GateError as err:
        print(f"perf-gate ERROR: {err}", file=sys.stderr, flush=True)
        return err.code


if __name__ == "__main__":
    sys.exit(main())
