"""The README's reference tables list exactly what the plugin defines.

* options: one row per setting of the settings table, with its option, ini key and env var;
* fixtures: one row per fixture the installed plugin registers (``pytest --fixtures``);
* markers: one row per marker it registers (``pytest --markers``);
* hooks: one row per hook specification;
* every ``--mmperf-*`` option named anywhere in the user-facing Markdown exists.

Fixtures and markers are collected black-box, from a pytest run in an empty directory, so a
fixture added to the plugin without a README row fails here.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
NONE = "–"  # the README's cell for "no ini key / no env var"


# --------------------------------------------------------------------------- parsing helpers
def table_rows(markdown: str, first_header: str) -> list[list[str]]:
    """The body rows of the first Markdown table whose header's first cell is ``first_header``;
    cells stripped of surrounding whitespace. ValueError if there is no such table."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        cells = _cells(line)
        if cells and cells[0] == first_header and i + 1 < len(lines) \
                and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            rows = []
            for body in lines[i + 2:]:
                if not body.strip().startswith("|"):
                    break
                rows.append(_cells(body))
            return rows
    raise ValueError(f"no Markdown table with first header {first_header!r}")


def _cells(line: str) -> list[str]:
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return []
    return [cell.strip() for cell in line[1:-1].split("|")]


def code_name(cell: str) -> str:
    """``"`mmperf_batch(**spec)`"`` -> ``"mmperf_batch"``; ``"`--benchmark`"`` -> ``"--benchmark"``;
    ``"–"`` stays ``"–"``."""
    match = re.match(r"`([^`(]+)", cell)
    return match.group(1).strip() if match else cell.strip()


