"""Checks at configure time, so that a run that cannot succeed stops before its first test.

* Every output path is checked for writability: ``--mmperf-json``, ``--mmperf-html``, and the
  snapshot file when ``--mmperf-update-snapshots`` will rewrite it. The path itself may not
  exist yet (missing folders are created when the file is written), but the nearest existing
  folder above it must be a writable folder, and the path must not be a folder. Nothing is
  created here.
* An existing snapshot file is read and validated once: a malformed or unreadable file is one
  usage error at start instead of a failure in every test that snapshots. This holds with
  ``--mmperf-update-snapshots`` too: rewriting a file that cannot be read would silently drop the
  cases of every test not run in this session. The fix is to repair the file, or to delete it
  and record every case again with ``--mmperf-update-snapshots``.

Each problem is a ``pytest.UsageError`` (exit code 4) naming the option, the value, where the
value came from and why it cannot be used. Skipped in pytest-xdist workers and in the plugin's
own timing workers: their controller or parent has checked already (and they write no outputs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_mmperf.constants import DEFAULT_SNAPSHOTS, SIDE_ENV
from pytest_mmperf.glue import options as cfg
from pytest_mmperf.timing.isolation import WORKER_ENV


def _source(settings: cfg.MmperfSettings, name: str) -> str:
    source = settings.source(name)
    if source == "default":
        return f"the default, {DEFAULT_SNAPSHOTS} in the rootdir" if name == "snapshots" \
            else "the default"
    return source


def unwritable_reason(path: Path) -> str | None:
    """Why ``path`` cannot be written as a file, or None when it can (nothing is created)."""
    if os.path.isdir(path):
        return "it is a folder"
    folder = path.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not os.path.isdir(folder):
        kind = "a regular file" if os.path.isfile(folder) else "not a folder"
        return f"{folder} is {kind}, so no file can be created under it"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable"
    return None


def _check_output(settings: cfg.MmperfSettings, name: str, why_written: str = "") -> None:
    path = getattr(settings, name)
    reason = unwritable_reason(path)
    if reason is None:
        return
    option = cfg.SETTINGS_BY_NAME[name].option
    raise pytest.UsageError(
        f"pytest-mmperf: cannot write {option} {str(path)!r} (from {_source(settings, name)})"
        f"{why_written}: {reason}. Accepted: a file path whose folder exists or can be created, "
        "and is writable; nothing was run.")


def check(config: pytest.Config, settings: cfg.MmperfSettings) -> None:
    """Raise ``pytest.UsageError`` for an unwritable output or an unusable snapshot file."""
    if hasattr(config, "workerinput") or os.environ.get(WORKER_ENV) or os.environ.get(SIDE_ENV):
        return
    for name in ("json", "html"):
        if getattr(settings, name) is not None:
            _check_output(settings, name)
    snapshots = settings.snapshots
    if snapshots is None:
        return
    if settings.update_snapshots:
        _check_output(settings, "snapshots", " (rewritten by --mmperf-update-snapshots)")
    if not os.path.lexists(snapshots):
        return
    from pytest_mmperf.counting.snapshots import SnapshotStore
    from pytest_mmperf.glue.guard_fixture import SNAPSHOT_STORE_KEY

    try:
        store = SnapshotStore(snapshots)
    except ValueError as exc:
        raise pytest.UsageError(
            f"pytest-mmperf: {exc} (the snapshot file from {_source(settings, 'snapshots')}). "
            "Fix the file (after a merge conflict: keep the cases of both sides), or delete it "
            "and rerun with --mmperf-update-snapshots to record every case again; "
            "--mmperf-update-snapshots does not overwrite a file it cannot read, because the "
            "cases of the tests not run would be lost.") from None
    config.stash[SNAPSHOT_STORE_KEY] = store  # read once: the guards use this store
