"""Docstrings say what and why; measurements live in docs/, dated and naming the machine.

A module docstring is a few lines (what the module is for, the one or two reasons for its design);
details go to function docstrings or docs/. No source file names a CPU model, and no comment or
docstring quotes a time or a ratio measured on this machine: a figure measured on one machine is
wrong on the next, so it belongs in docs/ (docs/measurements.md) with its date, and the code links
there.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Folders whose .py files are checked ("tests" joins once the test-suite branches have landed).
FOLDERS = ("pytest_mmperf", "reference", "benchmarks", "tools", "tests")
MAX_MODULE_DOCSTRING_LINES = 25
# A machine named by its core count ("a 2-core machine", "on 2 cores") in prose: the reason
# holds on any machine ("few cores", "fewer cores than workers"); the count was this one's.
CORE_COUNT = re.compile(r"(?<![\w-])(?:\d+|two|four|eight)[- ]cores?\b", re.IGNORECASE)

# A CPU model or a machine named by its CPU: "Xeon", "EPYC", "Ryzen", "Core i7", a
# microarchitecture, or "the AMX machine". Capability names alone (AVX2, AVX512-BF16, AMX-BF16)
# are API facts the code branches on and stay allowed.
CPU_MODEL = re.compile(
    r"\b(?:xeon|epyc|ryzen|threadripper|opteron|athlon|pentium|celeron|core\s?i[3579]"
    r"|sapphire\s?rapids|emerald\s?rapids|granite\s?rapids|ice\s?lake|cascade\s?lake"
    r"|skylake|cooper\s?lake|zen\s?[1-5]|graviton\d?|neoverse"
    r"|(?:amx|avx2|avx-?512|bf16)[- ](?:machine|box|vm|runner|host))\b",
    re.IGNORECASE,
)

# A figure measured on a machine: a time or a rate ("71-80 ms", "~3 s", "1-9 GFLOP/s") near a word
# that places it on a machine ("here", "took", "measured on", "under load", "2-core"), a ratio
# ("1.5x", "6 %") near such a word other than a core count, or an approximate ratio ("~6 %") near
# any. Budgets and limits ("at most 120 s"), definitions ("0.10 = 10 %"), designed workloads
# ("calls of 20 ms"), examples in backticks or quotes, and "a step takes well under a second" are
# not figures of a machine.
_NUMBER = r"(?<![\w.])~?\d+(?:\.\d+)?(?:\s?[-–]\s?\d+(?:\.\d+)?)?\s?"
MEASURED_TIME = re.compile(_NUMBER + r"(?:ns|us|µs|ms|s|sec|seconds?|minutes?|[GMT]FLOP/s"
                           r"|[GMK]i?B/s)(?!\w)")
MEASURED_RATIO = re.compile(_NUMBER + r"(?:%|x\b|×)")
_ON_A_MACHINE = r"here|took|measured (?:here|on|under|at)|on this machine|under load|load-dependent"
MACHINE_WORD = re.compile(rf"(?<![\w-])(?:{_ON_A_MACHINE}|\d+-core)\b", re.IGNORECASE)
RATIO_MACHINE_WORD = re.compile(rf"(?<![\w-])(?:{_ON_A_MACHINE})\b", re.IGNORECASE)
BOUND = re.compile(r"(?:\b(?:at most|at least|under|within|up to|below|above|over|budget"
                   r"|limit|timeout|goal)\W*|=\s*)$", re.IGNORECASE)
NEAR_CHARS = 80  # how far from the figure the placing word may stand, in its sentence
_LITERAL = re.compile(r"``.*?``|`[^`]*`|\"[^\"]*\"", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.;!?])\s+")


def _sources() -> list[Path]:
    files: list[Path] = []
    for folder in FOLDERS:
        files.extend(sorted((ROOT / folder).rglob("*.py")))
    return [f for f in files if f.resolve() != Path(__file__).resolve()]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _docstring_lines(path: Path) -> int:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return len(doc.splitlines()) if doc else 0


def _cpu_models(path: Path) -> list[str]:
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = CPU_MODEL.search(line)
        if match:
            found.append(f"{_rel(path)}:{number}: {match.group(0)!r} in {line.strip()[:90]!r}")
    return found


def _comments_and_docstrings(source: str) -> Iterator[tuple[int, str]]:
    """(first line, text) of every docstring and of every block of consecutive comment lines."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield node.body[0].lineno, doc
    block: list[str] = []
    start = last = 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        if block and token.start[0] != last + 1:
            yield start, " ".join(block)
            block = []
        if not block:
            start = token.start[0]
        block.append(token.string.lstrip("#").strip())
        last = token.start[0]
    if block:
        yield start, " ".join(block)


def _near(sentence: str, figure: re.Pattern[str], words: re.Pattern[str],
          approximate_only: bool = False) -> bool:
    for match in figure.finditer(sentence):
        if approximate_only and not match.group(0).startswith("~"):
            continue
        if BOUND.search(sentence[:match.start()]):
            continue
        if words.search(sentence[max(0, match.start() - NEAR_CHARS):match.end() + NEAR_CHARS]):
            return True
    return False


