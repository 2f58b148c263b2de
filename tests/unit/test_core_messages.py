"""The pytest-free core speaks in GuardSettings terms: no module outside the pytest glue (and the
report, which has its own owner) names a ``--mmperf-*`` option; the glue adds the spelling."""

from __future__ import annotations

from pathlib import Path

import pytest_mmperf

ROOT = Path(pytest_mmperf.__file__).parent
CORE_FOLDERS = ("timing", "counting", "data", "baseline")
GLUE = ("glue", "report")  # report/: checked by its owner, listed in its issue


def _core_files() -> list[Path]:
    files = [p for folder in CORE_FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))]
    files += [p for p in sorted(ROOT.glob("*.py")) if p.name != "plugin.py"]
    return files


def test_the_core_never_names_a_command_line_option() -> None:
    files = _core_files()
    assert ROOT / "guards.py" in files and ROOT / "timing" / "ratio.py" in files
    assert not any(p.relative_to(ROOT).parts[0] in GLUE for p in files)
    named = [f"{p.relative_to(ROOT)}:{number}: {line.strip()}"
             for p in files
             for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if "--mmperf-" in line]
    assert named == [], "core modules naming pytest options:\n" + "\n".join(named)
