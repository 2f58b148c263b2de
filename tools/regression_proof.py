"""Proof that the regression suite (tests/perf) catches known regressions of reference/.

For each known regression: copy ``reference/`` to a temporary directory, apply the regression as
exact text substitutions (an anchor that is not found exactly once is an error: the proof must
never silently test unmodified code), run the suite against the copy (:func:`run_one`), and
record which tests (= which guards) failed. The unmodified copy is run too and must pass. Each
run is a pytest forked from one fork server (:mod:`pytest_mmperf.timing.forkserver`: pytest,
torch and torchvision imported once; docs/fork-server.md), or a new interpreter where
``os.fork`` is missing.

Usage::

    python tools/regression_proof.py [--list] [--quick] [--only NAME ...] [--pytest-args "ARGS"]

``--quick`` (run by ``make test``) stops each regression's run at its first failing guard and
skips the unmodified copy (the same ``make test`` has just run tests/perf on it); the full proof,
which records every guard that catches each regression, is ``make regression-proof``.

Exit status 0 when every regression made at least one test fail and the unmodified copy passed;
1 otherwise; 2 for a usage error or a missing anchor.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mmperf.timing.forkserver import PRELOAD_IF_IMPORTED, ForkServer, fork_available
from pytest_mmperf.timing.isolation import run_pytest_command

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "reference"
SUITE = ROOT / "tests" / "perf"
SNAPSHOTS = ROOT / "mmperf-snapshots.json"
SHADOW_PLUGIN = "_mmperf_regression_shadow"
BASELINE = "unmodified"
DEFAULT_PYTEST_ARGS: tuple[str, ...] = ()  # the plugin defaults, as users run the suite

_SHADOW_SOURCE = '''"""Loaded with -p by tools/regression_proof.py: import `reference` from here."""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
for _name in [m for m in sys.modules if m == "reference" or m.startswith("reference.")]:
    del sys.modules[_name]
sys.path.insert(0, _HERE)
import reference  # noqa: E402

_ORIGIN = os.path.abspath(reference.__file__)
with open(os.path.join(_HERE, "origins.txt"), "a", encoding="utf-8") as _f:
    _f.write(f"{os.getpid()}\\t{_ORIGIN}\\n")
if os.path.dirname(_ORIGIN) != os.path.join(_HERE, "reference"):
    raise ImportError(f"regression proof: reference imported from {_ORIGIN}, not the copy in "
                      f"{_HERE}")


def pytest_report_header(config):
    return f"mmperf regression proof: reference imported from {_ORIGIN}"
'''


class AnchorError(ValueError):
    """A regression's anchor text is missing (or ambiguous) in the reference sources."""


@dataclass(frozen=True)
class Substitution:
    """Replace ``old`` (must occur exactly once) by ``new`` in ``reference/<file>``."""

    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Regression:
    """A known regression: substitutions and the suite files it needs (see module docstring)."""

    name: str
    description: str
    substitutions: tuple[Substitution, ...]
    exclude_words: tuple[str, ...] = ()  # skip test files whose name contains one of these


_PREPROCESS_ONLY = ("attention", "sparse")
_ATTENTION_ONLY = ("preprocess", "loader", "loading")
# Training regressions: the counter files and test_training.py (its counter guards come first).
_TRAINING_ONLY = ("preprocess", "loader", "loading", "timing", "report")

