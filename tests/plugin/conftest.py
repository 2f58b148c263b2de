"""Shared set-up of the plugin's black-box tests (pytester, mostly in-process).

pytester's in-process runs drop every module first imported inside the inner run when it ends;
torch cannot be imported twice in one process, so it (and the modules whose classes tests
compare) is imported here, once, before any inner run. The same holds for ``torch._dynamo``
(imported lazily by torch's FLOP counter; it registers a TORCH_LIBRARY, which cannot happen twice).
The plugin's wheel is built once per session (``plugin_wheel``) for the tests that install it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch  # noqa: F401  (see the module docstring)
import torch._dynamo  # noqa: F401

import pytest_mmperf.data.synthetic  # noqa: F401
import pytest_mmperf.devices  # noqa: F401
import pytest_mmperf.glue.baseline  # noqa: F401  (its stash keys must outlive inner runs)

ROOT = Path(__file__).resolve().parents[2]
# What the plugin's wheel is built from (pyproject's readme and license-files included).
PLUGIN_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "pytest_mmperf")


@pytest.fixture(autouse=True)
def _no_gc_per_inner_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest collects garbage when each inner config ends (to surface unraisable exceptions);
    with torch loaded that is a full collection of a large heap, twice a test. pytester already
    turns it off for its in-process runs; this does the same for the configs tests build
    themselves."""
    from _pytest import unraisableexception

    monkeypatch.setattr(unraisableexception, "gc_collect_harder", lambda iterations: None)


@pytest.fixture(autouse=True)
def _no_mmperf_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's PYTEST_MMPERF_* variables must not leak into the inner runs."""
    for name in list(os.environ):
        if name.startswith("PYTEST_MMPERF_"):
            monkeypatch.delenv(name)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch):
    """Patch the CUDA probe: ``fake_cuda(n)`` makes torch report n CUDA devices (0 = none)."""

    def install(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return install


@pytest.fixture(scope="session")
def build_wheel(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``build_wheel(names, subdir=".")``: ``pip wheel`` of a clean copy of these top-level
    paths (an in-tree build would reuse a stale ``build/`` folder), without build isolation or
    an index, so it needs no network; ``subdir`` is the project folder within the copy."""

    def build(names: tuple[str, ...] | list[str], subdir: str = ".") -> Path:
        dest = tmp_path_factory.mktemp("src")
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
        for name in names:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, dest / name, ignore=ignore)
            else:
                shutil.copy2(ROOT / name, dest / name)
        out = tmp_path_factory.mktemp("wheel")
        run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                              "--no-build-isolation", "--no-index", "-q", "-w", str(out),
                              str(dest / subdir)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        (wheel,) = out.glob("*.whl")
        return wheel

    return build


@pytest.fixture(scope="session")
def plugin_wheel(build_wheel: Callable[..., Path]) -> Path:
    """The plugin's wheel, built once per session for the tests that install it."""
    return build_wheel(PLUGIN_SOURCES)
