"""Shared set-up of the plugin's black-box tests (pytester, mostly in-process).

pytester's in-process runs drop every module first imported inside the inner run when it ends;
torch cannot be imported twice in one process, so it (and the modules whose classes tests
compare) is imported here, once, before any inner run. The same holds for ``torch._dynamo``
(imported lazily by torch's FLOP counter; it registers a TORCH_LIBRARY, which cannot happen twice).
"""

from __future__ import annotations

import os

import pytest
import torch  # noqa: F401  (see the module docstring)
import torch._dynamo  # noqa: F401

import pytest_mmperf.data.synthetic  # noqa: F401
import pytest_mmperf.devices  # noqa: F401


@pytest.fixture(autouse=True)
def _no_gc_per_inner_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest collects garbage when each inner config ends (to surface unraisable exceptions);
    with torch loaded that is ~0.16 s a call, ~0.3 s a test here. pytester already turns it
    off for its in-process runs; this does the same for the configs tests build themselves."""
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
