"""Docstrings say what and why; measurements live in docs/, dated and naming the machine.

A module docstring is a few lines (what the module is for, the one or two reasons for its design);
details go to function docstrings or docs/. No source file names a CPU model: a figure measured on
one machine is wrong on the next, so it belongs in docs/ (docs/measurements.md) with its date.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Folders whose .py files are checked ("tests" joins once the test-suite branches have landed).
FOLDERS = ("pytest_mmperf", "reference", "benchmarks", "tools", "tests")
MAX_MODULE_DOCSTRING_LINES = 25

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