REGRESSIONS: tuple[Regression, ...] = (
    Regression(
        "per-image-loop",
        "batched preprocessor as a per-image loop (one image per buffer, "
        "normalise and concatenate per image)",
        (Substitution(
            "preprocess.py",
            "         ) -> torch.Tensor:\n"
            "    checked = check_images(images)\n",
            "         ) -> torch.Tensor:\n"
            "    if isinstance(images, (list, tuple)) and len(images) > 1:  # REGRESSION\n"
            "        return torch.cat([_run(opts, [image]) for image in images])\n"
            "    checked = check_images(images)\n"),),
        _PREPROCESS_ONLY),
    Regression(
        "sdpa-to-math",
        "SDPA backend replaced by explicit matmul / softmax / matmul",
        (Substitution(
            "attention.py",
            "            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, "
            "dropout_p=dropout_p)\n",
            "            # REGRESSION: explicit attention instead of the fused kernel\n"
            "            scores = torch.matmul(q * (q.shape[-1] ** -0.5), k.transpose(-2, -1))\n"
            "            if mask is not None:\n"
            "                scores = scores.masked_fill(~mask, float('-inf'))\n"
            "            attn = torch.softmax(scores, dim=-1)\n"
            "            if dropout_p > 0.0:\n"
            "                attn = F.dropout(attn, p=dropout_p, training=True)\n"
            "            return torch.matmul(attn, v)\n"),),
        _ATTENTION_ONLY),
    Regression(
        "unaligned-span",
        "local attention's key windows not rounded up to a multiple of 16 keys (319 or 287 "
        "instead of 320 or 288: slower SIMD tiles in the fused CPU kernel; results unchanged)",
        (Substitution("_sparse.py", "_SPAN_MULTIPLE = 16\n",
                      "_SPAN_MULTIPLE = 1  # REGRESSION: unaligned spans\n"),),
        _ATTENTION_ONLY),
    Regression(
        "blocks-in-batch",
        "local attention's query blocks in SDPA's batch dimension without need: the windows "
        "and the output are copied between layouts (results unchanged)",
        (Substitution("_sparse.py", "    if keep_w is None or bsz == 1:\n",
                      "    if False:  # REGRESSION: always the copying layout\n"),),
        _ATTENTION_ONLY),
    Regression(
        "per-channel-normalise",
        "fused normalise split into a per-channel Python loop ((x / 255 - mean[c]) / std[c])",
        (Substitution(
            "_pixels.py",
            "        if channels_inner:\n"
            "            for c in range(3):\n"
            "                work[:, c].copy_(batch[:, c])\n"
            "        else:\n"
            "            work.copy_(batch)\n"
            "        scale_row, bias_row = _affine_rows(*key, work.shape[3], channels_inner)\n"
            "        torch.addcmul(bias_row, work, scale_row, out=work)\n",
            "        for c in range(batch.shape[1]):  # REGRESSION: per-channel loop\n"
            "            channel = batch[:, c].to(torch.float32) / 255.0\n"
            "            work[:, c] = (channel - float(mean[c])) / float(std[c])\n"),),
        _PREPROCESS_ONLY),
    Regression(
        "slowdown-30",
        "about 30 % more work in the batched path: every third image is resized twice "
        "(redundant work, results unchanged)",
        (Substitution(
            "preprocess.py",
            "    def fill(i: int) -> None:\n"
            "        taken[i] = resize_into(checked[i], buffer[i], opts.resize_backend, "
            "opts.zero_copy)\n",
            "    def fill(i: int) -> None:\n"
            "        if i % 3 == 0:  # REGRESSION: redundant work\n"
            "            resize_into(checked[i], buffer[i], opts.resize_backend, opts.zero_copy)\n"
            "        taken[i] = resize_into(checked[i], buffer[i], opts.resize_backend, "
            "opts.zero_copy)\n"),),
        _PREPROCESS_ONLY),
    Regression(
        "unpack-pixels",
        "zero-copy pixel access lost: every PIL image unpacked to RGB (np.asarray) before the "
        "resize (results unchanged)",
        (Substitution(
            "_pixels.py",
            "            view = rgbx_view(image)\n"
            "            if view is not None:\n"
            "                with stage(\"resize\"):\n",
            "            view = None  # REGRESSION: rgbx_view(image) not used\n"
            "            if view is not None:\n"
            "                with stage(\"resize\"):\n"),),
        _PREPROCESS_ONLY),
    Regression(
        "loader-processes",
        "fast loader on DataLoader worker processes by default (shared memory, pickling "
        "and a process wake-up per chunk instead of a thread pool; results unchanged)",
        (Substitution(
            "_loading.py",
            "resize_backend: str = \"auto\", worker_type: str = \"thread\") -> FastLoader:\n",
            "resize_backend: str = \"auto\", worker_type: str = \"process\") -> FastLoader:"
            "  # REGRESSION\n"),),
        _PREPROCESS_ONLY),
    Regression(
        "sdpa-backward-to-math",
        "SDPA's backward replaced by explicit attention: the sdpa backend computes explicit "
        "matmul / softmax / matmul whenever autograd records (training), fused in inference",
        (Substitution(
            "attention.py",
            "            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, "
            "dropout_p=dropout_p)\n",
            "            if torch.is_grad_enabled():  # REGRESSION: explicit in training\n"
            "                scores = torch.matmul(q * (q.shape[-1] ** -0.5), "
            "k.transpose(-2, -1))\n"
            "                if mask is not None:\n"
            "                    scores = scores.masked_fill(~mask, float('-inf'))\n"
            "                attn = torch.softmax(scores, dim=-1)\n"
            "                if dropout_p > 0.0:\n"
            "                    attn = F.dropout(attn, p=dropout_p, training=True)\n"
            "                return torch.matmul(attn, v)\n"
            "            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, "
            "dropout_p=dropout_p)\n"),),
        _TRAINING_ONLY),
    Regression(
        "bf16-autocast-dropped",
        "autocast silently dropped from the bf16 training step (it runs in float32)",
        (Substitution(
            "training.py",
            "    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])\n",
            "    return contextlib.nullcontext()  # REGRESSION: autocast dropped\n"),),
        _TRAINING_ONLY),
)


