"""Importing the plugin (which pytest does in every session of every repository where the package
is installed) must not import torch, torchvision or PIL; the public names load lazily."""

from __future__ import annotations

import json
import os
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
    code = ("import pytest_mmperf.plugin, pytest_mmperf, pytest_mmperf.glue.options, "
            "pytest_mmperf.devices, pytest_mmperf.glue.hookspecs")
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


# Which parts of the package may import what at import time: only the pytest glue imports pytest
# (the timing core, counting, data and report serve asv and plain Python too); only counting and
# the synthetic data import torch or PIL, and they are loaded only when a test counts or
# generates data. The glue, the timing core and the report load torch inside functions.
PYTEST_ALLOWED = ("pytest_mmperf.plugin", "pytest_mmperf.glue.")
TORCH_ALLOWED = ("pytest_mmperf.counting.", "pytest_mmperf.data.")
SEES_TORCH, SEES_PYTEST = "pytest_mmperf.data.synthetic", "pytest_mmperf.glue.options"
_PROBE = r"""
import json, os, sys

def in_child(task):
    # task() in a forked child of this process; its JSON-able result comes back by a pipe
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, json.dumps(task()).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as handle:
        text = handle.read()
    os.waitpid(pid, 0)
    return json.loads(text or '["<import failed>"]')

def loaded_by(name):
    __import__(name)
    return [m for m in ("pytest", "torch", "torchvision", "PIL") if m in sys.modules]

def phase(preload, names):
    if preload:
        __import__(preload)
    return {name: in_child(lambda: loaded_by(name)) for name in names}

results = {}
for preload, names in json.loads(sys.argv[1]):  # each phase in a child of a clean process
    results.update(in_child(lambda: phase(preload, names)))
print(json.dumps(results))
"""


def _package_modules() -> list[str]:
    root = Path(pytest_mmperf.__file__).parent
    return sorted("pytest_mmperf." + ".".join(p.relative_to(root).with_suffix("").parts)
                  .removesuffix(".__init__").rstrip(".") for p in root.rglob("*.py"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the probe forks a clean child per module")
def test_only_the_pytest_glue_imports_pytest_and_nothing_imports_torch() -> None:
    modules = _package_modules()
    assert "pytest_mmperf.timing.ratio" in modules and "pytest_mmperf.glue.options" in modules
    # A child per module, forked from a clean process; for the glue, from one that has imported
    # pytest (which the glue may import), and for counting and data from one that has imported
    # torch (which they may import): importing those is what makes a clean child slow. One
    # module of each kind stays clean, to show that the probe sees pytest and torch imports.
    glue = [m for m in modules if m.startswith(PYTEST_ALLOWED) and m != SEES_PYTEST]
    torch_ok = [m for m in modules if m.startswith(TORCH_ALLOWED) and m != SEES_TORCH]
    clean = [m for m in modules if m not in glue + torch_ok]
    phases = [[None, clean], ["pytest", glue], ["torch", torch_ok]]
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(phases)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert set(loaded) == set(modules)
    heavy = {name: mods for name, mods in loaded.items()
             if set(mods) - {"pytest"} and name not in torch_ok}
    outside_torch = {n: m for n, m in heavy.items() if not n.startswith(TORCH_ALLOWED)}
    assert outside_torch == {}, f"modules importing torch/torchvision/PIL: {outside_torch}"
    assert SEES_TORCH in heavy  # the probe does see torch imports
    uses_pytest = sorted(name for name, mods in loaded.items()
                         if "pytest" in mods and name not in glue)
    outside = [n for n in uses_pytest if not n.startswith(PYTEST_ALLOWED)]
    assert outside == [], f"modules outside the pytest glue that import pytest: {outside}"
    assert SEES_PYTEST in uses_pytest  # the probe does see pytest imports
