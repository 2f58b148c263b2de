"""Atomic writes: the previous file or the whole new one, never half of it."""

from __future__ import annotations

import os
import stat
from typing import Any

import pytest

from pytest_mmperf.files import write_atomic


def test_atomic_write_leaves_old_file_or_new_file(tmp_path: Any, monkeypatch: Any) -> None:
    target = tmp_path / "img_00000.jpg"
    target.write_bytes(b"old")

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # the os.replace write_atomic calls
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new contents")
    assert target.read_bytes() == b"old"  # never a partial file under the real name
    assert [p.name for p in tmp_path.iterdir()] == ["img_00000.jpg"]  # temp file removed
    monkeypatch.undo()
    write_atomic(target, b"new contents")
    assert target.read_bytes() == b"new contents"


def test_atomic_write_modes_and_text(tmp_path: Any) -> None:
    target = tmp_path / "sub" / "report.json"
    write_atomic(target, "héllo")  # creates the folder, writes UTF-8, mode 0644
    assert target.read_text(encoding="utf-8") == "héllo"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    target.chmod(0o600)
    write_atomic(target, "kept", mode=None)  # None keeps an existing file's mode
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "kept"
