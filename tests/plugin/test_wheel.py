"""The wheel other repositories install: what it contains, what it requires, and that it works.

``pip wheel --no-deps .`` must ship ``pytest_mmperf`` and nothing else at the top level (no
``reference`` package to collide with a user's own), declare no upper bounds, and register the
``pytest11`` entry point. Installed into a fresh virtual environment with the oldest
dependencies it admits, it serves a repository without a conftest
(tests/plugin/test_oldest_versions.py).
"""

from __future__ import annotations

import email.parser
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.version import Version

import pytest_mmperf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def wheel(plugin_wheel: Path) -> Path:
    """The plugin's wheel (built once per session by conftest's ``plugin_wheel``)."""
    return plugin_wheel


def _metadata(wheel: Path) -> tuple[list[str], email.message.Message, str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    return names, metadata, entry_points


def test_wheel_ships_the_plugin_only(wheel: Path) -> None:
    names, metadata, entry_points = _metadata(wheel)
    top = {n.split("/")[0] for n in names}
    assert top == {"pytest_mmperf", f"pytest_mmperf-{pytest_mmperf.__version__}.dist-info"}
    package = ROOT / "pytest_mmperf"
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py")}
    shipped = {n.split("/", 1)[1] for n in names if n.startswith("pytest_mmperf/")}
    assert shipped == modules | {"py.typed"}
    assert "timing/ratio.py" in shipped  # the subpackages ship too
    assert metadata["Name"] == "pytest-mmperf"
    assert metadata["Version"] == pytest_mmperf.__version__
    assert re.search(r"\[pytest11\]\s*mmperf\s*=\s*pytest_mmperf\.plugin", entry_points)


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[(]", requirement, maxsplit=1)[0].lower()


def test_wheel_requires_what_the_plugin_imports(wheel: Path) -> None:
    """No torchvision (never imported; its wheels pin one exact torch, so requiring it could
    replace a user's CUDA build), a pluggy bound for ``hookimpl(wrapper=True)``, and only lower
    bounds (tested by test_oldest_versions.py)."""
    _, metadata, _ = _metadata(wheel)
    requires = metadata.get_all("Requires-Dist") or []
    core = [r for r in requires if "extra ==" not in r]
    assert {_requirement_name(r) for r in core} == {
        "pytest", "pluggy", "pytest-benchmark", "torch", "pillow", "numpy"}, core
    assert not [r for r in core if "torchvision" in r], core
    bounds: dict[str, Version] = {}
    for requirement in core:  # one lower bound each: no upper bound, no pin, no marker
        bound = re.fullmatch(r"[A-Za-z0-9_.-]+>=([0-9][0-9.]*)", requirement.replace(" ", ""))
        assert bound is not None, requirement
        bounds[_requirement_name(requirement)] = Version(bound[1])
    assert bounds["pluggy"] >= Version("1.3"), core  # public pluggy.HookImpl
    assert bounds["pytest"] >= Version("7.0"), core  # pytest.StashKey
    assert not [r for r in requires if "<" in r.split(";")[0]], requires  # extras included


def test_wheel_metadata_for_the_package_index(wheel: Path) -> None:
    """The license the metadata names ships as a file; classifiers and project URLs."""
    names, metadata, _ = _metadata(wheel)
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    info = f"pytest_mmperf-{pytest_mmperf.__version__}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read(f"{info}/licenses/LICENSE").decode()
    assert shipped == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert shipped.startswith("MIT License") and "the pytest-mmperf developers" in shipped
    classifiers = set(metadata.get_all("Classifier") or [])
    assert {"Framework :: Pytest", "Development Status :: 4 - Beta",
            "Topic :: Software Development :: Testing",
            "Operating System :: POSIX :: Linux"} <= classifiers
    minimum = re.fullmatch(r">=3\.(\d+)", metadata["Requires-Python"])
    assert minimum is not None, metadata["Requires-Python"]
    declared = {int(c.rsplit(".", 1)[1]) for c in classifiers
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert min(declared) == int(minimum[1]) and declared == set(range(min(declared),
                                                                        max(declared) + 1))
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Source", "Issues", "Changelog"}
    assert all(u.startswith("https://") for u in urls.values()), urls


def test_reference_is_a_distribution_of_its_own(build_wheel: Callable[..., Path]) -> None:
    wheel = build_wheel(["reference"], subdir="reference")
    names, metadata = _metadata_without_entry_points(wheel)
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"reference"}
    assert {"reference/attention.py", "reference/preprocess.py"} <= set(names)
    assert metadata["Name"] == "mmperf-reference"


def _metadata_without_entry_points(wheel: Path) -> tuple[list[str], email.message.Message]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        return names, email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