def machine_timings(text: str) -> list[str]:
    """The sentences of ``text`` (a comment or docstring) that quote a figure measured on a
    machine (see :data:`MEASURED_TIME`)."""
    text = _LITERAL.sub(" ", " ".join(text.split()))
    return [sentence for sentence in _SENTENCE_END.split(text)
            if _near(sentence, MEASURED_TIME, MACHINE_WORD)
            or _near(sentence, MEASURED_RATIO, RATIO_MACHINE_WORD)
            or _near(sentence, MEASURED_RATIO, MACHINE_WORD, approximate_only=True)]


def _timings(path: Path) -> list[str]:
    return [f"{_rel(path)}:{line}: {sentence[:120]!r}"
            for line, text in _comments_and_docstrings(path.read_text(encoding="utf-8"))
            for sentence in machine_timings(text)]


def test_the_folders_hold_python_files() -> None:
    sources = {_rel(p) for p in _sources()}
    for folder in FOLDERS:
        assert any(s.startswith(folder + "/") for s in sources), f"no .py file under {folder}/"


def test_module_docstrings_are_a_few_lines() -> None:
    long = {
        _rel(p): n for p in _sources()
        if (n := _docstring_lines(p)) > MAX_MODULE_DOCSTRING_LINES
    }
    assert not long, (
        f"module docstrings over {MAX_MODULE_DOCSTRING_LINES} lines (lines per file): {long}; "
        "keep what the module is for and why, move details to function docstrings or docs/"
    )


def test_no_source_names_a_cpu_model() -> None:
    found = [hit for p in _sources() for hit in _cpu_models(p)]
    assert not found, (
        "source files name a CPU model; measurements go to docs/ (dated, naming the machine) "
        "and the code links there:\n" + "\n".join(found)
    )


@pytest.mark.parametrize("text, names", [
    ("measured on the 2-core Xeon", True),
    ("a 2-core AMD EPYC runner", True),
    ("Intel Core i7-1185G7", True),
    ("on the AMX machine", True),
    ("Sapphire Rapids", True),
    ("AVX512-BF16 / AMX-BF16 flags in /proc/cpuinfo", False),
    ("torch CPU capability AVX2 or AVX512", False),
    ("the core of the plugin; a core busy elsewhere", False),
])
def test_the_cpu_model_pattern(text: str, names: bool) -> None:
    assert bool(CPU_MODEL.search(text)) is names


def test_no_comment_or_docstring_names_a_core_count() -> None:
    found = [f"{_rel(p)}:{line}: {match.group(0)!r}"
             for p in _sources()
             for line, text in _comments_and_docstrings(p.read_text(encoding="utf-8"))
             for match in CORE_COUNT.finditer(_LITERAL.sub(" ", text))]
    assert not found, ("comments or docstrings name this machine's core count; say the reason "
                       "for any machine (e.g. 'few cores'):\n" + "\n".join(found))


@pytest.mark.parametrize(("text", "names"), [
    ("on a shared 2-core machine two OpenMP threads wait", True),
    ("the seed's 4 workers on 2 cores", True),
    ("one of the two cores busy for the whole session", True),
    ("on a machine with few cores", False),
    ("e.g. ``1 thread (threads=auto: 2 cores)``", False),
])
def test_the_core_count_pattern(text: str, names: bool) -> None:
    assert bool(CORE_COUNT.search(_LITERAL.sub(" ", text))) is names


def test_no_comment_or_docstring_quotes_a_machine_timing() -> None:
    found = [hit for p in _sources() for hit in _timings(p)]
    assert not found, (
        "comments or docstrings quote a time or ratio measured on a machine; say the reason "
        "without the figure, and link the docs/ page that holds it, dated and naming the "
        "machine (e.g. docs/measurements.md#busy-runner):\n" + "\n".join(found)
    )


@pytest.mark.parametrize("text, quotes", [
    # Quotes this tree held before they moved to docs/ (or were dropped).
    ("measured here under load ~3.5, the naive preprocessing loop took 71-80 ms (median) with "
     "1 thread and 455-524 ms with 2", True),
    ("That pass checks that every benchmark runs; the two kinds took 63 of its 85 s at full "
     "size.", True),
    ("number = 1  # 0.03-1 s per step here", True),
    ("the DataLoader-worker path pickles every chunk; on a quiet 2-core machine the two differ "
     "by ~6 %, too little to time", True),
    ("multi-threaded kernels on a busy 2-core machine wait for descheduled OpenMP threads in "
     "4 ms scheduler ticks", True),
    ("a 2-thread OpenMP matmul waits (measured here: n=256 at 1-9 GFLOP/s with 2 threads)", True),
    ("not slower (1.06x measured on a quiet machine, 1.56x under load)", True),
    # Figures that are no machine's measurement.
    ("A step takes well under a second.", False),
    ("the wall time of the pytest run (goal: at most 120 s on a 2-core runner)", False),
    ("Calls of 0-20 ms at random: no pair can stop before its 30 s budget.", False),
    ("pairs differ 4x in work so that the verdicts are not in doubt even on a busy 2-core "
     "machine", False),
    ("clock ticks of 10 ms: no more digits to speak of", False),
    ("the tolerated slowdown fraction (0.10 = 10 %), measured here interleaved", False),
    ("Lines such as ``at 4.5 % of its peak: largest stage normalize 46 % (7.6 ms of 16.5 ms)``"
     " here", False),
])
def test_the_machine_timing_pattern(text: str, quotes: bool) -> None:
    assert bool(machine_timings(text)) is quotes