def differences(defined: Iterable[object], listed: Iterable[object]) -> str:
    """An empty string when both collections hold the same items (and the README lists none
    twice); else what is missing from the README, what it lists that does not exist, and
    duplicates."""
    defined_list, listed_list = list(defined), list(listed)
    missing = [x for x in defined_list if x not in listed_list]
    extra = [x for x in listed_list if x not in defined_list]
    twice = sorted({str(x) for x in listed_list if listed_list.count(x) > 1})
    parts = []
    if missing:
        parts.append(f"missing from the README: {missing}")
    if extra:
        parts.append(f"in the README but not defined: {extra}")
    if twice:
        parts.append(f"listed more than once: {twice}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- the helpers can fail
_SAMPLE = """
| fixture | what it is |
|---|---|
| `mmperf_device` | a device |
| `mmperf_guard` | the guards |

| option | ini key | env var | default | meaning |
|---|---|---|---|---|
| `--mmperf-seed` | `mmperf_seed` | `PYTEST_MMPERF_SEED` | `0` | seed |
| `--benchmark` | – | – | off | run |
"""


def test_helpers_detect_a_missing_row() -> None:
    listed = [code_name(row[0]) for row in table_rows(_SAMPLE, "fixture")]
    assert listed == ["mmperf_device", "mmperf_guard"]
    found = differences(["mmperf_device", "mmperf_guard", "mmperf_batch_spec"], listed)
    assert found == "missing from the README: ['mmperf_batch_spec']"


def test_helpers_detect_an_extra_row_a_duplicate_and_a_wrong_cell() -> None:
    listed = [code_name(row[0]) for row in table_rows(_SAMPLE, "fixture")]
    assert "in the README but not defined: ['mmperf_guard']" in differences(["mmperf_device"],
                                                                            listed)
    assert "listed more than once" in differences(["mmperf_device"], ["mmperf_device"] * 2)
    rows = [tuple(code_name(c) for c in row[:3]) for row in table_rows(_SAMPLE, "option")]
    assert rows == [("--mmperf-seed", "mmperf_seed", "PYTEST_MMPERF_SEED"),
                    ("--benchmark", NONE, NONE)]
    assert differences([("--mmperf-seed", "mmperf_seed", "PYTEST_MMPERF_SEEDS")], rows[:1])
    assert differences([], []) == ""


def test_helpers_reject_a_missing_table() -> None:
    with pytest.raises(ValueError, match="marker"):
        table_rows(_SAMPLE, "marker")


# --------------------------------------------------------------------------- the README
def _module(*names: str) -> Any:
    """The first of ``names`` (``pytest_mmperf.<path>``) that the imported package contains.

    Looked up on disk, not by trying imports: the package is being laid out anew
    (``config`` -> ``glue.options``), and where an editable install of another checkout is also
    on the path, a failed lookup in this checkout could import that checkout's module instead.
    """
    import pytest_mmperf

    root = Path(pytest_mmperf.__file__).parent
    for name in names:
        parts = name.split(".")[1:]
        if root.joinpath(*parts).with_suffix(".py").is_file() \
                or root.joinpath(*parts, "__init__.py").is_file():
            return importlib.import_module(name)
    raise ImportError(f"none of {names} in {root}")


def _settings() -> Any:
    return _module("pytest_mmperf.glue.options", "pytest_mmperf.config").SETTINGS


def _hookspecs() -> Any:
    return _module("pytest_mmperf.glue.hookspecs", "pytest_mmperf.hookspecs")


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_options_table_lists_every_setting_with_its_names() -> None:
    defined = [(s.option, s.ini_key if s.ini else NONE, s.env_var if s.env else NONE)
               for s in _settings()]
    listed = [tuple(code_name(c) for c in row[:3]) for row in table_rows(_readme(), "option")]
    assert not differences(defined, listed), differences(defined, listed)


def test_fixtures_table_lists_every_registered_fixture(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    # `name -- path:line` or `name [session scope] -- path:line`, unindented
    registered = sorted({m.group(1) for m in re.finditer(r"^(mmperf_\w+)\b", result.stdout.str(),
                                                         re.M)})
    assert "mmperf_guard" in registered, result.stdout.str()  # the parse works at all
    listed = [code_name(row[0]) for row in table_rows(_readme(), "fixture")]
    assert not differences(registered, listed), differences(registered, listed)


def test_markers_table_lists_every_registered_marker(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    registered = sorted(set(re.findall(r"^@pytest\.mark\.(mmperf_\w+)", result.stdout.str(),
                                       re.M)))
    assert "mmperf_timing" in registered, result.stdout.str()
    listed = [code_name(row[0]) for row in table_rows(_readme(), "marker")]
    assert not differences(registered, listed), differences(registered, listed)


def test_hooks_table_lists_every_hook() -> None:
    module = _hookspecs()
    defined = sorted(name for name in vars(module) if name.startswith("pytest_mmperf_"))
    assert defined, "no hook specifications found"
    listed = [code_name(row[0]) for row in table_rows(_readme(), "hook")]
    assert not differences(defined, listed), differences(defined, listed)


def test_every_option_named_in_the_docs_exists() -> None:
    """A renamed or misspelt ``--mmperf-*`` in the README, CONTRIBUTING or docs/ fails here."""
    known = {s.option for s in _settings()}
    pages = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    unknown = {}
    for page in pages:
        if page.exists():
            named = set(re.findall(r"--mmperf-[a-z-]*[a-z]", page.read_text(encoding="utf-8")))
            if named - known:
                unknown[page.name] = sorted(named - known)
    assert not unknown, f"options that the plugin does not define: {unknown}"


def test_json_schema_page_names_every_key() -> None:
    """docs/json-schema.md documents the schema version, every GuardResult key and every key of
    each figure record (a key added to a record without a line in the page fails here)."""
    import dataclasses

    from pytest_mmperf import GuardResult

    figures = _module("pytest_mmperf.report.figures", "pytest_mmperf.figures")
    page = (ROOT / "docs" / "json-schema.md").read_text(encoding="utf-8")
    assert f'"{figures.SCHEMA}"' in page
    records = [GuardResult, figures.FamilyRow, *figures.KINDS.values()]
    undocumented = {
        record.__name__: missing
        for record in records
        if (missing := [f.name for f in dataclasses.fields(record) if f"`{f.name}`" not in page])
    }
    assert not undocumented, f"keys missing from docs/json-schema.md: {undocumented}"
    assert all(f"**`{kind}`**" in page for kind in figures.KINDS), sorted(figures.KINDS)


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading (lower case, punctuation dropped, spaces -> -)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(path: Path) -> str:
    """The page without its fenced code blocks (a ``#`` there is no heading)."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_relative_links_and_anchors_resolve() -> None:
    """Every relative link of the README, CONTRIBUTING, CHANGELOG and docs/ points at a file
    that exists and, with ``#anchor``, at a heading of that page (pages moved between them)."""
    pages = [README, ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md",
             *sorted((ROOT / "docs").glob("*.md"))]
    pages = [p for p in pages if p.exists()]
    anchors = {p.resolve(): {_slug(h) for h in re.findall(r"^#+ (.*)$", _prose(p), re.M)}
               for p in pages}
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page.resolve()
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors.get(dest, set()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