@dataclass
class JunitResult:
    """Test outcomes from a JUnit XML file (names as ``<classname>::<name>``)."""

    tests: int = 0
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    """One suite run against one copy."""

    name: str
    returncode: int
    junit: JunitResult
    seconds: float
    origins: list[str]
    command: list[str]
    output_tail: str = ""
    problem: str = ""  # why the run says nothing (bad origins, pytest error); "" when valid

    @property
    def caught(self) -> bool:
        return not self.problem and bool(self.junit.failed)

    @property
    def passed(self) -> bool:
        return (not self.problem and self.returncode == 0 and not self.junit.failed
                and not self.junit.errors)


def regression_by_name(name: str) -> Regression:
    for reg in REGRESSIONS:
        if reg.name == name:
            return reg
    raise ValueError(f"unknown regression {name!r}; known: {BASELINE}, "
                     f"{', '.join(r.name for r in REGRESSIONS)}")


def copy_reference(dest: Path, source: Path = REFERENCE) -> Path:
    """Copy the package ``source`` to ``dest/reference`` (without caches); returns the copy."""
    target = dest / "reference"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def apply_regression(regression: Regression, package: Path) -> None:
    """Apply every substitution of ``regression`` to the package copy at ``package``.

    Raises AnchorError naming the regression, file and anchor when an anchor occurs zero times
    or more than once (nothing of that file is written then).
    """
    for sub in regression.substitutions:
        path = package / sub.file
        text = path.read_text(encoding="utf-8")
        count = text.count(sub.old)
        if count != 1:
            raise AnchorError(
                f"regression {regression.name!r}: anchor found {count} times in {path} "
                f"(expected exactly once); the reference code changed, update the anchor in "
                f"tools/regression_proof.py:\n{sub.old}")
        path.write_text(text.replace(sub.old, sub.new), encoding="utf-8")


def parse_junit(path: Path) -> JunitResult:
    """Outcomes of every ``<testcase>`` in a pytest JUnit XML file."""
    result = JunitResult()
    for case in ET.parse(path).getroot().iter("testcase"):
        cls = case.get("classname", "")
        name = f"{cls}::{case.get('name', '')}" if cls else case.get("name", "")
        result.tests += 1
        for tag, bucket in (("failure", result.failed), ("error", result.errors),
                            ("skipped", result.skipped)):
            child = case.find(tag)
            if child is not None:
                bucket.append(name)
                message = (child.get("message") or child.text or "").strip()
                result.messages[name] = message.splitlines()[0][:200] if message else ""
                break
    return result


