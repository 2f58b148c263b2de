"""Importing the plugin (which pytest does in every session of every repository where the package
is installed) must not import torch, torchvision or PIL; the public names load lazily."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_mmperf

HEAVY = ("torch", "torchvision", "PIL")
REPORT = f"import json, sys; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"


def _heavy_after(code: str) -> list[str]:
    """Run `code` in a fresh interpreter, then list the heavy modules it imported."""
    out = subprocess.run([sys.executable, "-c", f"{code}\n{REPORT}"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_the_plugin_and_package_imports_no_torch() -> None:
    code = ("import pytest_mmperf.plugin, pytest_mmperf, pytest_mmperf.config, "
            "pytest_mmperf.devices, pytest_mmperf.hookspecs")
    assert _heavy_after(code) == []


def test_pytest_help_with_the_plugin_imports_no_torch(tmp_path: Path) -> None:
    code = (f"import os, pytest; os.chdir({str(tmp_path)!r}); "
            "rc = pytest.main(['--help', '-p', 'no:cacheprovider']); assert rc == 0, rc; "
            "import sys; assert 'pytest_mmperf.plugin' in sys.modules")
    assert _heavy_after(code) == []


def test_guard_failure_loads_without_torch() -> None:
    # A plain-Python caller can hold guard failures without paying for torch.
    assert _heavy_after("import pytest_mmperf; pytest_mmperf.GuardFailure") == []


def test_public_names_load_on_first_use() -> None:
    # The lazy import really happens (this probe would report torch if it did not).
    assert "torch" in _heavy_after("import pytest_mmperf; pytest_mmperf.BatchSpec")


def test_public_names_resolve_to_their_modules() -> None:
    import importlib

    for name in pytest_mmperf.__all__:
        if name == "__version__":
            continue
        module = importlib.import_module(pytest_mmperf.__getattr__.__globals__["_LAZY"][name]
                                         .join(("pytest_mmperf.", "")))
        assert getattr(pytest_mmperf, name) is getattr(module, name), name
        assert name in dir(pytest_mmperf)
    with pytest.raises(AttributeError, match="has no attribute 'banana'"):
        pytest_mmperf.banana  # noqa: B018


def test_version_matches_pyproject() -> None:
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    version = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    assert version is not None and pytest_mmperf.__version__ == version[1]