# Files run in this order: the cheap deterministic counter guards first (test_training opens
# with its counter guards), timing guards last, so that ``--quick`` (-x) reaches the first guard
# that catches a regression as soon as it can.
FILE_ORDER = ("test_counters", "test_training", "test_cases", "test_report", "test_timing")


def _file_rank(path: Path) -> tuple[int, str]:
    rank = next((i for i, prefix in enumerate(FILE_ORDER) if path.name.startswith(prefix)),
                len(FILE_ORDER))
    return rank, path.name


def select_files(regression: Regression | None, suite: Path = SUITE) -> list[str]:
    """Suite files for ``regression`` (all of them for the baseline or if none would be left),
    in :data:`FILE_ORDER`.

    Quick, but never so narrow that a catch is guaranteed: preprocessing regressions run every
    ``tests/perf/test_*.py`` file except those whose name says attention or sparse; attention
    regressions every file except those whose name says preprocess, loader or loading.
    """
    files = sorted(suite.glob("test_*.py"), key=_file_rank)
    if regression is not None and regression.exclude_words:
        kept = [f for f in files if not any(w in f.name for w in regression.exclude_words)]
        files = kept or files
    return [os.path.relpath(f, ROOT) for f in files] or [os.path.relpath(suite, ROOT)]


def run_one(regression: Regression | None, pytest_args: Sequence[str],
            server: ForkServer | None = None) -> RunResult:
    """Copy reference/, apply ``regression`` (None: unmodified), run the suite, parse it.

    How the copy shadows the checkout: the project is installed editable and ``python -m pytest``
    puts the working directory (the repository root) first on ``sys.path``, so ``PYTHONPATH``
    alone does not win. The run therefore loads a tiny plugin with ``-p`` (written into the
    temporary directory, found through ``PYTHONPATH``) that drops any imported ``reference``,
    puts the copy first on ``sys.path`` and imports ``reference`` from it before any conftest or
    test runs; the guards pass ``-p`` on to their worker processes, so those import the copy
    too. Every process appends the file it imported to ``origins.txt``; the result names a
    problem unless each points at the copy. Snapshots are read from a copy of the snapshot file,
    so nothing in the checkout can be rewritten.
    """
    name = BASELINE if regression is None else regression.name
    with tempfile.TemporaryDirectory(prefix=f"mmperf-proof-{name}-") as tmp:
        work = Path(tmp)
        package = copy_reference(work)
        if regression is not None:
            apply_regression(regression, package)
        (work / f"{SHADOW_PLUGIN}.py").write_text(_SHADOW_SOURCE, encoding="utf-8")
        snapshots = work / "snapshots.json"
        if SNAPSHOTS.exists():
            shutil.copyfile(SNAPSHOTS, snapshots)
        junit = work / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", *select_files(regression), "-q", "-rfE",
               "-p", "no:cacheprovider", "-p", SHADOW_PLUGIN, f"--junitxml={junit}",
               f"--mmperf-snapshots={snapshots}", *pytest_args]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(work), *filter(None, [env.get("PYTHONPATH")])])
        env.pop("PYTEST_ADDOPTS", None)
        start = time.perf_counter()
        # forked from the server (torch and pytest imported once for every run) where it works
        returncode, output = run_pytest_command(cmd, cwd=ROOT, env=env, timeout_s=None,
                                                server=server)
        seconds = time.perf_counter() - start
        origins_file = work / "origins.txt"
        origins = (origins_file.read_text(encoding="utf-8").splitlines()
                   if origins_file.exists() else [])
        result = RunResult(name, returncode, JunitResult(), seconds, origins, cmd,
                           output[-3000:])
        wanted = str(package / "__init__.py")
        bad = [line for line in origins if not line.endswith("\t" + wanted)]
        if not origins or bad:
            result.problem = (f"reference was not imported from the copy {wanted}: "
                              f"{bad or 'no process recorded an import'}")
        elif not junit.exists():
            result.problem = f"pytest exited {returncode} without a JUnit report"
        else:
            result.junit = parse_junit(junit)
            if returncode not in (0, 1):
                result.problem = f"pytest exited {returncode} (not a test failure)"
            elif result.junit.tests == 0:
                result.problem = "no tests ran"
        return result


def _short(test: str) -> str:
    return test.replace("tests.perf.", "")


def format_table(results: Sequence[RunResult]) -> str:
    """Regression -> caught? -> the tests (guards) that failed."""
    lines = [f"{'regression':<24} {'result':<14} {'time':>7}  guards that failed"]
    for r in results:
        if r.name == BASELINE:
            verdict = "PASS" if r.passed else "FAIL"
        else:
            verdict = "caught" if r.caught else "NOT CAUGHT"
        if r.problem:
            verdict = "ERROR"
        caught_by = ", ".join(_short(t) for t in r.junit.failed + r.junit.errors) or "-"
        if r.problem:
            caught_by = r.problem
        lines.append(f"{r.name:<24} {verdict:<14} {r.seconds:>6.0f}s  {caught_by}")
        lines.append(f"{'':<24} ({r.junit.tests} tests, {len(r.junit.skipped)} skipped, "
                     f"pytest exit {r.returncode})")
    return "\n".join(lines)


def _run_and_print(regression: Regression | None, pytest_args: Sequence[str],
                   server: ForkServer | None, verbose: bool) -> RunResult:
    result = run_one(regression, pytest_args, server)
    print(f"[{result.name}] {result.seconds:.0f}s, pytest exit {result.returncode}, "
          f"reference from {result.origins[0].split(chr(9))[-1] if result.origins else '?'}",
          flush=True)
    if verbose or result.problem:
        print("  " + shlex.join(result.command))
        print(result.output_tail)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the regressions and exit")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"run only this one (repeatable; '{BASELINE}' = the unmodified copy)")
    parser.add_argument("--pytest-args", default=" ".join(DEFAULT_PYTEST_ARGS),
                        help="extra pytest arguments, one shell-quoted string (default: "
                             "%(default)r)")
    parser.add_argument("--quick", action="store_true",
                        help="what `make test` runs: every regression, each stopping at its first "
                             "failing guard (-x); no run of the unmodified copy, which the same "
                             "`make test` has just tested as tests/perf")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print each run's command and output tail")
    args = parser.parse_args(argv)
    if args.list:
        print(f"{BASELINE:<24} the reference/ copy as it is (must pass)")
        for reg in REGRESSIONS:
            print(f"{reg.name:<24} {reg.description}")
        return 0
    pytest_args = shlex.split(args.pytest_args) + (["-x"] if args.quick else [])
    if any(a.startswith("--mmperf-update-snapshots") for a in pytest_args):
        parser.error("--pytest-args must not contain --mmperf-update-snapshots")
    try:
        names = args.only or [*([] if args.quick else [BASELINE]),
                              *(r.name for r in REGRESSIONS)]
        chosen = [None if n == BASELINE else regression_by_name(n) for n in names]
        # Check every anchor before spending minutes on runs.
        for reg in chosen:
            if reg is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    apply_regression(reg, copy_reference(Path(tmp)))
    except (ValueError, AnchorError) as exc:
        print(f"regression_proof: {exc}", file=sys.stderr)
        return 2
    results = []
    server = (ForkServer(sys.executable, ROOT, preload=PRELOAD_IF_IMPORTED)
              if fork_available() else None)
    try:
        for reg in chosen:
            results.append(_run_and_print(reg, pytest_args, server, args.verbose))
    finally:
        if server is not None:
            server.close()
    print(format_table(results))
    ok = all(r.passed if r.name == BASELINE else r.caught for r in results)
    print("regression proof: " + ("OK" if ok else "FAILED (see the table)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
